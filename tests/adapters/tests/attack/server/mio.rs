//! The tether-mio server: one event loop on the server thread, the
//! behaviours of the request paths written as callbacks of a `Handler`,
//! recording the same [`Outcome`]s as the stream handlers.
//!
//! A stream handler records what its calls returned; here the callbacks
//! tell the same facts: `Handler::rejected`'s `HandshakeError` is the
//! `Error::Handshake` the others' `accept_with` fails with, the
//! application's own 404 is their `Error::NotWebSocket` (recorded as
//! `accept` answers it), and the `Closed` handed to `Handler::close` gives
//! the error their `recv` (or `close`) ends with ([`Error::from_closed`],
//! the driver's own mapping).
//!
//! Filling a peer that does not read (`SEND_FOREVER`, `FILL_THEN_*`): the
//! handler queues [`SEND_CHUNK`] messages (one shared payload) while at
//! most the write buffer limit is buffered, asks for `Handler::drain`, and
//! goes on there once the output is written: a stream's `send` that waits
//! for room. A watcher thread (the loop has no timer for the application)
//! gives up after three [`SEND_STALL`] periods without a send, as the
//! others' `fill` does after three sends in a row waited that long; then
//! it records the outcome (`SEND_FOREVER`), starts the close handshake
//! through the `Handle` (`FILL_THEN_CLOSE`) or waits for the end
//! (`FILL_THEN_RECV`), and records a hang after [`HANG_LIMIT`] as the
//! others do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;
use tether_driver::{Closed, DeflateConfig, Error, Message};
use tether_mio::{
    Accept, CloseCode, Handle, Handler, HandshakeError, HttpResponse, Loop, MessageRef, Request, SendOptions, Socket,
    SocketId,
};

use super::{Ended, Outcome, Outcomes, Settings, Shared};
use crate::attack::{path, HANG_LIMIT, SEND_CHUNK, SEND_STALL};

/// Serves on 127.0.0.1 until the [`TestServer`](super::TestServer) stops
/// the loop through the handle it finds in `shared`.
pub(super) fn run(settings: &Settings, shared: &Shared, addr: &mpsc::Sender<SocketAddr>) {
    let server = tether_mio::Server::bind("127.0.0.1:0")
        .unwrap()
        .config(settings.config.clone())
        .handshake_config(settings.handshake.clone());
    let handle = server.handle();
    // Before the address is reported: the test server's `Drop` needs it.
    assert!(shared.mio.set(handle.clone()).is_ok(), "one loop per test server");
    addr.send(server.local_addr().unwrap()).unwrap();
    let callbacks = Callbacks {
        deflate: settings.deflate.clone(),
        write_limit: settings.config.write_buffer_limit,
        outcomes: shared.outcomes.clone(),
        handle,
        paths: HashMap::new(),
        conns: HashMap::new(),
    };
    server.run(callbacks).unwrap();
}

struct Callbacks {
    deflate: Option<DeflateConfig>,
    write_limit: usize,
    outcomes: Arc<Outcomes>,
    /// For the fill watchers.
    handle: Handle,
    /// The path of each request accepted, until its connection opens.
    paths: HashMap<SocketAddr, String>,
    conns: HashMap<SocketId, Conn>,
}

/// An open connection.
struct Conn {
    peer: SocketAddr,
    role: Role,
    ended: Ended,
}

/// What the request path asked for.
enum Role {
    /// `ECHO` and `FEED_ECHO` (the same here: every answer is queued and
    /// written once the messages of a read are handled).
    Echo,
    CloseFirst,
    WatchBuffer,
    /// `SEND_FOREVER` and `FILL_THEN_*`: shared with the watcher thread.
    Fill(Arc<Mutex<Fill>>),
}

struct Fill {
    ended: Ended,
    state: FillState,
    /// The last send, for the watcher.
    last_send: Instant,
}

#[derive(Clone, Copy)]
enum FillState {
    /// Sent; the watcher has not given up yet.
    Sending,
    /// Given up: closing (or waiting for the end) since `started`.
    Then { started: Instant },
    /// The outcome is recorded.
    Reported,
}

/// What a fill does once the sends stalled.
#[derive(Clone, Copy)]
enum Then {
    /// `SEND_FOREVER`: records the outcome at once.
    Report,
    /// `FILL_THEN_CLOSE`.
    Close,
    /// `FILL_THEN_RECV`: waits for the end.
    Recv,
}

fn lock(fill: &Mutex<Fill>) -> MutexGuard<'_, Fill> {
    fill.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Handler for Callbacks {
    fn accept(&mut self, request: &Request, peer: SocketAddr) -> Result<Accept, HttpResponse> {
        if request.path() == path::NOT_FOUND {
            // What `accept_with` fails with on the other shells once the
            // application's answer is sent.
            let outcome = Outcome::Rejected(Error::NotWebSocket(StatusCode::NOT_FOUND));
            self.outcomes.report(peer, outcome);
            return Err(HttpResponse::new(StatusCode::NOT_FOUND));
        }
        self.paths.insert(peer, request.path().to_owned());
        let mut options = Accept::new();
        if let Some(deflate) = &self.deflate {
            options = options.permessage_deflate(deflate.clone());
        }
        Ok(options)
    }

    fn rejected(&mut self, peer: SocketAddr, error: &HandshakeError) {
        self.paths.remove(&peer);
        self.outcomes
            .report(peer, Outcome::Rejected(Error::Handshake(error.clone())));
    }

    fn open(&mut self, socket: &mut Socket<'_>) {
        let peer = socket.peer_addr();
        let path = self.paths.remove(&peer).unwrap_or_default();
        let mut ended = Ended::default();
        let role = match path.as_str() {
            path::CLOSE_FIRST => {
                if let Err(e) = socket.close(CloseCode::NORMAL, "server closing") {
                    ended.end = Some(Error::Send(e));
                }
                Role::CloseFirst
            }
            path::WATCH_BUFFER => {
                ended.max_buffered = socket.buffered_amount();
                Role::WatchBuffer
            }
            path::SEND_FOREVER => self.fill(socket, Then::Report),
            path::FILL_THEN_CLOSE => self.fill(socket, Then::Close),
            path::FILL_THEN_RECV => self.fill(socket, Then::Recv),
            _ => Role::Echo,
        };
        self.conns.insert(socket.id(), Conn { peer, role, ended });
    }

    fn message(&mut self, socket: &mut Socket<'_>, message: MessageRef<'_>) {
        let Some(conn) = self.conns.get_mut(&socket.id()) else {
            return;
        };
        match conn.role {
            Role::Echo => {
                conn.ended.received.push(message.len());
                // A failed send ends nothing: the close callback reports the
                // end.
                let _ = socket.send(message);
            }
            Role::WatchBuffer => {
                conn.ended.received.push(message.len());
                conn.ended.max_buffered = conn.ended.max_buffered.max(socket.buffered_amount());
            }
            // A stream's `close` does not hand messages over; the fills'
            // peers send none.
            Role::CloseFirst | Role::Fill(_) => {}
        }
    }

    fn drain(&mut self, socket: &mut Socket<'_>) {
        if let Some(Conn {
            role: Role::Fill(fill), ..
        }) = self.conns.get(&socket.id())
        {
            pump(fill, socket, self.write_limit);
        }
    }

    fn ping(&mut self, socket: &mut Socket<'_>, _payload: &[u8]) {
        self.watch_buffer(socket);
    }

    fn pong(&mut self, socket: &mut Socket<'_>, _payload: &[u8]) {
        self.watch_buffer(socket);
    }

    fn close(&mut self, _event_loop: &mut Loop, id: SocketId, closed: &Closed) {
        let Some(Conn { peer, role, mut ended }) = self.conns.remove(&id) else {
            return;
        };
        if let Role::Fill(fill) = role {
            let mut fill = lock(&fill);
            let mut ended = std::mem::take(&mut fill.ended);
            match fill.state {
                FillState::Reported => return,
                // Ended while sending: the error a send fails with (the
                // send side runs the timers too).
                FillState::Sending => ended.end = Error::from_closed(closed),
                FillState::Then { started } => {
                    ended.took = started.elapsed();
                    if ended.took > HANG_LIMIT {
                        ended.hung = true;
                    } else {
                        ended.end = Error::from_closed(closed);
                    }
                }
            }
            ended.closed = Some(closed.clone());
            fill.state = FillState::Reported;
            self.outcomes.report(peer, Outcome::Ended(ended));
            return;
        }
        if ended.end.is_none() {
            ended.end = Error::from_closed(closed);
        }
        ended.closed = Some(closed.clone());
        self.outcomes.report(peer, Outcome::Ended(ended));
    }
}

impl Callbacks {
    /// `WATCH_BUFFER`: the buffered amount, sampled in every callback (the
    /// pongs of a ping flood are queued as the pings are handed over).
    fn watch_buffer(&mut self, socket: &Socket<'_>) {
        if let Some(Conn {
            role: Role::WatchBuffer,
            ended,
            ..
        }) = self.conns.get_mut(&socket.id())
        {
            ended.max_buffered = ended.max_buffered.max(socket.buffered_amount());
        }
    }

    /// Starts filling: [`pump`] now and at every drain, a watcher thread
    /// to give up.
    fn fill(&self, socket: &mut Socket<'_>, then: Then) -> Role {
        let fill = Arc::new(Mutex::new(Fill {
            ended: Ended::default(),
            state: FillState::Sending,
            last_send: Instant::now(),
        }));
        pump(&fill, socket, self.write_limit);
        let watcher = Watcher {
            fill: fill.clone(),
            outcomes: self.outcomes.clone(),
            handle: self.handle.clone(),
            peer: socket.peer_addr(),
            id: socket.id(),
        };
        std::thread::Builder::new()
            .name(format!("mio fill watcher of {}", watcher.peer))
            .spawn(move || watcher.run(then))
            .unwrap();
        Role::Fill(fill)
    }
}

/// Queues [`SEND_CHUNK`] messages (one shared payload) while at most
/// `bound` bytes are buffered, then asks for a drain to go on.
fn pump(fill: &Mutex<Fill>, socket: &mut Socket<'_>, bound: usize) {
    let mut fill = lock(fill);
    if !matches!(fill.state, FillState::Sending) {
        return;
    }
    let chunk = Bytes::from(vec![7u8; SEND_CHUNK]);
    while socket.buffered_amount() <= bound {
        if let Err(e) = socket.send_message(Message::Binary(chunk.clone()), SendOptions::default()) {
            // The close callback records the end.
            let _ = e;
            return;
        }
        fill.ended.sent += 1;
        fill.last_send = Instant::now();
        fill.ended.max_buffered = fill.ended.max_buffered.max(socket.buffered_amount());
    }
    socket.request_drain();
}

/// The thread that gives up on a fill as the others' `fill` does.
struct Watcher {
    fill: Arc<Mutex<Fill>>,
    outcomes: Arc<Outcomes>,
    handle: Handle,
    peer: SocketAddr,
    id: SocketId,
}

impl Watcher {
    fn run(self, then: Then) {
        // Three stall periods in a row without a send: the peer does not
        // read (the others' `fill`: three sends in a row that waited).
        let started = loop {
            std::thread::sleep(SEND_STALL);
            let mut fill = lock(&self.fill);
            if !matches!(fill.state, FillState::Sending) {
                // The connection ended first; its outcome is recorded.
                return;
            }
            if fill.last_send.elapsed() < 3 * SEND_STALL {
                continue;
            }
            fill.ended.stalled = true;
            if let Then::Report = then {
                fill.state = FillState::Reported;
                let ended = std::mem::take(&mut fill.ended);
                self.outcomes.report(self.peer, Outcome::Ended(ended));
                return;
            }
            let started = Instant::now();
            fill.state = FillState::Then { started };
            break started;
        };
        if let Then::Close = then {
            self.handle.close(self.id, CloseCode::NORMAL, "server closing").unwrap();
        }
        std::thread::sleep(HANG_LIMIT);
        let mut fill = lock(&self.fill);
        if let FillState::Then { .. } = fill.state {
            fill.state = FillState::Reported;
            let mut ended = std::mem::take(&mut fill.ended);
            ended.hung = true;
            ended.took = started.elapsed();
            self.outcomes.report(self.peer, Outcome::Ended(ended));
        }
    }
}
