//! The opening handshake end to end (RFC 6455 section 4): a client handshake
//! and a server handshake talk in memory, then the connections they build
//! exchange frames. Bytes pipelined behind the handshake are never lost.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::StatusCode;
use tether_proto::handshake::{
    Accept, ClientHandshake, ClientRequest, ExtensionOffer, HandshakeConfig, HandshakeError, ServerHandshake,
};
use tether_proto::{Config, Connection, Event, Message, SeededRandom};

fn start(request: ClientRequest, now: Instant) -> (ClientHandshake, Vec<u8>) {
    ClientHandshake::new(request, &mut SeededRandom::new(9), now, Some(Duration::from_secs(5))).unwrap()
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn drain(conn: &mut Connection) -> Vec<u8> {
    std::iter::from_fn(|| conn.poll_transmit()).flatten().collect()
}

#[test]
fn rfc6455_4_full_exchange_with_subprotocol() {
    let now = Instant::now();
    let request = ClientRequest::new("ws://[::1]:9001/chat?room=1")
        .unwrap()
        .origin("https://app.example")
        .protocols(["chat.v2", "chat.v1"]);
    let (mut client, request_bytes) = start(request, now);

    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    let request = server.handle_read(&request_bytes).unwrap().unwrap();
    assert!(request.is_websocket_upgrade());
    assert_eq!((request.path(), request.query()), ("/chat", Some("room=1")));
    assert_eq!(request.origin(), Some("https://app.example"));
    assert_eq!(request.protocols(), ["chat.v2", "chat.v1"]);
    assert_eq!(request.headers()["host"], "[::1]:9001");

    let (response_bytes, mut server_conn) = server
        .accept(&request, Accept::new().subprotocol("chat.v1"), Config::default(), now)
        .unwrap();
    let response = client.handle_read(&response_bytes).unwrap().unwrap();
    assert_eq!(response.subprotocol(), Some("chat.v1"));
    let mut client_conn = response
        .into_connection(Config::default(), Box::new(SeededRandom::new(3)), now)
        .unwrap();
    assert_eq!(client_conn.subprotocol(), Some("chat.v1"));
    assert_eq!(server_conn.subprotocol(), Some("chat.v1"));

    client_conn.send_text("over the handshake").unwrap();
    server_conn.handle_read(&drain(&mut client_conn), now);
    assert_eq!(
        events(&mut server_conn),
        vec![Event::Message(Message::Text("over the handshake".into()))]
    );
}

#[test]
fn rfc6455_4_1_frames_behind_the_101_are_not_lost() {
    let now = Instant::now();
    let (mut client, request_bytes) = start(ClientRequest::new("ws://example.com/").unwrap(), now);
    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    let request = server.handle_read(&request_bytes).unwrap().unwrap();
    let (mut wire, mut server_conn) = server.accept(&request, Accept::new(), Config::default(), now).unwrap();
    // The server greets at once: the greeting leaves in the same segment as the 101.
    server_conn.send_text("welcome").unwrap();
    wire.extend(drain(&mut server_conn));
    // Delivered one byte at a time, the result is the same.
    let mut response = None;
    for (i, byte) in wire.iter().enumerate() {
        if let Some(r) = client.handle_read(std::slice::from_ref(byte)).unwrap() {
            response = Some((r, i));
            break;
        }
    }
    let (response, at) = response.unwrap();
    let mut conn = response
        .into_connection(Config::default(), Box::new(SeededRandom::new(3)), now)
        .unwrap();
    conn.handle_read(&wire[at + 1..], now);
    assert_eq!(events(&mut conn), vec![Event::Message(Message::Text("welcome".into()))]);
}

#[test]
fn rfc6455_4_2_1_frames_pipelined_behind_the_request_are_not_lost() {
    let now = Instant::now();
    let (_client, mut wire) = start(ClientRequest::new("ws://example.com/").unwrap(), now);
    // An eager client that wrote its first frame right behind the request.
    let mut eager = Connection::client(Config::default(), Box::new(SeededRandom::new(5)), now);
    eager.send_binary(b"early").unwrap();
    wire.extend(drain(&mut eager));
    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    let request = server.handle_read(&wire).unwrap().unwrap();
    let (_, mut conn) = server.accept(&request, Accept::new(), Config::default(), now).unwrap();
    assert_eq!(
        events(&mut conn),
        vec![Event::Message(Message::Binary(b"early".as_slice().into()))]
    );
}

#[test]
fn rfc6455_4_2_2_rejection_reaches_the_client_typed() {
    let now = Instant::now();
    let (mut client, request_bytes) = start(ClientRequest::new("ws://example.com/private").unwrap(), now);
    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    server.handle_read(&request_bytes).unwrap().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    let response = server.reject(StatusCode::UNAUTHORIZED, headers, b"log in first");
    match client.handle_read(&response) {
        Err(HandshakeError::Rejected { status, headers, body }) => {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(headers[http::header::WWW_AUTHENTICATE], "Bearer");
            assert_eq!(body, b"log in first");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn plain_http_request_is_not_an_upgrade_and_gets_400() {
    let now = Instant::now();
    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    let request = server
        .handle_read(b"GET /ws HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!request.is_websocket_upgrade());
    let error = server
        .accept(&request, Accept::new(), Config::default(), now)
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
    assert!(error.response().unwrap().starts_with(b"HTTP/1.1 400"));
}

#[test]
fn rfc6455_10_2_origin_policy() {
    let now = Instant::now();
    let mut config = HandshakeConfig::default();
    config.allowed_origins = Some(vec!["https://good.example".into()]);
    for (origin, allowed) in [("https://GOOD.example", true), ("https://evil.example", false)] {
        let request = ClientRequest::new("ws://example.com/").unwrap().origin(origin);
        let (_, bytes) = start(request, now);
        let mut server = ServerHandshake::new(config.clone(), now);
        let request = server.handle_read(&bytes).unwrap().unwrap();
        match server.accept(&request, Accept::new(), Config::default(), now) {
            Ok(_) => assert!(allowed, "{origin}"),
            Err(e) => {
                assert!(!allowed, "{origin}");
                assert_eq!(e.status(), Some(StatusCode::FORBIDDEN));
            }
        }
    }
}

#[test]
fn rfc6455_4_4_wrong_version_gets_426_with_the_supported_version() {
    let now = Instant::now();
    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    let request = server
        .handle_read(
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        .unwrap()
        .unwrap();
    let error = server
        .accept(&request, Accept::new(), Config::default(), now)
        .unwrap_err();
    let response = String::from_utf8(error.response().unwrap()).unwrap();
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(response.contains("Sec-WebSocket-Version: 13\r\n"), "{response}");
}

#[test]
fn slowloris_request_times_out() {
    let now = Instant::now();
    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n";
    for byte in request {
        assert_eq!(
            server.handle_read(std::slice::from_ref(byte)).unwrap().map(|_| ()),
            None
        );
    }
    let deadline = server.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(10));
    let error = server.handle_timeout(deadline).unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::REQUEST_TIMEOUT));
}

#[test]
fn negotiated_extension_without_implementation_is_refused_before_anything_is_sent() {
    let now = Instant::now();
    let request = ClientRequest::new("ws://example.com/")
        .unwrap()
        .extensions(vec![ExtensionOffer::new("x-unknown")]);
    let (_, bytes) = start(request, now);
    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    let request = server.handle_read(&bytes).unwrap().unwrap();
    let options = Accept::new().extensions(vec![ExtensionOffer::new("x-unknown")]);
    let error = server.accept(&request, options, Config::default(), now).unwrap_err();
    assert_eq!(error, HandshakeError::ExtensionNotImplemented("x-unknown".into()));
    // Declining it works.
    assert!(server.accept(&request, Accept::new(), Config::default(), now).is_ok());
}

/// RFC 8441: the extended CONNECT of HTTP/2 with the same negotiation as
/// HTTP/1.1 (subprotocol, permessage-deflate, origin policy), then the
/// connections exchange frames.
#[test]
fn rfc8441_extended_connect_both_sides() {
    use tether_proto::handshake::{accept_extended_connect, server_connection, ConnectProtocol, Request};
    let now = Instant::now();
    let request = ClientRequest::new("wss://u:p@example.com:8443/chat?room=1")
        .unwrap()
        .origin("https://example.com")
        .protocols(["v2", "v1"])
        .permessage_deflate(tether_proto::deflate::DeflateConfig::default());
    let (mut client, mut connect) = ClientHandshake::extended_connect(request).unwrap();
    assert_eq!(connect.method(), http::Method::CONNECT);
    assert_eq!(connect.uri().to_string(), "https://example.com:8443/chat?room=1");
    assert_eq!(connect.version(), http::Version::HTTP_2);
    let headers = connect.headers();
    assert_eq!(headers["sec-websocket-version"], "13");
    assert_eq!(headers["origin"], "https://example.com");
    assert_eq!(headers["sec-websocket-protocol"], "v2, v1");
    assert!(headers["sec-websocket-extensions"]
        .to_str()
        .unwrap()
        .starts_with("permessage-deflate"));
    assert_eq!(headers["authorization"], "Basic dTpw");
    // No HTTP/1.1 upgrade headers, no key.
    for name in ["upgrade", "connection", "sec-websocket-key", "host"] {
        assert!(!headers.contains_key(name), "{name}");
    }

    // The server's side, as an HTTP/2 front end hands it over.
    connect.extensions_mut().insert(ConnectProtocol("websocket".to_owned()));
    let request = Request::from_http(connect);
    assert!(request.is_websocket_upgrade() && request.is_extended_connect());
    let mut config = HandshakeConfig::default();
    config.allowed_origins = Some(vec!["https://example.com".to_owned()]);
    let options = Accept::new()
        .subprotocol("v1")
        .permessage_deflate(tether_proto::deflate::DeflateConfig::default());
    let response = accept_extended_connect(&request, &config, &options).unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["sec-websocket-protocol"], "v1");
    assert!(!response.headers().contains_key("sec-websocket-accept"));
    let mut server = server_connection(&response, &options, Config::default(), now).unwrap();

    let accepted = client.handle_extended_connect_response(response).unwrap();
    assert_eq!(accepted.subprotocol(), Some("v1"));
    let mut client = accepted
        .into_connection(Config::default(), Box::new(SeededRandom::new(3)), now)
        .unwrap();
    assert_eq!(client.extensions().collect::<Vec<_>>(), ["permessage-deflate"]);
    assert_eq!(server.extensions().collect::<Vec<_>>(), ["permessage-deflate"]);
    client.send(Message::Text("over h2".repeat(50).into())).unwrap();
    server.handle_read(&drain(&mut client), now);
    assert_eq!(
        events(&mut server),
        [Event::Message(Message::Text("over h2".repeat(50).into()))]
    );
}

#[test]
fn rfc8441_refusals() {
    use tether_proto::handshake::{accept_extended_connect, ConnectProtocol, Request};
    let connect = |method: http::Method, protocol: Option<&str>, origin: &str| {
        let mut request = http::Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = "https://example.com/ws".parse().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-version", "13".parse().unwrap());
        request.headers_mut().insert("origin", origin.parse().unwrap());
        if let Some(protocol) = protocol {
            request.extensions_mut().insert(ConnectProtocol(protocol.to_owned()));
        }
        Request::from_http(request)
    };
    let mut config = HandshakeConfig::default();
    config.allowed_origins = Some(vec!["https://good".to_owned()]);
    let accept = Accept::new();
    let status = |r: &Request| accept_extended_connect(r, &config, &accept).unwrap_err().status();
    assert_eq!(
        status(&connect(http::Method::GET, Some("websocket"), "https://good")),
        Some(StatusCode::METHOD_NOT_ALLOWED)
    );
    assert_eq!(
        status(&connect(http::Method::CONNECT, Some("h2c"), "https://good")),
        Some(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        status(&connect(http::Method::CONNECT, None, "https://good")),
        Some(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        status(&connect(http::Method::CONNECT, Some("websocket"), "https://evil")),
        Some(StatusCode::FORBIDDEN)
    );
    assert!(accept_extended_connect(
        &connect(http::Method::CONNECT, Some("websocket"), "https://good"),
        &config,
        &accept
    )
    .is_ok());
    // The client: a refusal is Rejected with its status.
    let (mut client, _) = ClientHandshake::extended_connect(ClientRequest::new("ws://a/").unwrap()).unwrap();
    let mut response = http::Response::new(());
    *response.status_mut() = StatusCode::FORBIDDEN;
    assert!(matches!(
        client.handle_extended_connect_response(response),
        Err(HandshakeError::Rejected { status, .. }) if status == StatusCode::FORBIDDEN
    ));
    // An answer with a subprotocol not offered.
    let (mut client, _) = ClientHandshake::extended_connect(ClientRequest::new("ws://a/").unwrap()).unwrap();
    let mut response = http::Response::new(());
    response
        .headers_mut()
        .insert("sec-websocket-protocol", "nope".parse().unwrap());
    assert!(matches!(
        client.handle_extended_connect_response(response),
        Err(HandshakeError::UnofferedSubprotocol(_))
    ));
}
