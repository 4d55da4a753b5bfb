//! The connection state machine: RFC 6455 after the opening handshake.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame, CloseReply, MAX_REASON_LEN};
use crate::config::Config;
use crate::error::{ProtocolError, SendError};
use crate::extension::{DecodeError, Extension};
use crate::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use crate::message::{DataKind, Fragment, Message, MessageRef, Utf8Bytes};
use crate::random::RandomSource;
use crate::utf8::{self, Utf8Validator};

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that opened the connection; it masks what it sends.
    Client,
    /// The end that accepted the connection; it closes the transport first.
    Server,
}

/// The state of the WebSocket connection (RFC 6455 section 4.1 and 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; incoming messages are
    /// still delivered, nothing more can be sent.
    Closing,
    /// The close handshake completed, or the connection failed. The transport
    /// may still be open: see [`Connection::should_close_transport`].
    Closed,
}

/// Something that happened on the connection, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A whole message.
    Message(Message),
    /// A piece of a message streamed as it arrives (see
    /// [`Config::stream_threshold`]).
    Fragment(Fragment),
    /// The peer sent a ping. With [`Config::auto_pong`] the pong is already
    /// queued.
    Ping(Bytes),
    /// The peer sent a pong.
    Pong(Bytes),
    /// The WebSocket connection is closed; no more events follow.
    Closed(Closed),
}

/// How the connection ended: carried by [`Event::Closed`] and kept by the
/// connection for [`Connection::closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The code: the one the peer sent (or 1005 when its close frame had
    /// none), the one we failed the connection with, or 1006 when it ended
    /// without a close handshake.
    pub code: CloseCode,
    /// The reason that came with the code.
    pub reason: String,
    /// What ended it.
    pub cause: CloseCause,
}

impl Closed {
    /// Whether the connection ended cleanly: the close handshake completed
    /// (RFC 6455 section 7.1.4), whichever side started it
    /// ([`CloseCause::Local`] or [`CloseCause::Remote`]). Every other cause
    /// (a protocol error, a timeout, the transport ending without a close
    /// frame) is an error that an adapter reports as one.
    ///
    /// A clean close can still carry a code other than 1000: the peer may
    /// close with 1001 "going away" or an application code; that is the
    /// peer's message, not a failure of the connection.
    pub fn is_clean(&self) -> bool {
        matches!(self.cause, CloseCause::Local | CloseCause::Remote)
    }
}

/// What ended a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCause {
    /// The peer started the close handshake and we answered.
    Remote,
    /// We started the close handshake and the peer answered.
    Local,
    /// The peer violated the protocol; we failed the connection and sent the
    /// error's close code.
    Protocol(ProtocolError),
    /// The transport ended without a close handshake (1006).
    Abnormal,
    /// Nothing was received for [`Config::idle_timeout`].
    IdleTimeout,
    /// The peer did not answer our close frame within [`Config::close_timeout`].
    CloseTimeout,
    /// Output waited [`Config::send_timeout`] without the transport taking
    /// any of it: the peer stopped reading.
    SendTimeout,
}

/// What went through a connection so far (the Windows runtime's
/// `BandwidthStatistics`), counted by the core as it works: a few integer
/// additions per message, nothing per byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes handed to the transport: frames with their headers, after
    /// compression ([`Connection::advance_transmit`], or taken with
    /// [`Connection::poll_transmit`]).
    pub wire_bytes_sent: u64,
    /// Bytes received from the transport (everything handed in, whether
    /// parsed yet or not).
    pub wire_bytes_received: u64,
    /// Payload bytes of the data messages sent, before compression.
    pub payload_bytes_sent: u64,
    /// Payload bytes of the data messages received, after decompression
    /// (pieces of a streamed message as they are delivered).
    pub payload_bytes_received: u64,
    /// Data messages sent (a fragmented one counts once, at its last
    /// fragment).
    pub messages_sent: u64,
    /// Data messages received (a streamed one counts once, at its last
    /// piece).
    pub messages_received: u64,
}

/// Per-message options for [`Connection::send_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// Let negotiated extensions transform the message (compress it).
    /// Default `true`.
    pub compress: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self { compress: true }
    }
}

impl SendOptions {
    /// Send the message as it is, never compressed: for secrets sent next to
    /// data an attacker controls, whose compressed size would leak them.
    pub const fn uncompressed() -> Self {
        Self { compress: false }
    }
}

/// What the opening handshake settled on beyond the protocol itself.
#[derive(Default)]
struct Negotiated {
    subprotocol: Option<String>,
    extensions: Vec<Box<dyn Extension>>,
}

/// A WebSocket connection after the opening handshake: a state machine that
/// turns received bytes into [`Event`]s and commands into bytes to transmit.
///
/// See the [crate documentation](crate) for the driving loop.
pub struct Connection {
    role: Role,
    /// Shared by the thread's connections made with equal settings (see
    /// [`shared_config`]): 8 bytes per connection instead of 152.
    config: Arc<Config>,
    state: State,
    /// The masking keys' source (clients only), boxed once more: a thin
    /// pointer (8 bytes, not 16) in every connection, as most are servers'
    /// and hold none.
    random: Option<Box<Box<dyn RandomSource>>>,
    /// The subprotocol and extensions the handshake settled on, boxed: most
    /// connections have neither, and an idle connection's size counts.
    negotiated: Option<Box<Negotiated>>,
    /// RSV bits that negotiated extensions may set.
    extension_rsv: u8,

    // Receiving.
    recv: BytesMut,
    /// The data frame being received, past its header: one field for both
    /// kinds (never both at once), as an idle connection's size counts.
    frame: Option<FrameIn>,
    incoming: Option<Box<Incoming>>,
    events: Events,

    // Sending.
    transmit: Transmit,
    /// Kind of the fragmented message we are sending, if one is open.
    outgoing: Option<(DataKind, Utf8Validator)>,

    // Timers.
    last_received: Instant,
    last_ping_sent: Option<Instant>,
    close_deadline: Option<Instant>,
    /// Since when the transport has not taken output it was offered (see
    /// [`Config::send_timeout`]).
    write_blocked_since: Option<Instant>,
    /// The transport's read side ended.
    eof_received: bool,
    /// A timeout says the transport must be closed now.
    transport_done: bool,
    /// How the connection ended, once it did (boxed: every open connection
    /// would carry its room).
    closed: Option<Box<Closed>>,
    /// Once the transport is to be closed: when output still unwritten is
    /// given up (see [`Connection::output_abandoned`]).
    linger: Option<Instant>,
    /// Unwritten output was dropped because the peer did not take it.
    abandoned: bool,
    stats: Stats,
    /// The receive buffer's length when it was last handed out or taken
    /// note of: what `handle_received` finds beyond it was just received.
    recv_mark: usize,
    /// Buffers let go of on the way go to the thread's cache (see
    /// [`Connection::set_buffer_recycling`]).
    recycling: bool,
    /// Payloads shorter than this go out by the inlined short-frame path
    /// when nothing else stands in the way: 126 for a server whose frame
    /// limit (if any) allows 125 bytes, the limit + 1 below that, 0 for a
    /// client (its frames are masked). Fixed with the role and the config,
    /// so that each send compares one byte instead of both.
    short_send_limit: u8,
}

/// A data frame whose header is parsed and whose payload is arriving.
enum FrameIn {
    /// Taken piece by piece, as it arrives (fragments, streamed messages).
    Partial(PartialFrame),
    /// An unfragmented message, kept in the receive buffer until it is
    /// whole.
    Whole(WholeFrame),
}

/// An unfragmented, untransformed data frame whose payload accumulates in
/// the receive buffer (starting at its front) instead of being copied piece
/// by piece into a message buffer: once whole, it is split off as the
/// message without a copy. Each byte is unmasked and (for text) validated as
/// it arrives, so invalid UTF-8 still fails the connection at once.
struct WholeFrame {
    header: FrameHeader,
    len: usize,
    /// Payload bytes already unmasked and validated.
    done: usize,
    utf8: Utf8Validator,
}

/// The earlier of two optional deadlines.
#[inline]
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The events not yet handed out, in order. Parsing stops at the first
/// event, so there is seldom more than one: it waits in `first`, without
/// an allocation; the rare others queue behind it, in a queue boxed so
/// that a connection without any holds 8 bytes for it, not 32.
#[derive(Default)]
struct Events {
    first: Option<Event>,
    #[allow(clippy::box_collection, reason = "8 bytes in every connection instead of 32")]
    rest: Option<Box<VecDeque<Event>>>,
}

impl Events {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    #[inline]
    fn push_back(&mut self, event: Event) {
        if self.first.is_none() {
            self.first = Some(event);
        } else {
            self.push_rest(event);
        }
    }

    #[cold]
    #[inline(never)]
    fn push_rest(&mut self, event: Event) {
        self.rest.get_or_insert_default().push_back(event);
    }

    fn pop_front(&mut self) -> Option<Event> {
        // Asked at every turn of a loop that waits: the empty queue is told
        // by its tag, without moving the 72-byte slot out and back.
        self.first.as_ref()?;
        let event = self.first.take();
        self.first = self.rest.as_mut().and_then(|rest| rest.pop_front());
        event
    }
}

/// The data frame whose payload is being received.
struct PartialFrame {
    header: FrameHeader,
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload bytes already taken (for the mask's rotation).
    offset: u64,
}

/// The data message being received.
struct Incoming {
    kind: DataKind,
    /// RSV bits of the first frame: which extensions must decode it.
    rsv: u8,
    buf: BytesMut,
    utf8: Utf8Validator,
    /// Bytes of the message so far, after decoding.
    len: u64,
    /// Streaming: pieces are delivered as they come.
    streaming: bool,
    /// Streaming: a piece was delivered already.
    started: bool,
}

/// The send side of a connection: what
/// [`lend_message`](Connection::lend_message) hands out with a message lent
/// in place (the receive buffer is lent then, so the rest of the
/// connection is not), and [`Connection::outbox`] at any time. Queues
/// messages; the output goes out as always
/// ([`transmit_slices`](Connection::transmit_slices), ...).
#[derive(Debug)]
pub struct Outbox<'a> {
    conn: &'a mut Connection,
}

impl Outbox<'_> {
    /// Sends a whole message, a copy of `message` (see
    /// [`Connection::send_ref`]).
    #[inline]
    pub fn send(&mut self, message: MessageRef<'_>) -> Result<(), SendError> {
        self.conn.send_ref(message, SendOptions::default())
    }

    /// [`send`](Self::send) with per-message options.
    #[inline]
    pub fn send_with(&mut self, message: MessageRef<'_>, options: SendOptions) -> Result<(), SendError> {
        self.conn.send_ref(message, options)
    }

    /// Sends an owned message, as [`Connection::send_with`].
    pub fn send_message(&mut self, message: impl Into<Message>, options: SendOptions) -> Result<(), SendError> {
        self.conn.send_with(message, options)
    }

    /// Sends `message` while `owned` is lent out as a [`MessageRef`] (a
    /// large, fragmented or compressed message handed over owned): when
    /// `message` is that very payload (its address and length, the same
    /// kind: an echo), the payload is shared, not copied; otherwise a copy
    /// is sent as by [`send_with`](Self::send_with).
    #[cold]
    #[inline(never)]
    pub fn send_or_share(
        &mut self,
        owned: &Message,
        message: MessageRef<'_>,
        options: SendOptions,
    ) -> Result<(), SendError> {
        if owned.kind() == message.kind() && std::ptr::eq(owned.as_bytes(), message.as_bytes()) {
            self.send_message(owned.clone(), options)
        } else {
            self.send_with(message, options)
        }
    }

    /// Bytes queued for the transport and not yet written
    /// ([`Connection::pending_transmit`]).
    pub fn pending_transmit(&self) -> usize {
        self.conn.pending_transmit()
    }

    /// The connection's counters ([`Connection::stats`]).
    pub fn stats(&self) -> Stats {
        self.conn.stats()
    }

    /// The connection's state ([`Connection::state`]).
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// How the connection closed, once it has ([`Connection::closed`]).
    pub fn closed(&self) -> Option<&Closed> {
        self.conn.closed()
    }

    /// Whether queued output was given up ([`Connection::output_abandoned`]).
    pub fn output_abandoned(&self) -> bool {
        self.conn.output_abandoned()
    }

    /// Sends one fragment of a message ([`Connection::send_fragment`]).
    pub fn send_fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), SendError> {
        self.conn.send_fragment(kind, data, fin)
    }

    /// Sends a ping ([`Connection::ping`]).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.conn.ping(payload)
    }

    /// Starts the close handshake ([`Connection::close`]). Lending stops
    /// after the message being lent: the connection is no longer open.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Result<(), SendError> {
        self.conn.close(code, reason, now)
    }

    /// The negotiated subprotocol ([`Connection::subprotocol`]).
    pub fn subprotocol(&self) -> Option<&str> {
        self.conn.subprotocol()
    }

    /// The negotiated extensions' names ([`Connection::extensions`]).
    pub fn extensions(&self) -> impl Iterator<Item = &str> + '_ {
        self.conn.extensions()
    }
}

/// A message that can be lent in place, and the limits of the ones after
/// it in the same buffer.
struct Lendable {
    frame: SmallFrame,
    max: usize,
    masked: bool,
}

/// A whole small message at the front of the receive buffer: see
/// [`Connection::small_message_at_front`].
struct SmallFrame {
    text: bool,
    header_len: usize,
    len: usize,
    /// The masking key of a client's frame.
    key: Option<[u8; 4]>,
}

/// The whole unfragmented text or binary frame of at most `max` payload
/// bytes (and under 64 KiB: a 7- or 16-bit length) that `buf` starts
/// with, masked if `masked` (a client's), without an RSV bit.
#[inline(always)]
fn small_frame(buf: &[u8], masked: bool, max: usize) -> Option<SmallFrame> {
    let [b0, b1, ..] = *buf else {
        return None;
    };
    // FIN, no RSV bit, text or binary; masked if and only if the peer is
    // a client.
    let text = match b0 {
        0x81 => true,
        0x82 => false,
        _ => return None,
    };
    if (b1 & 0x80 != 0) != masked {
        return None;
    }
    let (len, mut header_len) = match b1 & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])), 4),
        127 => return None,
        len => (usize::from(len), 2),
    };
    let mut key = None;
    if masked {
        let k = buf.get(header_len..header_len + 4)?;
        key = Some([k[0], k[1], k[2], k[3]]);
        header_len += 4;
    }
    if len > max || buf.len() < header_len + len {
        return None;
    }
    Some(SmallFrame {
        text,
        header_len,
        len,
        key,
    })
}

/// `Connection::short_send_limit`: frames of a server's short path are
/// 125 bytes at most, and no larger than its frame limit (`Some(0)` is no
/// limit); a client has none.
fn short_send_limit(role: Role, max_send_frame_size: Option<usize>) -> u8 {
    match (role, max_send_frame_size) {
        (Role::Client, _) => 0,
        (Role::Server, Some(max)) if max > 0 && max < 125 => max as u8 + 1,
        (Role::Server, _) => 126,
    }
}

/// Outgoing bytes: small frames are coalesced in `buf`; large unmasked
/// payloads are queued as they are, without a copy.
#[derive(Default)]
struct Transmit {
    queue: VecDeque<Bytes>,
    buf: BytesMut,
    len: usize,
    /// `buf` is a driving loop's, lent for the connection's turn
    /// ([`Connection::lend_send_buffer`]): kept when written out, for the
    /// loop to take back, instead of let go of.
    lent: bool,
}

impl Transmit {
    /// A buffer for the first frame after the connection let go of its
    /// own: one a waiting connection of the thread let go of, or a new one
    /// large enough for the frames of a burst of small messages (not grown
    /// by doubling from the first frame's size) and for the thread to keep
    /// when this connection waits.
    #[cold]
    #[inline(never)]
    fn take_buffer(&mut self, min: usize) {
        if !crate::spare::take_into(crate::spare::Kind::Send, min, min, &mut self.buf) {
            self.buf = BytesMut::with_capacity(min.max(SEND_BUFFER_MIN));
        }
    }
}

/// Payloads at least this large are queued as their own chunk instead of
/// being copied (server side, no extension transformed them).
const ZERO_COPY_MIN: usize = 16 * 1024;
/// Buffers with more capacity than this are let go of as soon as they are
/// empty (a receive buffer emptied by parsing, a transmit buffer written
/// out), so that a burst does not leave a large buffer behind.
const IDLE_BUFFER_MAX: usize = 16 * 1024;
/// The least a transmit buffer is made with.
const SEND_BUFFER_MIN: usize = 4 * 1024;

impl Connection {
    /// A client-side connection. `random` provides the masking keys (RFC 6455
    /// section 5.3): pass a cryptographically secure source in production.
    pub fn client(config: Config, random: Box<dyn RandomSource>, now: Instant) -> Self {
        Self::new(Role::Client, config, Some(random), now)
    }

    /// A server-side connection.
    pub fn server(config: Config, now: Instant) -> Self {
        Self::new(Role::Server, config, None, now)
    }

    fn new(role: Role, config: Config, random: Option<Box<dyn RandomSource>>, now: Instant) -> Self {
        let short_send_limit = short_send_limit(role, config.max_send_frame_size);
        Self {
            role,
            config: shared_config(config),
            state: State::Open,
            random: random.map(Box::new),
            negotiated: None,
            extension_rsv: 0,
            recv: BytesMut::new(),
            frame: None,
            incoming: None,
            events: Events::default(),
            transmit: Transmit::default(),
            outgoing: None,
            last_received: now,
            last_ping_sent: None,
            close_deadline: None,
            write_blocked_since: None,
            eof_received: false,
            transport_done: false,
            closed: None,
            linger: None,
            abandoned: false,
            stats: Stats::default(),
            recv_mark: 0,
            recycling: false,
            short_send_limit,
        }
    }

    /// Records the subprotocol the handshake settled on.
    pub fn with_subprotocol(mut self, subprotocol: Option<String>) -> Self {
        if subprotocol.is_some() || self.negotiated.is_some() {
            self.negotiated.get_or_insert_default().subprotocol = subprotocol;
        }
        self
    }

    /// Installs the negotiated extensions, in the order of the server's
    /// `Sec-WebSocket-Extensions` answer.
    pub fn with_extensions(mut self, extensions: Vec<Box<dyn Extension>>) -> Self {
        self.extension_rsv = extensions.iter().fold(0, |bits, e| bits | e.rsv_bits());
        if !extensions.is_empty() || self.negotiated.is_some() {
            self.negotiated.get_or_insert_default().extensions = extensions;
        }
        self
    }

    /// The negotiated extensions, in pipeline order (none for most
    /// connections).
    fn extension_list(&self) -> &[Box<dyn Extension>] {
        self.negotiated.as_ref().map_or(&[], |n| &n.extensions)
    }

    // ---- Inputs -------------------------------------------------------

    /// Bytes received from the transport. They are parsed as
    /// [`poll_event`](Self::poll_event) asks for events, so that the
    /// application answers each message before a later frame can close the
    /// connection.
    pub fn handle_read(&mut self, data: &[u8], now: Instant) {
        if data.is_empty() {
            return;
        }
        if self.state != State::Closed {
            self.recv_mark = self.recv.len();
            self.recv.extend_from_slice(data);
        } else {
            self.stats.wire_bytes_received += data.len() as u64;
        }
        self.handle_received(now);
    }

    /// The receive buffer, for the transport to read into: an append-only
    /// handle (a [`BufMut`]) that can add bytes at the end and reserve room,
    /// but cannot clear, advance or rewrite what the connection holds (a
    /// frame arriving in pieces is unmasked and validated in place there).
    /// Read from the socket straight into it (for example with tokio's
    /// `poll_read_buf`, which takes any `BufMut`), then call
    /// [`handle_received`](Self::handle_received); this skips the copy that
    /// [`handle_read`](Self::handle_read) makes.
    pub fn recv_buffer_mut(&mut self) -> RecvBuf<'_> {
        self.recv_mark = self.recv.len();
        // The bytes still to come of an unfragmented frame that accumulates
        // in the buffer (its header parsed, its length checked against the
        // limits): what a read may reserve room for at once.
        let frame_rest = match &self.frame {
            Some(FrameIn::Whole(w)) => w.len.saturating_sub(self.recv.len()),
            _ => 0,
        };
        RecvBuf {
            buf: &mut self.recv,
            frame_rest,
            read_max: MAX_READ,
            large: self.recycling,
        }
    }

    /// Runs `read` with the receive buffer
    /// ([`recv_buffer_mut`](Self::recv_buffer_mut)) holding room for a read
    /// of a buffer of `size` bytes ([`RecvBuf::reserve_read`] with `min` and `size`): the
    /// way a driving loop reads. Then call
    /// [`handle_received`](Self::handle_received) if it read bytes.
    ///
    /// A connection that let go of its buffer while it waited
    /// ([`recycle_buffers`](Self::recycle_buffers)) reads into one the
    /// thread kept, in place; that buffer becomes the connection's only if
    /// the read put bytes in it. A read that would block (the next read
    /// after each answer, for a peer that waits for it) then costs no
    /// buffer taken from the thread and given back.
    #[inline]
    pub fn read_into<T>(&mut self, min: usize, size: usize, mut read: impl FnMut(&mut RecvBuf<'_>) -> T) -> T {
        let min = min.min(size);
        if self.recv.capacity() == 0 {
            self.recv_mark = 0;
            let lent = crate::spare::lend_into(
                crate::spare::Kind::Recv,
                kept_room(min, size),
                size,
                &mut self.recv,
                |buf| read(&mut RecvBuf::new(buf)),
            );
            if let Some(out) = lent {
                return out;
            }
        }
        let mut buf = self.recv_buffer_mut();
        buf.reserve_read(min, size);
        read(&mut buf)
    }

    /// [`read_into`](Self::read_into), [`handle_received`](Self::handle_received)
    /// if the read brought bytes, then the messages they hold lent to `f`
    /// as [`lend_messages`](Self::lend_messages) lends them; returns
    /// `read`'s result and how many messages were lent. `now` gives the
    /// time of the read; it is asked only when the read brought bytes, so
    /// that a read that would block (one per wait of an async shell) costs
    /// no reading of the clock.
    ///
    /// The point is where the bytes are: a connection that let go of its
    /// buffer while it waited reads into one the thread kept, in place, and
    /// its messages are lent from there; only when bytes are left over (an
    /// incomplete frame, a message that cannot be lent, or `f` stopped) does
    /// the buffer become the connection's. A read whose messages are all
    /// answered (a request and its reply, an echo) thus moves no buffer in
    /// or out of the thread's cache, the way uWebSockets processes every
    /// socket's reads in its loop's one buffer.
    ///
    /// What is not lent is there for [`poll_event`](Self::poll_event) and
    /// [`lend_messages`](Self::lend_messages) as after any read.
    #[inline]
    pub fn read_and_lend<T>(
        &mut self,
        min: usize,
        size: usize,
        now: impl Fn() -> Instant,
        mut read: impl FnMut(&mut RecvBuf<'_>) -> T,
        mut f: impl FnMut(MessageRef<'_>, Outbox<'_>) -> ControlFlow<()>,
    ) -> (T, usize) {
        let min = min.min(size);
        if self.recv.capacity() == 0 {
            let mut lent = 0;
            let mut invalid = false;
            let read = crate::spare::lend(crate::spare::Kind::Recv, kept_room(min, size), size, |buf| {
                let out = read(&mut RecvBuf::new(buf));
                if !buf.is_empty() {
                    self.stats.wire_bytes_received += buf.len() as u64;
                    self.last_received = now();
                    if self.state == State::Closed {
                        buf.clear();
                    } else if let Some(first) = self.first_lendable(buf) {
                        let (count, end, bad) = self.lend_run(buf, first, &mut f);
                        (lent, invalid) = (count, bad);
                        if end == buf.len() {
                            buf.clear();
                        } else {
                            buf.advance(end);
                        }
                    }
                }
                out
            });
            if let Some((out, taken)) = read {
                if let Some(buf) = taken {
                    self.recv = buf;
                }
                self.recv_mark = self.recv.len();
                if invalid {
                    self.fail_lent_text();
                }
                return (out, lent);
            }
        }
        let before = self.recv.len();
        let mut buf = self.recv_buffer_mut();
        buf.reserve_read(min, size);
        let out = read(&mut buf);
        if self.recv.len() > before {
            self.handle_received(now());
            (out, self.lend_messages(f))
        } else {
            (out, 0)
        }
    }

    /// [`read_and_lend`](Self::read_and_lend) for a receiver that takes
    /// messages owned: the first message the read brings, when it is a
    /// small whole one that [`poll_event`](Self::poll_event) would hand out
    /// first, is split off where it arrived and returned with `read`'s
    /// result. A connection that let go of its buffer while it waited reads
    /// into one the thread kept, in place, and that buffer becomes the
    /// connection's only when bytes are left after the message (the
    /// message's payload shares its allocation, as a payload split off the
    /// connection's own buffer does). A read of one request thus moves no
    /// buffer in or out of the thread's cache.
    ///
    /// Anything else the read brings is there for `poll_event`, as after
    /// [`read_into`](Self::read_into) and
    /// [`handle_received`](Self::handle_received); so is the error when
    /// the message taken was a text that is not UTF-8 (the connection
    /// fails, and `None` is returned). `now` gives the time of the read,
    /// asked only when the read brought bytes.
    #[inline]
    pub fn read_and_take<T>(
        &mut self,
        min: usize,
        size: usize,
        now: impl Fn() -> Instant,
        mut read: impl FnMut(&mut RecvBuf<'_>) -> T,
    ) -> (T, Option<Message>) {
        let min = min.min(size);
        if self.recv.capacity() == 0 {
            let mut taken = None;
            let mut invalid = false;
            let read = crate::spare::lend(crate::spare::Kind::Recv, kept_room(min, size), size, |buf| {
                let out = read(&mut RecvBuf::new(buf));
                if !buf.is_empty() {
                    self.stats.wire_bytes_received += buf.len() as u64;
                    self.last_received = now();
                    if self.state == State::Closed {
                        buf.clear();
                    } else if self.events.is_empty() {
                        if let Some(frame) = self.small_message_in(buf) {
                            self.count_received(frame.len, true);
                            match split_small(buf, frame) {
                                Ok(message) => taken = Some(message),
                                Err(_) => invalid = true,
                            }
                        }
                    }
                }
                out
            });
            if let Some((out, kept)) = read {
                if let Some(buf) = kept {
                    self.recv = buf;
                }
                self.recv_mark = self.recv.len();
                if invalid {
                    self.fail_lent_text();
                }
                return (out, taken);
            }
        }
        let before = self.recv.len();
        let mut buf = self.recv_buffer_mut();
        buf.reserve_read(min, size);
        let out = read(&mut buf);
        if self.recv.len() > before {
            self.handle_received(now());
        }
        (out, None)
    }

    /// Takes note of what was appended to
    /// [`recv_buffer_mut`](Self::recv_buffer_mut); `now` is the time of the
    /// read.
    pub fn handle_received(&mut self, now: Instant) {
        self.stats.wire_bytes_received += self.recv.len().saturating_sub(self.recv_mark) as u64;
        self.recv_mark = self.recv.len();
        if self.state == State::Closed {
            self.recv = BytesMut::new();
        } else if !self.recv.is_empty() {
            self.last_received = now;
        }
    }

    /// The transport's read side ended (EOF). Frames received before it are
    /// still delivered; then the connection closes with 1006 unless the close
    /// handshake completed.
    pub fn handle_eof(&mut self, now: Instant) {
        self.eof_received = true;
        self.last_received = now;
        self.close_deadline = None;
        if self.recv.is_empty() {
            self.finish_eof();
        }
        self.arm_linger(now);
    }

    /// The transport would not take the output offered by
    /// [`transmit_slices`](Self::transmit_slices) (a write would block): from
    /// now, [`Config::send_timeout`] counts until the transport takes a byte
    /// ([`advance_transmit`](Self::advance_transmit) with `n > 0`). Calling it
    /// again while the clock runs changes nothing, so an adapter may call it
    /// every time a write comes back blocked.
    pub fn handle_write_blocked(&mut self, now: Instant) {
        if self.transmit.len > 0 && self.write_blocked_since.is_none() {
            self.write_blocked_since = Some(now);
        }
    }

    /// Time passed: handles every deadline at or before `now` (keepalive
    /// ping, idle timeout, send timeout, close timeout, and the linger of unwritten output
    /// once the transport is to be closed: see
    /// [`output_abandoned`](Self::output_abandoned)).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.should_close_transport() {
            if self.linger_deadline().is_some_and(|d| d <= now) {
                self.abandon_output();
            }
            return;
        }
        if self.send_deadline().is_some_and(|d| d <= now) {
            // The peer stopped reading: a close frame would wait behind the
            // output it does not take, so the transport is closed at once.
            self.write_blocked_since = None;
            self.set_closed(CloseCode::ABNORMAL, String::new(), CloseCause::SendTimeout);
            self.transport_done = true;
            self.arm_linger(now);
            return;
        }
        if self.close_deadline.is_some_and(|d| d <= now) {
            self.close_deadline = None;
            if self.state != State::Closed {
                self.set_closed(CloseCode::ABNORMAL, String::new(), CloseCause::CloseTimeout);
            }
            self.transport_done = true;
            self.arm_linger(now);
            return;
        }
        if self.state != State::Open {
            return;
        }
        if self.idle_deadline().is_some_and(|d| d <= now) {
            // The peer is gone or unreachable: say so if it still listens,
            // then close without waiting for an answer.
            self.write_close(CloseCode::INTERNAL_ERROR, b"idle timeout");
            self.set_closed(CloseCode::ABNORMAL, String::new(), CloseCause::IdleTimeout);
            self.transport_done = true;
            self.arm_linger(now);
            return;
        }
        if self.ping_deadline().is_some_and(|d| d <= now) {
            self.write_frame(OpCode::Ping, true, 0, &[]);
            self.last_ping_sent = Some(now);
        }
    }

    // ---- Commands -----------------------------------------------------

    /// Sends a whole message, as one frame or split by
    /// [`Config::max_send_frame_size`], compressed if permessage-deflate was
    /// negotiated and the message is over its threshold.
    pub fn send(&mut self, message: impl Into<Message>) -> Result<(), SendError> {
        self.send_with(message, SendOptions::default())
    }

    /// Sends a whole message with per-message options, for example
    /// [`SendOptions::uncompressed`] for a message that carries a secret next
    /// to data an attacker controls (CRIME, BREACH).
    #[inline(always)]
    pub fn send_with(&mut self, message: impl Into<Message>, options: SendOptions) -> Result<(), SendError> {
        let message = message.into();
        if self.sends_short_server_frame(message.len(), options) {
            self.send_short_server_message(message.kind(), message.as_bytes());
            return Ok(());
        }
        self.send_message(message, options)
    }

    /// [`send_with`](Self::send_with) for a message lent, not owned (a
    /// [`MessageRef`]: text or bytes of the caller's, or a message
    /// received in place, see [`lend_message`](Self::lend_message)): a
    /// short message a server sends is copied straight into the output,
    /// with no `Bytes` of its own; others are copied once into a
    /// [`Message`] first.
    #[inline(always)]
    pub fn send_ref(&mut self, message: MessageRef<'_>, options: SendOptions) -> Result<(), SendError> {
        if self.sends_short_server_frame(message.len(), options) {
            self.send_short_server_message(message.kind(), message.as_bytes());
            return Ok(());
        }
        self.send_slice(message, options)
    }

    /// [`send_ref`](Self::send_ref) for every message: copied straight
    /// into the output (masked by a client) when it goes out as it is, one
    /// frame, no extension to run; otherwise as an owned message.
    #[inline(never)]
    fn send_slice(&mut self, message: MessageRef<'_>, options: SendOptions) -> Result<(), SendError> {
        let payload = message.as_bytes();
        let transformed = options.compress && self.negotiated.is_some();
        let split = matches!(self.config.max_send_frame_size, Some(max) if max > 0 && payload.len() > max);
        if transformed || split {
            return self.send_message(message.to_message(), options);
        }
        self.check_can_send()?;
        if self.outgoing.is_some() {
            return Err(SendError::FragmentOrder);
        }
        self.stats.payload_bytes_sent += payload.len() as u64;
        self.stats.messages_sent += 1;
        self.write_frame(data_opcode(message.kind()), true, 0, payload);
        Ok(())
    }

    /// Whether a message of `len` bytes goes out by the inlined path: a
    /// server's (unmasked), short, no extension to run, no frame limit to
    /// split it, the connection open and between fragmented messages.
    #[inline(always)]
    fn sends_short_server_frame(&self, len: usize, options: SendOptions) -> bool {
        len < usize::from(self.short_send_limit)
            && self.state == State::Open
            && self.outgoing.is_none()
            && (!options.compress || self.negotiated.is_none())
    }

    /// The common message, inlined into the caller (see
    /// [`sends_short_server_frame`](Self::sends_short_server_frame)).
    #[inline(always)]
    fn send_short_server_message(&mut self, kind: DataKind, payload: &[u8]) {
        self.stats.payload_bytes_sent += payload.len() as u64;
        self.stats.messages_sent += 1;
        self.write_short_server_frame(0x80 | data_opcode(kind).as_u8(), payload);
    }

    /// [`send_with`](Self::send_with) for every message.
    #[inline(never)]
    fn send_message(&mut self, message: Message, options: SendOptions) -> Result<(), SendError> {
        self.check_can_send()?;
        if self.outgoing.is_some() {
            return Err(SendError::FragmentOrder);
        }
        let kind = message.kind();
        let mut payload = message.into_bytes();
        self.stats.payload_bytes_sent += payload.len() as u64;
        self.stats.messages_sent += 1;
        let mut rsv = 0;
        if let (true, Some(negotiated)) = (options.compress, &mut self.negotiated) {
            for ext in &mut negotiated.extensions {
                if let Some((encoded, bits)) = ext.encode(kind, &payload).map_err(SendError::Extension)? {
                    payload = encoded.freeze();
                    rsv |= bits;
                }
            }
        }
        let opcode = data_opcode(kind);
        match self.config.max_send_frame_size {
            Some(max) if max > 0 && payload.len() > max => {
                let mut first = true;
                while !payload.is_empty() {
                    let piece = payload.split_to(payload.len().min(max));
                    let op = if first { opcode } else { OpCode::Continuation };
                    self.write_frame_bytes(op, payload.is_empty(), if first { rsv } else { 0 }, piece);
                    first = false;
                }
            }
            _ => self.write_frame_bytes(opcode, true, rsv, payload),
        }
        Ok(())
    }

    /// Sends a message encoded once for many connections (see
    /// [`PreparedMessage`](crate::PreparedMessage)): a server queues the prepared frame's bytes
    /// (shared, not copied; compressed once where permessage-deflate runs
    /// without server context takeover); a client, or a connection whose
    /// extensions or frame size limit need the message encoded its own way,
    /// sends it as [`send_with`](Self::send_with) would. Either way the
    /// peer receives the same message.
    pub fn send_prepared(&mut self, prepared: &crate::PreparedMessage) -> Result<(), SendError> {
        self.check_can_send()?;
        if self.outgoing.is_some() {
            return Err(SendError::FragmentOrder);
        }
        let message = prepared.message();
        let (kind, len) = (message.kind(), message.len());
        let fits = match self.config.max_send_frame_size {
            Some(max) if max > 0 => len <= max,
            _ => true,
        };
        let per_connection = || (message.clone(), prepared.options());
        if self.role == Role::Client || !fits {
            let (message, options) = per_connection();
            return self.send_with(message, options);
        }
        let mut encoding = None;
        if prepared.options().compress {
            for ext in self.extension_list() {
                match ext.shared_encoding(kind, len) {
                    crate::extension::SharedEncoding::Unchanged => {}
                    crate::extension::SharedEncoding::Deflate { window_bits, level } if encoding.is_none() => {
                        encoding = Some((window_bits, level));
                    }
                    _ => {
                        let (message, options) = per_connection();
                        return self.send_with(message, options);
                    }
                }
            }
        }
        let frame = match encoding {
            None => prepared.frame().clone(),
            #[cfg(feature = "deflate")]
            Some((window_bits, level)) => match prepared.deflated(window_bits, level) {
                Some(frame) => frame,
                None => {
                    let (message, options) = per_connection();
                    return self.send_with(message, options);
                }
            },
            #[cfg(not(feature = "deflate"))]
            Some(_) => {
                let (message, options) = per_connection();
                return self.send_with(message, options);
            }
        };
        self.stats.payload_bytes_sent += len as u64;
        self.stats.messages_sent += 1;
        let t = &mut self.transmit;
        if !t.buf.is_empty() {
            t.queue.push_back(t.buf.split().freeze());
        }
        t.len += frame.len();
        t.queue.push_back(frame);
        Ok(())
    }

    /// Sends a text message (a copy of `text`).
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_ref(MessageRef::Text(text), SendOptions::default())
    }

    /// Sends a binary message (a copy of `data`).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_ref(MessageRef::Binary(data), SendOptions::default())
    }

    /// The send side alone ([`Outbox`]), as
    /// [`lend_message`](Self::lend_message) hands it out with a message.
    pub fn outbox(&mut self) -> Outbox<'_> {
        Outbox { conn: self }
    }

    /// Sends one fragment of a message whose size is not known up front
    /// (RFC 6455 section 5.4). The first call starts a message of `kind`;
    /// later calls continue it with the same `kind`; `fin` ends it. Text may be
    /// split anywhere, even inside a code point, but the whole must be UTF-8.
    /// Control frames and pings may be sent between fragments; other messages
    /// may not. Extensions do not transform fragmented messages.
    pub fn send_fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), SendError> {
        self.check_can_send()?;
        let opcode = match &mut self.outgoing {
            Some((open, _)) if *open != kind => return Err(SendError::FragmentOrder),
            Some(_) => OpCode::Continuation,
            None => {
                self.outgoing = Some((kind, Utf8Validator::new()));
                data_opcode(kind)
            }
        };
        if let Some((DataKind::Text, validator)) = &mut self.outgoing {
            // Check on a copy: a refused fragment must leave the open
            // message exactly as it was (found by the pair_ops fuzz target).
            let mut next = validator.clone();
            if next.feed(data).is_err() || (fin && next.finish().is_err()) {
                if opcode != OpCode::Continuation {
                    self.outgoing = None;
                }
                return Err(SendError::InvalidUtf8);
            }
            *validator = next;
        }
        if fin {
            self.outgoing = None;
            self.stats.messages_sent += 1;
        }
        self.stats.payload_bytes_sent += data.len() as u64;
        self.write_frame(opcode, fin, 0, data);
        Ok(())
    }

    /// Sends a ping with up to 125 bytes of payload.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Sends an unsolicited pong (a unidirectional heartbeat, section 5.5.3).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    /// Starts the close handshake (RFC 6455 section 7.1.2) with a code and
    /// a reason of at most 123 bytes. Incoming messages are still delivered
    /// until the peer answers; [`Config::close_timeout`] bounds the wait.
    ///
    /// Closing twice is not an error: on a connection that is already
    /// [`Closing`](State::Closing) or [`Closed`](State::Closed) this returns
    /// `Ok(())`, sends nothing and changes nothing (the first close, or the
    /// way the connection ended, stands; see [`closed`](Self::closed)). The
    /// code and reason are checked first in every state, so an invalid
    /// code or a reason over 123 bytes is refused the same way whether or
    /// not the connection is still open.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Result<(), SendError> {
        let frame = CloseFrame::new(code, reason)?;
        if self.state != State::Open {
            return Ok(());
        }
        self.write_close(frame.code, frame.reason.as_bytes());
        self.state = State::Closing;
        self.close_deadline = Some(now + self.config.close_timeout);
        Ok(())
    }

    // ---- Outputs ------------------------------------------------------

    /// The next event for the application. Drain after every input, before
    /// [`poll_transmit`](Self::poll_transmit): received bytes are parsed here,
    /// one event at a time, so replies to what the application is handed
    /// (pongs, echoes, the close reply) are queued in the order of the frames
    /// that caused them.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        // Asked several times per message by a loop that drives the
        // connection, mostly with nothing to give: that answer is inlined
        // into the caller. Nothing queued, nothing to parse, no end of
        // stream, and the transport not to be closed (so no linger deadline
        // to arm): nothing to do.
        if self.events.is_empty()
            && self.recv.is_empty()
            && !self.eof_received
            && !self.transport_done
            && self.state != State::Closed
        {
            return None;
        }
        self.poll_event_slow()
    }

    #[inline(never)]
    fn poll_event_slow(&mut self) -> Option<Event> {
        if self.events.is_empty() {
            if let Some(taken) = self.take_small_message() {
                return match taken {
                    Ok(message) => Some(Event::Message(message)),
                    Err(error) => {
                        self.fail(error, self.last_received);
                        self.after_parse();
                        self.arm_linger(self.last_received);
                        self.events.pop_front()
                    }
                };
            }
            if !self.recv.is_empty() {
                self.parse_next();
            } else if self.eof_received {
                self.finish_eof();
            }
            // The time of the input that delivered what was just parsed.
            self.arm_linger(self.last_received);
        }
        self.events.pop_front()
    }

    /// The bytes to write to the transport, offered in place: fills `dst`
    /// with up to `dst.len()` slices, in order, and returns how many it
    /// filled (0 when nothing is pending). Write them (one vectored write
    /// carries them all), then call
    /// [`advance_transmit`](Self::advance_transmit) with the number of bytes
    /// the transport took; whatever it did not take is offered again next
    /// time. The output stays in the connection until then, so an adapter
    /// keeps no queue of its own, and the connection knows what is still
    /// unwritten (see [`output_abandoned`](Self::output_abandoned)).
    ///
    /// Output is batched: the frames queued since the last write sit
    /// together in as few slices as possible (usually one), and a large
    /// payload a server sends is offered as its own slice, never copied.
    /// A transport without vectored writes passes a one-element `dst` and
    /// writes the first slice.
    pub fn transmit_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.transmit_chunks()) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    /// The first of the chunks [`transmit_slices`](Self::transmit_slices)
    /// offers (empty when nothing is pending), and whether more follow it:
    /// output that is one chunk (the usual case) is written with one plain
    /// write, without filling an array of slices.
    pub fn transmit_front(&self) -> (&[u8], bool) {
        let t = &self.transmit;
        match t.queue.front() {
            None => (&t.buf, false),
            Some(first) => (first, t.queue.len() > 1 || !t.buf.is_empty()),
        }
    }

    /// The bytes to write to the transport, as the chunks that
    /// [`transmit_slices`](Self::transmit_slices) offers: for transports
    /// that write one buffer at a time, or to copy the output somewhere.
    /// Nothing is consumed until [`advance_transmit`](Self::advance_transmit).
    pub fn transmit_chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let t = &self.transmit;
        let buf = (!t.buf.is_empty()).then_some(&t.buf[..]);
        t.queue.iter().map(|chunk| &chunk[..]).chain(buf)
    }

    /// The bytes to write to the transport, as the chunks that
    /// [`transmit_slices`](Self::transmit_slices) offers but owned (shared
    /// with the connection, not copied): for transports whose writes own
    /// their buffers until they complete (io_uring). The small frames
    /// coalesced since the last call become a chunk of their own (later
    /// frames go after it). Nothing is consumed until
    /// [`advance_transmit`](Self::advance_transmit), as with
    /// `transmit_slices`: the transport gives back the chunks when its
    /// write completes and reports how much it took.
    pub fn transmit_owned(&mut self) -> impl Iterator<Item = Bytes> + '_ {
        let t = &mut self.transmit;
        if !t.buf.is_empty() {
            t.queue.push_back(t.buf.split().freeze());
        }
        t.queue.iter().cloned()
    }

    /// The transport took the first `n` bytes that
    /// [`transmit_slices`](Self::transmit_slices) offered (a partial write
    /// takes fewer than were offered); they are dropped from the output.
    /// `n` larger than [`pending_transmit`](Self::pending_transmit) is
    /// taken as all of it.
    pub fn advance_transmit(&mut self, n: usize) {
        if n > 0 {
            self.write_blocked_since = None;
        }
        let t = &mut self.transmit;
        let mut n = n.min(t.len);
        self.stats.wire_bytes_sent += n as u64;
        t.len -= n;
        if t.len == 0 && t.queue.is_empty() {
            // All of it, in one buffer (the common case): emptied from its
            // start, not stepped through.
            t.buf.clear();
            n = 0;
        }
        while n > 0 {
            if let Some(front) = t.queue.front_mut() {
                if n < front.len() {
                    front.advance(n);
                    return;
                }
                n -= front.len();
                t.queue.pop_front();
            } else {
                let take = n.min(t.buf.len());
                t.buf.advance(take);
                n -= take;
                if take == 0 {
                    break;
                }
            }
        }
        if t.len == 0 {
            // Written out: when recycling, the buffer goes to the thread's
            // next writer (a connection that only sends, while its receiving
            // side waits, holds none); otherwise it is reused from its start,
            // or given back if a burst made it large.
            if self.recycling && !t.lent {
                crate::spare::give_from(crate::spare::Kind::Send, &mut t.buf);
            } else {
                t.buf.clear();
                if t.buf.capacity() > IDLE_BUFFER_MAX {
                    t.buf = BytesMut::new();
                }
            }
        }
    }

    /// The next bytes to write to the transport, in order, taken out of the
    /// connection. Everything queued since the last call comes out in as
    /// few chunks as possible, so a burst of replies leaves in one write.
    ///
    /// Prefer [`transmit_slices`](Self::transmit_slices) and
    /// [`advance_transmit`](Self::advance_transmit): with this method the
    /// adapter holds what it took until it is written, and the connection
    /// cannot tell unwritten output from written (no linger deadline).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let chunk = match self.transmit.queue.pop_front() {
            Some(chunk) => chunk,
            None if !self.transmit.buf.is_empty() => self.transmit.buf.split().freeze(),
            None => {
                if self.transmit.buf.capacity() > IDLE_BUFFER_MAX {
                    self.transmit.buf = BytesMut::new();
                }
                return None;
            }
        };
        self.transmit.len -= chunk.len();
        self.stats.wire_bytes_sent += chunk.len() as u64;
        Some(chunk)
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout)
    /// has something to do, if any. Once the transport is to be closed, that
    /// is only the linger deadline while output is still unwritten (see
    /// [`output_abandoned`](Self::output_abandoned)); it may be `now` itself
    /// right after an idle or close timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.should_close_transport() {
            return self.linger_deadline();
        }
        // Asked at every turn of a driving loop: plain comparisons, no
        // iterator over the candidates.
        let closing = earliest(self.close_deadline, self.send_deadline());
        if self.state != State::Open {
            return closing;
        }
        earliest(closing, self.keepalive_deadline())
    }

    /// Whether the only deadline that runs is the keepalive's (the idle
    /// timeout and the ping interval): the connection is open, no close
    /// is under way, the transport is neither done nor at its end, and no
    /// output is blocked. That deadline only moves later (bytes received
    /// push it, a ping sent starts the wait for its answer no earlier), so
    /// while this holds, [`poll_timeout`](Self::poll_timeout) is no
    /// earlier than it was at any earlier call: a driving loop whose timer
    /// is armed at an earlier answer of `poll_timeout` need not ask it again
    /// at every wait, only once that timer fires (or this stops holding).
    /// It assumes that the times handed in never go back, as a monotonic
    /// clock's do.
    #[inline]
    pub fn deadline_moves_later_only(&self) -> bool {
        self.state == State::Open
            && self.close_deadline.is_none()
            && self.write_blocked_since.is_none()
            && !self.transport_done
            && !self.eof_received
    }

    /// The earlier of the idle and ping deadlines, asked at every wait: one
    /// addition while no ping of ours is newer than the last bytes
    /// received (both then count from those bytes), both otherwise.
    #[inline]
    fn keepalive_deadline(&self) -> Option<Instant> {
        match self.last_ping_sent {
            Some(sent) if sent > self.last_received => earliest(self.idle_deadline(), self.ping_deadline()),
            _ => {
                let idle = self.config.idle_timeout.filter(|t| !t.is_zero());
                let interval = self.config.ping_interval.filter(|i| !i.is_zero());
                let wait = match (idle, interval) {
                    (Some(idle), Some(interval)) => idle.min(interval),
                    (wait, None) | (None, wait) => wait?,
                };
                Some(self.last_received + wait)
            }
        }
    }

    /// Whether the adapter should close the transport once it has written
    /// everything [`transmit_slices`](Self::transmit_slices) offers
    /// (`pending_transmit() == 0`).
    ///
    /// A server closes the transport as soon as the connection is closed
    /// (RFC 6455 section 7.1.1); a client waits for the server to do it, for
    /// at most [`Config::close_timeout`].
    pub fn should_close_transport(&self) -> bool {
        self.transport_done || (self.state == State::Closed && (self.role == Role::Server || self.eof_received))
    }

    // ---- Getters ------------------------------------------------------

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Open, closing or closed.
    pub fn state(&self) -> State {
        self.state
    }

    /// How the connection ended: `Some` from the moment the state becomes
    /// [`Closed`](State::Closed), holding the same [`Closed`] that
    /// [`Event::Closed`] carries, so an adapter need keep no copy.
    ///
    /// Received bytes are parsed by [`poll_event`](Self::poll_event), so a
    /// close frame or a violation that just arrived is seen once the
    /// events before it are drained; a timeout or a command sets it at
    /// once. Events received before the end may still wait in
    /// `poll_event`; `Event::Closed` is the last of them.
    ///
    /// [`Closed::is_clean`] tells a completed close handshake from an error.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_deref()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The subprotocol the handshake settled on.
    pub fn subprotocol(&self) -> Option<&str> {
        self.negotiated.as_ref()?.subprotocol.as_deref()
    }

    /// The names of the negotiated extensions, in pipeline order.
    pub fn extensions(&self) -> impl Iterator<Item = &str> + '_ {
        self.extension_list().iter().map(|e| e.name())
    }

    /// The negotiated extensions with their parameters, as the server's
    /// answer agreed them, in pipeline order (those that keep their answer:
    /// see [`Extension::agreed`]).
    pub fn negotiated_extensions(&self) -> impl Iterator<Item = &crate::handshake::ExtensionOffer> + '_ {
        self.extension_list().iter().filter_map(|e| e.agreed())
    }

    /// The permessage-deflate parameters agreed, if it was negotiated.
    #[cfg(feature = "deflate")]
    pub fn deflate_params(&self) -> Option<crate::deflate::DeflateParams> {
        self.negotiated_extensions()
            .find(|e| e.name.eq_ignore_ascii_case(crate::deflate::EXTENSION_NAME))
            .and_then(|answer| crate::deflate::DeflateParams::from_answer(answer).ok())
    }

    /// What went through the connection so far: bytes on the wire and of
    /// payload, messages, each way.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Drops everything queued for the transport without counting it as
    /// sent: for an adapter whose transport failed.
    pub fn discard_transmit(&mut self) {
        let sent = self.stats.wire_bytes_sent;
        self.advance_transmit(usize::MAX);
        self.stats.wire_bytes_sent = sent;
    }

    /// Gives the memory of every buffer that holds nothing back to the
    /// allocator; the buffers are allocated again as traffic comes. Call it
    /// when the transport has nothing more to read for now (a read would
    /// block): an idle connection then holds no buffers at all. Between
    /// calls, buffers are reused, so calling it once per wait costs an
    /// allocation or two per wait, no more.
    ///
    /// An emptied buffer's allocation can live on unseen (behind a small
    /// room, shared with payloads already handed out), so the adapter
    /// cannot tell; this is the way to let go of it.
    pub fn shrink_buffers(&mut self) {
        self.release_buffers(false);
    }

    /// [`shrink_buffers`](Self::shrink_buffers), except that the empty
    /// receive and transmit buffers are kept by the calling thread (a few
    /// per thread, whatever the number of connections) for the next
    /// connection of the thread that reads ([`RecvBuf::reserve`]) or
    /// writes: an async shell calls it whenever it waits, and a message
    /// then costs no allocation of a read or write buffer. (Such a
    /// connection also receives a large frame into a buffer its thread
    /// keeps for them: see [`RecvBuf::reserve`].) Shells whose
    /// threads each run one connection (blocking) use `shrink_buffers`, or
    /// each thread would keep what its connection let go of.
    #[inline]
    pub fn recycle_buffers(&mut self) {
        // Asked at every wait, mostly with nothing to let go of (the
        // buffers went when they emptied): that answer is inlined.
        if self.holds_buffers_to_release() {
            self.release_buffers(true);
        }
    }

    /// Lends the connection `slot`'s buffer (empty, with room) for the
    /// frames it writes next, if it holds none: a driving loop that owns a
    /// send buffer and serves one connection at a time lends it for the
    /// connection's turn and takes it back with
    /// [`reclaim_send_buffer`](Self::reclaim_send_buffer) once all of it
    /// was written, so that an answer costs no buffer taken from the
    /// thread's cache and given back. `slot` keeps what the connection held
    /// (no room). Whether it was lent.
    ///
    /// Until `reclaim_send_buffer`, a send buffer written out is kept for
    /// the loop to take back, whichever it is (lent, or one the connection
    /// took from the thread's cache because `slot` was empty: the loop gets
    /// one back that way), instead of being let go of as
    /// [`set_buffer_recycling`](Self::set_buffer_recycling) has it.
    #[inline]
    pub fn lend_send_buffer(&mut self, slot: &mut BytesMut) -> bool {
        let t = &mut self.transmit;
        t.lent = true;
        if t.buf.capacity() == 0 && slot.capacity() != 0 && slot.is_empty() {
            std::mem::swap(&mut t.buf, slot);
            true
        } else {
            false
        }
    }

    /// Ends the turn [`lend_send_buffer`](Self::lend_send_buffer) began:
    /// takes the connection's send buffer into `slot` (which holds no
    /// room) if everything in it was written. A buffer that still holds
    /// output stays; so does one grown past what a waiting connection
    /// keeps, or one `slot` has no place for (they go as
    /// [`recycle_buffers`](Self::recycle_buffers) lets go of them).
    /// Whether it was taken.
    #[inline]
    pub fn reclaim_send_buffer(&mut self, slot: &mut BytesMut) -> bool {
        let t = &mut self.transmit;
        t.lent = false;
        if slot.capacity() == 0 && t.buf.is_empty() && (1..=IDLE_BUFFER_MAX).contains(&t.buf.capacity()) {
            std::mem::swap(&mut t.buf, slot);
            true
        } else {
            false
        }
    }

    /// Whether the buffers this connection lets go of on its own go to the
    /// thread's cache (as with [`recycle_buffers`](Self::recycle_buffers))
    /// rather than to the allocator: a receive buffer emptied by parsing,
    /// and a transmit buffer once written out, so that a connection the
    /// application does not poll for a while (it works on a message, or
    /// only sends) holds neither. Off by default; async shells, which run
    /// many connections per thread, turn it on.
    pub fn set_buffer_recycling(&mut self, on: bool) {
        self.recycling = on;
    }

    /// An emptied receive buffer: let go of when recycling (to the thread's
    /// cache, whatever its room: a small room left at the end of a large
    /// allocation shared with payloads handed out would otherwise hold all
    /// of it while the application does not poll), otherwise only if large
    /// (a small one is reused, not allocated again at every read).
    ///
    /// One with no room left was emptied by the last payload split off its
    /// end: it holds nothing the connection can use, but it still points
    /// into that payload's allocation, which it would keep alive, unseen,
    /// after the application dropped the payload (a whole large message,
    /// until the connection's next read). It is dropped.
    #[inline]
    fn let_go_of_emptied_recv(&mut self) {
        if !self.recv.is_empty() {
            return;
        }
        let room = self.recv.capacity();
        if room > IDLE_BUFFER_MAX || (self.recycling && room != 0) {
            if self.recycling {
                crate::spare::give_from(crate::spare::Kind::Recv, &mut self.recv);
            } else {
                self.recv = BytesMut::new();
            }
        } else if room == 0 {
            self.recv = BytesMut::new();
        }
    }

    /// Whether [`release_buffers`](Self::release_buffers) has anything to
    /// let go of: its own conditions, together.
    #[inline]
    fn holds_buffers_to_release(&self) -> bool {
        (self.recv.is_empty() && self.recv.capacity() != 0)
            || (self.events.rest.is_some() && self.events.is_empty())
            || (self.transmit.buf.is_empty() && self.transmit.buf.capacity() != 0)
            || (self.transmit.queue.is_empty() && self.transmit.queue.capacity() != 0)
    }

    #[inline(never)]
    fn release_buffers(&mut self, keep: bool) {
        // Only buffers that hold room are taken out: replacing an empty one
        // would drop it, a call per wait.
        if self.recv.is_empty() && self.recv.capacity() != 0 {
            if keep {
                crate::spare::give_from(crate::spare::Kind::Recv, &mut self.recv);
            } else {
                self.recv = BytesMut::new();
            }
        }
        // Only queues that hold an allocation are touched: dropping even an
        // empty `VecDeque` costs a call per wait.
        if self.events.is_empty() && self.events.rest.is_some() {
            self.events.rest = None;
        }
        if self.transmit.buf.is_empty() && self.transmit.buf.capacity() != 0 {
            if keep {
                crate::spare::give_from(crate::spare::Kind::Send, &mut self.transmit.buf);
            } else {
                self.transmit.buf = BytesMut::new();
            }
        }
        if self.transmit.queue.is_empty() && self.transmit.queue.capacity() != 0 {
            self.transmit.queue = VecDeque::new();
        }
    }

    /// Bytes queued for the transport and not yet written (consumed by
    /// [`advance_transmit`](Self::advance_transmit) or taken by
    /// [`poll_transmit`](Self::poll_transmit)). Adapters use it to apply
    /// backpressure before queueing more.
    pub fn pending_transmit(&self) -> usize {
        self.transmit.len
    }

    /// Whether output that was never written was given up: the transport
    /// was to be closed, but the peer did not take what was still queued
    /// (it stopped reading, or is gone). The send side should report the
    /// loss (nothing the application sent may vanish silently), and the
    /// adapter closes the transport at once.
    ///
    /// The rule, run by [`handle_timeout`](Self::handle_timeout) on the
    /// deadline [`poll_timeout`](Self::poll_timeout) announces: once
    /// [`should_close_transport`](Self::should_close_transport) turns true
    /// with output still pending,
    /// - after an idle, send or close timeout ([`CloseCause::IdleTimeout`],
    ///   [`CloseCause::SendTimeout`], [`CloseCause::CloseTimeout`]) the
    ///   output is given up at once: the
    ///   deadline is the time of the timeout, so the adapter makes one
    ///   attempt to write (the peer may still read the close frame) and
    ///   gives up what is left;
    /// - otherwise after [`Config::close_timeout`], counted from the input
    ///   that closed the connection (for received bytes, the time they
    ///   were handed in).
    ///
    /// Only output from [`transmit_slices`](Self::transmit_slices) counts:
    /// bytes already taken with [`poll_transmit`](Self::poll_transmit) are
    /// the adapter's own.
    pub fn output_abandoned(&self) -> bool {
        self.abandoned
    }

    // ---- Receiving ----------------------------------------------------

    /// Parses received bytes until they yield an event or run out.
    fn parse_next(&mut self) {
        // The time of the read that delivered these bytes.
        let now = self.last_received;
        if let Err(error) = self.process(now) {
            self.fail(error, now);
        }
        self.after_parse();
    }

    /// What follows parsing: an emptied receive buffer is let go of, and
    /// the end of the transport handled once every frame before it was.
    fn after_parse(&mut self) {
        // An emptied receive buffer of some size is let go of at once (to
        // the thread's next reader when recycling: see
        // `set_buffer_recycling`), so that a connection the application does
        // not poll for a while holds none.
        if self.state == State::Closed {
            self.recv = BytesMut::new();
        } else {
            self.let_go_of_emptied_recv();
        }
        if self.eof_received && self.events.is_empty() {
            // Nothing more can complete what is left of the buffer.
            self.finish_eof();
        }
    }

    /// The common case of [`process`](Self::process), taken without the
    /// event queue: an open connection between messages whose receive
    /// buffer starts with a whole unfragmented text or binary frame, not
    /// transformed, with a 7- or 16-bit length, masked as the role
    /// requires, within the limits and not to be streamed
    /// ([`small_message_at_front`](Self::small_message_at_front)). It is
    /// handed out at once (`Ok`), or `Err` if a text payload is not UTF-8
    /// (the frame was taken); `None` when anything else is to be done,
    /// which `process` then does from the same bytes.
    #[inline]
    fn take_small_message(&mut self) -> Option<Result<Message, ProtocolError>> {
        let frame = self.small_message_at_front()?;
        self.count_received(frame.len, true);
        let taken = split_small(&mut self.recv, frame);
        self.let_go_of_emptied_recv();
        Some(taken)
    }
}

/// Splits the small message `frame` off the front of `buf` (the receive
/// buffer, or the thread's buffer a read went into): unmasked, a text
/// validated.
#[inline(always)]
fn split_small(buf: &mut BytesMut, frame: SmallFrame) -> Result<Message, ProtocolError> {
    let SmallFrame {
        text,
        header_len,
        len,
        key,
    } = frame;
    // The header goes out with the payload and is stepped over in the
    // `Bytes` (a pointer bump): one split of the receive buffer.
    let mut frame = buf.split_to(header_len + len);
    if let Some(key) = key {
        apply_mask(&mut frame[header_len..], key, 0);
    }
    let mut payload = frame.freeze();
    payload.advance(header_len);
    if text {
        match utf8::validate(&payload) {
            Ok(()) => Ok(Message::Text(Utf8Bytes::from_validated(payload))),
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    } else {
        Ok(Message::Binary(payload))
    }
}

impl Connection {
    /// The frame [`take_small_message`](Self::take_small_message) and
    /// [`lend_message`](Self::lend_message) take, if the receive buffer
    /// starts with one.
    #[inline]
    fn small_message_at_front(&self) -> Option<SmallFrame> {
        self.small_message_in(&self.recv)
    }

    /// The whole small message `buf` (the receive buffer) starts with, if
    /// the connection may take it there.
    #[inline(always)]
    fn small_message_in(&self, buf: &[u8]) -> Option<SmallFrame> {
        // An empty buffer (the common case when asked before a read) first:
        // one compare, not the state and the limits.
        if buf.len() < 2 || !self.takes_small_messages() {
            return None;
        }
        small_frame(buf, self.role == Role::Server, self.small_message_max()?)
    }

    /// Whether the receive side is where a whole small message may be taken
    /// from the front of the buffer: open, between frames.
    #[inline(always)]
    fn takes_small_messages(&self) -> bool {
        self.state == State::Open && !self.transport_done && self.frame.is_none() && self.incoming.is_none()
    }

    /// The largest payload taken as a small message: within the frame and
    /// message limits, below the streaming threshold; `None` when every
    /// message is streamed.
    #[inline(always)]
    fn small_message_max(&self) -> Option<usize> {
        let mut max = self.config.max_frame_size.min(self.config.max_message_size);
        if let Some(threshold) = self.config.stream_threshold {
            max = max.min((threshold as u64).checked_sub(1)?);
        }
        Some(usize::try_from(max).unwrap_or(usize::MAX))
    }

    /// The next message lent in place: when nothing parsed is waiting and
    /// the receive buffer starts with a whole unfragmented text or binary
    /// message that no extension transformed, under 16 KiB (within the
    /// limits, not to be streamed; larger ones are handed out owned, so
    /// that an answer that forwards one can share its payload instead of
    /// copying it), `f` gets its
    /// payload where it arrived, unmasked and validated, with no copy and
    /// no allocation, and the connection's send side ([`Outbox`]) to
    /// answer with; the message is then consumed and `f`'s result
    /// returned. `None`, without calling `f`, in every other case: take the
    /// next event with [`poll_event`](Self::poll_event) then, as always (a
    /// message it returns can be lent to the same code with
    /// `MessageRef::from(&message)` and [`outbox`](Self::outbox)). A text
    /// payload that is not UTF-8 fails the connection as `poll_event`
    /// would: `None`, and the error is the next event.
    ///
    /// For a server's echo or request/response loop of small messages this
    /// removes the per-message `Bytes` (its reference count, taken and
    /// given back) and the `Message` moved to the application and back.
    pub fn lend_message<T>(&mut self, f: impl FnOnce(MessageRef<'_>, Outbox<'_>) -> T) -> Option<T> {
        let mut f = Some(f);
        let mut out = None;
        self.lend_messages(|message, outbox| {
            out = f.take().map(|f| f(message, outbox));
            ControlFlow::Break(())
        });
        out
    }

    /// Lends the message `frame` of `recv` at `at` to `f`: unmasks it,
    /// counts it, checks a text's UTF-8. Where it ends, and `f`'s result;
    /// `Err` with where it ends when its text is not UTF-8.
    #[inline(always)]
    fn lend_at<T>(
        &mut self,
        recv: &mut BytesMut,
        at: usize,
        frame: SmallFrame,
        f: impl FnOnce(MessageRef<'_>, Outbox<'_>) -> T,
    ) -> Result<(usize, T), usize> {
        let start = at + frame.header_len;
        let end = start + frame.len;
        if let Some(key) = frame.key {
            apply_mask(&mut recv[start..end], key, 0);
        }
        self.count_received(frame.len, true);
        let payload = &recv[start..end];
        let message = if frame.text {
            MessageRef::Text(utf8::to_str(payload).map_err(|_| end)?)
        } else {
            MessageRef::Binary(payload)
        };
        Ok((end, f(message, Outbox { conn: self })))
    }

    /// Puts the receive buffer lent back, stepped over the `end` bytes
    /// lent; fails the connection if the last message's text was not UTF-8.
    #[inline(always)]
    fn end_lending(&mut self, recv: BytesMut, end: usize, invalid: bool) {
        debug_assert!(self.recv.capacity() == 0, "the receive buffer was used while lent");
        self.recv = recv;
        if end == self.recv.len() {
            // All of it lent and nothing of it kept (the messages were
            // borrowed): emptied from its start, so that the room is used
            // again from there, not stepped over.
            self.recv.clear();
        } else {
            self.recv.advance(end);
        }
        self.let_go_of_emptied_recv();
        if invalid {
            self.fail_lent_text();
        }
    }

    /// A text lent in place was not UTF-8: the connection fails as
    /// `poll_event` would have it.
    #[cold]
    #[inline(never)]
    fn fail_lent_text(&mut self) {
        self.fail(ProtocolError::InvalidUtf8, self.last_received);
        self.after_parse();
        self.arm_linger(self.last_received);
    }

    /// Every message [`lend_message`](Self::lend_message) would lend, one
    /// after the other, while `f` returns [`ControlFlow::Continue`]: the
    /// messages of one read in one call (uWebSockets' message callback),
    /// the receive buffer stepped over all of them at once at the end.
    /// Returns how many were lent. Stops at the first message that cannot
    /// be lent in place (a large, fragmented or compressed one, a control
    /// frame, an incomplete frame): [`poll_event`](Self::poll_event) takes
    /// it, as always. A text payload that is not UTF-8 fails the connection
    /// as `poll_event` would, and the error is the next event.
    #[inline(always)]
    pub fn lend_messages(&mut self, mut f: impl FnMut(MessageRef<'_>, Outbox<'_>) -> ControlFlow<()>) -> usize {
        let Some(first) = self.first_lendable(&self.recv) else {
            return 0;
        };
        // While `f` runs the receive buffer is out of the connection, so
        // that `f` may send (the send side never touches it).
        let mut recv = std::mem::take(&mut self.recv);
        let Lendable { frame, max, masked } = first;
        let (lent, end, invalid) = self.lend_loop(&mut recv, 0, frame, max, masked, &mut f);
        self.end_lending(recv, end, invalid);
        lent
    }

    /// The first message [`lend_messages`](Self::lend_messages) would lend
    /// from `buf`, if any, with the limits of the ones after it.
    #[inline(always)]
    fn first_lendable(&self, buf: &[u8]) -> Option<Lendable> {
        // Asked before every read too, mostly with nothing in the buffer:
        // that answer is one compare, not the state and the limits.
        if buf.len() < 2 || !self.events.is_empty() || !self.takes_small_messages() {
            return None;
        }
        let max = self.small_message_max()?.min(ZERO_COPY_MIN - 1);
        let masked = self.role == Role::Server;
        let frame = small_frame(buf, masked, max)?;
        Some(Lendable { frame, max, masked })
    }

    /// Lends the messages of `recv` from its start, `first` the first of
    /// them, while `f` continues and the connection is open: how many,
    /// where the last one lent ends, and whether that one was a text that
    /// is not UTF-8 (the connection is then to fail). The first is lent
    /// here, inlined into the caller (a read of one request, the common
    /// case, goes no further); the others, in a loop of its own.
    #[inline(always)]
    fn lend_run(
        &mut self,
        recv: &mut BytesMut,
        first: Lendable,
        mut f: impl FnMut(MessageRef<'_>, Outbox<'_>) -> ControlFlow<()>,
    ) -> (usize, usize, bool) {
        let Lendable { frame, max, masked } = first;
        match self.lend_at(recv, 0, frame, &mut f) {
            Ok((end, flow)) => {
                if flow.is_break() || self.state != State::Open {
                    return (1, end, false);
                }
                match small_frame(&recv[end..], masked, max) {
                    None => (1, end, false),
                    Some(next) => {
                        let (lent, end, invalid) = self.lend_more(recv, end, next, max, masked, &mut f);
                        (1 + lent, end, invalid)
                    }
                }
            }
            Err(end) => (0, end, true),
        }
    }

    /// The messages [`lend_run`](Self::lend_run) lends after the first,
    /// from `at`, `frame` the first of them.
    #[inline(never)]
    fn lend_more(
        &mut self,
        recv: &mut BytesMut,
        at: usize,
        frame: SmallFrame,
        max: usize,
        masked: bool,
        f: impl FnMut(MessageRef<'_>, Outbox<'_>) -> ControlFlow<()>,
    ) -> (usize, usize, bool) {
        self.lend_loop(recv, at, frame, max, masked, f)
    }

    /// Lends the messages of `recv` from `at`, `frame` the first of them,
    /// while `f` continues and the connection is open: how many, where the
    /// last one lent ends, and whether that one was a text that is not
    /// UTF-8 (the connection is then to fail).
    #[inline(always)]
    fn lend_loop(
        &mut self,
        recv: &mut BytesMut,
        mut at: usize,
        frame: SmallFrame,
        max: usize,
        masked: bool,
        mut f: impl FnMut(MessageRef<'_>, Outbox<'_>) -> ControlFlow<()>,
    ) -> (usize, usize, bool) {
        let mut next = Some(frame);
        let mut lent = 0;
        while let Some(frame) = next {
            match self.lend_at(recv, at, frame, &mut f) {
                Ok((end, flow)) => {
                    at = end;
                    lent += 1;
                    if flow.is_break() || self.state != State::Open {
                        break;
                    }
                }
                Err(end) => return (lent, end, true),
            }
            next = small_frame(&recv[at..], masked, max);
        }
        (lent, at, false)
    }

    /// The transport ended and every frame before the end was handled.
    fn finish_eof(&mut self) {
        if self.state != State::Closed {
            self.set_closed(CloseCode::ABNORMAL, String::new(), CloseCause::Abnormal);
        }
        self.recv = BytesMut::new();
        self.close_deadline = None;
    }

    /// Parses and handles every complete frame (and every available payload
    /// byte of a data frame) in the receive buffer.
    fn process(&mut self, now: Instant) -> Result<(), ProtocolError> {
        while self.state != State::Closed && self.events.is_empty() {
            if let Some(FrameIn::Whole(whole)) = &mut self.frame {
                let available = self.recv.len().min(whole.len);
                if available > whole.done {
                    let new = &mut self.recv[whole.done..available];
                    if let Some(key) = whole.header.mask {
                        apply_mask(new, key, whole.done % 4);
                    }
                    if whole.header.opcode == OpCode::Text {
                        whole.utf8.feed(new).map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                    whole.done = available;
                }
                if available < whole.len {
                    return Ok(());
                }
                let text = whole.header.opcode == OpCode::Text;
                if text {
                    whole.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                let payload = self.recv.split_to(whole.len).freeze();
                self.frame = None;
                self.count_received(payload.len(), true);
                let message = if text {
                    Message::Text(Utf8Bytes::from_validated(payload))
                } else {
                    Message::Binary(payload)
                };
                self.events.push_back(Event::Message(message));
                continue;
            }
            // (A whole frame was handled above: it goes on or returns.)
            let Some(FrameIn::Partial(frame)) = &mut self.frame else {
                let Some((header, header_len)) = FrameHeader::parse(&self.recv)? else {
                    return Ok(());
                };
                self.check_header(&header)?;
                if header.opcode.is_control() {
                    let total = header_len + header.payload_len as usize;
                    if self.recv.len() < total {
                        return Ok(());
                    }
                    self.recv.advance(header_len);
                    let mut payload = self.recv.split_to(header.payload_len as usize);
                    if let Some(key) = header.mask {
                        apply_mask(&mut payload, key, 0);
                    }
                    self.handle_control(header.opcode, payload.freeze(), now)?;
                    continue;
                }
                self.recv.advance(header_len);
                if self.try_fast_path(&header)? {
                    continue;
                }
                if let Some(len) = self.accumulates(&header) {
                    self.frame = Some(FrameIn::Whole(WholeFrame {
                        header,
                        len,
                        done: 0,
                        utf8: Utf8Validator::new(),
                    }));
                    continue;
                }
                self.start_data_frame(header)?;
                continue;
            };
            let take = frame.remaining.min(self.recv.len() as u64) as usize;
            if take == 0 && frame.remaining > 0 {
                return Ok(());
            }
            let mut piece = self.recv.split_to(take);
            if let Some(key) = frame.header.mask {
                apply_mask(&mut piece, key, (frame.offset % 4) as usize);
            }
            frame.offset += take as u64;
            frame.remaining -= take as u64;
            let frame_done = frame.remaining == 0;
            let message_done = frame_done && frame.header.fin;
            if frame_done {
                self.frame = None;
            }
            self.absorb(piece, message_done)?;
        }
        Ok(())
    }

    /// Checks a header against the connection's state (RFC 6455 sections 5.1,
    /// 5.2, 5.4) and limits.
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        // RSV bits are for extensions, and only on the first frame of a data
        // message (RFC 7692 section 6.1 for permessage-deflate).
        let first_data_frame = matches!(header.opcode, OpCode::Text | OpCode::Binary);
        let allowed = if first_data_frame { self.extension_rsv } else { 0 };
        if header.rsv & !allowed != 0 {
            return Err(ProtocolError::ReservedBits(header.rsv));
        }
        match (header.opcode, &self.incoming) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            _ => {}
        }
        if !header.opcode.is_control() {
            if header.payload_len > self.config.max_frame_size {
                return Err(ProtocolError::FrameTooLarge {
                    size: header.payload_len,
                    limit: self.config.max_frame_size,
                });
            }
            // Untransformed payloads count towards the message size as they
            // are announced; transformed ones as they are decoded.
            let transformed = self.incoming.as_ref().map_or(header.rsv != 0, |m| m.rsv != 0);
            let so_far = self.incoming.as_ref().map_or(0, |m| m.len);
            if !transformed && so_far + header.payload_len > self.config.max_message_size {
                return Err(ProtocolError::MessageTooLarge {
                    limit: self.config.max_message_size,
                });
            }
        }
        Ok(())
    }

    /// A whole single-frame, untransformed message already in the buffer is
    /// unmasked in place and delivered without a copy.
    /// Whether a data frame that is not all here yet waits in the receive
    /// buffer until it is (see [`WholeFrame`]): a whole message in one frame,
    /// not transformed by an extension, not to be streamed. Returns its length.
    fn accumulates(&self, header: &FrameHeader) -> Option<usize> {
        let len = usize::try_from(header.payload_len).ok()?;
        let streams = self.config.stream_threshold.is_some_and(|t| len >= t);
        (self.incoming.is_none() && header.fin && header.rsv == 0 && !streams).then_some(len)
    }

    /// A whole message in one frame, all of it here: taken in one go.
    fn try_fast_path(&mut self, header: &FrameHeader) -> Result<bool, ProtocolError> {
        let Some(len) = self.accumulates(header).filter(|&len| self.recv.len() >= len) else {
            return Ok(false);
        };
        let mut payload = self.recv.split_to(len);
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        let payload = payload.freeze();
        let message = if header.opcode == OpCode::Text {
            utf8::validate(&payload).map_err(|_| ProtocolError::InvalidUtf8)?;
            Message::Text(Utf8Bytes::from_validated(payload))
        } else {
            Message::Binary(payload)
        };
        self.count_received(message.len(), true);
        self.events.push_back(Event::Message(message));
        Ok(true)
    }

    fn start_data_frame(&mut self, header: FrameHeader) -> Result<(), ProtocolError> {
        if self.incoming.is_none() {
            let kind = if header.opcode == OpCode::Text {
                DataKind::Text
            } else {
                DataKind::Binary
            };
            // Boxed: most messages never need it, and every connection
            // would carry its room.
            self.incoming = Some(Box::new(Incoming {
                kind,
                rsv: header.rsv,
                buf: BytesMut::new(),
                utf8: Utf8Validator::new(),
                len: 0,
                streaming: self.config.stream_threshold == Some(0),
                started: false,
            }));
        }
        let empty_final = header.payload_len == 0;
        let fin = header.fin;
        self.frame = Some(FrameIn::Partial(PartialFrame {
            header,
            remaining: header.payload_len,
            offset: 0,
        }));
        if empty_final {
            // No payload will come to drive `absorb`: end the frame here.
            self.frame = None;
            self.absorb(BytesMut::new(), fin)?;
        }
        Ok(())
    }

    /// Adds a piece of payload to the message being received: decodes it,
    /// validates UTF-8 as early as possible, enforces the size limit, and
    /// delivers it (streaming) or the whole message (at its end).
    fn absorb(&mut self, piece: BytesMut, message_done: bool) -> Result<(), ProtocolError> {
        let Some(msg) = &mut self.incoming else {
            return Ok(());
        };
        let before = msg.buf.len();
        let mut decode_error = None;
        if msg.rsv == 0 {
            if msg.buf.is_empty() {
                msg.buf = piece;
            } else {
                msg.buf.extend_from_slice(&piece);
            }
        } else {
            let limit = self.config.max_message_size.saturating_sub(msg.len);
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let extensions = self.negotiated.as_mut().map_or(&mut [][..], |n| &mut n.extensions[..]);
            if let Err(e) = decode_pipeline(extensions, msg.rsv, &piece, message_done, &mut msg.buf, limit) {
                decode_error = Some(match e {
                    DecodeError::TooLarge => ProtocolError::MessageTooLarge {
                        limit: self.config.max_message_size,
                    },
                    DecodeError::Invalid(msg) => ProtocolError::Extension(msg),
                });
            }
        }
        let added = msg.buf.len() - before;
        msg.len += added as u64;
        // Text decoded before a decoding error is checked first: errors come
        // in the order of the decoded bytes, whatever the split of the input.
        if msg.kind == DataKind::Text {
            msg.utf8
                .feed(&msg.buf[before..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if let Some(error) = decode_error {
            return Err(error);
        }
        if msg.len > self.config.max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                limit: self.config.max_message_size,
            });
        }
        if msg.kind == DataKind::Text && message_done {
            msg.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if !msg.streaming && self.config.stream_threshold.is_some_and(|t| msg.buf.len() >= t) {
            msg.streaming = true;
        }
        if msg.streaming {
            // Hold back an incomplete code point: each text piece is valid.
            let ready = msg.buf.len() - msg.utf8.pending();
            if ready > 0 || message_done {
                let data = msg.buf.split_to(ready).freeze();
                let first = !msg.started;
                msg.started = true;
                self.stats.payload_bytes_received += data.len() as u64;
                self.stats.messages_received += u64::from(message_done);
                self.events.push_back(Event::Fragment(Fragment::from_connection(
                    msg.kind,
                    data,
                    first,
                    message_done,
                )));
            }
        }
        if message_done {
            if let Some(msg) = self.incoming.take() {
                if !msg.streaming {
                    let msg = *msg;
                    let payload = msg.buf.freeze();
                    self.count_received(payload.len(), true);
                    self.events.push_back(Event::Message(match msg.kind {
                        // Validated piece by piece above.
                        DataKind::Text => Message::Text(Utf8Bytes::from_validated(payload)),
                        DataKind::Binary => Message::Binary(payload),
                    }));
                }
            }
        }
        Ok(())
    }

    fn handle_control(&mut self, opcode: OpCode, payload: Bytes, now: Instant) -> Result<(), ProtocolError> {
        match opcode {
            OpCode::Ping => {
                // No pong after our close frame (section 5.5.1).
                if self.config.auto_pong && self.state == State::Open {
                    self.write_frame(OpCode::Pong, true, 0, &payload);
                }
                self.events.push_back(Event::Ping(payload));
            }
            OpCode::Pong => self.events.push_back(Event::Pong(payload)),
            OpCode::Close => {
                let frame = CloseFrame::parse(&payload)?;
                let (code, reason) = match frame {
                    Some(frame) => (frame.code, frame.reason),
                    None => (CloseCode::NO_STATUS, String::new()),
                };
                let cause = if self.state == State::Open {
                    // Answer at once (section 5.5.1), as Config::close_reply
                    // says: by default the code and reason we received, or
                    // 1000 when the peer sent no code.
                    match self.config.close_reply.clone() {
                        CloseReply::Frame(answer) => {
                            let answer_code = if answer.code.is_sendable() {
                                answer.code
                            } else {
                                CloseCode::NORMAL
                            };
                            let mut answer_reason = answer.reason;
                            truncate_utf8(&mut answer_reason, MAX_REASON_LEN);
                            self.write_close(answer_code, answer_reason.as_bytes());
                        }
                        _ if code == CloseCode::NO_STATUS => self.write_close(CloseCode::NORMAL, b""),
                        _ => self.write_close(code, reason.as_bytes()),
                    }
                    CloseCause::Remote
                } else {
                    CloseCause::Local
                };
                self.set_closed(code, reason, cause);
                if self.role == Role::Client {
                    // Wait for the server to close the transport (7.1.1).
                    self.close_deadline = Some(now + self.config.close_timeout);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Fails the connection (RFC 6455 section 7.1.7): sends a close frame with
    /// the error's code unless one was sent, and discards further input.
    fn fail(&mut self, error: ProtocolError, now: Instant) {
        let code = error.close_code();
        let mut reason = error.to_string();
        truncate_utf8(&mut reason, MAX_REASON_LEN);
        if self.state == State::Open {
            self.write_close(code, reason.as_bytes());
        }
        self.frame = None;
        self.incoming = None;
        self.set_closed(code, reason, CloseCause::Protocol(error));
        if self.role == Role::Client {
            self.close_deadline = Some(now + self.config.close_timeout);
        }
    }

    fn set_closed(&mut self, code: CloseCode, reason: String, cause: CloseCause) {
        self.state = State::Closed;
        self.outgoing = None;
        self.close_deadline = None;
        self.recv = BytesMut::new();
        let closed = Closed { code, reason, cause };
        self.closed = Some(Box::new(closed.clone()));
        self.events.push_back(Event::Closed(closed));
    }

    /// Starts the linger of unwritten output the first time the transport
    /// is to be closed (see [`Connection::output_abandoned`]).
    fn arm_linger(&mut self, now: Instant) {
        if self.linger.is_some() || !self.should_close_transport() {
            return;
        }
        let timed_out = matches!(
            self.closed.as_deref().map(|c| &c.cause),
            Some(CloseCause::IdleTimeout | CloseCause::CloseTimeout | CloseCause::SendTimeout)
        );
        self.linger = Some(if timed_out {
            now
        } else {
            now + self.config.close_timeout
        });
    }

    /// The linger deadline, while there is output it would give up.
    fn linger_deadline(&self) -> Option<Instant> {
        self.linger.filter(|_| self.transmit.len > 0 && !self.abandoned)
    }

    /// Gives up the unwritten output (the peer does not read it).
    fn count_received(&mut self, payload: usize, message_done: bool) {
        self.stats.payload_bytes_received += payload as u64;
        self.stats.messages_received += u64::from(message_done);
    }

    fn abandon_output(&mut self) {
        self.transmit = Transmit::default();
        self.abandoned = true;
    }

    /// `Some(Duration::ZERO)` is off, as `None` (see [`Config::idle_timeout`]).
    fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.config.idle_timeout.filter(|t| !t.is_zero())?;
        Some(self.last_received + timeout)
    }

    /// Output offered and not taken since `write_blocked_since`; `Some(ZERO)`
    /// is off, as `None` (see [`Config::send_timeout`]).
    fn send_deadline(&self) -> Option<Instant> {
        let timeout = self.config.send_timeout.filter(|t| !t.is_zero())?;
        let since = self.write_blocked_since.filter(|_| self.transmit.len > 0)?;
        Some(since + timeout)
    }

    /// `Some(Duration::ZERO)` is off, as `None` (see [`Config::ping_interval`]).
    fn ping_deadline(&self) -> Option<Instant> {
        let interval = self.config.ping_interval.filter(|i| !i.is_zero())?;
        let since = match self.last_ping_sent {
            Some(sent) if sent > self.last_received => sent,
            _ => self.last_received,
        };
        Some(since + interval)
    }

    // ---- Sending ------------------------------------------------------

    fn check_can_send(&self) -> Result<(), SendError> {
        match self.state {
            State::Open => Ok(()),
            State::Closing | State::Closed => Err(SendError::Closed),
        }
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        self.check_can_send()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlFrameTooLong(payload.len()));
        }
        self.write_frame(opcode, true, 0, payload);
        Ok(())
    }

    fn write_close(&mut self, code: CloseCode, reason: &[u8]) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        payload[..2].copy_from_slice(&code.as_u16().to_be_bytes());
        let len = 2 + reason.len().min(MAX_REASON_LEN);
        payload[2..len].copy_from_slice(&reason[..len - 2]);
        self.write_frame(OpCode::Close, true, 0, &payload[..len]);
    }

    /// Queues a frame whose payload the caller owns as `Bytes`: a large
    /// unmasked payload is queued without copying.
    #[inline]
    fn write_frame_bytes(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Bytes) {
        if self.role == Role::Server && payload.len() >= ZERO_COPY_MIN {
            self.write_header(opcode, fin, rsv, payload.len(), None, 0);
            let t = &mut self.transmit;
            if !t.buf.is_empty() {
                t.queue.push_back(t.buf.split().freeze());
            }
            t.len += payload.len();
            t.queue.push_back(payload);
        } else {
            self.write_frame(opcode, fin, rsv, &payload);
        }
    }

    /// Queues a server's frame of at most 125 bytes: its two header bytes
    /// (`b0` the first: FIN, RSV and opcode) and the payload, copied. The
    /// short messages of `send_with`'s inlined front; everything else goes
    /// through `write_frame_bytes`.
    #[inline(always)]
    fn write_short_server_frame(&mut self, b0: u8, payload: &[u8]) {
        debug_assert!(payload.len() < 126 && self.role == Role::Server);
        let n = 2 + payload.len();
        let t = &mut self.transmit;
        if t.buf.capacity() == 0 {
            t.take_buffer(n);
        }
        t.buf.reserve(n);
        let len = t.buf.len();
        let to = t.buf.spare_capacity_mut();
        assert!(to.len() >= n);
        let to = to.as_mut_ptr().cast::<u8>();
        // SAFETY: `to` has room for `n` bytes (reserved and checked above),
        // which are written (the two header bytes, then the payload, which
        // cannot overlap our buffer's spare room) before the length covers
        // them.
        unsafe {
            to.write(b0);
            to.add(1).write(payload.len() as u8);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), to.add(2), payload.len());
            t.buf.set_len(len + n);
        }
        t.len += n;
    }

    /// Queues a frame, copying (and for a client, masking) the payload.
    #[inline(always)]
    fn write_frame(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: &[u8]) {
        let mask = match (&mut self.random, self.role) {
            (Some(random), Role::Client) => {
                let mut key = [0u8; 4];
                random.fill_bytes(&mut key);
                Some(key)
            }
            _ => None,
        };
        self.write_header(opcode, fin, rsv, payload.len(), mask, payload.len());
        let t = &mut self.transmit;
        let start = t.buf.len();
        t.buf.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut t.buf[start..], key, 0);
        }
        t.len += payload.len();
    }

    /// Writes a frame header, with room for the `copied` payload bytes that
    /// follow it in the same buffer.
    #[inline(always)]
    fn write_header(&mut self, opcode: OpCode, fin: bool, rsv: u8, len: usize, mask: Option<[u8; 4]>, copied: usize) {
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: len as u64,
        };
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut bytes);
        let t = &mut self.transmit;
        if t.buf.capacity() == 0 {
            t.take_buffer(n + copied);
        }
        t.buf.reserve(n + copied);
        t.buf.extend_from_slice(&bytes[..n]);
        t.len += n;
    }
}

/// How much of a frame the receive buffer must hold before
/// [`RecvBuf::reserve`] grows it to the rest of that frame at once.
const FRAME_ROOM_AFTER: usize = 32 * 1024;

/// The most [`RecvBuf::reserve`] grows the receive buffer by at once for
/// the rest of a frame (a larger frame grows further as it arrives).
const MAX_FRAME_ROOM: usize = 1 << 20;

/// The most one read into the receive buffer takes ([`RecvBuf`]'s
/// `chunk_mut`), however much room the rest of a large frame has: what a
/// read brings is unmasked (and validated) right after it, and a read of
/// this size leaves it in the processor's cache for that, where a read of a
/// whole 1 MiB frame passes it through memory first. Measured on the echo
/// benchmark at 1 MiB (benches/README.md, nineteenth pass): 256 KiB reads
/// cost 7-8 % less CPU per message than reads of up to 1 MiB, user and
/// system time both; 64 KiB reads cost more (four times the calls).
pub(crate) const MAX_READ: usize = 256 * 1024;

/// The receive buffer of a [`Connection`], lent for appending: see
/// [`Connection::recv_buffer_mut`]. It implements [`BufMut`] (write with
/// `put_slice`, or read a socket into [`chunk_mut`](BufMut::chunk_mut) and
/// [`advance_mut`](BufMut::advance_mut)); nothing already in the buffer
/// can be changed through it.
#[derive(Debug)]
pub struct RecvBuf<'a> {
    buf: &'a mut BytesMut,
    frame_rest: usize,
    /// The most one read takes (`chunk_mut`'s length): [`MAX_READ`], or
    /// the read size [`reserve_read`](Self::reserve_read) was asked for if
    /// that is more.
    read_max: usize,
    /// Whether a large frame may grow the buffer into one of the thread's
    /// large buffers (`spare::grow_large`): the connection recycles its
    /// buffers ([`Connection::set_buffer_recycling`]), as connections that
    /// share a thread do.
    large: bool,
}

impl<'a> From<&'a mut BytesMut> for RecvBuf<'a> {
    /// An append-only view of a buffer of the caller's: for reads that go
    /// through the same runtime call before a connection exists (the
    /// opening handshake).
    fn from(buf: &'a mut BytesMut) -> Self {
        Self::new(buf)
    }
}

impl<'a> RecvBuf<'a> {
    #[inline]
    fn new(buf: &'a mut BytesMut) -> Self {
        Self {
            buf,
            frame_rest: 0,
            read_max: MAX_READ,
            large: false,
        }
    }
}

impl RecvBuf<'_> {
    /// Makes room for at least `additional` more bytes without another
    /// allocation: an empty buffer without room takes one the thread kept
    /// ([`Connection::recycle_buffers`]) if it has one.
    ///
    /// When the buffer must grow while a large unfragmented frame arrives
    /// (32 KiB of it held, more announced: see
    /// [`frame_rest`](Self::frame_rest)), it grows to hold the rest of that
    /// frame at once, up to 1 MiB more: growing by doubling would copy what
    /// arrived at every step (a 1 MiB message about 1 MiB more). A peer
    /// must have sent 32 KiB for the buffer to take more than twice what it
    /// sent, and then at most 1 MiB more; the frame's length was checked
    /// against the connection's message limit. A connection that recycles
    /// its buffers ([`Connection::set_buffer_recycling`]) makes that room,
    /// when the rest of the frame fits in it, in one of the buffers its
    /// thread keeps for large frames (each of at most 2 MiB, 4 MiB in all)
    /// that nothing else uses: the next large frame then costs no
    /// allocation, and no page of it is faulted in again.
    pub fn reserve(&mut self, additional: usize) {
        if self.buf.capacity() == 0
            && crate::spare::take_into(crate::spare::Kind::Recv, additional, additional, self.buf)
        {
            return;
        }
        if self.spare_capacity() >= additional {
            return;
        }
        let additional = if self.buf.len() >= FRAME_ROOM_AFTER {
            additional.max(self.frame_rest.min(MAX_FRAME_ROOM))
        } else {
            additional
        };
        // Room for the whole rest of the frame, which ends there: in one of
        // the thread's large buffers if one is free (no allocation, no page
        // to fault in again).
        if self.large
            && self.buf.len() >= FRAME_ROOM_AFTER
            && additional == self.frame_rest
            && crate::spare::grow_large(self.buf, self.buf.len() + additional)
        {
            return;
        }
        self.buf.reserve(additional);
    }

    /// Makes room for a read of a buffer of `size` bytes, but only when
    /// less than `min` is free: the way a driving loop reserves before each
    /// read. A buffer with no room (let go of while the connection waited)
    /// first takes one the thread kept: as it is if at least half of
    /// `size` (and `min`) is free, otherwise rewound to hold `size`;
    /// failing that, as [`reserve`](Self::reserve) does with `size`. Reads
    /// then go on into the room that is left, whichever connection of the
    /// thread the buffer serves, and the buffer is rewound only when it
    /// runs low, not at every wait.
    ///
    /// While a large frame accumulates (32 KiB of it held, as for
    /// [`reserve`](Self::reserve)), room for the rest of it is enough,
    /// however little that is: a read then brings the frame's last bytes
    /// into the room made for them, where making room for a whole read
    /// would grow the buffer (doubling it, and copying all that arrived: a
    /// 1 MiB message whose last few KiB arrive in a read of their own
    /// would cost a 2 MiB allocation and a 1 MiB copy).
    #[inline]
    pub fn reserve_read(&mut self, min: usize, size: usize) {
        self.read_max = size.max(MAX_READ);
        let min = min.min(size);
        let spare = self.spare_capacity();
        if spare >= min || (self.frame_rest != 0 && spare >= self.frame_rest && self.buf.len() >= FRAME_ROOM_AFTER) {
            return;
        }
        if self.buf.capacity() == 0
            && crate::spare::take_into(crate::spare::Kind::Recv, kept_room(min, size), size, self.buf)
        {
            return;
        }
        self.reserve(size);
    }

    /// The bytes still to come of the frame being received, when its
    /// header is parsed and its payload accumulates in this buffer (an
    /// unfragmented message, not streamed): room a read may reserve at
    /// once instead of growing the buffer step by step, each step copying
    /// what arrived so far. 0 when unknown. Its length was checked against
    /// the connection's limits, but it is only the peer's word: reserve it
    /// when the peer is sending, and bound it.
    pub fn frame_rest(&self) -> usize {
        self.frame_rest
    }

    /// The room left before the buffer must grow: what one read can fill
    /// without an allocation.
    pub fn spare_capacity(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// Bytes in the buffer, received and not yet consumed.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// `len` bytes of room after the bytes held (reserved as
    /// [`reserve`](Self::reserve) does), lent as an empty buffer of its
    /// own with exactly that capacity, so that a read into it takes at most
    /// `len` bytes: for a read that owns its buffer until it completes later (a
    /// completion-based transport such as io_uring), reading straight into
    /// the receive buffer instead of into a buffer of its own and copying.
    /// Give it back with what was read in it to
    /// [`unsplit_room`](Self::unsplit_room). Meanwhile the receive buffer
    /// has no room: bytes appended to it in the meantime move it, and the
    /// room's bytes are then copied after them when they come back.
    pub fn split_room(&mut self, len: usize) -> BytesMut {
        self.reserve(len);
        let mut room = self.buf.split_off(self.buf.len());
        // Whatever room is left beyond `len` is not lent (the buffer gets it
        // back when it next grows and nothing else points into it).
        drop(room.split_off(len));
        room
    }

    /// Appends the bytes read into a room lent by
    /// [`split_room`](Self::split_room): without a copy when the room still
    /// follows the buffer's bytes (nothing was appended meanwhile),
    /// otherwise copied. Only the room's own bytes are taken: it cannot
    /// reach what the buffer held before.
    pub fn unsplit_room(&mut self, room: BytesMut) {
        self.buf.unsplit(room);
    }
}

// SAFETY: every method forwards to `BytesMut`'s own `BufMut`
// implementation, whose contract it therefore keeps: `chunk_mut` is the
// uninitialised room after the bytes already held, and `advance_mut(cnt)`
// (whose caller promises that `cnt` bytes of that room were initialised)
// extends the buffer by them. Nothing here reaches the bytes before the
// end, which is the point of the type.
unsafe impl BufMut for RecvBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.buf.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise (`cnt` bytes of `chunk_mut`
        // initialised) is passed on unchanged.
        unsafe { self.buf.advance_mut(cnt) }
    }

    /// The room a read may fill: all that is free, up to 256 KiB or the
    /// read size asked of
    /// [`reserve_read`](RecvBuf::reserve_read) if larger (the rest of a
    /// large frame may have much more room made for it: it then arrives in
    /// reads of that size).
    #[inline]
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        let room = self.buf.chunk_mut();
        let len = room.len().min(self.read_max);
        &mut room[..len]
    }

    fn put_slice(&mut self, src: &[u8]) {
        // Grown as `reserve` grows it (to the rest of a large frame).
        self.reserve(src.len());
        self.buf.extend_from_slice(src);
    }
}

/// The room a buffer the thread kept must have free to be read into as it
/// is (not rewound to its start) by a connection that reads from nothing:
/// half the read size, and at least `min`. Less would split the next frame
/// of a run of large messages (16 KiB each into a 64 KiB buffer: the fourth
/// would find 16 KiB free, a few bytes short) across a growth that copies
/// what arrived, which costs more than the rewind saves; small messages
/// rewind once per half a buffer of them.
#[inline]
fn kept_room(min: usize, size: usize) -> usize {
    (size / 2).max(min).min(size)
}

/// The settings of a new connection, as an `Arc` shared with the thread's
/// last connection if the settings are equal (they nearly always are: one
/// server, one configuration): a server with thousands of connections
/// keeps one copy of them. Connections are not `Sync`-shared through it;
/// the settings are read-only.
fn shared_config(config: Config) -> Arc<Config> {
    thread_local! {
        static LAST: RefCell<Option<Arc<Config>>> = const { RefCell::new(None) };
    }
    let reused = LAST
        .try_with(|last| {
            let mut last = last.try_borrow_mut().ok()?;
            if let Some(shared) = last.as_ref().filter(|shared| ***shared == config) {
                return Some(shared.clone());
            }
            let shared = Arc::new(config.clone());
            *last = Some(shared.clone());
            Some(shared)
        })
        .ok()
        .flatten();
    reused.unwrap_or_else(|| Arc::new(config))
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("subprotocol", &self.subprotocol())
            .field("extensions", &self.extensions().collect::<Vec<_>>())
            .field("pending_transmit", &self.transmit.len)
            .finish_non_exhaustive()
    }
}

const fn data_opcode(kind: DataKind) -> OpCode {
    match kind {
        DataKind::Text => OpCode::Text,
        DataKind::Binary => OpCode::Binary,
    }
}

/// Runs a piece of a transformed message through the extensions whose RSV
/// bits it carries, in reverse pipeline order.
fn decode_pipeline(
    extensions: &mut [Box<dyn Extension>],
    rsv: u8,
    input: &[u8],
    last: bool,
    out: &mut BytesMut,
    limit: usize,
) -> Result<(), DecodeError> {
    let mut active = extensions
        .iter_mut()
        .rev()
        .filter(|e| e.rsv_bits() & rsv != 0)
        .peekable();
    // The input is read in place; only between two extensions does a piece
    // need a buffer of its own (with permessage-deflate alone, never).
    let mut staged: Option<BytesMut> = None;
    while let Some(ext) = active.next() {
        let current = staged.as_deref().unwrap_or(input);
        if active.peek().is_none() {
            return ext.decode(current, last, out, limit);
        }
        let mut next = BytesMut::new();
        ext.decode(current, last, &mut next, limit)?;
        staged = Some(next);
    }
    out.extend_from_slice(staged.as_deref().unwrap_or(input));
    Ok(())
}

fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests;
