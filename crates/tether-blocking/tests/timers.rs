//! The core's timers through socket timeouts: a keepalive ping after the
//! interval, the idle timeout on a silent peer, and the connect timeout.
//! Short intervals, generous bounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{bounded, listener};
use tether_blocking::{ClientBuilder, Error, Message, Received};

const PING_INTERVAL: Duration = Duration::from_millis(200);
const IDLE_TIMEOUT: Duration = Duration::from_millis(600);

#[test]
fn keepalive_ping_after_the_interval() {
    bounded(|| {
        let (listener, url) = listener();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut ws = tether_blocking::accept(tcp).unwrap();
            ws.send("go").unwrap();
            let sent = Instant::now();
            // The client is silent but for its keepalive pings.
            let mut pings = Vec::new();
            while pings.len() < 3 {
                match ws.recv_event().unwrap().unwrap() {
                    Received::Ping(_) => pings.push(sent.elapsed()),
                    other => panic!("expected a ping, got {other:?}"),
                }
            }
            ws.close(tether_blocking::CloseCode::NORMAL, "").unwrap();
            pings
        });
        let mut ws = ClientBuilder::new(&url)
            .ping_interval(Some(PING_INTERVAL))
            .connect()
            .unwrap();
        assert_eq!(ws.recv().unwrap().unwrap(), Message::Text("go".into()));
        // Receiving drives the timers: the pings leave while this waits.
        assert!(ws.recv().is_none());
        let pings = server.join().unwrap();
        // Each ping after the interval (a ping does not reset it, a pong
        // received does), never before, and not much after.
        assert!(pings[0] >= PING_INTERVAL - Duration::from_millis(5), "{pings:?}");
        assert!(pings[0] < PING_INTERVAL * 5, "{pings:?}");
        assert!(pings[2] < PING_INTERVAL * 15, "{pings:?}");
    });
}

#[test]
fn idle_timeout_on_a_silent_peer() {
    bounded(|| {
        let (listener, url) = listener();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let ws = tether_blocking::accept(tcp).unwrap();
            // Holds the connection open and never reads nor writes: no pong.
            let _ = done_rx.recv();
            drop(ws);
        });
        let mut ws = ClientBuilder::new(&url)
            .ping_interval(Some(PING_INTERVAL))
            .idle_timeout(Some(IDLE_TIMEOUT))
            .connect()
            .unwrap();
        let start = Instant::now();
        let result = ws.recv();
        let waited = start.elapsed();
        assert!(matches!(result, Some(Err(Error::IdleTimeout))), "{result:?}");
        assert!(waited >= IDLE_TIMEOUT - Duration::from_millis(5), "{waited:?}");
        assert!(waited < IDLE_TIMEOUT * 5, "{waited:?}");
        assert!(ws.recv().is_none());
        done_tx.send(()).unwrap();
        server.join().unwrap();
    });
}

#[test]
fn connect_timeout_against_a_listener_that_never_accepts() {
    bounded(|| {
        // Fill the listener's accept queue: once it is full, the kernel drops
        // new SYNs and a connect waits (loopback only, a bounded number).
        let (listener, url) = listener();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        let full = (0..2_000).any(
            |_| match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(tcp) => {
                    held.push(tcp);
                    false
                }
                Err(_) => true,
            },
        );
        assert!(full, "the accept queue never filled ({} connections)", held.len());
        let start = Instant::now();
        let result = ClientBuilder::new(&url)
            .connect_timeout(Some(Duration::from_millis(500)))
            .connect();
        let waited = start.elapsed();
        // The driver reports the last address's attempt timing out as
        // that attempt's `io::ErrorKind::TimedOut` (on every runtime).
        assert!(
            match &result {
                Err(Error::ConnectTimeout) => true,
                Err(Error::Io(e)) => e.kind() == std::io::ErrorKind::TimedOut,
                _ => false,
            },
            "{result:?}"
        );
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        drop(listener);
    });
}

#[test]
fn connect_timeout_covers_the_opening_handshake() {
    bounded(|| {
        // Accepts the TCP connection and never answers the handshake.
        let (listener, url) = listener();
        let server = std::thread::spawn(move || listener.accept().unwrap());
        let start = Instant::now();
        let result = ClientBuilder::new(&url)
            .connect_timeout(Some(Duration::from_millis(300)))
            .connect();
        let waited = start.elapsed();
        assert!(matches!(result, Err(Error::ConnectTimeout)), "{result:?}");
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        drop(server.join().unwrap());
    });
}

#[test]
fn close_timeout_when_the_peer_never_answers() {
    bounded(|| {
        let (listener, url) = listener();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let ws = tether_blocking::accept(tcp).unwrap();
            // Never reads: our close frame stays unanswered.
            let _ = done_rx.recv();
            drop(ws);
        });
        let mut config = tether_blocking::WebSocketConfig::default();
        config.connection.close_timeout = Duration::from_millis(300);
        let mut ws = ClientBuilder::new(&url).config(config).connect().unwrap();
        let start = Instant::now();
        let result = ws.close(tether_blocking::CloseCode::NORMAL, "");
        let waited = start.elapsed();
        assert!(matches!(result, Err(Error::CloseTimeout)), "{result:?}");
        assert!(
            waited >= Duration::from_millis(295) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        done_tx.send(()).unwrap();
        server.join().unwrap();
    });
}
