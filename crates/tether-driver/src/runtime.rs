//! What a runtime gives the driving loop: a clock, a timer, and poll-based
//! I/O on a transport. A shell implements these for its runtime on a marker
//! type (`tether_tokio::Tokio`, `tether_futures::FuturesIo`, ...); everything else
//! is written once in this crate.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_proto::RecvBuf;

/// A runtime's clock and timer. Implemented on a marker type of the shell.
pub trait Runtime: 'static {
    /// A timer armed at a deadline.
    type Timer: Timer;

    /// The time now, from the runtime's clock (tokio's paused clock in
    /// tests, for example), so that the core's deadlines follow it.
    fn now() -> Instant;

    /// A timer that fires at `deadline`.
    fn timer(deadline: Instant) -> Self::Timer;

    /// Whether the empty receive and transmit buffers a connection lets go
    /// of (when it waits, and as soon as parsing or a write empties them)
    /// go to the thread's cache for its next connection that reads or
    /// writes ([`Connection::recycle_buffers`](tether_proto::Connection::recycle_buffers),
    /// [`Connection::set_buffer_recycling`](tether_proto::Connection::set_buffer_recycling):
    /// a few per thread, no allocation per message), rather than back to
    /// the allocator ([`shrink_buffers`](tether_proto::Connection::shrink_buffers)).
    /// The thread also keeps the allocations of the last large frames it
    /// received (each of at most 2 MiB, 4 MiB in all: see
    /// [`RecvBuf::reserve`]).
    /// Right for runtimes that run many connections on a thread; a runtime
    /// with a thread per connection (blocking) sets it to `false`, or every
    /// thread would keep what its one connection let go of.
    const RECYCLES_BUFFERS: bool = true;
}

/// One timer, re-armed in place.
pub trait Timer: Unpin {
    /// The instant it fires at.
    fn deadline(&self) -> Instant;
    /// Moves the deadline (earlier or later).
    fn reset(&mut self, deadline: Instant);
    /// `Ready` once the deadline has passed; otherwise registers `cx`'s
    /// waker to be woken then. A blocking runtime returns `Pending` without
    /// a waker and bounds its next read or write by the deadline instead
    /// (see [`RuntimeIo::set_deadline`]).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// Asks the processor to bring what [`poll_expired`](Self::poll_expired)
    /// reads into its cache: the driving loop calls it before the system
    /// calls of a turn, at whose end it checks the timer. A timer that
    /// lives in memory of its own (a box, which nothing else of a turn
    /// touches) is otherwise a cache miss at every check once other
    /// connections' messages went through the cache. Does nothing by
    /// default.
    #[inline]
    fn prefetch(&self) {}
}

/// Asks the processor to bring `value`'s memory into its cache, for a
/// [`Timer::prefetch`]: a hint that reads nothing into the program; nothing
/// on other architectures than x86-64.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = std::ptr::from_ref::<T>(value).cast::<i8>();
        for offset in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch cannot fault and changes nothing the
            // program sees; the addresses are within `value`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// The waker a shell hands its runtime's timer: marks the timer fired, then
/// wakes the task. The driving loop asks its timer at every turn; with
/// this a shell answers without reading the clock or asking the runtime's
/// timer table until the runtime fired the timer (as tokio's
/// `Sleep::is_elapsed` does for tether-tokio).
///
/// ```ignore
/// if self.armed.as_ref().is_some_and(|armed| armed.waits_for(cx)) {
///     return Poll::Pending; // armed for this task, not fired
/// }
/// let (armed, waker) = TimerWaker::arm(cx);
/// // poll the runtime's timer with `Context::from_waker(&waker)`, keep `armed`
/// ```
#[derive(Debug)]
pub struct TimerWaker {
    fired: AtomicBool,
    task: Waker,
}

impl TimerWaker {
    /// A waker for `cx`'s task that marks this fired; keep the `Arc`, hand
    /// the `Waker` to the runtime's timer.
    pub fn arm(cx: &Context<'_>) -> (Arc<Self>, Waker) {
        let armed = Arc::new(Self {
            fired: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(Arc::clone(&armed));
        (armed, waker)
    }

    /// Whether the timer holding it has not fired and would wake `cx`'s
    /// task: nothing to ask until it does.
    #[inline]
    pub fn waits_for(&self, cx: &Context<'_>) -> bool {
        !self.fired.load(Ordering::Acquire) && self.task.will_wake(cx.waker())
    }
}

impl Wake for TimerWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// Poll-based I/O on a transport `S` under runtime `Self`: the handful of
/// calls the driving loop makes. For async runtimes these forward to the
/// runtime's `AsyncRead`/`AsyncWrite`; a blocking runtime performs the call
/// and returns `Ready`, or `Pending` when the deadline given to
/// [`set_deadline`](Self::set_deadline) passed first.
pub trait RuntimeIo<S>: Runtime {
    /// Whether the loop reserves room for a read in the receive buffer
    /// before each read (`read_buffer_size`, when less than 4 KiB is left):
    /// what runtimes that read in place need. Such a runtime's reads go
    /// into the buffer the thread keeps while the connection holds none,
    /// and the receive loops take or lend the read's messages there
    /// ([`Connection::read_and_take`](tether_proto::Connection::read_and_take),
    /// [`Connection::read_and_lend`](tether_proto::Connection::read_and_lend)).
    /// A runtime that reads into a buffer of its own and copies what
    /// arrived sets it to `false`, so a connection blocked in a long read
    /// holds no receive buffer.
    const RESERVES_READ_ROOM: bool = true;

    /// Reads into the core's receive buffer, which only appends (it is a
    /// [`bytes::BufMut`]: read into its `chunk_mut`, or `put_slice`);
    /// `Ok(0)` is the end of the stream. The loop has reserved room for a
    /// read (at least 4 KiB).
    fn poll_read(io: &mut S, cx: &mut Context<'_>, buf: &mut RecvBuf<'_>) -> Poll<io::Result<usize>>;

    /// Writes some of `buf`.
    fn poll_write(io: &mut S, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

    /// Writes some of `bufs`, in order.
    fn poll_write_vectored(io: &mut S, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>>;

    /// Whether [`poll_write_vectored`](Self::poll_write_vectored) writes more
    /// than the first slice.
    fn is_write_vectored(io: &S) -> bool;

    /// Whether the transport's writes own what they write until they
    /// complete (io_uring): the loop then writes through
    /// [`poll_write_owned`](Self::poll_write_owned), handing over the output
    /// as owned chunks shared with the connection instead of slices the
    /// transport would have to copy.
    const WRITES_OWNED: bool = false;

    /// Writes some of `chunks` (the output, in order, owned: see
    /// [`WRITES_OWNED`](Self::WRITES_OWNED)) and returns how much. As with
    /// the other writes, a call that returned `Pending` is made again with
    /// output that starts with the same bytes; a transport with a write in
    /// flight answers for that write and ignores the chunks. The default
    /// writes the first chunk with [`poll_write`](Self::poll_write).
    fn poll_write_owned(
        io: &mut S,
        cx: &mut Context<'_>,
        chunks: &mut dyn Iterator<Item = Bytes>,
    ) -> Poll<io::Result<usize>> {
        match chunks.next() {
            Some(first) => Self::poll_write(io, cx, &first),
            None => Poll::Ready(Ok(0)),
        }
    }

    /// Flushes what the transport buffers (TLS records, for example).
    fn poll_flush(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Closes the write side (TCP FIN, TLS close_notify).
    fn poll_shutdown(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Whether [`set_deadline`](Self::set_deadline) does anything: a
    /// blocking runtime's reads and writes are bounded by the next timer
    /// deadline, which the loop then computes before each of them. Async
    /// runtimes leave it `false` (their timer wakes the task) and the loop
    /// skips that work on every read and write.
    const USES_DEADLINES: bool = false;

    /// The instant by which the next read or write must return control to
    /// the loop (the next timer deadline), or `None` for no bound. Called
    /// before every read and write when [`USES_DEADLINES`](Self::USES_DEADLINES)
    /// is set. Async runtimes ignore it (the timer wakes the task); blocking
    /// ones turn it into a socket timeout.
    fn set_deadline(io: &mut S, deadline: Option<Instant>) {
        let _ = (io, deadline);
    }
}

/// Opening client transports: DNS, TCP, TLS, as primitives. The driving
/// crate's [`ClientBuilder`](crate::ClientBuilder) strings them together the
/// same way on every runtime: every resolved address in turn, each with its
/// share of the connect timeout, then TLS for `wss://`, then the opening
/// handshake.
///
/// Neither the types nor the futures must be `Send`: a thread-per-core
/// runtime (compio) has neither. On a work-stealing runtime the shell's
/// own futures are `Send`, and so is `ClientBuilder::connect` for it (auto
/// traits follow the concrete types); tether-tokio and tether-futures test
/// that theirs are.
pub trait Connect: Runtime {
    /// A connected TCP stream.
    type Tcp;
    /// The transport of a connected client: plain for `ws://`, TLS for `wss://`.
    type Stream;

    /// Resolves `host` (a name or an address literal).
    fn resolve(host: &str, port: u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>>;

    /// Connects to `addr` and sets `TCP_NODELAY` as asked. `limit` is the
    /// time this attempt may take; async runtimes may ignore it (the caller
    /// also races the attempt against the runtime's timer), blocking ones
    /// must honour it (`TcpStream::connect_timeout`).
    fn connect_tcp(
        addr: SocketAddr,
        nodelay: bool,
        limit: Option<Duration>,
    ) -> impl Future<Output = io::Result<Self::Tcp>>;

    /// The transport of a `ws://` connection.
    fn plain(tcp: Self::Tcp) -> Self::Stream;

    /// Runs the TLS handshake for the server `name` over `stream` (`wss://`),
    /// by `deadline` when given. `stream` is plain TCP, or a tunnel through
    /// an `https://` proxy, which is TLS already: the result is then TLS
    /// inside TLS.
    ///
    /// The default fails: a shell built without its own `tls` feature
    /// (while another crate of the build turned on this crate's) has no
    /// TLS to run.
    #[cfg(feature = "tls")]
    fn tls(
        stream: Self::Stream,
        name: rustls::pki_types::ServerName<'static>,
        config: std::sync::Arc<rustls::ClientConfig>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Self::Stream, crate::Error>> {
        let _ = (name, config, deadline);
        drop(stream);
        std::future::ready(Err(crate::Error::Handshake(
            tether_proto::handshake::HandshakeError::InvalidUri("wss:// needs the `tls` feature of the adapter"),
        )))
    }
}

/// The time one connection attempt may take when `remaining` addresses
/// (this one included) are still to be tried before `deadline`: an equal
/// share of what is left, so one unreachable address cannot use it all up.
pub fn share_of_deadline(deadline: Instant, now: Instant, remaining: usize) -> Duration {
    let left = deadline.saturating_duration_since(now);
    left / u32::try_from(remaining.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A task's waker that counts its wake-ups.
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_timer_waker_waits_until_it_wakes_its_task() {
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let task_waker = Waker::from(Arc::clone(&task));
        let cx = Context::from_waker(&task_waker);
        let (armed, waker) = TimerWaker::arm(&cx);
        assert!(armed.waits_for(&cx), "armed for this task, not fired");

        let other = Waker::from(Arc::new(Task(AtomicUsize::new(0))));
        assert!(
            !armed.waits_for(&Context::from_waker(&other)),
            "another task must arm it anew"
        );

        // The runtime's timer fires: the task is woken, and the check asks
        // the runtime again.
        waker.wake_by_ref();
        assert_eq!(task.0.load(Ordering::Relaxed), 1);
        assert!(!armed.waits_for(&cx));
        waker.wake();
        assert_eq!(task.0.load(Ordering::Relaxed), 2);
    }
}
