//! The glue between tokio and the driving loop: the clock, one timer, I/O
//! on `AsyncRead + AsyncWrite`, and opening TCP and TLS.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tether_driver::runtime::{Connect, Runtime, RuntimeIo, Timer};
use tether_proto::RecvBuf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Sleep;

#[cfg(feature = "tls")]
use crate::Error;
use crate::{MaybeTlsStream, SocketAddrs};

/// The tokio runtime, as the driving loop sees it. Its clock is tokio's, so
/// `tokio::time::pause` drives the core's timers in tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// A tokio `Sleep`, boxed once per connection and re-armed in place. The
/// driving loop checks its timer at every turn; the `Sleep` is polled
/// (tokio's timer entry: a lock and a waker clone) only when the waker
/// changed or its entry fired; otherwise only the entry's state is read.
/// The waker it holds lives in the same box: the driver, which every
/// connection holds, keeps one pointer (8 bytes, not 24).
#[derive(Debug)]
pub struct TokioTimer(Pin<Box<Armed>>);

pin_project_lite::pin_project! {
    #[derive(Debug)]
    struct Armed {
        #[pin]
        sleep: Sleep,
        // The waker the `Sleep` holds, if it was polled since the last reset.
        waker: Option<Waker>,
    }
}

impl Timer for TokioTimer {
    fn deadline(&self) -> Instant {
        self.0.sleep.deadline().into_std()
    }

    fn reset(&mut self, deadline: Instant) {
        let armed = self.0.as_mut().project();
        armed.sleep.reset(deadline.into());
        *armed.waker = None;
    }

    /// The box (the waker and the `Sleep`'s entry, which the check
    /// reads), asked for while the turn's system calls run.
    #[inline]
    fn prefetch(&self) {
        tether_driver::runtime::prefetch::<Armed>(&self.0);
    }

    /// Inlined into the driving loop, which asks at every wait: the check
    /// of a timer armed for this task and not fired is a few instructions,
    /// not a call.
    #[inline]
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let armed = self.0.as_mut().project();
        if let Some(waker) = armed.waker {
            // Armed for this task already: tokio wakes it once its timer
            // wheel fired the entry (at the deadline rounded up to its
            // millisecond tick), which `is_elapsed` reads without a clock
            // read: one fewer `clock_gettime` per turn of the loop.
            if waker.will_wake(cx.waker()) && !armed.sleep.is_elapsed() {
                return Poll::Pending;
            }
        }
        self.poll_sleep(cx)
    }
}

impl TokioTimer {
    /// [`Timer::poll_expired`] past its check of an armed timer: polls the
    /// `Sleep`, which registers this task's waker.
    #[inline(never)]
    fn poll_sleep(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let armed = self.0.as_mut().project();
        // Outside tokio's cooperative budget: with the task's budget spent
        // (a burst of writes), `Sleep` would return `Pending` without
        // registering the waker, and the shortcut above would then wait for
        // a wake-up that never comes. A timer check is no work to yield for.
        let poll = Pin::new(&mut tokio::task::unconstrained(armed.sleep)).poll(cx);
        *armed.waker = poll.is_pending().then(|| cx.waker().clone());
        poll
    }
}

impl Runtime for Tokio {
    type Timer = TokioTimer;

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn timer(deadline: Instant) -> TokioTimer {
        TokioTimer(Box::pin(Armed {
            sleep: tokio::time::sleep_until(deadline.into()),
            waker: None,
        }))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RuntimeIo<S> for Tokio {
    fn poll_read(io: &mut S, cx: &mut Context<'_>, buf: &mut RecvBuf<'_>) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
    }

    fn poll_write(io: &mut S, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write(cx, buf)
    }

    fn poll_write_vectored(io: &mut S, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(io: &S) -> bool {
        io.is_write_vectored()
    }

    fn poll_flush(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_flush(cx)
    }

    fn poll_shutdown(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_shutdown(cx)
    }
}

impl<S: SocketAddrs> tether_driver::TransportAddrs<S> for Tokio {
    fn local_addr(io: &S) -> io::Result<SocketAddr> {
        io.local_addr()
    }

    fn peer_addr(io: &S) -> io::Result<SocketAddr> {
        io.peer_addr()
    }

    #[cfg(feature = "tls")]
    fn tls_info(io: &S) -> Option<tether_driver::tls::TlsInfo> {
        io.tls_info()
    }
}

impl Connect for Tokio {
    type Tcp = TcpStream;
    type Stream = MaybeTlsStream<TcpStream>;

    async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }

    async fn connect_tcp(addr: SocketAddr, nodelay: bool, _limit: Option<Duration>) -> io::Result<TcpStream> {
        // The driving crate races the attempt against tokio's timer.
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(nodelay)?;
        Ok(tcp)
    }

    fn plain(tcp: TcpStream) -> Self::Stream {
        MaybeTlsStream::Plain(tcp)
    }

    #[cfg(feature = "tls")]
    async fn tls(
        stream: Self::Stream,
        name: rustls::pki_types::ServerName<'static>,
        config: std::sync::Arc<rustls::ClientConfig>,
        _deadline: Option<Instant>,
    ) -> Result<Self::Stream, Error> {
        let connector = tokio_rustls::TlsConnector::from(config);
        match stream {
            MaybeTlsStream::Plain(tcp) => {
                let tls = connector.connect(name, tcp).await.map_err(Error::from_io)?;
                Ok(MaybeTlsStream::Tls(Box::new(tls)))
            }
            // Through an https:// proxy's tunnel.
            tunnel => {
                let tls = connector.connect(name, tunnel).await.map_err(Error::from_io)?;
                Ok(MaybeTlsStream::TlsInTls(Box::new(tls)))
            }
        }
    }
}
