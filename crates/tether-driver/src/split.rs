//! Reader and writer halves for two tasks.
//!
//! The halves share the connection behind a `std::sync::Mutex`, locked only
//! for the length of one non-blocking poll and never across an `.await`.
//! A driver task that owns the connection was the alternative; it was not
//! chosen because it needs a spawned task per connection (and so a `'static`
//! transport and a runtime handle), copies every message through channels,
//! and keeps running after both halves are gone. With the shared core,
//! whichever half is polled answers pings and close frames, each half keeps
//! its own waker so neither steals the other's wake-up, and nothing runs
//! when nobody polls.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use tether_proto::handshake::ExtensionOffer;
use tether_proto::{CloseCode, Closed, DataKind, Message, SendOptions, State, Stats};

use crate::driver::{Driver, Side};
use crate::reader::MessageReader;
use crate::runtime::{Runtime, RuntimeIo};
use crate::stream::{poll_received, Received};
use crate::{Error, TransportAddrs, WebSocketStream};

/// The receiving half of a split [`WebSocketStream`]: a [`Stream`] of
/// messages. Receiving also sends the automatic pongs and the close reply.
/// Its methods are cancel-safe, as on [`WebSocketStream`].
pub struct ReadHalf<S, R: Runtime> {
    shared: Arc<Mutex<Driver<S, R>>>,
}

/// The sending half of a split [`WebSocketStream`]: a [`Sink`] of messages.
/// Cancel safety is as on [`WebSocketStream`].
pub struct WriteHalf<S, R: Runtime> {
    shared: Arc<Mutex<Driver<S, R>>>,
}

/// The halves do not belong to the same connection.
#[derive(Debug)]
pub struct ReuniteError<S, R: Runtime>(pub ReadHalf<S, R>, pub WriteHalf<S, R>);

impl<S, R: Runtime> std::fmt::Display for ReuniteError<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the halves come from different connections")
    }
}

impl<S: std::fmt::Debug, R: Runtime + std::fmt::Debug> std::error::Error for ReuniteError<S, R> {}

pub(crate) fn split<S, R: Runtime>(mut driver: Driver<S, R>) -> (ReadHalf<S, R>, WriteHalf<S, R>) {
    driver.share_between_tasks();
    let shared = Arc::new(Mutex::new(driver));
    (ReadHalf { shared: shared.clone() }, WriteHalf { shared })
}

/// Locks the shared connection. A panic while it was locked cannot leave it
/// torn (every poll keeps it consistent between calls), so poisoning is
/// ignored.
pub(crate) fn lock<S, R: Runtime>(mutex: &Mutex<Driver<S, R>>) -> MutexGuard<'_, Driver<S, R>> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<S, R: Runtime> std::fmt::Debug for ReadHalf<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf").finish_non_exhaustive()
    }
}

impl<S, R: Runtime> std::fmt::Debug for WriteHalf<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").finish_non_exhaustive()
    }
}

/// What both halves tell about the connection, read under the lock.
macro_rules! connection_info {
    ($half:ident) => {
        impl<S, R: Runtime> $half<S, R> {
            /// What went through the connection so far (see
            /// [`WebSocketStream::stats`]).
            pub fn stats(&self) -> Stats {
                lock(&self.shared).conn().stats()
            }

            /// The names of the negotiated extensions, in pipeline order.
            pub fn extensions(&self) -> Vec<String> {
                lock(&self.shared)
                    .conn()
                    .extensions()
                    .map(str::to_owned)
                    .collect()
            }

            /// The negotiated extensions with their agreed parameters.
            pub fn negotiated_extensions(&self) -> Vec<ExtensionOffer> {
                lock(&self.shared)
                    .conn()
                    .negotiated_extensions()
                    .cloned()
                    .collect()
            }

            /// The permessage-deflate parameters agreed, if it was negotiated.
            #[cfg(feature = "deflate")]
            pub fn deflate_params(&self) -> Option<tether_proto::deflate::DeflateParams> {
                lock(&self.shared).conn().deflate_params()
            }
        }

        impl<S, R: TransportAddrs<S>> $half<S, R> {
            /// The local address of the transport.
            pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                R::local_addr(lock(&self.shared).io())
            }

            /// The peer's address.
            pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                R::peer_addr(lock(&self.shared).io())
            }

            /// For `wss://` and TLS servers: the peer's certificates, the TLS
            /// version and the ALPN protocol (see [`WebSocketStream::tls_info`]).
            #[cfg(feature = "tls")]
            pub fn tls_info(&self) -> Option<crate::tls::TlsInfo> {
                R::tls_info(lock(&self.shared).io())
            }
        }
    };
}

connection_info!(ReadHalf);
connection_info!(WriteHalf);

impl<S, R: Runtime> ReadHalf<S, R> {
    /// Puts the halves back together.
    pub fn reunite(self, write: WriteHalf<S, R>) -> Result<WebSocketStream<S, R>, ReuniteError<S, R>> {
        if !Arc::ptr_eq(&self.shared, &write.shared) {
            return Err(ReuniteError(self, write));
        }
        drop(write);
        match Arc::try_unwrap(self.shared) {
            Ok(mutex) => Ok(WebSocketStream::from_driver(
                mutex.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
            )),
            // Unreachable: both halves were the only owners.
            Err(shared) => Err(ReuniteError(Self { shared: shared.clone() }, WriteHalf { shared })),
        }
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<Closed> {
        lock(&self.shared).closed().cloned()
    }

    /// The subprotocol the handshake settled on.
    pub fn subprotocol(&self) -> Option<String> {
        lock(&self.shared).conn().subprotocol().map(str::to_owned)
    }
}

impl<S, R: RuntimeIo<S>> ReadHalf<S, R> {
    /// The next whole message; see [`WebSocketStream::recv`].
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| lock(&self.shared).poll_message(cx, Side::Recv)).await
    }

    /// The next message, ping or pong; see [`WebSocketStream::recv_event`].
    pub async fn recv_event(&mut self) -> Option<Result<Received, Error>> {
        poll_fn(|cx| poll_received(&mut lock(&self.shared), cx, Side::Recv)).await
    }

    /// The next message as an `AsyncRead`; see
    /// [`WebSocketStream::recv_reader`].
    pub async fn recv_reader(&mut self) -> Option<Result<MessageReader<'_, S, R>, Error>> {
        let first = poll_fn(|cx| crate::reader::poll_first(&mut lock(&self.shared), cx)).await;
        match first {
            Ok(Some((kind, piece, last))) => Some(Ok(MessageReader::shared(&self.shared, kind, piece, last))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl<S, R: RuntimeIo<S>> Stream for ReadHalf<S, R> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        lock(&self.shared).poll_message(cx, Side::Recv)
    }
}

impl<S, R: Runtime> WriteHalf<S, R> {
    /// Open, closing or closed.
    pub fn state(&self) -> State {
        lock(&self.shared).conn().state()
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<Closed> {
        lock(&self.shared).closed().cloned()
    }

    /// The subprotocol the handshake settled on.
    pub fn subprotocol(&self) -> Option<String> {
        lock(&self.shared).conn().subprotocol().map(str::to_owned)
    }

    /// Bytes queued for the transport and not yet written.
    pub fn buffered_amount(&self) -> usize {
        lock(&self.shared).buffered()
    }
}

impl<S, R: RuntimeIo<S>> WriteHalf<S, R> {
    /// Sends a message; see [`WebSocketStream::send`].
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        poll_fn(|cx| lock(&self.shared).poll_send_ready(cx)).await?;
        lock(&self.shared).start_send(message)?;
        self.flush().await
    }

    /// Queues a message without writing it; see [`WebSocketStream::feed`].
    /// Written by the next [`send`](Self::send) or [`flush`](Self::flush), or
    /// when the read half waits for the peer: a write half whose read half is
    /// already waiting must flush.
    pub async fn feed(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        poll_fn(|cx| lock(&self.shared).poll_send_ready(cx)).await?;
        lock(&self.shared).start_send(message)
    }

    /// Sends a message encoded once for many connections; see
    /// [`WebSocketStream::send_prepared`].
    pub async fn send_prepared(&mut self, prepared: &tether_proto::PreparedMessage) -> Result<(), Error> {
        poll_fn(|cx| lock(&self.shared).poll_send_ready(cx)).await?;
        lock(&self.shared).start_send_prepared(prepared)?;
        self.flush().await
    }

    /// Queues a prepared message without writing it; see
    /// [`WebSocketStream::feed_prepared`].
    pub async fn feed_prepared(&mut self, prepared: &tether_proto::PreparedMessage) -> Result<(), Error> {
        poll_fn(|cx| lock(&self.shared).poll_send_ready(cx)).await?;
        lock(&self.shared).start_send_prepared(prepared)
    }

    /// Sends a message with per-message options; see
    /// [`WebSocketStream::send_with`].
    pub async fn send_with(&mut self, message: impl Into<Message>, options: SendOptions) -> Result<(), Error> {
        let message = message.into();
        poll_fn(|cx| lock(&self.shared).poll_send_ready(cx)).await?;
        lock(&self.shared).start_send_with(message, options)?;
        self.flush().await
    }

    /// Queues a message with per-message options; see
    /// [`WebSocketStream::feed_with`].
    pub async fn feed_with(&mut self, message: impl Into<Message>, options: SendOptions) -> Result<(), Error> {
        let message = message.into();
        poll_fn(|cx| lock(&self.shared).poll_send_ready(cx)).await?;
        lock(&self.shared).start_send_with(message, options)
    }

    /// Sends one frame of a fragmented message; see
    /// [`WebSocketStream::send_fragment`].
    pub async fn send_fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), Error> {
        poll_fn(|cx| lock(&self.shared).poll_send_ready(cx)).await?;
        lock(&self.shared).start_fragment(kind, data, fin)?;
        self.flush().await
    }

    /// Sends a ping (at most 125 bytes).
    pub async fn ping(&mut self, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        poll_fn(|cx| lock(&self.shared).poll_send_ready(cx)).await?;
        lock(&self.shared).start_ping(&payload)?;
        self.flush().await
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| lock(&self.shared).poll_flush(cx, Side::Send)).await
    }

    /// Sends a close frame and writes it. The read half receives the rest
    /// (messages still in flight, then the end); if the read half was
    /// dropped, this waits for the close handshake itself. Cancel-safe.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        lock(&self.shared).start_close(code, reason)?;
        if Arc::strong_count(&self.shared) == 1 {
            // No read half: drive the whole loop, which writes the close
            // frame and runs the close timer; a flush alone would wait for
            // ever on a peer that does not read.
            return poll_fn(|cx| lock(&self.shared).poll_until_closed(cx, Side::Send)).await;
        }
        self.flush().await
    }
}

impl<S, R: RuntimeIo<S>> Sink<Message> for WriteHalf<S, R> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(&self.shared).poll_send_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        lock(&self.shared).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(&self.shared).poll_flush(cx, Side::Send)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut driver = lock(&self.shared);
        driver.start_close(CloseCode::NORMAL, "")?;
        driver.poll_flush(cx, Side::Send)
    }
}
