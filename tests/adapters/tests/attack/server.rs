//! The server under attack: an echo server of one adapter on 127.0.0.1,
//! on its own thread, with the settings of a [`Settings`] (handshake
//! limits, connection settings, permessage-deflate), recording how each
//! connection ended on its side ([`Outcome`]: the typed
//! `tether_driver::Error`, the close info) under the peer's address.
//!
//! The async adapters (tokio, smol, async-std) share one set of handlers,
//! generic over the driver's `WebSocketStream<S, R>`: their timers are the
//! runtime's own (`R::timer`), their I/O the runtime's sockets. All the
//! connections of one server run in one task of the adapter's executor
//! (`FuturesUnordered`), so that stopping the server (dropping that task)
//! ends them all, whatever the executor. The blocking adapter serves a
//! thread per connection, with the same handlers written with its blocking
//! API ([`blocking`]). tether-mio serves every connection from one event
//! loop with callbacks: the same behaviours, written as a `Handler`
//! ([`mio`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{select, Either};
use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use http::StatusCode;
use tether_adapter_tests::Adapter;
use tether_driver::{
    Accept, CloseCause, CloseCode, Closed, Error, HttpResponse, Message, Runtime, RuntimeIo, Server, Timer,
    WebSocketStream,
};
use tokio::sync::Notify;

use super::{path, quiet, HANG_LIMIT, SEND_CHUNK, SEND_STALL};

mod blocking;
mod mio;

/// The settings of a test server: the public fields of the driver's
/// `Server<R>` (handshake limits, connection settings, permessage-deflate),
/// filled by the tests on a `Server<Tokio>` and copied into each adapter's
/// own `Server<R>` (the runtime marker is all that differs).
pub type Settings = Server<tether_tokio::Tokio>;

/// How the server side of one connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// `accept_with` failed with this typed error (an HTTP answer was sent).
    Rejected(Error),
    /// The WebSocket opened, and its handler ran to the end.
    Ended(Ended),
}

/// What the server side of an open connection saw.
#[derive(Debug, Default)]
pub struct Ended {
    /// The lengths of the messages received, in order.
    pub received: Vec<usize>,
    /// What ended the handler: `recv`'s error (`close`'s for
    /// `CLOSE_FIRST`, the failed send's for `SEND_FOREVER`); `None` after a
    /// clean close, or when `SEND_FOREVER` gave up on a stalled peer.
    pub end: Option<Error>,
    /// The connection's `close_info` at the end.
    pub closed: Option<Closed>,
    /// Messages sent by `SEND_FOREVER`.
    pub sent: usize,
    /// Whether a send of `SEND_FOREVER` waited past [`SEND_STALL`].
    pub stalled: bool,
    /// Most bytes queued for the transport at once (`SEND_FOREVER`,
    /// `WATCH_BUFFER`).
    pub max_buffered: usize,
    /// `FILL_THEN_*`: `close` or `recv` had not returned after [`HANG_LIMIT`].
    pub hung: bool,
    /// `FILL_THEN_*`: how long `close` or `recv` took.
    pub took: Duration,
}

impl Outcome {
    /// The open connection's record; panics on a rejected handshake.
    pub fn ended(self) -> Ended {
        match self {
            Self::Ended(ended) => ended,
            Self::Rejected(e) => panic!("the handshake was expected to succeed: {e:?}"),
        }
    }

    /// The handshake's error; panics if the WebSocket opened.
    pub fn rejected(self) -> Error {
        match self {
            Self::Rejected(e) => e,
            Self::Ended(ended) => panic!("the handshake was expected to fail: {ended:?}"),
        }
    }
}

/// The outcomes reported by the server's connections, by peer address.
#[derive(Default)]
struct Outcomes {
    by_peer: Mutex<HashMap<SocketAddr, Outcome>>,
    notify: Notify,
}

impl Outcomes {
    fn report(&self, peer: SocketAddr, outcome: Outcome) {
        self.by_peer.lock().unwrap().insert(peer, outcome);
        self.notify.notify_waiters();
    }
}

/// A server of one adapter on 127.0.0.1, on its own thread, accepting with
/// `accept_with`, recording each connection's [`Outcome`] under the peer's
/// address. Dropping it stops it and ends its connections.
pub struct TestServer {
    pub addr: SocketAddr,
    pub adapter: Adapter,
    outcomes: Arc<Outcomes>,
    stop: Arc<AtomicBool>,
    /// The tether-mio server's handle, which stops its loop.
    mio: Arc<OnceLock<tether_mio::Handle>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.mio.get() {
            // Stops accepting, closes the connections left with 1001; the
            // loop returns once they are over.
            let _ = handle.stop();
        }
        // Wakes the accept loop, which sees the flag and returns.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            // Not from a panicking test: the server's panic would hide its own.
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("the {:?} test server panicked", self.adapter);
            }
        }
    }
}

/// What a server thread shares with its [`TestServer`].
#[derive(Clone)]
struct Shared {
    outcomes: Arc<Outcomes>,
    stop: Arc<AtomicBool>,
    /// Set by the tether-mio server before it reports its address.
    mio: Arc<OnceLock<tether_mio::Handle>>,
}

impl TestServer {
    /// Serves with `adapter`, with `settings`' handshake limits, connection
    /// settings and permessage-deflate settings.
    pub async fn start(adapter: Adapter, settings: Settings) -> Self {
        let shared = Shared {
            outcomes: Arc::new(Outcomes::default()),
            stop: Arc::new(AtomicBool::new(false)),
            mio: Arc::new(OnceLock::new()),
        };
        let (addr_tx, addr_rx) = mpsc::channel();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("{adapter:?} test server"))
                .spawn(move || run_server(adapter, &settings, &shared, addr_tx))
                .unwrap()
        };
        let addr = addr_rx.recv().expect("the server thread did not start");
        Self {
            addr,
            adapter,
            outcomes: shared.outcomes,
            stop: shared.stop,
            mio: shared.mio,
            thread: Some(thread),
        }
    }

    /// `ws://` URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Waits for the outcome of the connection from `peer`.
    pub async fn outcome(&self, peer: SocketAddr) -> Outcome {
        loop {
            let notified = self.outcomes.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.outcomes.by_peer.lock().unwrap().remove(&peer) {
                return outcome;
            }
            notified.await;
        }
    }

    /// A well-behaved tether-tokio client on the same server: text and
    /// binary echo intact, and the close handshake completes with 1000 on
    /// both sides.
    pub async fn check_healthy(&self) {
        use tokio::time::timeout;
        // Fragmented: the servers of some tests take frames of 64 KiB at most.
        let mut config = quiet();
        config.connection.max_send_frame_size = Some(16 * 1024);
        let mut ws = timeout(
            Duration::from_secs(5),
            tether_tokio::ClientBuilder::new(&self.url("/"))
                .config(config)
                .connect(),
        )
        .await
        .expect("a healthy client could not connect in time")
        .expect("a healthy client could not connect");
        let peer = ws.local_addr().unwrap();
        let binary = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let messages = [Message::Text("still fine? é🦀".into()), Message::Binary(binary)];
        for message in messages.clone() {
            ws.send(message.clone()).await.unwrap();
            let echo = timeout(Duration::from_secs(5), ws.recv())
                .await
                .expect("the echo did not come back in time");
            assert_eq!(echo.unwrap().unwrap(), message);
        }
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        assert_eq!(ws.close_info().unwrap().code, CloseCode::NORMAL);
        let ended = self.outcome(peer).await.ended();
        assert!(ended.end.is_none(), "{ended:?}");
        let closed = ended.closed.unwrap();
        assert_eq!((closed.code, closed.cause), (CloseCode::NORMAL, CloseCause::Remote));
        assert_eq!(ended.received, messages.iter().map(Message::len).collect::<Vec<_>>());
    }
}

/// The same settings for runtime `R`.
fn settings_for<R: Runtime>(settings: &Settings) -> Server<R> {
    let mut server = Server::<R>::new();
    server.handshake = settings.handshake.clone();
    server.config = settings.config.clone();
    server.deflate = settings.deflate.clone();
    server
}

/// The body of the server thread: binds, reports the address, serves until
/// stopped.
fn run_server(adapter: Adapter, settings: &Settings, shared: &Shared, addr: mpsc::Sender<SocketAddr>) {
    match adapter {
        Adapter::TokioHttp2 => panic!("the bad-input battery speaks HTTP/1.1 on raw TCP"),
        Adapter::Tokio => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr.send(listener.local_addr().unwrap()).unwrap();
                let incoming = futures_util::stream::unfold(listener, |listener| async move {
                    let accepted = listener.accept().await;
                    Some((accepted, listener))
                });
                serve_all(pin!(incoming), &settings_for::<tether_tokio::Tokio>(settings), shared).await;
            });
        }
        Adapter::Smol => smol::block_on(async {
            let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr.send(listener.local_addr().unwrap()).unwrap();
            let incoming = futures_util::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await;
                Some((accepted, listener))
            });
            serve_all(
                pin!(incoming),
                &settings_for::<tether_futures::FuturesIo>(settings),
                shared,
            )
            .await;
        }),
        Adapter::AsyncStd => async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr.send(listener.local_addr().unwrap()).unwrap();
            let incoming = futures_util::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await;
                Some((accepted, listener))
            });
            serve_all(
                pin!(incoming),
                &settings_for::<tether_futures::FuturesIo>(settings),
                shared,
            )
            .await;
        }),
        Adapter::Blocking => blocking::run(settings, shared, &addr),
        Adapter::Mio => mio::run(settings, shared, &addr),
        Adapter::Compio => tether_compio::runtime().unwrap().block_on(async {
            let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr.send(listener.local_addr().unwrap()).unwrap();
            let incoming = futures_util::stream::unfold(listener, |listener| async move {
                let accepted = listener
                    .accept()
                    .await
                    .map(|(tcp, peer)| (tether_compio::CompioStream::from(tcp), peer));
                Some((accepted, listener))
            });
            serve_all(pin!(incoming), &settings_for::<tether_compio::Compio>(settings), shared).await;
        }),
    }
}

// ---- The async adapters ----------------------------------------------------

/// Accepts from `incoming` and serves every connection in this one task
/// until the server is stopped; returning drops the connections left.
async fn serve_all<S, R, I>(mut incoming: std::pin::Pin<&mut I>, server: &Server<R>, shared: &Shared)
where
    R: RuntimeIo<S>,
    I: Stream<Item = io::Result<(S, SocketAddr)>>,
{
    let mut connections = FuturesUnordered::new();
    poll_fn(|cx| loop {
        while let Poll::Ready(Some(())) = connections.poll_next_unpin(cx) {}
        match incoming.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok((io, peer)))) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                let outcomes = shared.outcomes.clone();
                connections.push(async move {
                    let outcome = serve(server, io).await;
                    outcomes.report(peer, outcome);
                });
            }
            // A failed accept (the peer reset before it): next.
            Poll::Ready(Some(Err(_))) => {}
            Poll::Ready(None) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await;
}

/// The runtime's timer, as a sleep.
async fn sleep<R: Runtime>(duration: Duration) {
    let mut timer = R::timer(R::now() + duration);
    poll_fn(|cx| timer.poll_expired(cx)).await;
}

/// `future`'s output, or `Err` if `duration` passed first (the runtime's
/// timer).
async fn timeout<R: Runtime, F: Future>(duration: Duration, future: F) -> Result<F::Output, ()> {
    match select(pin!(future), pin!(sleep::<R>(duration))).await {
        Either::Left((output, _)) => Ok(output),
        Either::Right(_) => Err(()),
    }
}

async fn serve<S, R: RuntimeIo<S>>(server: &Server<R>, io: S) -> Outcome {
    let mut options = Accept::new();
    if let Some(deflate) = &server.deflate {
        options = options.permessage_deflate(deflate.clone());
    }
    let mut path = String::new();
    let accepted = server
        .accept_with(io, |request| {
            path = request.path().to_owned();
            if path == path::NOT_FOUND {
                Err(HttpResponse::new(StatusCode::NOT_FOUND))
            } else {
                Ok(options)
            }
        })
        .await;
    let ws = match accepted {
        Ok(ws) => ws,
        Err(e) => return Outcome::Rejected(e),
    };
    Outcome::Ended(match path.as_str() {
        path::SEND_FOREVER => send_forever(ws).await,
        path::CLOSE_FIRST => close_first(ws).await,
        path::WATCH_BUFFER => watch_buffer(ws).await,
        path::FILL_THEN_CLOSE | path::FILL_THEN_RECV => fill_then(ws, path == path::FILL_THEN_CLOSE).await,
        path::FEED_ECHO => echo(ws, true).await,
        _ => echo(ws, false).await,
    })
}

/// Echoes until the end; with `feed`, the answers are queued and written
/// when receiving waits (one write per read) instead of sent one by one.
async fn echo<S, R: RuntimeIo<S>>(mut ws: WebSocketStream<S, R>, feed: bool) -> Ended {
    let mut ended = Ended::default();
    loop {
        match ws.recv().await {
            Some(Ok(message)) => {
                ended.received.push(message.len());
                // A failed send ends nothing: receiving reports the end.
                let _ = if feed {
                    ws.feed(message).await
                } else {
                    ws.send(message).await
                };
            }
            Some(Err(e)) => {
                ended.end = Some(e);
                break;
            }
            None => break,
        }
    }
    ended.closed = ws.close_info().cloned();
    ended
}

/// Fills the write buffer of a peer that does not read, then closes (or
/// receives), recording whether that returned.
async fn fill_then<S, R: RuntimeIo<S>>(mut ws: WebSocketStream<S, R>, close: bool) -> Ended {
    let mut ended = fill(&mut ws).await;
    if ended.end.is_some() {
        return ended;
    }
    let started = Instant::now();
    let result = if close {
        timeout::<R, _>(HANG_LIMIT, ws.close(CloseCode::NORMAL, "server closing"))
            .await
            .map(Result::err)
    } else {
        timeout::<R, _>(HANG_LIMIT, ws.recv())
            .await
            .map(|received| match received {
                Some(Ok(message)) => panic!("the peer sent nothing, got {message:?}"),
                Some(Err(e)) => Some(e),
                None => None,
            })
    };
    ended.took = started.elapsed();
    match result {
        Ok(end) => ended.end = end,
        Err(()) => ended.hung = true,
    }
    ended.closed = ws.close_info().cloned();
    ended
}

async fn send_forever<S, R: RuntimeIo<S>>(mut ws: WebSocketStream<S, R>) -> Ended {
    let mut ended = fill(&mut ws).await;
    ended.closed = ws.close_info().cloned();
    ended
}

/// Sends [`SEND_CHUNK`] messages until three sends in a row wait past
/// [`SEND_STALL`].
async fn fill<S, R: RuntimeIo<S>>(ws: &mut WebSocketStream<S, R>) -> Ended {
    let mut ended = Ended::default();
    let chunk = Bytes::from(vec![7u8; SEND_CHUNK]);
    let mut stalls = 0;
    // Three stalls in a row: the peer does not read, stop trying.
    while stalls < 3 {
        match timeout::<R, _>(SEND_STALL, ws.send(Message::Binary(chunk.clone()))).await {
            Ok(Ok(())) => {
                ended.sent += 1;
                stalls = 0;
            }
            Ok(Err(e)) => {
                ended.end = Some(e);
                break;
            }
            Err(()) => {
                ended.stalled = true;
                stalls += 1;
            }
        }
        ended.max_buffered = ended.max_buffered.max(ws.buffered_amount());
    }
    ended
}

async fn close_first<S, R: RuntimeIo<S>>(mut ws: WebSocketStream<S, R>) -> Ended {
    let result = ws.close(CloseCode::NORMAL, "server closing").await;
    Ended {
        end: result.err(),
        closed: ws.close_info().cloned(),
        ..Ended::default()
    }
}

/// Receives on the read half while the write half's buffered amount is
/// sampled every 5 ms (in the same task: the halves share the connection).
async fn watch_buffer<S, R: RuntimeIo<S>>(ws: WebSocketStream<S, R>) -> Ended {
    let (mut read, write) = ws.split();
    let most = Cell::new(0);
    let reader = async {
        let mut ended = Ended::default();
        while let Some(message) = read.recv().await {
            match message {
                Ok(message) => ended.received.push(message.len()),
                Err(e) => ended.end = Some(e),
            }
        }
        ended.closed = read.close_info();
        ended
    };
    let watcher = async {
        loop {
            most.set(most.get().max(write.buffered_amount()));
            sleep::<R>(Duration::from_millis(5)).await;
        }
    };
    let mut ended = match select(pin!(reader), pin!(watcher)).await {
        Either::Left((ended, _)) => ended,
        Either::Right(((), _)) => unreachable!("the watcher never ends"),
    };
    ended.max_buffered = most.get().max(write.buffered_amount());
    ended
}
