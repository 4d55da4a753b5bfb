//! Test support for tether: an in-memory pair of connections with virtual time.
//!
//! [`Pair`] wires a client [`Connection`] and a server [`Connection`] to each
//! other, moves bytes between them until nothing more happens, and steps a
//! virtual clock to the next deadline, so timeouts and close races are tested
//! without sleeping (in the spirit of quinn-proto's `tests/util.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use tether_proto::handshake::{
    Accept, ClientHandshake, ClientRequest, HandshakeConfig, HandshakeError, ServerHandshake,
};
use tether_proto::{Config, Connection, Event, SeededRandom};

/// One end of the pair, with what it observed.
#[derive(Debug)]
pub struct End {
    /// The connection.
    pub conn: Connection,
    /// Every event it produced, in order.
    pub events: Vec<Event>,
    /// Bytes this end wrote that were not delivered yet.
    pub in_flight: Vec<u8>,
    /// Everything this end wrote, delivered or not.
    pub written: usize,
    /// This end closed its transport (the other end sees EOF once the bytes in
    /// flight are delivered).
    pub transport_closed: bool,
    /// The other end's EOF was delivered to this end.
    pub eof_received: bool,
    /// Drop what this end writes instead of delivering it (a peer that
    /// vanished, or a network that lost the route).
    pub blackhole: bool,
    /// The transport takes nothing this end writes (the peer stopped
    /// reading and the socket buffers are full): the output stays in the
    /// connection, unwritten.
    pub stalled: bool,
    /// The most bytes one write takes (`usize::MAX`: all that is offered),
    /// to exercise partial writes.
    pub write_size: usize,
    /// How many writes this end made (each one vectored write of the
    /// slices the connection offered).
    pub writes: usize,
}

impl End {
    fn new(conn: Connection) -> Self {
        Self {
            conn,
            events: Vec::new(),
            in_flight: Vec::new(),
            written: 0,
            transport_closed: false,
            eof_received: false,
            blackhole: false,
            stalled: false,
            write_size: usize::MAX,
            writes: 0,
        }
    }

    /// Drains events, writes what the connection offers (as an adapter
    /// does: vectored writes of its slices, then an advance), and closes
    /// the transport when the connection says so and nothing is left to
    /// write.
    pub fn poll(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            self.events.push(event);
        }
        // The core remembers the end: the same `Closed` as the event, and
        // from the moment the state says so.
        if self.conn.state() == tether_proto::State::Closed {
            assert_eq!(
                self.conn.closed(),
                self.closed(),
                "Connection::closed differs from Event::Closed"
            );
        } else {
            assert_eq!(
                self.conn.closed(),
                None,
                "Connection::closed set before the state is Closed"
            );
        }
        self.write();
        if self.conn.should_close_transport() && self.conn.pending_transmit() == 0 {
            self.transport_closed = true;
        }
    }

    /// Writes until the connection has nothing more or the transport takes
    /// nothing (`stalled`).
    fn write(&mut self) {
        while !self.stalled && self.conn.pending_transmit() > 0 {
            let mut slices = [IoSlice::new(&[]); 4];
            let count = self.conn.transmit_slices(&mut slices);
            assert!(count > 0, "bytes pending but no slice offered");
            let mut taken = 0;
            for slice in &slices[..count] {
                let n = slice.len().min(self.write_size - taken);
                if !self.transport_closed && !self.blackhole {
                    self.in_flight.extend_from_slice(&slice[..n]);
                }
                taken += n;
                if taken == self.write_size {
                    break;
                }
            }
            self.writes += 1;
            self.written += taken;
            let before = self.conn.pending_transmit();
            self.conn.advance_transmit(taken);
            assert_eq!(self.conn.pending_transmit(), before - taken);
        }
    }

    /// The whole messages received, as text or bytes.
    pub fn messages(&self) -> Vec<tether_proto::Message> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// The `Closed` event, if any; panics if there is more than one.
    pub fn closed(&self) -> Option<&tether_proto::Closed> {
        let mut closed = self.events.iter().filter_map(|e| match e {
            Event::Closed(c) => Some(c),
            _ => None,
        });
        let first = closed.next();
        assert!(closed.next().is_none(), "more than one Closed event");
        first
    }
}

/// A client and a server connected in memory, with a virtual clock.
#[derive(Debug)]
pub struct Pair {
    /// The client end.
    pub client: End,
    /// The server end.
    pub server: End,
    /// The virtual time.
    pub now: Instant,
    /// How many bytes a single delivery carries at most (`usize::MAX`: all).
    pub chunk: usize,
}

impl Pair {
    /// A pair with the default configuration on both ends.
    pub fn new() -> Self {
        Self::with_configs(Config::default(), Config::default())
    }

    /// A pair with the given configurations.
    pub fn with_configs(client: Config, server: Config) -> Self {
        let now = Instant::now();
        Self {
            client: End::new(Connection::client(client, Box::new(SeededRandom::new(1)), now)),
            server: End::new(Connection::server(server, now)),
            now,
            chunk: usize::MAX,
        }
    }

    /// A pair that ran the real opening handshake in memory: what it
    /// negotiated (subprotocol, permessage-deflate) is in the connections.
    pub fn handshake(
        request: ClientRequest,
        accept: Accept,
        client: Config,
        server: Config,
    ) -> Result<Self, HandshakeError> {
        let now = Instant::now();
        let (mut client_hs, request_bytes) = ClientHandshake::new(request, &mut SeededRandom::new(2), now, None)?;
        let mut server_hs = ServerHandshake::new(HandshakeConfig::default(), now);
        let request = server_hs
            .handle_read(&request_bytes)?
            .ok_or(HandshakeError::UnexpectedEof)?;
        let (response, server_conn) = server_hs.accept(&request, accept, server, now)?;
        let response = client_hs.handle_read(&response)?.ok_or(HandshakeError::UnexpectedEof)?;
        let client_conn = response.into_connection(client, Box::new(SeededRandom::new(1)), now)?;
        Ok(Self {
            client: End::new(client_conn),
            server: End::new(server_conn),
            now,
            chunk: usize::MAX,
        })
    }

    /// Moves bytes both ways until neither end has anything more to say.
    pub fn drive(&mut self) {
        loop {
            self.client.poll();
            self.server.poll();
            let moved = deliver(&mut self.client, &mut self.server, self.now, self.chunk)
                | deliver(&mut self.server, &mut self.client, self.now, self.chunk);
            if !moved {
                break;
            }
        }
    }

    /// The earliest deadline of either end.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.client.conn.poll_timeout(), self.server.conn.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Steps the clock to the next deadline (if it is within `limit` of now),
    /// handles it on both ends, and drives. Returns whether time moved.
    pub fn step(&mut self, limit: Duration) -> bool {
        self.drive();
        let Some(deadline) = self.next_deadline() else {
            return false;
        };
        if deadline > self.now + limit {
            return false;
        }
        self.now = self.now.max(deadline);
        self.client.conn.handle_timeout(self.now);
        self.server.conn.handle_timeout(self.now);
        self.drive();
        true
    }

    /// Steps through every deadline within `limit` of the current time.
    pub fn run_for(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.step(end.saturating_duration_since(self.now)) {}
        self.now = self.now.max(end);
    }

    /// Both transports are closed and every byte was delivered.
    pub fn is_shut_down(&self) -> bool {
        self.client.transport_closed && self.server.transport_closed
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

/// Delivers up to `chunk` bytes in flight from `from` to `to`, then EOF if
/// `from` closed its transport. Returns whether anything moved.
fn deliver(from: &mut End, to: &mut End, now: Instant, chunk: usize) -> bool {
    if !from.in_flight.is_empty() {
        let n = from.in_flight.len().min(chunk);
        let bytes: Vec<u8> = from.in_flight.drain(..n).collect();
        if !to.transport_closed {
            // As an adapter reads: straight into the append-only buffer.
            to.conn.recv_buffer_mut().put_slice(&bytes);
            to.conn.handle_received(now);
        }
        return true;
    }
    if from.transport_closed && !to.eof_received {
        to.eof_received = true;
        if !to.transport_closed {
            to.conn.handle_eof(now);
        }
        return true;
    }
    false
}

/// Shorthand for a `Bytes` from a byte string.
pub fn bytes(b: &'static [u8]) -> Bytes {
    Bytes::from_static(b)
}
