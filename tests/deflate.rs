//! permessage-deflate (RFC 7692) end to end: negotiated by the real handshake,
//! then messages both ways through a client and a server core in memory.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tether_proto::deflate::DeflateConfig;
use tether_proto::handshake::{Accept, ClientRequest};
use tether_proto::{CloseCode, Config, Event, Message, SendOptions};
use tether_tests::Pair;

/// A configuration from the default, changed by `f`.
fn deflate(f: impl FnOnce(&mut DeflateConfig)) -> DeflateConfig {
    let mut config = DeflateConfig::default();
    f(&mut config);
    config
}

fn pair_with(client: DeflateConfig, server: DeflateConfig, client_conf: Config, server_conf: Config) -> Pair {
    let request = ClientRequest::new("ws://localhost/")
        .unwrap()
        .permessage_deflate(client);
    Pair::handshake(
        request,
        Accept::new().permessage_deflate(server),
        client_conf,
        server_conf,
    )
    .unwrap()
}

fn pair(client: DeflateConfig, server: DeflateConfig) -> Pair {
    pair_with(client, server, Config::default(), Config::default())
}

/// Compressible text of `n` bytes (words picked by a small LCG), different
/// for each `seed`.
fn text(n: usize, seed: usize) -> String {
    let words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
        "omicron",
        "pi",
        "rho",
        "sigma",
        "tau",
        "upsilon",
        "phi",
        "chi",
        "psi",
        "omega",
        "κόσμε",
        "€",
    ];
    let mut state = seed as u64 * 2_654_435_761 + 1;
    let mut text = String::with_capacity(n + 16);
    while text.len() < n {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        text.push_str(words[(state >> 33) as usize % words.len()]);
        text.push(' ');
    }
    while text.len() > n {
        text.pop();
    }
    text
}

/// Sends `messages` each way and checks they arrive intact, in order, and
/// smaller on the wire than they are.
fn exchange(pair: &mut Pair, messages: &[String]) {
    let (c0, s0) = (pair.client.written, pair.server.written);
    for m in messages {
        pair.client.conn.send(Message::Text(m.as_str().into())).unwrap();
        pair.client.conn.ping(b"between").unwrap();
        pair.server
            .conn
            .send(Message::Binary(m.clone().into_bytes().into()))
            .unwrap();
    }
    pair.drive();
    let sent: Vec<Message> = messages.iter().map(|m| Message::Text(m.as_str().into())).collect();
    assert_eq!(pair.server.messages(), sent);
    let sent: Vec<Message> = messages
        .iter()
        .map(|m| Message::Binary(m.clone().into_bytes().into()))
        .collect();
    assert_eq!(pair.client.messages(), sent);
    let raw: usize = messages.iter().map(String::len).sum();
    assert!(
        pair.client.written - c0 < raw,
        "client compressed: {} < {raw}",
        pair.client.written - c0
    );
    assert!(
        pair.server.written - s0 < raw,
        "server compressed: {} < {raw}",
        pair.server.written - s0
    );
}

#[test]
fn rfc7692_every_parameter_combination_both_directions() {
    // Each combination of offer and server settings: the parameters both
    // ends agreed on, then messages both ways.
    let bits = [9u8, 12, 15];
    for server_nct in [false, true] {
        for client_nct in [false, true] {
            for &server_bits in &bits {
                for &client_bits in &bits {
                    let client = deflate(|c| {
                        c.server_no_context_takeover = server_nct;
                        c.client_no_context_takeover = client_nct;
                        c.server_max_window_bits = server_bits;
                        c.client_max_window_bits = client_bits;
                    });
                    // The server asks for the opposite windows where it may.
                    let server = deflate(|c| {
                        c.server_max_window_bits = 24 - server_bits;
                        c.client_max_window_bits = 24 - client_bits;
                    });
                    let mut pair = pair(client.clone(), server);
                    assert_eq!(
                        pair.client.conn.extensions().collect::<Vec<_>>(),
                        ["permessage-deflate"]
                    );
                    assert_eq!(
                        pair.server.conn.extensions().collect::<Vec<_>>(),
                        ["permessage-deflate"]
                    );
                    // Both ends run on the same answer: the client's
                    // requests honoured, each window the smaller of what the
                    // client allows and the server wants.
                    let agreed = pair.client.conn.deflate_params().unwrap();
                    assert_eq!(pair.server.conn.deflate_params(), Some(agreed));
                    assert_eq!(
                        (
                            agreed.server_no_context_takeover,
                            agreed.client_no_context_takeover,
                            agreed.server_max_window_bits,
                            agreed.client_max_window_bits
                        ),
                        (
                            server_nct,
                            client_nct,
                            server_bits.min(24 - server_bits),
                            client_bits.min(24 - client_bits)
                        ),
                        "offer: server_nct {server_nct}, client_nct {client_nct}, \
                         server bits {server_bits}, client bits {client_bits}"
                    );
                    let messages: Vec<String> = (0..4).map(|i| text(3000 + i * 500, i)).collect();
                    exchange(&mut pair, &messages);
                    // The core's counters: what one end sent, the other
                    // received; compressed on the wire.
                    let (client, server) = (pair.client.conn.stats(), pair.server.conn.stats());
                    assert_eq!(client.messages_sent, 4);
                    assert_eq!(server.messages_received, 4);
                    assert_eq!(client.payload_bytes_sent, server.payload_bytes_received);
                    assert_eq!(client.wire_bytes_sent, server.wire_bytes_received);
                    assert_eq!(server.wire_bytes_sent, client.wire_bytes_received);
                    assert!(client.wire_bytes_sent < client.payload_bytes_sent);
                }
            }
        }
    }
}

#[test]
fn rfc7692_context_takeover_makes_repeats_cheap() {
    let message = text(2000, 1);
    let mut with = pair(DeflateConfig::default(), DeflateConfig::default());
    let mut without = pair(
        deflate(|c| c.server_no_context_takeover = true),
        DeflateConfig::default(),
    );
    for p in [&mut with, &mut without] {
        for _ in 0..5 {
            p.server.conn.send(Message::Text(message.as_str().into())).unwrap();
        }
        p.drive();
        assert_eq!(p.client.messages().len(), 5);
    }
    assert!(
        with.server.written * 2 < without.server.written,
        "{} vs {}",
        with.server.written,
        without.server.written
    );
}

#[test]
fn rfc7692_6_fragmented_compressed_messages() {
    let mut config = Config::default();
    config.max_send_frame_size = Some(100);
    let mut pair = pair_with(
        DeflateConfig::default(),
        DeflateConfig::default(),
        config.clone(),
        config,
    );
    pair.chunk = 37;
    let messages: Vec<String> = (0..3).map(|i| text(20_000, i)).collect();
    exchange(&mut pair, &messages);
}

#[test]
fn declined_offer_runs_uncompressed() {
    let request = ClientRequest::new("ws://localhost/")
        .unwrap()
        .permessage_deflate(DeflateConfig::default());
    // Compression is opt-in on the server: without it the offer is declined.
    let mut pair = Pair::handshake(request, Accept::new(), Config::default(), Config::default()).unwrap();
    assert_eq!(pair.client.conn.extensions().count(), 0);
    pair.client.conn.send_text(&text(1000, 0)).unwrap();
    pair.drive();
    assert_eq!(pair.server.messages().len(), 1);
    assert!(pair.client.written > 1000);
}

#[test]
fn uncompressed_flag_for_secrets() {
    let mut pair = pair(DeflateConfig::default(), DeflateConfig::default());
    let secret = format!("token=s3cr3t {}", text(1000, 0));
    pair.server
        .conn
        .send_with(Message::Text(secret.as_str().into()), SendOptions::uncompressed())
        .unwrap();
    pair.drive();
    assert_eq!(pair.client.messages(), vec![Message::Text(secret.as_str().into())]);
    assert!(pair.server.written >= secret.len(), "sent as it is");
}

#[test]
fn compressed_message_streamed_piece_by_piece() {
    let mut config = Config::default();
    config.stream_threshold = Some(4096);
    let mut pair = pair_with(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default(),
        config,
    );
    pair.chunk = 500;
    let message = text(200_000, 3);
    pair.client.conn.send_text(&message).unwrap();
    pair.drive();
    let mut assembled = String::new();
    let mut pieces = 0;
    for e in &pair.server.events {
        let Event::Fragment(f) = e else { panic!("{e:?}") };
        assembled.push_str(f.text().unwrap());
        pieces += 1;
    }
    assert!(pieces > 2, "{pieces} pieces");
    assert_eq!(assembled, message);
}

#[test]
fn zip_bomb_fails_with_1009() {
    let mut server = Config::default();
    server.max_message_size = 1 << 20;
    let mut pair = pair_with(
        DeflateConfig::default(),
        DeflateConfig::default(),
        Config::default(),
        server,
    );
    pair.client.conn.send_binary(&vec![0; 64 << 20]).unwrap();
    let wire = std::iter::from_fn(|| pair.client.conn.poll_transmit())
        .map(|b| b.len())
        .sum::<usize>();
    assert!(wire < 200_000, "64 MiB of zeros compress to {wire} bytes");
    // Replay it through the harness: the server must stop at the limit.
    let mut pair = pair_with(DeflateConfig::default(), DeflateConfig::default(), Config::default(), {
        let mut c = Config::default();
        c.max_message_size = 1 << 20;
        c
    });
    pair.client.conn.send_binary(&vec![0; 64 << 20]).unwrap();
    pair.drive();
    let closed = pair.server.closed().unwrap();
    assert_eq!(closed.code, CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn rfc7692_7_1_answer_beyond_the_offer_fails_the_client_handshake() {
    use tether_proto::handshake::{accept_key, ClientHandshake, HandshakeError};
    // The client offers server_max_window_bits=10; a server answers 15.
    let request = ClientRequest::new("ws://localhost/")
        .unwrap()
        .permessage_deflate(deflate(|c| c.server_max_window_bits = 10));
    let (mut hs, request_bytes) = ClientHandshake::new(
        request,
        &mut tether_proto::SeededRandom::new(1),
        std::time::Instant::now(),
        None,
    )
    .unwrap();
    let request_text = String::from_utf8(request_bytes).unwrap();
    let key = request_text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=15\r\n\r\n",
        accept_key(key.as_bytes())
    );
    assert!(matches!(
        hs.handle_read(response.as_bytes()),
        Err(HandshakeError::InvalidExtensionAnswer(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random messages, random parameters, random delivery sizes: everything
    /// arrives intact, both ways.
    #[test]
    fn round_trip_through_the_pair(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 1..6),
        server_nct in any::<bool>(),
        client_nct in any::<bool>(),
        server_bits in 9u8..=15,
        client_bits in 9u8..=15,
        threshold in 0usize..200,
        chunk in 1usize..500,
        frame in prop_oneof![Just(None), (1usize..300).prop_map(Some)],
    ) {
        let client = deflate(|c| {
            c.server_no_context_takeover = server_nct;
            c.client_no_context_takeover = client_nct;
            c.server_max_window_bits = server_bits;
            c.client_max_window_bits = client_bits;
            c.threshold = threshold;
        });
        let server = deflate(|c| c.threshold = threshold);
        let mut config = Config::default();
        config.max_send_frame_size = frame;
        let mut pair = pair_with(client, server, config.clone(), config);
        pair.chunk = chunk;
        for m in &messages {
            pair.client.conn.send(m.clone()).unwrap();
            pair.server.conn.send(m.clone()).unwrap();
        }
        pair.drive();
        let sent: Vec<Message> = messages.into_iter().map(Message::from).collect();
        prop_assert_eq!(pair.server.messages(), sent.clone());
        prop_assert_eq!(pair.client.messages(), sent);
    }
}

/// Prepared messages (encoded once for many connections) interleaved with
/// ordinary ones, for every parameter combination, both roles: each peer
/// receives every message intact. Without server context takeover the
/// server sends the message compressed once and shared (the same bytes on
/// every connection); with it, each connection compresses for itself
/// (sharing would break the peer's window); a client re-masks.
#[test]
fn prepared_messages_on_every_parameter_combination() {
    use tether_proto::PreparedMessage;
    let bits = [9u8, 12, 15];
    let messages: Vec<String> = (0..6).map(|i| text(2000 + i * 300, i + 10)).collect();
    let prepared: Vec<PreparedMessage> = messages
        .iter()
        .map(|m| PreparedMessage::new(Message::Text(m.as_str().into())))
        .collect();
    for server_nct in [false, true] {
        for client_nct in [false, true] {
            for &server_bits in &bits {
                let client = deflate(|c| {
                    c.server_no_context_takeover = server_nct;
                    c.client_no_context_takeover = client_nct;
                    c.server_max_window_bits = server_bits;
                });
                // Two server connections with the same agreement.
                let mut pairs = [
                    pair(client.clone(), DeflateConfig::default()),
                    pair(client, DeflateConfig::default()),
                ];
                let mut wire = Vec::new();
                for pair in &mut pairs {
                    for (i, p) in prepared.iter().enumerate() {
                        // Ordinary messages in between keep each side's
                        // context moving.
                        pair.server
                            .conn
                            .send(Message::Text(messages[i].as_str().into()))
                            .unwrap();
                        pair.server.conn.send_prepared(p).unwrap();
                        pair.client.conn.send_prepared(p).unwrap();
                        pair.client
                            .conn
                            .send(Message::Text(messages[i].as_str().into()))
                            .unwrap();
                    }
                    let before = pair.server.written;
                    pair.drive();
                    wire.push(pair.server.written - before);
                    let expected: Vec<Message> = messages
                        .iter()
                        .flat_map(|m| [Message::Text(m.as_str().into()), Message::Text(m.as_str().into())])
                        .collect();
                    // (Compared without printing 30 KB of text on failure.)
                    assert!(
                        pair.client.messages() == expected,
                        "client received other messages: server_nct {server_nct}, bits {server_bits}"
                    );
                    assert!(
                        pair.server.messages() == expected,
                        "server received other messages: client_nct {client_nct}"
                    );
                    let stats = pair.server.conn.stats();
                    assert_eq!(stats.messages_sent, 12);
                    assert_eq!(
                        stats.payload_bytes_sent,
                        2 * messages.iter().map(String::len).sum::<usize>() as u64
                    );
                }
                // Compressed either way, and alike on both connections.
                assert_eq!(wire[0], wire[1]);
                let raw = 2 * messages.iter().map(String::len).sum::<usize>();
                assert!(wire[0] < raw, "{} < {raw}", wire[0]);
            }
        }
    }
}

/// Without server context takeover, a prepared message is compressed once:
/// two connections queue the very same bytes.
#[test]
fn prepared_messages_are_compressed_once_and_shared() {
    use tether_proto::PreparedMessage;
    let client = deflate(|c| c.server_no_context_takeover = true);
    let prepared = PreparedMessage::new(Message::Text(text(5000, 3).into()));
    let mut frames = Vec::new();
    for _ in 0..2 {
        let mut pair = pair(client.clone(), DeflateConfig::default());
        pair.server.conn.send_prepared(&prepared).unwrap();
        let frame = pair.server.conn.poll_transmit().unwrap();
        assert_eq!(frame[0], 0xc1, "FIN, RSV1 (compressed), text");
        assert!(frame.len() < 5000);
        frames.push(frame);
    }
    // The same allocation, not only equal bytes.
    assert_eq!(frames[0].as_ptr(), frames[1].as_ptr());
    // Uncompressed, prepared for a secret: the plain frame, shared too.
    let secret = PreparedMessage::with_options(Message::Text(text(5000, 4).into()), SendOptions::uncompressed());
    let mut pair = pair(client, DeflateConfig::default());
    pair.server.conn.send_prepared(&secret).unwrap();
    assert_eq!(
        pair.server.conn.poll_transmit().unwrap().as_ptr(),
        secret.frame().as_ptr()
    );
}
