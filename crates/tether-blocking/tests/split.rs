//! A reader thread and writer threads on one connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{bounded, echo_server, listener};
use tether_blocking::{CloseCause, CloseCode, Message, Received, Server};

#[test]
fn one_thread_receives_while_another_sends_1000_messages() {
    bounded(|| {
        let (url, server) = echo_server(Server::new());
        let ws = tether_blocking::connect(&url).unwrap();
        let (mut reader, writer) = ws.split().unwrap();
        let receiving = std::thread::spawn(move || {
            let mut received = Vec::new();
            for message in &mut reader {
                received.push(message.unwrap());
            }
            (received, reader.close_info())
        });
        // Two writer threads, 500 messages each, as fast as they go.
        let senders: Vec<_> = (0..2)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        writer.send(format!("{t}:{i}")).unwrap();
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().unwrap();
        }
        // Wait until every echo is back, then close from the writer: that
        // ends the reader.
        let start = Instant::now();
        while writer.buffered_amount() > 0 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        writer.close(CloseCode::NORMAL, "writer done").unwrap();
        let (received, closed) = receiving.join().unwrap();
        assert_eq!(received.len(), 1000);
        for t in 0..2 {
            // Each writer's messages come back in its order.
            let mine: Vec<_> = received
                .iter()
                .filter_map(|m| match m {
                    Message::Text(text) => text.strip_prefix(&format!("{t}:")).map(|i| i.parse::<u32>().unwrap()),
                    _ => None,
                })
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>());
        }
        let closed = closed.unwrap();
        assert_eq!(closed.cause, CloseCause::Local);
        let server_side = server.join().unwrap().unwrap().unwrap();
        assert_eq!(server_side.reason, "writer done");
    });
}

#[test]
fn pings_are_answered_while_the_writer_is_idle() {
    bounded(|| {
        let (listener, url) = listener();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut ws = tether_blocking::accept(tcp).unwrap();
            let mut pongs = 0;
            for i in 0..5u8 {
                ws.ping(vec![i]).unwrap();
                match ws.recv_event().unwrap().unwrap() {
                    Received::Pong(payload) if payload[..] == [i] => pongs += 1,
                    other => panic!("expected pong {i}, got {other:?}"),
                }
            }
            ws.send("bye").unwrap();
            assert!(ws.recv().is_none());
            pongs
        });
        let ws = tether_blocking::connect(&url).unwrap();
        let (mut reader, writer) = ws.split().unwrap();
        // The writer sends nothing; the reader answers the pings.
        assert_eq!(reader.recv().unwrap().unwrap(), Message::Text("bye".into()));
        writer.close(CloseCode::NORMAL, "").unwrap();
        assert!(reader.recv().is_none());
        assert_eq!(server.join().unwrap_or(0), 5);
    });
}

#[test]
fn writer_close_without_a_reader_waits_for_the_handshake() {
    bounded(|| {
        let (url, server) = echo_server(Server::new());
        let ws = tether_blocking::connect(&url).unwrap();
        let (reader, writer) = ws.split().unwrap();
        drop(reader);
        writer.send("unheard").unwrap();
        writer.close(CloseCode::NORMAL, "alone").unwrap();
        assert_eq!(writer.state(), tether_blocking::State::Closed);
        let server_side = server.join().unwrap().unwrap().unwrap();
        assert_eq!(server_side.reason, "alone");
    });
}

#[test]
fn the_writer_is_send_and_clone() {
    fn check<T: Send + Clone + 'static>() {}
    check::<tether_blocking::Writer<std::net::TcpStream>>();
    fn send<T: Send + 'static>() {}
    send::<tether_blocking::Reader<std::net::TcpStream>>();
}

/// A peer that floods pings and never reads the pongs: the reader of a
/// split connection stops reading once more than the write limit of
/// answers waits (the driver's read gate, which holds for every shell), so
/// memory stays within the limit and one read's pongs, until the send
/// timeout ends the connection. Before, the reader, which reads outside the
/// driver, read on, and the pongs grew with everything the peer sent.
#[test]
fn a_ping_flood_that_reads_no_pongs_pauses_the_reader() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    bounded(|| {
        let (listener, url) = listener();
        let flooded = Arc::new(AtomicBool::new(false));
        let peer = {
            let flooded = flooded.clone();
            std::thread::spawn(move || {
                let (tcp, _) = listener.accept().unwrap();
                let mut request = BufReader::new(tcp.try_clone().unwrap());
                let mut key = String::new();
                loop {
                    let mut line = String::new();
                    request.read_line(&mut line).unwrap();
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("sec-websocket-key:") {
                        key = line[line.len() - value.len()..].trim().to_owned();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let accept = tether_blocking::tether_proto::handshake::accept_key(key.as_bytes());
                let mut tcp = tcp;
                write!(
                    tcp,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .unwrap();
                // Unmasked pings of 125 bytes (server to client), 16 MiB at
                // most, far more than the socket buffers hold; never read.
                let mut ping = vec![0x89, 125];
                ping.extend_from_slice(&[b'p'; 125]);
                let burst = ping.repeat(512);
                tcp.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
                for _ in 0..256 {
                    if tcp.write_all(&burst).is_err() {
                        flooded.store(true, Ordering::Release);
                        break;
                    }
                }
                // Held open (unread) until the client gives up on it.
                std::thread::sleep(Duration::from_secs(3));
            })
        };
        let limit = 32 * 1024;
        let mut config = tether_blocking::WebSocketConfig::default();
        config.write_buffer_limit = limit;
        config.connection.send_timeout = Some(Duration::from_secs(2));
        let ws = tether_blocking::ClientBuilder::new(&url)
            .config(config)
            .connect()
            .unwrap();
        let (mut reader, writer) = ws.split().unwrap();
        let reading = std::thread::spawn(move || reader.recv().map(|r| r.map_err(|e| e.to_string())));
        let mut most = 0;
        let started = Instant::now();
        while !reading.is_finished() && started.elapsed() < Duration::from_secs(20) {
            most = most.max(writer.buffered_amount());
            std::thread::sleep(Duration::from_millis(1));
        }
        let ended = reading.join().unwrap();
        peer.join().unwrap();
        println!("split reader, ping flood: at most {most} bytes of pongs queued; ended with {ended:?}");
        assert!(flooded.load(Ordering::Acquire), "the reader read every ping");
        // The limit and one read's pongs (64 KiB of pings).
        assert!(most <= limit + 64 * 1024 + 1024, "{most} bytes of pongs queued");
        assert!(matches!(ended, Some(Err(_))), "{ended:?}");
    });
}
