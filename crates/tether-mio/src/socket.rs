//! What the callbacks see: the [`Handler`] trait, a [`Socket`] and the
//! [`Loop`].

use std::net::SocketAddr;
use std::time::Instant;

use tether_proto::handshake::{Accept, HandshakeError, Request};
use tether_proto::{
    CloseCode, Closed, DataKind, Fragment, Message, MessageRef, Outbox, Reassembler, SendError, SendOptions,
};

use crate::{HttpResponse, SocketId};

/// The server's callbacks. Every one runs on the loop's thread, one at a
/// time; a callback that blocks holds up every connection of the loop.
pub trait Handler {
    /// The opening handshake: accept the request (with a subprotocol,
    /// permessage-deflate or extra headers in [`Accept`]) or answer it with
    /// HTTP (a 400 for another path, a 403, a redirect); the transport is
    /// closed after that answer. The request has passed the checks of a
    /// WebSocket upgrade that do not depend on the application (method,
    /// version, key; allowed origins of [`HandshakeConfig`](crate::HandshakeConfig)
    /// are checked when it is accepted). Default: accept, with no
    /// subprotocol and no compression.
    fn accept(&mut self, request: &Request, peer: SocketAddr) -> Result<Accept, HttpResponse> {
        let _ = (request, peer);
        Ok(Accept::new())
    }

    /// An opening handshake failed before the handler could accept it
    /// (a malformed or oversized request, not a WebSocket upgrade, a
    /// version other than 13, an origin not allowed, the handshake
    /// timeout, the peer gone): the answer the error calls for, if any
    /// ([`HandshakeError::response`](crate::HandshakeError::response)), is
    /// sent, then the transport is closed. Not called for requests
    /// the handler itself answered with an [`HttpResponse`].
    fn rejected(&mut self, peer: SocketAddr, error: &HandshakeError) {
        let _ = (peer, error);
    }

    /// A connection is open (the 101 answer is queued); it may send.
    fn open(&mut self, socket: &mut Socket<'_>) {
        let _ = socket;
    }

    /// A whole message, lent in place: copy what is to be kept
    /// ([`MessageRef::to_message`]). Answers sent here are queued and
    /// written once every message of the read is handled.
    fn message(&mut self, socket: &mut Socket<'_>, message: MessageRef<'_>);

    /// A piece of a message streamed as it arrives, for connections whose
    /// [`Config::stream_threshold`](crate::Config::stream_threshold) is set
    /// (photos, videos: never held whole). Default: put the pieces back
    /// together ([`Socket::reassemble`]) and hand the message to
    /// [`message`](Self::message), still bounded by
    /// [`Config::max_message_size`](crate::Config::max_message_size).
    fn fragment(&mut self, socket: &mut Socket<'_>, fragment: Fragment) {
        if let Some(message) = socket.reassemble(fragment) {
            self.message(socket, MessageRef::from(&message));
        }
    }

    /// The connection's output has all been written (to the socket's
    /// buffer) after [`Socket::request_drain`]: the time to send more. A
    /// handler that streams to a reader of unknown speed sends while
    /// [`Socket::buffered_amount`] is under a bound of its own, asks for
    /// `drain`, and resumes here: its memory stays bounded whatever the
    /// reader does (uWebSockets' `drain`).
    fn drain(&mut self, socket: &mut Socket<'_>) {
        let _ = socket;
    }

    /// The peer sent a ping; the pong is queued already
    /// ([`Config::auto_pong`](crate::Config::auto_pong)).
    fn ping(&mut self, socket: &mut Socket<'_>, payload: &[u8]) {
        let _ = (socket, payload);
    }

    /// The peer sent a pong (an answer to a keepalive ping, or its own).
    fn pong(&mut self, socket: &mut Socket<'_>, payload: &[u8]) {
        let _ = (socket, payload);
    }

    /// A connection that was [`open`](Self::open)ed is over and its
    /// transport closed: `closed` tells a completed close handshake
    /// ([`Closed::is_clean`]) from an error, a timeout or a lost peer. Its
    /// [`SocketId`] is not used again.
    fn close(&mut self, event_loop: &mut Loop, id: SocketId, closed: &Closed) {
        let _ = (event_loop, id, closed);
    }
}

/// What the loop does once the current callback returns: sends to and
/// closes of other connections, and the end of the loop. The same
/// commands come from other threads through a [`Handle`](crate::Handle).
#[derive(Debug, Default)]
pub struct Loop {
    pub(crate) commands: Vec<Command>,
}

#[derive(Debug)]
pub(crate) enum Command {
    Send(SocketId, Message, SendOptions),
    Close(SocketId, CloseCode, String),
    Stop,
}

impl Loop {
    /// Sends `message` on connection `id` (another connection, or this
    /// one) once the current callback returns. A connection that has
    /// closed by then drops it (its [`Handler::close`] tells of it).
    pub fn send_to(&mut self, id: SocketId, message: impl Into<Message>) {
        self.commands
            .push(Command::Send(id, message.into(), SendOptions::default()));
    }

    /// [`send_to`](Self::send_to) with per-message options (`compress:
    /// false` for a secret next to attacker-chosen text, against
    /// CRIME/BREACH).
    pub fn send_to_with(&mut self, id: SocketId, message: impl Into<Message>, options: SendOptions) {
        self.commands.push(Command::Send(id, message.into(), options));
    }

    /// Starts the close handshake of connection `id`. An invalid code or a
    /// reason over 123 bytes closes it with 1011 instead.
    pub fn close(&mut self, id: SocketId, code: CloseCode, reason: impl Into<String>) {
        self.commands.push(Command::Close(id, code, reason.into()));
    }

    /// Stops the server: no more connections are accepted, every open one
    /// is closed with 1001 (going away), and [`Server::run`](crate::Server::run)
    /// returns once all of them are over (each bounded by its close
    /// timeout).
    pub fn stop(&mut self) {
        self.commands.push(Command::Stop);
    }
}

/// One connection, as a callback sees it: sends are queued on it (copies
/// of what is lent, or owned messages) and written when the callbacks of
/// the read are done.
#[derive(Debug)]
pub struct Socket<'a> {
    pub(crate) out: Outbox<'a>,
    pub(crate) id: SocketId,
    pub(crate) peer: SocketAddr,
    pub(crate) now: Instant,
    pub(crate) event_loop: &'a mut Loop,
    pub(crate) partial: &'a mut Reassembler,
    /// [`request_drain`](Self::request_drain) was called.
    pub(crate) drain: &'a mut bool,
    /// The owned message being handed over (a large or compressed one):
    /// sending it back shares its payload instead of copying it.
    pub(crate) owned: Option<&'a Message>,
}

impl<'a> Socket<'a> {
    /// The connection `out` sends on, as a callback sees it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn new(
        out: Outbox<'a>,
        id: SocketId,
        peer: SocketAddr,
        now: Instant,
        event_loop: &'a mut Loop,
        partial: &'a mut Reassembler,
        drain: &'a mut bool,
        owned: Option<&'a Message>,
    ) -> Self {
        Self {
            out,
            id,
            peer,
            now,
            event_loop,
            partial,
            drain,
            owned,
        }
    }

    /// This connection's identity, for [`Loop::send_to`] and
    /// [`Handle::send`](crate::Handle::send) from elsewhere.
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The negotiated subprotocol.
    pub fn subprotocol(&self) -> Option<&str> {
        self.out.subprotocol()
    }

    /// The negotiated extensions' names (`permessage-deflate`).
    pub fn extensions(&self) -> impl Iterator<Item = &str> + '_ {
        self.out.extensions()
    }

    /// Sends a copy of `message` (text or binary), compressed if
    /// permessage-deflate was negotiated. Fails once the close handshake
    /// started.
    /// The message being handed over, sent back (an echo), is not copied
    /// when it is a large one (it is lent from an owned payload then).
    #[inline]
    pub fn send<'m>(&mut self, message: impl Into<MessageRef<'m>>) -> Result<(), SendError> {
        self.send_with(message, SendOptions::default())
    }

    /// [`send`](Self::send) with per-message options
    /// ([`SendOptions::uncompressed`] for a secret next to attacker-chosen
    /// text: CRIME/BREACH).
    #[inline]
    pub fn send_with<'m>(&mut self, message: impl Into<MessageRef<'m>>, options: SendOptions) -> Result<(), SendError> {
        let message = message.into();
        match self.owned {
            None => self.out.send_with(message, options),
            Some(owned) => self.out.send_or_share(owned, message, options),
        }
    }

    /// Sends an owned message without a copy of its payload.
    pub fn send_message(&mut self, message: impl Into<Message>, options: SendOptions) -> Result<(), SendError> {
        self.out.send_message(message, options)
    }

    /// Sends one piece of a message whose size is not known up front
    /// (a photo or a video streamed out): the first call starts a message
    /// of `kind`, later calls continue it, `fin` ends it. Text may be cut
    /// anywhere, even inside a character, but the whole must be UTF-8.
    /// Pieces are not compressed. Other messages may not be sent until
    /// the last piece ([`SendError::FragmentOrder`]); pings may.
    pub fn send_fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), SendError> {
        self.out.send_fragment(kind, data, fin)
    }

    /// Sends a ping (at most 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.out.ping(payload)
    }

    /// Starts the close handshake with a code and a reason of at most 123
    /// bytes. Messages that arrive before the peer's answer are still
    /// handed over; [`Handler::close`] follows once it is over.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.out.close(code, reason, self.now)
    }

    /// Bytes queued on this connection and not yet written: what a
    /// broadcaster checks to drop messages for a slow reader. Past
    /// [`WebSocketConfig::write_buffer_limit`](crate::WebSocketConfig::write_buffer_limit)
    /// the connection is not read until the peer takes its output.
    pub fn buffered_amount(&self) -> usize {
        self.out.pending_transmit()
    }

    /// Asks for one [`Handler::drain`] once this connection's output has
    /// all been written (at once if it holds none).
    pub fn request_drain(&mut self) {
        *self.drain = true;
    }

    /// Adds a streamed piece to the message being put back together;
    /// returns the message with its last piece. The connection bounds the
    /// whole message by [`Config::max_message_size`](crate::Config::max_message_size)
    /// (1009 past it) as it arrives. Pieces out of order (only possible
    /// for pieces not from this connection) close it with 1002.
    pub fn reassemble(&mut self, fragment: Fragment) -> Option<Message> {
        match self.partial.push(fragment) {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!("reassembly failed: {e}");
                self.partial.clear();
                let _ = self.out.close(e.close_code(), "", self.now);
                None
            }
        }
    }

    /// The loop's commands: sends to other connections, closes, stop.
    pub fn event_loop(&mut self) -> &mut Loop {
        self.event_loop
    }
}
