//! Client and server of this crate over loopback TCP and in-memory pipes.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{echo_server, quiet, CountingWrites, TEST_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tether_tokio::{
    accept_with, client_over, Accept, ClientBuilder, ClientRequest, CloseCode, Error, HandshakeError, HttpResponse,
    Message, Received, Server, State,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

#[tokio::test]
async fn echo_text_and_binary_over_tcp() {
    timeout(TEST_TIMEOUT, async {
        let (addr, server) = echo_server(1, quiet()).await;
        let mut ws = tether_tokio::connect(&format!("ws://{addr}/")).await.unwrap();
        assert_eq!(ws.peer_addr().unwrap(), addr);
        assert!(ws.local_addr().unwrap().ip().is_loopback());
        ws.send("hello").await.unwrap();
        ws.send(Message::Binary(Bytes::from_static(&[0, 1, 2, 255])))
            .await
            .unwrap();
        let big = "x".repeat(1 << 20);
        ws.send(big.as_str()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("hello".into()));
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::Binary(Bytes::from_static(&[0, 1, 2, 255]))
        );
        assert_eq!(ws.recv().await.unwrap().unwrap().len(), big.len());
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        assert_eq!(ws.state(), State::Closed);
        assert_eq!(ws.close_info().unwrap().code, CloseCode::NORMAL);
        // The stream is over.
        assert!(ws.next().await.is_none());
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sink_and_stream_interfaces() {
    timeout(TEST_TIMEOUT, async {
        let (addr, server) = echo_server(1, quiet()).await;
        let mut ws = tether_tokio::connect(&format!("ws://{addr}/")).await.unwrap();
        // Many messages fed without a flush leave in one write.
        for i in 0..100 {
            ws.feed(Message::Text(i.to_string().into())).await.unwrap();
        }
        ws.flush().await.unwrap();
        for i in 0..100 {
            let message = ws.next().await.unwrap().unwrap();
            assert_eq!(message, Message::Text(i.to_string().into()));
        }
        SinkExt::close(&mut ws).await.unwrap();
        assert_eq!(ws.state(), State::Closing);
        // The receive side sees the answer and ends.
        assert!(ws.next().await.is_none());
        assert!(matches!(ws.send("late").await, Err(Error::Closed)));
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn subprotocol_origin_and_headers_reach_the_server() {
    timeout(TEST_TIMEOUT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = accept_with(tcp, |request| {
                assert_eq!(request.path(), "/chat");
                assert_eq!(request.query(), Some("room=1"));
                assert_eq!(request.origin(), Some("https://example.com"));
                assert_eq!(request.headers()["x-token"], "abc");
                assert_eq!(request.protocols(), vec!["v2", "v1"]);
                Ok(Accept::new().subprotocol("v1"))
            })
            .await
            .unwrap();
            assert_eq!(ws.subprotocol(), Some("v1"));
            // The server closes with its own code.
            ws.close(CloseCode::new(4000), "go away").await.unwrap();
        });
        let mut ws = ClientBuilder::new(&format!("ws://{addr}/chat?room=1"))
            .protocols(["v2", "v1"])
            .origin("https://example.com")
            .header(
                http::HeaderName::from_static("x-token"),
                http::HeaderValue::from_static("abc"),
            )
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.subprotocol(), Some("v1"));
        assert_eq!(ws.extensions().count(), 0);
        // A close from the peer ends the stream cleanly...
        assert!(ws.recv().await.is_none());
        let closed = ws.close_info().unwrap();
        assert_eq!((closed.code, closed.reason.as_str()), (CloseCode::new(4000), "go away"));
        // ... and sending afterwards says who closed and why.
        match ws.send("hi").await {
            Err(Error::ClosedByPeer { code, reason }) => {
                assert_eq!((code, reason.as_str()), (CloseCode::new(4000), "go away"));
            }
            other => panic!("{other:?}"),
        }
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn rejection_carries_status_headers_and_body() {
    timeout(TEST_TIMEOUT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let result = accept_with(tcp, |_| {
                Err(HttpResponse::new(StatusCode::FORBIDDEN)
                    .header(http::header::RETRY_AFTER, http::HeaderValue::from_static("5"))
                    .body("no entry"))
            })
            .await;
            assert!(matches!(result, Err(Error::NotWebSocket(StatusCode::FORBIDDEN))));
        });
        match tether_tokio::connect(&format!("ws://{addr}/")).await {
            Err(Error::Handshake(HandshakeError::Rejected { status, headers, body })) => {
                assert_eq!(status, StatusCode::FORBIDDEN);
                assert_eq!(headers[http::header::RETRY_AFTER], "5");
                assert_eq!(body, b"no entry");
            }
            other => panic!("{other:?}"),
        }
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn plain_http_to_a_websocket_endpoint_gets_400() {
    timeout(TEST_TIMEOUT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let result = tether_tokio::accept(tcp).await;
            assert!(matches!(&result, Err(Error::Handshake(e)) if e.status() == Some(StatusCode::BAD_REQUEST)));
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connect_timeout_covers_the_handshake() {
    timeout(TEST_TIMEOUT, async {
        // A server that accepts TCP and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(tcp);
        });
        let started = std::time::Instant::now();
        let result = ClientBuilder::new(&format!("ws://{addr}/"))
            .connect_timeout(Some(Duration::from_millis(300)))
            .connect()
            .await;
        assert!(matches!(result, Err(Error::ConnectTimeout)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        server.abort();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connection_refused_is_io() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let result = tether_tokio::connect(&format!("ws://{addr}/")).await;
    assert!(matches!(result, Err(Error::Io(_))), "{result:?}");
}

/// Connects by host name. (Whether every resolved address is tried in turn,
/// sharing the deadline, is proved on an address list in `defaults.rs`:
/// `localhost` often has one address.)
#[tokio::test]
async fn connects_by_host_name() {
    timeout(TEST_TIMEOUT, async {
        let addrs: Vec<_> = tokio::net::lookup_host(("localhost", 1)).await.unwrap().collect();
        // Listen on IPv4 only: if localhost resolves to ::1 first, that
        // attempt is refused and the next address must be tried.
        let (addr, server) = echo_server(1, quiet()).await;
        let mut ws = tether_tokio::connect(&format!("ws://localhost:{}/", addr.port()))
            .await
            .unwrap_or_else(|e| panic!("{e} (localhost is {addrs:?})"));
        ws.send("hi").await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("hi".into()));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_url_is_reported() {
    let result = tether_tokio::connect("http://example.com/").await;
    assert!(
        matches!(result, Err(Error::Handshake(HandshakeError::InvalidUri(_)))),
        "{result:?}"
    );
}

#[tokio::test]
async fn nodelay_switch() {
    timeout(TEST_TIMEOUT, async {
        let (addr, server) = echo_server(2, quiet()).await;
        let url = format!("ws://{addr}/");
        let mut ws = tether_tokio::connect(&url).await.unwrap();
        assert!(tcp_of(&ws).nodelay().unwrap());
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        let mut ws = ClientBuilder::new(&url).nodelay(false).connect().await.unwrap();
        assert!(!tcp_of(&ws).nodelay().unwrap());
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await
    .unwrap();
}

fn tcp_of(ws: &tether_tokio::ClientStream) -> &TcpStream {
    match ws.get_ref() {
        tether_tokio::MaybeTlsStream::Plain(tcp) => tcp,
        _ => panic!("not plain TCP"),
    }
}

#[tokio::test]
async fn over_an_in_memory_pipe() {
    timeout(TEST_TIMEOUT, async {
        let (a, b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let mut ws = Server::new().config(quiet()).accept(b).await.unwrap();
            while let Some(Ok(message)) = ws.recv().await {
                ws.send(message).await.unwrap();
            }
        });
        let request = ClientRequest::new("ws://pipe.invalid/").unwrap();
        let mut ws = client_over(a, request).await.unwrap();
        // Larger than the pipe's buffer: written in pieces.
        let data = Bytes::from(vec![7u8; 100_000]);
        ws.send(Message::Binary(data.clone())).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Binary(data));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn pings_and_pongs_are_visible_with_recv_event() {
    timeout(TEST_TIMEOUT, async {
        let (addr, server) = echo_server(1, quiet()).await;
        let mut ws = tether_tokio::connect(&format!("ws://{addr}/")).await.unwrap();
        ws.ping(&b"rtt"[..]).await.unwrap();
        match ws.recv_event().await.unwrap().unwrap() {
            Received::Pong(payload) => assert_eq!(&payload[..], b"rtt"),
            other => panic!("{other:?}"),
        }
        let too_long = vec![0u8; 126];
        assert!(matches!(ws.ping(too_long).await, Err(Error::Send(_))));
        let bad_code = ws.close(CloseCode::new(1005), "").await;
        assert!(matches!(bad_code, Err(Error::Send(_))), "{bad_code:?}");
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn protocol_violation_fails_with_its_close_code() {
    timeout(TEST_TIMEOUT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tether_tokio::accept(tcp).await.unwrap();
            let error = ws.recv().await.unwrap().unwrap_err();
            assert!(matches!(
                error,
                Error::Protocol(tether_tokio::ProtocolError::UnmaskedFrame)
            ));
            assert_eq!(error.close_code(), Some(CloseCode::PROTOCOL_ERROR));
            assert!(ws.recv().await.is_none());
        });
        // A raw client whose frame is not masked.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let frame = &answer[head_end..];
        assert_eq!(frame[0], 0x88, "a close frame");
        assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1002);
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn many_pings_in_one_read_are_answered_in_one_write() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    timeout(TEST_TIMEOUT, async {
        // The server on a pipe that counts its writes.
        let (client_end, server_end) = tokio::io::duplex(1024 * 1024);
        let writes = Arc::new(AtomicUsize::new(0));
        let server_io = CountingWrites {
            inner: server_end,
            writes: writes.clone(),
        };
        let server = tokio::spawn(async move {
            let mut ws = Server::new().config(quiet()).accept(server_io).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("end".into()));
            // The client closes.
            assert!(ws.recv().await.is_none());
        });
        let mut tcp = client_end;
        tcp.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        let before = writes.load(Ordering::Relaxed);
        // 50 masked pings (zero key) and a text frame in one write.
        let mut burst = Vec::new();
        for _ in 0..50 {
            burst.extend_from_slice(&[0x89, 0x80, 0, 0, 0, 0]);
        }
        burst.extend_from_slice(&[0x81, 0x83, 0, 0, 0, 0, b'e', b'n', b'd']);
        tcp.write_all(&burst).await.unwrap();
        // The 50 pongs, in order, written by one write of the server.
        let mut pongs = vec![0u8; 100];
        tcp.read_exact(&mut pongs).await.unwrap();
        assert!(pongs.chunks(2).all(|p| p == [0x8a, 0x00]));
        assert_eq!(writes.load(Ordering::Relaxed) - before, 1, "one write for the 50 pongs");
        // Close; the server answers and closes the transport.
        tcp.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]).await.unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, [0x88, 0x02, 0x03, 0xe8], "the close reply, then the end");
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn permessage_deflate_negotiated_and_used() {
    use tether_tokio::DeflateConfig;
    timeout(TEST_TIMEOUT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = Server::new()
                .permessage_deflate(DeflateConfig::default())
                .accept(tcp)
                .await
                .unwrap();
            assert_eq!(ws.extensions().collect::<Vec<_>>(), ["permessage-deflate"]);
            while let Some(Ok(message)) = ws.next().await {
                ws.send(message).await.unwrap();
            }
        });
        let mut ws = ClientBuilder::new(&format!("ws://{addr}/"))
            .permessage_deflate(DeflateConfig::default())
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.extensions().collect::<Vec<_>>(), ["permessage-deflate"]);
        let text = "compress me ".repeat(10_000);
        ws.send(text.as_str()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text(text.into()));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await
    .unwrap();
}
