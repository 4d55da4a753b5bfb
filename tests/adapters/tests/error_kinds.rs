//! `Error::kind()`: every kind a program can act on, produced on loopback
//! for every adapter (tokio, futures-io on smol and async-std, blocking), by
//! real failures: a name that does not resolve, a closed port, a reset, raw
//! servers that answer 401, 407, 403 or nonsense, stall or break the
//! protocol, certificates made in the test (untrusted, expired, another
//! name), and servers whose client never sends its request.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tether_adapter_tests::{
    adapters, start_server, tls, try_accept, try_connect, Adapter, ClientSettings, Options, Ws, STEP_TIMEOUT,
};
use tether_driver::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tether_driver::tls::rustls::{RootCertStore, ServerConnection, StreamOwned};
use tether_driver::{CloseCode, Error, ErrorKind, HandshakeConfig, HttpResponse, Message};

/// Reads an HTTP head (up to the blank line).
fn read_head(tcp: &mut impl Read) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if tcp.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The `Sec-WebSocket-Accept` for the request `head`.
fn accept_for(head: &str) -> String {
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap();
    tether_proto::handshake::accept_key(key.as_bytes())
}

/// A one-connection raw server on loopback running `serve` on the accepted
/// connection, on its own thread.
fn raw_server(serve: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        serve(tcp);
    });
    addr
}

/// A raw server that answers the request with `response`, then lingers
/// until the client is gone.
fn answering(response: &'static str) -> SocketAddr {
    raw_server(move |mut tcp| {
        read_head(&mut tcp);
        tcp.write_all(response.as_bytes()).unwrap();
        let _ = tcp.read(&mut [0; 1024]);
    })
}

/// What a [`websocket_server`] does after sending its frames.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// Closes the transport at once.
    Close,
    /// Reads until the client is gone, answering nothing.
    Silent,
    /// Closes the transport when the client sends anything (its close
    /// frame), as a server does after the close handshake.
    CloseOnData,
}

/// A raw server that accepts the WebSocket, sends `frames`, then does what
/// `then` says.
fn websocket_server(frames: &'static [u8], then: Then) -> SocketAddr {
    raw_server(move |mut tcp| {
        let head = read_head(&mut tcp);
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_for(&head)
        );
        tcp.write_all(response.as_bytes()).unwrap();
        tcp.write_all(frames).unwrap();
        let mut buf = [0; 1024];
        match then {
            Then::Close => {}
            Then::Silent => while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {},
            Then::CloseOnData => {
                let _ = tcp.read(&mut buf);
            }
        }
    })
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/")
}

fn connect(adapter: Adapter, url: &str) -> Result<Box<dyn Ws>, Error> {
    try_connect(adapter, url, ClientSettings::default())
}

fn connect_with(adapter: Adapter, url: &str, edit: impl FnOnce(&mut tether_driver::WebSocketConfig)) -> Box<dyn Ws> {
    let mut config = adapters::config(Options::default());
    edit(&mut config);
    let settings = ClientSettings {
        config: Some(config),
        ..ClientSettings::default()
    };
    try_connect(adapter, url, settings).unwrap()
}

fn connect_error(adapter: Adapter, url: &str, settings: ClientSettings) -> Error {
    match try_connect(adapter, url, settings) {
        Ok(_) => panic!("{adapter:?}: {url} connected"),
        Err(e) => e,
    }
}

/// The error that ends the receiving side.
fn recv_error(ws: &mut dyn Ws) -> Error {
    loop {
        match ws.recv_event() {
            Some(Ok(_)) => {}
            Some(Err(e)) => return e,
            None => panic!("a clean end"),
        }
    }
}

// ---- Opening the connection ------------------------------------------------

fn host_not_found(adapter: Adapter) {
    // RFC 6761: `.invalid` never resolves.
    let error = connect_error(adapter, "ws://no-such-host.invalid/", ClientSettings::default());
    assert_eq!(error.kind(), ErrorKind::HostNotFound, "{adapter:?}: {error:?}");
    assert!(matches!(&error, Error::Resolve { host, .. } if host == "no-such-host.invalid"));
}

fn connection_refused(adapter: Adapter) {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // The listener is closed: nothing listens there now.
    let error = connect_error(adapter, &url(addr), ClientSettings::default());
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{adapter:?}: {error:?}");
}

fn connection_reset(adapter: Adapter) {
    // Closing a socket with unread data in its receive buffer resets it
    // (RFC 1122 4.2.2.13): the server drops the connection without reading
    // the request.
    let addr = raw_server(|tcp| {
        thread::sleep(Duration::from_millis(200));
        drop(tcp);
    });
    let error = connect_error(adapter, &url(addr), ClientSettings::default());
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{adapter:?}: {error:?}");
}

fn connect_timeout(adapter: Adapter) {
    // Accepts and never answers the request.
    let addr = raw_server(|mut tcp| {
        let _ = tcp.read(&mut [0; 4096]);
        let _ = tcp.read(&mut [0; 4096]);
    });
    let settings = ClientSettings {
        connect_timeout: Some(Duration::from_millis(300)),
        ..ClientSettings::default()
    };
    let error = connect_error(adapter, &url(addr), settings);
    assert_eq!(error.kind(), ErrorKind::ConnectTimeout, "{adapter:?}: {error:?}");
}

fn unauthorized(adapter: Adapter) {
    let addr =
        answering("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"tether\"\r\nContent-Length: 0\r\n\r\n");
    let error = connect_error(adapter, &url(addr), ClientSettings::default());
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{adapter:?}: {error:?}");
    // The challenge is there to answer.
    let Error::Handshake(tether_driver::HandshakeError::Rejected { headers, .. }) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(headers["www-authenticate"], "Basic realm=\"tether\"");
}

fn proxy_authentication_required(adapter: Adapter) {
    let addr = answering(
        "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"proxy\"\r\n\
         Content-Length: 0\r\n\r\n",
    );
    let error = connect_error(adapter, &url(addr), ClientSettings::default());
    assert_eq!(
        error.kind(),
        ErrorKind::ProxyAuthenticationRequired,
        "{adapter:?}: {error:?}"
    );
}

fn rejected_with_a_status(adapter: Adapter) {
    let addr = answering("HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\nnot you");
    let error = connect_error(adapter, &url(addr), ClientSettings::default());
    assert_eq!(
        error.kind(),
        ErrorKind::Rejected(http::StatusCode::FORBIDDEN),
        "{adapter:?}: {error:?}"
    );
}

fn handshake_failed(adapter: Adapter) {
    let addr = answering(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: c2VjcmV0IGtleSBpcyB3cm9uZw==\r\n\r\n",
    );
    let error = connect_error(adapter, &url(addr), ClientSettings::default());
    assert_eq!(error.kind(), ErrorKind::HandshakeFailed, "{adapter:?}: {error:?}");
}

fn invalid_uri(adapter: Adapter) {
    let error = connect_error(adapter, "http://127.0.0.1:1/", ClientSettings::default());
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{adapter:?}: {error:?}");
}

// ---- TLS ---------------------------------------------------------------

/// A client configuration trusting only `cert`.
fn trusting(cert: CertificateDer<'static>) -> Arc<tether_driver::tls::rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    tether_driver::tls::client_config(roots).unwrap()
}

/// A certificate for "localhost", self-signed, valid from `from` to `to`.
fn certificate(from: (i32, u8, u8), to: (i32, u8, u8)) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    let cert = params.self_signed(&key).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), key)
}

/// A TLS server (rustls over std) presenting `cert`, for one connection:
/// it runs the TLS handshake and waits for the client to go.
fn tls_server(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> SocketAddr {
    let config = tether_driver::tls::server_config(vec![cert], key).unwrap();
    raw_server(move |tcp| {
        let mut tls = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
        let _ = tls.read(&mut [0; 1024]);
    })
}

fn certificate_untrusted(adapter: Adapter) {
    // The echo server's certificate is the test's own; this client trusts
    // another one.
    let server = start_server(
        Adapter::Tokio,
        Options {
            tls: true,
            ..Options::default()
        },
    );
    let (other, _) = certificate((2020, 1, 1), (2999, 1, 1));
    let settings = ClientSettings {
        tls_config: Some(trusting(other)),
        ..ClientSettings::default()
    };
    let url = format!("wss://localhost:{}/echo", server.addr.port());
    let error = connect_error(adapter, &url, settings);
    assert_eq!(error.kind(), ErrorKind::CertificateUntrusted, "{adapter:?}: {error:?}");
}

fn certificate_expired(adapter: Adapter) {
    let (cert, key) = certificate((2000, 1, 1), (2001, 1, 1));
    let addr = tls_server(cert.clone(), key);
    let settings = ClientSettings {
        tls_config: Some(trusting(cert)),
        ..ClientSettings::default()
    };
    let error = connect_error(adapter, &format!("wss://localhost:{}/", addr.port()), settings);
    assert_eq!(error.kind(), ErrorKind::CertificateExpired, "{adapter:?}: {error:?}");
}

fn certificate_wrong_name(adapter: Adapter) {
    // Trusted, but made for "localhost", and the client connects to an
    // address literal.
    let server = start_server(
        Adapter::Tokio,
        Options {
            tls: true,
            ..Options::default()
        },
    );
    let settings = ClientSettings {
        tls_config: Some(tls::client_config()),
        ..ClientSettings::default()
    };
    let url = format!("wss://127.0.0.1:{}/echo", server.addr.port());
    let error = connect_error(adapter, &url, settings);
    assert_eq!(error.kind(), ErrorKind::CertificateWrongName, "{adapter:?}: {error:?}");
}

fn tls_to_a_plain_server(adapter: Adapter) {
    // A plain HTTP server answers the TLS client hello with a 400.
    let addr = raw_server(|mut tcp| {
        let _ = tcp.read(&mut [0; 4096]);
        let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    let settings = ClientSettings {
        tls_config: Some(tls::client_config()),
        ..ClientSettings::default()
    };
    let error = connect_error(adapter, &format!("wss://localhost:{}/", addr.port()), settings);
    assert_eq!(error.kind(), ErrorKind::Tls, "{adapter:?}: {error:?}");
}

// ---- An open connection ----------------------------------------------------

fn protocol_violation(adapter: Adapter) {
    // A reserved opcode: 1002.
    let mut ws = connect(adapter, &url(websocket_server(&[0x83, 0x00], Then::CloseOnData))).unwrap();
    let error = recv_error(&mut *ws);
    assert_eq!(
        error.kind(),
        ErrorKind::ProtocolViolation(CloseCode::PROTOCOL_ERROR),
        "{adapter:?}: {error:?}"
    );
    // Text that is not UTF-8: 1007.
    let mut ws = connect(adapter, &url(websocket_server(&[0x81, 0x01, 0xff], Then::CloseOnData))).unwrap();
    let error = recv_error(&mut *ws);
    assert_eq!(
        error.kind(),
        ErrorKind::ProtocolViolation(CloseCode::INVALID_PAYLOAD),
        "{adapter:?}: {error:?}"
    );
}

fn message_too_big(adapter: Adapter) {
    const FRAME: &[u8] = &[0x82, 20, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    let mut ws = connect_with(adapter, &url(websocket_server(FRAME, Then::CloseOnData)), |config| {
        config.connection.max_message_size = 10;
    });
    let error = recv_error(&mut *ws);
    assert_eq!(error.kind(), ErrorKind::MessageTooBig, "{adapter:?}: {error:?}");
    assert_eq!(error.close_code(), Some(CloseCode::MESSAGE_TOO_BIG));
}

fn closed_normally_and_by_peer(adapter: Adapter) {
    // The peer closes with 1000, then with 4000.
    for (frame, kind) in [
        (&[0x88, 2, 0x03, 0xe8][..], ErrorKind::ClosedNormally),
        (
            &[0x88, 2, 0x0f, 0xa0][..],
            ErrorKind::ClosedByPeer(CloseCode::from(4000)),
        ),
    ] {
        let frame: &'static [u8] = frame;
        let mut ws = connect(adapter, &url(websocket_server(frame, Then::Close))).unwrap();
        assert!(ws.recv_event().is_none(), "{adapter:?}: a clean close");
        let error = ws.send(Message::Text("late".into())).unwrap_err();
        assert_eq!(error.kind(), kind, "{adapter:?}: {error:?}");
    }
    // We close: nothing more can be sent.
    let server = start_server(adapter, Options::default());
    let mut ws = tether_adapter_tests::connect(adapter, &server, Options::default());
    ws.close(CloseCode::NORMAL, "bye").unwrap();
    let error = ws.send(Message::Text("late".into())).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ClosedNormally, "{adapter:?}: {error:?}");
}

fn abnormal_closure(adapter: Adapter) {
    // The server closes the transport without a close frame.
    let mut ws = connect(adapter, &url(websocket_server(&[], Then::Close))).unwrap();
    let error = recv_error(&mut *ws);
    assert_eq!(error.kind(), ErrorKind::AbnormalClosure, "{adapter:?}: {error:?}");
}

fn idle_timeout(adapter: Adapter) {
    let mut ws = connect_with(adapter, &url(websocket_server(&[], Then::Silent)), |config| {
        config.connection.idle_timeout = Some(Duration::from_millis(300));
    });
    let error = recv_error(&mut *ws);
    assert_eq!(error.kind(), ErrorKind::IdleTimeout, "{adapter:?}: {error:?}");
}

fn close_timeout(adapter: Adapter) {
    // The server never answers our close frame.
    let mut ws = connect_with(adapter, &url(websocket_server(&[], Then::Silent)), |config| {
        config.connection.close_timeout = Duration::from_millis(300);
    });
    let error = ws.close(CloseCode::NORMAL, "").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CloseTimeout, "{adapter:?}: {error:?}");
}

fn invalid_input(adapter: Adapter) {
    let mut ws = connect(adapter, &url(websocket_server(&[], Then::CloseOnData))).unwrap();
    let error = ws.ping(&[0; 126]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{adapter:?}: {error:?}");
}

// ---- The server side ---------------------------------------------------------

/// A TCP connection to a server of `adapter` whose client side `client`
/// drives; returns the accept's result.
fn accept_from(
    adapter: Adapter,
    handshake: HandshakeConfig,
    answer: Option<HttpResponse>,
    client: impl FnOnce(TcpStream) + Send + 'static,
) -> Result<(), Error> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = thread::spawn(move || client(TcpStream::connect(addr).unwrap()));
    let (tcp, _) = listener.accept().unwrap();
    let result = try_accept(adapter, tcp, handshake, answer);
    client.join().unwrap();
    result
}

const REQUEST: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn handshake_timeout(adapter: Adapter) {
    let mut handshake = HandshakeConfig::default();
    handshake.timeout = Some(Duration::from_millis(300));
    // The client connects and sends nothing; it reads the server's 408.
    let result = accept_from(adapter, handshake, None, |mut tcp| {
        tcp.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        let _ = read_head(&mut tcp);
    });
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::HandshakeTimeout, "{adapter:?}: {error:?}");
}

fn server_sees_a_bad_request(adapter: Adapter) {
    let result = accept_from(adapter, HandshakeConfig::default(), None, |mut tcp| {
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        tcp.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        assert!(read_head(&mut tcp).starts_with("HTTP/1.1 400"));
    });
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::HandshakeFailed, "{adapter:?}: {error:?}");
}

fn not_websocket(adapter: Adapter) {
    let answer = HttpResponse::new(http::StatusCode::NOT_FOUND);
    let result = accept_from(adapter, HandshakeConfig::default(), Some(answer), |mut tcp| {
        tcp.write_all(REQUEST.as_bytes()).unwrap();
        tcp.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        assert!(read_head(&mut tcp).starts_with("HTTP/1.1 404"));
    });
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotWebSocket, "{adapter:?}: {error:?}");
}

tether_adapter_tests::every_adapter!(
    host_not_found,
    connection_refused,
    connection_reset,
    connect_timeout,
    unauthorized,
    proxy_authentication_required,
    rejected_with_a_status,
    handshake_failed,
    invalid_uri,
    certificate_untrusted,
    certificate_expired,
    certificate_wrong_name,
    tls_to_a_plain_server,
    protocol_violation,
    message_too_big,
    closed_normally_and_by_peer,
    abnormal_closure,
    idle_timeout,
    close_timeout,
    invalid_input,
    handshake_timeout,
    server_sees_a_bad_request,
    not_websocket,
);
