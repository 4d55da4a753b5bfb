//! Client and server of this crate against each other over loopback: every
//! kind of message, with and without permessage-deflate, and the close
//! handshake from each side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;

use common::{bounded, echo_server, listener};
use tether_blocking::{
    ClientBuilder, CloseCause, CloseCode, DataKind, DeflateConfig, Error, Message, Received, Role, Server, State,
    WebSocketConfig,
};

fn server(deflate: bool) -> Server {
    if deflate {
        Server::new().permessage_deflate(DeflateConfig::default())
    } else {
        Server::new()
    }
}

fn client(url: &str, deflate: bool) -> ClientBuilder {
    let builder = ClientBuilder::new(url);
    if deflate {
        builder.permessage_deflate(DeflateConfig::default())
    } else {
        builder
    }
}

/// Text, binary, 4 MiB, fragmented, ping/pong, close with code and reason
/// from the client.
fn round_trip(deflate: bool) {
    bounded(move || {
        let (url, server) = echo_server(server(deflate));
        let mut ws = client(&url, deflate).connect().unwrap();
        assert_eq!(ws.role(), Role::Client);
        assert_eq!(ws.extensions().any(|e| e == "permessage-deflate"), deflate);
        assert!(ws.local_addr().unwrap().ip().is_loopback());

        ws.send("hello").unwrap();
        assert_eq!(ws.recv().unwrap().unwrap(), Message::Text("hello".into()));
        ws.send(vec![0u8, 1, 2, 255]).unwrap();
        assert_eq!(
            ws.recv().unwrap().unwrap(),
            Message::Binary(vec![0u8, 1, 2, 255].into())
        );

        // 4 MiB, not all alike, so that deflate has some work.
        let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8 ^ (i >> 12) as u8).collect();
        ws.send(big.clone()).unwrap();
        assert_eq!(ws.recv().unwrap().unwrap(), Message::Binary(big.into()));

        // A message in fragments, a ping in between.
        ws.send_fragment(DataKind::Text, "frag".as_bytes(), false).unwrap();
        ws.ping(&b"between"[..]).unwrap();
        ws.send_fragment(DataKind::Text, "ment".as_bytes(), false).unwrap();
        ws.send_fragment(DataKind::Text, "ed".as_bytes(), true).unwrap();
        match ws.recv_event().unwrap().unwrap() {
            Received::Pong(payload) => assert_eq!(&payload[..], b"between"),
            other => panic!("expected the pong, got {other:?}"),
        }
        assert_eq!(ws.recv().unwrap().unwrap(), Message::Text("fragmented".into()));

        // Several messages fed, one flush.
        for i in 0..10 {
            ws.feed(format!("fed {i}")).unwrap();
        }
        ws.flush().unwrap();
        for (i, message) in ws.incoming().take(10).enumerate() {
            assert_eq!(message.unwrap(), Message::Text(format!("fed {i}").into()));
        }

        ws.close(CloseCode::NORMAL, "client done").unwrap();
        assert_eq!(ws.state(), State::Closed);
        let closed = server.join().unwrap().unwrap().expect("the server saw the close");
        assert_eq!(closed.code, CloseCode::NORMAL);
        assert_eq!(closed.reason, "client done");
        assert_eq!(closed.cause, CloseCause::Remote);
    });
}

#[test]
fn rfc6455_echo_round_trip() {
    round_trip(false);
}

#[test]
fn rfc7692_echo_round_trip_with_deflate() {
    round_trip(true);
}

#[test]
fn rfc6455_5_5_1_close_from_the_server() {
    bounded(|| {
        let (listener, url) = listener();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut ws = tether_blocking::accept(tcp).unwrap();
            assert_eq!(ws.recv().unwrap().unwrap(), Message::Text("last".into()));
            ws.close(CloseCode::GOING_AWAY, "server going away").unwrap();
            ws.close_info().cloned().unwrap()
        });
        let mut ws = tether_blocking::connect(&url).unwrap();
        ws.send("last").unwrap();
        // A clean close from the peer ends the messages without an error.
        assert!(ws.recv().is_none());
        let closed = ws.close_info().unwrap();
        assert_eq!(closed.code, CloseCode::GOING_AWAY);
        assert_eq!(closed.reason, "server going away");
        assert_eq!(closed.cause, CloseCause::Remote);
        // Sending now says who closed.
        assert!(matches!(
            ws.send("too late"),
            Err(Error::ClosedByPeer {
                code: CloseCode::GOING_AWAY,
                ..
            })
        ));
        let server_side = server.join().unwrap();
        assert_eq!(server_side.cause, CloseCause::Local);
    });
}

#[test]
fn message_read_piece_by_piece() {
    bounded(|| {
        let (listener, url) = listener();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut ws = tether_blocking::accept(tcp).unwrap();
            for i in 0..8u8 {
                ws.send_fragment(DataKind::Binary, &[i; 100_000], i == 7).unwrap();
            }
            ws.send("after").unwrap();
            while ws.recv().is_some() {}
        });
        let mut config = WebSocketConfig::default();
        config.connection.stream_threshold = Some(16 * 1024);
        let mut ws = ClientBuilder::new(&url).config(config).connect().unwrap();
        let mut reader = ws.recv_reader().unwrap().unwrap();
        assert_eq!(reader.kind(), DataKind::Binary);
        let mut piece = [0u8; 7_000];
        let mut total = Vec::new();
        loop {
            let n = reader.read(&mut piece).unwrap();
            if n == 0 {
                break;
            }
            total.extend_from_slice(&piece[..n]);
        }
        drop(reader);
        assert_eq!(total.len(), 800_000);
        assert!(total
            .chunks(100_000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
        assert_eq!(ws.recv().unwrap().unwrap(), Message::Text("after".into()));
        ws.close(CloseCode::NORMAL, "").unwrap();
        server.join().unwrap();
    });
}

#[test]
fn a_plain_get_is_answered_with_an_error_status() {
    bounded(|| {
        use std::io::Write;
        let (listener, _) = listener();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tether_blocking::accept(tcp)
        });
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        assert!(matches!(server.join().unwrap(), Err(Error::Handshake(_))));
    });
}
