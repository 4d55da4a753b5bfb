//! A client and a server core wired to each other in memory, driven by a
//! sequence of operations, with virtual time.
//!
//! Checks: every whole message (and ping) one side sent arrives intact and
//! in order at the other, unless the connection ended first; messages that
//! arrive are always a prefix of those sent; after a completed close
//! handshake everything sent has arrived; two tether cores never fail each
//! other with a protocol error; command results follow the state; and the
//! per-connection output checks of [`EventChecker`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::BufMut;
use tether_proto::{CloseCause, CloseCode, Config, Connection, DataKind, SeededRandom, State};

use crate::check::{EventChecker, Item};

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    const fn index(self) -> usize {
        match self {
            Self::Client => 0,
            Self::Server => 1,
        }
    }
}

/// Per-side configuration.
#[derive(Arbitrary, Debug)]
pub struct Settings {
    stream_threshold: Option<u16>,
    max_send_frame_size: Option<u16>,
    auto_pong: bool,
    ping_interval_ms: Option<u8>,
    idle_timeout_ms: Option<u16>,
    close_timeout_ms: u16,
}

impl Settings {
    fn config(&self) -> Config {
        let mut config = Config::default();
        config.stream_threshold = self.stream_threshold.map(usize::from);
        config.max_send_frame_size = self.max_send_frame_size.map(usize::from);
        config.auto_pong = self.auto_pong;
        config.ping_interval = self.ping_interval_ms.map(|ms| Duration::from_millis(ms.into()));
        config.idle_timeout = self.idle_timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        config.close_timeout = Duration::from_millis(self.close_timeout_ms.into());
        config
    }
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    Text(Side, String),
    Binary(Side, Vec<u8>),
    Fragment {
        side: Side,
        text: bool,
        data: Vec<u8>,
        fin: bool,
    },
    Ping(Side, Vec<u8>),
    Pong(Side, Vec<u8>),
    Close {
        side: Side,
        code: u16,
        reason: String,
    },
    /// Virtual time passes (milliseconds); due deadlines are handled.
    Advance(u16),
    /// Up to this many bytes in flight towards `to` arrive.
    Deliver {
        to: Side,
        bytes: u16,
    },
    /// Everything in flight arrives, both ways.
    DeliverAll,
    /// The transport's read side at `side` ends now; bytes in flight to it are lost.
    Eof(Side),
}

#[derive(Arbitrary, Debug)]
pub struct Input {
    client: Settings,
    server: Settings,
    seed: u64,
    ops: Vec<Op>,
}

struct Peer {
    conn: Connection,
    checker: EventChecker,
    /// Whole messages sent and not yet received by the other side.
    sent: VecDeque<(DataKind, Vec<u8>)>,
    /// The fragmented message being sent.
    open_fragment: Option<(DataKind, Vec<u8>)>,
    /// Pings sent and not yet received by the other side.
    pings: VecDeque<Vec<u8>>,
    keepalive: bool,
    close_called: bool,
    /// Bytes this side transmitted that the other has not received yet.
    in_flight: VecDeque<u8>,
    /// This side no longer reads (EOF delivered to it, or it closed the transport).
    input_ended: bool,
    /// This side closed the transport (`should_close_transport`).
    transport_closed: bool,
}

impl Peer {
    fn new(conn: Connection, config: &Config) -> Self {
        Self {
            checker: EventChecker::new(config),
            keepalive: config.ping_interval.is_some(),
            conn,
            sent: VecDeque::new(),
            open_fragment: None,
            pings: VecDeque::new(),
            close_called: false,
            in_flight: VecDeque::new(),
            input_ended: false,
            transport_closed: false,
        }
    }

    fn open(&self) -> bool {
        self.conn.state() == State::Open
    }
}

pub fn run(input: Input) {
    let start = Instant::now();
    let client_config = input.client.config();
    let server_config = input.server.config();
    let client = Connection::client(client_config.clone(), Box::new(SeededRandom::new(input.seed)), start);
    let server = Connection::server(server_config.clone(), start);
    let mut world = World {
        peers: [Peer::new(client, &client_config), Peer::new(server, &server_config)],
        now: start,
    };
    for op in input.ops {
        world.apply(op);
        world.settle();
    }
    // Let everything in flight arrive, without time passing.
    loop {
        let moved = world.deliver(Side::Client, usize::MAX) + world.deliver(Side::Server, usize::MAX);
        world.settle();
        if moved == 0 && world.peers.iter().all(|p| p.in_flight.is_empty()) {
            break;
        }
    }
    world.finish();
}

struct World {
    peers: [Peer; 2],
    now: Instant,
}

impl World {
    fn apply(&mut self, op: Op) {
        match op {
            Op::Text(side, text) => {
                let peer = &mut self.peers[side.index()];
                let can = peer.open() && peer.open_fragment.is_none();
                let result = peer.conn.send_text(&text);
                assert_eq!(result.is_ok(), can, "send_text: {result:?}");
                if result.is_ok() {
                    peer.sent.push_back((DataKind::Text, text.into_bytes()));
                }
            }
            Op::Binary(side, data) => {
                let peer = &mut self.peers[side.index()];
                let can = peer.open() && peer.open_fragment.is_none();
                let result = peer.conn.send_binary(&data);
                assert_eq!(result.is_ok(), can, "send_binary: {result:?}");
                if result.is_ok() {
                    peer.sent.push_back((DataKind::Binary, data));
                }
            }
            Op::Fragment { side, text, data, fin } => {
                let peer = &mut self.peers[side.index()];
                let kind = if text { DataKind::Text } else { DataKind::Binary };
                let result = peer.conn.send_fragment(kind, &data, fin);
                if !peer.open() {
                    assert!(result.is_err(), "send_fragment while not open");
                }
                if let Some((open_kind, _)) = &peer.open_fragment {
                    if *open_kind != kind {
                        assert!(result.is_err(), "send_fragment of another kind accepted");
                    }
                }
                if result.is_ok() {
                    let (_, buf) = peer.open_fragment.get_or_insert_with(|| (kind, Vec::new()));
                    buf.extend_from_slice(&data);
                    if fin {
                        if let Some(message) = peer.open_fragment.take() {
                            if message.0 == DataKind::Text {
                                assert!(std::str::from_utf8(&message.1).is_ok(), "invalid text accepted");
                            }
                            peer.sent.push_back(message);
                        }
                    }
                }
            }
            Op::Ping(side, payload) => {
                let peer = &mut self.peers[side.index()];
                let can = peer.open() && payload.len() <= 125;
                let result = peer.conn.ping(&payload);
                assert_eq!(result.is_ok(), can, "ping: {result:?}");
                if result.is_ok() {
                    peer.pings.push_back(payload);
                }
            }
            Op::Pong(side, payload) => {
                let peer = &mut self.peers[side.index()];
                let can = peer.open() && payload.len() <= 125;
                let result = peer.conn.pong(&payload);
                assert_eq!(result.is_ok(), can, "pong: {result:?}");
            }
            Op::Close { side, code, reason } => {
                let peer = &mut self.peers[side.index()];
                // Arguments are checked in every state; closing a connection
                // that is closing or closed already is Ok and does nothing.
                let valid = CloseCode::new(code).is_sendable() && reason.len() <= 123;
                let was_open = peer.open();
                let state = peer.conn.state();
                let pending = peer.conn.pending_transmit();
                let result = peer.conn.close(CloseCode::new(code), &reason, self.now);
                assert_eq!(result.is_ok(), valid, "close: {result:?}");
                if result.is_ok() && was_open {
                    peer.close_called = true;
                    assert_eq!(peer.conn.state(), State::Closing);
                } else {
                    assert_eq!(peer.conn.state(), state, "close changed the state");
                    assert_eq!(peer.conn.pending_transmit(), pending, "close sent something");
                }
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(ms.into());
                for peer in &mut self.peers {
                    if peer.conn.poll_timeout().is_some_and(|d| d <= self.now) {
                        peer.conn.handle_timeout(self.now);
                        if let Some(next) = peer.conn.poll_timeout() {
                            // Only the linger after an idle or close timeout
                            // may be due at once: the adapter writes once
                            // more before giving the output up.
                            let linger = peer.conn.should_close_transport() && peer.conn.pending_transmit() > 0;
                            assert!(next > self.now || linger, "deadline still due after handle_timeout");
                        }
                    }
                }
            }
            Op::Deliver { to, bytes } => {
                self.deliver(to, bytes.into());
            }
            Op::DeliverAll => {
                self.deliver(Side::Client, usize::MAX);
                self.deliver(Side::Server, usize::MAX);
            }
            Op::Eof(side) => {
                let peer = &mut self.peers[side.index()];
                if !peer.input_ended {
                    peer.input_ended = true;
                    peer.conn.handle_eof(self.now);
                }
                let from = 1 - side.index();
                self.peers[from].in_flight.clear();
            }
        }
    }

    /// Moves up to `max` bytes in flight towards `to`; returns how many.
    /// Once the sender closed the transport and its bytes are all through,
    /// the receiver gets EOF.
    fn deliver(&mut self, to: Side, max: usize) -> usize {
        let [client, server] = &mut self.peers;
        let (sender, receiver) = match to {
            Side::Client => (server, client),
            Side::Server => (client, server),
        };
        let n = max.min(sender.in_flight.len());
        let bytes: Vec<u8> = sender.in_flight.drain(..n).collect();
        if !receiver.input_ended && !bytes.is_empty() {
            receiver.conn.recv_buffer_mut().put_slice(&bytes);
            receiver.conn.handle_received(self.now);
        }
        if sender.transport_closed && sender.in_flight.is_empty() && !receiver.input_ended {
            receiver.input_ended = true;
            receiver.conn.handle_eof(self.now);
        }
        n
    }

    /// Drains both sides' outputs and checks them.
    fn settle(&mut self) {
        for index in 0..2 {
            let was_closed = self.peers[index].checker.closed.is_some();
            let mut received = Vec::new();
            {
                let peer = &mut self.peers[index];
                let before = peer.checker.log.len();
                while let Some(event) = peer.conn.poll_event() {
                    peer.checker.event(event);
                }
                received.extend(peer.checker.log[before..].iter().cloned());
                let pending = peer.conn.pending_transmit();
                let mut polled = 0;
                for chunk in peer.conn.transmit_chunks() {
                    polled += chunk.len();
                    if !peer.transport_closed {
                        peer.in_flight.extend(chunk.iter());
                    }
                }
                assert_eq!(polled, pending, "pending_transmit does not match what is offered");
                peer.conn.advance_transmit(polled);
                assert_eq!(peer.conn.pending_transmit(), 0);
                if let Some(closed) = &peer.checker.closed {
                    assert_eq!(peer.conn.closed(), Some(closed), "Connection::closed differs from Event::Closed");
                }
                if was_closed {
                    assert_eq!(polled, 0, "bytes transmitted after Closed");
                }
                let closed = peer.checker.closed.is_some();
                match peer.conn.state() {
                    State::Closed => assert!(closed, "state Closed without a Closed event"),
                    State::Closing => assert!(peer.close_called && !closed, "Closing without close()"),
                    State::Open => assert!(!closed, "state Open after a Closed event"),
                }
                if closed {
                    peer.open_fragment = None;
                }
                if peer.conn.should_close_transport() && !peer.transport_closed {
                    // The adapter writes what was polled, then closes: the
                    // peer gets EOF after the bytes in flight; this side
                    // reads no more.
                    peer.transport_closed = true;
                    peer.input_ended = true;
                }
            }
            let sender = &mut self.peers[1 - index];
            for item in received {
                match item {
                    Item::Message { kind, data, .. } => {
                        let expected = sender.sent.pop_front();
                        assert_eq!(expected, Some((kind, data)), "message lost, altered or out of order");
                    }
                    Item::Ping(payload) => {
                        if sender.pings.front() == Some(&payload) {
                            sender.pings.pop_front();
                        } else {
                            assert!(sender.keepalive && payload.is_empty(), "unexpected ping {payload:?}");
                        }
                    }
                    Item::Pong(_) => {}
                    Item::Closed(closed) => {
                        assert!(
                            !matches!(closed.cause, CloseCause::Protocol(_)),
                            "two tether cores failed with a protocol error: {closed:?}"
                        );
                    }
                }
            }
        }
    }

    fn finish(&self) {
        for (index, receiver) in self.peers.iter().enumerate() {
            let sender = &self.peers[1 - index];
            let complete = match &receiver.checker.closed {
                None => true,
                // The sender's close frame followed all its messages.
                Some(closed) => matches!(closed.cause, CloseCause::Remote | CloseCause::Local),
            };
            if complete {
                assert!(sender.sent.is_empty(), "messages never arrived: {:?}", sender.sent);
                assert!(sender.pings.is_empty(), "pings never arrived: {:?}", sender.pings);
            }
        }
    }
}
