//! The event loop: one poll, one slab of connections, one heap of
//! deadlines.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tether_proto::handshake::{HandshakeConfig, HandshakeError, ServerHandshake};
use tether_proto::{CloseCode, Connection, Event, MessageRef, Outbox, Reassembler, RecvBuf, State};

use crate::socket::{Command, Handler, Loop, Socket};
use crate::WebSocketConfig;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// Reads of the opening handshake go through the loop's scratch buffer,
/// this large: no buffer per connection while it is being accepted.
const HANDSHAKE_READ: usize = 4096;
/// The least room a read of an open connection asks for (as the other
/// shells' driving loop).
const MIN_READ_ROOM: usize = 4 * 1024;
/// Slices of one vectored write.
const MAX_IOV: usize = 64;
/// How long an HTTP answer to a refused handshake may take to be written.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait before accepting again after `accept` failed (out of file
/// descriptors and the like): the others are served meanwhile.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// Readiness events taken per wake-up.
const EVENTS: usize = 1024;
/// Reads of one connection in a row (of up to the read size each) before
/// the others' turn.
const MAX_READS_PER_TURN: usize = 16;
/// [`Handler::drain`] calls of one connection in a row.
const MAX_DRAINS_PER_TURN: usize = 16;

/// A connection of a [`Server`]: its slot and the generation that tells it
/// from the connections that had the slot before and will have it after.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    key: u32,
    generation: u32,
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketId({}.{})", self.key, self.generation)
    }
}

/// Sends, closes and stop from other threads, woken into the loop.
/// Cloned freely; `Send` and `Sync`. Commands wait in a queue without a
/// bound until the loop takes them (at its next wake-up, all at once): a
/// producer that must not outrun a slow reader paces itself from the
/// loop's side instead ([`Socket::buffered_amount`](crate::Socket::buffered_amount),
/// [`Handler::drain`]).
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    waker: Waker,
    commands: Mutex<Vec<Command>>,
    /// `run` returned: nothing takes commands any more.
    ended: AtomicBool,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    fn push(&self, command: Command) -> io::Result<()> {
        let mut commands = self.shared.commands.lock().unwrap_or_else(PoisonError::into_inner);
        if self.shared.ended.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "the server has stopped"));
        }
        let first = commands.is_empty();
        commands.push(command);
        drop(commands);
        // One wake-up per batch: the loop takes every command at once.
        if first {
            self.shared.waker.wake()?;
        }
        Ok(())
    }

    /// Sends `message` on connection `id`, as [`Loop::send_to`]. A
    /// connection that has closed drops it (its [`Handler::close`] tells).
    /// Fails once [`Server::run`] has returned (`NotConnected`), or if the
    /// loop cannot be woken.
    pub fn send(&self, id: SocketId, message: impl Into<tether_proto::Message>) -> io::Result<()> {
        self.push(Command::Send(id, message.into(), tether_proto::SendOptions::default()))
    }

    /// [`send`](Self::send) with per-message options.
    pub fn send_with(
        &self,
        id: SocketId,
        message: impl Into<tether_proto::Message>,
        options: tether_proto::SendOptions,
    ) -> io::Result<()> {
        self.push(Command::Send(id, message.into(), options))
    }

    /// Starts the close handshake of connection `id`, as [`Loop::close`].
    pub fn close(&self, id: SocketId, code: CloseCode, reason: impl Into<String>) -> io::Result<()> {
        self.push(Command::Close(id, code, reason.into()))
    }

    /// Stops the server, as [`Loop::stop`].
    pub fn stop(&self) -> io::Result<()> {
        self.push(Command::Stop)
    }
}

/// A WebSocket server: a listener and the loop that serves its
/// connections on the thread that calls [`run`](Self::run).
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    shared: Arc<Shared>,
    config: WebSocketConfig,
    handshake: HandshakeConfig,
    nodelay: bool,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .field("handshake", &self.handshake)
            .field("nodelay", &self.nodelay)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server on `listener` (made non-blocking here), with the default
    /// settings.
    pub fn new(listener: std::net::TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        Ok(Self {
            poll,
            listener,
            shared: Arc::new(Shared {
                waker,
                commands: Mutex::new(Vec::new()),
                ended: AtomicBool::new(false),
            }),
            config: WebSocketConfig::default(),
            handshake: HandshakeConfig::default(),
            nodelay: true,
        })
    }

    /// A server listening on `addr`.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::new(std::net::TcpListener::bind(addr)?)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The connections' settings: limits, keepalive, idle, send and close
    /// timeouts, write buffer limit, read size.
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// The opening handshake's limits, timeout and allowed origins.
    pub fn handshake_config(mut self, config: HandshakeConfig) -> Self {
        self.handshake = config;
        self
    }

    /// Nagle's algorithm off (`TCP_NODELAY`, the default: each answer goes
    /// out at once) or on (`false`: small writes are coalesced).
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves connections with `handler` on this thread until stopped
    /// ([`Loop::stop`], [`Handle::stop`]) and every connection is over;
    /// returns the handler. Fails only if the poll itself fails.
    pub fn run<H: Handler>(self, handler: H) -> io::Result<H> {
        let Self {
            poll,
            listener,
            shared,
            config,
            handshake,
            nodelay,
        } = self;
        let read_size = config.read_buffer_size.max(MIN_READ_ROOM);
        let mut event_loop = EventLoop {
            poll,
            listener: Some(listener),
            shared,
            handler,
            conns: Slab::new(),
            timers: BinaryHeap::new(),
            generation: 0,
            lp: Loop::default(),
            write_limit: config.write_buffer_limit,
            read_size,
            config,
            handshake,
            nodelay,
            scratch: vec![0; HANDSHAKE_READ].into_boxed_slice(),
            accept_retry: None,
            stopping: false,
            ready: Vec::new(),
            send_buf: BytesMut::new(),
        };
        let result = event_loop.run();
        // Commands sent from now on fail instead of piling up; those that
        // came too late are dropped.
        let shared = &event_loop.shared;
        let mut commands = shared.commands.lock().unwrap_or_else(PoisonError::into_inner);
        shared.ended.store(true, Ordering::Release);
        commands.clear();
        drop(commands);
        result?;
        Ok(event_loop.handler)
    }
}

struct EventLoop<H> {
    poll: Poll,
    /// `None` once stopping.
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
    handler: H,
    conns: Slab<Entry>,
    /// Deadlines: (when, slot, generation). An entry whose connection is
    /// gone or armed for another time is skipped when it comes up.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    generation: u32,
    lp: Loop,
    write_limit: usize,
    read_size: usize,
    config: WebSocketConfig,
    handshake: HandshakeConfig,
    nodelay: bool,
    scratch: Box<[u8]>,
    accept_retry: Option<Instant>,
    stopping: bool,
    /// Connections left readable after their share of reads: driven again
    /// before the loop waits.
    ready: Vec<(usize, u32)>,
    /// The loop's send buffer, lent to each connection for its turn and
    /// taken back once written out (held by a connection whose output
    /// waits; another is then taken from the thread's cache).
    send_buf: BytesMut,
}

struct Entry {
    stream: TcpStream,
    peer: SocketAddr,
    generation: u32,
    /// The deadline this connection has in the heap, if any.
    timer: Option<Instant>,
    /// Readable since the last read that found the socket drained.
    readable: bool,
    /// The peer's end of stream (or an error) was signalled: reads go on
    /// until they return it, short or not (edge-triggered, no event comes
    /// for it again).
    read_closed: bool,
    /// The last write would block; writable again at the next event.
    write_blocked: bool,
    phase: Phase,
}

enum Phase {
    Handshake(Box<ServerHandshake>),
    /// An HTTP answer to a refused request, then the end.
    Answer {
        out: Vec<u8>,
        deadline: Instant,
    },
    Open(Box<Open>),
}

struct Open {
    conn: Connection,
    /// The 101 answer while it is not written (almost always written at
    /// once).
    head: Vec<u8>,
    partial: Reassembler,
    read_done: bool,
    shutdown: bool,
    write_error: bool,
    /// [`Socket::request_drain`] was called: [`Handler::drain`] once the
    /// output is all written.
    drain: bool,
}

impl Open {
    fn finished(&self) -> bool {
        self.conn.closed().is_some()
            && self.conn.should_close_transport()
            && self.conn.pending_transmit() == 0
            && self.head.is_empty()
            && (self.shutdown || self.write_error)
    }

    fn has_output(&self) -> bool {
        !self.head.is_empty() || self.conn.pending_transmit() > 0
    }
}

/// What reading found.
enum ReadOutcome {
    /// Bytes; `drained`: fewer than there was room for, so the socket's
    /// queue is empty (edge-triggered: the next arrival is a new event).
    Data {
        drained: bool,
    },
    WouldBlock,
    Eof,
    Failed(io::Error),
}

impl<H: Handler> EventLoop<H> {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            if self.stopping && self.conns.is_empty() {
                return Ok(());
            }
            let timeout = if self.ready.is_empty() {
                self.next_deadline()
            } else {
                Some(Instant::now())
            };
            let timeout = timeout.map(|deadline| {
                // Rounded up to the millisecond: a wake-up just before the
                // deadline would find nothing due and wait again.
                deadline
                    .saturating_duration_since(Instant::now())
                    .checked_add(Duration::from_nanos(999_999))
                    .map_or(Duration::MAX, |d| Duration::from_millis(d.as_millis() as u64))
            });
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {
                        let commands =
                            std::mem::take(&mut *self.shared.commands.lock().unwrap_or_else(PoisonError::into_inner));
                        self.lp.commands.extend(commands);
                    }
                    Token(key) => {
                        let Some(entry) = self.conns.get_mut(key) else {
                            continue;
                        };
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            entry.readable = true;
                        }
                        if event.is_read_closed() || event.is_error() {
                            entry.read_closed = true;
                        }
                        if event.is_writable() || event.is_write_closed() || event.is_error() {
                            entry.write_blocked = false;
                        }
                        self.drive(key, now);
                    }
                }
                self.run_commands(now);
            }
            if self.accept_retry.is_some_and(|at| at <= now) {
                self.accept_retry = None;
                self.accept(now);
            }
            self.fire_timers(now);
            self.run_commands(now);
            for (key, generation) in std::mem::take(&mut self.ready) {
                if self.conns.get(key).is_some_and(|entry| entry.generation == generation) {
                    self.drive(key, now);
                    self.run_commands(now);
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        match (timer, self.accept_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- Accepting ------------------------------------------------------

    fn accept(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            };
            if let Err(e) = stream.set_nodelay(self.nodelay) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if u32::try_from(key).is_err() {
                // Four billion connections on one loop: refuse the next.
                continue;
            }
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
            {
                tracing::warn!("register: {e}");
                continue;
            }
            self.generation = self.generation.wrapping_add(1);
            entry.insert(Entry {
                stream,
                peer,
                generation: self.generation,
                timer: None,
                readable: true,
                read_closed: false,
                write_blocked: false,
                phase: Phase::Handshake(Box::new(ServerHandshake::new(self.handshake.clone(), now))),
            });
            self.drive(key, now);
        }
    }

    // ---- Driving one connection -----------------------------------------

    fn drive(&mut self, key: usize, now: Instant) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        match entry.phase {
            Phase::Handshake(_) => self.drive_handshake(key, now),
            Phase::Answer { .. } => self.drive_answer(key, now),
            Phase::Open(_) => self.drive_open(key, now),
        }
    }

    fn drive_handshake(&mut self, key: usize, now: Instant) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Handshake(handshake) = &mut entry.phase else {
            return;
        };
        while entry.readable {
            let n = match (&entry.stream).read(&mut self.scratch) {
                Ok(0) => {
                    // Gone before its request was whole: nothing to answer.
                    let error = handshake.handle_eof();
                    self.fail_handshake(key, error, now);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    entry.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("read failed during the opening handshake: {e}");
                    let error = handshake.handle_eof();
                    self.fail_handshake(key, error, now);
                    return;
                }
            };
            if n < self.scratch.len() && !entry.read_closed {
                entry.readable = false;
            }
            match handshake.handle_read(&self.scratch[..n]) {
                Ok(None) => {}
                Ok(Some(request)) => {
                    let decision = self.handler.accept(&request, entry.peer);
                    let Some(entry) = self.conns.get_mut(key) else {
                        return;
                    };
                    let Phase::Handshake(handshake) = &mut entry.phase else {
                        return;
                    };
                    match decision {
                        Err(response) => {
                            let out =
                                handshake.reject(response.status(), response.headers().clone(), response.body_bytes());
                            self.answer(key, out, now);
                        }
                        Ok(options) => match handshake.accept(&request, options, self.config.connection.clone(), now) {
                            Ok((head, conn)) => self.open(key, head, conn, now),
                            Err(e) => {
                                if matches!(e, HandshakeError::InvalidAcceptOptions(_)) {
                                    tracing::warn!("accept options refused: {e}");
                                }
                                self.fail_handshake(key, e, now);
                            }
                        },
                    }
                    return;
                }
                Err(e) => {
                    self.fail_handshake(key, e, now);
                    return;
                }
            }
        }
        let deadline = handshake.poll_timeout();
        arm(&mut self.timers, key, entry, deadline);
    }

    fn fail_handshake(&mut self, key: usize, error: HandshakeError, now: Instant) {
        tracing::debug!("opening handshake failed: {error}");
        if let Some(entry) = self.conns.get(key) {
            self.handler.rejected(entry.peer, &error);
        }
        match error.response() {
            Some(out) => self.answer(key, out, now),
            None => self.remove(key),
        }
    }

    /// Sends an HTTP answer, then closes the transport.
    fn answer(&mut self, key: usize, out: Vec<u8>, now: Instant) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        entry.phase = Phase::Answer {
            out,
            deadline: now + ANSWER_TIMEOUT,
        };
        // The handshake's deadline, if armed, is not this phase's.
        entry.timer = None;
        self.drive_answer(key, now);
    }

    fn drive_answer(&mut self, key: usize, now: Instant) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Answer { out, deadline } = &mut entry.phase else {
            return;
        };
        if now >= *deadline {
            self.remove(key);
            return;
        }
        while !out.is_empty() && !entry.write_blocked {
            match (&entry.stream).write(out) {
                Ok(0) => break,
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => entry.write_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("write of the HTTP answer failed: {e}");
                    out.clear();
                }
            }
        }
        if out.is_empty() {
            let _ = entry.stream.shutdown(Shutdown::Write);
            self.remove(key);
            return;
        }
        let deadline = Some(*deadline);
        arm(&mut self.timers, key, entry, deadline);
    }

    fn open(&mut self, key: usize, head: Vec<u8>, mut conn: Connection, now: Instant) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        conn.set_buffer_recycling(true);
        let mut open = Box::new(Open {
            conn,
            head,
            partial: Reassembler::new(),
            read_done: false,
            shutdown: false,
            write_error: false,
            drain: false,
        });
        let id = SocketId {
            key: key as u32,
            generation: entry.generation,
        };
        {
            let Open {
                conn, partial, drain, ..
            } = &mut *open;
            let mut socket = Socket::new(conn.outbox(), id, entry.peer, now, &mut self.lp, partial, drain, None);
            self.handler.open(&mut socket);
        }
        entry.phase = Phase::Open(open);
        // The handshake's deadline, if armed, is not the connection's:
        // `drive_open` arms the connection's (its heap entry is skipped).
        entry.timer = None;
        self.drive_open(key, now);
    }

    /// Messages, answers, reads, until the connection waits for its socket
    /// or its output; then its buffers go back to the thread and its timer
    /// is armed.
    fn drive_open(&mut self, key: usize, now: Instant) {
        let Self {
            conns,
            handler,
            lp,
            timers,
            write_limit,
            read_size,
            ready,
            send_buf,
            ..
        } = self;
        let Some(entry) = conns.get_mut(key) else {
            return;
        };
        let id = SocketId {
            key: key as u32,
            generation: entry.generation,
        };
        let Phase::Open(open) = &mut entry.phase else {
            return;
        };
        open.conn.lend_send_buffer(send_buf);
        let mut reads = 0;
        let mut drains = 0;
        loop {
            // 1. Every message and event the connection holds, handed over
            // until its output passes the limit.
            let paused = deliver(handler, lp, open, id, entry.peer, *write_limit, now);
            // 2. One write of everything that caused (more while the socket
            // takes it), then the end of the transport if it is time.
            if open.has_output() || (!open.shutdown && open.conn.should_close_transport()) {
                write_out(&entry.stream, open, &mut entry.write_blocked, now);
            }
            if open.conn.output_abandoned() && !open.shutdown && !open.write_error {
                tracing::debug!("the peer does not read: output dropped, transport closed");
                open.conn.discard_transmit();
                open.head.clear();
                let _ = entry.stream.shutdown(Shutdown::Both);
                open.shutdown = true;
            }
            if open.finished() {
                break;
            }
            // The output is all written and the handler asked to know: it
            // may send more (a sender that keeps its output bounded resumes
            // here). A socket that keeps taking it all at once gets a few
            // turns, then the others get theirs.
            if open.drain && !open.has_output() && !open.write_error && open.conn.state() == State::Open {
                if drains == MAX_DRAINS_PER_TURN {
                    ready.push((key, entry.generation));
                    break;
                }
                drains += 1;
                open.drain = false;
                let Open {
                    conn, partial, drain, ..
                } = &mut **open;
                let mut socket = Socket::new(conn.outbox(), id, entry.peer, now, &mut *lp, partial, drain, None);
                handler.drain(&mut socket);
                continue;
            }
            // Output over the limit: nothing more is read (or handed over)
            // until the peer takes it.
            if open.conn.pending_transmit() > *write_limit {
                break;
            }
            if paused {
                continue;
            }
            // 3. Read.
            if !entry.readable || open.read_done {
                break;
            }
            if reads == MAX_READS_PER_TURN {
                // A peer that keeps the socket full does not hold the loop:
                // the others are served, then this one again (edge-triggered,
                // no new event would come for what is already there).
                ready.push((key, entry.generation));
                break;
            }
            reads += 1;
            let stream = &entry.stream;
            // The messages the read brings are handed over where they
            // arrived (in the thread's buffer, when the connection let go
            // of its own); what is left, at the next turn.
            let Open {
                conn, partial, drain, ..
            } = &mut **open;
            let (read, _) = conn.read_and_lend(
                MIN_READ_ROOM,
                *read_size,
                || now,
                |buf| recv_into(stream, buf),
                lender(handler, lp, partial, drain, id, &entry.peer, *write_limit, now),
            );
            match read {
                ReadOutcome::Data { drained } => {
                    entry.readable = !drained || entry.read_closed;
                }
                ReadOutcome::WouldBlock => {
                    entry.readable = false;
                    break;
                }
                ReadOutcome::Eof => {
                    open.read_done = true;
                    open.conn.handle_eof(now);
                }
                ReadOutcome::Failed(e) => {
                    tracing::debug!("read failed: {e}");
                    open.read_done = true;
                    open.conn.handle_eof(now);
                }
            }
        }
        if open.finished() {
            let closed = open.conn.closed().cloned();
            self.remove(key);
            if let Some(closed) = closed {
                self.handler.close(&mut self.lp, id, &closed);
            }
            return;
        }
        // Waiting: the send buffer, if written out, back to the loop; other
        // empty buffers to the thread.
        open.conn.reclaim_send_buffer(send_buf);
        open.conn.recycle_buffers();
        if entry.timer.is_none() || !open.conn.deadline_moves_later_only() {
            let deadline = open.conn.poll_timeout();
            arm(timers, key, entry, deadline);
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut entry) = self.conns.try_remove(key) {
            if let Err(e) = self.poll.registry().deregister(&mut entry.stream) {
                tracing::debug!("deregister: {e}");
            }
        }
    }

    // ---- Timers ---------------------------------------------------------

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, key, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.conns.get_mut(key) else {
                continue;
            };
            if entry.generation != generation || entry.timer != Some(at) {
                continue;
            }
            entry.timer = None;
            match &mut entry.phase {
                Phase::Handshake(handshake) => match handshake.handle_timeout(now) {
                    Err(e) => self.fail_handshake(key, e, now),
                    Ok(()) => {
                        let deadline = handshake.poll_timeout();
                        arm(&mut self.timers, key, entry, deadline);
                    }
                },
                Phase::Answer { .. } => self.drive_answer(key, now),
                Phase::Open(open) => {
                    // Armed for an earlier deadline than the current one
                    // (the keepalive moves later with every read): the
                    // drive below arms the current one.
                    if open.conn.poll_timeout().is_some_and(|deadline| deadline <= now) {
                        open.conn.handle_timeout(now);
                    }
                    self.drive_open(key, now);
                }
            }
        }
        // Entries of connections gone or re-armed stay in the heap until
        // they come up; past twice the connections, they are swept.
        if self.timers.len() > 2 * self.conns.len() + 64 {
            let conns = &self.conns;
            self.timers.retain(|Reverse((at, key, generation))| {
                conns
                    .get(*key)
                    .is_some_and(|entry| entry.generation == *generation && entry.timer == Some(*at))
            });
        }
    }

    // ---- Commands -------------------------------------------------------

    /// Runs what callbacks and other threads asked for (sends to other
    /// connections, closes, stop). Asked after every connection's turn,
    /// mostly with nothing queued: that answer is inlined.
    #[inline]
    fn run_commands(&mut self, now: Instant) {
        if !self.lp.commands.is_empty() {
            self.run_queued_commands(now);
        }
    }

    #[inline(never)]
    fn run_queued_commands(&mut self, now: Instant) {
        while !self.lp.commands.is_empty() {
            let commands = std::mem::take(&mut self.lp.commands);
            for command in commands {
                match command {
                    Command::Send(id, message, options) => {
                        if let Some(open) = self.open_mut(id) {
                            if let Err(e) = open.conn.send_with(message, options) {
                                tracing::debug!("send to {id:?} failed: {e}");
                            }
                            self.drive_open(id.key as usize, now);
                        }
                    }
                    Command::Close(id, code, reason) => {
                        if let Some(open) = self.open_mut(id) {
                            if let Err(e) = open.conn.close(code, &reason, now) {
                                tracing::warn!("close of {id:?} with an invalid code or reason: {e}");
                                let _ = open.conn.close(CloseCode::INTERNAL_ERROR, "", now);
                            }
                            self.drive_open(id.key as usize, now);
                        }
                    }
                    Command::Stop => self.stop(now),
                }
            }
        }
    }

    fn open_mut(&mut self, id: SocketId) -> Option<&mut Open> {
        match self.conns.get_mut(id.key as usize) {
            Some(Entry {
                generation,
                phase: Phase::Open(open),
                ..
            }) if *generation == id.generation => Some(open),
            _ => None,
        }
    }

    fn stop(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_retry = None;
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            match self.conns.get_mut(key).map(|entry| &mut entry.phase) {
                Some(Phase::Open(open)) => {
                    let _ = open.conn.close(CloseCode::GOING_AWAY, "server stopping", now);
                    self.drive_open(key, now);
                }
                Some(_) => self.remove(key),
                None => {}
            }
        }
    }
}

/// Hands every message and event `open` holds to the handler, the small
/// messages of a read in place, until its output passes `limit`. Returns
/// whether it stopped for the limit with more perhaps to hand over.
#[inline]
fn deliver<H: Handler>(
    handler: &mut H,
    lp: &mut Loop,
    open: &mut Open,
    id: SocketId,
    peer: SocketAddr,
    limit: usize,
    now: Instant,
) -> bool {
    let Open {
        conn, partial, drain, ..
    } = open;
    loop {
        if conn.pending_transmit() > limit {
            return true;
        }
        let lent = conn.lend_messages(lender(
            &mut *handler,
            &mut *lp,
            &mut *partial,
            &mut *drain,
            id,
            &peer,
            limit,
            now,
        ));
        if lent > 0 {
            continue;
        }
        let Some(event) = conn.poll_event() else {
            return false;
        };
        let message = match event {
            Event::Message(message) => message,
            other => {
                let mut socket = Socket::new(conn.outbox(), id, peer, now, &mut *lp, &mut *partial, &mut *drain, None);
                match other {
                    Event::Fragment(fragment) => handler.fragment(&mut socket, fragment),
                    Event::Ping(payload) => handler.ping(&mut socket, &payload),
                    Event::Pong(payload) => handler.pong(&mut socket, &payload),
                    Event::Closed(closed) => {
                        tracing::debug!(code = closed.code.as_u16(), cause = ?closed.cause, "connection closed");
                    }
                    _ => {}
                }
                continue;
            }
        };
        // An owned message (large, fragmented or compressed): sent back,
        // its payload is shared, not copied.
        let mut socket = Socket::new(
            conn.outbox(),
            id,
            peer,
            now,
            &mut *lp,
            &mut *partial,
            &mut *drain,
            Some(&message),
        );
        handler.message(&mut socket, MessageRef::from(&message));
    }
}

/// The handler's `message`, for the messages a connection lends in place
/// (read from its buffer, or the thread's): on while the output stays
/// within `limit`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lender<'a, H: Handler>(
    handler: &'a mut H,
    lp: &'a mut Loop,
    partial: &'a mut Reassembler,
    drain: &'a mut bool,
    id: SocketId,
    peer: &'a SocketAddr,
    limit: usize,
    now: Instant,
) -> impl FnMut(MessageRef<'_>, Outbox<'_>) -> ControlFlow<()> + 'a {
    move |message, out| {
        let mut socket = Socket::new(out, id, *peer, now, &mut *lp, &mut *partial, &mut *drain, None);
        handler.message(&mut socket, message);
        if socket.out.pending_transmit() > limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Writes what the connection offers until the socket would block; then
/// the end of the transport once the core says so and all is written.
fn write_out(stream: &TcpStream, open: &mut Open, blocked: &mut bool, now: Instant) {
    if open.write_error {
        open.conn.discard_transmit();
        open.head.clear();
        return;
    }
    while !*blocked && open.has_output() {
        let written = if !open.head.is_empty() {
            (&*stream).write(&open.head)
        } else {
            let (front, more) = open.conn.transmit_front();
            if more {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let count = open.conn.transmit_slices(&mut slices);
                (&*stream).write_vectored(&slices[..count])
            } else {
                send(stream, front)
            }
        };
        match written {
            Ok(0) => {
                write_failed(stream, open, io::ErrorKind::WriteZero.into(), now);
                return;
            }
            Ok(n) if !open.head.is_empty() => {
                open.head.drain(..n);
            }
            Ok(n) => open.conn.advance_transmit(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *blocked = true;
                open.conn.handle_write_blocked(now);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                write_failed(stream, open, e, now);
                return;
            }
        }
    }
    if !open.has_output() && !open.shutdown && open.conn.should_close_transport() {
        if let Err(e) = stream.shutdown(Shutdown::Write) {
            // The peer may have gone first; the transport is done either way.
            tracing::debug!("shutdown failed: {e}");
        }
        open.shutdown = true;
    }
}

/// A write failed: the peer is gone (reset, broken pipe). The output is
/// dropped and the connection ends as if the transport had ended.
fn write_failed(stream: &TcpStream, open: &mut Open, error: io::Error, now: Instant) {
    tracing::debug!("write failed: {error}");
    open.write_error = true;
    open.conn.discard_transmit();
    open.head.clear();
    let _ = stream.shutdown(Shutdown::Both);
    if !open.read_done {
        open.read_done = true;
        open.conn.handle_eof(now);
    }
}

/// Reads `stream` into the room `buf` has, uninitialized: no zeroing and
/// no scratch copy.
fn recv_into(stream: &TcpStream, buf: &mut RecvBuf<'_>) -> ReadOutcome {
    let room = buf.chunk_mut();
    let len = room.len();
    // SAFETY: the slice is only written to (by the kernel, through
    // `recv`), never read, and no uninitialized byte is written into it.
    let room: &mut [MaybeUninit<u8>] = unsafe { room.as_uninit_slice_mut() };
    loop {
        match recv(stream, room) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => {
                // SAFETY: `recv` initialized the first `n` bytes of the
                // room, which starts at the buffer's end.
                unsafe { buf.advance_mut(n) };
                return ReadOutcome::Data { drained: n < len };
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return ReadOutcome::Failed(e),
        }
    }
}

/// One `recv` into uninitialized room. On Linux straight to the system
/// call: with one read per message this is the loop's hottest call, and
/// the layers of `socket2` (a borrowed socket built and taken apart around
/// each call) cost more instructions than the call's own wrapper.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn recv(stream: &TcpStream, room: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is the stream's, open while it is borrowed;
    // `room` is writable memory of `room.len()` bytes, of which `recv`
    // writes at most that many and reads none.
    let n = unsafe { libc::recv(stream.as_raw_fd(), room.as_mut_ptr().cast(), room.len(), 0) };
    // Negative: failed, and `errno` says why.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn recv(stream: &TcpStream, room: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    socket2::SockRef::from(stream).recv(room)
}

/// One `send` of `buf`, as the standard library's `write` makes it on
/// Linux (`MSG_NOSIGNAL`: a peer that is gone is an error, not a signal),
/// without its layers and mio's.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is the stream's, open while it is borrowed;
    // `buf` is readable memory of `buf.len()` bytes.
    let n = unsafe { libc::send(stream.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    (&*stream).write(buf)
}

/// Puts `deadline` in the heap unless the one there is as early.
fn arm(
    timers: &mut BinaryHeap<Reverse<(Instant, usize, u32)>>,
    key: usize,
    entry: &mut Entry,
    deadline: Option<Instant>,
) {
    let Some(deadline) = deadline else {
        return;
    };
    if entry.timer.is_some_and(|armed| armed <= deadline) {
        return;
    }
    entry.timer = Some(deadline);
    timers.push(Reverse((deadline, key, entry.generation)));
}
