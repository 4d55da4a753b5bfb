//! Messages encoded once for many connections: broadcast without
//! re-encoding (or re-compressing) per receiver.

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use crate::connection::SendOptions;
use crate::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::message::{DataKind, Message};

/// A message encoded once into the bytes of its frame, for a server to send
/// to any number of connections: each [`Connection::send_prepared`]
/// queues the same [`Bytes`] (a reference count, no copy, no re-encoding).
///
/// Where the bytes cannot be the same for every receiver, the connection
/// falls back to encoding the message itself, correctly:
///
/// - **clients** mask every frame with a fresh random key (RFC 6455 section
///   5.3), so a client connection encodes the message as
///   [`Connection::send_with`] would: preparing saves nothing there;
/// - **permessage-deflate with context takeover** on the server's side
///   (the default when the client did not ask for
///   `server_no_context_takeover`): the compressed bytes depend on what
///   the connection sent before, so it compresses the message itself;
/// - **permessage-deflate without server context takeover**: the message
///   is compressed **once** per window size and level and shared, like the
///   uncompressed frame (a message under the connection's compression
///   threshold goes uncompressed, shared as well);
/// - a frame size limit (`Config::max_send_frame_size`) under the message's
///   size, or another extension that transforms messages: encoded per
///   connection.
///
/// A `PreparedMessage` is cheap to clone (an `Arc`) and can be shared
/// between threads.
///
/// ```
/// use std::time::Instant;
/// use tether_proto::{Config, Connection, Message, PreparedMessage};
///
/// let prepared = PreparedMessage::new(Message::Text("tick 42".into()));
/// let mut a = Connection::server(Config::default(), Instant::now());
/// let mut b = Connection::server(Config::default(), Instant::now());
/// a.send_prepared(&prepared)?;
/// b.send_prepared(&prepared)?;
/// // The same bytes, shared: 0x81 (FIN, text), length 7, "tick 42".
/// assert_eq!(a.poll_transmit().as_deref(), Some(&b"\x81\x07tick 42"[..]));
/// assert_eq!(b.poll_transmit(), Some(prepared.frame().clone()));
/// # Ok::<(), tether_proto::SendError>(())
/// ```
///
/// [`Connection::send_prepared`]: crate::Connection::send_prepared
/// [`Connection::send_with`]: crate::Connection::send_with
#[derive(Clone)]
pub struct PreparedMessage {
    inner: Arc<Inner>,
}

/// A compressed frame by (window bits, level).
type CompressedFrame = ((u8, u8), Option<Bytes>);

struct Inner {
    message: Message,
    options: SendOptions,
    /// The uncompressed frame of a server: header and payload.
    frame: Bytes,
    /// Compressed frames, by (window bits, level); `None` where compressing
    /// failed (the connection then compresses itself).
    #[cfg_attr(not(feature = "deflate"), allow(dead_code))]
    compressed: Mutex<Vec<CompressedFrame>>,
}

impl fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedMessage")
            .field("kind", &self.inner.message.kind())
            .field("len", &self.inner.message.len())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl PreparedMessage {
    /// Prepares `message`, to be compressed where a connection compresses.
    pub fn new(message: impl Into<Message>) -> Self {
        Self::with_options(message, SendOptions::default())
    }

    /// Prepares `message` with per-message options
    /// ([`SendOptions::uncompressed`] for a secret next to data an attacker
    /// controls).
    pub fn with_options(message: impl Into<Message>, options: SendOptions) -> Self {
        let message = message.into();
        let frame = encode_frame(message.kind(), 0, message.as_bytes());
        Self {
            inner: Arc::new(Inner {
                message,
                options,
                frame,
                compressed: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.inner.message
    }

    /// The options it was prepared with.
    pub fn options(&self) -> SendOptions {
        self.inner.options
    }

    /// The bytes of the uncompressed frame a server sends (header and
    /// payload).
    pub fn frame(&self) -> &Bytes {
        &self.inner.frame
    }

    /// The frame compressed with a fresh raw deflate context of
    /// `window_bits` at `level` (RSV1 set), made on first use and kept;
    /// `None` if compressing failed.
    #[cfg(feature = "deflate")]
    pub(crate) fn deflated(&self, window_bits: u8, level: u8) -> Option<Bytes> {
        let key = (window_bits, level);
        let mut cache = self
            .inner
            .compressed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, frame)) = cache.iter().find(|(k, _)| *k == key) {
            return frame.clone();
        }
        let payload = self.inner.message.as_bytes();
        let frame = crate::deflate::compress_once(payload, window_bits, level)
            .ok()
            .map(|compressed| encode_frame(self.inner.message.kind(), crate::frame::RSV1, &compressed));
        cache.push((key, frame.clone()));
        frame
    }
}

impl From<Message> for PreparedMessage {
    fn from(message: Message) -> Self {
        Self::new(message)
    }
}

/// A server's frame (unmasked, FIN) of `kind` with `payload`.
fn encode_frame(kind: DataKind, rsv: u8, payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        fin: true,
        rsv,
        opcode: match kind {
            DataKind::Text => OpCode::Text,
            DataKind::Binary => OpCode::Binary,
        },
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut frame = BytesMut::with_capacity(n + payload.len());
    frame.extend_from_slice(&head[..n]);
    frame.extend_from_slice(payload);
    frame.freeze()
}
