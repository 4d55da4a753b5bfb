//! The opening handshake (RFC 6455 section 4), client and server, as push
//! parsers without I/O.
//!
//! Both sides follow the same loop: feed the bytes the transport delivered
//! to `handle_read` until it returns a value, `handle_eof` at end of stream,
//! and `handle_timeout` when the deadline from `poll_timeout` passes. Bytes
//! that arrived behind the handshake (frames pipelined right after the
//! headers) are kept and fed to the [`Connection`](crate::Connection) that
//! the handshake builds: none is lost.
//!
//! ```text
//! client                                         server
//! ClientRequest::new(uri)                        ServerHandshake::new(config, now)
//! ClientHandshake::new(..) -> request bytes ---> handle_read(..) -> Request
//!                                                accept(request, Accept, ..)
//! handle_read(..) -> ClientResponse       <----- 101 bytes + Connection
//! response.into_connection(..) -> Connection     (or reject(..) / error.response())
//! ```
//!
//! A complete exchange in memory:
//!
//! ```
//! use std::time::Instant;
//! use tether_proto::handshake::{Accept, ClientHandshake, ClientRequest, HandshakeConfig, ServerHandshake};
//! use tether_proto::SeededRandom;
//!
//! let now = Instant::now();
//! let request = ClientRequest::new("ws://example.com/chat")?.protocols(["chat"]);
//! let (mut client, request_bytes) = ClientHandshake::new(request, &mut SeededRandom::new(1), now, None)?;
//!
//! let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
//! let request = server.handle_read(&request_bytes)?.expect("a complete request");
//! assert!(request.is_websocket_upgrade());
//! assert_eq!(request.path(), "/chat");
//! // `accept` also builds the server Connection; `accept_parts` stops before.
//! let accepted = server.accept_parts(&request, Accept::new().subprotocol("chat"))?;
//!
//! let response = client.handle_read(accepted.response())?.expect("a complete response");
//! assert_eq!(response.subprotocol(), Some("chat"));
//! # Ok::<(), tether_proto::handshake::HandshakeError>(())
//! ```
//!
//! The checks that HTTP/1.1 Upgrade shares with the HTTP/2 extended CONNECT
//! of RFC 8441 (version, origin, subprotocol and extension selection) live
//! apart from the HTTP/1.1-only ones (GET, `Upgrade`/`Connection`, key and
//! accept key), so an HTTP/2 front end can reuse them.

mod client;
mod error;
mod header;
mod http1;
mod server;

pub use client::{ClientHandshake, ClientRequest, ClientResponse};
pub use error::HandshakeError;
pub use header::{accept_key, ExtensionHeaderError, ExtensionOffer, ACCEPT_GUID};
pub use server::{
    accept_extended_connect, accept_response, server_connection, Accept, Accepted, ConnectProtocol, HandshakeConfig,
    Request, ServerHandshake,
};

/// The local permessage-deflate settings, or a stand-in without the feature.
#[cfg(feature = "deflate")]
pub(crate) type DeflateSettings = crate::deflate::DeflateConfig;
/// The local permessage-deflate settings, or a stand-in without the feature.
#[cfg(not(feature = "deflate"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeflateSettings {}

/// Turns the negotiated extensions (the server's answer) into the
/// connection's pipeline, in the answer's order.
///
/// permessage-deflate is built from `deflate`, the local settings it was
/// negotiated with. Any other extension has no implementation here, and is
/// refused rather than producing a connection that fails on the first
/// transformed frame.
pub(crate) fn build_extensions(
    negotiated: &[ExtensionOffer],
    role: crate::Role,
    deflate: Option<&DeflateSettings>,
) -> Result<Vec<Box<dyn crate::Extension>>, HandshakeError> {
    let mut pipeline: Vec<Box<dyn crate::Extension>> = Vec::with_capacity(negotiated.len());
    for extension in negotiated {
        match build_extension(extension, role, deflate) {
            Some(built) => pipeline.push(built?),
            None => return Err(HandshakeError::ExtensionNotImplemented(extension.name.clone())),
        }
    }
    Ok(pipeline)
}

/// The implementation of one negotiated extension, if there is one.
fn build_extension(
    extension: &ExtensionOffer,
    role: crate::Role,
    deflate: Option<&DeflateSettings>,
) -> Option<Result<Box<dyn crate::Extension>, HandshakeError>> {
    #[cfg(feature = "deflate")]
    if let (true, Some(config)) = (
        extension.name.eq_ignore_ascii_case(crate::deflate::EXTENSION_NAME),
        deflate,
    ) {
        return Some(
            crate::deflate::PerMessageDeflate::new(role, extension, config)
                .map(|codec| Box::new(codec) as Box<dyn crate::Extension>)
                .map_err(HandshakeError::InvalidExtensionAnswer),
        );
    }
    let _ = (extension, role, deflate);
    None
}

/// The only protocol version, sent and required in `Sec-WebSocket-Version`
/// (RFC 6455 section 4.1 item 9, section 4.2.1 item 6).
pub const WEBSOCKET_VERSION: &str = "13";

/// Length of the nonce behind `Sec-WebSocket-Key` (RFC 6455 section 4.1 item 7).
const KEY_LEN: usize = 0x10;

/// Default limit on the bytes of an HTTP head (start line and headers):
/// 16 KiB. A server answers a larger head with 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 0x4000;

/// Default limit on the header fields of an HTTP head: 64. A server answers
/// more with 431.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// How much of a rejection's body a client keeps: 64 KiB. The rest is read
/// and dropped.
pub const MAX_REJECTION_BODY: usize = 0x1_0000;
