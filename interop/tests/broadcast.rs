//! Broadcast and scaling out, with the examples as users run them:
//!
//! - `broadcast-server`: one client's burst reaches every client, the
//!   sender included, in order; a client that stops reading is closed with
//!   1013 once it falls behind, and the others lose nothing;
//! - `chat-node` x 3 sharing rooms through a real `redis-server` (Debian's,
//!   installed by `scripts/test`, started here on a free loopback port and
//!   stopped by its process id): a burst of 10,000 messages from a client on
//!   node A reaches the room's clients on nodes B and C (and A) in order,
//!   other rooms get nothing; node C stopped mid-stream loses only its own
//!   client, which reconnects to node B and goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tether_interop::cli::build_example;
use tether_interop::process::Process;
use tether_tokio::{ClientStream, CloseCode, Message};
use tokio::process::Command;

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

async fn start(name: &str, args: &[String], ready: &str) -> (Process, SocketAddr) {
    let example = build_example(name).await;
    let mut command = Command::new(example);
    command.args(args);
    let mut process = Process::spawn(name, command);
    let line = process
        .stderr_line(ready, STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = line
        .split("ws://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (process, addr)
}

async fn client(url: &str) -> ClientStream {
    tether_tokio::ClientBuilder::new(url)
        .max_message_size(1 << 20)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Receives `count` text messages and checks they are `prefix0`,
/// `prefix1`... in order; returns the client.
async fn expect_sequence(mut ws: ClientStream, prefix: String, range: std::ops::Range<usize>) -> ClientStream {
    for i in range {
        let message = tokio::time::timeout(STEP_TIMEOUT, ws.recv())
            .await
            .unwrap_or_else(|_| panic!("message {prefix}{i} did not come"));
        match message {
            Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), format!("{prefix}{i}")),
            other => panic!("expected {prefix}{i}, got {other:?}"),
        }
    }
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_server_reaches_everyone_and_drops_the_slow() {
    let (_server, addr) = start("broadcast-server", &["127.0.0.1:0".to_owned()], "broadcast server on").await;
    let url = format!("ws://{addr}/ws");
    let mut sender = client(&url).await;
    let receivers: Vec<ClientStream> = futures_join(4, &url).await;
    // One that will stop reading.
    let mut slow = client(&url).await;
    // Wait until all six are subscribed: each sees a hello from the sender.
    sender.send(Message::Text("hello".into())).await.unwrap();
    let mut receivers = receivers;
    for ws in receivers.iter_mut().chain([&mut sender, &mut slow]) {
        let first = tokio::time::timeout(STEP_TIMEOUT, ws.recv()).await.unwrap();
        assert!(
            matches!(first, Some(Ok(Message::Text(ref t))) if t.as_str() == "hello"),
            "{first:?}"
        );
    }

    // A burst of 20,000 messages of 1 KiB: 20 MiB to each client. The slow
    // client reads none of it for now.
    const BURST: usize = 20_000;
    let pad = "x".repeat(1000);
    let readers: Vec<_> = receivers
        .into_iter()
        .map(|ws| tokio::spawn(expect_padded(ws, pad.clone(), BURST)))
        .collect();
    let (read_half, mut write_half) = sender.split();
    // The sender stays at most WINDOW messages ahead of its own copy of the
    // broadcast: "fast" receivers are those as fast as the sender's own
    // read half, and the hub drops a client 4096 messages behind (on a busy
    // machine the server can read the burst faster than the client tasks
    // get scheduled to read it back). WINDOW (1 MiB) is still far more than
    // the write limit (128 KiB): both ends' output stays over its limit
    // while each must go on reading, the stall this test found once.
    const WINDOW: usize = 1024;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0);
    let own = tokio::spawn(expect_padded_half(read_half, pad.clone(), BURST, progress_tx));
    for i in 0..BURST {
        if i >= WINDOW && *progress.borrow() <= i - WINDOW {
            write_half.flush().await.unwrap();
            let waited = tokio::time::timeout(STEP_TIMEOUT, progress.wait_for(|&n| n > i - WINDOW)).await;
            assert!(
                matches!(waited, Ok(Ok(_))),
                "the sender's own copy of message {} did not come",
                i - WINDOW
            );
        }
        write_half
            .feed(Message::Text(format!("{i} {pad}").into()))
            .await
            .unwrap();
    }
    write_half.flush().await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    own.await.unwrap();

    // The slow client now reads: some of the burst, then the server's close
    // with 1013 (it fell more than 4096 messages behind).
    let mut received = 0;
    let closed = loop {
        match tokio::time::timeout(STEP_TIMEOUT, slow.recv()).await.unwrap() {
            Some(Ok(_)) => received += 1,
            None => break slow.close_info().cloned(),
            Some(Err(e)) => panic!("the slow client's connection failed: {e}"),
        }
    };
    let closed = closed.expect("closed by the server");
    assert_eq!(closed.code, CloseCode::TRY_AGAIN_LATER, "{closed:?}");
    assert!(received < BURST, "the slow client got {received} of {BURST}");
}

async fn futures_join(n: usize, url: &str) -> Vec<ClientStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(client(url).await);
    }
    out
}

/// Checks `count` messages "i pad" in order.
async fn expect_padded(mut ws: ClientStream, pad: String, count: usize) {
    for i in 0..count {
        let message = tokio::time::timeout(STEP_TIMEOUT, ws.recv()).await.unwrap();
        match message {
            Some(Ok(Message::Text(text))) => assert!(text.as_str() == format!("{i} {pad}"), "message {i} out of order"),
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

/// The sender's own copy of its burst: checks `count` messages "i pad" in
/// order and reports through `progress` how many arrived.
async fn expect_padded_half(
    mut ws: tether_tokio::ReadHalf<tether_tokio::MaybeTlsStream<tokio::net::TcpStream>>,
    pad: String,
    count: usize,
    progress: tokio::sync::watch::Sender<usize>,
) {
    for i in 0..count {
        let message = tokio::time::timeout(STEP_TIMEOUT, ws.recv()).await.unwrap();
        match message {
            Some(Ok(Message::Text(text))) => {
                assert!(text.as_str() == format!("{i} {pad}"), "own message {i} out of order")
            }
            other => panic!("expected own message {i}, got {other:?}"),
        }
        progress.send_replace(i + 1);
    }
}

/// A `redis-server` on a free loopback port, killed by process group when
/// dropped.
async fn redis_server() -> (Process, u16) {
    let redis =
        std::env::var_os("TETHER_TEST_REDIS").map_or_else(|| PathBuf::from("/usr/bin/redis-server"), PathBuf::from);
    assert!(
        redis.exists(),
        "{} is missing: run scripts/test (it installs Debian's redis-server when run as root), or set TETHER_TEST_REDIS",
        redis.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(redis);
    command.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
    ]);
    let mut process = Process::spawn("redis-server", command);
    process
        .stdout_line_containing("Ready to accept connections", STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (process, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_nodes_share_rooms_through_redis() {
    let (_redis, port) = redis_server().await;
    let redis_url = format!("redis://127.0.0.1:{port}");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let args = [
            "--bind".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--redis".to_owned(),
            redis_url.clone(),
        ];
        nodes.push(start("chat-node", &args, "chat node on").await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(_, addr)| *addr).collect();
    let room = |node: usize, room: &str| format!("ws://{}/ws/{room}", addrs[node]);
    let mut a = client(&room(0, "r1")).await;
    let mut b = client(&room(1, "r1")).await;
    let mut c = client(&room(2, "r1")).await;
    let mut other = client(&room(1, "other")).await;
    // Everyone is in: a message from A reaches B and C (retrying until the
    // nodes' subscriptions are live).
    a.send(Message::Text("ready".into())).await.unwrap();
    for ws in [&mut a, &mut b, &mut c] {
        let first = tokio::time::timeout(STEP_TIMEOUT, ws.recv()).await.unwrap();
        assert!(
            matches!(first, Some(Ok(Message::Text(ref t))) if t.as_str() == "ready"),
            "{first:?}"
        );
    }

    // A burst of 10,000 from A: everyone in r1 gets all, in order.
    const BURST: usize = 10_000;
    let (a_read, mut a_write) = a.split();
    let readers = [
        tokio::spawn(expect_sequence(b, "m".to_owned(), 0..BURST)),
        tokio::spawn(expect_sequence(c, "m".to_owned(), 0..BURST)),
    ];
    let a_reader = tokio::spawn(expect_sequence_half(a_read, "m".to_owned(), 0..BURST));
    for i in 0..BURST {
        a_write.feed(Message::Text(format!("m{i}").into())).await.unwrap();
    }
    a_write.flush().await.unwrap();
    let [b, c] = readers;
    let (mut b, c) = (b.await.unwrap(), c.await.unwrap());
    let a_read = a_reader.await.unwrap();
    let mut a = a_read.reunite(a_write).unwrap();

    // Another room heard nothing: its own message is the first it gets.
    other.send(Message::Text("only here".into())).await.unwrap();
    let first = tokio::time::timeout(STEP_TIMEOUT, other.recv()).await.unwrap();
    assert!(
        matches!(first, Some(Ok(Message::Text(ref t))) if t.as_str() == "only here"),
        "{first:?}"
    );

    // Node C stops mid-stream: only its client loses the connection.
    let (mut node_c, _) = nodes.pop().unwrap();
    let (c_read, _c_write) = c.split();
    a.feed(Message::Text("before 0".into())).await.unwrap();
    a.flush().await.unwrap();
    node_c.kill();
    let c_ended = tokio::time::timeout(STEP_TIMEOUT, drain_until_end(c_read))
        .await
        .unwrap();
    assert!(c_ended.is_err(), "node C's client saw its connection break");
    // Its client reconnects to node B and goes on.
    let mut c = client(&room(1, "r1")).await;
    // Wait until the new subscription is live: B's own marker reaches it.
    b.send(Message::Text("marker".into())).await.unwrap();
    loop {
        match tokio::time::timeout(STEP_TIMEOUT, c.recv()).await.unwrap() {
            Some(Ok(Message::Text(t))) if t.as_str() == "marker" => break,
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    for i in 0..100 {
        a.feed(Message::Text(format!("after{i}").into())).await.unwrap();
    }
    a.flush().await.unwrap();
    // B, on a node that stayed, lost nothing: "before 0", its marker, then
    // the hundred.
    for expected in ["before 0", "marker"] {
        let got = tokio::time::timeout(STEP_TIMEOUT, b.recv()).await.unwrap();
        assert!(
            matches!(got, Some(Ok(Message::Text(ref t))) if t.as_str() == expected),
            "{got:?}"
        );
    }
    let b = expect_sequence(b, "after".to_owned(), 0..100).await;
    let c = expect_sequence(c, "after".to_owned(), 0..100).await;
    drop((a, b, c));
}

async fn expect_sequence_half(
    mut ws: tether_tokio::ReadHalf<tether_tokio::MaybeTlsStream<tokio::net::TcpStream>>,
    prefix: String,
    range: std::ops::Range<usize>,
) -> tether_tokio::ReadHalf<tether_tokio::MaybeTlsStream<tokio::net::TcpStream>> {
    for i in range {
        let message = tokio::time::timeout(STEP_TIMEOUT, ws.recv()).await.unwrap();
        match message {
            Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), format!("{prefix}{i}")),
            other => panic!("expected {prefix}{i}, got {other:?}"),
        }
    }
    ws
}

/// Reads until the connection ends; `Err` when it broke.
async fn drain_until_end(
    mut ws: tether_tokio::ReadHalf<tether_tokio::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Result<(), tether_tokio::Error> {
    loop {
        match ws.recv().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}
