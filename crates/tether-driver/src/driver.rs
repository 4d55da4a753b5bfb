//! The driving loop: a [`Connection`] on a transport, through a runtime's
//! [`RuntimeIo`].
//!
//! Everything here is poll-based and keeps its state in [`Driver`], never in
//! a future, which is what makes the async methods built on it cancel-safe.

use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tether_proto::{
    CloseCause, CloseCode, Closed, Connection, DataKind, Event, Fragment, Message, MessageRef, Outbox, Reassembler,
    SendError, SendOptions, State,
};

use crate::runtime::{Runtime, RuntimeIo, Timer};
use crate::{Error, WebSocketConfig};

/// Most chunks handed to one vectored write.
const MAX_IOV: usize = 16;
/// The receive buffer is grown when less than this much room is left.
const MIN_READ_ROOM: usize = 4 * 1024;

/// Which API is polling: the receiving one (`Stream`, `recv`, read half) or
/// the sending one (`Sink`, `send`, write half). Each keeps its own waker, so
/// that both can wait on the same socket from different tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The receiving API.
    Recv,
    /// The sending API.
    Send,
}

/// What the receiving side is handed, besides the end of the connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A whole message.
    Message(Message),
    /// A piece of a message streamed as it arrives.
    Fragment(Fragment),
    /// A ping (answered already unless `auto_pong` is off).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
}

/// What one turn of the driving loop came to.
enum Drive {
    /// Bytes were read or a timer fired: parse and go on.
    Progress,
    /// The connection is over and the transport done with.
    Finished,
    /// Nothing to do until the transport or the timer wakes the task.
    Pending,
}

/// Wakes both sides: the socket and the timer hold one waker each, and
/// whichever side polled last must not steal the other's wake-up.
#[derive(Default)]
struct Wakers {
    recv: AtomicWaker,
    send: AtomicWaker,
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.recv.wake();
        self.send.wake();
    }
}

/// A connection, its transport, and the adapter's buffers: the driving loop
/// of every shell. `R` is the runtime whose clock, timer and I/O calls it
/// uses.
pub struct Driver<S, R: Runtime> {
    io: S,
    conn: Connection,
    /// Bytes were written since the last flush of `io`.
    unflushed: bool,
    /// The write buffer limit and the read size, as `u32` (4 GiB at most):
    /// every connection holds them, and with the flags they fill one word
    /// instead of two.
    write_limit: u32,
    /// How far the output went (bytes ever queued) after the application's
    /// last command: what is queued after that point the peer's frames
    /// caused (pongs, the close reply) or the keepalive timer did. Reading
    /// stops while too much of that is unwritten, not while the
    /// application's own output is.
    app_queued: u64,
    read_buffer_size: u32,
    timer: Option<R::Timer>,
    /// EOF or a read error was seen: no more reads.
    read_done: bool,
    /// A write failed: the output is dropped from now on.
    write_error: Option<Box<(io::ErrorKind, String)>>,
    /// The transport was shut down.
    shutdown: bool,
    /// The error that ended the read side, reported with the end.
    read_error: Option<io::Error>,
    /// The end was reported to the receiving side.
    end_reported: bool,
    /// A streamed message being reassembled for whole-message receive.
    partial: Reassembler,
    /// Drop the fragments of the current message (its reader was dropped).
    skip: bool,
    /// `Some` once polled from more than one task (split halves): each
    /// side's task; as a waker, handed to the transport and the timer, it
    /// wakes both. Otherwise one task polls both sides and its own waker is
    /// passed down as it is, with no registration and no waker clone per
    /// poll (and no allocation per connection).
    shared: Option<Arc<Wakers>>,
    runtime: PhantomData<fn() -> R>,
}

impl<S, R: Runtime> Driver<S, R> {
    /// Runs `conn`, whose opening handshake is done, on `io`.
    pub fn new(io: S, mut conn: Connection, config: &WebSocketConfig) -> Self {
        conn.set_buffer_recycling(R::RECYCLES_BUFFERS);
        // Whatever the connection queued before it came here is the
        // application's, not an answer to the peer.
        let app_queued = conn.stats().wire_bytes_sent + conn.pending_transmit() as u64;
        Self {
            io,
            conn,
            unflushed: false,
            write_limit: u32::try_from(config.write_buffer_limit).unwrap_or(u32::MAX),
            app_queued,
            read_buffer_size: u32::try_from(config.read_buffer_size.max(MIN_READ_ROOM)).unwrap_or(u32::MAX),
            timer: None,
            read_done: false,
            write_error: None,
            shutdown: false,
            read_error: None,
            end_reported: false,
            partial: Reassembler::new(),
            skip: false,
            shared: None,
            runtime: PhantomData,
        }
    }

    /// The core.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The transport.
    pub fn io(&self) -> &S {
        &self.io
    }

    /// The transport, for socket options: reading or writing it directly
    /// corrupts the connection.
    pub fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The transport and the core. Output taken from the core and not yet
    /// written is lost.
    pub fn into_parts(self) -> (S, Connection) {
        (self.io, self.conn)
    }

    /// How the connection ended, once it has.
    pub fn closed(&self) -> Option<&Closed> {
        self.conn.closed()
    }

    /// Bytes queued for the transport and not yet written (the core keeps
    /// them until the transport takes them).
    pub fn buffered(&self) -> usize {
        self.conn.pending_transmit()
    }

    /// Bytes ever queued for the transport: written, dropped after a
    /// failed write, or still waiting.
    fn queued_total(&self) -> u64 {
        self.conn.stats().wire_bytes_sent + self.conn.pending_transmit() as u64
    }

    /// Marks everything queued so far as the application's.
    fn queued_by_app(&mut self) {
        self.app_queued = self.queued_total();
    }

    /// Bytes queued after the application's last command and not yet
    /// written: answers to the peer (pongs, the close reply) and keepalive
    /// pings. The output is first in, first out, so at most what is
    /// pending.
    fn answers_unwritten(&self) -> usize {
        let after_app = self.queued_total().saturating_sub(self.app_queued);
        usize::try_from(after_app)
            .unwrap_or(usize::MAX)
            .min(self.conn.pending_transmit())
    }

    /// Whether the loop reads no more for now: more than the write limit
    /// of output is unwritten, and more than the limit of it answers the
    /// peer (pongs, the close reply), so the peer does not read what its
    /// own frames caused (see [`poll_incoming`](Self::poll_incoming)). A
    /// shell that reads the transport itself
    /// ([`handle_read`](Self::handle_read)) asks it before each read and
    /// writes instead, or a peer that pings and never reads would grow
    /// the output without bound.
    #[inline]
    pub fn reads_paused(&self) -> bool {
        let limit = self.write_limit as usize;
        self.conn.pending_transmit() > limit && self.answers_unwritten() > limit
    }

    /// Bytes that a shell read from the transport itself, outside
    /// [`poll_incoming`](Self::poll_incoming) (for example a blocking reader
    /// thread reading a cloned socket without holding the connection's
    /// lock). They are parsed by the next `poll_incoming`.
    pub fn handle_read(&mut self, data: &[u8]) {
        self.conn.handle_read(data, R::now());
    }

    /// The end of the stream (or a read error), seen by a shell that reads
    /// the transport itself; see [`handle_read`](Self::handle_read).
    pub fn handle_read_end(&mut self, error: Option<io::Error>) {
        self.read_done = true;
        self.read_error = error;
        self.conn.handle_eof(R::now());
    }

    /// Drops the rest of the message being streamed (its reader is gone).
    pub fn skip_message(&mut self) {
        self.skip = true;
    }

    /// A message partly reassembled by the whole-message receive, for a
    /// reader that takes over.
    pub fn take_partial(&mut self) -> Option<(DataKind, Bytes)> {
        self.partial.take_partial()
    }

    /// The error to report at the end of the receive side, once: `None`
    /// after a clean close handshake.
    pub fn take_end(&mut self) -> Option<Error> {
        if self.end_reported {
            return None;
        }
        self.end_reported = true;
        match Error::from_closed(self.conn.closed()?)? {
            // The transport's own error says more, when there was one.
            Error::AbnormalClosure => Some(match self.read_error.take() {
                Some(e) => Error::from_io(e),
                None => Error::AbnormalClosure,
            }),
            end => Some(end),
        }
    }

    /// Why nothing more can be sent.
    fn closed_error(&self) -> Error {
        closed_error(self.conn.closed())
    }

    fn map_send_error(&self, error: SendError) -> Error {
        map_send_error(self.conn.closed(), error)
    }

    /// Why the send side cannot go on after a write failed or the output
    /// was given up (see [`write_failure`]).
    #[inline]
    fn write_failure(&self) -> Option<Error> {
        // No write failed (every send but the ones after a failure): one
        // compare, inlined, not a call that first asks how the connection
        // ended.
        let write_error = self.write_error.as_deref()?;
        write_failure(Some(write_error), self.conn.closed(), self.conn.output_abandoned())
    }

    /// For a connection polled from several tasks (split halves): registers
    /// `waker` as `side`'s and returns the waker to pass to the transport
    /// and the timer, which wakes both sides' tasks. `None` when one task
    /// polls the connection: it hands its own context down as it is.
    fn register(&self, side: Side, waker: &Waker) -> Option<Waker> {
        let wakers = self.shared.as_ref()?;
        match side {
            Side::Recv => wakers.recv.register(waker),
            Side::Send => wakers.send.register(waker),
        }
        // One reference count more, as cloning a stored waker would be.
        Some(Waker::from(wakers.clone()))
    }

    /// Declares that the connection is polled from several tasks (one for
    /// each side, as split halves are): from now on every poll registers
    /// its task for its side, and the transport and the timer wake all of
    /// them. A `Driver` shared between tasks by other means must call it.
    pub fn share_between_tasks(&mut self) {
        if self.shared.is_none() {
            self.shared = Some(Arc::new(Wakers::default()));
        }
        // A task registered with the transport before this call gets at
        // most one spurious wake-up.
    }

    // ---- Commands -----------------------------------------------------

    /// Queues a message (after [`poll_send_ready`](Self::poll_send_ready)).
    #[inline]
    pub fn start_send(&mut self, message: Message) -> Result<(), Error> {
        self.start_send_with(message, SendOptions::default())
    }

    /// Queues a message with per-message options (for example
    /// [`SendOptions::uncompressed`]).
    #[inline]
    pub fn start_send_with(&mut self, message: Message, options: SendOptions) -> Result<(), Error> {
        if let Some(e) = self.write_failure() {
            return Err(e);
        }
        self.conn
            .send_with(message, options)
            .map_err(|e| self.map_send_error(e))?;
        self.queued_by_app();
        Ok(())
    }

    /// Queues a message encoded once for many connections (after
    /// [`poll_send_ready`](Self::poll_send_ready)); see
    /// [`PreparedMessage`](tether_proto::PreparedMessage).
    pub fn start_send_prepared(&mut self, prepared: &tether_proto::PreparedMessage) -> Result<(), Error> {
        if let Some(e) = self.write_failure() {
            return Err(e);
        }
        self.conn.send_prepared(prepared).map_err(|e| self.map_send_error(e))?;
        self.queued_by_app();
        Ok(())
    }

    /// Queues one frame of a fragmented message.
    pub fn start_fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), Error> {
        self.conn
            .send_fragment(kind, data, fin)
            .map_err(|e| self.map_send_error(e))?;
        self.queued_by_app();
        Ok(())
    }

    /// Queues a ping.
    pub fn start_ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.conn.ping(payload).map_err(|e| self.map_send_error(e))?;
        self.queued_by_app();
        Ok(())
    }

    /// Queues an unsolicited pong.
    pub fn start_pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.conn.pong(payload).map_err(|e| self.map_send_error(e))?;
        self.queued_by_app();
        Ok(())
    }

    /// Queues a close frame. Ok as well when the connection is already
    /// closing or closed: closing twice is not an error.
    pub fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if self.conn.state() != State::Open {
            return Ok(());
        }
        self.conn
            .close(code, reason, R::now())
            .map_err(|e| self.map_send_error(e))?;
        self.queued_by_app();
        Ok(())
    }
}

impl<S, R: RuntimeIo<S>> Driver<S, R> {
    // ---- The receive side ---------------------------------------------

    /// Drives the connection until it has something for the receiving side.
    /// `Ready(None)`: the connection is over and the transport closed (see
    /// [`take_end`](Self::take_end)).
    pub fn poll_incoming(&mut self, cx: &mut Context<'_>, side: Side) -> Poll<Option<Incoming>> {
        // An event from bytes already read needs no waker: the common case
        // when one read delivered several messages.
        while let Some(event) = self.conn.poll_event() {
            if let Some(incoming) = self.on_event(event) {
                return Poll::Ready(Some(incoming));
            }
        }
        if let Some(waker) = self.register(side, cx.waker()) {
            return self.poll_incoming_with(&mut Context::from_waker(&waker));
        }
        self.poll_incoming_with(cx)
    }

    /// [`poll_incoming`](Self::poll_incoming) past the events already
    /// parsed, with the context to hand to the transport and the timer.
    fn poll_incoming_with(&mut self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        loop {
            // 1. Events: received bytes are parsed here, one event at a time.
            if let Some(event) = self.conn.poll_event() {
                if let Some(incoming) = self.on_event(event) {
                    return Poll::Ready(Some(incoming));
                }
                continue;
            }
            // 2. and 3.: write, read (which takes the first message it
            // brings where it arrived), the timer.
            let mut taken = None;
            let turn = self.drive(cx, |this, cx| this.poll_read_taking(cx, &mut taken));
            if let Some(message) = taken {
                return Poll::Ready(Some(Incoming::Message(message)));
            }
            match turn {
                Drive::Progress => {}
                Drive::Finished => return Poll::Ready(None),
                Drive::Pending => return Poll::Pending,
            }
        }
    }

    /// One turn of the driving loop once every parsed event is taken: the
    /// receiving loops ([`poll_incoming_with`](Self::poll_incoming_with),
    /// [`poll_message_slow`](Self::poll_message_slow) and the lending ones)
    /// inline it, so a message received at a wake-up goes through one
    /// function, not three. The read is made by `read`: each loop reads
    /// with [`poll_read_taking`](Self::poll_read_taking) or
    /// [`poll_read_lending`](Self::poll_read_lending), so that the first
    /// message of a read is taken, or its messages lent, where they
    /// arrived.
    #[inline(always)]
    fn drive(&mut self, cx: &mut Context<'_>, read: impl FnOnce(&mut Self, &mut Context<'_>) -> Poll<()>) -> Drive {
        // The timer is checked at the end of the turn: its memory is asked
        // for now, to come while the write and the read run.
        if let Some(timer) = &self.timer {
            timer.prefetch();
        }
        // 2. Transmit what everything the last read delivered caused, in
        // one write, then close the transport if it is time. Nothing to
        // write, to flush or to shut down (the common case once a wait's
        // answers are out): no call.
        if self.conn.pending_transmit() > 0 || self.unflushed || (!self.shutdown && self.conn.should_close_transport())
        {
            if let Poll::Ready(Err(e)) = self.poll_write_out(cx) {
                tracing::debug!("write failed: {e}");
            }
        }
        if self.conn.output_abandoned() && !self.shutdown && self.write_error.is_none() {
            self.abandon_output(cx);
        }
        if self.is_finished() {
            return Drive::Finished;
        }
        // 3. Read, unless the peer does not read the answers its own
        // frames caused (pongs): more than the write limit of them
        // unwritten stops reading, so that a peer that pings and never
        // reads cannot grow our memory. The application's own output,
        // however much of it waits, does not stop a receiver: two ends
        // that both stream to each other must each go on reading, or
        // neither's output drains. Then the timer, once the read would
        // wait: one timer check per wait, not one per read. While the
        // connection is open, bytes that arrive push its idle and
        // keepalive deadlines later, and output that cannot be written
        // runs the timer in `poll_write_out`; once it is closing, the
        // timer goes first, so that a peer that keeps the socket readable
        // cannot hold off the close timeout.
        let open = self.conn.state() == State::Open;
        if !open && self.poll_timer(cx) {
            return Drive::Progress;
        }
        if !self.read_done && !self.reads_paused() && read(self, cx).is_ready() {
            return Drive::Progress;
        }
        if open && self.poll_timer(cx) {
            return Drive::Progress;
        }
        Drive::Pending
    }

    /// Whole messages: reassembles streamed ones.
    #[inline(always)]
    pub fn poll_message(&mut self, cx: &mut Context<'_>, side: Side) -> Poll<Option<Result<Message, Error>>> {
        // The common case, inlined into the caller: a message already
        // parsed goes straight out (not through `Incoming`, nor moved
        // through another call's return value).
        match self.conn.poll_event() {
            Some(Event::Message(message)) => Poll::Ready(Some(Ok(message))),
            // Nothing parsed (the common case at a wake-up and once the
            // answers are queued): no event to hand down.
            None if self.shared.is_none() => self.poll_message_slow(cx),
            event => self.poll_message_event(cx, side, event),
        }
    }

    /// The next whole message lent to `f`
    /// ([`WebSocketStream::recv_with`](crate::WebSocketStream::recv_with)):
    /// in place, where the core can lend it
    /// ([`Connection::lend_message`]), otherwise the owned message, lent.
    /// `f` is taken when it is called; `None` once the connection closed
    /// cleanly, as [`poll_message`](Self::poll_message). Output over the
    /// write limit is written first: the answers queued through [`Reply`]
    /// do not wait for room themselves.
    ///
    /// # Panics
    ///
    /// If `f` is `None` (polled again after it returned a message).
    pub fn poll_message_with<F, T>(
        &mut self,
        cx: &mut Context<'_>,
        side: Side,
        f: &mut Option<F>,
    ) -> Poll<Option<Result<T, Error>>>
    where
        F: FnOnce(MessageRef<'_>, &mut Reply<'_>) -> T,
    {
        assert!(f.is_some(), "a message was lent already: polled after completion");
        let Poll::Ready(waker) = self.poll_ready_to_lend(cx, side) else {
            return Poll::Pending;
        };
        let cx = &mut match &waker {
            Some(waker) => Context::from_waker(waker),
            None => Context::from_waker(cx.waker()),
        };
        loop {
            if let Some(out) = self.lend_in_place(f) {
                return Poll::Ready(Some(Ok(out)));
            }
            if let Some(event) = self.conn.poll_event() {
                match self.absorb_event(event) {
                    Some(Ok(message)) => return Poll::Ready(Some(Ok(self.lend_owned(f, &message)))),
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None => continue,
                }
            }
            // The read lends the first message it brings where it arrived.
            let mut out = None;
            let turn = self.drive(cx, |this, cx| {
                this.poll_read_lending(cx, |message, reply| {
                    if let Some(f) = f.take() {
                        out = Some(f(message, reply));
                    }
                    ControlFlow::Break(())
                })
            });
            if let Some(out) = out {
                return Poll::Ready(Some(Ok(out)));
            }
            match turn {
                Drive::Progress => {}
                Drive::Finished => return Poll::Ready(self.take_end().map(Err)),
                Drive::Pending => return Poll::Pending,
            }
        }
    }

    /// Before a message is lent: output over the write limit is written
    /// down to it first (the answers queued while a message is lent do not
    /// wait for room); then the waker to drive the loop with (see
    /// [`register`](Self::register)).
    #[inline(always)]
    fn poll_ready_to_lend(&mut self, cx: &mut Context<'_>, side: Side) -> Poll<Option<Waker>> {
        if self.buffered() > self.write_limit as usize {
            // An error here ends the connection, which the receive side
            // reports after.
            ready!(self.poll_send_ready(cx)).ok();
        }
        Poll::Ready(self.register(side, cx.waker()))
    }

    /// The message at the front of the receive buffer, lent in place to
    /// `f` if the core can.
    #[inline]
    fn lend_in_place<F, T>(&mut self, f: &mut Option<F>) -> Option<T>
    where
        F: FnOnce(MessageRef<'_>, &mut Reply<'_>) -> T,
    {
        let Self {
            conn,
            write_error,
            app_queued,
            ..
        } = self;
        let write_error = write_error.as_deref();
        let mut out = None;
        conn.lend_messages(|message, outbox| {
            if let Some(f) = f.take() {
                let mut reply = Reply {
                    outbox,
                    write_error,
                    app_queued: &mut *app_queued,
                    owned: None,
                };
                out = Some(f(message, &mut reply));
            }
            ControlFlow::Break(())
        });
        out
    }

    /// Every message that can be lent now, lent to `f` one after the
    /// other ([`WebSocketStream::recv_many_with`](crate::WebSocketStream::recv_many_with)):
    /// the messages the core lends in place ([`Connection::lend_messages`]),
    /// or else one owned message. Ready with how many were lent once at
    /// least one was (waiting for the transport only when none is there);
    /// stops early at `f`'s first error, which it returns, and once the
    /// answers put the output over the write limit (the rest is lent at
    /// the next call, after the output is written down to the limit).
    pub fn poll_messages_with<F, E>(
        &mut self,
        cx: &mut Context<'_>,
        side: Side,
        f: &mut F,
    ) -> Poll<Option<Result<usize, E>>>
    where
        F: FnMut(MessageRef<'_>, &mut Reply<'_>) -> Result<(), E>,
        E: From<Error>,
    {
        let Poll::Ready(waker) = self.poll_ready_to_lend(cx, side) else {
            return Poll::Pending;
        };
        let cx = &mut match &waker {
            Some(waker) => Context::from_waker(waker),
            None => Context::from_waker(cx.waker()),
        };
        loop {
            let mut failed = None;
            let lent = self.lend_all_in_place(f, &mut failed);
            if let Some(e) = failed {
                return Poll::Ready(Some(Err(e)));
            }
            if lent > 0 {
                return Poll::Ready(Some(Ok(lent)));
            }
            if let Some(event) = self.conn.poll_event() {
                match self.absorb_event(event) {
                    Some(Ok(message)) => {
                        let answered = f(MessageRef::from(&message), &mut self.owned_reply(&message));
                        return Poll::Ready(Some(answered.map(|()| 1)));
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                    None => continue,
                }
            }
            // The read lends the messages it brings where they arrived.
            let write_limit = self.write_limit as usize;
            let mut lent = 0;
            let turn = self.drive(cx, |this, cx| {
                this.poll_read_lending(cx, |message, reply| {
                    lent += 1;
                    match f(message, reply) {
                        Ok(()) if reply.outbox.pending_transmit() <= write_limit => ControlFlow::Continue(()),
                        Ok(()) => ControlFlow::Break(()),
                        Err(e) => {
                            failed = Some(e);
                            ControlFlow::Break(())
                        }
                    }
                })
            });
            if let Some(e) = failed {
                return Poll::Ready(Some(Err(e)));
            }
            if lent > 0 {
                return Poll::Ready(Some(Ok(lent)));
            }
            match turn {
                Drive::Progress => {}
                Drive::Finished => return Poll::Ready(self.take_end().map(|e| Err(e.into()))),
                Drive::Pending => return Poll::Pending,
            }
        }
    }

    /// The messages at the front of the receive buffer, lent in place to
    /// `f` while it succeeds and the output is within the write limit.
    #[inline]
    fn lend_all_in_place<F, E>(&mut self, f: &mut F, failed: &mut Option<E>) -> usize
    where
        F: FnMut(MessageRef<'_>, &mut Reply<'_>) -> Result<(), E>,
    {
        let Self {
            conn,
            write_error,
            app_queued,
            write_limit,
            ..
        } = self;
        let write_error = write_error.as_deref();
        let write_limit = *write_limit as usize;
        conn.lend_messages(|message, outbox| {
            let mut reply = Reply {
                outbox,
                write_error,
                app_queued: &mut *app_queued,
                owned: None,
            };
            match f(message, &mut reply) {
                Ok(()) if reply.outbox.pending_transmit() <= write_limit => ControlFlow::Continue(()),
                Ok(()) => ControlFlow::Break(()),
                Err(e) => {
                    *failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        })
    }

    /// An owned message, lent to `f`.
    fn lend_owned<F, T>(&mut self, f: &mut Option<F>, message: &Message) -> T
    where
        F: FnOnce(MessageRef<'_>, &mut Reply<'_>) -> T,
    {
        let Some(f) = f.take() else {
            unreachable!("checked on entry to poll_message_with");
        };
        f(MessageRef::from(message), &mut self.owned_reply(message))
    }

    /// The send side while `message`, an owned one, is lent.
    fn owned_reply<'a>(&'a mut self, message: &'a Message) -> Reply<'a> {
        Reply {
            outbox: self.conn.outbox(),
            write_error: self.write_error.as_deref(),
            app_queued: &mut self.app_queued,
            owned: Some(message),
        }
    }

    /// An event that is not a whole message (a piece of a streamed one, a
    /// ping, a pong, the end), or a connection polled from several tasks:
    /// the events parsed are handled, then the driving loop runs with the
    /// waker that wakes both sides.
    #[inline(never)]
    fn poll_message_event(
        &mut self,
        cx: &mut Context<'_>,
        side: Side,
        mut event: Option<Event>,
    ) -> Poll<Option<Result<Message, Error>>> {
        while let Some(parsed) = event {
            if let Some(result) = self.absorb_event(parsed) {
                return Poll::Ready(Some(result));
            }
            event = self.conn.poll_event();
        }
        match self.register(side, cx.waker()) {
            Some(waker) => self.poll_message_slow(&mut Context::from_waker(&waker)),
            None => self.poll_message_slow(cx),
        }
    }

    /// The driving loop for whole messages, once every parsed event is
    /// taken: a turn ([`drive`](Self::drive), inlined), then the events it
    /// brought, in one function, not through
    /// [`poll_incoming`](Self::poll_incoming) and its [`Incoming`].
    #[inline(never)]
    fn poll_message_slow(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        loop {
            // The read takes the first message it brings where it arrived.
            let mut taken = None;
            let turn = self.drive(cx, |this, cx| this.poll_read_taking(cx, &mut taken));
            if let Some(message) = taken {
                return Poll::Ready(Some(Ok(message)));
            }
            match turn {
                Drive::Progress => {}
                Drive::Finished => return Poll::Ready(self.take_end().map(Err)),
                Drive::Pending => return Poll::Pending,
            }
            while let Some(event) = self.conn.poll_event() {
                if let Some(result) = self.absorb_event(event) {
                    return Poll::Ready(Some(result));
                }
            }
        }
    }

    /// A parsed event, for whole-message receive: a message goes out, a
    /// piece of a streamed one is reassembled (or skipped), pings, pongs
    /// and the end are noted.
    #[inline(always)]
    fn absorb_event(&mut self, event: Event) -> Option<Result<Message, Error>> {
        match event {
            Event::Message(message) => Some(Ok(message)),
            Event::Fragment(fragment) => {
                if self.skip {
                    self.skip = !fragment.last;
                    None
                } else {
                    self.absorb_fragment(fragment)
                }
            }
            other => {
                // Pings and pongs (answered in the core), the end.
                self.on_event(other);
                None
            }
        }
    }

    /// Adds a piece of a streamed message to the one being reassembled;
    /// returns the message once whole.
    pub fn absorb_fragment(&mut self, fragment: Fragment) -> Option<Result<Message, Error>> {
        // The core's reassembler: text pieces the connection validated are
        // not validated again.
        self.partial.push(fragment).map_err(Error::Protocol).transpose()
    }

    /// Drives the connection to its end, dropping what arrives: the second
    /// half of [`close`](crate::WebSocketStream::close).
    pub fn poll_until_closed(&mut self, cx: &mut Context<'_>, side: Side) -> Poll<Result<(), Error>> {
        while ready!(self.poll_incoming(cx, side)).is_some() {}
        Poll::Ready(match self.take_end() {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    fn on_event(&mut self, event: Event) -> Option<Incoming> {
        match event {
            Event::Message(message) => Some(Incoming::Message(message)),
            Event::Fragment(fragment) => {
                if self.skip {
                    self.skip = !fragment.last;
                    return None;
                }
                Some(Incoming::Fragment(fragment))
            }
            Event::Ping(payload) => Some(Incoming::Ping(payload)),
            Event::Pong(payload) => Some(Incoming::Pong(payload)),
            Event::Closed(closed) => {
                tracing::debug!(code = closed.code.as_u16(), cause = ?closed.cause, "connection closed");
                None
            }
            _ => None,
        }
    }

    /// The connection is closed and the transport done with.
    fn is_finished(&self) -> bool {
        self.conn.closed().is_some()
            && self.conn.should_close_transport()
            && self.conn.pending_transmit() == 0
            && (self.shutdown || self.write_error.is_some())
    }

    /// The core gave up output the peer would not take (see
    /// [`Connection::output_abandoned`]): close the transport, and let the
    /// send side report the loss; nothing the application sent vanishes
    /// silently.
    fn abandon_output(&mut self, cx: &mut Context<'_>) {
        tracing::debug!("the peer does not read: output dropped, transport closed");
        self.unflushed = false;
        self.write_error = Some(Box::new((
            io::ErrorKind::TimedOut,
            "the peer stopped reading; queued output was dropped".to_owned(),
        )));
        // One attempt (a TCP shutdown does not block); dropping the stream
        // closes the socket in any case.
        if let Poll::Ready(Err(e)) = R::poll_shutdown(&mut self.io, cx) {
            tracing::debug!("shutdown failed: {e}");
        }
        self.shutdown = true;
        // A sender waiting for room or for a flush learns of it now.
        match &self.shared {
            Some(wakers) => wakers.send.wake(),
            None => cx.waker().wake_by_ref(),
        }
    }

    /// Arms the one timer from the core's next deadline (or the deadline
    /// for queued output at the end); on expiry hands the time in. Returns
    /// whether it fired.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        // Armed already, and the core's deadline can only have moved later
        // since (only the keepalive runs: each read pushes it): the timer
        // fires no later than needed, so the deadline is not asked again
        // until it does.
        if let Some(timer) = &mut self.timer {
            if self.conn.deadline_moves_later_only() && timer.poll_expired(cx).is_pending() {
                return false;
            }
        }
        let Some(deadline) = self.deadline() else {
            return false;
        };
        let timer = match &mut self.timer {
            Some(timer) => {
                // Re-armed only when the deadline moves earlier. Every read
                // pushes the keepalive deadline later; moving the timer each
                // time would cost a trip to the timer wheel per read. A timer
                // that fires before the current deadline is re-armed then.
                if deadline < timer.deadline() {
                    timer.reset(deadline);
                }
                timer
            }
            None => self.timer.insert(R::timer(deadline)),
        };
        loop {
            if timer.poll_expired(cx).is_pending() {
                return false;
            }
            if timer.deadline() >= deadline {
                break;
            }
            timer.reset(deadline);
        }
        // The timer may round; never hand in a time before the deadline,
        // or the same deadline would come back at once.
        self.conn.handle_timeout(R::now().max(deadline));
        true
    }

    /// The next instant the loop must wake at: the core's next deadline
    /// (keepalive, idle, close, or the linger of unwritten output). A
    /// blocking shell bounds its reads and writes by it.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.conn.poll_timeout()
    }

    fn poll_read_in(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if R::USES_DEADLINES {
            R::set_deadline(&mut self.io, self.conn.poll_timeout());
        }
        if !R::RESERVES_READ_ROOM {
            // The read may wait (a blocking runtime's, for a long time,
            // without coming back Pending) with no room reserved: let go of
            // the empty buffers now, as the loop does when it waits.
            self.release_buffers();
        }
        let io = &mut self.io;
        let read = if R::RESERVES_READ_ROOM {
            // Into a buffer the thread kept, in place, when the connection
            // let go of its own: a read that would block takes none.
            self.conn
                .read_into(MIN_READ_ROOM, self.read_buffer_size as usize, |buf| {
                    R::poll_read(io, cx, buf)
                })
        } else {
            R::poll_read(io, cx, &mut self.conn.recv_buffer_mut())
        };
        let Poll::Ready(result) = read else {
            // Waiting for the peer: buffers that hold nothing are let go of,
            // so that idle connections hold none.
            self.release_buffers();
            return Poll::Pending;
        };
        match result {
            Ok(0) => self.input_ended(None),
            Ok(_) => self.conn.handle_received(R::now()),
            Err(e) => self.input_ended(Some(e)),
        }
        Poll::Ready(())
    }

    /// The transport's input ended (`None`) or a read failed: noted.
    #[cold]
    #[inline(never)]
    fn input_ended(&mut self, error: Option<io::Error>) {
        match error {
            None => {
                self.read_done = true;
                self.conn.handle_eof(R::now());
            }
            Some(e) => {
                tracing::debug!("read failed: {e}");
                self.read_done = true;
                self.read_error = Some(e);
                self.conn.handle_eof(R::now());
            }
        }
    }

    /// [`poll_read_in`](Self::poll_read_in), the messages the read brings
    /// lent to `lend` where they arrived ([`Connection::read_and_lend`]):
    /// a connection that let go of its buffer while it waited reads into
    /// one the thread kept and, when every message of the read is lent, it
    /// never takes that buffer nor gives it back. What is not lent (a
    /// message the core does not lend in place, or the rest once `lend`
    /// breaks) stays for the receive loop, as after any read. A runtime
    /// that reads into a buffer of its own (completion-based) reads as
    /// `poll_read_in` does, and the loop lends from there.
    #[inline(always)]
    fn poll_read_lending(
        &mut self,
        cx: &mut Context<'_>,
        mut lend: impl FnMut(MessageRef<'_>, &mut Reply<'_>) -> ControlFlow<()>,
    ) -> Poll<()> {
        if !R::RESERVES_READ_ROOM {
            return self.poll_read_in(cx);
        }
        if R::USES_DEADLINES {
            R::set_deadline(&mut self.io, self.conn.poll_timeout());
        }
        let Self {
            conn,
            io,
            write_error,
            app_queued,
            read_buffer_size,
            ..
        } = self;
        let write_error = write_error.as_deref();
        let (read, _) = conn.read_and_lend(
            MIN_READ_ROOM,
            *read_buffer_size as usize,
            R::now,
            |buf| R::poll_read(io, cx, buf),
            |message, outbox| {
                lend(
                    message,
                    &mut Reply {
                        outbox,
                        write_error,
                        app_queued: &mut *app_queued,
                        owned: None,
                    },
                )
            },
        );
        self.after_read_in_place(read)
    }

    /// [`poll_read_in`](Self::poll_read_in), the first message the read
    /// brings put in `taken` where it arrived
    /// ([`Connection::read_and_take`]), for the receives of owned messages:
    /// when that is all the read brought, the thread's buffer it went into
    /// is neither taken nor given back. Everything else is parsed by the
    /// receive loop, as after any read.
    #[inline(always)]
    fn poll_read_taking(&mut self, cx: &mut Context<'_>, taken: &mut Option<Message>) -> Poll<()> {
        if !R::RESERVES_READ_ROOM {
            return self.poll_read_in(cx);
        }
        if R::USES_DEADLINES {
            R::set_deadline(&mut self.io, self.conn.poll_timeout());
        }
        let io = &mut self.io;
        let (read, message) = self
            .conn
            .read_and_take(MIN_READ_ROOM, self.read_buffer_size as usize, R::now, |buf| {
                R::poll_read(io, cx, buf)
            });
        *taken = message;
        self.after_read_in_place(read)
    }

    /// After a read that handed its bytes in itself
    /// ([`Connection::read_and_lend`], [`Connection::read_and_take`]):
    /// the end of the input or a failure noted, or the buffers let go of
    /// when it would wait.
    #[inline(always)]
    fn after_read_in_place(&mut self, read: Poll<io::Result<usize>>) -> Poll<()> {
        match read {
            // Handed in already.
            Poll::Ready(Ok(n)) if n > 0 => {}
            Poll::Ready(Ok(_)) => self.input_ended(None),
            Poll::Ready(Err(e)) => self.input_ended(Some(e)),
            Poll::Pending => {
                self.release_buffers();
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }

    /// Lets go of the empty buffers of a connection about to wait: to the
    /// thread's next connection that reads or writes (a few kept per
    /// thread: no allocation per message), or to the allocator (see
    /// [`Runtime::RECYCLES_BUFFERS`]).
    fn release_buffers(&mut self) {
        if R::RECYCLES_BUFFERS {
            self.conn.recycle_buffers();
        } else {
            self.conn.shrink_buffers();
        }
    }

    // ---- The send side ------------------------------------------------

    /// Ready when the write buffer has room for another message.
    #[inline]
    pub fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Room already: no waker needed (the common case, inlined into
        // the caller).
        if self.write_error.is_none()
            && self.conn.state() == State::Open
            && self.buffered() <= self.write_limit as usize
        {
            return Poll::Ready(Ok(()));
        }
        self.poll_send_ready_slow(cx)
    }

    #[inline(never)]
    fn poll_send_ready_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if let Some(waker) = self.register(Side::Send, cx.waker()) {
            return self.poll_send_ready_with(&mut Context::from_waker(&waker));
        }
        self.poll_send_ready_with(cx)
    }

    fn poll_send_ready_with(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if let Some(e) = self.write_failure() {
                return Poll::Ready(Err(e));
            }
            if self.conn.state() != State::Open {
                return Poll::Ready(Err(self.closed_error()));
            }
            if self.buffered() <= self.write_limit as usize {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_out(cx)).map_err(Error::from_io)?;
        }
    }

    /// Writes everything queued and flushes the transport.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>, side: Side) -> Poll<Result<(), Error>> {
        let written = match self.register(side, cx.waker()) {
            Some(waker) => self.poll_write_out(&mut Context::from_waker(&waker)),
            None => self.poll_write_out(cx),
        };
        match ready!(written) {
            Ok(()) => Poll::Ready(match self.write_failure() {
                Some(e) => Err(e),
                None => Ok(()),
            }),
            Err(e) => Poll::Ready(Err(Error::from_io(e))),
        }
    }

    /// Writes what the core offers (several frames in one vectored write
    /// where the transport supports it), flushes, and shuts the transport
    /// down once the core says so. A write error is recorded: the output is
    /// dropped from then on and the send side reports it.
    ///
    /// While the transport takes nothing, the core's send timeout runs
    /// ([`Connection::handle_write_blocked`]) and the timer is polled here
    /// too, so that a sender waiting alone (no task receiving) learns of
    /// the timeout: the output is then given up, the transport closed, and
    /// the send side reports [`Error::SendTimeout`].
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.poll_write_inner(cx) {
                Poll::Ready(Err(e)) => {
                    self.write_error = Some(Box::new((e.kind(), e.to_string())));
                    self.conn.discard_transmit();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    self.conn.handle_write_blocked(R::now());
                    if !self.poll_timer(cx) {
                        return Poll::Pending;
                    }
                    if self.conn.output_abandoned() && !self.shutdown && self.write_error.is_none() {
                        self.abandon_output(cx);
                    }
                }
                ready => return ready,
            }
        }
    }

    /// One write of the output as borrowed slices (several frames in one
    /// vectored write where the transport supports it).
    fn poll_write_borrowed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let (front, more) = self.conn.transmit_front();
        if !more {
            return R::poll_write(&mut self.io, cx, front);
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let count = self.conn.transmit_slices(&mut slices);
        if count > 1 && R::is_write_vectored(&self.io) {
            R::poll_write_vectored(&mut self.io, cx, &slices[..count])
        } else {
            R::poll_write(&mut self.io, cx, &slices[0])
        }
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_error.is_some() {
            // Output queued after a failed write goes nowhere.
            self.conn.discard_transmit();
            return Poll::Ready(Ok(()));
        }
        if R::USES_DEADLINES && self.conn.pending_transmit() > 0 {
            R::set_deadline(&mut self.io, self.conn.poll_timeout());
        }
        while self.conn.pending_transmit() > 0 {
            let n = if R::WRITES_OWNED {
                ready!(R::poll_write_owned(&mut self.io, cx, &mut self.conn.transmit_owned()))?
            } else {
                ready!(self.poll_write_borrowed(cx))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.conn.advance_transmit(n);
            self.unflushed = true;
        }
        if self.unflushed && !self.shutdown {
            ready!(R::poll_flush(&mut self.io, cx))?;
            self.unflushed = false;
        }
        if !self.shutdown && self.conn.should_close_transport() {
            if let Err(e) = ready!(R::poll_shutdown(&mut self.io, cx)) {
                // The peer may have gone first; the transport is done either way.
                tracing::debug!("shutdown failed: {e}");
            }
            self.shutdown = true;
        }
        Poll::Ready(Ok(()))
    }
}

/// Why nothing more can be sent, from how the connection closed.
fn closed_error(closed: Option<&Closed>) -> Error {
    match closed {
        Some(Closed {
            cause: CloseCause::Remote,
            code,
            reason,
        }) => Error::ClosedByPeer {
            code: *code,
            reason: reason.clone(),
        },
        Some(Closed {
            cause: CloseCause::Protocol(e),
            ..
        }) => Error::Protocol(e.clone()),
        Some(Closed {
            cause: CloseCause::IdleTimeout,
            ..
        }) => Error::IdleTimeout,
        Some(Closed {
            cause: CloseCause::SendTimeout,
            ..
        }) => Error::SendTimeout,
        Some(Closed {
            cause: CloseCause::Abnormal,
            ..
        }) => Error::AbnormalClosure,
        _ => Error::Closed,
    }
}

fn map_send_error(closed: Option<&Closed>, error: SendError) -> Error {
    match error {
        SendError::Closed => closed_error(closed),
        other => Error::Send(other),
    }
}

/// Why the send side cannot go on after a write failed (`write_error`) or
/// the output was given up: a timeout that ended the connection (the send
/// side polls the timer too, so a sender may be the first to see it) is
/// reported as that timeout; otherwise the I/O error.
#[cold]
#[inline(never)]
fn write_failure(
    write_error: Option<&(io::ErrorKind, String)>,
    closed: Option<&Closed>,
    output_abandoned: bool,
) -> Option<Error> {
    let (kind, msg) = write_error?;
    match closed.map(|c| &c.cause) {
        Some(CloseCause::SendTimeout) => return Some(Error::SendTimeout),
        Some(CloseCause::IdleTimeout) if output_abandoned => return Some(Error::IdleTimeout),
        Some(CloseCause::CloseTimeout) if output_abandoned => return Some(Error::CloseTimeout),
        _ => {}
    }
    Some(Error::Io(io::Error::new(*kind, msg.clone())))
}

/// The send side of a connection while a received message is lent to the
/// application ([`WebSocketStream::recv_with`](crate::WebSocketStream::recv_with)):
/// queues answers, which go out as [`feed`](crate::WebSocketStream::feed)'s
/// do (the next receive writes them before it waits; a send or a flush
/// writes them too). It does not wait for room in the write buffer: a
/// receive lends the next message only once the output is within the
/// write limit again.
#[derive(Debug)]
pub struct Reply<'a> {
    outbox: Outbox<'a>,
    write_error: Option<&'a (io::ErrorKind, String)>,
    app_queued: &'a mut u64,
    /// The message lent, when it is an owned one: sending it back shares
    /// its payload instead of copying it.
    owned: Option<&'a Message>,
}

impl Reply<'_> {
    /// Queues a copy of `message`: text or bytes of yours (`&str`,
    /// `&[u8]`), or the message lent (an echo; a large message, which is
    /// lent from an owned one, is sent without a copy).
    #[inline(always)]
    pub fn send<'m>(&mut self, message: impl Into<MessageRef<'m>>) -> Result<(), Error> {
        self.send_with(message, SendOptions::default())
    }

    /// [`send`](Self::send) with per-message options
    /// ([`SendOptions::uncompressed`](tether_proto::SendOptions::uncompressed)).
    #[inline(always)]
    pub fn send_with<'m>(&mut self, message: impl Into<MessageRef<'m>>, options: SendOptions) -> Result<(), Error> {
        if self.write_error.is_some() {
            return Err(self.failure());
        }
        let message = message.into();
        let sent = match self.owned {
            None => self.outbox.send_with(message, options),
            Some(owned) => self.outbox.send_or_share(owned, message, options),
        };
        self.after(sent)
    }

    /// Queues an owned message (a large payload is not copied).
    pub fn send_message(&mut self, message: impl Into<Message>, options: SendOptions) -> Result<(), Error> {
        if self.write_error.is_some() {
            return Err(self.failure());
        }
        let sent = self.outbox.send_message(message, options);
        self.after(sent)
    }

    /// Bytes queued for the transport and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.outbox.pending_transmit()
    }

    #[cold]
    fn failure(&self) -> Error {
        write_failure(self.write_error, self.outbox.closed(), self.outbox.output_abandoned()).unwrap_or(Error::Closed)
    }

    /// Marks what was queued as the application's, or maps the error.
    #[inline]
    fn after(&mut self, sent: Result<(), SendError>) -> Result<(), Error> {
        match sent {
            Ok(()) => {
                *self.app_queued = self.outbox.stats().wire_bytes_sent + self.outbox.pending_transmit() as u64;
                Ok(())
            }
            Err(e) => Err(map_send_error(self.outbox.closed(), e)),
        }
    }
}
