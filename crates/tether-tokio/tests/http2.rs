//! WebSockets over HTTP/2 (RFC 8441): tether's client and server, several
//! sockets on one connection next to ordinary requests, cleartext with
//! prior knowledge and TLS choosing h2 or http/1.1 by ALPN on one port,
//! closing one socket leaves the others, a slow reader on one socket does
//! not stall another (flow control), refusals with their status,
//! permessage-deflate.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tether_tokio::http2::{serve_connection, serve_connection_auto, Http2Connection};
use tether_tokio::hyper::ConnectionAddrs;
use tether_tokio::tls::{TlsAcceptor, TlsClient, TlsServer};
use tether_tokio::{
    Accept, ClientBuilder, ClientRequest, CloseCode, DeflateConfig, Error, HandshakeError, HttpResponse, Message,
    Request, Server,
};
use tokio::net::TcpListener;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(30);
const FLOOD: usize = 32 << 20;

/// The app: `/ws` is an echo WebSocket ("flood" asks for 32 MiB in one
/// message), `/` a page, `/nope` 403.
fn route(request: &Request) -> Result<Accept, HttpResponse> {
    match request.path() {
        "/ws" => Ok(Accept::new().permessage_deflate(DeflateConfig::default())),
        "/" => Err(HttpResponse::new(StatusCode::OK).body("the page")),
        _ => Err(HttpResponse::new(StatusCode::FORBIDDEN).body("not for you")),
    }
}

async fn echo(mut ws: tether_tokio::hyper::HyperWebSocket) {
    while let Some(Ok(message)) = ws.recv().await {
        let reply = match &message {
            Message::Text(t) if t.as_str() == "flood" => Message::Binary(vec![7u8; FLOOD].into()),
            _ => message,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}

/// A cleartext HTTP/2 server (prior knowledge) for one connection.
async fn h2c_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        let addrs = ConnectionAddrs {
            local: tcp.local_addr().unwrap(),
            peer,
        };
        let server = Server::new();
        let _ = serve_connection(tcp, Some(addrs), &server, route, echo).await;
    });
    addr
}

async fn h2c_client(addr: std::net::SocketAddr) -> Http2Connection {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    Http2Connection::handshake(tcp, None).await.unwrap()
}

fn request(addr: std::net::SocketAddr, path: &str) -> ClientRequest {
    ClientRequest::new(&format!("ws://{addr}{path}"))
        .unwrap()
        .permessage_deflate(DeflateConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sockets_on_one_connection() {
    let addr = h2c_server().await;
    let connection = h2c_client(addr).await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(
            timeout(STEP, connection.open(request(addr, "/ws")))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(sockets[0].extensions().collect::<Vec<_>>(), ["permessage-deflate"]);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                for j in 0..50 {
                    let message = Message::Text(format!("socket {i} message {j} {}", "x".repeat(j * 40)).into());
                    ws.send(message.clone()).await.unwrap();
                    assert_eq!(timeout(STEP, ws.recv()).await.unwrap().unwrap().unwrap(), message);
                }
                ws
            })
        })
        .collect();
    let mut sockets = Vec::new();
    for task in tasks {
        sockets.push(task.await.unwrap());
    }
    // Closing one socket ends its stream only.
    let mut first = sockets.remove(0);
    first.close(CloseCode::NORMAL, "bye").await.unwrap();
    assert_eq!(first.close_info().unwrap().reason, "bye");
    for ws in &mut sockets {
        ws.send(Message::Text("still here".into())).await.unwrap();
        assert_eq!(
            timeout(STEP, ws.recv()).await.unwrap().unwrap().unwrap(),
            Message::Text("still here".into())
        );
    }
    // And a new one opens on the same connection.
    let mut again = connection.open(request(addr, "/ws")).await.unwrap();
    again.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(
        again.recv().await.unwrap().unwrap(),
        Message::Binary(vec![1, 2, 3].into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_their_status() {
    let addr = h2c_server().await;
    let connection = h2c_client(addr).await;
    match connection.open(request(addr, "/nope")).await {
        Err(Error::Handshake(HandshakeError::Rejected { status, body, .. })) => {
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(body, b"not for you");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // The connection stays usable.
    let mut ws = connection.open(request(addr, "/ws")).await.unwrap();
    ws.send(Message::Text("ok".into())).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("ok".into()));
}

/// HTTP/2 flow control: a socket whose reader does not read stops its own
/// stream only; another socket on the same connection keeps echoing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_does_not_stall_the_others() {
    let addr = h2c_server().await;
    let connection = h2c_client(addr).await;
    let mut slow = connection.open(request(addr, "/ws")).await.unwrap();
    let mut fast = connection.open(request(addr, "/ws")).await.unwrap();
    // 32 MiB towards a reader that does not read for now.
    slow.send(Message::Text("flood".into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..100 {
        let message = Message::Text(format!("fast {i}").into());
        fast.send(message.clone()).await.unwrap();
        let echoed = timeout(Duration::from_secs(5), fast.recv())
            .await
            .expect("the other socket is not stalled")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    // The slow reader gets its message in full once it reads.
    let flood = timeout(STEP, slow.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(flood.len(), FLOOD);
}

/// TLS on one port: ALPN `h2` gets HTTP/2 (WebSockets and a page on one
/// connection), a client without ALPN gets HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_chooses_h2_or_http1_on_one_port() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (certified.cert.pem(), certified.key_pair.serialize_pem());
    let server_tls = TlsServer::from_pem(cert.as_bytes(), key.as_bytes())
        .unwrap()
        .alpn(["h2", "http/1.1"]);
    let acceptor = TlsAcceptor::from(server_tls.server_config().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Arc::new(Server::new());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, server) = (acceptor.clone(), server.clone());
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await.unwrap();
                let _ = serve_connection_auto(tls, &server, route, echo, |accepted| {
                    Box::pin(async move {
                        if let Ok(mut ws) = accepted {
                            while let Some(Ok(message)) = ws.recv().await {
                                let _ = ws.send(message).await;
                            }
                        }
                    })
                })
                .await;
            });
        }
    });
    let tls = || TlsClient::new().only_roots_pem(cert.as_bytes()).unwrap();
    let url = format!("wss://localhost:{port}/ws");
    let connection = Http2Connection::connect(&url, Some(tls())).await.unwrap();
    let mut ws = connection.open(ClientRequest::new(&url).unwrap()).await.unwrap();
    ws.send(Message::Text("over h2 and TLS".into())).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::Text("over h2 and TLS".into())
    );
    assert_eq!(ws.peer_addr().unwrap().port(), port, "the addresses of the connection");
    assert!(matches!(ws.get_ref(), tether_tokio::MaybeTlsStream::Http2(_)));

    // Preferring HTTP/2 gets it here.
    let ws = tether_tokio::http2::connect_prefer_http2(
        ClientRequest::new(&url).unwrap(),
        Some(tls()),
        tether_tokio::WebSocketConfig::default(),
    )
    .await
    .unwrap();
    assert!(matches!(ws.get_ref(), tether_tokio::MaybeTlsStream::Http2(_)));
    // HTTP/1.1 on the same port.
    let mut ws = ClientBuilder::new(&url).tls(tls()).connect().await.unwrap();
    ws.send(Message::Text("over http/1.1".into())).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("over http/1.1".into()));
}

/// The client prefers HTTP/2 and falls back to HTTP/1.1: against an
/// HTTP/1.1-only TLS server, and against an HTTP/2 server that does not
/// allow extended CONNECT (hyper's HTTP/2 without `enable_connect_protocol`,
/// which also serves HTTP/1.1 upgrades on another connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_http2_falls_back_to_http1() {
    use tether_tokio::http2::connect_prefer_http2;
    use tether_tokio::{MaybeTlsStream, WebSocketConfig};
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (certified.cert.pem(), certified.key_pair.serialize_pem());
    for alpn in [&["h2", "http/1.1"][..], &["http/1.1"][..]] {
        let acceptor = TlsAcceptor::from(
            TlsServer::from_pem(cert.as_bytes(), key.as_bytes())
                .unwrap()
                .alpn(alpn.iter().copied())
                .server_config()
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let tls = acceptor.accept(tcp).await.unwrap();
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        // HTTP/2 without extended CONNECT: a page only.
                        let service = hyper::service::service_fn(|_request| async {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        });
                        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    } else if let Ok(mut ws) = tether_tokio::accept(tls).await {
                        while let Some(Ok(message)) = ws.recv().await {
                            let _ = ws.send(message).await;
                        }
                    }
                });
            }
        });
        let url = format!("wss://localhost:{port}/ws");
        let tls = TlsClient::new().only_roots_pem(cert.as_bytes()).unwrap();
        let mut ws = connect_prefer_http2(ClientRequest::new(&url).unwrap(), Some(tls), WebSocketConfig::default())
            .await
            .unwrap();
        assert!(
            matches!(ws.get_ref(), MaybeTlsStream::Tls(_)),
            "{alpn:?}: HTTP/1.1 over TLS"
        );
        ws.send(Message::Text("fallback".into())).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("fallback".into()));
    }
}

/// A hyper HTTP/2 server of the user's own (as an axum app would run it)
/// accepts extended CONNECT through `tether_tokio::hyper::upgrade`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_http2_server_upgrades_with_tether() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|mut request: http::Request<hyper::body::Incoming>| async move {
            let (response, upgrade) = tether_tokio::hyper::upgrade::<_, http_body_util::Empty<bytes::Bytes>>(
                &mut request,
                Accept::new(),
                tether_tokio::WebSocketConfig::default(),
            )?;
            tokio::spawn(async move {
                if let Ok(mut ws) = upgrade.await {
                    while let Some(Ok(message)) = ws.recv().await {
                        let _ = ws.send(message).await;
                    }
                }
            });
            Ok::<_, Error>(response)
        });
        let mut builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder.enable_connect_protocol();
        let _ = builder
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
            .await;
    });
    let connection = h2c_client(addr).await;
    let mut ws = connection.open(request(addr, "/any")).await.unwrap();
    ws.send(Message::Text("through hyper".into())).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("through hyper".into()));
}

/// A stream that ends without a close frame, and a lost connection, are
/// the same errors as over HTTP/1.1: an abnormal closure (1006) or a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_connection_loss_map_to_the_usual_kinds() {
    use tether_tokio::ErrorKind;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // "drop": the handler drops its socket without a close frame.
        let route = |_: &Request| Ok(Accept::new());
        let _ = serve_connection(tcp, None, &Server::new(), route, |mut ws| async move {
            // "drop" drops the socket without a close frame; anything else
            // keeps it open.
            if let Some(Ok(Message::Text(t))) = ws.recv().await {
                if t.as_str() == "drop" {
                    drop(ws);
                    return;
                }
            }
            std::future::pending::<()>().await;
        })
        .await;
    });
    let connection = h2c_client(addr).await;
    let mut dropped = connection.open(request(addr, "/drop")).await.unwrap();
    // The server resets the stream as soon as "drop" arrives, which can be
    // before this send's flush has returned: then the send reports the
    // reset itself, and the next receive the same kind.
    let lost = |kind| matches!(kind, ErrorKind::AbnormalClosure | ErrorKind::ConnectionReset);
    if let Err(error) = dropped.send(Message::Text("drop".into())).await {
        assert!(lost(error.kind()), "{error:?}");
    }
    let error = timeout(STEP, dropped.recv()).await.unwrap().unwrap().unwrap_err();
    assert!(lost(error.kind()), "{error:?}");
    // The whole connection lost: every socket on it fails the same way.
    let mut open = connection.open(request(addr, "/keep")).await.unwrap();
    open.send(Message::Text("keep".into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.abort();
    let error = timeout(STEP, open.recv()).await.unwrap().unwrap().unwrap_err();
    assert!(lost(error.kind()), "{error:?}");
}

/// A stream the server resets (its handler drops the socket at once) fails
/// the client's next send with `ConnectionReset`, as a TCP reset would, not
/// with hyper's error as an `Io` of kind `Other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_fails_a_send_with_connection_reset() {
    use tether_tokio::ErrorKind;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let route = |_: &Request| Ok(Accept::new());
        let _ = serve_connection(tcp, None, &Server::new(), route, |ws| async move { drop(ws) }).await;
    });
    let connection = h2c_client(addr).await;
    let mut ws = connection.open(request(addr, "/reset")).await.unwrap();
    // The reset reaches the client's stream some time after the handshake:
    // send until a send fails (within a bound).
    let deadline = tokio::time::Instant::now() + STEP;
    let error = loop {
        match ws.send(Message::Text("anyone?".into())).await {
            Ok(()) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(()) => panic!("every send succeeded on a stream the server reset"),
            Err(error) => break error,
        }
    };
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error:?}");
    server.abort();
}
