//! The defaults as a user gets them, without passing any configuration:
//! `tether_tokio::connect`, `ClientBuilder::new`, `tether_tokio::accept` and
//! `Server::new`, over real loopback TCP in paused time (tokio's clock
//! advances when every task waits, so minutes pass in microseconds and
//! the figures are exact). And the connect step over an address list: each
//! address in turn, each with its share of the deadline.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::quiet;
use tether_tokio::{ClientBuilder, Error, Message, Received, Server, Tokio};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

/// A listener that completes TCP handshakes (the kernel's backlog) but
/// never answers anything.
async fn mute_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    (listener, url)
}

/// An address on loopback where a TCP connect hangs: a listener with a
/// backlog of 0 whose one queue slot is taken, so the kernel drops further
/// SYNs (as a filtered port on the internet would). Returns the listener
/// and the connection holding the slot, to keep them alive.
async fn blackhole() -> (SocketAddr, TcpListener, TcpStream) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = TcpStream::connect(addr).await.unwrap();
    (addr, listener, holder)
}

#[tokio::test(start_paused = true)]
async fn connect_times_out_after_60_seconds_by_default() {
    let (_listener, url) = mute_listener().await;
    let started = Instant::now();
    let result = tether_tokio::connect(&url).await;
    let waited = started.elapsed();
    assert!(matches!(result, Err(Error::ConnectTimeout)), "{result:?}");
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_builders_connect_timeout_is_60_seconds_too() {
    let (_listener, url) = mute_listener().await;
    let started = Instant::now();
    let result = ClientBuilder::new(&url).connect().await;
    assert!(matches!(result, Err(Error::ConnectTimeout)), "{result:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
        "{waited:?}"
    );
}

/// A server on loopback whose connection (with `quiet` settings: no
/// timers of its own) is handed out.
async fn quiet_server() -> (
    String,
    tokio::task::JoinHandle<tether_tokio::WebSocketStream<TcpStream>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        Server::new().config(quiet()).accept(tcp).await.unwrap()
    });
    (url, task)
}

#[tokio::test(start_paused = true)]
async fn a_default_client_pings_after_2_minutes_and_times_out_after_4() {
    let (url, server) = quiet_server().await;
    let mut client = tether_tokio::connect(&url).await.unwrap();
    let mut server = server.await.unwrap();
    let started = Instant::now();
    let client_task = tokio::spawn(async move { (client.recv().await, started.elapsed()) });
    // The ping. The server's pong is queued, but the server does not
    // receive again, so it is never written: the client hears nothing.
    match server.recv_event().await.unwrap().unwrap() {
        Received::Ping(payload) => assert!(payload.is_empty()),
        other => panic!("{other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(120) && waited < Duration::from_secs(121),
        "{waited:?}"
    );
    // 4 minutes after the last bytes it received (the handshake's).
    let (end, ended) = client_task.await.unwrap();
    assert!(matches!(end, Some(Err(Error::IdleTimeout))), "{end:?}");
    assert!(
        ended >= Duration::from_secs(240) && ended < Duration::from_secs(241),
        "{ended:?}"
    );
    drop(server);
}

#[tokio::test(start_paused = true)]
async fn a_default_server_pings_after_2_minutes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tether_tokio::accept(tcp).await.unwrap();
        ws.recv().await.map(|r| r.map_err(|e| e.to_string()))
    });
    let mut client = ClientBuilder::new(&url).config(quiet()).connect().await.unwrap();
    let started = Instant::now();
    match client.recv_event().await.unwrap().unwrap() {
        Received::Ping(payload) => assert!(payload.is_empty()),
        other => panic!("{other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(120) && waited < Duration::from_secs(121),
        "{waited:?}"
    );
    client.close(tether_tokio::CloseCode::NORMAL, "").await.unwrap();
    assert_eq!(server.await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_default_client_send_times_out_after_30_seconds() {
    // The server never reads; the client's 1 MiB send fills the socket
    // buffers and waits.
    let (url, server) = quiet_server().await;
    let mut client = tether_tokio::connect(&url).await.unwrap();
    let _server = server.await.unwrap();
    let started = Instant::now();
    let chunk = Message::Binary(vec![7; 1 << 20].into());
    let error = loop {
        if let Err(e) = client.send(chunk.clone()).await {
            break e;
        }
    };
    assert!(matches!(error, Error::SendTimeout), "{error:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn addresses_are_tried_in_order_each_with_its_share_of_the_deadline() {
    let (hole, _listener, _holder) = blackhole().await;
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_addr = open.local_addr().unwrap();
    // 3 s for 3 addresses: the unreachable first one gets 1 s, the refused
    // one fails at once, the third connects.
    let started = Instant::now();
    let deadline = Some(Instant::now().into_std() + Duration::from_secs(3));
    let tcp = tether_driver::connect_addrs::<Tokio>("test", &[hole, refused, open_addr], true, deadline)
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(tcp.peer_addr().unwrap(), open_addr);
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
        "{waited:?}"
    );
    // Alone, the unreachable address has the whole deadline, and the error
    // says it timed out.
    let started = Instant::now();
    let deadline = Some(Instant::now().into_std() + Duration::from_secs(3));
    let result = tether_driver::connect_addrs::<Tokio>("test", &[refused, hole], true, deadline).await;
    let waited = started.elapsed();
    assert!(
        matches!(&result, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut),
        "{result:?}"
    );
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_millis(3100),
        "{waited:?}"
    );
}

/// The connect futures can be spawned on tokio's work-stealing runtime: the
/// driving crate's runtime traits do not require `Send` (compio's shell is
/// thread-per-core), so tokio's shell must keep its own futures `Send`.
#[test]
fn the_connect_and_accept_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    is_send(&tether_tokio::connect("ws://127.0.0.1:1/"));
    is_send(&tether_tokio::ClientBuilder::new("ws://127.0.0.1:1/").connect());
    is_send(&tether_tokio::accept(tokio::io::empty()));
}
