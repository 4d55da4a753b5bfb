//! The glue between compio and the driving loop: the clock, one timer, the
//! completion-based transport, and opening TCP connections.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tether_driver::runtime::{Connect, Runtime, RuntimeIo, Timer, TimerWaker};
use tether_proto::RecvBuf;

use crate::CompioStream;

/// The compio runtime, as the driving loop sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Compio;

/// A compio timer, re-armed in place: the sleep is made when first polled
/// and again only when the deadline moves. The driving loop checks its
/// timer at every turn; until compio fires it (through a [`TimerWaker`]),
/// the check is one flag: no clock read, no lookup in compio's timer table.
pub struct CompioTimer {
    deadline: Instant,
    sleep: Option<Pin<Box<dyn Future<Output = ()>>>>,
    /// The waker the sleep holds, while it is armed.
    armed: Option<Arc<TimerWaker>>,
}

impl std::fmt::Debug for CompioTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompioTimer").field("deadline", &self.deadline).finish()
    }
}

impl Timer for CompioTimer {
    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn reset(&mut self, deadline: Instant) {
        if deadline != self.deadline {
            self.deadline = deadline;
            self.sleep = None;
            self.armed = None;
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed.as_ref().is_some_and(|armed| armed.waits_for(cx)) {
            return Poll::Pending;
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        // Not armed, armed for another task, or fired early (a timer may
        // round): armed again for this task.
        let deadline = self.deadline;
        let (armed, waker) = TimerWaker::arm(cx);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(compio::time::sleep_until(deadline)));
        let poll = sleep.as_mut().poll(&mut Context::from_waker(&waker));
        if poll.is_pending() {
            self.armed = Some(armed);
        } else {
            // Done already (compio took the deadline as past).
            self.sleep = None;
            self.armed = None;
        }
        poll
    }
}

impl Runtime for Compio {
    type Timer = CompioTimer;

    fn now() -> Instant {
        Instant::now()
    }

    fn timer(deadline: Instant) -> CompioTimer {
        CompioTimer {
            deadline,
            sleep: None,
            armed: None,
        }
    }
}

impl RuntimeIo<CompioStream> for Compio {
    /// Reads land in the runtime's pool buffers and are copied into the
    /// connection's buffer: a connection waiting for data holds none.
    const RESERVES_READ_ROOM: bool = false;

    fn poll_read(io: &mut CompioStream, cx: &mut Context<'_>, buf: &mut RecvBuf<'_>) -> Poll<io::Result<usize>> {
        io.poll_read(cx, buf)
    }

    fn poll_write(io: &mut CompioStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        io.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        io: &mut CompioStream,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(_: &CompioStream) -> bool {
        true
    }

    /// The connection's output is written as it is, owned by the write
    /// until it completes: no copy.
    const WRITES_OWNED: bool = true;

    fn poll_write_owned(
        io: &mut CompioStream,
        cx: &mut Context<'_>,
        chunks: &mut dyn Iterator<Item = bytes::Bytes>,
    ) -> Poll<io::Result<usize>> {
        io.poll_write_owned(cx, chunks)
    }

    fn poll_flush(io: &mut CompioStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io.poll_flush(cx)
    }

    fn poll_shutdown(io: &mut CompioStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io.poll_shutdown(cx)
    }
}

impl tether_driver::TransportAddrs<CompioStream> for Compio {
    fn local_addr(io: &CompioStream) -> io::Result<SocketAddr> {
        io.local_addr()
    }

    fn peer_addr(io: &CompioStream) -> io::Result<SocketAddr> {
        io.peer_addr()
    }
}

impl Connect for Compio {
    type Tcp = compio::net::TcpStream;
    type Stream = CompioStream;

    async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        // getaddrinfo blocks: on compio's thread pool.
        let host = host.to_owned();
        compio::runtime::spawn_blocking(move || (host.as_str(), port).to_socket_addrs().map(Iterator::collect))
            .await
            .map_err(|_| io::Error::other("the name lookup panicked"))?
    }

    async fn connect_tcp(addr: SocketAddr, nodelay: bool, _limit: Option<Duration>) -> io::Result<Self::Tcp> {
        // The driving crate races the attempt against the runtime's timer.
        let tcp = compio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(nodelay)?;
        Ok(tcp)
    }

    fn plain(tcp: Self::Tcp) -> CompioStream {
        CompioStream::from(tcp)
    }
}
