//! The glue between futures-io runtimes and the driving loop: the clock,
//! one async-io timer, I/O on `AsyncRead + AsyncWrite`, and opening TCP
//! (async-io's `Async<TcpStream>`, async-net's resolver) and TLS
//! (futures-rustls).

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BufMut;
use futures_io::{AsyncRead, AsyncWrite};
use tether_driver::runtime::{Connect, Runtime, RuntimeIo, Timer, TimerWaker};
use tether_driver::tether_proto::RecvBuf;

#[cfg(feature = "tls")]
use crate::Error;
use crate::{MaybeTlsStream, TcpStream};

/// Any futures-io runtime that runs the async-io reactor (smol,
/// async-std), as the driving loop sees it. The clock is
/// [`Instant::now`], the timer async-io's.
#[derive(Debug, Clone, Copy, Default)]
pub struct FuturesIo;

/// An [`async_io::Timer`], created once per connection and re-armed in
/// place.
#[derive(Debug)]
pub struct AsyncIoTimer {
    timer: async_io::Timer,
    deadline: Instant,
    /// async-io's timer answers `Ready` once, then `Pending` for ever; the
    /// driving loop asks again after expiry (before re-arming it later).
    expired: bool,
    /// The waker the timer holds, if it was polled since the last reset:
    /// the driving loop checks its timer at every turn; until async-io
    /// fires it the check is one flag (polling async-io's timer again takes
    /// the reactor's timer lock, and reading the clock costs more).
    armed: Option<Arc<TimerWaker>>,
}

impl Timer for AsyncIoTimer {
    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn reset(&mut self, deadline: Instant) {
        self.timer.set_at(deadline);
        self.deadline = deadline;
        self.expired = false;
        self.armed = None;
    }

    /// The armed waker's flag, which the check reads (an allocation of
    /// its own), asked for while the turn's system calls run.
    #[inline]
    fn prefetch(&self) {
        if let Some(armed) = &self.armed {
            tether_driver::runtime::prefetch::<TimerWaker>(armed);
        }
    }

    /// Inlined into the driving loop, which asks at every wait: the check
    /// of a timer armed for this task and not fired is a few instructions,
    /// not a call.
    #[inline]
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.expired && self.armed.as_ref().is_some_and(|armed| armed.waits_for(cx)) {
            return Poll::Pending;
        }
        self.poll_timer(cx)
    }
}

impl AsyncIoTimer {
    /// [`Timer::poll_expired`] past its check of an armed timer: arms
    /// async-io's timer for this task.
    #[inline(never)]
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.expired {
            let (armed, waker) = TimerWaker::arm(cx);
            if Pin::new(&mut self.timer)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
            {
                self.armed = Some(armed);
                return Poll::Pending;
            }
            self.expired = true;
        }
        Poll::Ready(())
    }
}

impl Runtime for FuturesIo {
    type Timer = AsyncIoTimer;

    fn now() -> Instant {
        Instant::now()
    }

    fn timer(deadline: Instant) -> AsyncIoTimer {
        AsyncIoTimer {
            timer: async_io::Timer::at(deadline),
            deadline,
            expired: false,
            armed: None,
        }
    }
}

/// The most one read takes in: the driving crate's default read size.
const SCRATCH_LEN: usize = tether_driver::DEFAULT_READ_BUFFER_SIZE;

/// The most one read takes in when the scratch buffer is in use, and the
/// room made when the buffer has none.
const FALLBACK_LEN: usize = 4 * 1024;

thread_local! {
    /// Where reads land before they are copied into the core's receive
    /// buffer: zeroed once per thread, then reused by every connection the
    /// thread polls.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

// futures-io reads into initialised memory (`&mut [u8]`); the core lends
// its receive buffer as uninitialised room ([`RecvBuf`]). Zeroing that room
// before each read (64 KiB) would cost more than the rest of a small
// message's trip, and which part of it is already initialised cannot be
// known from here: the core splits, replaces and frees that buffer between
// reads. So each read lands in a per-thread scratch buffer, zeroed once,
// and only the bytes read are copied (`put_slice`): a copy as long as the
// data (tens of nanoseconds for a small message) instead of a fill as long
// as the room, and no `unsafe`.
impl<S: AsyncRead + AsyncWrite + Unpin> RuntimeIo<S> for FuturesIo {
    fn poll_read(io: &mut S, cx: &mut Context<'_>, buf: &mut RecvBuf<'_>) -> Poll<io::Result<usize>> {
        if buf.spare_capacity() == 0 {
            // An empty slice would read as the end of the stream.
            buf.reserve(FALLBACK_LEN);
        }
        let room = buf.spare_capacity();
        let scratch = SCRATCH.try_with(|scratch| {
            let mut scratch = scratch.try_borrow_mut().ok()?;
            if scratch.is_empty() {
                scratch.resize(SCRATCH_LEN, 0);
            }
            let len = room.min(scratch.len());
            Some(read_into(io, cx, &mut scratch[..len], buf))
        });
        match scratch {
            Ok(Some(poll)) => poll,
            // A transport that reads another tether connection inside its
            // own read (the scratch is borrowed), or a thread being torn
            // down: a small buffer on the stack instead.
            Ok(None) | Err(_) => {
                let mut stack = [0u8; FALLBACK_LEN];
                read_into(io, cx, &mut stack[..room.min(FALLBACK_LEN)], buf)
            }
        }
    }

    fn poll_write(io: &mut S, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write(cx, buf)
    }

    fn poll_write_vectored(io: &mut S, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write_vectored(cx, bufs)
    }

    /// futures-io cannot tell; its default `poll_write_vectored` writes the
    /// first slice, as `poll_write` would, and async-io's TCP (`Async`, and
    /// async-net's stream over it) writes them all in one `writev`.
    fn is_write_vectored(_: &S) -> bool {
        true
    }

    fn poll_flush(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_flush(cx)
    }

    fn poll_shutdown(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_close(cx)
    }
}

/// Reads into `scratch`, then appends what was read to `buf`.
fn read_into<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    scratch: &mut [u8],
    buf: &mut RecvBuf<'_>,
) -> Poll<io::Result<usize>> {
    let n = std::task::ready!(Pin::new(io).poll_read(cx, scratch))?;
    let read = scratch
        .get(..n)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the transport read more than it was given"))?;
    buf.put_slice(read);
    Poll::Ready(Ok(n))
}

/// DNS through async-net (the blocking resolver on async-io's thread
/// pool), TCP through async-io ([`TcpStream`]), TLS through
/// futures-rustls.
impl Connect for FuturesIo {
    type Tcp = TcpStream;
    type Stream = MaybeTlsStream<TcpStream>;

    fn resolve(host: &str, port: u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>> {
        async_net::resolve((host, port))
    }

    fn connect_tcp(
        addr: SocketAddr,
        nodelay: bool,
        _limit: Option<Duration>,
    ) -> impl Future<Output = io::Result<TcpStream>> {
        // The driving crate races the attempt against the async-io timer.
        // This crate's `TcpStream` (async-io's `Async`), not async-net's:
        // see its docs.
        let connected = TcpStream::connect(addr);
        async move {
            connected
                .await
                .and_then(|tcp| tcp.get_ref().set_nodelay(nodelay).map(|()| tcp))
        }
    }

    fn plain(tcp: TcpStream) -> Self::Stream {
        MaybeTlsStream::Plain(tcp)
    }

    #[cfg(feature = "tls")]
    fn tls(
        stream: Self::Stream,
        name: rustls::pki_types::ServerName<'static>,
        config: std::sync::Arc<rustls::ClientConfig>,
        _deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Self::Stream, Error>> {
        let connector = futures_rustls::TlsConnector::from(config);
        async move {
            match stream {
                MaybeTlsStream::Plain(tcp) => match connector.connect(name, tcp).await {
                    Ok(tls) => Ok(MaybeTlsStream::Tls(Box::new(tls))),
                    Err(e) => Err(Error::from_io(e)),
                },
                // Through an https:// proxy's tunnel.
                tunnel => match connector.connect(name, tunnel).await {
                    Ok(tls) => Ok(MaybeTlsStream::TlsInTls(Box::new(tls))),
                    Err(e) => Err(Error::from_io(e)),
                },
            }
        }
    }
}
