//! Timers with paused time, backpressure, split halves, cancel safety and
//! piece-by-piece receive.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{echo_server, quiet, CountingWrites, TEST_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use tether_tokio::{
    ClientBuilder, ClientRequest, CloseCode, Error, Message, Received, Server, WebSocketConfig, WebSocketStream,
};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::net::TcpListener;
use tokio::time::timeout;

/// A client and a server connected through an in-memory pipe.
async fn pair(
    client: WebSocketConfig,
    server: WebSocketConfig,
) -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    common::pair(client, server, 64 * 1024).await
}

#[tokio::test(start_paused = true)]
async fn keepalive_ping_after_two_minutes_by_default() {
    let (mut client, mut server) = pair(WebSocketConfig::default(), quiet()).await;
    let started = tokio::time::Instant::now();
    // The client only receives; its keepalive timer fires in virtual time.
    let client_task = tokio::spawn(async move {
        let end = client.recv().await;
        (client, end)
    });
    match server.recv_event().await.unwrap().unwrap() {
        Received::Ping(payload) => assert!(payload.is_empty()),
        other => panic!("{other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(120) && waited < Duration::from_secs(121),
        "{waited:?}"
    );
    // The server answered with a pong automatically; the client, which is
    // still open, sees the server close.
    server.close(CloseCode::NORMAL, "").await.unwrap();
    let (client, end) = client_task.await.unwrap();
    assert!(end.is_none());
    assert_eq!(client.close_info().unwrap().code, CloseCode::NORMAL);
}

/// Messages received push the keepalive ping later while the loop's timer
/// stays armed at the first deadline (the loop does not ask the deadline
/// again while only the keepalive runs): the timer fires early, is
/// re-armed at the deadline the traffic made, and the ping goes out then,
/// neither at the first deadline nor never.
#[tokio::test(start_paused = true)]
async fn traffic_pushes_the_keepalive_ping_later_and_the_armed_timer_follows() {
    let mut config = quiet();
    config.connection.ping_interval = Some(Duration::from_secs(10));
    let (mut client, mut server) = pair(config, quiet()).await;
    let started = tokio::time::Instant::now();
    let client_task = tokio::spawn(async move {
        let mut received = Vec::new();
        while let Some(Ok(message)) = client.recv().await {
            received.push((started.elapsed(), message));
        }
        received
    });
    for at in [4, 8] {
        tokio::time::sleep_until(started + Duration::from_secs(at)).await;
        server.send("traffic").await.unwrap();
    }
    match timeout(Duration::from_secs(60), server.recv_event()).await {
        Ok(Some(Ok(Received::Ping(payload)))) => assert!(payload.is_empty()),
        other => panic!("no keepalive ping: {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(18) && waited < Duration::from_secs(19),
        "the ping came {waited:?} after the start; 10 s after the last message (at 8 s) expected"
    );
    server.close(CloseCode::NORMAL, "").await.unwrap();
    let received = client_task.await.unwrap();
    let times: Vec<_> = received.iter().map(|(at, _)| at.as_secs()).collect();
    assert_eq!(times, [4, 8]);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_after_four_minutes_by_default() {
    // A server with the defaults and a client that never answers its ping
    // (a peer that vanished without a FIN): the ping at 120 s, then the
    // connection fails at 240 s of silence.
    let mut silent = quiet();
    silent.connection.auto_pong = false;
    let (mut client, mut server) = pair(silent, WebSocketConfig::default()).await;
    let started = tokio::time::Instant::now();
    let server_task = tokio::spawn(async move {
        let end = server.recv().await.map(|r| r.map_err(|e| e.to_string()));
        (started.elapsed(), end)
    });
    match client.recv_event().await.unwrap().unwrap() {
        Received::Ping(payload) => assert!(payload.is_empty()),
        other => panic!("{other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(120) && waited < Duration::from_secs(121),
        "{waited:?}"
    );
    let (waited, end) = server_task.await.unwrap();
    assert!(
        waited >= Duration::from_secs(240) && waited < Duration::from_secs(241),
        "{waited:?}"
    );
    assert_eq!(end, Some(Err(Error::IdleTimeout.to_string())));
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_fails_the_connection() {
    let mut config = quiet();
    config.connection.idle_timeout = Some(Duration::from_secs(30));
    let (mut client, mut server) = pair(config, quiet()).await;
    let started = tokio::time::Instant::now();
    let server_task = tokio::spawn(async move { server.recv().await.map(|r| r.map_err(|e| e.to_string())) });
    let end = client.recv().await;
    assert!(matches!(end, Some(Err(Error::IdleTimeout))), "{end:?}");
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert!(client.recv().await.is_none());
    // The client said why before leaving (1011, "idle timeout").
    let server_end = server_task.await.unwrap();
    assert!(server_end.is_none(), "{server_end:?}");
    assert!(matches!(client.send("x").await, Err(Error::IdleTimeout)));
}

#[tokio::test(start_paused = true)]
async fn send_timeout_after_thirty_seconds_by_default() {
    // A server that never reads: the client's send of a message larger than
    // the pipe blocks, and fails after 30 s without progress.
    let (mut client, server) = pair(WebSocketConfig::default(), WebSocketConfig::default()).await;
    let started = tokio::time::Instant::now();
    let end = client.send(Message::Binary(vec![7; 1 << 20].into())).await;
    let waited = started.elapsed();
    assert!(matches!(end, Err(Error::SendTimeout)), "{end:?}");
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    assert_eq!(
        client.close_info().unwrap().cause,
        tether_tokio::CloseCause::SendTimeout
    );
    assert!(matches!(client.send("x").await, Err(Error::SendTimeout)));
    // The receive side reports the same end.
    assert!(matches!(client.recv().await, Some(Err(Error::SendTimeout))));
    assert!(client.recv().await.is_none());
    drop(server);
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_not_cut_off_by_the_send_timeout() {
    // The peer takes 16 KiB every 20 s: slower than the send timeout as a
    // whole (a 1 MiB message takes over 20 minutes), but never 30 s without
    // progress. (No idle timeout: the peer sends nothing meanwhile.)
    let (mut client, server) = pair(quiet(), quiet()).await;
    assert_eq!(quiet().connection.send_timeout, Some(Duration::from_secs(30)));
    let (mut raw, _) = server.into_parts();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0; 16 * 1024];
        let mut total = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(20)).await;
            match raw.read(&mut buf).await.unwrap() {
                0 => return total,
                n => total += n,
            }
        }
    });
    let started = tokio::time::Instant::now();
    client.send(Message::Binary(vec![7; 1 << 20].into())).await.unwrap();
    assert!(started.elapsed() > Duration::from_secs(600), "{:?}", started.elapsed());
    drop(client);
    assert!(reader.await.unwrap() >= 1 << 20);
}

#[tokio::test(start_paused = true)]
async fn send_timeout_off() {
    // Switched off, a send to a peer that does not read waits: still
    // waiting after an hour.
    let mut config = quiet();
    config.connection.send_timeout = None;
    let (mut client, _server) = pair(config, quiet()).await;
    let send = timeout(
        Duration::from_secs(3600),
        client.send(Message::Binary(vec![7; 1 << 20].into())),
    )
    .await;
    assert!(send.is_err(), "{send:?}");
}

#[tokio::test(start_paused = true)]
async fn keepalive_keeps_an_idle_timeout_at_bay() {
    // Both ends ping every 10 s and time out after 25 s of silence: an idle
    // but healthy connection stays open.
    let mut config = quiet();
    config.connection.ping_interval = Some(Duration::from_secs(10));
    config.connection.idle_timeout = Some(Duration::from_secs(25));
    let (mut client, mut server) = pair(config.clone(), config).await;
    let server_task = tokio::spawn(async move {
        let message = server.recv().await;
        (server, message)
    });
    let quiet_minutes = timeout(Duration::from_secs(180), client.recv()).await;
    assert!(quiet_minutes.is_err(), "still open after 3 minutes: {quiet_minutes:?}");
    client.send("still here").await.unwrap();
    let (_server, message) = server_task.await.unwrap();
    assert_eq!(message.unwrap().unwrap(), Message::Text("still here".into()));
}

#[tokio::test(start_paused = true)]
async fn close_timeout_when_the_peer_never_answers() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(async move { Server::new().accept(b).await.unwrap() });
    let mut client = ClientBuilder::from_request(ClientRequest::new("ws://pipe.invalid/").unwrap())
        .config(quiet())
        .connect_over(a)
        .await
        .unwrap();
    // The server exists but is never polled: nobody answers the close.
    let _server = accept.await.unwrap();
    let started = tokio::time::Instant::now();
    let result = client.close(CloseCode::NORMAL, "").await;
    assert!(matches!(result, Err(Error::CloseTimeout)), "{result:?}");
    assert!(started.elapsed() >= Duration::from_secs(10));
}

/// A write half whose read half is gone closes within the close timeout even
/// when the peer neither reads nor answers: the close frame cannot even be
/// written (the pipe is full), so waiting for a flush first would hang.
#[tokio::test(start_paused = true)]
async fn write_half_alone_closes_within_the_close_timeout_on_a_peer_that_does_not_read() {
    let (a, b) = tokio::io::duplex(1024);
    let accept = tokio::spawn(async move { Server::new().accept(b).await.unwrap() });
    let client = ClientBuilder::from_request(ClientRequest::new("ws://pipe.invalid/").unwrap())
        .config(quiet())
        .connect_over(a)
        .await
        .unwrap();
    // The server exists but is never polled: the 1 KiB pipe fills up.
    let _server = accept.await.unwrap();
    let (read, mut write) = client.split();
    drop(read);
    // Fill the pipe (and the write buffer past what the pipe takes).
    let _ = timeout(
        Duration::from_secs(1),
        write.send(Message::Binary(vec![0; 4096].into())),
    )
    .await;
    let started = tokio::time::Instant::now();
    let result = timeout(Duration::from_secs(60), write.close(CloseCode::NORMAL, "")).await;
    assert!(matches!(result, Ok(Err(Error::CloseTimeout))), "{result:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "{waited:?}"
    );
}

#[tokio::test]
async fn send_waits_when_the_peer_stops_reading() {
    timeout(TEST_TIMEOUT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A server that completes the handshake, then never reads.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = tether_tokio::accept(tcp).await.unwrap();
            let _ = stop_rx.await;
            drop(ws);
        });
        let mut config = quiet();
        config.write_buffer_limit = 64 * 1024;
        let mut ws = ClientBuilder::new(&format!("ws://{addr}/"))
            .config(config)
            .connect()
            .await
            .unwrap();
        let chunk = Bytes::from(vec![1u8; 256 * 1024]);
        let mut blocked = false;
        for _ in 0..1024 {
            // 256 MiB at most: far more than the socket buffers hold.
            match timeout(Duration::from_millis(500), ws.send(Message::Binary(chunk.clone()))).await {
                Ok(result) => result.unwrap(),
                Err(_) => {
                    blocked = true;
                    break;
                }
            }
            assert!(ws.buffered_amount() <= 64 * 1024 + chunk.len() + 16);
        }
        assert!(blocked, "send never waited");
        assert!(
            ws.buffered_amount() <= 64 * 1024 + chunk.len() + 16,
            "{}",
            ws.buffered_amount()
        );
        let _ = stop_tx.send(());
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn split_halves_in_two_tasks() {
    timeout(TEST_TIMEOUT, async {
        let (addr, server) = echo_server(1, quiet()).await;
        let ws = tether_tokio::connect(&format!("ws://{addr}/")).await.unwrap();
        let (mut read, mut write) = ws.split();
        const N: usize = 500;
        let writer = tokio::spawn(async move {
            for i in 0..N {
                write.send(format!("message {i}")).await.unwrap();
                if i % 50 == 0 {
                    write.ping(&b"p"[..]).await.unwrap();
                }
            }
            write
        });
        let reader = tokio::spawn(async move {
            for i in 0..N {
                let message = read.next().await.unwrap().unwrap();
                assert_eq!(message, Message::Text(format!("message {i}").into()));
            }
            read
        });
        let mut write = writer.await.unwrap();
        let mut read = reader.await.unwrap();
        write.close(CloseCode::NORMAL, "bye").await.unwrap();
        // The read half sees the end of the close handshake.
        assert!(read.recv().await.is_none());
        assert_eq!(read.close_info().unwrap().code, CloseCode::NORMAL);
        let ws = read.reunite(write).unwrap();
        assert_eq!(ws.state(), tether_tokio::State::Closed);
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn read_half_alone_answers_pings() {
    timeout(TEST_TIMEOUT, async {
        let (client, mut server) = pair(quiet(), quiet()).await;
        let (mut read, _write) = client.split();
        let reader = tokio::spawn(async move { read.recv().await.map(|r| r.unwrap()) });
        server.ping(&b"are you there"[..]).await.unwrap();
        match server.recv_event().await.unwrap().unwrap() {
            Received::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
            other => panic!("{other:?}"),
        }
        server.send("last").await.unwrap();
        assert_eq!(reader.await.unwrap(), Some(Message::Text("last".into())));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn futures_split_works_too() {
    timeout(TEST_TIMEOUT, async {
        let (addr, server) = echo_server(1, quiet()).await;
        let ws = tether_tokio::connect(&format!("ws://{addr}/")).await.unwrap();
        let (mut sink, mut stream) = StreamExt::split(ws);
        let writer = tokio::spawn(async move {
            for i in 0..200 {
                sink.send(Message::Binary(Bytes::from(vec![i as u8; 1000])))
                    .await
                    .unwrap();
            }
            sink.close().await.unwrap();
        });
        let mut count = 0;
        while let Some(message) = stream.next().await {
            let message = message.unwrap();
            assert_eq!(message.as_bytes()[0], count as u8);
            count += 1;
        }
        assert_eq!(count, 200);
        writer.await.unwrap();
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn recv_is_cancel_safe() {
    timeout(TEST_TIMEOUT, async {
        let (mut client, mut server) = pair(quiet(), quiet()).await;
        let sender = tokio::spawn(async move {
            for i in 0..50u32 {
                // Some messages split across writes, some in bursts.
                server
                    .send(Message::Binary(Bytes::from(vec![i as u8; 70_000])))
                    .await
                    .unwrap();
                if i % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            server.close(CloseCode::NORMAL, "").await.unwrap();
        });
        let mut received = 0u32;
        let mut cancelled = 0;
        loop {
            tokio::select! {
                message = client.recv() => match message {
                    Some(message) => {
                        let message = message.unwrap();
                        assert_eq!(message.len(), 70_000);
                        assert!(message.as_bytes().iter().all(|&b| b == received as u8));
                        received += 1;
                    }
                    None => break,
                },
                // Cancels the receive often, in the middle of messages.
                () = tokio::time::sleep(Duration::from_micros(200)) => cancelled += 1,
            }
        }
        assert_eq!(received, 50);
        assert!(cancelled > 0);
        sender.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn cancelled_send_keeps_the_connection_consistent() {
    timeout(TEST_TIMEOUT, async {
        let mut config = quiet();
        config.write_buffer_limit = 16 * 1024;
        let (mut client, mut server) = pair(config, quiet()).await;
        // Nobody reads for a while: sends back up and get cancelled.
        let mut sent = 0u32;
        let mut cancelled = 0;
        for i in 0..40u32 {
            let message = Message::Binary(Bytes::from(vec![i as u8; 40_000]));
            match timeout(Duration::from_millis(20), client.send(message)).await {
                Ok(result) => {
                    result.unwrap();
                    sent = i + 1;
                }
                Err(_) => {
                    cancelled += 1;
                    break;
                }
            }
        }
        assert!(cancelled > 0);
        // Then the server reads: every frame is whole. The cancelled send
        // was either queued whole (and arrives) or not queued at all.
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(message) = server.recv().await {
                let message = message.unwrap();
                if message == Message::Text("done".into()) {
                    break;
                }
                let first = message.as_bytes()[0];
                assert!(message.as_bytes().iter().all(|&b| b == first));
                seen.push(first);
            }
            assert!(server.recv().await.is_none());
            seen
        });
        client.send("done").await.unwrap();
        client.close(CloseCode::NORMAL, "").await.unwrap();
        let seen = reader.await.unwrap();
        let expected: Vec<u8> = (0..sent as u8).collect();
        assert!(seen.starts_with(&expected), "{seen:?}");
        assert!(
            seen.len() == expected.len() || seen.len() == expected.len() + 1,
            "{seen:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn large_message_read_piece_by_piece() {
    timeout(TEST_TIMEOUT, async {
        let mut config = quiet();
        config.connection.stream_threshold = Some(16 * 1024);
        let (mut client, mut server) = pair(quiet(), config).await;
        let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| i as u8).collect();
        let expected = payload.clone();
        let sender = tokio::spawn(async move {
            client.send(Message::Binary(payload.into())).await.unwrap();
            client.send("small").await.unwrap();
            client.send(Message::Binary(vec![9u8; 100_000].into())).await.unwrap();
            client.send("after").await.unwrap();
            client
        });
        // The 4 MiB message, read through an AsyncRead in small pieces.
        let mut reader = server.recv_reader().await.unwrap().unwrap();
        assert_eq!(reader.kind(), tether_tokio::DataKind::Binary);
        let mut received = Vec::new();
        let mut buf = vec![0u8; 8192];
        let mut reads = 0;
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            reads += 1;
        }
        drop(reader);
        assert_eq!(received.len(), expected.len());
        assert!(received == expected);
        assert!(reads > 1);
        // A small message comes whole through the same API.
        let mut reader = server.recv_reader().await.unwrap().unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "small");
        drop(reader);
        // Dropping a reader early skips the rest of its message.
        let mut reader = server.recv_reader().await.unwrap().unwrap();
        let mut first = [0u8; 10];
        reader.read_exact(&mut first).await.unwrap();
        drop(reader);
        assert_eq!(server.recv().await.unwrap().unwrap(), Message::Text("after".into()));
        let mut client = sender.await.unwrap();
        let server_end = tokio::spawn(async move { server.recv().await.is_none() });
        client.close(CloseCode::NORMAL, "").await.unwrap();
        assert!(server_end.await.unwrap());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn streamed_messages_are_reassembled_for_whole_receive() {
    timeout(TEST_TIMEOUT, async {
        let mut config = quiet();
        config.connection.stream_threshold = Some(1024);
        let (mut client, mut server) = pair(quiet(), config).await;
        let text = "é".repeat(50_000);
        let sent = text.clone();
        let sender = tokio::spawn(async move {
            client.send(sent.as_str()).await.unwrap();
            client.close(CloseCode::NORMAL, "").await.unwrap();
        });
        assert_eq!(server.recv().await.unwrap().unwrap(), Message::Text(text.into()));
        assert!(server.recv().await.is_none());
        sender.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn fragments_sent_one_by_one() {
    timeout(TEST_TIMEOUT, async {
        let (mut client, mut server) = pair(quiet(), quiet()).await;
        client
            .send_fragment(tether_tokio::DataKind::Text, b"hel", false)
            .await
            .unwrap();
        client.ping(&b"between"[..]).await.unwrap();
        client
            .send_fragment(tether_tokio::DataKind::Text, b"lo", true)
            .await
            .unwrap();
        assert_eq!(server.recv().await.unwrap().unwrap(), Message::Text("hello".into()));
        let server_end = tokio::spawn(async move { server.recv().await.is_none() });
        client.close(CloseCode::NORMAL, "").await.unwrap();
        assert!(server_end.await.unwrap());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn receiving_stops_while_pongs_pile_up() {
    pongs_pile_up(0).await;
}

/// The same flood of pings while the application's own output (16 MiB, more
/// than loopback's socket buffers take) waits too: receiving goes on past
/// that output, but stops once the pongs behind it exceed the limit.
#[tokio::test]
async fn receiving_stops_while_pongs_pile_up_behind_a_large_message() {
    pongs_pile_up(16 << 20).await;
}

/// A client floods the server with pings and never reads; the server's
/// application first queues `queued` bytes of its own. Its output must stay
/// within what the application queued, the write limit and one read's pongs.
async fn pongs_pile_up(queued: usize) {
    use tokio::io::AsyncWriteExt;
    timeout(TEST_TIMEOUT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = quiet();
        config.write_buffer_limit = 32 * 1024;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = Server::new().config(config).accept(tcp).await.unwrap();
            let (mut read, mut write) = ws.split();
            if queued > 0 {
                write.feed(Message::Binary(vec![7; queued].into())).await.unwrap();
            }
            let reader = tokio::spawn(async move { read.recv().await.is_none() });
            let mut most = 0;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                most = most.max(write.buffered_amount());
            }
            reader.abort();
            (most, write.stats().wire_bytes_received)
        });
        // A client that floods pings (125-byte payloads) and never reads.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
        ping.extend_from_slice(&[b'p'; 125]);
        let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 1000).collect();
        let mut blocked = false;
        for _ in 0..1000 {
            // 131 MB at most, far more than the socket buffers hold.
            if timeout(Duration::from_millis(300), tcp.write_all(&burst))
                .await
                .is_err()
            {
                blocked = true;
                break;
            }
        }
        assert!(blocked, "the server kept reading although nobody read its pongs");
        let (most, received) = server.await.unwrap();
        // What the application queued (the message's header included), the
        // limit, plus at most what one read's pongs add: a read takes up to
        // read_buffer_size (64 KiB) plus the room left in the buffer (under
        // 4 KiB), and a pong is smaller than its ping.
        let bound = queued + 16 + 32 * 1024 + 68 * 1024 + 1024;
        assert!(most <= bound, "{most} > {bound}");
        // The server read pings while its message waited: enough of them
        // to queue more than the limit in pongs (a 131-byte ping's pong is
        // 127 bytes).
        assert!(received >= 32 * 1024, "read {received} bytes");
    })
    .await
    .unwrap();
}

/// Two ends that each stream to the other through split halves, with both
/// pipes full at once: each end's output is over its limit and waits for the
/// other to read, so each must go on reading while its application
/// receives, or neither output ever drains (until the send timeout).
#[tokio::test(start_paused = true)]
async fn two_ends_streaming_both_ways_do_not_stall() {
    const N: usize = 2_000;
    let mut config = quiet();
    // Messages larger than the limit: each end's output is over it most
    // of the time.
    config.write_buffer_limit = 1024;
    let (a, b) = tokio::io::duplex(2 * 1024);
    let server = {
        let config = config.clone();
        tokio::spawn(async move { Server::new().config(config).accept(b).await.unwrap() })
    };
    let client = ClientBuilder::from_request(ClientRequest::new("ws://pipe.invalid/").unwrap())
        .config(config)
        .connect_over(a)
        .await
        .unwrap();
    let server = server.await.unwrap();
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (name, ws) in [("client", client), ("server", server)] {
        let (mut read, mut write) = ws.split();
        tasks.push(tokio::spawn(async move {
            for i in 0..N {
                let message = format!("{name} {i:05} ") + &"x".repeat(3000);
                // Fed without a flush: the output grows past the limit.
                write
                    .feed(message)
                    .await
                    .map_err(|e| format!("{name} send {i}: {e:?}"))?;
            }
            write.flush().await.map_err(|e| format!("{name} flush: {e:?}"))?;
            Ok::<Box<dyn std::any::Any + Send>, String>(Box::new(write))
        }));
        let peer = if name == "client" { "server" } else { "client" };
        tasks.push(tokio::spawn(async move {
            for i in 0..N {
                match read.recv().await {
                    Some(Ok(Message::Text(text))) if text.starts_with(&format!("{peer} {i:05} ")) => {}
                    other => return Err(format!("{name} expected message {i}, got {other:?}")),
                }
            }
            Ok::<Box<dyn std::any::Any + Send>, String>(Box::new(read))
        }));
    }
    // The halves are kept until every task is done: a half dropped early
    // would change what the other end sees.
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{failures:?}");
    // Paused time: only a stall moves the clock (to the 30 s send timeout).
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn fed_replies_to_one_read_leave_in_one_write() {
    use tokio::io::AsyncWriteExt;
    timeout(TEST_TIMEOUT, async {
        let (a, b) = tokio::io::duplex(1024 * 1024);
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server_io = CountingWrites {
            inner: b,
            writes: writes.clone(),
        };
        let server = tokio::spawn(async move {
            let mut ws = Server::new().config(quiet()).accept(server_io).await.unwrap();
            let mut echoed = 0;
            // The client vanishes at the end without a close: `recv` ends
            // with an error.
            while let Some(Ok(message)) = ws.recv().await {
                ws.feed(message).await.unwrap();
                echoed += 1;
            }
            echoed
        });
        // A raw client: the handshake, then 16 masked messages in one write.
        let mut client = a;
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .unwrap();
        let mut response = Vec::new();
        while !response.ends_with(b"\r\n\r\n") {
            response.push(client.read_u8().await.unwrap());
        }
        let before = writes.load(std::sync::atomic::Ordering::Relaxed);
        let mut burst = Vec::new();
        for i in 0..16u8 {
            // Binary, 4-byte payload, mask key zero.
            burst.extend_from_slice(&[0x82, 0x84, 0, 0, 0, 0, i, i, i, i]);
        }
        client.write_all(&burst).await.unwrap();
        let mut echoes = vec![0u8; 16 * 6];
        client.read_exact(&mut echoes).await.unwrap();
        for (i, echo) in echoes.chunks(6).enumerate() {
            let i = i as u8;
            assert_eq!(echo, [0x82, 4, i, i, i, i]);
        }
        assert_eq!(writes.load(std::sync::atomic::Ordering::Relaxed) - before, 1);
        drop(client);
        assert_eq!(server.await.unwrap(), 16);
    })
    .await
    .unwrap();
}
