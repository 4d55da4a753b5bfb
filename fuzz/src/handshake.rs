//! The opening handshake push parsers fed arbitrary bytes in chunks.
//!
//! Input layout: a 4-byte prefix, then the bytes from the peer.
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | flags (see each target) |
//! | 1 | chunking: 0 = one read, n = reads of 1..=n bytes |
//! | 2, 3 | server: `max_header_bytes = 64 + 4 * byte 2`, `max_headers = byte 3 % 32` (with flag `0x01`) |
//!
//! Both parsers are also fed the whole input in one read: a parsed request,
//! response or rejection must not depend on the split. (Which error a
//! malformed head gives, and when, may: httparse can fail on a partial line
//! only if it sees it.)

use std::time::Instant;

use base64::Engine as _;
use tether_proto::handshake::{
    accept_key, Accept, ClientHandshake, ClientRequest, ClientResponse, ExtensionOffer, HandshakeConfig,
    HandshakeError, Request, ServerHandshake,
};
use tether_proto::{Config, Connection, SeededRandom};

use crate::check::EventChecker;

pub const PREFIX_LEN: usize = 4;

/// The largest rejection body a client keeps.
const MAX_REJECTION_BODY: usize = 64 * 1024;

/// Splits `data` into reads of 1..=`max` bytes (all at once for 0).
fn chunks(data: &[u8], max: u8) -> Vec<&[u8]> {
    if max == 0 {
        return vec![data];
    }
    let mut state = u64::from(max) ^ (data.len() as u64) << 8;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let n = 1 + ((state >> 33) % u64::from(max)) as usize;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}

/// Feeds a connection built by a handshake and checks its events.
fn drain(conn: &mut Connection, checker: &mut EventChecker) {
    while let Some(event) = conn.poll_event() {
        checker.event(event);
    }
    let pending = conn.pending_transmit();
    let mut polled = 0;
    while let Some(chunk) = conn.poll_transmit() {
        polled += chunk.len();
    }
    assert_eq!(polled, pending);
}

// ---- Server: the client's request ---------------------------------------

const SMALL_LIMITS: u8 = 0x01;
const ORIGINS: u8 = 0x02;
const SUBPROTOCOL: u8 = 0x04;

/// How a server handshake fed some bytes ended.
#[derive(Debug)]
enum ServerOutcome {
    Request(Request),
    Error(HandshakeError),
    Incomplete,
}

fn server_feed(config: &HandshakeConfig, reads: &[&[u8]]) -> (ServerHandshake, ServerOutcome) {
    let mut server = ServerHandshake::new(config.clone(), Instant::now());
    let mut request = None;
    for read in reads {
        match server.handle_read(read) {
            Ok(None) => {}
            Ok(Some(parsed)) => {
                assert!(request.is_none(), "a second request from one handshake");
                request = Some(parsed);
            }
            Err(error) => {
                // Failed for good: input after it is refused.
                assert!(matches!(server.handle_read(b"x"), Err(HandshakeError::InvalidState(_))));
                return (server, ServerOutcome::Error(error));
            }
        }
    }
    match request {
        Some(request) => (server, ServerOutcome::Request(request)),
        None => (server, ServerOutcome::Incomplete),
    }
}

/// Runs one input against the server handshake.
pub fn run_request(data: &[u8]) {
    let Some((prefix, input)) = data.split_first_chunk::<PREFIX_LEN>() else {
        return;
    };
    let flags = prefix[0];
    let mut config = HandshakeConfig::default();
    if flags & SMALL_LIMITS != 0 {
        config.max_header_bytes = 64 + 4 * usize::from(prefix[2]);
        config.max_headers = usize::from(prefix[3] % 32);
    }
    if flags & ORIGINS != 0 {
        config.allowed_origins = Some(vec!["https://example.com".to_owned()]);
    }
    let now = Instant::now();

    let (mut split, split_outcome) = server_feed(&config, &chunks(input, prefix[1]));
    let (mut whole, whole_outcome) = server_feed(&config, &[input]);
    match (&split_outcome, &whole_outcome) {
        (ServerOutcome::Request(a), ServerOutcome::Request(b)) => {
            assert_eq!(a.as_http().method(), b.as_http().method());
            assert_eq!(a.target(), b.target());
            assert_eq!(a.version(), b.version());
            assert_eq!(a.headers(), b.headers(), "request headers depend on the split");
        }
        // Bytes after the head are limited per later read, not in the read
        // that completed the head.
        (ServerOutcome::Error(HandshakeError::TooMuchEarlyData { .. }), ServerOutcome::Request(..)) => {}
        (ServerOutcome::Request(..), _) | (_, ServerOutcome::Request(..)) => {
            panic!("request parsed only with one split: {split_outcome:?} vs {whole_outcome:?}")
        }
        _ => {}
    }

    let mut leftovers = Vec::new();
    for (handshake, outcome) in [(&mut split, split_outcome), (&mut whole, whole_outcome)] {
        match outcome {
            ServerOutcome::Request(request) => leftovers.push(accept(handshake, &request, flags, now)),
            ServerOutcome::Error(error) => check_error_response(&error),
            ServerOutcome::Incomplete => {
                let error = handshake.handle_eof();
                assert_eq!(error, HandshakeError::UnexpectedEof);
            }
        }
    }
    if let [Some(a), Some(b)] = &leftovers[..] {
        assert_eq!(a, b, "bytes after the request depend on the split");
    }
}

/// Accepts a parsed request; a 101 must satisfy a client that sent the same
/// key, and the connection gets the bytes that followed the request, which
/// are returned.
fn accept(server: &mut ServerHandshake, request: &Request, flags: u8, now: Instant) -> Option<Vec<u8>> {
    let mut options = Accept::new();
    let protocol = request.protocols().first().map(|p| (*p).to_owned());
    if flags & SUBPROTOCOL != 0 {
        if let Some(protocol) = &protocol {
            options = options.subprotocol(protocol.clone());
        }
    }
    let accepted = match server.accept_parts(request, options) {
        Ok(accepted) => accepted,
        Err(HandshakeError::InvalidAcceptOptions(_)) => return None,
        Err(error) => {
            assert!(
                error.status().is_some(),
                "a refused request without an answer: {error:?}"
            );
            check_error_response(&error);
            return None;
        }
    };
    assert!(
        request.is_websocket_upgrade(),
        "accepted a request that is not an upgrade"
    );
    let response = accepted.response().to_vec();
    assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    let key = request.key().unwrap_or_default();
    let expected_accept = accept_key(key.as_bytes());
    assert!(
        response
            .windows(expected_accept.len())
            .any(|w| w == expected_accept.as_bytes()),
        "101 without the accept key"
    );

    // A client that sent this key accepts the 101.
    if let Ok(nonce) = base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        if nonce.len() == 16 {
            let mut client_request = ClientRequest::new("ws://localhost/").ok();
            if let (Some(protocol), Some(req)) = (accepted.subprotocol(), client_request.take()) {
                client_request = Some(req.protocols([protocol.to_owned()]));
            }
            let mut random = move |buf: &mut [u8]| buf.copy_from_slice(&nonce[..buf.len()]);
            if let Some(client_request) = client_request {
                if let Ok((mut client, _)) = ClientHandshake::new(client_request, &mut random, now, None) {
                    match client.handle_read(&response) {
                        Ok(Some(parsed)) => {
                            assert_eq!(parsed.subprotocol(), accepted.subprotocol());
                            assert!(parsed.leftover().is_empty());
                        }
                        other => panic!(
                            "our client refused our 101: {other:?}\n{}",
                            String::from_utf8_lossy(&response)
                        ),
                    }
                }
            }
        }
    }

    let leftover = accepted.leftover().to_vec();
    if let Ok((_, mut conn)) = accepted.into_connection(Config::default(), now) {
        let mut checker = EventChecker::new(conn.config());
        drain(&mut conn, &mut checker);
    }
    Some(leftover)
}

/// The answer a server sends for a failed handshake is a complete response
/// that our own client reads back as a rejection with the same status.
fn check_error_response(error: &HandshakeError) {
    let Some(response) = error.response() else {
        assert!(error.status().is_none());
        return;
    };
    let Ok(request) = ClientRequest::new("ws://localhost/") else {
        return;
    };
    let Ok((mut client, _)) = ClientHandshake::new(request, &mut SeededRandom::new(1), Instant::now(), None) else {
        return;
    };
    match client.handle_read(&response) {
        Err(HandshakeError::Rejected { status, body, .. }) => {
            assert_eq!(Some(status), error.status());
            assert!(body.starts_with(b"Failed to open a WebSocket connection: "));
        }
        other => panic!("error response not read back as a rejection: {other:?}"),
    }
}

// ---- Client: the server's response --------------------------------------

const OFFER_PROTOCOLS: u8 = 0x01;
const OFFER_DEFLATE: u8 = 0x02;

/// The seed of the key source: `seed-*` files with a valid 101 use the
/// accept key of this seed.
pub const CLIENT_KEY_SEED: u64 = 1;

/// How a client handshake fed some bytes ended.
#[derive(Debug)]
enum ClientOutcome {
    /// A 101, and every byte after its head (leftover and later reads).
    Switched(ClientResponse, Vec<u8>),
    Error(HandshakeError),
    Incomplete(ClientHandshake),
}

fn client_handshake(flags: u8) -> ClientHandshake {
    let mut request = ClientRequest::new("ws://example.com/chat").expect("valid URI");
    if flags & OFFER_PROTOCOLS != 0 {
        request = request.protocols(["chat", "superchat"]);
    }
    if flags & OFFER_DEFLATE != 0 {
        request = request.extensions(vec![
            ExtensionOffer::new("permessage-deflate").with_param("client_max_window_bits", None)
        ]);
    }
    let (handshake, _) = ClientHandshake::new(request, &mut SeededRandom::new(CLIENT_KEY_SEED), Instant::now(), None)
        .expect("valid request");
    handshake
}

fn client_feed(flags: u8, reads: &[&[u8]]) -> ClientOutcome {
    let mut client = client_handshake(flags);
    for (i, read) in reads.iter().enumerate() {
        match client.handle_read(read) {
            Ok(None) => {}
            Ok(Some(response)) => {
                let mut after = response.leftover().to_vec();
                for later in &reads[i + 1..] {
                    after.extend_from_slice(later);
                }
                // Finished: input after it is refused.
                assert!(matches!(client.handle_read(b"x"), Err(HandshakeError::InvalidState(_))));
                return ClientOutcome::Switched(response, after);
            }
            Err(error) => {
                assert!(matches!(client.handle_read(b"x"), Err(HandshakeError::InvalidState(_))));
                return ClientOutcome::Error(error);
            }
        }
    }
    ClientOutcome::Incomplete(client)
}

/// Runs one input against the client handshake.
pub fn run_response(data: &[u8]) {
    let Some((prefix, input)) = data.split_first_chunk::<PREFIX_LEN>() else {
        return;
    };
    let flags = prefix[0];
    let now = Instant::now();
    let finish = |outcome: ClientOutcome| match outcome {
        ClientOutcome::Incomplete(mut client) => ClientOutcome::Error(client.handle_eof()),
        other => other,
    };
    let split = finish(client_feed(flags, &chunks(input, prefix[1])));
    let whole = finish(client_feed(flags, &[input]));

    match (&split, &whole) {
        (ClientOutcome::Switched(a, after_a), ClientOutcome::Switched(b, after_b)) => {
            assert_eq!(a.response().headers(), b.response().headers());
            assert_eq!(a.subprotocol(), b.subprotocol());
            assert_eq!(a.extensions(), b.extensions());
            assert_eq!(after_a, after_b, "bytes after the 101 depend on the split");
        }
        (ClientOutcome::Error(a @ HandshakeError::Rejected { .. }), ClientOutcome::Error(b))
        | (ClientOutcome::Error(b), ClientOutcome::Error(a @ HandshakeError::Rejected { .. })) => {
            assert_eq!(a, b, "rejection depends on the split");
        }
        (ClientOutcome::Switched(..), _) | (_, ClientOutcome::Switched(..)) => {
            panic!("101 accepted only with one split: {split:?} vs {whole:?}")
        }
        _ => {}
    }

    for outcome in [split, whole] {
        match outcome {
            ClientOutcome::Switched(response, after) => {
                assert_eq!(response.response().status().as_u16(), 101);
                if let Some(protocol) = response.subprotocol() {
                    assert!(flags & OFFER_PROTOCOLS != 0 && ["chat", "superchat"].contains(&protocol));
                }
                for extension in response.extensions() {
                    assert!(flags & OFFER_DEFLATE != 0, "unoffered extension {extension:?} accepted");
                }
                let leftover_len = response.leftover().len();
                match response.into_connection(Config::default(), Box::new(SeededRandom::new(2)), now) {
                    Ok(mut conn) => {
                        let mut checker = EventChecker::new(conn.config());
                        drain(&mut conn, &mut checker);
                        conn.handle_read(&after[leftover_len..], now);
                        drain(&mut conn, &mut checker);
                    }
                    Err(error) => assert!(matches!(error, HandshakeError::ExtensionNotImplemented(_))),
                }
            }
            ClientOutcome::Error(HandshakeError::Rejected { status, body, .. }) => {
                assert_ne!(status.as_u16(), 101);
                assert!(
                    body.len() <= MAX_REJECTION_BODY,
                    "rejection body of {} bytes",
                    body.len()
                );
            }
            ClientOutcome::Error(error) => {
                assert!(
                    !matches!(error, HandshakeError::InvalidState(_)),
                    "misuse reported for peer input: {error:?}"
                );
            }
            ClientOutcome::Incomplete(_) => unreachable!(),
        }
    }
}
