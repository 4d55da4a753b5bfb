//! The transport: a compio TCP stream whose reads and writes are io_uring
//! operations, adapted to the driving loop's poll-based calls.
//!
//! The driving loop asks "read into this buffer" and "write these bytes"
//! and expects `Pending` or an answer; io_uring takes an operation that
//! owns its buffer and answers later. [`CompioStream`] keeps at most one
//! read and one write in flight and gives their results to the next call:
//!
//! - **Reads** use the runtime's buffer pool (io_uring provided buffers):
//!   the kernel picks a pool buffer only when data arrives, so a connection
//!   that waits for data holds no receive buffer at all (the shared receive
//!   buffer of uWebSockets, done by the kernel). What arrived is appended to
//!   the connection's receive buffer and the pool buffer goes back at once.
//!   When the pool is empty (`ENOBUFS`: data is there, no buffer was), and
//!   while a large message streams in (the last read filled its buffer),
//!   one read goes straight into the room of the connection's receive
//!   buffer instead ([`RecvBuf::split_room`]), with `MSG_DONTWAIT` so that
//!   it never waits holding that room: no copy for the bulk of a large
//!   message.
//! - **Writes** take the connection's output as it is: owned chunks shared
//!   with the connection ([`Connection::transmit_owned`]: the frames, and
//!   large payloads as the application gave them), up to 8 in one vectored
//!   write, which owns them until it completes: nothing is copied. The loop
//!   is told how much was written when it asks again. A write that returned
//!   `Pending` is asked again with output that starts with the same bytes,
//!   which the driving loop does (its transmit queue only advances on an
//!   answer). Borrowed bytes (the opening handshake's) are copied into a
//!   spare buffer of this thread (up to 256 KiB per write).
//!
//! [`Connection::transmit_owned`]: tether_proto::Connection::transmit_owned
//!
//! The operations are submitted when the runtime's loop turn ends, together
//! with every other socket's: one `io_uring_enter` for all of them.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use compio::buf::arrayvec::ArrayVec;
use compio::buf::{BufResult, IntoInner, IoBufMut};
use compio::driver::op::{Recv, RecvFlags, RecvManaged, Send, SendFlags, SendVectored};
use compio::driver::{ResultTakeBuffer, SharedFd, ToSharedFd};
use compio::net::TcpStream;
use compio::runtime::{Runtime, Submit};
use tether_proto::RecvBuf;

type Fd = SharedFd<socket2::Socket>;

/// The most one write of borrowed bytes copies and submits.
const MAX_WRITE: usize = 256 * 1024;
/// The most chunks of owned output one write takes.
const MAX_CHUNKS: usize = 8;
/// The size of a read outside the pool (after `ENOBUFS`, or while a large
/// message streams in): the least room it is given in the receive buffer.
const SPARE_READ: usize = 64 * 1024;
/// The most room reserved at once for the rest of a frame arriving.
const MAX_FRAME_ROOM: usize = 1 << 20;
/// Spare buffers kept per thread, and the bytes they may hold in all.
const SPARE_COUNT: usize = 64;
const SPARE_BYTES: usize = 8 << 20;

thread_local! {
    /// This thread's reads: into pool buffers, and outside the pool.
    static READS: std::cell::Cell<ReadCounts> = const { std::cell::Cell::new(ReadCounts { pooled: 0, spare: 0 }) };
    /// Buffers that in-flight operations gave back, for the next ones: a
    /// write of borrowed bytes, or a read of a runtime without a pool,
    /// takes one; its completion returns it.
    static SPARE: RefCell<Spare> = const { RefCell::new(Spare { bufs: Vec::new(), held: 0 }) };
}

/// How this thread's reads were made, for tuning the pool ([`crate::runtime_builder`]): a
/// high share of reads outside the pool with small messages means the pool
/// is too small for the reads that complete in one loop turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Reads into a buffer of the runtime's pool.
    pub pooled: u64,
    /// Reads outside the pool: straight into the connection's receive
    /// buffer (the pool was empty, or a large message was streaming in), or
    /// into a spare buffer of the thread when the runtime has no pool.
    pub spare: u64,
}

/// The reads made on this thread so far.
pub fn read_counts() -> ReadCounts {
    READS.with(std::cell::Cell::get)
}

fn count_read(spare: bool) {
    READS.with(|reads| {
        let mut counts = reads.get();
        if spare {
            counts.spare += 1;
        } else {
            counts.pooled += 1;
        }
        reads.set(counts);
    });
}

/// The spare buffers of a thread and the bytes they hold.
struct Spare {
    bufs: Vec<Vec<u8>>,
    held: usize,
}

fn take_spare(len: usize) -> Vec<u8> {
    let mut buf = SPARE
        .with(|spare| {
            let mut spare = spare.borrow_mut();
            let buf = spare.bufs.pop()?;
            spare.held -= buf.capacity();
            Some(buf)
        })
        .unwrap_or_default();
    buf.clear();
    buf.reserve(len);
    buf
}

fn give_back(buf: Vec<u8>) {
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.bufs.len() < SPARE_COUNT && spare.held + buf.capacity() <= SPARE_BYTES {
            spare.held += buf.capacity();
            spare.bufs.push(buf);
        }
    });
}

/// Appends what a read brought to the connection's receive buffer. A
/// buffer that must grow is given room for a whole read outside the pool
/// at once
/// (taken from the thread's cache when empty: see
/// [`RecvBuf::reserve`]), not just for these bytes: the next read's
/// bytes (the rest of a frame) then fit without a reallocation that
/// would copy everything received so far.
fn append(buf: &mut RecvBuf<'_>, data: &[u8]) {
    if buf.spare_capacity() < data.len() {
        buf.reserve(data.len().max(SPARE_READ));
    }
    buf.put_slice(data);
}

enum ReadOp {
    Idle,
    /// Into a buffer of the runtime's pool, chosen by the kernel on arrival.
    Pooled(Submit<RecvManaged<Fd>>),
    /// Into the room of the connection's receive buffer, lent for the read
    /// (`MSG_DONTWAIT`: made only when data is expected to be there).
    Direct(Submit<Recv<BytesMut, Fd>>),
    /// Into a spare buffer of this thread: the runtime has no pool.
    Spare(Submit<Recv<Vec<u8>, Fd>>),
}

enum WriteOp {
    Idle,
    /// Borrowed bytes, copied into a spare buffer of this thread.
    InFlight(Submit<Send<Vec<u8>, Fd>>),
    /// One chunk of the connection's output.
    Owned(Submit<Send<Bytes, Fd>>),
    /// Several chunks of the connection's output (boxed: the chunks are
    /// held inline until submission, and every connection would carry
    /// their room).
    OwnedVectored(Box<Submit<SendVectored<ArrayVec<Bytes, MAX_CHUNKS>, Fd>>>),
    /// Completed while the loop was not asking (in `poll_flush`): the answer
    /// for its next `poll_write`.
    Done(io::Result<usize>),
}

/// A TCP stream of a compio runtime, read and written through completions
/// (io_uring, or compio's poll driver where io_uring is not available).
///
/// Made from a [`compio::net::TcpStream`] (`CompioStream::from`), or by
/// [`connect`](crate::connect). Use it on the runtime (thread) that made it.
pub struct CompioStream {
    tcp: TcpStream,
    fd: Fd,
    read: ReadOp,
    write: WriteOp,
    /// The last pooled read filled its buffer: more is probably waiting.
    streaming: bool,
}

impl std::fmt::Debug for CompioStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompioStream")
            .field("local_addr", &self.tcp.local_addr().ok())
            .field("peer_addr", &self.tcp.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

impl From<TcpStream> for CompioStream {
    fn from(tcp: TcpStream) -> Self {
        let fd = tcp.to_shared_fd();
        Self {
            tcp,
            fd,
            read: ReadOp::Idle,
            write: WriteOp::Idle,
            streaming: false,
        }
    }
}

impl CompioStream {
    /// The TCP stream.
    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }

    /// Whether a read is in flight.
    pub fn is_reading(&self) -> bool {
        !matches!(self.read, ReadOp::Idle)
    }

    /// Whether the read in flight holds a buffer: only a read outside the
    /// pool, which is made when data is already there and completes at once
    /// (a connection that waits for data waits in a pooled read), or any
    /// read of a runtime without a pool.
    pub fn holds_read_buffer(&self) -> bool {
        matches!(self.read, ReadOp::Direct(_) | ReadOp::Spare(_))
    }

    fn start_read(&mut self, buf: &mut RecvBuf<'_>) {
        if self.streaming {
            self.start_direct_read(buf);
        } else {
            self.start_pooled_read();
        }
    }

    fn start_pooled_read(&mut self) {
        let pooled = Runtime::with_current(|rt| {
            let pool = rt.buffer_pool()?;
            // 0: the whole of the buffer the kernel picks.
            let op = RecvManaged::new(self.fd.clone(), &pool, 0, RecvFlags::empty())?;
            io::Result::Ok(rt.submit(op))
        });
        match pooled {
            Ok(submit) => self.read = ReadOp::Pooled(submit),
            // No pool on this runtime: reads into spare buffers, which wait
            // holding them.
            Err(_) => {
                let op = Recv::new(self.fd.clone(), take_spare(SPARE_READ), RecvFlags::empty());
                self.read = ReadOp::Spare(compio::runtime::submit(op));
            }
        }
    }

    /// A read straight into the receive buffer's room, made only when data
    /// is expected to be there already; `MSG_DONTWAIT`, so that it never
    /// waits holding the room: without data it fails at once, the room goes
    /// back, and a pooled read follows.
    fn start_direct_read(&mut self, buf: &mut RecvBuf<'_>) {
        // Room for the rest of the frame arriving (up to `MAX_FRAME_ROOM`)
        // at once: growing step by step would copy what came so far at
        // every step. Made only while the peer sends (the last read filled
        // its buffer), so a peer that announces a large frame and stops
        // gets at most that.
        let room = buf.frame_rest().clamp(SPARE_READ, MAX_FRAME_ROOM);
        let op = Recv::new(self.fd.clone(), buf.split_room(room), RecvFlags::DONTWAIT);
        self.read = ReadOp::Direct(compio::runtime::submit(op));
    }

    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut RecvBuf<'_>) -> Poll<io::Result<usize>> {
        loop {
            match &mut self.read {
                ReadOp::Idle => self.start_read(buf),
                ReadOp::Pooled(submit) => {
                    let result = match Pin::new(submit).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => result,
                    };
                    self.read = ReadOp::Idle;
                    // SAFETY: the length is the kernel's count of the bytes it
                    // wrote into the buffer it picked.
                    match unsafe { result.take_buffer() } {
                        Ok(Some(mut pooled)) => {
                            count_read(false);
                            let n = pooled.len();
                            self.streaming = n == pooled.buf_capacity();
                            append(buf, &pooled);
                            return Poll::Ready(Ok(n));
                        }
                        Ok(None) => return Poll::Ready(Ok(0)),
                        // ENOBUFS: every pool buffer is in use and data is
                        // waiting; this read goes straight into the
                        // receive buffer.
                        Err(e) if e.kind() == io::ErrorKind::ResourceBusy => self.start_direct_read(buf),
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                ReadOp::Direct(submit) => {
                    let BufResult(result, op) = match Pin::new(submit).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => result,
                    };
                    self.read = ReadOp::Idle;
                    let mut room = op.into_inner();
                    if let Ok(n) = result {
                        count_read(true);
                        self.streaming = n == room.capacity();
                        // SAFETY: the kernel wrote `n` bytes at the start of
                        // the room, within its capacity.
                        unsafe { room.set_len(n) };
                    }
                    buf.unsplit_room(room);
                    if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                        // Nothing there after all: wait in a pooled read.
                        self.streaming = false;
                        self.start_pooled_read();
                        continue;
                    }
                    return Poll::Ready(result);
                }
                ReadOp::Spare(submit) => {
                    let BufResult(result, op) = match Pin::new(submit).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => result,
                    };
                    self.read = ReadOp::Idle;
                    let mut spare = op.into_inner();
                    count_read(true);
                    if let Ok(n) = result {
                        // SAFETY: the kernel wrote `n` bytes at the start of
                        // the spare buffer's capacity.
                        unsafe { spare.set_len(n) };
                        append(buf, &spare);
                        self.streaming = n == spare.capacity();
                    }
                    give_back(spare);
                    return Poll::Ready(result);
                }
            }
        }
    }

    pub(crate) fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            match &mut self.write {
                WriteOp::InFlight(_) | WriteOp::Owned(_) | WriteOp::OwnedVectored(_) | WriteOp::Done(_) => {
                    return self.poll_write_in_flight(cx);
                }
                WriteOp::Idle => {
                    let total: usize = bufs.iter().map(|b| b.len()).sum();
                    if total == 0 {
                        return Poll::Ready(Ok(0));
                    }
                    let mut owned = take_spare(total.min(MAX_WRITE));
                    for slice in bufs {
                        let room = MAX_WRITE - owned.len();
                        if room == 0 {
                            break;
                        }
                        owned.extend_from_slice(&slice[..slice.len().min(room)]);
                    }
                    let op = Send::new(self.fd.clone(), owned, SendFlags::NOSIGNAL);
                    self.write = WriteOp::InFlight(compio::runtime::submit(op));
                }
            }
        }
    }

    /// Writes some of the connection's output, owned (see the module
    /// docs): the chunks are taken only when no write is in flight.
    pub(crate) fn poll_write_owned(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut dyn Iterator<Item = Bytes>,
    ) -> Poll<io::Result<usize>> {
        match &self.write {
            // A write in flight, or its answer: for this call.
            WriteOp::InFlight(_) | WriteOp::Owned(_) | WriteOp::OwnedVectored(_) | WriteOp::Done(_) => {
                self.poll_write_in_flight(cx)
            }
            WriteOp::Idle => {
                let Some(first) = chunks.next() else {
                    return Poll::Ready(Ok(0));
                };
                let mut more = chunks.take(MAX_CHUNKS - 1).peekable();
                self.write = if more.peek().is_none() {
                    WriteOp::Owned(compio::runtime::submit(Send::new(
                        self.fd.clone(),
                        first,
                        SendFlags::NOSIGNAL,
                    )))
                } else {
                    let mut all = ArrayVec::new();
                    all.push(first);
                    all.extend(more);
                    WriteOp::OwnedVectored(Box::new(compio::runtime::submit(SendVectored::new(
                        self.fd.clone(),
                        all,
                        SendFlags::NOSIGNAL,
                    ))))
                };
                self.poll_write_in_flight(cx)
            }
        }
    }

    /// Polls the write in flight: its answer once it completes (its buffers
    /// go back: a spare one to the thread, owned chunks to the connection),
    /// or the answer kept by `poll_flush`. Never called without either.
    fn poll_write_in_flight(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let result = match &mut self.write {
            WriteOp::InFlight(submit) => {
                let BufResult(result, op) = std::task::ready!(Pin::new(submit).poll(cx));
                give_back(op.into_inner());
                result
            }
            WriteOp::Owned(submit) => std::task::ready!(Pin::new(submit).poll(cx)).0,
            WriteOp::OwnedVectored(submit) => std::task::ready!(Pin::new(&mut **submit).poll(cx)).0,
            WriteOp::Idle => return Poll::Ready(Ok(0)),
            WriteOp::Done(_) => {
                let WriteOp::Done(result) = std::mem::replace(&mut self.write, WriteOp::Idle) else {
                    unreachable!("matched above")
                };
                return Poll::Ready(result);
            }
        };
        self.write = WriteOp::Idle;
        Poll::Ready(result)
    }

    /// Waits for the write in flight, keeping its answer for the next
    /// `poll_write`.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.write, WriteOp::Idle | WriteOp::Done(_)) {
            return Poll::Ready(Ok(()));
        }
        let result = std::task::ready!(self.poll_write_in_flight(cx));
        self.write = WriteOp::Done(result);
        Poll::Ready(Ok(()))
    }

    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        // A TCP shutdown does not block: no operation needed.
        match socket2::SockRef::from(&self.tcp).shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}
