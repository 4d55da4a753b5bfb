//! The glue between blocking `std::net` and the driving loop: the clock,
//! a timer that needs no waker, I/O that blocks (bounded by socket
//! timeouts), connecting, and a `block_on` for the driver's futures.
//!
//! # Timers through socket timeouts
//!
//! Nothing wakes a blocked thread but its socket. So before every read and
//! write the loop hands its next deadline to [`RuntimeIo::set_deadline`],
//! which becomes `SO_RCVTIMEO`/`SO_SNDTIMEO` (at least 1 ms); a read or
//! write that times out returns `Poll::Pending`; [`block_on`] polls again;
//! the loop finds the timer ([`BlockingTimer`]: `Ready` once its deadline
//! passed) expired and hands the time to the core.
//!
//! Setting a socket option costs a system call, and the keepalive deadline
//! moves with every read. A timeout that ends *before* the deadline is
//! always correct (the loop just comes round once more), so [`Transport`]
//! keeps the timeout already set while it ends no later than the deadline
//! and no earlier than halfway to it, and sets a new one at 7/8 of the time
//! left: a busy connection makes no `setsockopt` call per read, and an idle
//! one wakes a few times on its way to a deadline.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BufMut;
use tether_driver::runtime::{Connect, Runtime, RuntimeIo, Timer};
use tether_proto::RecvBuf;

use crate::transport::BlockingIo;
#[cfg(feature = "tls")]
use crate::Error;
use crate::MaybeTlsStream;

/// The shortest socket timeout: a zero one means "no timeout" to the
/// operating system, and a deadline already past still needs one read
/// that returns at once.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// The longest a split connection's halves wait in one blocking call
/// before they look at the shared state again: the reader's read (a writer
/// may have moved the deadline earlier) and a writer's write (the lock is
/// released in between, so the reader gets its turn).
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(250);

/// Below this much time left, the timeout is set to exactly what is left.
const EXACT_BELOW: Duration = Duration::from_millis(64);

/// The most one read asks for: the scratch buffer's size. A thread serves
/// one connection, so this is memory per connection: 16 KiB keeps an idle
/// one small and still takes a burst in few reads.
const SCRATCH: usize = 16 * 1024;

/// Blocking `std::net`, as the driving loop sees it: the clock is
/// `Instant::now()`, I/O blocks, and the deadlines become socket timeouts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blocking;

/// A deadline, checked when the loop comes round: `Ready` once it passed,
/// `Pending` (with no waker) before. The socket timeout bounds the wait.
#[derive(Debug, Clone, Copy)]
pub struct BlockingTimer(Instant);

impl Timer for BlockingTimer {
    fn deadline(&self) -> Instant {
        self.0
    }

    fn reset(&mut self, deadline: Instant) {
        self.0 = deadline;
    }

    fn poll_expired(&mut self, _: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Runtime for Blocking {
    type Timer = BlockingTimer;

    // A thread per connection: buffers go back to the allocator.
    const RECYCLES_BUFFERS: bool = false;

    fn now() -> Instant {
        Instant::now()
    }

    fn timer(deadline: Instant) -> BlockingTimer {
        BlockingTimer(deadline)
    }
}

/// A [`BlockingIo`] transport as the loop drives it: the transport, and
/// the socket timeout set on it (so that an unchanged one costs no system
/// call). [`WebSocket`](crate::WebSocket) hides it; it shows only in the
/// driver's types (`tether_driver::WebSocketStream<Transport<S>, Blocking>`).
#[derive(Debug)]
pub struct Transport<S> {
    io: S,
    /// The read timeout last set.
    read_timeouts: Timeouts,
    /// The write timeout last set.
    write_timeouts: Timeouts,
    /// The last write timed out: the peer does not take what we send.
    write_stuck: bool,
    /// A read brought bytes since the last write attempt.
    read_progress: bool,
    /// Off on the writer of a split connection: its reads return `Pending`
    /// (the reader thread reads a second handle and feeds the driver).
    reads: bool,
}

impl<S> Transport<S> {
    /// Wraps `io`, whose timeouts are not known yet.
    pub fn new(io: S) -> Self {
        Self {
            io,
            read_timeouts: Timeouts::default(),
            write_timeouts: Timeouts::default(),
            write_stuck: false,
            read_progress: false,
            reads: true,
        }
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The transport: reading or writing it directly corrupts the
    /// connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The transport.
    pub fn into_inner(self) -> S {
        self.io
    }

    /// Reads on or off (see `reads`); the timeouts set are forgotten, since
    /// which ones are set changes.
    pub(crate) fn set_reads(&mut self, reads: bool) {
        self.reads = reads;
        self.read_timeouts = Timeouts::default();
        self.write_timeouts = Timeouts::default();
    }
}

/// The socket timeout last set, to skip `setsockopt` while it still fits.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Timeouts {
    /// `None`: not known (nothing set yet); `Some(None)`: no timeout.
    set: Option<Option<Duration>>,
}

impl Timeouts {
    /// The timeout to set for `deadline`, or `None` when the one set still
    /// fits: it ends before the deadline, but not before halfway to it.
    pub(crate) fn update(&mut self, deadline: Option<Instant>, cap: Option<Duration>) -> Option<Option<Duration>> {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()).max(MIN_TIMEOUT));
        let wanted = match (left, cap) {
            (Some(left), Some(cap)) => Some(left.min(cap)),
            (left, cap) => left.or(cap),
        };
        let fits = match (self.set, wanted) {
            (Some(None), None) => true,
            (Some(Some(set)), Some(wanted)) => set <= wanted && set >= wanted / 2,
            _ => false,
        };
        if fits {
            return None;
        }
        let timeout = wanted.map(|w| if w > EXACT_BELOW { w - w / 8 } else { w });
        self.set = Some(timeout);
        Some(timeout)
    }
}

/// Reads into the spare room of `buf`.
///
/// `std::io::Read` wants initialised memory, and the core's receive buffer
/// offers uninitialised room. Zeroing 64 KiB before each read would cost as
/// much as copying 64 KiB even when 100 bytes arrive, and reading into
/// uninitialised memory needs `unsafe` that the nightly-only `read_buf`
/// would make sound. Instead each thread keeps one scratch buffer, zeroed
/// once: a read fills it, and only the bytes read are copied into the core
/// (`put_slice`), one `memcpy` of what arrived.
pub(crate) fn read_into<T: Read + ?Sized>(io: &mut T, buf: &mut impl BufMut) -> io::Result<usize> {
    thread_local! {
        static SCRATCH_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH_BUF.with(|scratch| {
        let mut local = Vec::new();
        let mut borrowed = scratch.try_borrow_mut();
        // Never borrowed twice (reads do not nest); a fresh buffer if it were.
        let scratch = match &mut borrowed {
            Ok(scratch) => &mut **scratch,
            Err(_) => &mut local,
        };
        if scratch.len() < SCRATCH {
            scratch.resize(SCRATCH, 0);
        }
        // The whole scratch: the core's buffer grows by what arrived
        // (`put_slice`), so no room is reserved in it before a read that may
        // block for a long time.
        let n = io.read(&mut scratch[..SCRATCH])?;
        buf.put_slice(&scratch[..n]);
        Ok(n)
    })
}

/// A read or write that gave up because its socket timeout passed.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Runs a blocking call: `Pending` when it timed out (the loop comes back
/// for its timer), retried when interrupted by a signal.
fn blocking<T>(mut call: impl FnMut() -> io::Result<T>) -> Poll<io::Result<T>> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Poll::Pending,
            other => return Poll::Ready(other),
        }
    }
}

impl<S: BlockingIo> RuntimeIo<Transport<S>> for Blocking {
    fn poll_read(io: &mut Transport<S>, _: &mut Context<'_>, buf: &mut RecvBuf<'_>) -> Poll<io::Result<usize>> {
        if !io.reads {
            return Poll::Pending;
        }
        let poll = blocking(|| read_into(&mut io.io, buf));
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            io.read_progress = true;
        }
        poll
    }

    // The loop reserves no room before a read: `read_into` copies what
    // arrived, so a thread blocked in an idle read holds no receive buffer.
    const RESERVES_READ_ROOM: bool = false;

    fn poll_write(io: &mut Transport<S>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = blocking(|| io.io.write(buf));
        io.write_stuck = poll.is_pending();
        io.read_progress = false;
        poll
    }

    fn poll_write_vectored(
        io: &mut Transport<S>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = blocking(|| io.io.write_vectored(bufs));
        io.write_stuck = poll.is_pending();
        io.read_progress = false;
        poll
    }

    fn is_write_vectored(_: &Transport<S>) -> bool {
        // `Write::is_write_vectored` is unstable; TCP and Unix sockets write
        // vectored, and the default `write_vectored` of the others writes
        // the first slice, which is what the loop does otherwise.
        true
    }

    fn poll_flush(io: &mut Transport<S>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        blocking(|| io.io.flush())
    }

    fn poll_shutdown(io: &mut Transport<S>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        blocking(|| io.io.shutdown_write())
    }

    const USES_DEADLINES: bool = true;

    fn set_deadline(io: &mut Transport<S>, deadline: Option<Instant>) {
        // The async loops go on reading while a write waits for a peer that
        // does not read (they must see the violation or the close it sends
        // meanwhile), and so must this one: a write waits at most MAX_WAIT,
        // and while writes are stuck, reads wait at most MAX_WAIT too, so
        // the loop comes back to write. While a stuck peer still sends, the
        // next write only tries (MIN_TIMEOUT): the loop keeps reading at
        // the pace the peer sends instead of MAX_WAIT per read.
        let write_cap = if io.write_stuck && io.read_progress {
            MIN_TIMEOUT
        } else {
            MAX_WAIT
        };
        if let Some(timeout) = io.write_timeouts.update(deadline, Some(write_cap)) {
            if let Err(e) = io.io.set_write_timeout(timeout) {
                tracing::debug!("setting the write timeout failed: {e}");
                io.write_timeouts = Timeouts::default();
            }
        }
        // The reader thread of a split connection owns the read timeout.
        if io.reads {
            let cap = io.write_stuck.then_some(MAX_WAIT);
            if let Some(timeout) = io.read_timeouts.update(deadline, cap) {
                if let Err(e) = io.io.set_read_timeout(timeout) {
                    tracing::debug!("setting the read timeout failed: {e}");
                    io.read_timeouts = Timeouts::default();
                }
            }
        }
    }
}

impl<S: BlockingIo> tether_driver::TransportAddrs<Transport<S>> for Blocking {
    fn local_addr(io: &Transport<S>) -> io::Result<SocketAddr> {
        io.io.local_addr()
    }

    fn peer_addr(io: &Transport<S>) -> io::Result<SocketAddr> {
        io.io.peer_addr()
    }

    #[cfg(feature = "tls")]
    fn tls_info(io: &Transport<S>) -> Option<tether_driver::tls::TlsInfo> {
        io.io.tls_info()
    }
}

impl Connect for Blocking {
    type Tcp = TcpStream;
    type Stream = Transport<MaybeTlsStream<TcpStream>>;

    /// The system's resolver (`getaddrinfo`), which no timeout bounds.
    fn resolve(host: &str, port: u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>> {
        let result = (host, port).to_socket_addrs().map(Iterator::collect);
        async move { result }
    }

    /// `TcpStream::connect_timeout` with this attempt's share of the
    /// connect timeout.
    async fn connect_tcp(addr: SocketAddr, nodelay: bool, limit: Option<Duration>) -> io::Result<TcpStream> {
        let tcp = match limit {
            Some(limit) => TcpStream::connect_timeout(&addr, limit.max(MIN_TIMEOUT))?,
            None => TcpStream::connect(addr)?,
        };
        tcp.set_nodelay(nodelay)?;
        Ok(tcp)
    }

    fn plain(tcp: TcpStream) -> Self::Stream {
        Transport::new(MaybeTlsStream::Plain(tcp))
    }

    #[cfg(feature = "tls")]
    // The handshake blocks inside the future; written out as the trait's
    // signature so the `Send` bound stays visible.
    #[allow(clippy::manual_async_fn)]
    fn tls(
        stream: Self::Stream,
        name: rustls::pki_types::ServerName<'static>,
        config: std::sync::Arc<rustls::ClientConfig>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Self::Stream, Error>> {
        async move {
            let conn = rustls::ClientConnection::new(config, name).map_err(Error::Tls)?;
            match stream.into_inner() {
                MaybeTlsStream::Plain(tcp) => {
                    let tls = tls_handshake(conn, tcp, deadline)?;
                    Ok(Transport::new(MaybeTlsStream::Tls(Box::new(tls))))
                }
                // Through an https:// proxy's tunnel.
                tunnel => {
                    let tls = tls_handshake(conn, tunnel, deadline)?;
                    Ok(Transport::new(MaybeTlsStream::TlsInTls(Box::new(tls))))
                }
            }
        }
    }
}

/// Runs a client's TLS handshake over `io`, its socket's timeouts bounding
/// each wait by `deadline`.
#[cfg(feature = "tls")]
fn tls_handshake<S: BlockingIo>(
    mut conn: rustls::ClientConnection,
    mut io: S,
    deadline: Option<Instant>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, S>, Error> {
    let mut timeouts = Timeouts::default();
    while conn.is_handshaking() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::ConnectTimeout);
        }
        if let Some(timeout) = timeouts.update(deadline, None) {
            io.set_read_timeout(timeout)?;
            io.set_write_timeout(timeout)?;
        }
        match conn.complete_io(&mut io) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io(e)),
        }
    }
    Ok(rustls::StreamOwned::new(conn, io))
}

/// Runs `future` to completion on this thread: polls it with a no-op waker
/// until it is `Ready`. Any future of the driving crate on a
/// [`Blocking`] transport runs here (the async API of
/// `tether_driver::WebSocketStream<Transport<S>, Blocking>`, which
/// [`WebSocket::into_inner`](crate::WebSocket::into_inner) gives), so code
/// written once against the driving crate's async API also runs on a
/// blocking socket.
///
/// It cannot spin hot. The driver's futures return `Pending` in two ways:
/// a blocking call timed out, after waiting (at least 1 ms,
/// until the loop's next deadline); or the loop has nothing to do until a
/// deadline without a call to wait in (a read side that is off, a
/// transport that is not in blocking mode). The second kind comes back in
/// microseconds, so a `Pending` that came back faster than `MIN_TIMEOUT`
/// is followed by a sleep of `MIN_TIMEOUT`: at most a thousand polls a
/// second in the worst case, and a timer late by at most a millisecond.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let start = Instant::now();
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        if start.elapsed() < MIN_TIMEOUT {
            std::thread::sleep(MIN_TIMEOUT);
        }
    }
}

/// [`block_on`] for a poll function.
pub(crate) fn block_on_poll<T>(mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    block_on(std::future::poll_fn(|cx| poll(cx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitting_timeout_is_kept() {
        let mut timeouts = Timeouts::default();
        let deadline = Instant::now() + Duration::from_secs(120);
        let first = timeouts.update(Some(deadline), None);
        assert!(matches!(first, Some(Some(t)) if t < Duration::from_secs(120) && t > Duration::from_secs(100)));
        // The keepalive deadline moves later with each read: nothing to set.
        assert_eq!(timeouts.update(Some(deadline + Duration::from_millis(5)), None), None);
        // A deadline much nearer needs a new, shorter timeout.
        let near = timeouts.update(Some(Instant::now() + Duration::from_millis(10)), None);
        assert!(matches!(near, Some(Some(t)) if t <= Duration::from_millis(10)));
        // No deadline: no timeout, once.
        assert_eq!(timeouts.update(None, None), Some(None));
        assert_eq!(timeouts.update(None, None), None);
        // A deadline in the past still gets a timeout of at least 1 ms.
        let past = timeouts.update(Some(Instant::now() - Duration::from_secs(1)), None);
        assert_eq!(past, Some(Some(MIN_TIMEOUT)));
    }

    #[test]
    fn reads_copy_only_what_arrived() {
        let mut buf = bytes::BytesMut::with_capacity(16);
        let mut input: &[u8] = b"hello";
        assert_eq!(read_into(&mut input, &mut buf).ok(), Some(5));
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn block_on_does_not_spin_on_pending() {
        let start = Instant::now();
        let mut polls = 0;
        block_on_poll(|_| {
            polls += 1;
            if start.elapsed() >= Duration::from_millis(50) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        assert!(polls <= 51, "{polls} polls in 50 ms");
    }
}
