//! Load, against the server of every adapter: one server (tokio,
//! futures-io on smol and on async-std, blocking std::net with a thread
//! per connection) holds 2,000 concurrent connections from 2,000
//! tether-tokio clients in the same process (the load generator, the same
//! for every adapter), all open at once, each echoing a sequence of mixed
//! messages (text and binary, empty to 200 KB, across the 7/16/64-bit
//! length boundaries and fragmented into several frames), checked intact
//! and in order; then all close with 1000, seen on both sides.
//!
//! Memory per connection is printed (run with `--nocapture`): the growth of
//! VmRSS and of the bytes allocated (a counting allocator) with every
//! connection open, divided by the 4,000 endpoints (2,000 clients and
//! 2,000 server sides), idle and again after the traffic; the clients are
//! the same in every run, so the differences between adapters are their
//! servers'. Generous upper bounds make a leak fail the test. The blocking
//! server's thread stacks are not allocations (mmap) but show in its RSS.
//!
//! One test per adapter (`tokio_server`, `smol_server`, ...), run one at a
//! time (a lock), so that the process-wide figures are each run's own. The
//! allocated bytes are exact per run; VmRSS is not given back between runs
//! (the allocator keeps freed pages), so the first run's RSS figures are
//! the clean ones: run one adapter alone (`cargo test -p
//! tether-adapter-tests --test load -- smol_server`) for its RSS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

mod alloc;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_adapter_tests::Adapter;
use tether_driver::{CloseCause, CloseCode, Closed, Message, RuntimeIo, Server, WebSocketConfig};
use tether_futures::FuturesIo;
use tether_tokio::{ClientBuilder, Tokio};
use tokio::sync::{Barrier, Semaphore};
use tokio::time::{sleep, timeout};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// Connections held at once.
const CONNECTIONS: usize = 2000;
/// Connection attempts in flight at once.
const CONNECTING: usize = 200;
/// The whole test is bounded by this; it takes a fraction of it.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Frames are cut at this size by both ends, so larger messages travel
/// fragmented.
const FRAME: usize = 16 * 1024;

/// Upper bounds per endpoint, about four to eight times what was measured
/// (about 4 KB allocated and 5 KB of RSS per idle endpoint; the RSS after
/// the traffic is higher, 25-30 KB, because the allocator keeps freed
/// pages). Holding the messages (88 MiB, 22 KB per endpoint) or a 64 KiB
/// read buffer per idle connection trips the allocated bound.
const MAX_ALLOCATED_PER_ENDPOINT: usize = 16 * 1024;
const MAX_RSS_PER_IDLE_ENDPOINT: usize = 32 * 1024;
const MAX_RSS_PER_ENDPOINT_AFTER: usize = 128 * 1024;
/// The blocking server's idle RSS per endpoint: each server connection is a
/// thread, whose stack pages (touched by the handshake and the echo) stay
/// resident; its heap is bounded like the others' (`MAX_ALLOCATED_...`).
const MAX_RSS_PER_IDLE_ENDPOINT_BLOCKING: usize = 64 * 1024;

/// The idle RSS bound of `adapter`'s server (see the blocking one's).
fn max_rss_per_idle_endpoint(adapter: Adapter) -> usize {
    match adapter {
        Adapter::Blocking => MAX_RSS_PER_IDLE_ENDPOINT_BLOCKING,
        _ => MAX_RSS_PER_IDLE_ENDPOINT,
    }
}

#[derive(Default)]
struct ServerCounts {
    live: AtomicUsize,
    most_live: AtomicUsize,
    /// Connections whose receive side ended cleanly with the client's 1000.
    clean: AtomicUsize,
    /// Connections that ended otherwise.
    failed: AtomicUsize,
    echoed: AtomicUsize,
}

/// What one client did.
#[derive(Debug, Default)]
struct ClientReport {
    sent: usize,
    bytes: usize,
}

/// Runs the load against `adapter`'s server, one adapter at a time.
fn load(adapter: Adapter) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let fd_limit = raise_fd_limit();
    assert!(
        fd_limit >= 2 * CONNECTIONS as u64 + 100,
        "the file descriptor limit is {fd_limit}; this test needs {} (raise the hard limit)",
        2 * CONNECTIONS + 100
    );
    // The clients' runtime; the server has its own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        timeout(TEST_TIMEOUT, run(adapter))
            .await
            .unwrap_or_else(|_| panic!("{adapter:?}: the load test timed out"));
    });
}

macro_rules! load_tests {
    ($($name:ident: $adapter:ident,)*) => {
        $(
            #[test]
            fn $name() {
                load(Adapter::$adapter);
            }
        )*
    };
}

load_tests! {
    tokio_server: Tokio,
    smol_server: Smol,
    async_std_server: AsyncStd,
    blocking_server: Blocking,
    compio_server: Compio,
}

async fn run(adapter: Adapter) {
    let started = Instant::now();
    let rss_before = vm_rss();
    let allocated_before = alloc::current();

    // The server of `adapter`: one task (or thread) per connection, echoing.
    let counts = Arc::new(ServerCounts::default());
    let server = LoadServer::start(adapter, counts.clone());
    let addr = server.addr;

    // The clients: connect, wait for all, echo, wait for all, close.
    let connected = Arc::new(Barrier::new(CONNECTIONS + 1));
    let go = Arc::new(Barrier::new(CONNECTIONS + 1));
    let echoed = Arc::new(Barrier::new(CONNECTIONS + 1));
    let close = Arc::new(Barrier::new(CONNECTIONS + 1));
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let barriers = [connected.clone(), go.clone(), echoed.clone(), close.clone()];
            tokio::spawn(client(i, addr, barriers, connecting.clone()))
        })
        .collect();

    connected.wait().await;
    let connect_time = started.elapsed();
    wait_for(
        || counts.live.load(Relaxed) == CONNECTIONS,
        "the server to see every connection",
    )
    .await;
    // Let the last reads settle into their idle state.
    sleep(Duration::from_millis(200)).await;
    let rss_idle = vm_rss();
    let allocated_idle = alloc::current();
    let live_idle = counts.live.load(Relaxed);

    let echo_started = Instant::now();
    go.wait().await;
    echoed.wait().await;
    let echo_time = echo_started.elapsed();
    sleep(Duration::from_millis(200)).await;
    let rss_after = vm_rss();
    let allocated_after = alloc::current();
    let live_after = counts.live.load(Relaxed);
    let peak_rss = vm_hwm();

    close.wait().await;
    let mut messages = 0;
    let mut bytes = 0;
    let mut failures = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        match client.await.unwrap() {
            Ok(report) => {
                messages += report.sent;
                bytes += report.bytes;
            }
            Err(e) => failures.push(format!("client {i}: {e}")),
        }
    }
    wait_for(
        || counts.clean.load(Relaxed) + counts.failed.load(Relaxed) == CONNECTIONS,
        "every server side to end",
    )
    .await;
    drop(server);
    let total = started.elapsed();

    let endpoints = 2 * CONNECTIONS;
    let rss_idle_each = rss_idle.saturating_sub(rss_before) / endpoints;
    let rss_after_each = rss_after.saturating_sub(rss_before) / endpoints;
    let allocated_idle_each = allocated_idle.saturating_sub(allocated_before) / endpoints;
    let allocated_after_each = allocated_after.saturating_sub(allocated_before) / endpoints;
    println!(
        "load, {adapter:?} server: {CONNECTIONS} connections open at once (server saw {live_idle} live, at most {}); \
         connected in {connect_time:.2?}; {messages} messages ({}) echoed in {echo_time:.2?}; \
         all closed, total {total:.2?}",
        counts.most_live.load(Relaxed),
        alloc::mib(bytes)
    );
    println!(
        "load, {adapter:?} server: memory per endpoint ({endpoints} endpoints: {CONNECTIONS} clients + {CONNECTIONS} server sides): \
         idle {rss_idle_each} B RSS, {allocated_idle_each} B allocated; \
         after the echo {rss_after_each} B RSS, {allocated_after_each} B allocated; \
         VmRSS {} -> {} idle -> {} after, peak {}",
        alloc::mib(rss_before),
        alloc::mib(rss_idle),
        alloc::mib(rss_after),
        alloc::mib(peak_rss)
    );

    assert!(
        failures.is_empty(),
        "{adapter:?}: {} clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(live_idle, CONNECTIONS);
    assert_eq!(live_after, CONNECTIONS, "connections ended before the close");
    assert!(counts.most_live.load(Relaxed) >= CONNECTIONS);
    assert_eq!(counts.echoed.load(Relaxed), messages);
    assert_eq!(
        counts.clean.load(Relaxed),
        CONNECTIONS,
        "server sides that did not see 1000"
    );
    assert_eq!(counts.live.load(Relaxed), 0);
    for (what, each, bound) in [
        (
            "RSS per idle endpoint",
            rss_idle_each,
            max_rss_per_idle_endpoint(adapter),
        ),
        (
            "allocated per idle endpoint",
            allocated_idle_each,
            MAX_ALLOCATED_PER_ENDPOINT,
        ),
        (
            "RSS per endpoint after the echo",
            rss_after_each,
            MAX_RSS_PER_ENDPOINT_AFTER,
        ),
        (
            "allocated per endpoint after the echo",
            allocated_after_each,
            MAX_ALLOCATED_PER_ENDPOINT,
        ),
    ] {
        assert!(
            each <= bound,
            "{adapter:?}: {what}: {each} bytes, over the bound of {bound}"
        );
    }
}

/// A server of one adapter, echoing on every connection, counting in
/// [`ServerCounts`]; stopped when dropped.
struct LoadServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoadServer {
    fn start(adapter: Adapter, counts: Arc<ServerCounts>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // Room for every connection attempt in flight (std listens with 128).
        // SAFETY: `listen` on the listener's own socket, already listening:
        // Linux takes the new backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 4096) }, 0);
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut config = WebSocketConfig::default();
        config.connection.max_send_frame_size = Some(FRAME);
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || match adapter {
                Adapter::TokioHttp2 => panic!("the load test speaks HTTP/1.1 on raw TCP"),
                Adapter::Mio => panic!("the load test does not run tether-mio"),
                Adapter::Tokio => {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        listener.set_nonblocking(true).unwrap();
                        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                        let server = Arc::new(Server::<Tokio>::new().config(config));
                        while let Ok((tcp, _)) = listener.accept().await {
                            if stop.load(SeqCst) {
                                break;
                            }
                            let (server, counts) = (server.clone(), counts.clone());
                            tokio::spawn(async move { serve(&server, tcp, &counts).await });
                        }
                    });
                }
                Adapter::Smol => smol::block_on(async {
                    let listener = async_net::TcpListener::try_from(listener).unwrap();
                    let server = Arc::new(Server::<FuturesIo>::new().config(config));
                    while let Ok((tcp, _)) = listener.accept().await {
                        if stop.load(SeqCst) {
                            break;
                        }
                        let (server, counts) = (server.clone(), counts.clone());
                        smol::spawn(async move { serve(&server, tcp, &counts).await }).detach();
                    }
                }),
                Adapter::AsyncStd => async_std::task::block_on(async {
                    let listener = async_std::net::TcpListener::from(listener);
                    let server = Arc::new(Server::<FuturesIo>::new().config(config));
                    while let Ok((tcp, _)) = listener.accept().await {
                        if stop.load(SeqCst) {
                            break;
                        }
                        let (server, counts) = (server.clone(), counts.clone());
                        async_std::task::spawn(async move { serve(&server, tcp, &counts).await });
                    }
                }),
                Adapter::Compio => tether_compio::runtime().unwrap().block_on(async {
                    let listener = compio::net::TcpListener::from_std(listener).unwrap();
                    let server = std::rc::Rc::new(Server::<tether_compio::Compio>::new().config(config));
                    while let Ok((tcp, _)) = listener.accept().await {
                        if stop.load(SeqCst) {
                            break;
                        }
                        let (server, counts) = (server.clone(), counts.clone());
                        let io = tether_compio::CompioStream::from(tcp);
                        compio::runtime::spawn(async move { serve(&server, io, &counts).await }).detach();
                    }
                }),
                Adapter::Blocking => {
                    let server = tether_blocking::Server::new().config(config);
                    for tcp in listener.incoming() {
                        if stop.load(SeqCst) {
                            break;
                        }
                        let Ok(tcp) = tcp else { continue };
                        let (server, counts) = (server.clone(), counts.clone());
                        // Small stacks: 2,000 of them.
                        std::thread::Builder::new()
                            .stack_size(256 * 1024)
                            .spawn(move || serve_blocking(&server, tcp, &counts))
                            .unwrap();
                    }
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LoadServer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        // Wakes the accept loop, which sees the flag and returns.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("the load server panicked");
            }
        }
    }
}

/// The server side of one connection on an async adapter: echo until the
/// client closes.
async fn serve<S, R: RuntimeIo<S>>(server: &Server<R>, io: S, counts: &ServerCounts) {
    let Ok(mut ws) = server.accept(io).await else {
        counts.failed.fetch_add(1, Relaxed);
        return;
    };
    let live = counts.live.fetch_add(1, Relaxed) + 1;
    counts.most_live.fetch_max(live, Relaxed);
    let mut clean = true;
    loop {
        match ws.recv().await {
            Some(Ok(message)) => {
                counts.echoed.fetch_add(1, Relaxed);
                if ws.send(message).await.is_err() {
                    clean = false;
                }
            }
            Some(Err(_)) => clean = false,
            None => break,
        }
    }
    counts.ended(clean, ws.close_info());
}

/// The same on the blocking adapter, on the connection's own thread.
fn serve_blocking(server: &tether_blocking::Server, tcp: std::net::TcpStream, counts: &ServerCounts) {
    let Ok(mut ws) = server.accept(tcp) else {
        counts.failed.fetch_add(1, Relaxed);
        return;
    };
    let live = counts.live.fetch_add(1, Relaxed) + 1;
    counts.most_live.fetch_max(live, Relaxed);
    let mut clean = true;
    loop {
        match ws.recv() {
            Some(Ok(message)) => {
                counts.echoed.fetch_add(1, Relaxed);
                if ws.send(message).is_err() {
                    clean = false;
                }
            }
            Some(Err(_)) => clean = false,
            None => break,
        }
    }
    counts.ended(clean, ws.close_info());
}

impl ServerCounts {
    /// A server side ended: cleanly if it saw the client's 1000 "bye".
    fn ended(&self, clean: bool, closed: Option<&Closed>) {
        self.live.fetch_sub(1, Relaxed);
        let clean = clean
            && closed.is_some_and(|c| {
                (c.code, &c.cause, c.reason.as_str()) == (CloseCode::NORMAL, &CloseCause::Remote, "bye")
            });
        if clean {
            self.clean.fetch_add(1, Relaxed);
        } else {
            self.failed.fetch_add(1, Relaxed);
        }
    }
}

/// One client: connects, waits until all are connected, echoes its
/// messages, waits until all are done, closes. It takes part in every
/// barrier even after a failure, so that the others are not held up.
async fn client(
    i: usize,
    addr: SocketAddr,
    [connected, go, echoed, close]: [Arc<Barrier>; 4],
    connecting: Arc<Semaphore>,
) -> Result<ClientReport, String> {
    let mut config = WebSocketConfig::default();
    config.connection.max_send_frame_size = Some(FRAME);
    let ws = {
        let _permit = connecting.acquire().await.unwrap();
        ClientBuilder::new(&format!("ws://{addr}/load/{i}"))
            .config(config)
            .connect_timeout(Some(Duration::from_secs(30)))
            .connect()
            .await
    };
    connected.wait().await;
    go.wait().await;
    let result = match ws {
        Ok(ws) => echo(i, ws).await,
        Err(e) => Err(format!("connect failed: {e}")),
    };
    echoed.wait().await;
    close.wait().await;
    let (mut ws, report) = result?;
    ws.close(CloseCode::NORMAL, "bye")
        .await
        .map_err(|e| format!("close failed: {e}"))?;
    let closed = ws.close_info().ok_or("no close info")?;
    if (closed.code, &closed.cause) != (CloseCode::NORMAL, &CloseCause::Local) {
        return Err(format!("closed with {closed:?}"));
    }
    Ok(report)
}

/// Sends every message of client `i` while receiving the echoes, and
/// checks that each came back intact and in order.
async fn echo(i: usize, ws: tether_tokio::ClientStream) -> Result<(tether_tokio::ClientStream, ClientReport), String> {
    let messages = messages(i);
    let (mut read, mut write) = ws.split();
    let sending = async {
        for message in &messages {
            write
                .send(message.clone())
                .await
                .map_err(|e| format!("send failed: {e}"))?;
        }
        Ok::<_, String>(())
    };
    let receiving = async {
        for (n, expected) in messages.iter().enumerate() {
            let message = match read.recv().await {
                Some(Ok(message)) => message,
                other => return Err(format!("echo {n} missing: {other:?}")),
            };
            if message != *expected {
                return Err(format!(
                    "echo {n} differs: {:?} {} bytes, expected {:?} {} bytes",
                    message.kind(),
                    message.len(),
                    expected.kind(),
                    expected.len()
                ));
            }
        }
        Ok(())
    };
    let (sent, received) = tokio::join!(sending, receiving);
    sent?;
    received?;
    let ws = read.reunite(write).map_err(|e| format!("reunite failed: {e}"))?;
    let report = ClientReport {
        sent: messages.len(),
        bytes: messages.iter().map(Message::len).sum(),
    };
    Ok((ws, report))
}

/// Client `i`'s messages: text and binary, empty to 200 KB, on both sides
/// of the 7-bit (125/126) and 16-bit (65535/65536) length boundaries, and
/// larger than a frame (sent in frames of 16 KiB), each marked with `i`.
fn messages(i: usize) -> Vec<Message> {
    let mut messages = vec![
        Message::Text(format!("hello from {i}").into()),
        Message::Text(String::new().into()),
        Message::Binary(pattern(i, 125)),
        Message::Binary(pattern(i, 126)),
        Message::Text(format!("{i}: {}", "é🦀".repeat(200)).into()),
        Message::Binary(pattern(i, 4096)),
    ];
    if i % 4 == 0 {
        messages.push(Message::Binary(pattern(i, 65_535)));
        messages.push(Message::Binary(pattern(i, 65_536)));
    }
    if i % 25 == 0 {
        let text: String = (0..200_000).map(|k| char::from(b'a' + ((i + k) % 26) as u8)).collect();
        messages.push(Message::Text(text.into()));
    }
    messages.push(Message::Text(format!("last from {i}").into()));
    messages
}

fn pattern(i: usize, len: usize) -> Bytes {
    (0..len).map(|k| (i * 31 + k) as u8).collect()
}

async fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

/// Raises the soft limit on open files to the hard limit; returns the
/// limit now in force.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a `rlimit` into the valid pointer it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads a `rlimit` from the valid pointer it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // `rlim_t` is not `u64` on every platform.
    #[allow(clippy::unnecessary_cast)]
    let current = limit.rlim_cur as u64;
    current
}

/// A field of `/proc/self/status`, in bytes.
fn proc_status(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: usize = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// The resident set size now.
fn vm_rss() -> usize {
    proc_status("VmRSS:")
}

/// The peak resident set size.
fn vm_hwm() -> usize {
    proc_status("VmHWM:")
}
