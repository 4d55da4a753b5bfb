//! The extension pipeline (RFC 6455 section 9).
//!
//! Negotiation (the `Sec-WebSocket-Extensions` offer and answer) happens in
//! the [handshake](crate::handshake); what it produces is a list of
//! [`Extension`]s, in the order the server listed them, handed to
//! [`Connection::with_extensions`](crate::Connection::with_extensions).
//! Outgoing messages pass through each extension's [`Extension::encode`] in
//! that order; incoming messages pass through [`Extension::decode`] in the
//! reverse order. Extensions transform whole messages (as permessage-deflate
//! does, RFC 7692); the frames' RSV bits say which extensions transformed a
//! message.

use bytes::BytesMut;

pub use crate::frame::{RSV1, RSV2, RSV3};
use crate::message::DataKind;

/// Why an extension could not decode a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Decoding would produce more than the limit it was given (1009).
    TooLarge,
    /// The input is not valid for this extension (1002, or 1007 where the
    /// extension says so).
    Invalid(String),
}

/// A negotiated extension that transforms message payloads.
pub trait Extension: Send {
    /// The extension's token as negotiated, for example `permessage-deflate`.
    fn name(&self) -> &str;

    /// The RSV bits ([`RSV1`], [`RSV2`], [`RSV3`]) this extension may set on
    /// the first frame of a message. Frames with other RSV bits set fail the
    /// connection.
    fn rsv_bits(&self) -> u8;

    /// Transforms an outgoing message payload. Returns the new payload and
    /// the RSV bits to set on the message's first frame, or `None` to leave
    /// the message as it is (for example one under a size threshold).
    fn encode(&mut self, kind: DataKind, payload: &[u8]) -> Result<Option<(BytesMut, u8)>, String>;

    /// Decodes the next piece of an incoming message whose first frame set
    /// some of this extension's RSV bits, appending the result to `out`.
    /// `last` is set on the message's final piece. This call must not append
    /// more than `limit` bytes (what is left of the message size limit);
    /// return [`DecodeError::TooLarge`] instead, before spending the memory.
    fn decode(&mut self, input: &[u8], last: bool, out: &mut BytesMut, limit: usize) -> Result<(), DecodeError>;

    /// The extension as agreed: its name and parameters as in the server's
    /// answer, for [`Connection::negotiated_extensions`](crate::Connection::negotiated_extensions).
    /// `None` (the default) when the extension does not keep it.
    fn agreed(&self) -> Option<&crate::handshake::ExtensionOffer> {
        None
    }

    /// How a [`PreparedMessage`](crate::PreparedMessage) of `kind` and
    /// `len` payload bytes, encoded once for many connections, passes this
    /// extension on a server connection. The default,
    /// [`SharedEncoding::PerConnection`], is always correct: the connection
    /// encodes such a message itself.
    fn shared_encoding(&self, kind: DataKind, len: usize) -> SharedEncoding {
        let _ = (kind, len);
        SharedEncoding::PerConnection
    }
}

/// How an extension treats a message encoded once for many connections
/// (see [`Extension::shared_encoding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SharedEncoding {
    /// The extension would leave the message as it is: the shared
    /// uncompressed frame is what it would send.
    Unchanged,
    /// permessage-deflate with a fresh context per message: the same bytes
    /// for every connection with this window and level.
    Deflate {
        /// The compressor's window, in bits.
        window_bits: u8,
        /// The compression level.
        level: u8,
    },
    /// The output depends on the connection's own state: encode per
    /// connection.
    PerConnection,
}
