//! Receiving on one thread while others send: [`Reader`] and [`Writer`].
//! The design is in the crate docs ("Sending from other threads").

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use tether_driver::{Driver, Side};
use tether_proto::{CloseCode, Closed, DataKind, Message, SendOptions, State};

use crate::runtime::{is_timeout, Blocking, Timeouts, Transport, MAX_WAIT, MIN_TIMEOUT};
use crate::transport::{BlockingIo, SplitIo};
use crate::Error;

/// What one read of the reader asks for.
const READ_SIZE: usize = tether_driver::DEFAULT_READ_BUFFER_SIZE;

struct Shared<S> {
    driver: Mutex<Driver<Transport<S>, Blocking>>,
    reader_alive: AtomicBool,
}

/// The receiving half of a split [`WebSocket`](crate::WebSocket), for one
/// thread: [`recv`](Self::recv) and an iterator over messages. Receiving
/// also answers pings, runs the timers and writes what the writers queued.
pub struct Reader<S: SplitIo> {
    shared: Arc<Shared<S>>,
    side: S::ReadSide,
    timeouts: Timeouts,
    buf: Vec<u8>,
    plain: Vec<u8>,
    eof: bool,
}

/// The sending half of a split [`WebSocket`](crate::WebSocket): `Clone +
/// Send`, for any number of threads.
pub struct Writer<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Writer<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S: SplitIo> std::fmt::Debug for Reader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("eof", &self.eof).finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for Writer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

pub(crate) fn split<S: SplitIo>(mut driver: Driver<Transport<S>, Blocking>) -> io::Result<(Reader<S>, Writer<S>)> {
    let side = driver.io().get_ref().read_side()?;
    driver.io_mut().set_reads(false);
    let shared = Arc::new(Shared {
        driver: Mutex::new(driver),
        reader_alive: AtomicBool::new(true),
    });
    let reader = Reader {
        shared: shared.clone(),
        side,
        timeouts: Timeouts::default(),
        buf: Vec::new(),
        plain: Vec::new(),
        eof: false,
    };
    Ok((reader, Writer { shared }))
}

/// Locks the shared driver. Every poll leaves it consistent, so a panic
/// while it was locked cannot leave it torn: poisoning is ignored.
fn lock<S>(shared: &Shared<S>) -> MutexGuard<'_, Driver<Transport<S>, Blocking>> {
    shared.driver.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What both halves tell about the connection, read under the lock.
macro_rules! connection_info {
    ($half:ident) => {
        impl<S: SplitIo> $half<S> {
            /// What went through the connection so far, counted by the core.
            pub fn stats(&self) -> tether_proto::Stats {
                lock(&self.shared).conn().stats()
            }

            /// The subprotocol the handshake settled on.
            pub fn subprotocol(&self) -> Option<String> {
                lock(&self.shared).conn().subprotocol().map(str::to_owned)
            }

            /// The negotiated extensions with their agreed parameters.
            pub fn negotiated_extensions(&self) -> Vec<tether_proto::handshake::ExtensionOffer> {
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

            /// The local address of the transport.
            pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
                lock(&self.shared).io().get_ref().local_addr()
            }

            /// The peer's address.
            pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
                lock(&self.shared).io().get_ref().peer_addr()
            }

            /// For TLS: the peer's certificates, the TLS version, the ALPN
            /// protocol.
            #[cfg(feature = "tls")]
            pub fn tls_info(&self) -> Option<tether_driver::tls::TlsInfo> {
                lock(&self.shared).io().get_ref().tls_info()
            }
        }
    };
}

connection_info!(Reader);
connection_info!(Writer);

impl<S: SplitIo> Reader<S> {
    /// The next whole message; `None` once the connection closed cleanly,
    /// `Some(Err(..))` once if it ended otherwise. See
    /// [`WebSocket::recv`](crate::WebSocket::recv).
    pub fn recv(&mut self) -> Option<Result<Message, Error>> {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            let (deadline, paused) = {
                let mut driver = lock(&self.shared);
                if let Poll::Ready(item) = driver.poll_message(&mut cx, Side::Recv) {
                    return item;
                }
                (driver.deadline(), driver.reads_paused())
            };
            if paused {
                // The peer does not read the answers to what it sent: no
                // more reading until they drain. The next turn writes (each
                // write waits at most the write timeout, then unlocks) and
                // runs the timers, the send timeout among them.
                continue;
            }
            self.wait_for_peer(deadline);
        }
    }

    /// The messages, until the connection ends.
    pub fn incoming(&mut self) -> ReaderMessages<'_, S> {
        ReaderMessages { reader: self }
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<Closed> {
        lock(&self.shared).closed().cloned()
    }

    /// Reads the peer without the lock, until `deadline` at the latest,
    /// then hands what arrived to the driver.
    fn wait_for_peer(&mut self, deadline: Option<Instant>) {
        if self.eof {
            // Nothing more to read: only the loop's deadlines (the linger of
            // unwritten output) are left to wait for.
            let left = deadline.map_or(MAX_WAIT, |d| d.saturating_duration_since(Instant::now()));
            std::thread::sleep(left.clamp(MIN_TIMEOUT, MAX_WAIT));
            return;
        }
        if let Some(timeout) = self.timeouts.update(deadline, Some(MAX_WAIT)) {
            if let Err(e) = self.side.set_read_timeout(timeout) {
                tracing::debug!("setting the read timeout failed: {e}");
                self.timeouts = Timeouts::default();
            }
        }
        if self.buf.len() < READ_SIZE {
            self.buf.resize(READ_SIZE, 0);
        }
        let result = std::io::Read::read(&mut self.side, &mut self.buf);
        let mut driver = lock(&self.shared);
        match result {
            Ok(0) => {
                self.eof = true;
                driver.handle_read_end(None);
            }
            Ok(n) => match driver.io_mut().get_mut().decode(&self.buf[..n], &mut self.plain) {
                Ok(bytes) => driver.handle_read(bytes),
                Err(e) => {
                    self.eof = true;
                    driver.handle_read_end(Some(e));
                }
            },
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                self.eof = true;
                driver.handle_read_end(Some(e));
            }
        }
    }
}

impl<S: SplitIo> Drop for Reader<S> {
    fn drop(&mut self) {
        // A writer's close now waits for the handshake itself, reading the
        // shared transport.
        self.shared.reader_alive.store(false, Ordering::Release);
        lock(&self.shared).io_mut().set_reads(!self.eof);
    }
}

/// An iterator over the messages of a [`Reader`].
#[derive(Debug)]
pub struct ReaderMessages<'a, S: SplitIo> {
    reader: &'a mut Reader<S>,
}

impl<S: SplitIo> Iterator for ReaderMessages<'_, S> {
    type Item = Result<Message, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.reader.recv()
    }
}

impl<'a, S: SplitIo> IntoIterator for &'a mut Reader<S> {
    type Item = Result<Message, Error>;
    type IntoIter = ReaderMessages<'a, S>;

    fn into_iter(self) -> ReaderMessages<'a, S> {
        self.incoming()
    }
}

impl<S> Writer<S> {
    /// Open, closing or closed.
    pub fn state(&self) -> State {
        lock(&self.shared).conn().state()
    }

    /// Bytes queued for the transport and not yet written.
    pub fn buffered_amount(&self) -> usize {
        lock(&self.shared).buffered()
    }
}

impl<S: BlockingIo> Writer<S> {
    /// Sends a message: queues it and writes everything queued.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.feed(message)?;
        self.flush()
    }

    /// Queues a message without writing it (waiting only while the write
    /// buffer is full). The next send or flush writes it, or the reader
    /// once a read returns; call [`flush`](Self::flush) for it to leave now.
    pub fn feed(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.feed_with(message, SendOptions::default())
    }

    /// [`send`](Self::send) with per-message options (see
    /// [`WebSocket::send_with`](crate::WebSocket::send_with)).
    pub fn send_with(&self, message: impl Into<Message>, options: SendOptions) -> Result<(), Error> {
        self.feed_with(message, options)?;
        self.flush()
    }

    /// Sends a message encoded once for many connections (see
    /// [`WebSocket::send_prepared`](crate::WebSocket::send_prepared)).
    pub fn send_prepared(&self, prepared: &crate::PreparedMessage) -> Result<(), Error> {
        self.drive(|driver, cx| {
            if let Err(e) = std::task::ready!(driver.poll_send_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            Poll::Ready(driver.start_send_prepared(prepared))
        })?;
        self.flush()
    }

    /// [`feed`](Self::feed) with per-message options.
    pub fn feed_with(&self, message: impl Into<Message>, options: SendOptions) -> Result<(), Error> {
        let mut message = Some(message.into());
        self.drive(|driver, cx| {
            if let Err(e) = std::task::ready!(driver.poll_send_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            Poll::Ready(message.take().map_or(Ok(()), |m| driver.start_send_with(m, options)))
        })
    }

    /// Writes everything queued.
    pub fn flush(&self) -> Result<(), Error> {
        self.drive(|driver, cx| driver.poll_flush(cx, Side::Send))
    }

    /// Sends one frame of a fragmented message; see
    /// [`WebSocket::send_fragment`](crate::WebSocket::send_fragment).
    pub fn send_fragment(&self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), Error> {
        self.queue(|driver| driver.start_fragment(kind, data, fin))
    }

    /// Sends a ping (at most 125 bytes).
    pub fn ping(&self, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        self.queue(|driver| driver.start_ping(&payload))
    }

    /// Sends an unsolicited pong.
    pub fn pong(&self, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        self.queue(|driver| driver.start_pong(&payload))
    }

    /// Sends a close frame with `code` and `reason`. The reader receives
    /// what is still in flight, then the end of the connection. Without a
    /// reader (dropped), this waits for the close handshake itself.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        lock(&self.shared).start_close(code, reason)?;
        if !self.shared.reader_alive.load(Ordering::Acquire) {
            // The whole loop, close timer included: a flush alone would wait
            // for ever on a peer that neither reads nor answers.
            return self.drive(|driver, cx| driver.poll_until_closed(cx, Side::Send));
        }
        self.flush()
    }

    /// Waits for room, queues with `start`, writes.
    fn queue(
        &self,
        mut start: impl FnMut(&mut Driver<Transport<S>, Blocking>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut started = false;
        self.drive(|driver, cx| {
            if !started {
                if let Err(e) = std::task::ready!(driver.poll_send_ready(cx)) {
                    return Poll::Ready(Err(e));
                }
                start(driver)?;
                started = true;
            }
            driver.poll_flush(cx, Side::Send)
        })
    }

    /// Polls under the lock until `Ready`, unlocking between polls: a
    /// `Pending` means a write waited for its timeout, and the reader may
    /// need the lock to run the timers.
    fn drive<T>(&self, mut poll: impl FnMut(&mut Driver<Transport<S>, Blocking>, &mut Context<'_>) -> Poll<T>) -> T {
        crate::runtime::block_on_poll(|cx| poll(&mut lock(&self.shared), cx))
    }
}
