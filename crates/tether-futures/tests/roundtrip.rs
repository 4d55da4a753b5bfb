//! Client and server of this crate over loopback TCP, on smol and on
//! async-std: every test body runs once on each (`on_smol::*`,
//! `on_async_std::*`).
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Exec, Task};
use futures_util::io::AsyncReadExt;
use futures_util::StreamExt;
use tether_futures::{
    ClientBuilder, CloseCause, CloseCode, Closed, Config, DeflateConfig, Error, FuturesIo, Message, Received, Server,
    State, WebSocketConfig,
};

on_both_executors!(
    echo_text_and_binary,
    echo_of_a_four_mib_message,
    ping_is_answered_with_its_payload,
    client_closes_with_code_and_reason,
    server_closes_with_code_and_reason,
    permessage_deflate_on,
    permessage_deflate_off,
    split_halves_from_two_tasks,
    message_read_piece_by_piece,
    connect_timeout_when_the_peer_never_answers,
    every_resolved_address_is_tried,
    connection_refused_is_io,
);

/// Accepts one connection with `server` and echoes it (`feed`, so that
/// what one read brought leaves in one write) until it ends; returns how.
async fn echo_server(exec: Exec, server: Server) -> (String, Task<Option<Closed>>) {
    let listener = exec.listen().await;
    let url = listener.url();
    let task = exec.spawn(async move {
        let tcp = listener.accept().await;
        let mut ws = server.accept(tcp).await.unwrap();
        while let Some(Ok(message)) = ws.recv().await {
            if ws.feed(message).await.is_err() {
                break;
            }
        }
        ws.close_info().cloned()
    });
    (url, task)
}

async fn echo_text_and_binary(exec: Exec) {
    let (url, server) = echo_server(exec, Server::new()).await;
    let mut ws = tether_futures::connect(&url).await.unwrap();
    assert!(ws.peer_addr().unwrap().ip().is_loopback());
    assert!(ws.get_ref().tcp().get_ref().nodelay().unwrap());
    ws.send("hello").await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[0, 1, 2, 255])))
        .await
        .unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("hello".into()));
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(&[0, 1, 2, 255]))
    );
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert_eq!(ws.state(), State::Closed);
    assert!(ws.recv().await.is_none());
    let closed = server.await.unwrap();
    assert!(closed.is_clean());
}

async fn echo_of_a_four_mib_message(exec: Exec) {
    let (url, server) = echo_server(exec, Server::new()).await;
    let mut ws = tether_futures::connect(&url).await.unwrap();
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    // One at a time: an echo server stops reading while its answer is not
    // read (backpressure), so two such messages in a row would wait on
    // each other.
    ws.send(big.clone()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Binary(big.into()));
    let text = "é".repeat(2 << 20);
    ws.send(text.as_str()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text(text.into()));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    server.await.unwrap();
}

async fn ping_is_answered_with_its_payload(exec: Exec) {
    let (url, server) = echo_server(exec, Server::new()).await;
    let mut ws = tether_futures::connect(&url).await.unwrap();
    ws.ping(&b"are you there"[..]).await.unwrap();
    ws.send("after the ping").await.unwrap();
    assert_eq!(
        ws.recv_event().await.unwrap().unwrap(),
        Received::Pong(Bytes::from_static(b"are you there"))
    );
    assert_eq!(
        ws.recv_event().await.unwrap().unwrap(),
        Received::Message(Message::Text("after the ping".into()))
    );
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    server.await.unwrap();
}

async fn client_closes_with_code_and_reason(exec: Exec) {
    let (url, server) = echo_server(exec, Server::new()).await;
    let mut ws = tether_futures::connect(&url).await.unwrap();
    ws.close(CloseCode::from(4001), "client leaves").await.unwrap();
    let ours = ws.close_info().unwrap();
    assert_eq!(ours.cause, CloseCause::Local);
    let theirs = server.await.unwrap();
    assert_eq!(theirs.code, CloseCode::from(4001));
    assert_eq!(theirs.reason, "client leaves");
    assert_eq!(theirs.cause, CloseCause::Remote);
}

async fn server_closes_with_code_and_reason(exec: Exec) {
    let listener = exec.listen().await;
    let url = listener.url();
    let server = exec.spawn(async move {
        let mut ws = tether_futures::accept(listener.accept().await).await.unwrap();
        let first = ws.recv().await.unwrap().unwrap();
        assert_eq!(first, Message::Text("last words?".into()));
        ws.close(CloseCode::GOING_AWAY, "server restarts").await.unwrap();
        ws.close_info().unwrap().cause.clone()
    });
    let mut ws = tether_futures::connect(&url).await.unwrap();
    ws.send("last words?").await.unwrap();
    assert!(ws.recv().await.is_none(), "a clean close ends the stream");
    let closed = ws.close_info().unwrap();
    assert_eq!(closed.code, CloseCode::GOING_AWAY);
    assert_eq!(closed.reason, "server restarts");
    assert_eq!(closed.cause, CloseCause::Remote);
    assert_eq!(server.await, CloseCause::Local);
}

async fn permessage_deflate_on(exec: Exec) {
    let server = Server::new().permessage_deflate(DeflateConfig::default());
    let (url, server) = echo_server(exec, server).await;
    let mut ws = ClientBuilder::new(&url)
        .permessage_deflate(DeflateConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.extensions().collect::<Vec<_>>(), ["permessage-deflate"]);
    let text = "compress me, ".repeat(20_000);
    for _ in 0..3 {
        ws.send(text.as_str()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text(text.as_str().into()));
    }
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(server.await.unwrap().is_clean());
}

async fn permessage_deflate_off(exec: Exec) {
    // The client offers, the server (no deflate settings) declines.
    let (url, server) = echo_server(exec, Server::new()).await;
    let mut ws = ClientBuilder::new(&url)
        .permessage_deflate(DeflateConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.extensions().count(), 0);
    ws.send("plain").await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("plain".into()));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    server.await.unwrap();
}

async fn split_halves_from_two_tasks(exec: Exec) {
    const COUNT: usize = 200;
    let (url, server) = echo_server(exec, Server::new()).await;
    let ws = tether_futures::connect(&url).await.unwrap();
    let (mut read, mut write) = ws.split();
    let writer = exec.spawn(async move {
        for i in 0..COUNT {
            write.send(Message::Text(i.to_string().into())).await.unwrap();
        }
        write
    });
    for i in 0..COUNT {
        assert_eq!(read.recv().await.unwrap().unwrap(), Message::Text(i.to_string().into()));
    }
    let mut write = writer.await;
    write.close(CloseCode::NORMAL, "both halves done").await.unwrap();
    // The read half sees the server's answer, then the end.
    assert!(read.recv().await.is_none());
    assert_eq!(read.close_info().unwrap().code, CloseCode::NORMAL);
    let ws = read.reunite(write).unwrap();
    assert_eq!(ws.state(), State::Closed);
    assert_eq!(server.await.unwrap().reason, "both halves done");
}

async fn message_read_piece_by_piece(exec: Exec) {
    const SIZE: usize = 3 << 20;
    let listener = exec.listen().await;
    let url = listener.url();
    let server = exec.spawn(async move {
        let mut ws = tether_futures::accept(listener.accept().await).await.unwrap();
        // Three frames of one message, then a small one.
        let chunk = vec![7u8; SIZE / 3];
        ws.send_fragment(tether_futures::DataKind::Binary, &chunk, false)
            .await
            .unwrap();
        ws.send_fragment(tether_futures::DataKind::Binary, &chunk, false)
            .await
            .unwrap();
        ws.send_fragment(tether_futures::DataKind::Binary, &chunk, true)
            .await
            .unwrap();
        ws.send("after").await.unwrap();
        while ws.recv().await.is_some() {}
    });
    let mut connection = Config::default();
    connection.stream_threshold = Some(64 * 1024);
    let mut ws = ClientBuilder::new(&url)
        .config(WebSocketConfig::with_connection(connection))
        .connect()
        .await
        .unwrap();
    let mut reader = ws.recv_reader().await.unwrap().unwrap();
    let (mut total, mut reads) = (0, 0);
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut piece).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(piece[..n].iter().all(|&b| b == 7));
        total += n;
        reads += 1;
    }
    drop(reader);
    assert_eq!(total, SIZE);
    assert!(reads >= SIZE / piece.len());
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("after".into()));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    server.await;
}

async fn connect_timeout_when_the_peer_never_answers(exec: Exec) {
    // TCP connects (the kernel's backlog) but nothing ever answers the
    // opening handshake.
    let listener = exec.listen().await;
    let started = Instant::now();
    let result = ClientBuilder::new(&listener.url())
        .connect_timeout(Some(Duration::from_millis(300)))
        .connect()
        .await;
    assert!(matches!(result, Err(Error::ConnectTimeout)), "{result:?}");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    drop(listener);
}

async fn every_resolved_address_is_tried(exec: Exec) {
    let closed = exec.listen().await.addr(); // dropped: nobody listens there
    let (url, server) = echo_server(exec, Server::new()).await;
    let open: std::net::SocketAddr = url.trim_start_matches("ws://").trim_end_matches('/').parse().unwrap();
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    let tcp = tether_driver::connect_addrs::<FuturesIo>("test", &[closed, open], true, deadline)
        .await
        .unwrap();
    assert_eq!(tcp.get_ref().peer_addr().unwrap(), open);
    drop(tcp);
    // The server saw a connection that never handshook.
    drop(server);
}

async fn connection_refused_is_io(exec: Exec) {
    let closed = exec.listen().await.addr();
    let result = tether_futures::connect(&format!("ws://{closed}/")).await;
    assert!(matches!(result, Err(Error::Io(_))), "{result:?}");
}

/// With the `async-std` feature, a connection on async-std's own stream
/// knows its addresses.
#[test]
fn async_std_streams_know_their_addresses() {
    Exec::AsyncStd.run(async {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = async_std::task::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tether_futures::accept(tcp).await.unwrap();
            let peer = ws.peer_addr().unwrap();
            let local = ws.local_addr().unwrap();
            while ws.recv().await.is_some() {}
            (peer, local)
        });
        let mut ws = tether_futures::connect(&url).await.unwrap();
        let ours = (ws.local_addr().unwrap(), ws.peer_addr().unwrap());
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        assert_eq!(server.await, ours);
    });
}

/// The connect futures can be spawned on a multi-threaded executor (smol's
/// global one, async-std's): the driving crate's runtime traits do not
/// require `Send`, so this shell must keep its own futures `Send`.
#[test]
fn the_connect_and_accept_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    is_send(&tether_futures::connect("ws://127.0.0.1:1/"));
    is_send(&tether_futures::ClientBuilder::new("ws://127.0.0.1:1/").connect());
    is_send(&tether_futures::accept(futures_lite::io::Cursor::new(Vec::new())));
}

/// A server on smol's own listener type (`smol::Async<TcpListener>`), its
/// streams wrapped in this crate's `TcpStream`: it accepts, knows both
/// addresses, echoes, and closes; the client's stream is the same type.
#[test]
fn server_on_async_io_streams() {
    smol::block_on(async {
        let listener = smol::Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let server = smol::spawn(async move {
            let (tcp, client_addr) = listener.accept().await.unwrap();
            let mut ws = tether_futures::accept(tether_futures::TcpStream::from(tcp))
                .await
                .unwrap();
            assert_eq!(ws.peer_addr().unwrap(), client_addr);
            assert_eq!(ws.local_addr().unwrap(), addr);
            while let Some(Ok(message)) = ws.recv().await {
                ws.feed(message).await.unwrap();
            }
            ws.close_info().cloned()
        });
        let mut ws = tether_futures::connect(&format!("ws://{addr}/")).await.unwrap();
        assert_eq!(ws.peer_addr().unwrap(), addr);
        let _: &tether_futures::TcpStream = ws.get_ref().tcp();
        for message in [
            Message::Text("hello".into()),
            Message::Binary(Bytes::from(vec![7u8; 70_000])),
        ] {
            ws.send(message.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), message);
        }
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        let closed = server.await.unwrap();
        assert_eq!(closed.code, CloseCode::NORMAL);
    });
}

/// Closing on this crate's `TcpStream` shuts the write side down (a FIN)
/// while the connection is still held: a bare `Async<TcpStream>` only
/// flushes on close, and the peer would wait for the drop.
#[test]
fn a_server_close_sends_fin_before_the_stream_is_dropped() {
    use std::io::{Read, Write};
    smol::block_on(async {
        let listener = smol::Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let server = smol::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tether_futures::accept(tether_futures::TcpStream::from(tcp))
                .await
                .unwrap();
            ws.close(CloseCode::NORMAL, "bye").await.unwrap();
            // Held until the client saw the end of the stream.
            smol::unblock(move || held.recv_timeout(Duration::from_secs(10)))
                .await
                .unwrap();
            drop(ws);
        });
        let client = smol::unblock(move || {
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            tcp.write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            // The response, then the close frame; the server waits for our
            // close reply.
            while !got.windows(2).any(|w| w == [0x88, 5]) {
                let n = tcp.read(&mut buf).unwrap();
                assert!(n > 0, "closed before the close frame");
                got.extend_from_slice(&buf[..n]);
            }
            // A masked close reply (zero mask), code 1000.
            tcp.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]).unwrap();
            let n = tcp.read(&mut buf).unwrap();
            release.send(()).unwrap();
            n
        })
        .await;
        assert_eq!(client, 0, "the end of the stream, while the server still held it");
        server.await;
    });
}
