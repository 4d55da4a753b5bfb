//! tether-mio as the server of the peers' clients: the scenarios of
//! [`Scenario::run`] as callbacks.
//!
//! tether-mio has no stream to `recv` from: its [`Handler`] is called with
//! each message, ping and pong of a connection, and with its end. So each
//! connection runs its scenario as a script ([`script`]): the steps of
//! [`Scenario::run`] in the same order, each send run as soon as it is
//! reached, each expectation waiting for the callback that must meet it.
//! One loop serves every case of a test, on a thread of its own; a case's
//! connection is known by the `id` of its query (checked as the other
//! shells check it), kept by its [`SocketId`], and its verdict goes to the
//! test when [`Handler::close`] reports the connection's end.
//!
//! One difference from the other shells, forced by tether-mio's API:
//! its connections' transports and counters are out of reach. In the
//!   `deflate` scenario, what tether put on the wire for a message is what
//!   its send queued ([`Socket::buffered_amount`] before and after it,
//!   frames and headers, after compression); what the peer put on the wire
//!   is counted by a relay between the peer and the loop ([`Relay`]: the
//!   peer connects to it, it reads the peer through [`Counted`]), as the
//!   other shells count it with [`Counted`] around their transport.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tether_driver::Stats;
use tether_mio::{
    Accept, CloseCause, CloseCode, Closed, DataKind, Handle, Handler, HttpResponse, Loop, Message, MessageRef, Request,
    Server, Socket, SocketId, StatusCode,
};
use tokio::sync::{mpsc, oneshot};

use crate::data;
use crate::process::Process;
use crate::query;
use crate::run::{self, Case, Report, Side};
use crate::scenario::{describe, Outcome, Scenario, OFFERED, PICKED};
use crate::wire::{Counted, Counters};

/// How long tether-mio's side may take to end a connection once the peer
/// has reported its case: more than the close timeout (10 seconds).
const VERDICT_GRACE: Duration = Duration::from_secs(30);
/// How long the loop may take to stop once the test is over.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A case's end, from the loop's thread: its id and tether's side.
type Verdict = (usize, Result<Side, String>);

/// The relay's counters of the bytes each peer sent, by the address
/// tether-mio sees the relayed connection come from.
type WireCounters = Arc<Mutex<HashMap<SocketAddr, Counters>>>;

/// tether-mio serving a test's cases, from one event loop on a thread of
/// its own.
#[derive(Debug)]
pub(crate) struct MioServer {
    handle: Handle,
    port: u16,
    verdicts: mpsc::UnboundedReceiver<Verdict>,
    done: oneshot::Receiver<Result<(), String>>,
    relay: Option<Relay>,
}

impl MioServer {
    /// Serves `cases`, in order, on a clone of `listener` (and, for the
    /// `deflate` scenario, behind a counting relay).
    pub(crate) fn start(listener: &TcpListener, cases: &[Case]) -> Result<Self, String> {
        let port = listener.local_addr().map_err(|e| format!("listener: {e}"))?.port();
        let relay = if cases.iter().any(|case| case.scenario == Scenario::Deflate) {
            Some(Relay::start(port)?)
        } else {
            None
        };
        let listener = listener.try_clone().map_err(|e| format!("listener: {e}"))?;
        let server = Server::new(listener)
            .map_err(|e| format!("tether-mio's server: {e}"))?
            .config(run::config());
        let handle = server.handle();
        let (verdict_tx, verdicts) = mpsc::unbounded_channel();
        let scripts = Scripts {
            cases: cases.to_vec(),
            next: 0,
            accepted: None,
            conns: HashMap::new(),
            wire: relay.as_ref().map(|relay| Arc::clone(&relay.counters)),
            verdicts: verdict_tx,
        };
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("tether-mio".to_owned())
            .spawn(move || {
                let result = server
                    .run(scripts)
                    .map(drop)
                    .map_err(|e| format!("tether-mio's loop failed: {e}"));
                let _ = done_tx.send(result);
            })
            .map_err(|e| format!("tether-mio's thread: {e}"))?;
        Ok(Self {
            handle,
            port,
            verdicts,
            done,
            relay,
        })
    }

    /// The port the peer connects to for `case`: the relay's for the
    /// `deflate` scenario, the loop's own for the others.
    pub(crate) fn port(&self, case: &Case) -> u16 {
        match &self.relay {
            Some(relay) if case.scenario == Scenario::Deflate => relay.port,
            _ => self.port,
        }
    }

    /// tether's side of case `id`, and the peer's report if it came first
    /// (the peer may see the end of the connection before the loop does).
    pub(crate) async fn side(
        &mut self,
        peer: &mut Process,
        id: usize,
    ) -> (Result<Side, String>, Option<Result<Report, String>>) {
        enum First {
            Side(Result<Side, String>),
            Report(Result<Report, String>),
        }
        let first = tokio::select! {
            side = self.verdict(id) => First::Side(side),
            report = run::peer_report(peer, id) => First::Report(report),
        };
        match first {
            First::Side(side) => (side, None),
            First::Report(report) => {
                let side = tokio::time::timeout(VERDICT_GRACE, self.verdict(id))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "tether-mio's handler saw no end of the connection within {VERDICT_GRACE:?} of the \
                             peer's report"
                        ))
                    });
                (side, Some(report))
            }
        }
    }

    async fn verdict(&mut self, id: usize) -> Result<Side, String> {
        loop {
            match self.verdicts.recv().await {
                Some((got, side)) if got == id => return side,
                // The late end of a case already given up.
                Some((got, _)) if got < id => {}
                Some((got, _)) => {
                    return Err(format!(
                        "tether-mio's handler ended case {got} while case {id} was awaited"
                    ));
                }
                None => return Err("tether-mio's loop ended".to_owned()),
            }
        }
    }

    /// Stops the loop and waits for its thread.
    pub(crate) async fn stop(mut self) -> Result<(), String> {
        // Refused only by a loop that has returned already: its result
        // tells why.
        let stop = self.handle.stop();
        match tokio::time::timeout(STOP_TIMEOUT, &mut self.done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("tether-mio's loop panicked".to_owned()),
            Err(_) => Err(format!(
                "tether-mio's loop did not stop within {STOP_TIMEOUT:?} (stop: {stop:?})"
            )),
        }
    }
}

impl Drop for MioServer {
    fn drop(&mut self) {
        // A test that panicked: the loop ends with it (again is harmless).
        let _ = self.handle.stop();
    }
}

// ---- The handler --------------------------------------------------------

/// The handler: each case's connection and its script.
struct Scripts {
    cases: Vec<Case>,
    /// The case of the next request.
    next: usize,
    /// The connection accepted last, until it is opened (`open` follows its
    /// `accept` at once, and has its `SocketId`).
    accepted: Option<Conn>,
    conns: HashMap<SocketId, Conn>,
    wire: Option<WireCounters>,
    verdicts: mpsc::UnboundedSender<Verdict>,
}

impl Scripts {
    fn verdict(&self, id: usize, side: Result<Side, String>) {
        let _ = self.verdicts.send((id, side));
    }
}

impl Handler for Scripts {
    fn accept(&mut self, request: &Request, peer: SocketAddr) -> Result<Accept, HttpResponse> {
        if let Some(conn) = self.accepted.take() {
            self.verdict(
                conn.case_id,
                Err("tether-mio accepted the request but never opened the connection".to_owned()),
            );
        }
        let id = self.next;
        let Some(case) = self.cases.get(id).copied() else {
            return Err(HttpResponse::new(StatusCode::BAD_REQUEST).body("no case left"));
        };
        self.next += 1;
        let wire = self
            .wire
            .as_ref()
            .and_then(|wire| wire.lock().unwrap_or_else(PoisonError::into_inner).remove(&peer));
        match accept_case(request, id, case) {
            Ok(accept) => {
                self.accepted = Some(Conn::new(id, case, wire));
                Ok(accept)
            }
            Err(e) => {
                let response = HttpResponse::new(StatusCode::BAD_REQUEST).body(e.clone());
                self.verdict(id, Err(e));
                Err(response)
            }
        }
    }

    fn open(&mut self, socket: &mut Socket<'_>) {
        if let Some(mut conn) = self.accepted.take() {
            conn.open(socket);
            self.conns.insert(socket.id(), conn);
        }
    }

    fn message(&mut self, socket: &mut Socket<'_>, message: MessageRef<'_>) {
        if let Some(conn) = self.conns.get_mut(&socket.id()) {
            conn.message(socket, message);
        }
    }

    fn ping(&mut self, socket: &mut Socket<'_>, payload: &[u8]) {
        if let Some(conn) = self.conns.get_mut(&socket.id()) {
            conn.control(socket, Control::Ping, payload);
        }
    }

    fn pong(&mut self, socket: &mut Socket<'_>, payload: &[u8]) {
        if let Some(conn) = self.conns.get_mut(&socket.id()) {
            conn.control(socket, Control::Pong, payload);
        }
    }

    fn close(&mut self, _event_loop: &mut Loop, id: SocketId, closed: &Closed) {
        if let Some(conn) = self.conns.remove(&id) {
            let case_id = conn.case_id;
            let extensions = conn.extensions.clone();
            self.verdict(case_id, Ok((conn.finish(closed), extensions)));
        }
    }
}

/// The checks of the opening handshake (those of the other shells' server
/// side), and tether's answer for `case`.
fn accept_case(request: &Request, id: usize, case: Case) -> Result<Accept, String> {
    let pairs = query::decode_pairs(request.query().unwrap_or(""));
    if query::get(&pairs, "id") != Some(id.to_string().as_str()) {
        return Err(format!("expected the request of case {id}, got {:?}", request.target()));
    }
    if query::get(&pairs, "scenario") != Some(case.scenario.name()) {
        return Err(format!(
            "expected the scenario {:?} of case {id}, got {:?}",
            case.scenario.name(),
            request.target()
        ));
    }
    let mut accept = Accept::new();
    if case.scenario == Scenario::Subprotocol {
        if request.protocols() != OFFERED {
            return Err(format!("expected the offer {OFFERED:?}, got {:?}", request.protocols()));
        }
        accept = accept.subprotocol(PICKED);
    }
    if let Some(params) = case.tether {
        accept = accept.permessage_deflate(params.tether_config());
    }
    Ok(accept)
}

// ---- A connection's script -------------------------------------------------

/// One step of tether's side of a scenario.
#[derive(Debug)]
enum Step {
    Send(Message),
    /// A message sent in pieces ([`Socket::send_fragment`]).
    SendFragments(DataKind, Vec<Vec<u8>>),
    /// A send whose bytes on the wire are measured (the `deflate`
    /// scenario's messages).
    SendMeasured(Message),
    /// The next message, and what it is in an error.
    Expect(Message, String),
    /// The echo of the measured send before it, measured.
    ExpectMeasured(Message, String),
    Ping(&'static str),
    ExpectPong(&'static str),
    ExpectPing(&'static str),
    /// The subprotocol is [`PICKED`].
    CheckSubprotocol,
    /// permessage-deflate is on.
    CheckDeflate,
    /// tether starts the close handshake.
    Close(u16, &'static str),
    /// The end of the connection: its close code, reason and cause.
    Closed(u16, &'static str, CloseCause),
}

impl Step {
    /// What it waits for, in an error.
    fn waiting(&self) -> String {
        match self {
            Self::Expect(message, what) | Self::ExpectMeasured(message, what) => {
                format!("{what}: expected {}", describe(message))
            }
            Self::ExpectPong(payload) => format!("expected the pong {payload:?}"),
            Self::ExpectPing(payload) => format!("expected the ping {payload:?}"),
            Self::Closed(code, reason, cause) => format!("expected close {code} {reason:?} ({cause:?})"),
            Self::Send(message) | Self::SendMeasured(message) => format!("before sending {}", describe(message)),
            Self::SendFragments(kind, pieces) => format!("before sending {kind:?} in {} pieces", pieces.len()),
            Self::Ping(payload) => format!("before the ping {payload:?}"),
            Self::CheckSubprotocol => "before the subprotocol's check".to_owned(),
            Self::CheckDeflate => "before permessage-deflate's check".to_owned(),
            Self::Close(code, reason) => format!("before closing with {code} {reason:?}"),
        }
    }
}

/// The steps of [`Scenario::run`], in its order (its helpers `exchange`,
/// `tether_sends` and `tether_echoes` are the methods of the same names).
fn script(scenario: Scenario) -> VecDeque<Step> {
    let mut s = Script::default();
    match scenario {
        Scenario::Text => s.exchange(&data::texts()),
        Scenario::Binary => s.exchange(&data::bins()),
        Scenario::Fragmented => {
            let text = Message::Text(data::UTF8.into());
            s.send_fragments(
                DataKind::Text,
                data::utf8_pieces().into_iter().map(<[u8]>::to_vec).collect(),
            );
            s.expect(text.clone(), "echo of the fragmented text");
            let whole = Message::Binary(data::bin_pieces().concat().into());
            s.send_fragments(DataKind::Binary, data::bin_pieces());
            s.expect(whole.clone(), "echo of the fragmented binary");
            s.tether_echoes(&[text, whole]);
        }
        Scenario::Large => {
            s.tether_sends(&[Message::Binary(data::binpat(data::LARGE).into())]);
            s.tether_echoes(&[Message::Text(data::lines(data::LARGE).into())]);
        }
        Scenario::Ping => {
            s.0.push_back(Step::Ping("tether-ping"));
            s.0.push_back(Step::ExpectPong("tether-ping"));
            s.send(Message::Text("got pong".into()));
            s.0.push_back(Step::ExpectPing("peer-ping"));
            s.expect(Message::Text("got pong too".into()), "after the peer's ping");
        }
        Scenario::CloseTether => {
            s.tether_sends(&[Message::Text("hi".into())]);
            let reason = "tether says bye ✓";
            s.0.push_back(Step::Close(4001, reason));
            s.0.push_back(Step::Closed(4001, reason, CloseCause::Local));
            return s.0;
        }
        Scenario::ClosePeer => {
            s.tether_sends(&[Message::Text("hi".into())]);
            s.0.push_back(Step::Closed(4002, "peer says bye ✓", CloseCause::Remote));
            return s.0;
        }
        Scenario::Subprotocol => {
            s.0.push_back(Step::CheckSubprotocol);
            s.tether_sends(&[Message::Text("hi".into())]);
        }
        Scenario::Deflate => {
            s.0.push_back(Step::CheckDeflate);
            for message in data::deflate_messages() {
                s.0.push_back(Step::SendMeasured(message.clone()));
                s.0.push_back(Step::ExpectMeasured(message, "echo".to_owned()));
            }
            let text = Message::Text(data::UTF8.into());
            s.send_fragments(
                DataKind::Text,
                data::utf8_pieces().into_iter().map(<[u8]>::to_vec).collect(),
            );
            s.expect(text.clone(), "echo of the fragmented text");
            s.tether_echoes(&data::deflate_messages());
            s.tether_echoes(&[text]);
        }
    }
    s.0.push_back(Step::Close(1000, "done"));
    s.0.push_back(Step::Closed(1000, "done", CloseCause::Local));
    s.0
}

#[derive(Default)]
struct Script(VecDeque<Step>);

impl Script {
    fn send(&mut self, message: Message) {
        self.0.push_back(Step::Send(message));
    }

    fn send_fragments(&mut self, kind: DataKind, pieces: Vec<Vec<u8>>) {
        self.0.push_back(Step::SendFragments(kind, pieces));
    }

    fn expect(&mut self, message: Message, what: &str) {
        self.0.push_back(Step::Expect(message, what.to_owned()));
    }

    /// tether sends, the peer echoes; then the peer sends, tether echoes.
    fn exchange(&mut self, messages: &[Message]) {
        self.tether_sends(messages);
        self.tether_echoes(messages);
    }

    /// tether sends each message and checks the peer's echo.
    fn tether_sends(&mut self, messages: &[Message]) {
        for (i, message) in messages.iter().enumerate() {
            self.send(message.clone());
            self.expect(message.clone(), &format!("echo {i} from the peer"));
        }
    }

    /// The peer sends each message; tether checks it and echoes it.
    fn tether_echoes(&mut self, messages: &[Message]) {
        for (i, message) in messages.iter().enumerate() {
            self.expect(message.clone(), &format!("message {i} from the peer"));
            self.send(message.clone());
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Control {
    Ping,
    Pong,
}

/// One case's connection.
struct Conn {
    case_id: usize,
    scenario: Scenario,
    steps: VecDeque<Step>,
    /// The first failure; the connection is closed with 1011 on it, and
    /// nothing after it is checked.
    error: Option<String>,
    outcome: Outcome,
    extensions: Vec<String>,
    /// The relay's count of the bytes the peer sent (the `deflate` scenario).
    wire: Option<Counters>,
    /// The last measured send: payload length, the bytes it queued, and
    /// the peer's bytes counted before it.
    measured: Option<(usize, u64, u64)>,
}

impl Conn {
    fn new(case_id: usize, case: Case, wire: Option<Counters>) -> Self {
        Self {
            case_id,
            scenario: case.scenario,
            steps: script(case.scenario),
            error: None,
            outcome: Outcome::default(),
            extensions: Vec::new(),
            wire,
            measured: None,
        }
    }

    fn open(&mut self, socket: &mut Socket<'_>) {
        self.extensions = socket.extensions().map(str::to_owned).collect();
        if self.scenario == Scenario::Deflate && self.wire.is_none() {
            return self.fail(socket, "no relay counts the peer's bytes of this connection".to_owned());
        }
        self.run(socket);
    }

    /// Bytes the peer has sent so far (through the relay).
    fn peer_bytes(&self) -> u64 {
        self.wire.as_ref().map_or(0, |wire| wire.wire(&Stats::default()).1)
    }

    /// Runs the steps up to the next one that waits for the peer.
    fn run(&mut self, socket: &mut Socket<'_>) {
        while self.error.is_none() {
            let Some(step) = self.steps.pop_front() else {
                return;
            };
            let done = match step {
                Step::Send(message) => send(socket, &message),
                Step::SendFragments(kind, pieces) => pieces.iter().enumerate().try_for_each(|(i, piece)| {
                    socket
                        .send_fragment(kind, piece, i + 1 == pieces.len())
                        .map_err(|e| format!("fragment {i}: {e}"))
                }),
                Step::SendMeasured(message) => {
                    let queued = socket.buffered_amount();
                    let read = self.peer_bytes();
                    send(socket, &message).map(|()| {
                        let sent = socket.buffered_amount().saturating_sub(queued) as u64;
                        self.measured = Some((message.len(), sent, read));
                    })
                }
                Step::Ping(payload) => socket.ping(payload.as_bytes()).map_err(|e| format!("ping: {e}")),
                Step::CheckSubprotocol => match socket.subprotocol() {
                    Some(PICKED) => Ok(()),
                    other => Err(format!("expected subprotocol {PICKED}, got {other:?}")),
                },
                Step::CheckDeflate => {
                    if self.extensions == ["permessage-deflate"] {
                        Ok(())
                    } else {
                        Err(format!(
                            "permessage-deflate not negotiated: extensions {:?}",
                            self.extensions
                        ))
                    }
                }
                Step::Close(code, reason) => socket
                    .close(CloseCode::from(code), reason)
                    .map_err(|e| format!("close: {e}")),
                waiting @ (Step::Expect(..)
                | Step::ExpectMeasured(..)
                | Step::ExpectPong(_)
                | Step::ExpectPing(_)
                | Step::Closed(..)) => {
                    self.steps.push_front(waiting);
                    return;
                }
            };
            if let Err(e) = done {
                self.fail(socket, e);
            }
        }
    }

    fn message(&mut self, socket: &mut Socket<'_>, message: MessageRef<'_>) {
        if self.error.is_some() {
            return;
        }
        let got = |message: MessageRef<'_>| describe(&message.to_message());
        let checked = match self.steps.pop_front() {
            Some(Step::Expect(expected, what)) => same(&expected, message, &what),
            Some(Step::ExpectMeasured(expected, what)) => same(&expected, message, &what).and_then(|()| {
                let (len, sent, read) = self.measured.take().ok_or("an echo measured without its send")?;
                let received = self.peer_bytes() - read;
                self.outcome.tether_sent.push((len, sent));
                self.outcome.peer_sent.push((len, received));
                Ok(())
            }),
            Some(step) => Err(format!("{}, got {}", step.waiting(), got(message))),
            None => Err(format!("expected nothing more, got {}", got(message))),
        };
        match checked {
            Ok(()) => self.run(socket),
            Err(e) => self.fail(socket, e),
        }
    }

    /// A ping or a pong: checked when the script waits for one, passed
    /// over otherwise (as `recv` passes over them).
    fn control(&mut self, socket: &mut Socket<'_>, control: Control, payload: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let checked = match (self.steps.front(), control) {
            (Some(Step::ExpectPong(want)), Control::Pong) | (Some(Step::ExpectPing(want)), Control::Ping)
                if payload == want.as_bytes() =>
            {
                Ok(())
            }
            (Some(step @ (Step::ExpectPong(_) | Step::ExpectPing(_))), _) => Err(format!(
                "{}, got the {control:?} {:?}",
                step.waiting(),
                String::from_utf8_lossy(payload)
            )),
            _ => return,
        };
        self.steps.pop_front();
        match checked {
            Ok(()) => self.run(socket),
            Err(e) => self.fail(socket, e),
        }
    }

    /// Records the first failure and closes the connection (1011), so the
    /// peer reports at once, as the other shells' hang-up makes it.
    fn fail(&mut self, socket: &mut Socket<'_>, error: String) {
        self.error.get_or_insert(error);
        let _ = socket.close(CloseCode::INTERNAL_ERROR, "");
    }

    /// tether's verdict at the end of the connection.
    fn finish(mut self, closed: &Closed) -> Result<Outcome, String> {
        if let Some(error) = self.error {
            return Err(error);
        }
        match self.steps.pop_front() {
            Some(Step::Closed(code, reason, cause)) if self.steps.is_empty() => {
                if closed.code != CloseCode::from(code) || closed.reason != reason || closed.cause != cause {
                    return Err(format!(
                        "expected close {code} {reason:?} ({cause:?}), got {} {:?} ({:?})",
                        closed.code, closed.reason, closed.cause
                    ));
                }
                Ok(self.outcome)
            }
            Some(step) => Err(format!(
                "{}, the connection closed: {} {:?} ({:?})",
                step.waiting(),
                closed.code,
                closed.reason,
                closed.cause
            )),
            None => Err("the script ended before the connection".to_owned()),
        }
    }
}

fn send(socket: &mut Socket<'_>, message: &Message) -> Result<(), String> {
    socket
        .send(message)
        .map_err(|e| format!("sending {}: {e}", describe(message)))
}

fn same(expected: &Message, got: MessageRef<'_>, what: &str) -> Result<(), String> {
    if got == MessageRef::from(expected) {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected {}, got {}",
            describe(expected),
            describe(&got.to_message())
        ))
    }
}

// ---- The relay of the deflate scenario -----------------------------------

/// A TCP relay on 127.0.0.1 in front of the loop's listener, counting what
/// each peer sends ([`Counted`]) before passing it on; both directions'
/// ends (FIN) are passed on as they come.
#[derive(Debug)]
struct Relay {
    port: u16,
    counters: WireCounters,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: u16) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("relay: bind: {e}"))?;
        let port = listener.local_addr().map_err(|e| format!("relay: {e}"))?.port();
        let counters = WireCounters::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (counters_, stop_) = (Arc::clone(&counters), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("relay".to_owned())
            .spawn(move || {
                for client in listener.incoming() {
                    if stop_.load(Ordering::Relaxed) {
                        break;
                    }
                    let relayed = client.and_then(|client| relay(client, target, &counters_));
                    if let Err(e) = relayed {
                        eprintln!("relay: {e}");
                    }
                }
            })
            .map_err(|e| format!("relay: {e}"))?;
        Ok(Self { port, counters, stop })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Connects `client` to the loop, its bytes counted.
fn relay(client: TcpStream, target: u16, counters: &WireCounters) -> io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", target))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (counted, count) = Counted::new(client.try_clone()?);
    counters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(server.local_addr()?, count);
    pipe(counted, server.try_clone()?)?;
    pipe(server, client)
}

/// Copies `from` to `to` on a thread of its own; then ends `to`'s writes,
/// or all of `to` if the copy failed.
fn pipe(mut from: impl Read + Send + 'static, to: TcpStream) -> io::Result<()> {
    std::thread::Builder::new()
        .name("relay pipe".to_owned())
        .spawn(move || {
            let copied = io::copy(&mut from, &mut &to);
            let _ = to.shutdown(if copied.is_ok() {
                Shutdown::Write
            } else {
                Shutdown::Both
            });
        })?;
    Ok(())
}
