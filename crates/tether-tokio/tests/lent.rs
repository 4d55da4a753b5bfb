//! `recv_with` and `recv_many_with`: messages lent to a closure in place
//! (or from the owned message where the core cannot lend), answered
//! through `Reply`.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{quiet, TEST_TIMEOUT};
use tether_tokio::{ClientBuilder, CloseCode, DataKind, DeflateConfig, Error, Message, MessageRef, Server};
use tokio::net::TcpListener;
use tokio::time::timeout;

/// A server that echoes with `recv_with` (or `recv_many_with`, `many`)
/// and reports, per message, its kind and length as the closure saw them.
async fn lent_echo_server(
    server: Server,
    many: bool,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<(DataKind, usize)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = server.accept(tcp).await.unwrap();
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
        } else {
            while let Some(result) = ws
                .recv_with(|message, reply| {
                    reply.send(message).unwrap();
                    (message.kind(), message.len())
                })
                .await
            {
                seen.push(result.unwrap());
            }
        }
        seen
    });
    (addr, task)
}

/// Every kind of message a client sends comes back whole, lent in place
/// (small, whole in one read) or from the owned message (large,
/// fragmented): the closure sees each once, with its kind and length.
#[tokio::test]
async fn a_lent_echo_answers_every_kind_of_message() {
    every_kind_of_message(false).await;
}

/// The same with `recv_many_with`.
#[tokio::test]
async fn a_lent_many_echo_answers_every_kind_of_message() {
    every_kind_of_message(true).await;
}

async fn every_kind_of_message(many: bool) {
    timeout(TEST_TIMEOUT, async {
        let (addr, server) = lent_echo_server(Server::new().config(quiet()), many).await;
        let mut ws = tether_tokio::connect(&format!("ws://{addr}/")).await.unwrap();
        let big: Bytes = (0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
        let sent = vec![
            Message::Text("hello".into()),
            Message::Binary(Bytes::from_static(&[0, 1, 2, 255])),
            Message::Text("κόσμε".repeat(300).into()),
            Message::Binary(big.clone()),
            Message::Binary(Bytes::new()),
        ];
        for message in &sent {
            ws.send(message.clone()).await.unwrap();
        }
        // A fragmented message: reassembled, then lent.
        ws.send_fragment(DataKind::Text, b"frag", false).await.unwrap();
        ws.send_fragment(DataKind::Text, b"mented", true).await.unwrap();
        for message in &sent {
            assert_eq!(&ws.recv().await.unwrap().unwrap(), message);
        }
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("fragmented".into()));
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        let seen = server.await.unwrap();
        let mut expected: Vec<(DataKind, usize)> = sent.iter().map(|m| (m.kind(), m.len())).collect();
        expected.push((DataKind::Text, 10));
        assert_eq!(seen, expected);
    })
    .await
    .unwrap();
}

/// With permessage-deflate negotiated, compressed messages are received
/// whole and lent; the answers are compressed as any other send.
#[tokio::test]
async fn compressed_messages_are_lent_from_the_owned_message() {
    timeout(TEST_TIMEOUT, async {
        for many in [false, true] {
            let server = Server::new()
                .config(quiet())
                .permessage_deflate(DeflateConfig::default());
            let (addr, server) = lent_echo_server(server, many).await;
            let mut ws = ClientBuilder::new(&format!("ws://{addr}/"))
                .config(quiet())
                .permessage_deflate(DeflateConfig::default())
                .connect()
                .await
                .unwrap();
            assert!(ws.deflate_params().is_some(), "permessage-deflate negotiated");
            let text = "compress me ".repeat(1000);
            ws.send(text.as_str()).await.unwrap();
            ws.send("short").await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text(text.as_str().into()));
            assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("short".into()));
            ws.close(CloseCode::NORMAL, "").await.unwrap();
            assert_eq!(
                server.await.unwrap(),
                vec![(DataKind::Text, text.len()), (DataKind::Text, 5)]
            );
        }
    })
    .await
    .unwrap();
}

/// A peer that sends and does not read: the answers queued through
/// `Reply` do not wait for room, so the next message is lent only once the
/// output is within the write limit again; the output never grows past
/// the limit by more than one answer, and once the peer reads, every
/// answer arrives, in order.
#[tokio::test]
async fn answers_are_bounded_by_the_write_limit() {
    answers_bounded(false).await;
}

/// The same with `recv_many_with`: a call stops lending once the answers
/// put the output over the limit.
#[tokio::test]
async fn many_answers_are_bounded_by_the_write_limit() {
    answers_bounded(true).await;
}

async fn answers_bounded(many: bool) {
    timeout(TEST_TIMEOUT, async {
        const LIMIT: usize = 8 * 1024;
        const COUNT: usize = 200;
        const SIZE: usize = 1000;
        let mut server_config = quiet();
        server_config.write_buffer_limit = LIMIT;
        let (client, mut server) = common::pair(quiet(), server_config, 4096).await;
        let most = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (most_s, answered_s) = (Arc::clone(&most), Arc::clone(&answered));
        let server = tokio::spawn(async move {
            // Answers, noting the most output seen and counting.
            let answer = |message: MessageRef<'_>, reply: &mut tether_tokio::Reply<'_>| {
                reply.send(message)?;
                most_s.fetch_max(reply.buffered_amount(), Ordering::Relaxed);
                answered_s.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Error>(())
            };
            if many {
                while let Some(lent) = server.recv_many_with(|m, r| answer(m, r)).await {
                    lent.unwrap();
                }
            } else {
                while let Some(result) = server.recv_with(|m, r| answer(m, r)).await {
                    result.unwrap().unwrap();
                }
            }
        });
        let (mut read, mut write) = client.split();
        let writer = tokio::spawn(async move {
            for i in 0..COUNT {
                write.send(vec![i as u8; SIZE]).await.unwrap();
            }
            write
        });
        // Nothing read yet: the server stops lending once its output is
        // over the limit (the pipe holds 4 KiB), so the writer stalls too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stalled_at = answered.load(Ordering::Relaxed);
        assert!(
            stalled_at < COUNT,
            "the server went on answering a peer that does not read"
        );
        assert!(
            most.load(Ordering::Relaxed) <= LIMIT + SIZE + 4,
            "output {} past the limit {LIMIT} by more than one answer",
            most.load(Ordering::Relaxed)
        );
        for i in 0..COUNT {
            assert_eq!(
                read.recv().await.unwrap().unwrap(),
                Message::Binary(vec![i as u8; SIZE].into())
            );
        }
        let mut ws = read.reunite(writer.await.unwrap()).unwrap();
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
        assert_eq!(answered.load(Ordering::Relaxed), COUNT);
        assert!(most.load(Ordering::Relaxed) <= LIMIT + SIZE + 4);
    })
    .await
    .unwrap();
}

/// Messages that arrive together are lent in one call: a client feeds
/// many small ones and writes them at once; the server's calls lend more
/// than one at a time, and every message is answered, in order.
#[tokio::test]
async fn many_messages_of_one_read_are_lent_in_one_call() {
    timeout(TEST_TIMEOUT, async {
        const COUNT: usize = 64;
        let (mut client, mut server) = common::pair(quiet(), quiet(), 64 * 1024).await;
        let server = tokio::spawn(async move {
            let mut calls = Vec::new();
            while let Some(lent) = server.recv_many_with(|message, reply| reply.send(message)).await {
                calls.push(lent.unwrap());
            }
            calls
        });
        for i in 0..COUNT {
            client.feed(format!("message {i}")).await.unwrap();
        }
        client.flush().await.unwrap();
        for i in 0..COUNT {
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::Text(format!("message {i}").into())
            );
        }
        client.close(CloseCode::NORMAL, "").await.unwrap();
        let calls = server.await.unwrap();
        assert_eq!(calls.iter().sum::<usize>(), COUNT);
        assert!(calls.iter().any(|&n| n > 1), "every call lent one message: {calls:?}");
    })
    .await
    .unwrap();
}

/// The closure's error, of the application's own type, stops the call
/// and is returned; the messages after it are lent by the next call.
#[tokio::test]
async fn the_closures_error_stops_the_call() {
    #[derive(Debug, PartialEq)]
    enum AppError {
        Refused(String),
        Socket(String),
    }
    impl From<Error> for AppError {
        fn from(e: Error) -> Self {
            Self::Socket(e.to_string())
        }
    }
    timeout(TEST_TIMEOUT, async {
        let (mut client, mut server) = common::pair(quiet(), quiet(), 64 * 1024).await;
        for text in ["a", "stop", "b", "c"] {
            client.feed(text).await.unwrap();
        }
        client.flush().await.unwrap();
        let mut seen = Vec::new();
        let mut outcomes = Vec::new();
        while seen.len() < 4 {
            let outcome = server
                .recv_many_with(|message, _| {
                    let MessageRef::Text(text) = message else {
                        panic!("not text: {message:?}");
                    };
                    seen.push(text.to_owned());
                    if text == "stop" {
                        return Err(AppError::Refused(text.to_owned()));
                    }
                    Ok(())
                })
                .await
                .unwrap();
            outcomes.push(outcome);
        }
        assert_eq!(seen, ["a", "stop", "b", "c"]);
        assert!(
            outcomes.contains(&Err(AppError::Refused("stop".into()))),
            "{outcomes:?}"
        );
        let lent: usize = outcomes.iter().filter_map(|o| o.as_ref().ok()).sum();
        assert_eq!(lent, 2, "\"b\" and \"c\" after the error: {outcomes:?}");
        let closing = tokio::spawn(async move { client.close(CloseCode::NORMAL, "").await });
        assert!(server.recv_many_with(|_, _| Ok::<_, AppError>(())).await.is_none());
        closing.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

/// `MessageRef` converts from the owned message and back, and from text
/// and bytes of the caller's for `Reply::send`.
#[test]
fn message_ref_conversions() {
    let message = Message::Text("hi".into());
    let lent = MessageRef::from(&message);
    assert_eq!(lent, MessageRef::Text("hi"));
    assert_eq!(lent.to_message(), message);
    assert_eq!(MessageRef::from(&b"ab"[..]).kind(), DataKind::Binary);
    assert_eq!(MessageRef::from("ab").as_bytes(), b"ab");
}
