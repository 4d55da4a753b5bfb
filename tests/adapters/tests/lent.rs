//! `recv_with` on every adapter: a server that echoes each message lent to
//! it (in place where the core can, else from the owned message), against
//! tether-tokio's client over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use tether_driver::runtime::RuntimeIo;
use tether_driver::{CloseCode, DataKind, Message};

/// Lengths of the messages the closure saw, in order.
type Seen = Vec<(DataKind, usize)>;

async fn lent_echo<S, R: RuntimeIo<S>>(mut ws: tether_driver::WebSocketStream<S, R>) -> Seen {
    let mut seen = Vec::new();
    while let Some(result) = ws
        .recv_with(|message, reply| {
            reply.send(message).unwrap();
            (message.kind(), message.len())
        })
        .await
    {
        seen.push(result.unwrap());
    }
    seen
}

fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Starts `serve` on its own thread; the server's `Seen` comes back on the
/// channel once the client closed.
fn start(serve: impl FnOnce(TcpListener) -> Seen + Send + 'static) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let (listener, addr) = listener();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(serve(listener));
    });
    (addr, rx)
}

/// The client: every kind of message, then the close; checks each echo
/// and what the server's closure saw.
fn check(name: &str, addr: SocketAddr, seen: &mpsc::Receiver<Seen>) {
    let big: Bytes = (0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    let sent = [
        Message::Text("hello".into()),
        Message::Binary(Bytes::from_static(&[0, 1, 2, 255])),
        Message::Text("κόσμε".repeat(100).into()),
        Message::Binary(big),
        Message::Binary(Bytes::new()),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut ws = tether_tokio::connect(&format!("ws://{addr}/")).await.unwrap();
            for message in &sent {
                ws.feed(message.clone()).await.unwrap();
            }
            ws.send_fragment(DataKind::Binary, b"frag", false).await.unwrap();
            ws.send_fragment(DataKind::Binary, b"ments", true).await.unwrap();
            for message in &sent {
                assert_eq!(&ws.recv().await.unwrap().unwrap(), message, "{name}");
            }
            assert_eq!(
                ws.recv().await.unwrap().unwrap(),
                Message::Binary(Bytes::from_static(b"fragments")),
                "{name}"
            );
            ws.close(CloseCode::NORMAL, "").await.unwrap();
        })
        .await
        .unwrap();
    });
    let mut expected: Seen = sent.iter().map(|m| (m.kind(), m.len())).collect();
    expected.push((DataKind::Binary, 9));
    assert_eq!(seen.recv_timeout(Duration::from_secs(30)).unwrap(), expected, "{name}");
}

#[test]
fn tokio() {
    let (addr, seen) = start(|listener| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            lent_echo(tether_tokio::accept(tcp).await.unwrap()).await
        })
    });
    check("tokio", addr, &seen);
}

#[test]
fn smol() {
    let (addr, seen) = start(|listener| {
        smol::block_on(async {
            let listener = async_net::TcpListener::try_from(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            lent_echo(tether_futures::accept(tcp).await.unwrap()).await
        })
    });
    check("smol", addr, &seen);
}

#[test]
fn async_std() {
    let (addr, seen) = start(|listener| {
        async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::from(listener);
            let (tcp, _) = listener.accept().await.unwrap();
            lent_echo(tether_futures::accept(tcp).await.unwrap()).await
        })
    });
    check("async-std", addr, &seen);
}

#[test]
fn compio() {
    let (addr, seen) = start(|listener| {
        tether_compio::runtime().unwrap().block_on(async {
            let listener = compio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let stream = tether_compio::CompioStream::from(tcp);
            lent_echo(tether_compio::accept(stream).await.unwrap()).await
        })
    });
    check("compio", addr, &seen);
}

#[test]
fn blocking() {
    let (addr, seen) = start(|listener| {
        listener.set_nonblocking(false).unwrap();
        let (tcp, _) = listener.accept().unwrap();
        let mut ws = tether_blocking::accept(tcp).unwrap();
        let mut seen = Vec::new();
        while let Some(result) = ws.recv_with(|message, reply| {
            reply.send(message).unwrap();
            (message.kind(), message.len())
        }) {
            seen.push(result.unwrap());
        }
        seen
    });
    check("blocking", addr, &seen);
}
