//! Accepting a WebSocket inside a hyper 1.x server.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use bytes::Bytes;
use common::TEST_TIMEOUT;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tether_tokio::{Accept, CloseCode, Message, WebSocketConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

async fn service(
    mut request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    if !tether_tokio::hyper::is_upgrade_request(&request) {
        return Ok(hyper::Response::new(Full::new(Bytes::from_static(b"plain HTTP"))));
    }
    let offered_chat = request
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .is_some_and(|v| v.as_bytes() == b"chat");
    let options = if offered_chat {
        Accept::new().subprotocol("chat")
    } else {
        Accept::new()
    };
    match tether_tokio::hyper::upgrade(&mut request, options, WebSocketConfig::default()) {
        Ok((response, upgrade)) => {
            let addrs = request
                .extensions()
                .get::<tether_tokio::hyper::ConnectionAddrs>()
                .copied()
                .unwrap();
            tokio::spawn(async move {
                let mut ws = upgrade.await.unwrap();
                assert_eq!(ws.subprotocol(), Some("chat"));
                // The addresses the accept loop put in the request.
                assert_eq!(ws.local_addr().unwrap(), addrs.local);
                assert_eq!(ws.peer_addr().unwrap(), addrs.peer);
                while let Some(Ok(message)) = ws.recv().await {
                    ws.send(message).await.unwrap();
                }
            });
            Ok(response)
        }
        Err(tether_tokio::Error::Handshake(e)) => {
            let mut response = hyper::Response::new(Full::new(Bytes::from(e.to_string())));
            *response.status_mut() = e.status().unwrap_or(http::StatusCode::BAD_REQUEST);
            Ok(response)
        }
        Err(e) => panic!("{e}"),
    }
}

async fn hyper_server(connections: usize) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        for _ in 0..connections {
            let (tcp, peer) = listener.accept().await.unwrap();
            let addrs = tether_tokio::hyper::ConnectionAddrs {
                local: tcp.local_addr().unwrap(),
                peer,
            };
            tokio::spawn(async move {
                let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(addrs);
                    service(request)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn upgrade_inside_hyper() {
    timeout(TEST_TIMEOUT, async {
        let (addr, server) = hyper_server(1).await;
        let mut ws = tether_tokio::ClientBuilder::new(&format!("ws://{addr}/ws"))
            .protocols(["chat"])
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.subprotocol(), Some("chat"));
        for i in 0..10 {
            ws.send(format!("hello {i}")).await.unwrap();
            assert_eq!(
                ws.recv().await.unwrap().unwrap(),
                Message::Text(format!("hello {i}").into())
            );
        }
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_handshake_through_hyper_gets_its_status() {
    timeout(TEST_TIMEOUT, async {
        let (addr, server) = hyper_server(1).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // Version 8 is not 13: 426.
        tcp.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
        server.await.unwrap();
    })
    .await
    .unwrap();
}
