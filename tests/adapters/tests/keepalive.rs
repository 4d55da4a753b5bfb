//! Keepalive and the idle timeout on every adapter's server, read on the
//! wire by a raw TCP client that never sends anything after its handshake:
//! a ping once the ping interval has passed without receiving anything,
//! then, at the idle timeout, a close frame 1011 "idle timeout" and the end
//! of the stream. Short real intervals here; the 2- and 4-minute defaults
//! are pinned by value below and run in paused time in
//! `crates/tether-tokio/tests/driving.rs`.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tether_adapter_tests::{start_server, Adapter, Options, Timers};
use tether_driver::{CloseCause, CloseCode, WebSocketConfig};

const PING: Duration = Duration::from_millis(400);
/// Before a second ping would go out (2 x PING).
const IDLE: Duration = Duration::from_millis(700);

/// Opens a connection to `server` and reads the response head.
fn open(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// A short server frame: the first byte and the payload.
fn read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).unwrap();
    assert!(head[1] < 126, "a short unmasked frame: {head:?}");
    let mut payload = vec![0; usize::from(head[1])];
    tcp.read_exact(&mut payload).unwrap();
    (head[0], payload)
}

fn ping_then_idle_timeout(adapter: Adapter) {
    let server = start_server(
        adapter,
        Options {
            timers: Some(Timers {
                ping_interval: Some(PING),
                idle_timeout: Some(IDLE),
                send_timeout: None,
            }),
            ..Options::default()
        },
    );
    let started = Instant::now();
    let mut tcp = open(server.addr);
    let (first, payload) = read_frame(&mut tcp);
    let waited = started.elapsed();
    assert_eq!(
        (first, payload.as_slice()),
        (0x89, &[][..]),
        "{adapter:?}: an empty ping"
    );
    assert!(
        waited >= PING - Duration::from_millis(20),
        "{adapter:?}: ping after {waited:?}"
    );
    assert!(waited < IDLE, "{adapter:?}: ping after {waited:?}");
    // Not answered: the idle timeout counts from the handshake (the last
    // bytes received), not from the ping.
    let (first, payload) = read_frame(&mut tcp);
    let waited = started.elapsed();
    assert_eq!(first, 0x88, "{adapter:?}: a close frame");
    assert_eq!(&payload[..2], &1011u16.to_be_bytes(), "{adapter:?}");
    assert_eq!(&payload[2..], b"idle timeout", "{adapter:?}");
    assert!(
        waited >= IDLE - Duration::from_millis(20),
        "{adapter:?}: closed after {waited:?}"
    );
    // Then the end of the stream, without waiting for an answer.
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{adapter:?}: {rest:?}");
    let end = server.next_end();
    let closed = end.closed.unwrap();
    assert_eq!(
        (closed.code, closed.cause),
        (CloseCode::ABNORMAL, CloseCause::IdleTimeout),
        "{adapter:?}"
    );
}

#[test]
fn tokio_server_pings_then_times_out() {
    ping_then_idle_timeout(Adapter::Tokio);
}

#[test]
fn smol_server_pings_then_times_out() {
    ping_then_idle_timeout(Adapter::Smol);
}

#[test]
fn async_std_server_pings_then_times_out() {
    ping_then_idle_timeout(Adapter::AsyncStd);
}

#[test]
fn blocking_server_pings_then_times_out() {
    ping_then_idle_timeout(Adapter::Blocking);
}

/// The adapters' defaults, by value: a ping after 2 minutes without
/// receiving anything, the connection failed after 4.
#[test]
fn every_adapter_defaults_to_ping_after_2_minutes_and_idle_timeout_after_4() {
    let ping = Some(Duration::from_secs(120));
    let idle = Some(Duration::from_secs(240));
    let configs: [(&str, WebSocketConfig); 5] = [
        ("driver", WebSocketConfig::default()),
        ("tokio", tether_tokio::Server::new().config),
        ("futures", tether_futures::Server::new().config),
        ("futures config", tether_futures::WebSocketConfig::default()),
        ("blocking", tether_blocking::WebSocketConfig::default()),
    ];
    for (name, config) in configs {
        assert_eq!(config.connection.ping_interval, ping, "{name}");
        assert_eq!(config.connection.idle_timeout, idle, "{name}");
    }
}
