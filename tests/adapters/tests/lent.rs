//! `recv_with` and `recv_many_with` on every adapter: a server that echoes
//! each message lent to it (in place where the core can, else from the
//! owned message), against tether-tokio's client over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use tether_driver::runtime::RuntimeIo;
use tether_driver::{CloseCode, DataKind, Message};

/// Lengths of the messages the closure saw, in order.
type Seen = Vec<(DataKind, usize)>;

async fn lent_echo<S, R: RuntimeIo<S>>(mut ws: tether_driver::WebSocketStream<S, R>, many: bool) -> Seen {
    let mut seen = Vec::new();
    if many {
        while let Some(lent) = ws
            .recv_many_with(|message, reply| {
                seen.push((message.kind(), message.len()));
                reply.send(message)
            })
            .await
        {
            assert!(lent.unwrap() > 0);
        }
        return seen;
    }
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
    tokio_with(false);
}

#[test]
fn tokio_many() {
    tokio_with(true);
}

fn tokio_with(many: bool) {
    let (addr, seen) = start(move |listener| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            lent_echo(tether_tokio::accept(tcp).await.unwrap(), many).await
        })
    });
    check("tokio", addr, &seen);
}

#[test]
fn smol() {
    smol_with(false);
}

#[test]
fn smol_many() {
    smol_with(true);
}

fn smol_with(many: bool) {
    let (addr, seen) = start(move |listener| {
        smol::block_on(async {
            let listener = async_net::TcpListener::try_from(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            lent_echo(tether_futures::accept(tcp).await.unwrap(), many).await
        })
    });
    check("smol", addr, &seen);
}

#[test]
fn async_std() {
    async_std_with(false);
}

#[test]
fn async_std_many() {
    async_std_with(true);
}

fn async_std_with(many: bool) {
    let (addr, seen) = start(move |listener| {
        async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::from(listener);
            let (tcp, _) = listener.accept().await.unwrap();
            lent_echo(tether_futures::accept(tcp).await.unwrap(), many).await
        })
    });
    check("async-std", addr, &seen);
}

#[test]
fn compio() {
    compio_with(false);
}

#[test]
fn compio_many() {
    compio_with(true);
}

fn compio_with(many: bool) {
    let (addr, seen) = start(move |listener| {
        tether_compio::runtime().unwrap().block_on(async {
            let listener = compio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let stream = tether_compio::CompioStream::from(tcp);
            lent_echo(tether_compio::accept(stream).await.unwrap(), many).await
        })
    });
    check("compio", addr, &seen);
}

#[test]
fn blocking() {
    blocking_with(false);
}

#[test]
fn blocking_many() {
    blocking_with(true);
}

fn blocking_with(many: bool) {
    let (addr, seen) = start(move |listener| {
        listener.set_nonblocking(false).unwrap();
        let (tcp, _) = listener.accept().unwrap();
        let mut ws = tether_blocking::accept(tcp).unwrap();
        let mut seen = Vec::new();
        if many {
            while let Some(lent) = ws.recv_many_with(|message, reply| {
                seen.push((message.kind(), message.len()));
                reply.send(message)
            }) {
                assert!(lent.unwrap() > 0);
            }
            return seen;
        }
        while let Some(result) = ws.recv_with(|message, reply| {
            reply.send(message).unwrap();
            (message.kind(), message.len())
        }) {
            seen.push(result.unwrap());
        }
        seen
    });
    check(if many { "blocking, many" } else { "blocking" }, addr, &seen);
}
