//! [`WebSocketStream`]: a connection on any transport of a runtime.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use tether_proto::{CloseCode, Closed, Connection, DataKind, Message, MessageRef, Role, SendOptions, State};

use crate::driver::{Driver, Incoming, Reply, Side};
use crate::reader::MessageReader;
use crate::runtime::{Runtime, RuntimeIo};
use crate::split::{ReadHalf, WriteHalf};
use crate::{Error, TransportAddrs, WebSocketConfig};

/// An open WebSocket connection on a transport `S`.
///
/// Receive with the [`Stream`] implementation or [`recv`](Self::recv); send
/// with the [`Sink`] implementation, [`send`](Self::send) or
/// [`feed`](Self::feed) (queue, written when receiving waits); end with
/// [`close`](Self::close). [`split`](Self::split) gives halves for two tasks.
///
/// # Driving
///
/// There is no background task: the connection makes progress while one of
/// its methods is polled. Receiving drives everything (reads, automatic pongs,
/// the close handshake, keepalive pings and timeouts); sending writes what is
/// queued. Keep receiving for as long as the connection is open, even if you
/// only send, or pings go unanswered and timers do not fire.
///
/// # Cancel safety
///
/// All state lives in the connection, never in a method's future, so
/// dropping a future (in `tokio::select!`, or through a timeout) never loses
/// received data nor leaves half a frame on the wire:
/// - [`recv`](Self::recv), `StreamExt::next`, [`recv_reader`](Self::recv_reader),
///   [`flush`](Self::flush) and [`close`](Self::close) are cancel-safe: call
///   them again to continue.
/// - [`send`](Self::send), [`ping`](Self::ping) and
///   [`send_fragment`](Self::send_fragment) first wait for room in the write
///   buffer, then queue the frame whole, then write. Cancelled while waiting,
///   nothing was queued; cancelled after, the frame is queued and goes out
///   with the next write (any later send, flush, receive or close). Either way
///   the connection stays consistent.
pub struct WebSocketStream<S, R: Runtime> {
    driver: Driver<S, R>,
}

impl<S, R: Runtime> std::fmt::Debug for WebSocketStream<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketStream")
            .field("connection", self.driver.conn())
            .finish_non_exhaustive()
    }
}

// The transport is never pinned: the runtime's calls take it by `&mut`
// (tokio's and futures-io's need `S: Unpin` for that).
impl<S, R: Runtime> Unpin for WebSocketStream<S, R> {}

impl<S, R: Runtime> WebSocketStream<S, R> {
    pub(crate) fn from_driver(driver: Driver<S, R>) -> Self {
        Self { driver }
    }

    /// Runs `connection`, whose opening handshake is done, on `io`. The
    /// client and server functions of this crate call it; call it yourself
    /// after a handshake of your own.
    pub fn from_connection(io: S, connection: Connection, config: &WebSocketConfig) -> Self {
        Self {
            driver: Driver::new(io, connection, config),
        }
    }

    /// The subprotocol the handshake settled on.
    pub fn subprotocol(&self) -> Option<&str> {
        self.driver.conn().subprotocol()
    }

    /// The names of the negotiated extensions, in pipeline order.
    pub fn extensions(&self) -> impl Iterator<Item = &str> + '_ {
        self.driver.conn().extensions()
    }

    /// The negotiated extensions with their parameters, as the server's
    /// answer agreed them.
    pub fn negotiated_extensions(&self) -> impl Iterator<Item = &tether_proto::handshake::ExtensionOffer> + '_ {
        self.driver.conn().negotiated_extensions()
    }

    /// The permessage-deflate parameters agreed, if it was negotiated.
    #[cfg(feature = "deflate")]
    pub fn deflate_params(&self) -> Option<tether_proto::deflate::DeflateParams> {
        self.driver.conn().deflate_params()
    }

    /// What went through the connection so far, counted by the core: bytes
    /// on the wire (frames, after compression) and of payload (before
    /// compression), data messages, each way.
    pub fn stats(&self) -> tether_proto::Stats {
        self.driver.conn().stats()
    }

    /// Client or server.
    pub fn role(&self) -> Role {
        self.driver.conn().role()
    }

    /// Open, closing or closed.
    pub fn state(&self) -> State {
        self.driver.conn().state()
    }

    /// How the connection ended (code, reason, cause), once it has.
    pub fn close_info(&self) -> Option<&Closed> {
        self.driver.closed()
    }

    /// Bytes queued for the transport and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.driver.buffered()
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        self.driver.io()
    }

    /// The transport. Reading from or writing to it directly corrupts the
    /// connection; this is for socket options.
    pub fn get_mut(&mut self) -> &mut S {
        self.driver.io_mut()
    }

    /// The transport and the core, for a driving loop of your own. Bytes
    /// taken from the core and not yet written are lost.
    pub fn into_parts(self) -> (S, Connection) {
        self.driver.into_parts()
    }

    /// The driving loop itself, nothing lost: for a shell that drives it
    /// its own way (the blocking shell's reader thread feeds it with
    /// [`Driver::handle_read`] while a writer shares it behind a lock).
    pub fn into_driver(self) -> Driver<S, R> {
        self.driver
    }
}

/// The future of [`WebSocketStream::recv`].
struct Recv<'a, S, R: Runtime> {
    driver: &'a mut Driver<S, R>,
}

impl<S, R: RuntimeIo<S>> Future for Recv<'_, S, R> {
    type Output = Option<Result<Message, Error>>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.driver.poll_message(cx, Side::Recv)
    }
}

/// The future of [`WebSocketStream::recv_with`]: the closure until a
/// message is lent to it.
struct RecvWith<'a, S, R: Runtime, F> {
    driver: &'a mut Driver<S, R>,
    f: Option<F>,
}

// `F` is only called, never pinned.
impl<S, R: Runtime, F> Unpin for RecvWith<'_, S, R, F> {}

impl<S, R: RuntimeIo<S>, F, T> Future for RecvWith<'_, S, R, F>
where
    F: FnOnce(MessageRef<'_>, &mut Reply<'_>) -> T,
{
    type Output = Option<Result<T, Error>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.driver.poll_message_with(cx, Side::Recv, &mut this.f)
    }
}

/// The future of [`WebSocketStream::recv_many_with`].
struct RecvManyWith<'a, S, R: Runtime, F> {
    driver: &'a mut Driver<S, R>,
    f: F,
}

// `F` is only called, never pinned.
impl<S, R: Runtime, F> Unpin for RecvManyWith<'_, S, R, F> {}

impl<S, R: RuntimeIo<S>, F, E> Future for RecvManyWith<'_, S, R, F>
where
    F: FnMut(MessageRef<'_>, &mut Reply<'_>) -> Result<(), E>,
    E: From<Error>,
{
    type Output = Option<Result<usize, E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.driver.poll_messages_with(cx, Side::Recv, &mut this.f)
    }
}

/// The future of [`WebSocketStream::send`], [`feed`](WebSocketStream::feed)
/// and their `_with` forms: the message until it is queued, then (for
/// `send`) the flush. A future of its own rather than an `async fn`, which
/// kept the message twice (the argument and its conversion) and the
/// flush's future besides: 112 bytes of every task awaiting it, against 56.
struct SendMessage<'a, S, R: Runtime> {
    driver: &'a mut Driver<S, R>,
    /// `None` once queued.
    message: Option<Message>,
    options: SendOptions,
    /// Write what is queued before finishing (`send`), or not (`feed`).
    flush: bool,
}

impl<'a, S, R: Runtime> SendMessage<'a, S, R> {
    fn new(driver: &'a mut Driver<S, R>, message: Message, options: SendOptions, flush: bool) -> Self {
        Self {
            driver,
            message: Some(message),
            options,
            flush,
        }
    }
}

impl<S, R: RuntimeIo<S>> Future for SendMessage<'_, S, R> {
    type Output = Result<(), Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.message.is_some() {
            // Cancelled (dropped) while this waits: nothing was queued.
            std::task::ready!(this.driver.poll_send_ready(cx))?;
            if let Some(message) = this.message.take() {
                this.driver.start_send_with(message, this.options)?;
            }
        }
        if this.flush {
            return this.driver.poll_flush(cx, Side::Send);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S, R: TransportAddrs<S>> WebSocketStream<S, R> {
    /// The local address of the transport.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        R::local_addr(self.driver.io())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        R::peer_addr(self.driver.io())
    }

    /// For `wss://` and TLS servers: the peer's certificate chain, the TLS
    /// version and the ALPN protocol agreed; `None` over plain TCP.
    #[cfg(feature = "tls")]
    pub fn tls_info(&self) -> Option<crate::tls::TlsInfo> {
        R::tls_info(self.driver.io())
    }
}

impl<S, R: RuntimeIo<S>> WebSocketStream<S, R> {
    /// The next whole message; `None` once the connection closed cleanly,
    /// `Some(Err(..))` once if it ended otherwise (protocol violation, idle
    /// timeout, lost transport). Cancel-safe.
    // A future of its own whose `poll` is inlined, not an `async fn` around
    // `poll_fn`: the caller's state machine polls the driver directly.
    pub fn recv(&mut self) -> impl Future<Output = Option<Result<Message, Error>>> + '_ {
        Recv {
            driver: &mut self.driver,
        }
    }

    /// The next whole message, lent to `f` where it arrived, with the send
    /// side ([`Reply`]) to answer with; returns what `f` returns. `None`
    /// once the connection closed cleanly, `Some(Err(..))` once if it ended
    /// otherwise, as [`recv`](Self::recv).
    ///
    /// A message that arrived whole in one read, unfragmented and not
    /// compressed, under 16 KiB (the common message) is lent from the
    /// receive buffer itself: no copy, no allocation, no reference count,
    /// for a server's request/response loop (parse the request from the
    /// bytes, answer) or an echo. Any other message is received whole as
    /// [`recv`](Self::recv) would and lent from there. Answers queued with
    /// [`Reply::send`] (a copy into the output: no `Bytes` of its own; the
    /// message lent sent back whole shares its payload when it was lent
    /// from an owned one, as a large one is) go out as [`feed`](Self::feed)'s
    /// do: this call, or the next receive, writes them before it waits, so
    /// the answers to everything one read delivered leave in one write.
    /// They do not wait for room in the write buffer; instead the next
    /// message is lent only once the output is within the write limit.
    ///
    /// ```text
    /// while let Some(result) = ws.recv_with(|message, reply| reply.send(message)).await {
    ///     result??; // the connection's error, then the answer's
    /// }
    /// ```
    ///
    /// Cancel-safe: nothing is taken from the connection until `f` is
    /// called, and `f` runs within one poll.
    pub fn recv_with<'a, F, T>(&'a mut self, f: F) -> impl Future<Output = Option<Result<T, Error>>> + 'a
    where
        F: FnOnce(MessageRef<'_>, &mut Reply<'_>) -> T + 'a,
        T: 'a,
    {
        RecvWith {
            driver: &mut self.driver,
            f: Some(f),
        }
    }

    /// Every message there is now, each lent to `f` as
    /// [`recv_with`](Self::recv_with) lends one: the messages one read
    /// delivered, in one call (uWebSockets' message callback; `recv_many`
    /// of tokio's channels), with no future and no poll per message.
    /// Waits only while there is none. Returns how many were lent; `None`
    /// once the connection closed cleanly, `Some(Err(..))` once if it ended
    /// otherwise (the connection's error, converted with `From`), or with
    /// `f`'s first error, which stops the call (the messages after it are
    /// lent at the next). Stops early, too, once the answers put the output
    /// over the write limit: the next call writes it down to the limit
    /// first.
    ///
    /// ```text
    /// while let Some(lent) = ws.recv_many_with(|message, reply| reply.send(message)).await {
    ///     lent?;
    /// }
    /// ```
    ///
    /// Cancel-safe, as [`recv_with`](Self::recv_with): messages are taken
    /// only as `f` is called, within one poll.
    pub fn recv_many_with<'a, F, E>(&'a mut self, f: F) -> impl Future<Output = Option<Result<usize, E>>> + 'a
    where
        F: FnMut(MessageRef<'_>, &mut Reply<'_>) -> Result<(), E> + 'a,
        E: From<Error> + 'a,
    {
        RecvManyWith {
            driver: &mut self.driver,
            f,
        }
    }

    /// The next message as a reader over its payload (`AsyncRead` of the
    /// runtime), delivered
    /// piece by piece as it arrives when it reaches
    /// [`Config::stream_threshold`](tether_proto::Config::stream_threshold)
    /// (else from memory). Dropping the reader before its end skips the rest
    /// of the message. Pings and pongs are skipped. Cancel-safe.
    pub async fn recv_reader(&mut self) -> Option<Result<MessageReader<'_, S, R>, Error>> {
        let first = poll_fn(|cx| crate::reader::poll_first(&mut self.driver, cx)).await;
        match first {
            Ok(Some((kind, piece, last))) => Some(Ok(MessageReader::owned(&mut self.driver, kind, piece, last))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Sends a message: waits for room in the write buffer, queues it, and
    /// writes. See the type's documentation for cancel safety.
    pub fn send(&mut self, message: impl Into<Message>) -> impl Future<Output = Result<(), Error>> + '_ {
        SendMessage::new(&mut self.driver, message.into(), SendOptions::default(), true)
    }

    /// [`send`](Self::send) with per-message options:
    /// [`SendOptions::uncompressed`](tether_proto::SendOptions::uncompressed)
    /// sends a message that carries a secret next to data an attacker
    /// controls without permessage-deflate (CRIME, BREACH), on a connection
    /// that compresses the others.
    pub fn send_with(
        &mut self,
        message: impl Into<Message>,
        options: SendOptions,
    ) -> impl Future<Output = Result<(), Error>> + '_ {
        SendMessage::new(&mut self.driver, message.into(), options, true)
    }

    /// [`feed`](Self::feed) with per-message options; see
    /// [`send_with`](Self::send_with).
    pub fn feed_with(
        &mut self,
        message: impl Into<Message>,
        options: SendOptions,
    ) -> impl Future<Output = Result<(), Error>> + '_ {
        SendMessage::new(&mut self.driver, message.into(), options, false)
    }

    /// Queues a message without writing it, waiting only while the write
    /// buffer is full. It is written by the next [`send`](Self::send) or
    /// [`flush`](Self::flush), or by receiving: [`recv`](Self::recv) (and every
    /// other receiving method) writes what is queued before it waits for the
    /// peer. An echo or request/response loop that receives with `recv` and
    /// answers with `feed` therefore answers everything one read delivered in
    /// one write, instead of one write per message:
    ///
    /// ```text
    /// while let Some(message) = ws.recv().await {
    ///     ws.feed(message?).await?;
    /// }
    /// ```
    ///
    /// Cancel safety as for [`send`](Self::send).
    pub fn feed(&mut self, message: impl Into<Message>) -> impl Future<Output = Result<(), Error>> + '_ {
        SendMessage::new(&mut self.driver, message.into(), SendOptions::default(), false)
    }

    /// Sends a message encoded once for many connections: a server queues
    /// the prepared frame's bytes, shared with every other connection it is
    /// sent on (see [`PreparedMessage`](tether_proto::PreparedMessage) for
    /// when a connection encodes it itself). For broadcasting.
    pub async fn send_prepared(&mut self, prepared: &tether_proto::PreparedMessage) -> Result<(), Error> {
        poll_fn(|cx| self.driver.poll_send_ready(cx)).await?;
        self.driver.start_send_prepared(prepared)?;
        self.flush().await
    }

    /// [`send_prepared`](Self::send_prepared) without writing: queued for
    /// the next write, like [`feed`](Self::feed), so that a burst of
    /// broadcast messages leaves in one write.
    pub async fn feed_prepared(&mut self, prepared: &tether_proto::PreparedMessage) -> Result<(), Error> {
        poll_fn(|cx| self.driver.poll_send_ready(cx)).await?;
        self.driver.start_send_prepared(prepared)
    }

    /// Sends `first`, a [`Delivery`](crate::hub::Delivery) of `subscriber`,
    /// and up to 255 more messages its queue holds, in one write: a burst
    /// of broadcast messages costs one system call, not one per message.
    pub async fn send_burst(
        &mut self,
        first: &tether_proto::PreparedMessage,
        subscriber: &crate::hub::Subscriber,
    ) -> Result<(), Error> {
        self.feed_prepared(first).await?;
        let mut burst = Vec::new();
        subscriber.drain_into(&mut burst, 255);
        for message in &burst {
            self.feed_prepared(message).await?;
        }
        self.flush().await
    }

    /// Sends one frame of a message whose size is not known up front: the
    /// first call starts a message of `kind`, `fin` ends it. Pings and
    /// pongs may go in between; other messages may not.
    pub async fn send_fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), Error> {
        poll_fn(|cx| self.driver.poll_send_ready(cx)).await?;
        self.driver.start_fragment(kind, data, fin)?;
        self.flush().await
    }

    /// Sends a ping (at most 125 bytes); the pong arrives as the connection
    /// is received from.
    pub async fn ping(&mut self, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        poll_fn(|cx| self.driver.poll_send_ready(cx)).await?;
        self.driver.start_ping(&payload)?;
        self.flush().await
    }

    /// Sends an unsolicited pong (a one-way heartbeat).
    pub async fn pong(&mut self, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        poll_fn(|cx| self.driver.poll_send_ready(cx)).await?;
        self.driver.start_pong(&payload)?;
        self.flush().await
    }

    /// Writes everything queued. Cancel-safe.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.driver.poll_flush(cx, Side::Send)).await
    }

    /// Closes the connection: sends a close frame with `code` and `reason`
    /// (at most 123 bytes), then receives until the peer answers and the
    /// transport is closed, dropping messages that arrive meanwhile (to keep
    /// them, [`split`](Self::split) and close the write half instead).
    ///
    /// Ok when the close handshake completed; on an already closed
    /// connection, it finishes whatever is left. Cancel-safe.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.driver.start_close(code, reason)?;
        poll_fn(|cx| self.driver.poll_until_closed(cx, Side::Recv)).await
    }

    /// Splits the connection into a reader and a writer for two tasks.
    /// Automatic pongs and the close reply are still sent by whichever half
    /// is polled. [`ReadHalf::reunite`] puts them back together.
    pub fn split(self) -> (ReadHalf<S, R>, WriteHalf<S, R>) {
        crate::split::split(self.driver)
    }
}

impl<S, R: RuntimeIo<S>> Stream for WebSocketStream<S, R> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().driver.poll_message(cx, Side::Recv)
    }
}

impl<S, R: RuntimeIo<S>> Sink<Message> for WebSocketStream<S, R> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().driver.poll_send_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.get_mut().driver.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().driver.poll_flush(cx, Side::Send)
    }

    /// Sends a close frame (1000) and writes it. The peer's answer is
    /// received by the receiving side, which ends once the handshake is done.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let driver = &mut self.get_mut().driver;
        driver.start_close(CloseCode::NORMAL, "")?;
        driver.poll_flush(cx, Side::Send)
    }
}

/// A pong or ping that receiving skipped, for [`WebSocketStream::recv_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// A whole message.
    Message(Message),
    /// The peer sent a ping (already answered unless `auto_pong` is off).
    Ping(Bytes),
    /// The peer sent a pong.
    Pong(Bytes),
}

impl<S, R: RuntimeIo<S>> WebSocketStream<S, R> {
    /// Like [`recv`](Self::recv), but also hands over pings and pongs (to
    /// measure round trips, or to answer pings yourself with `auto_pong`
    /// off). Streamed messages are reassembled. Cancel-safe.
    pub async fn recv_event(&mut self) -> Option<Result<Received, Error>> {
        poll_fn(|cx| poll_received(&mut self.driver, cx, Side::Recv)).await
    }
}

pub(crate) fn poll_received<S, R: RuntimeIo<S>>(
    driver: &mut Driver<S, R>,
    cx: &mut Context<'_>,
    side: Side,
) -> Poll<Option<Result<Received, Error>>> {
    // Pings and pongs first; whole messages through the reassembling path.
    loop {
        match driver.poll_incoming(cx, side) {
            Poll::Ready(Some(Incoming::Ping(p))) => return Poll::Ready(Some(Ok(Received::Ping(p)))),
            Poll::Ready(Some(Incoming::Pong(p))) => return Poll::Ready(Some(Ok(Received::Pong(p)))),
            Poll::Ready(Some(Incoming::Message(m))) => return Poll::Ready(Some(Ok(Received::Message(m)))),
            Poll::Ready(Some(Incoming::Fragment(f))) => {
                if let Some(result) = driver.absorb_fragment(f) {
                    return Poll::Ready(Some(result.map(Received::Message)));
                }
            }
            Poll::Ready(None) => return Poll::Ready(driver.take_end().map(Err)),
            Poll::Pending => return Poll::Pending,
        }
    }
}
