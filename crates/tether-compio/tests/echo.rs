//! tether-compio end to end on loopback: a compio echo server and compio
//! clients on one runtime, through io_uring (or compio's poll driver).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::net::SocketAddr;
use std::num::NonZero;
use std::time::{Duration, Instant};

use tether_compio::{
    read_counts, CloseCode, CompioStream, DataKind, ErrorKind, Message, Received, Server, WebSocketConfig,
};

type BoxError = Box<dyn std::error::Error>;

/// Starts an echo server task on the current runtime: every message comes
/// back, a text message "close CODE" closes with that code.
async fn echo_server(server: Server) -> SocketAddr {
    let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    compio::runtime::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let server = server.clone();
            compio::runtime::spawn(async move {
                let Ok(mut ws) = server.accept(CompioStream::from(tcp)).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.recv().await {
                    if let Message::Text(text) = &message {
                        if let Some(code) = text.strip_prefix("close ") {
                            let code: u16 = code.parse().unwrap();
                            let _ = ws.close(CloseCode::from(code), "asked").await;
                            break;
                        }
                    }
                    if ws.feed(message).await.is_err() {
                        break;
                    }
                }
            })
            .detach();
        }
    })
    .detach();
    addr
}

/// A raw client's opening handshake.
const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn no_pings() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    config
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn messages_of_every_kind_and_size_come_back() -> Result<(), BoxError> {
    tether_compio::runtime()?.block_on(async {
        let addr = echo_server(Server::new().config(no_pings())).await;
        let mut ws = tether_compio::connect(&format!("ws://{addr}/")).await?;
        assert_eq!(ws.peer_addr()?, addr);
        for message in [
            Message::Text("hello".into()),
            Message::Binary(payload(20, 1).into()),
            Message::Binary(Vec::new().into()),
            Message::Text("é€𝄞".repeat(10_000).into()),
            Message::Binary(payload(16 * 1024, 2).into()),
            // Larger than a pool buffer and than one write (256 KiB).
            Message::Binary(payload(4 << 20, 3).into()),
        ] {
            ws.send(message.clone()).await?;
            assert_eq!(ws.recv().await.transpose()?, Some(message));
        }
        // A fragmented message, reassembled by the server and echoed whole.
        ws.send_fragment(DataKind::Binary, b"frag", false).await?;
        ws.send_fragment(DataKind::Binary, b"ment", true).await?;
        assert_eq!(
            ws.recv().await.transpose()?,
            Some(Message::Binary(b"fragment".to_vec().into()))
        );
        // A ping is answered with its payload.
        ws.ping(b"are you there".to_vec()).await?;
        loop {
            match ws.recv_event().await.transpose()? {
                Some(Received::Pong(payload)) => {
                    assert_eq!(&payload[..], b"are you there");
                    break;
                }
                Some(_) => {}
                None => panic!("closed before the pong"),
            }
        }
        ws.close(CloseCode::NORMAL, "done").await?;
        assert_eq!(ws.close_info().map(|c| c.code), Some(CloseCode::NORMAL));
        Ok(())
    })
}

#[test]
fn many_messages_in_flight_keep_their_order() -> Result<(), BoxError> {
    tether_compio::runtime()?.block_on(async {
        let addr = echo_server(Server::new().config(no_pings())).await;
        let mut ws = tether_compio::connect(&format!("ws://{addr}/")).await?;
        for i in 0..2_000u32 {
            ws.feed(Message::Binary(i.to_be_bytes().to_vec().into())).await?;
        }
        ws.flush().await?;
        for i in 0..2_000u32 {
            assert_eq!(
                ws.recv().await.transpose()?,
                Some(Message::Binary(i.to_be_bytes().to_vec().into()))
            );
        }
        ws.close(CloseCode::NORMAL, "").await?;
        Ok(())
    })
}

/// Two pool buffers for 64 connections whose data arrives at once (raw
/// clients on another thread write all their frames, then read): most
/// reads find the pool empty (ENOBUFS) and take a spare buffer for one
/// read; nothing is lost or reordered.
#[test]
fn an_exhausted_buffer_pool_loses_nothing() -> Result<(), BoxError> {
    use std::io::{Read, Write};

    const CONNS: usize = 64;
    const SIZE: usize = 3000;
    let mut proactor = compio::driver::ProactorBuilder::new();
    proactor
        .buffer_pool_size(NonZero::new(2).unwrap())
        .buffer_pool_buffer_len(4096);
    let runtime = compio::runtime::RuntimeBuilder::new().with_proactor(proactor).build()?;
    runtime.block_on(async {
        let addr = echo_server(Server::new().config(no_pings())).await;
        let before = read_counts();
        let clients = std::thread::spawn(move || -> std::io::Result<()> {
            let mut socks = Vec::new();
            for _ in 0..CONNS {
                let mut tcp = std::net::TcpStream::connect(addr)?;
                tcp.write_all(UPGRADE)?;
                let mut response = Vec::new();
                while !response.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8];
                    tcp.read_exact(&mut byte)?;
                    response.push(byte[0]);
                }
                assert!(response.starts_with(b"HTTP/1.1 101"));
                socks.push(tcp);
            }
            for round in 0..20u8 {
                // Every connection's frame first (masked with a zero key)...
                for (i, tcp) in socks.iter_mut().enumerate() {
                    let mut frame = vec![0x82, 0x80 | 126, (SIZE >> 8) as u8, SIZE as u8, 0, 0, 0, 0];
                    frame.extend(payload(SIZE, round ^ i as u8));
                    tcp.write_all(&frame)?;
                }
                // ...then every echo.
                for (i, tcp) in socks.iter_mut().enumerate() {
                    let mut echo = vec![0u8; 4 + SIZE];
                    tcp.read_exact(&mut echo)?;
                    assert_eq!(echo[..4], [0x82, 126, (SIZE >> 8) as u8, SIZE as u8]);
                    assert!(
                        echo[4..] == payload(SIZE, round ^ i as u8),
                        "connection {i} round {round}"
                    );
                }
            }
            Ok(())
        });
        while !clients.is_finished() {
            compio::time::sleep(Duration::from_millis(5)).await;
        }
        clients.join().map_err(|_| "a client assertion failed")??;
        let after = read_counts();
        eprintln!("reads: {before:?} -> {after:?}");
        assert!(after.pooled > before.pooled, "{before:?} {after:?}");
        if compio::runtime::Runtime::with_current(|rt| rt.driver_type().is_iouring()) {
            assert!(
                after.spare > before.spare,
                "no read found the pool empty: {before:?} {after:?}"
            );
        }
        Ok(())
    })
}

/// A connection that waits for data waits in a pooled read: no receive
/// buffer of its own, also after a large message streamed in through spare
/// reads.
#[test]
fn a_waiting_connection_holds_no_read_buffer() -> Result<(), BoxError> {
    tether_compio::runtime()?.block_on(async {
        let listener = compio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = compio::runtime::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tether_compio::accept(CompioStream::from(tcp)).await.unwrap();
            let mut states = Vec::new();
            for _ in 0..2 {
                // Wait 100 ms for a message that does not come, then look.
                let timeout = compio::time::timeout(Duration::from_millis(100), ws.recv()).await;
                assert!(timeout.is_err(), "nothing was sent yet");
                let io = ws.get_ref();
                states.push((io.is_reading(), io.holds_read_buffer()));
                // Then the client's big message, echoed.
                let message = ws.recv().await.unwrap().unwrap();
                ws.send(message).await.unwrap();
            }
            // The client's close.
            assert!(ws.recv().await.is_none());
            states
        });
        let mut ws = tether_compio::connect(&format!("ws://{addr}/")).await?;
        let spare_before = read_counts().spare;
        for seed in 0..2 {
            compio::time::sleep(Duration::from_millis(200)).await;
            let big = Message::Binary(payload(1 << 20, seed).into());
            ws.send(big.clone()).await?;
            assert_eq!(ws.recv().await.transpose()?, Some(big));
        }
        if compio::runtime::Runtime::with_current(|rt| rt.driver_type().is_iouring()) {
            assert!(
                read_counts().spare > spare_before,
                "1 MiB streamed in through spare reads"
            );
        }
        ws.close(CloseCode::NORMAL, "").await?;
        let states = server.await.map_err(|_| "server panicked")?;
        assert_eq!(states, [(true, false), (true, false)]);
        Ok(())
    })
}

#[test]
fn the_server_closes_with_a_code_and_the_client_sees_it() -> Result<(), BoxError> {
    tether_compio::runtime()?.block_on(async {
        let addr = echo_server(Server::new().config(no_pings())).await;
        let mut ws = tether_compio::connect(&format!("ws://{addr}/")).await?;
        ws.send(Message::Text("close 4001".into())).await?;
        assert!(ws.recv().await.is_none());
        let closed = ws.close_info().cloned().expect("closed");
        assert_eq!(closed.code, CloseCode::from(4001));
        assert_eq!(closed.reason, "asked");
        Ok(())
    })
}

#[test]
fn a_refused_connection_and_a_vanished_peer_are_typed_errors() -> Result<(), BoxError> {
    tether_compio::runtime()?.block_on(async {
        // Nothing listens on a port we bound and released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let err = tether_compio::connect(&format!("ws://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

        // A server that accepts the WebSocket, then drops the socket.
        let listener = compio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        compio::runtime::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = tether_compio::accept(CompioStream::from(tcp)).await.unwrap();
            compio::time::sleep(Duration::from_millis(50)).await;
            drop(ws);
        })
        .detach();
        let mut ws = tether_compio::connect(&format!("ws://{addr}/")).await?;
        let err = ws.recv().await.expect("an error, not a clean end").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AbnormalClosure, "{err}");
        Ok(())
    })
}

/// The core's timers run on compio's: keepalive pings go out, and a peer
/// that stops answering is closed by the idle timeout.
#[test]
fn keepalive_and_idle_timeout_run_on_compio_timers() -> Result<(), BoxError> {
    tether_compio::runtime()?.block_on(async {
        let listener = compio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = WebSocketConfig::default();
        config.connection.ping_interval = Some(Duration::from_millis(100));
        config.connection.idle_timeout = Some(Duration::from_millis(400));
        let server = compio::runtime::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = Server::new()
                .config(config)
                .accept(CompioStream::from(tcp))
                .await
                .unwrap();
            let started = Instant::now();
            let end = ws.recv().await;
            (started.elapsed(), end.map(|r| r.map_err(|e| e.kind())))
        });
        // A raw client: the handshake by hand, then it reads pings and never
        // answers.
        let mut tcp = std::net::TcpStream::connect(addr)?;
        use std::io::{Read, Write};
        tcp.write_all(UPGRADE)?;
        tcp.set_nonblocking(true)?;
        let mut seen = Vec::new();
        let (elapsed, end) = loop {
            let mut buf = [0u8; 1024];
            match tcp.read(&mut buf) {
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            if server.is_finished() {
                break server.await.map_err(|_| "server panicked")?;
            }
            compio::time::sleep(Duration::from_millis(10)).await;
        };
        let pings = seen.windows(2).filter(|w| w == &[0x89, 0x00]).count();
        assert!(pings >= 2, "pings seen: {pings}");
        assert!(elapsed >= Duration::from_millis(350), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_eq!(end, Some(Err(ErrorKind::IdleTimeout)));
        Ok(())
    })
}
