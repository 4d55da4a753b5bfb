//! [`WebSocket`]: a connection with blocking methods.

use std::io;

use bytes::Bytes;
use tether_proto::{CloseCode, Closed, DataKind, Message, MessageRef, Role, SendOptions, State};

use crate::runtime::{block_on, block_on_poll, Blocking, Transport};
use crate::transport::BlockingIo;
use crate::{Error, Received};

type Stream<S> = tether_driver::WebSocketStream<Transport<S>, Blocking>;

/// An open WebSocket connection on a blocking transport `S` (a
/// [`TcpStream`](std::net::TcpStream), a TLS stream, a Unix socket...).
///
/// Receive with [`recv`](Self::recv) or by iterating (`for message in &mut
/// ws`), send with [`send`](Self::send) or [`feed`](Self::feed), end with
/// [`close`](Self::close). [`split`](Self::split) gives a reader and a
/// writer for two threads.
///
/// It is the driver's [`WebSocketStream`](tether_driver::WebSocketStream)
/// under the [`Blocking`] runtime, in a newtype whose methods block: each
/// runs the driver's future to completion on the calling thread. So every
/// adapter behaves the same; only the waiting differs.
///
/// # Driving and timers
///
/// No thread runs in the background: the connection makes progress while
/// one of its methods runs. Receiving drives everything (reads, automatic
/// pongs, the close handshake, keepalive pings, idle and close timeouts);
/// the core's next deadline becomes the socket's read and write timeout,
/// so a `recv` waiting on a silent peer returns to the loop in time to send
/// the keepalive ping or to fail with [`Error::IdleTimeout`]. Keep receiving
/// for as long as the connection is open, even if you only send.
///
/// The transport must be in blocking mode. Without socket timeouts
/// ([`NoTimeouts`](crate::NoTimeouts)), timers only fire when data arrives.
pub struct WebSocket<S> {
    inner: Stream<S>,
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WebSocket").field(&self.inner).finish()
    }
}

impl<S> From<Stream<S>> for WebSocket<S> {
    fn from(inner: Stream<S>) -> Self {
        Self { inner }
    }
}

impl<S> WebSocket<S> {
    /// Runs `connection`, whose opening handshake is done, on `io`: for a
    /// handshake of your own.
    pub fn from_connection(io: S, connection: tether_proto::Connection, config: &crate::WebSocketConfig) -> Self {
        Stream::from_connection(Transport::new(io), connection, config).into()
    }

    /// The subprotocol the handshake settled on.
    pub fn subprotocol(&self) -> Option<&str> {
        self.inner.subprotocol()
    }

    /// The names of the negotiated extensions, in pipeline order.
    pub fn extensions(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.extensions()
    }

    /// The negotiated extensions with their agreed parameters.
    pub fn negotiated_extensions(&self) -> impl Iterator<Item = &tether_proto::handshake::ExtensionOffer> + '_ {
        self.inner.negotiated_extensions()
    }

    /// The permessage-deflate parameters agreed, if it was negotiated.
    #[cfg(feature = "deflate")]
    pub fn deflate_params(&self) -> Option<tether_proto::deflate::DeflateParams> {
        self.inner.deflate_params()
    }

    /// What went through the connection so far, counted by the core.
    pub fn stats(&self) -> tether_proto::Stats {
        self.inner.stats()
    }

    /// Client or server.
    pub fn role(&self) -> Role {
        self.inner.role()
    }

    /// Open, closing or closed.
    pub fn state(&self) -> State {
        self.inner.state()
    }

    /// How the connection ended (code, reason, cause), once it has.
    pub fn close_info(&self) -> Option<&Closed> {
        self.inner.close_info()
    }

    /// Bytes queued for the transport and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.inner.buffered_amount()
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref().get_ref()
    }

    /// The transport, for socket options. Reading from or writing to it
    /// directly corrupts the connection; its timeouts are the connection's.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut().get_mut()
    }

    /// The driver's stream, to drive it yourself.
    pub fn into_inner(self) -> Stream<S> {
        self.inner
    }
}

impl<S: BlockingIo> WebSocket<S> {
    /// The local address of the transport.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.peer_addr()
    }

    /// For TLS: the peer's certificates, the TLS version, the ALPN protocol.
    #[cfg(feature = "tls")]
    pub fn tls_info(&self) -> Option<tether_driver::tls::TlsInfo> {
        self.inner.tls_info()
    }

    /// The next whole message, waiting for it; `None` once the connection
    /// closed cleanly, `Some(Err(..))` once if it ended otherwise (protocol
    /// violation, idle timeout, lost transport). Pings are answered and
    /// pongs dropped on the way.
    pub fn recv(&mut self) -> Option<Result<Message, Error>> {
        block_on(self.inner.recv())
    }

    /// The next whole message, lent to `f` where it arrived, with the send
    /// side ([`Reply`](tether_driver::Reply)) to answer with; returns what
    /// `f` returns (see
    /// [`tether_driver::WebSocketStream::recv_with`]: a common message is
    /// lent from the receive buffer, with no copy or allocation; answers
    /// go out as [`feed`](Self::feed)'s, written by the next receive).
    ///
    /// ```text
    /// while let Some(result) = ws.recv_with(|message, reply| reply.send(message)) {
    ///     result??;
    /// }
    /// ```
    pub fn recv_with<F, T>(&mut self, f: F) -> Option<Result<T, Error>>
    where
        F: FnOnce(MessageRef<'_>, &mut crate::Reply<'_>) -> T,
    {
        block_on(self.inner.recv_with(f))
    }

    /// Every message there is now, each lent to `f` as
    /// [`recv_with`](Self::recv_with) lends one, in one call, waiting only
    /// while there is none; how many were lent, or the first error (the
    /// connection's, or `f`'s, which stops the call). See
    /// [`tether_driver::WebSocketStream::recv_many_with`].
    ///
    /// ```text
    /// while let Some(lent) = ws.recv_many_with(|message, reply| reply.send(message)) {
    ///     lent?;
    /// }
    /// ```
    pub fn recv_many_with<F, E>(&mut self, f: F) -> Option<Result<usize, E>>
    where
        F: FnMut(MessageRef<'_>, &mut crate::Reply<'_>) -> Result<(), E>,
        E: From<Error>,
    {
        block_on(self.inner.recv_many_with(f))
    }

    /// Like [`recv`](Self::recv), but also hands over pings and pongs.
    pub fn recv_event(&mut self) -> Option<Result<Received, Error>> {
        block_on(self.inner.recv_event())
    }

    /// The next message as a [`std::io::Read`] over its payload, delivered
    /// piece by piece as it arrives when it reaches
    /// [`Config::stream_threshold`](tether_proto::Config::stream_threshold)
    /// (else from memory): copy a message of any size to a file without
    /// holding it whole. Dropping the reader before its end skips the rest
    /// of the message.
    pub fn recv_reader(&mut self) -> Option<Result<MessageReader<'_, S>, Error>> {
        block_on(self.inner.recv_reader()).map(|reader| reader.map(|inner| MessageReader { inner }))
    }

    /// The messages, until the connection ends (an error is the last item).
    pub fn incoming(&mut self) -> Messages<'_, S> {
        Messages { ws: self }
    }

    /// Sends a message: queues it and writes everything queued.
    pub fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        block_on(self.inner.send(message))
    }

    /// Queues a message without writing it (waiting only while the write
    /// buffer is full). The next [`send`](Self::send), [`flush`](Self::flush)
    /// or receive writes it: an echo loop that answers with `feed` answers
    /// everything one read delivered in one write.
    pub fn feed(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        block_on(self.inner.feed(message))
    }

    /// [`send`](Self::send) with per-message options:
    /// [`SendOptions::uncompressed`] for a secret next to data an attacker
    /// controls (CRIME, BREACH) on a compressing connection.
    pub fn send_with(&mut self, message: impl Into<Message>, options: SendOptions) -> Result<(), Error> {
        block_on(self.inner.send_with(message, options))
    }

    /// [`feed`](Self::feed) with per-message options.
    pub fn feed_with(&mut self, message: impl Into<Message>, options: SendOptions) -> Result<(), Error> {
        block_on(self.inner.feed_with(message, options))
    }

    /// Sends a message encoded once for many connections (see
    /// [`PreparedMessage`](crate::PreparedMessage)): a server writes the
    /// prepared frame's bytes, shared, without encoding it again.
    pub fn send_prepared(&mut self, prepared: &crate::PreparedMessage) -> Result<(), Error> {
        block_on(self.inner.send_prepared(prepared))
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> Result<(), Error> {
        block_on(self.inner.flush())
    }

    /// Sends one frame of a message whose size is not known up front: the
    /// first call starts a message of `kind`, `fin` ends it.
    pub fn send_fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), Error> {
        block_on(self.inner.send_fragment(kind, data, fin))
    }

    /// Sends a ping (at most 125 bytes); its pong arrives through
    /// [`recv_event`](Self::recv_event).
    pub fn ping(&mut self, payload: impl Into<Bytes>) -> Result<(), Error> {
        block_on(self.inner.ping(payload))
    }

    /// Sends an unsolicited pong (a one-way heartbeat).
    pub fn pong(&mut self, payload: impl Into<Bytes>) -> Result<(), Error> {
        block_on(self.inner.pong(payload))
    }

    /// Closes the connection: sends a close frame with `code` and `reason`,
    /// then receives until the peer answers and the transport is closed
    /// (bounded by the close timeout), dropping messages that arrive
    /// meanwhile. Ok when the close handshake completed.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        block_on(self.inner.close(code, reason))
    }
}

impl<S: crate::SplitIo> WebSocket<S> {
    /// Splits the connection into a [`Reader`](crate::Reader) for one
    /// thread and a [`Writer`](crate::Writer) (`Clone + Send`) for others;
    /// see [Sending from other threads](crate#sending-from-other-threads) for how they share it. Fails if the
    /// transport cannot open a second read handle.
    pub fn split(self) -> io::Result<(crate::Reader<S>, crate::Writer<S>)> {
        crate::split::split(self.inner.into_driver())
    }
}

/// An iterator over the messages of a [`WebSocket`]: see
/// [`WebSocket::incoming`].
#[derive(Debug)]
pub struct Messages<'a, S> {
    ws: &'a mut WebSocket<S>,
}

impl<S: BlockingIo> Iterator for Messages<'_, S> {
    type Item = Result<Message, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.ws.recv()
    }
}

impl<'a, S: BlockingIo> IntoIterator for &'a mut WebSocket<S> {
    type Item = Result<Message, Error>;
    type IntoIter = Messages<'a, S>;

    fn into_iter(self) -> Messages<'a, S> {
        self.incoming()
    }
}

/// One received message as a [`std::io::Read`], piece by piece: see
/// [`WebSocket::recv_reader`]. The end of the message is the end of file;
/// a connection that fails in the middle fails the read with an
/// `io::Error` wrapping the [`Error`].
#[derive(Debug)]
pub struct MessageReader<'a, S> {
    inner: tether_driver::MessageReader<'a, Transport<S>, Blocking>,
}

impl<S> MessageReader<'_, S> {
    /// Text or binary.
    pub fn kind(&self) -> DataKind {
        self.inner.kind()
    }

    /// Whether the whole message has arrived (the unread rest is buffered).
    pub fn is_complete(&self) -> bool {
        self.inner.is_complete()
    }
}

impl<S: BlockingIo> io::Read for MessageReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        block_on_poll(|cx| self.inner.poll_read(cx, buf))
    }
}
