//! The send timeout on every adapter, with a real short timeout and a raw
//! TCP peer that stops reading: as a server (the peer sends and never reads
//! the echoes) and as a client (the peer accepts the handshake and never
//! reads). The send fails with `Error::SendTimeout` and the transport is
//! closed. The 30-second default is pinned by value below and runs in
//! paused time in `crates/tether-tokio/tests/driving.rs`.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tether_adapter_tests::{connect, start_server, Adapter, EchoServer, Options, Timers, STEP_TIMEOUT};
use tether_driver::{CloseCause, CloseCode, Error, Message, WebSocketConfig};

const SEND_TIMEOUT: Duration = Duration::from_millis(300);

fn options() -> Options {
    Options {
        timers: Some(Timers {
            send_timeout: Some(SEND_TIMEOUT),
            ..Timers::OFF
        }),
        ..Options::default()
    }
}

/// Reads an HTTP head (up to the blank line).
fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads until the peer closes the transport (end of stream or reset),
/// dropping what it sent: fails if it is still open after `STEP_TIMEOUT`.
fn wait_closed(tcp: &mut TcpStream, who: &str) {
    tcp.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{who}: the transport is still open: {e}"),
        }
    }
}

/// A masked binary frame of `len` bytes (the mask is zero: the payload is
/// sent as it is).
fn client_frame(len: usize) -> Vec<u8> {
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(len as u64).to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.resize(frame.len() + len, 7);
    frame
}

fn server_send_times_out(adapter: Adapter) {
    let server = start_server(adapter, options());
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).unwrap();
    assert!(read_head(&mut tcp).starts_with("HTTP/1.1 101"));
    // Messages to echo until the server stops taking them: its echoes fill
    // our receive buffer and its send buffer, its sends block, and it reads
    // no more (backpressure). We never read.
    tcp.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let frame = client_frame(1 << 16);
    let started = Instant::now();
    loop {
        match tcp.write_all(&frame) {
            Ok(()) => assert!(
                started.elapsed() < STEP_TIMEOUT,
                "{adapter:?}: the server never blocked"
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            // The server timed out and closed while we were still writing.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => break,
            Err(e) => panic!("{adapter:?}: {e}"),
        }
    }
    let end = server.next_end();
    let closed = end.closed.unwrap();
    assert_eq!(
        (closed.code, closed.cause),
        (CloseCode::ABNORMAL, CloseCause::SendTimeout),
        "{adapter:?}"
    );
    assert_eq!(end.error, Some(Error::SendTimeout.to_string()), "{adapter:?}");
    wait_closed(&mut tcp, &format!("{adapter:?} server"));
}

/// A server that completes the handshake and then never reads. Hands out
/// its side of the connection.
fn silent_server() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let head = read_head(&mut tcp);
        let key = head
            .lines()
            .find_map(|line| {
                line.strip_prefix("sec-websocket-key: ")
                    .or(line.strip_prefix("Sec-WebSocket-Key: "))
            })
            .unwrap()
            .trim()
            .to_owned();
        let accept = tether_proto::handshake::accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        tcp.write_all(response.as_bytes()).unwrap();
        tx.send(tcp).unwrap();
    });
    (addr, rx)
}

fn client_send_times_out(adapter: Adapter) {
    let (addr, accepted) = silent_server();
    // `connect` takes the server's address from an `EchoServer`.
    let (_ends_tx, ends) = mpsc::channel();
    let server = EchoServer { addr, ends };
    let mut ws = connect(adapter, &server, options());
    let mut tcp = accepted.recv_timeout(STEP_TIMEOUT).unwrap();
    let message = Message::Binary(vec![7u8; 1 << 20].into());
    let started = Instant::now();
    let error = loop {
        match ws.send(message.clone()) {
            Ok(()) => assert!(started.elapsed() < STEP_TIMEOUT, "{adapter:?}: sends never blocked"),
            Err(e) => break e,
        }
    };
    assert!(matches!(error, Error::SendTimeout), "{adapter:?}: {error:?}");
    assert_eq!(error.kind(), tether_driver::ErrorKind::SendTimeout);
    // Nothing more can be sent, and the reason stays the same.
    assert!(
        matches!(ws.send(Message::Text("late".into())), Err(Error::SendTimeout)),
        "{adapter:?}"
    );
    let closed = ws.close_info().unwrap();
    assert_eq!(closed.cause, CloseCause::SendTimeout, "{adapter:?}");
    wait_closed(&mut tcp, &format!("{adapter:?} client"));
}

#[test]
fn tokio_server_send_times_out() {
    server_send_times_out(Adapter::Tokio);
}

#[test]
fn smol_server_send_times_out() {
    server_send_times_out(Adapter::Smol);
}

#[test]
fn async_std_server_send_times_out() {
    server_send_times_out(Adapter::AsyncStd);
}

#[test]
fn blocking_server_send_times_out() {
    server_send_times_out(Adapter::Blocking);
}

#[test]
fn tokio_client_send_times_out() {
    client_send_times_out(Adapter::Tokio);
}

#[test]
fn smol_client_send_times_out() {
    client_send_times_out(Adapter::Smol);
}

#[test]
fn async_std_client_send_times_out() {
    client_send_times_out(Adapter::AsyncStd);
}

#[test]
fn blocking_client_send_times_out() {
    client_send_times_out(Adapter::Blocking);
}

/// The adapters' default, by value: 30 seconds, as the Windows runtime's.
#[test]
fn every_adapter_defaults_to_a_send_timeout_of_30_seconds() {
    let thirty = Some(Duration::from_secs(30));
    let configs: [(&str, WebSocketConfig); 5] = [
        ("driver", WebSocketConfig::default()),
        ("tokio", tether_tokio::Server::new().config),
        ("futures", tether_futures::Server::new().config),
        ("futures config", tether_futures::WebSocketConfig::default()),
        ("blocking", tether_blocking::WebSocketConfig::default()),
    ];
    for (name, config) in configs {
        assert_eq!(config.connection.send_timeout, thirty, "{name}");
    }
    assert_eq!(tether_driver::DEFAULT_SEND_TIMEOUT, Duration::from_secs(30));
}
