//! A frame stream fed to one connection (server or client) in chunks.
//!
//! Input layout: a 5-byte prefix, then the stream.
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | flags: `0x01` small limits, `0x02` stream_threshold, `0x04` no auto pong, `0x08` feed through `recv_buffer_mut` and, every other read, `read_and_lend` or (every fourth) `read_and_take` (buffers recycled), `0x10` timers, `0x20` permessage-deflate negotiated (windows and context takeover from byte 4), `0x40` messages taken with `lend_message` where it lends (the chunked connection), `0x80` with `lend_messages`, as many as it lends in a call (the chunked connection; breaks after every third) |
//! | 1 | small limits: `max_frame_size`; timers: `ping_interval` |
//! | 2 | small limits: `max_message_size / 4`; timers: `idle_timeout` |
//! | 3 | `stream_threshold`; timers: `close_timeout` |
//! | 4 | chunking: 0 = the whole stream in one read, n = reads of 1..=n bytes |
//!
//! Without timers the same stream is also fed in one read to a second
//! connection, and both must produce the same events and bytes (the events
//! must not depend on how the input was split, nor on whether messages
//! were lent in place or handed out owned).

use std::time::{Duration, Instant};

use bytes::BufMut;

use tether_proto::deflate::DeflateConfig;
use tether_proto::handshake::{Accept, ClientHandshake, ClientRequest, HandshakeConfig, ServerHandshake};
use tether_proto::{Config, Connection, RecvBuf, Role, SeededRandom, State};

use crate::check::{EventChecker, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};

pub const PREFIX_LEN: usize = 5;

const SMALL_LIMITS: u8 = 0x01;
const STREAM: u8 = 0x02;
const NO_AUTO_PONG: u8 = 0x04;
const RECV_BUFFER: u8 = 0x08;
const TIMERS: u8 = 0x10;
pub const DEFLATE: u8 = 0x20;
const LEND: u8 = 0x40;
const LEND_MANY: u8 = 0x80;

/// Runs one input against a connection of `role`.
pub fn run(role: Role, data: &[u8]) {
    let Some((prefix, stream)) = data.split_first_chunk::<PREFIX_LEN>() else {
        return;
    };
    let flags = prefix[0];
    let mut config = Config::default();
    if flags & SMALL_LIMITS != 0 {
        config.max_frame_size = u64::from(prefix[1]);
        config.max_message_size = u64::from(prefix[2]) * 4;
    }
    if flags & STREAM != 0 {
        config.stream_threshold = Some(usize::from(prefix[3]));
    }
    config.auto_pong = flags & NO_AUTO_PONG == 0;
    let timers = flags & TIMERS != 0;
    if timers {
        config.ping_interval = Some(Duration::from_millis(u64::from(prefix[1] % 32) * 5));
        config.idle_timeout = Some(Duration::from_millis(u64::from(prefix[2] % 32) * 20));
        config.close_timeout = Duration::from_millis(u64::from(prefix[3] % 32) * 10);
    }
    let start = Instant::now();

    let deflate = (flags & DEFLATE != 0).then_some(prefix[4]);
    let mut split = Driver::new(role, config.clone(), deflate, flags & RECV_BUFFER != 0, start);
    split.lend = flags & LEND != 0;
    split.lend_many = flags & LEND_MANY != 0;
    let mut rng = SplitMix(u64::from(prefix[4]) ^ (stream.len() as u64) << 8);
    let mut rest = stream;
    while !rest.is_empty() {
        let n = match prefix[4] {
            0 => rest.len(),
            max => 1 + (rng.next() % u64::from(max)) as usize,
        };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        if timers {
            split.advance(Duration::from_millis(rng.next() % 64));
        }
        split.input(chunk);
    }
    split.eof();

    if !timers {
        let mut whole = Driver::new(role, config, deflate, false, start);
        whole.input(stream);
        whole.eof();
        assert_eq!(split.checker.log, whole.checker.log, "events depend on the split");
        assert_eq!(split.transmitted, whole.transmitted, "output depends on the split");
    }
}

/// A read (of `read_and_lend`, `read_and_take`) that brings `chunk`.
fn bringing(chunk: &[u8]) -> impl FnMut(&mut RecvBuf<'_>) -> usize + '_ {
    move |buf| {
        buf.put_slice(chunk);
        chunk.len()
    }
}

/// One connection, its event checker, and everything it transmitted.
struct Driver {
    conn: Connection,
    checker: EventChecker,
    transmitted: Vec<u8>,
    via_recv_buffer: bool,
    /// Messages taken with `lend_message` where it lends.
    lend: bool,
    /// Messages taken with `lend_messages` where it lends.
    lend_many: bool,
    /// Reads so far (through the receive buffer, every other one is read
    /// with `read_and_lend`).
    reads: u64,
    now: Instant,
}

impl Driver {
    fn new(role: Role, config: Config, deflate: Option<u8>, via_recv_buffer: bool, now: Instant) -> Self {
        let checker = EventChecker::new(&config);
        let mut conn = match (role, deflate) {
            (Role::Client, None) => Connection::client(config, Box::new(SeededRandom::new(7)), now),
            (Role::Server, None) => Connection::server(config, now),
            (role, Some(bits)) => negotiated(role, config, bits, now),
        };
        conn.set_buffer_recycling(via_recv_buffer);
        assert_eq!(conn.role(), role);
        Self {
            conn,
            checker,
            transmitted: Vec::new(),
            via_recv_buffer,
            lend: false,
            lend_many: false,
            reads: 0,
            now,
        }
    }

    fn input(&mut self, chunk: &[u8]) {
        if self.via_recv_buffer {
            // Every other read with `read_and_lend` or, every fourth,
            // `read_and_take` (its messages lent or its first one taken as
            // they are read, from the thread's buffer: the connection
            // recycles and lets go of its buffers after each drain), the
            // others appended to `recv_buffer_mut`.
            self.reads += 1;
            if self.reads % 4 == 0 {
                self.read_and_take(chunk);
            } else if self.reads % 2 == 0 {
                self.read_and_lend(chunk);
            } else {
                self.conn.recv_buffer_mut().put_slice(chunk);
                self.conn.handle_received(self.now);
            }
        } else {
            self.conn.handle_read(chunk, self.now);
        }
        self.drain();
        if self.via_recv_buffer {
            self.conn.recycle_buffers();
        }
    }

    /// `chunk` read with `read_and_lend`; the messages it lends go to the
    /// checker in order, before whatever the drain finds after them.
    fn read_and_lend(&mut self, chunk: &[u8]) {
        let mut lent = Vec::new();
        let lend_many = self.lend_many;
        let now = self.now;
        let (read, n) = self.conn.read_and_lend(
            4096,
            64 * 1024,
            || now,
            bringing(chunk),
            |message, outbox| {
                assert_eq!(outbox.state(), State::Open, "a message lent after the close");
                lent.push(tether_proto::Event::Message(message.to_message()));
                if lend_many && lent.len() % 3 == 0 {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            },
        );
        assert_eq!((read, n), (chunk.len(), lent.len()));
        for event in lent {
            self.checker.event(event);
        }
    }

    /// `chunk` read with `read_and_take`; the message it takes goes to the
    /// checker before whatever the drain finds after it.
    fn read_and_take(&mut self, chunk: &[u8]) {
        let now = self.now;
        let (read, taken) = self.conn.read_and_take(4096, 64 * 1024, || now, bringing(chunk));
        assert_eq!(read, chunk.len());
        if let Some(message) = taken {
            assert_eq!(self.conn.state(), State::Open, "a message taken after the close");
            self.checker.event(tether_proto::Event::Message(message));
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.conn.poll_timeout().is_some_and(|deadline| deadline <= self.now) {
            self.conn.handle_timeout(self.now);
            if let Some(next) = self.conn.poll_timeout() {
                // Only the linger after an idle or close timeout may be due
                // at once: the adapter writes once more before giving the
                // output up.
                let linger = self.conn.should_close_transport() && self.conn.pending_transmit() > 0;
                assert!(next > self.now || linger, "deadline {next:?} still due after handle_timeout");
            }
        }
        self.drain();
    }

    fn eof(&mut self) {
        self.conn.handle_eof(self.now);
        self.drain();
        assert!(self.checker.closed.is_some(), "no Closed event after EOF");
        assert_eq!(self.conn.poll_timeout(), None, "deadline after EOF");
        assert!(self.conn.should_close_transport());
    }

    /// Drains every output and checks the connection's state against them.
    fn drain(&mut self) {
        let was_closed = self.checker.closed.is_some();
        loop {
            if self.lend_many {
                let mut lent = Vec::new();
                let n = self.conn.lend_messages(|message, outbox| {
                    assert_eq!(outbox.state(), State::Open, "a message lent after the close");
                    lent.push(tether_proto::Event::Message(message.to_message()));
                    if lent.len() % 3 == 0 {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                });
                assert_eq!(n, lent.len());
                if n > 0 {
                    for event in lent {
                        self.checker.event(event);
                    }
                    continue;
                }
            }
            if self.lend {
                let lent = self.conn.lend_message(|message, outbox| {
                    assert_eq!(outbox.state(), State::Open, "a message lent after the close");
                    tether_proto::Event::Message(message.to_message())
                });
                if let Some(event) = lent {
                    self.checker.event(event);
                    continue;
                }
            }
            match self.conn.poll_event() {
                Some(event) => self.checker.event(event),
                None => break,
            }
        }
        let pending = self.conn.pending_transmit();
        let mut polled = 0;
        for chunk in self.conn.transmit_chunks() {
            assert!(!chunk.is_empty(), "empty transmit");
            polled += chunk.len();
            self.transmitted.extend_from_slice(chunk);
        }
        assert_eq!(polled, pending, "pending_transmit does not match what is offered");
        self.conn.advance_transmit(polled);
        assert_eq!(self.conn.pending_transmit(), 0);
        assert!(!self.conn.output_abandoned(), "output abandoned though always written");
        if let Some(closed) = &self.checker.closed {
            assert_eq!(
                self.conn.closed(),
                Some(closed),
                "Connection::closed differs from Event::Closed"
            );
        }
        if was_closed {
            assert_eq!(polled, 0, "bytes transmitted after Closed");
        }

        let closed = self.checker.closed.is_some();
        let state = self.conn.state();
        // Nothing here calls `close`, so Closing never happens.
        assert_eq!(state, if closed { State::Closed } else { State::Open });
        if closed && self.conn.role() == Role::Server {
            assert!(self.conn.should_close_transport());
        }
        // Received bytes are consumed as they come: at most an incomplete
        // header, an incomplete control frame, or the payload of one
        // unfragmented data frame (kept until whole, bounded by the frame
        // limit) waits in the buffer.
        let buffered = self.conn.recv_buffer_mut().len();
        let frame_limit = usize::try_from(self.conn.config().max_frame_size).unwrap_or(usize::MAX);
        if closed {
            assert_eq!(buffered, 0, "input kept after Closed");
        } else {
            assert!(
                buffered <= MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD.max(frame_limit),
                "{buffered} bytes buffered"
            );
        }
    }
}

/// A connection that negotiated permessage-deflate through the real
/// handshake; `bits` picks the windows (9 to 15) and context takeover.
fn negotiated(role: Role, config: Config, bits: u8, now: Instant) -> Connection {
    let mut deflate = DeflateConfig::default();
    deflate.server_max_window_bits = 9 + bits % 7;
    deflate.client_max_window_bits = 9 + (bits / 7) % 7;
    deflate.server_no_context_takeover = bits & 0x40 != 0;
    deflate.client_no_context_takeover = bits & 0x80 != 0;
    deflate.threshold = 0;
    let request = ClientRequest::new("ws://fuzz/")
        .expect("valid uri")
        .permessage_deflate(deflate.clone());
    let (mut client, request) =
        ClientHandshake::new(request, &mut SeededRandom::new(3), now, None).expect("valid request");
    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    let request = server
        .handle_read(&request)
        .expect("our request parses")
        .expect("complete request");
    let accept = Accept::new().permessage_deflate(deflate);
    let (response, server_conn) = server.accept(&request, accept, config.clone(), now).expect("accepted");
    match role {
        Role::Server => server_conn,
        Role::Client => client
            .handle_read(&response)
            .expect("our response parses")
            .expect("complete response")
            .into_connection(config, Box::new(SeededRandom::new(7)), now)
            .expect("deflate connection"),
    }
}

/// Chunk sizes and time steps.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
