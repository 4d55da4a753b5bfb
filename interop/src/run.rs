//! Running cases: tether as client against a peer server, tether as server
//! against a peer client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::future::Future;

use tether_driver::{Accept, ClientBuilder, RuntimeIo, Server, WebSocketConfig, WebSocketStream};
use tokio::net::TcpListener;

use crate::deflate::{check_wire, Agreed, Params};
use crate::mio_server::MioServer;
use crate::peer::PeerKind;
use crate::process::Process;
use crate::query;
use crate::scenario::{Outcome, Scenario, OFFERED, PICKED};
use crate::wire::{Counted, Counters};

/// A bound on each case, opening handshake to close.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the peer may take to report a case after tether's side ended.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(90);

/// One connection: a scenario, and each side's permessage-deflate settings
/// (`None`: no compression offered or accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// What both sides do.
    pub scenario: Scenario,
    /// tether's permessage-deflate settings.
    pub tether: Option<Params>,
    /// The peer's permessage-deflate settings.
    pub peer: Option<Params>,
}

impl Case {
    /// `scenario` without compression.
    pub fn plain(scenario: Scenario) -> Self {
        Self {
            scenario,
            tether: None,
            peer: None,
        }
    }

    /// `scenario` with permessage-deflate at both sides' defaults.
    pub fn deflate(scenario: Scenario) -> Self {
        Self {
            scenario,
            tether: Some(Params::default()),
            peer: Some(Params::default()),
        }
    }

    /// The `deflate` scenario for each peer setting of
    /// [`Params::peer_matrix`], tether at its defaults.
    pub fn peer_matrix() -> Vec<Self> {
        Params::peer_matrix()
            .into_iter()
            .map(|peer| Self {
                peer: Some(peer),
                ..Self::deflate(Scenario::Deflate)
            })
            .collect()
    }

    /// The `deflate` scenario for each tether setting of
    /// [`Params::tether_matrix`], the peer at its defaults.
    pub fn tether_matrix() -> Vec<Self> {
        Params::tether_matrix()
            .into_iter()
            .map(|tether| Self {
                tether: Some(tether),
                ..Self::deflate(Scenario::Deflate)
            })
            .collect()
    }

    fn query(&self, id: usize, tether_is_client: bool) -> String {
        let id = id.to_string();
        let offered = OFFERED.join(",");
        let spec = self.peer.map(|p| p.spec());
        let mut pairs = vec![("id", id.as_str()), ("scenario", self.scenario.name())];
        if let Some(spec) = &spec {
            pairs.push(("deflate", spec));
        }
        if self.scenario == Scenario::Subprotocol {
            pairs.push(if tether_is_client {
                ("pick", PICKED)
            } else {
                ("protocols", &offered)
            });
        }
        query::encode_pairs(pairs)
    }

    pub(crate) fn label(&self) -> String {
        let spec = |p: Option<Params>| p.map_or("off".to_owned(), |p| format!("[{}]", p.spec()));
        format!(
            "{} (deflate: tether {}, peer {})",
            self.scenario.name(),
            spec(self.tether),
            spec(self.peer)
        )
    }
}

/// tether's connection settings: the defaults without keepalive pings (they
/// would change what the ping scenario sees and what is on the wire).
pub fn config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    config
}

/// Runs `cases` with tether as the client of a `kind` server.
///
/// # Panics
///
/// When a case fails, listing every failed case and the peer's output.
pub async fn tether_client(shell: Shell, kind: PeerKind, cases: &[Case]) {
    let (mut peer, port) = kind.server().await;
    let mut failures = Vec::new();
    for (id, case) in cases.iter().enumerate() {
        let start = Instant::now();
        let result = tokio::time::timeout(CASE_TIMEOUT, client_case(shell, kind, &mut peer, port, id, case)).await;
        if !report(case, start, result, &mut failures) {
            skip_rest(&cases[id + 1..], &mut failures);
            break;
        }
    }
    finish(
        &peer,
        &format!("tether client ({}) against a {} server", shell.name(), kind.name()),
        cases.len(),
        failures,
    );
}

/// Runs `cases` with tether as the server of a `kind` client.
///
/// # Panics
///
/// When a case fails, listing every failed case and the peer's output.
pub async fn tether_server(shell: Shell, kind: PeerKind, cases: &[Case]) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    // tether-mio serves every case from one event loop on a thread of its
    // own, started before the peer connects.
    let mut event_loop = match shell {
        Shell::Mio => Some(MioServer::start(&listener, cases).unwrap_or_else(|e| panic!("{e}"))),
        _ => None,
    };
    let urls: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(id, case)| {
            let port = event_loop.as_ref().map_or(port, |l| l.port(case));
            let query = case.query(id, false);
            format!("ws://127.0.0.1:{port}/interop?{query}")
        })
        .collect();
    let mut peer = kind.client(&urls);
    let mut failures = Vec::new();
    for (id, case) in cases.iter().enumerate() {
        let start = Instant::now();
        let case_run = async {
            match &mut event_loop {
                Some(event_loop) => {
                    let (side, report) = event_loop.side(&mut peer, id).await;
                    conclude(kind, case, &mut peer, id, side, report).await
                }
                None => server_case(shell, kind, &listener, &mut peer, id, case).await,
            }
        };
        let result = tokio::time::timeout(CASE_TIMEOUT, case_run).await;
        if !report(case, start, result, &mut failures) {
            skip_rest(&cases[id + 1..], &mut failures);
            break;
        }
    }
    match peer.wait(REPORT_TIMEOUT).await {
        Ok(status) if status.success() || !failures.is_empty() => {}
        Ok(status) => failures.push(format!("the peer client exited with {status}")),
        Err(e) => failures.push(e),
    }
    if let Some(event_loop) = event_loop {
        if let Err(e) = event_loop.stop().await {
            failures.push(e);
        }
    }
    finish(
        &peer,
        &format!("tether server ({}) against a {} client", shell.name(), kind.name()),
        cases.len(),
        failures,
    );
}

/// Records a case's result; `false` when it timed out (the peer is stuck or
/// gone, so the cases after it are not run: each would wait as long).
fn report(
    case: &Case,
    start: Instant,
    result: Result<Result<(), String>, tokio::time::error::Elapsed>,
    failures: &mut Vec<String>,
) -> bool {
    let (result, timed_out) = match result {
        Ok(result) => (result, false),
        Err(_) => (Err(format!("timed out after {CASE_TIMEOUT:?}")), true),
    };
    match result {
        Ok(()) => eprintln!("ok   {} in {:.2?}", case.label(), start.elapsed()),
        Err(e) => {
            eprintln!("FAIL {} in {:.2?}: {e}", case.label(), start.elapsed());
            failures.push(format!("{}: {e}", case.label()));
        }
    }
    !timed_out
}

fn skip_rest(cases: &[Case], failures: &mut Vec<String>) {
    for case in cases {
        failures.push(format!("{}: not run after the timeout", case.label()));
    }
}

fn finish(peer: &Process, what: &str, total: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{what}: {} of {total} cases failed:\n  {}\n--- peer output ---\n{}",
        failures.len(),
        failures.join("\n  "),
        peer.transcript()
    );
}

/// What tether's side of a case gives: its verdict and measurements, and
/// the extensions it negotiated.
pub(crate) type Side = (Result<Outcome, String>, Vec<String>);

async fn client_case(
    shell: Shell,
    kind: PeerKind,
    peer: &mut Process,
    port: u16,
    id: usize,
    case: &Case,
) -> Result<(), String> {
    let url = format!("ws://127.0.0.1:{port}/interop?{}", case.query(id, true));
    let case_ = *case;
    let (outcome, extensions) = match shell {
        Shell::Tokio => {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
            let (io, counters) = Counted::new(tcp);
            client_side::<_, tether_tokio::Tokio>(io, counters, url, case_).await?
        }
        Shell::Smol | Shell::AsyncStd => {
            on_thread(shell, async move {
                let tcp = async_net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                let (io, counters) = Counted::new(tcp);
                client_side::<_, tether_futures::FuturesIo>(io, counters, url, case_).await
            })
            .await?
        }
        Shell::Blocking => {
            on_thread(shell, async move {
                let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
                tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                let (io, counters) = Counted::new(tcp);
                client_side::<_, tether_blocking::Blocking>(tether_blocking::Transport::new(io), counters, url, case_)
                    .await
            })
            .await?
        }
        Shell::Compio => {
            on_compio_thread(move || async move {
                let tcp = compio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                let io = tether_compio::CompioStream::from(tcp);
                client_side::<_, tether_compio::Compio>(io, Counters::from_connection(), url, case_).await
            })
            .await?
        }
        Shell::Mio => return Err("tether-mio has no client".to_owned()),
    };
    let report = peer_report(peer, id).await?;
    check(kind, case, true, outcome, &extensions, &report)
}

/// tether's side of a client case, on any shell.
async fn client_side<S, R: RuntimeIo<S>>(io: S, counters: Counters, url: String, case: Case) -> Result<Side, String> {
    let mut builder = ClientBuilder::<R>::new(&url)
        .config(config())
        .connect_timeout(Some(Duration::from_secs(30)));
    if case.scenario == Scenario::Subprotocol {
        builder = builder.protocols(OFFERED);
    }
    if let Some(params) = case.tether {
        builder = builder.permessage_deflate(params.tether_config());
    }
    let mut ws = builder
        .connect_over(io)
        .await
        .map_err(|e| format!("tether's opening handshake: {e}"))?;
    Ok(run_scenario(&mut ws, &counters, case).await)
    // A tether side that failed hangs up here (`ws` dropped), so the peer
    // reports at once.
}

async fn run_scenario<S, R: RuntimeIo<S>>(ws: &mut WebSocketStream<S, R>, counters: &Counters, case: Case) -> Side {
    let outcome = case.scenario.run(ws, counters).await;
    let extensions: Vec<String> = ws.extensions().map(str::to_owned).collect();
    (outcome, extensions)
}

async fn server_case(
    shell: Shell,
    kind: PeerKind,
    listener: &std::net::TcpListener,
    peer: &mut Process,
    id: usize,
    case: &Case,
) -> Result<(), String> {
    let listener = listener.try_clone().map_err(|e| format!("listener: {e}"))?;
    let case_ = *case;
    let side = match shell {
        Shell::Tokio => {
            listener.set_nonblocking(true).map_err(|e| format!("listener: {e}"))?;
            let listener = TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
            let (tcp, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
            tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
            let (io, counters) = Counted::new(tcp);
            server_side::<_, tether_tokio::Tokio>(io, counters, id, case_).await
        }
        Shell::Smol | Shell::AsyncStd => {
            on_thread(shell, async move {
                let listener = async_net::TcpListener::try_from(listener).map_err(|e| format!("listener: {e}"))?;
                let (tcp, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
                tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                let (io, counters) = Counted::new(tcp);
                Ok(server_side::<_, tether_futures::FuturesIo>(io, counters, id, case_).await)
            })
            .await?
        }
        Shell::Blocking => {
            on_thread(shell, async move {
                listener.set_nonblocking(false).map_err(|e| format!("listener: {e}"))?;
                let (tcp, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
                tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                let (io, counters) = Counted::new(tcp);
                let io = tether_blocking::Transport::new(io);
                Ok(server_side::<_, tether_blocking::Blocking>(io, counters, id, case_).await)
            })
            .await?
        }
        Shell::Compio => {
            on_compio_thread(move || async move {
                let listener = compio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
                let (tcp, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
                tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                let io = tether_compio::CompioStream::from(tcp);
                Ok(server_side::<_, tether_compio::Compio>(io, Counters::from_connection(), id, case_).await)
            })
            .await?
        }
        Shell::Mio => return Err("tether-mio's cases run through its event loop".to_owned()),
    };
    conclude(kind, case, peer, id, side, None).await
}

/// The end of a server case: tether's side (or why it did not run), and
/// the peer's report of the case, unless read already; then [`check`].
async fn conclude(
    kind: PeerKind,
    case: &Case,
    peer: &mut Process,
    id: usize,
    side: Result<Side, String>,
    report: Option<Result<Report, String>>,
) -> Result<(), String> {
    let report = match report {
        Some(report) => report,
        None => peer_report(peer, id).await,
    };
    let (outcome, extensions) = match side {
        Ok(side) => side,
        Err(e) => return Err(format!("{e}; the peer: {report:?}")),
    };
    let report = report?;
    check(kind, case, false, outcome, &extensions, &report)
}

/// tether's side of a server case, on any shell.
async fn server_side<S, R: RuntimeIo<S>>(io: S, counters: Counters, id: usize, case: Case) -> Result<Side, String> {
    let mut request_check = Ok(());
    let mut server = Server::<R>::default();
    server.config = config();
    let accepted = server
        .accept_with(io, |request| {
            let pairs = query::decode_pairs(request.query().unwrap_or(""));
            if query::get(&pairs, "id") != Some(id.to_string().as_str()) {
                request_check = Err(format!("expected the request of case {id}, got {:?}", request.target()));
            }
            let mut accept = Accept::new();
            if case.scenario == Scenario::Subprotocol {
                if request.protocols() != OFFERED {
                    request_check = Err(format!("expected the offer {OFFERED:?}, got {:?}", request.protocols()));
                }
                accept = accept.subprotocol(PICKED);
            }
            if let Some(params) = case.tether {
                accept = accept.permessage_deflate(params.tether_config());
            }
            Ok(accept)
        })
        .await;
    let mut ws = accepted.map_err(|e| format!("tether's opening handshake: {e}"))?;
    request_check?;
    Ok(run_scenario(&mut ws, &counters, case).await)
}

/// The shell (adapter) that runs tether's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// tether-tokio, on the test's own tokio runtime.
    Tokio,
    /// tether-futures, on a smol executor of its own thread.
    Smol,
    /// tether-futures, on async-std's executor, from its own thread.
    AsyncStd,
    /// tether-blocking, on a thread of its own.
    Blocking,
    /// tether-compio, on a compio runtime of its own thread
    /// (`tether_compio::runtime`: io_uring, or compio's poll driver where
    /// io_uring is not available).
    Compio,
    /// tether-mio, a server only: one event loop on a thread of its own
    /// serves every case of a test, each connection a state machine of
    /// callbacks (`interop/src/mio_server.rs`).
    Mio,
}

impl Shell {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tokio => "tether-tokio",
            Self::Smol => "tether-futures on smol",
            Self::AsyncStd => "tether-futures on async-std",
            Self::Blocking => "tether-blocking",
            Self::Compio => "tether-compio",
            Self::Mio => "tether-mio",
        }
    }
}

/// Runs `future` on a thread of its own, on `shell`'s executor (the
/// blocking shell's `block_on` for `Blocking`), without blocking the test's
/// tokio runtime.
async fn on_thread<T: Send + 'static>(
    shell: Shell,
    future: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = match shell {
            Shell::AsyncStd => async_std::task::block_on(future),
            Shell::Blocking => tether_blocking::block_on(future),
            Shell::Tokio | Shell::Smol => smol::block_on(future),
            Shell::Compio => unreachable!("tether-compio's side runs through on_compio_thread"),
            Shell::Mio => unreachable!("tether-mio's side runs in its event loop"),
        };
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| "tether's side panicked".to_owned())?
}

/// Runs the future that `make` returns on a thread of its own, on a runtime
/// made by `tether_compio::runtime` (compio's tasks stay on their thread,
/// so the future is made there and need not be `Send`).
async fn on_compio_thread<T, F>(make: impl FnOnce() -> F + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    F: Future<Output = Result<T, String>> + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = match tether_compio::runtime() {
            Ok(runtime) => runtime.block_on(make()),
            Err(e) => Err(format!("compio's runtime: {e}")),
        };
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| "tether's side panicked".to_owned())?
}

/// A peer's `RESULT` line, decoded.
#[derive(Debug)]
pub struct Report(Vec<(String, String)>);

impl Report {
    /// A field, or "" when absent.
    pub fn get(&self, key: &str) -> &str {
        query::get(&self.0, key).unwrap_or("")
    }
}

/// The peer's report of case `id` (older reports are skipped).
pub(crate) async fn peer_report(peer: &mut Process, id: usize) -> Result<Report, String> {
    loop {
        let line = peer.stdout_line("RESULT ", REPORT_TIMEOUT).await?;
        let report = Report(query::decode_pairs(line.trim()));
        if report.get("id") == id.to_string() {
            return Ok(report);
        }
    }
}

/// Both sides' checks, and what the peer saw against what tether expects.
fn check(
    kind: PeerKind,
    case: &Case,
    tether_is_client: bool,
    outcome: Result<Outcome, String>,
    extensions: &[String],
    report: &Report,
) -> Result<(), String> {
    let mut errors = Vec::new();
    if report.get("ok") != "1" {
        errors.push(format!("{} side: {}", kind.name(), report.get("error")));
    }
    let outcome = outcome.unwrap_or_else(|e| {
        errors.push(format!("tether side: {e}"));
        Outcome::default()
    });
    let mut expect = |what: &str, got: &str, want: &str| {
        if got != want {
            errors.push(format!("the peer saw {what} {got:?}, expected {want:?}"));
        }
    };
    match case.scenario {
        Scenario::CloseTether => {
            expect("the close code", report.get("close_code"), "4001");
            expect("the close reason", report.get("close_reason"), "tether says bye ✓");
        }
        // tether answers a close with the peer's code and no reason.
        Scenario::ClosePeer => expect("tether's answer to its close", report.get("close_code"), "4002"),
        Scenario::Ping => expect("the pings", report.get("pings"), "tether-ping"),
        Scenario::Subprotocol => expect("the subprotocol", report.get("subprotocol"), PICKED),
        Scenario::Fragmented if kind == PeerKind::Python => expect("frames", report.get("frames"), "4,4"),
        Scenario::Deflate if kind == PeerKind::Python => expect("frames", report.get("frames"), "4"),
        _ => {}
    }
    if !matches!(case.scenario, Scenario::CloseTether | Scenario::ClosePeer) {
        expect("the close code", report.get("close_code"), "1000");
        expect("the close reason", report.get("close_reason"), "done");
    }
    let header = report.get("extensions");
    match (case.tether, case.peer) {
        (Some(tether), Some(peer)) => {
            if extensions != ["permessage-deflate"] {
                errors.push(format!("tether negotiated {extensions:?}, expected permessage-deflate"));
            }
            if let Err(e) = check_agreement(case, tether_is_client, tether, peer, header, &outcome) {
                errors.push(e);
            }
        }
        _ => {
            if !extensions.is_empty() || !header.is_empty() {
                errors.push(format!(
                    "extensions without compression: tether {extensions:?}, peer {header:?}"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The response header the peer saw against RFC 7692's answer to the offer,
/// and, in the `deflate` scenario, each compressor's output against it.
fn check_agreement(
    case: &Case,
    tether_is_client: bool,
    tether: Params,
    peer: Params,
    header: &str,
    outcome: &Outcome,
) -> Result<(), String> {
    let agreed = Agreed::from_header(header)?;
    let (offer, server) = if tether_is_client {
        (tether.offer(true), peer)
    } else {
        (peer.offer(false), tether)
    };
    let expected = Agreed::expected(offer, server);
    if agreed != expected {
        return Err(format!(
            "the handshake agreed on {header:?} = {agreed:?}, expected {expected:?}"
        ));
    }
    if case.scenario == Scenario::Deflate {
        let (nct, bits) = agreed.compressor(tether_is_client);
        check_wire("tether's compressor", &outcome.tether_sent, nct, bits)?;
        let (nct, bits) = agreed.compressor(!tether_is_client);
        check_wire("the peer's compressor", &outcome.peer_sent, nct, bits)?;
    }
    Ok(())
}
