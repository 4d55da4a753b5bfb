//! Redirects on every adapter's client: each redirect status followed to a
//! real echo server (`http://` locations become `ws://`), relative
//! locations and chains, the limit (10 by default, 0 to follow none),
//! `wss://` never followed down to `ws://` unless allowed, and credentials
//! dropped when the host changes.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;

use http::{HeaderName, HeaderValue, StatusCode};
use tether_adapter_tests::{start_server, tls, try_connect, Adapter, ClientSettings, Options, Ws};
use tether_blocking::tls::{ServerConnection, StreamOwned};
use tether_driver::{CloseCode, Error, ErrorKind, Message, Received};

/// Reads an HTTP head (up to the blank line).
fn read_head(io: &mut impl Read) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if io.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The request heads a [`raw_server`] received, in order.
type Heads = Arc<Mutex<Vec<String>>>;

/// A raw HTTP server answering every request with `answer(head)`; a `101`
/// answer keeps the connection open until the client leaves.
fn raw_server(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> (SocketAddr, Heads) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Heads::default();
    let seen = heads.clone();
    let answer = Arc::new(answer);
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { break };
            let (answer, seen) = (answer.clone(), seen.clone());
            thread::spawn(move || {
                let head = read_head(&mut tcp);
                seen.lock().unwrap().push(head.clone());
                let response = answer(&head);
                let _ = tcp.write_all(response.as_bytes());
                if response.starts_with("HTTP/1.1 101") {
                    let _ = tcp.read(&mut [0; 1024]);
                }
            });
        }
    });
    (addr, heads)
}

fn redirect_to(status: u16, location: &str) -> String {
    let reason = StatusCode::from_u16(status).unwrap().canonical_reason().unwrap_or("");
    format!("HTTP/1.1 {status} {reason}\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
}

/// The 101 answer to a WebSocket request `head`.
fn accept(head: &str) -> String {
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        tether_proto::handshake::accept_key(key.as_bytes())
    )
}

fn request_line(head: &str) -> &str {
    head.lines().next().unwrap_or("")
}

fn has_header(head: &str, name: &str) -> bool {
    head.lines()
        .any(|line| line.split_once(':').is_some_and(|(n, _)| n.eq_ignore_ascii_case(name)))
}

fn echo_once(adapter: Adapter, mut ws: Box<dyn Ws>) {
    ws.send(Message::Text("followed".into())).unwrap();
    match ws.recv_event() {
        Some(Ok(Received::Message(message))) => assert_eq!(message, Message::Text("followed".into())),
        other => panic!("{adapter:?}: {other:?}"),
    }
    ws.close(CloseCode::NORMAL, "").unwrap();
}

fn every_redirect_status_is_followed(adapter: Adapter) {
    let echo = start_server(Adapter::Tokio, Options::default());
    for status in [301, 302, 303, 307, 308] {
        // An http:// location is the same server's ws:// one.
        let location = format!("http://127.0.0.1:{}/echo", echo.addr.port());
        let (addr, heads) = raw_server(move |_| redirect_to(status, &location));
        let ws = try_connect(adapter, &format!("ws://{addr}/old"), ClientSettings::default())
            .unwrap_or_else(|e| panic!("{adapter:?} {status}: {e}"));
        echo_once(adapter, ws);
        assert_eq!(heads.lock().unwrap().len(), 1);
    }
}

fn relative_locations_and_chains(adapter: Adapter) {
    let echo = start_server(Adapter::Tokio, Options::default());
    let target = format!("ws://127.0.0.1:{}/echo", echo.addr.port());
    let (addr, heads) = raw_server(move |head| match request_line(head) {
        "GET /a/start HTTP/1.1" => redirect_to(302, "next?step=2"),
        "GET /a/next?step=2 HTTP/1.1" => redirect_to(307, "/b/third"),
        "GET /b/third HTTP/1.1" => redirect_to(308, &target),
        other => panic!("unexpected {other}"),
    });
    let ws = try_connect(adapter, &format!("ws://{addr}/a/start"), ClientSettings::default()).unwrap();
    echo_once(adapter, ws);
    let lines: Vec<String> = heads
        .lock()
        .unwrap()
        .iter()
        .map(|h| request_line(h).to_owned())
        .collect();
    assert_eq!(
        lines,
        [
            "GET /a/start HTTP/1.1",
            "GET /a/next?step=2 HTTP/1.1",
            "GET /b/third HTTP/1.1"
        ]
    );
}

fn the_limit_is_10_by_default_and_0_follows_none(adapter: Adapter) {
    // A server that redirects to itself forever.
    let (addr, heads) = raw_server(|_| redirect_to(301, "/again"));
    let error = try_connect(adapter, &format!("ws://{addr}/"), ClientSettings::default())
        .err()
        .unwrap();
    assert_eq!(
        error.kind(),
        ErrorKind::Rejected(StatusCode::MOVED_PERMANENTLY),
        "{adapter:?}: {error}"
    );
    assert_eq!(heads.lock().unwrap().len(), 11, "the request and 10 redirects");

    let (addr, heads) = raw_server(|_| redirect_to(302, "/again"));
    let settings = ClientSettings {
        max_redirects: Some(0),
        ..ClientSettings::default()
    };
    let error = try_connect(adapter, &format!("ws://{addr}/"), settings).err().unwrap();
    assert_eq!(
        error.kind(),
        ErrorKind::Rejected(StatusCode::FOUND),
        "{adapter:?}: {error}"
    );
    let Error::Handshake(rejected) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(rejected.location(), Some("/again"));
    assert_eq!(heads.lock().unwrap().len(), 1);
}

/// A TLS server (the test certificate, for "localhost") answering one
/// request per connection with `response`.
fn tls_redirector(response: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { break };
            let response = response.clone();
            thread::spawn(move || {
                let mut tls = StreamOwned::new(ServerConnection::new(tls::server_config()).unwrap(), tcp);
                read_head(&mut tls);
                let _ = tls.write_all(response.as_bytes());
                let _ = tls.flush();
                let _ = tls.read(&mut [0; 1024]);
            });
        }
    });
    addr
}

fn wss_is_not_followed_down_to_ws_unless_allowed(adapter: Adapter) {
    let echo = start_server(Adapter::Tokio, Options::default());
    let location = format!("ws://127.0.0.1:{}/echo", echo.addr.port());
    let addr = tls_redirector(redirect_to(301, &location));
    let url = format!("wss://localhost:{}/", addr.port());
    let settings = || ClientSettings {
        tls_config: Some(tls::client_config()),
        ..ClientSettings::default()
    };
    let error = try_connect(adapter, &url, settings()).err().unwrap();
    assert!(
        matches!(&error, Error::RedirectRefused { location: l, .. } if *l == location),
        "{adapter:?}: {error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Rejected(StatusCode::MOVED_PERMANENTLY));
    let allowed = ClientSettings {
        allow_insecure_redirects: true,
        ..settings()
    };
    echo_once(adapter, try_connect(adapter, &url, allowed).unwrap());
}

fn credentials_stay_with_their_host(adapter: Adapter) {
    // The WebSocket server records what it was sent.
    let (target, heads) = raw_server(accept);
    let with_credentials = || ClientSettings {
        headers: vec![
            (http::header::AUTHORIZATION, HeaderValue::from_static("Bearer secret")),
            (http::header::COOKIE, HeaderValue::from_static("session=1")),
            (HeaderName::from_static("x-request-id"), HeaderValue::from_static("42")),
        ],
        ..ClientSettings::default()
    };
    // To another host name (localhost, where the request went to 127.0.0.1).
    let elsewhere = format!("ws://localhost:{}/ws", target.port());
    let (from, _) = raw_server(move |_| redirect_to(307, &elsewhere));
    let ws = try_connect(adapter, &format!("ws://{from}/"), with_credentials()).unwrap();
    drop(ws);
    // To the same host.
    let same = format!("ws://127.0.0.1:{}/ws", target.port());
    let (from, _) = raw_server(move |_| redirect_to(307, &same));
    let ws = try_connect(adapter, &format!("ws://{from}/"), with_credentials()).unwrap();
    drop(ws);
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 2);
    assert!(!has_header(&heads[0], "authorization"), "{}", heads[0]);
    assert!(!has_header(&heads[0], "cookie"), "{}", heads[0]);
    assert!(has_header(&heads[0], "x-request-id"), "{}", heads[0]);
    assert!(has_header(&heads[1], "authorization"), "{}", heads[1]);
    assert!(has_header(&heads[1], "cookie"), "{}", heads[1]);
}

/// `ws://user:password@host/`: a Basic `Authorization` header, never the
/// credentials in the request line; a 401 comes back with its challenge.
fn uri_credentials_become_basic_authorization(adapter: Adapter) {
    let (server, heads) = raw_server(accept);
    let url = format!("ws://Aladdin:open%20sesame@{server}/chat?room=1");
    drop(try_connect(adapter, &url, ClientSettings::default()).unwrap());
    let head = heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\nauthorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n")
            || head.contains("\r\nAuthorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("sesame") && !head.contains("Aladdin") && !head.contains('@'),
        "{head}"
    );

    let (server, _) = raw_server(|_| {
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"chat\"\r\nContent-Length: 0\r\n\r\n".to_owned()
    });
    let error = try_connect(adapter, &format!("ws://u:wrong@{server}/"), ClientSettings::default())
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    assert_eq!(error.challenge(), Some("Basic realm=\"chat\""));
    // The error does not show the password either.
    assert!(!format!("{error} {error:?}").contains("wrong"), "{error:?}");
}

/// A URI's credentials follow a redirect to the same host only.
fn uri_credentials_stay_with_their_host(adapter: Adapter) {
    let (target, heads) = raw_server(accept);
    for host in ["localhost", "127.0.0.1"] {
        let location = format!("ws://{host}:{}/ws", target.port());
        let (from, _) = raw_server(move |_| redirect_to(302, &location));
        drop(try_connect(adapter, &format!("ws://u:p@{from}/"), ClientSettings::default()).unwrap());
    }
    let heads = heads.lock().unwrap();
    assert!(!has_header(&heads[0], "authorization"), "{}", heads[0]);
    assert!(has_header(&heads[1], "authorization"), "{}", heads[1]);
}

tether_adapter_tests::every_adapter!(
    uri_credentials_become_basic_authorization,
    uri_credentials_stay_with_their_host,
    every_redirect_status_is_followed,
    relative_locations_and_chains,
    the_limit_is_10_by_default_and_0_follows_none,
    wss_is_not_followed_down_to_ws_unless_allowed,
    credentials_stay_with_their_host,
);
