//! Unit tests of the connection, named after the RFC sections they check.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::close::InvalidClose;
use crate::frame::{RSV1, RSV2};
use crate::random::SeededRandom;
use std::time::Duration;

fn now() -> Instant {
    // One fixed origin per test run; only differences matter.
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Encodes a frame the way a peer would send it.
fn frame(opcode: u8, fin: bool, rsv: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | rsv | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n @ 126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mut body = payload.to_vec();
    if let Some(key) = mask {
        out.extend_from_slice(&key);
        crate::mask::apply_mask_bytewise(&mut body, key);
    }
    out.extend_from_slice(&body);
    out
}

/// A frame from a client (masked).
fn cf(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame(opcode, fin, 0, Some([0x12, 0x34, 0x56, 0x78]), payload)
}

fn server() -> Connection {
    Connection::server(Config::default(), now())
}

fn server_with(config: Config) -> Connection {
    Connection::server(config, now())
}

fn client() -> Connection {
    Connection::client(Config::default(), Box::new(SeededRandom::new(7)), now())
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn transmitted(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Everything `transmit_slices` offers, concatenated; nothing is consumed.
fn offered(conn: &Connection) -> Vec<u8> {
    let mut slices = [IoSlice::new(&[]); 16];
    let n = conn.transmit_slices(&mut slices);
    slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
}

/// Feeds `bytes` to a server and returns the close code it failed with.
fn server_fails_with(config: Config, bytes: &[u8]) -> (CloseCode, ProtocolError) {
    let mut conn = server_with(config);
    conn.handle_read(bytes, now());
    let closed = events(&mut conn).into_iter().find_map(|e| match e {
        Event::Closed(c) => Some(c),
        _ => None,
    });
    let closed = closed.expect("connection should have failed");
    let CloseCause::Protocol(error) = closed.cause else {
        panic!("not a protocol error: {closed:?}")
    };
    // The close frame we sent carries the same code.
    let out = transmitted(&mut conn);
    assert_eq!(out[0], 0x88, "a close frame is sent");
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), closed.code.as_u16());
    assert!(
        conn.should_close_transport(),
        "the server closes the transport after failing"
    );
    assert_eq!(conn.state(), State::Closed);
    (closed.code, error)
}

fn text(s: &str) -> Event {
    Event::Message(Message::Text(s.into()))
}

mod rfc6455_5_1_masking {
    use super::*;

    #[test]
    fn server_rejects_unmasked_frame() {
        let (code, err) = server_fails_with(Config::default(), &frame(1, true, 0, None, b"hi"));
        assert_eq!((code, err), (CloseCode::PROTOCOL_ERROR, ProtocolError::UnmaskedFrame));
    }

    #[test]
    fn client_rejects_masked_frame() {
        let mut conn = client();
        conn.handle_read(&cf(1, true, b"hi"), now());
        let ev = events(&mut conn);
        assert!(matches!(
            &ev[0],
            Event::Closed(Closed {
                cause: CloseCause::Protocol(ProtocolError::MaskedFrame),
                ..
            })
        ));
        // The client waits for the server to close the transport, bounded by the close timeout.
        assert!(!conn.should_close_transport());
        let deadline = conn.poll_timeout().unwrap();
        conn.handle_timeout(deadline);
        assert!(conn.should_close_transport());
    }

    #[test]
    fn client_masks_and_server_does_not() {
        let mut c = client();
        c.send_text("Hello").unwrap();
        let out = transmitted(&mut c);
        assert_eq!(out[1] & 0x80, 0x80);
        let mut s = server();
        s.handle_read(&out, now());
        assert_eq!(events(&mut s), vec![text("Hello")]);
        s.send_text("Hello").unwrap();
        assert_eq!(transmitted(&mut s), [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
    }
}

mod rfc6455_5_2_base_framing {
    use super::*;

    #[test]
    fn reserved_opcode_fails_1002() {
        let (code, err) = server_fails_with(Config::default(), &cf(0x3, true, b""));
        assert_eq!(
            (code, err),
            (CloseCode::PROTOCOL_ERROR, ProtocolError::ReservedOpcode(3))
        );
        let (_, err) = server_fails_with(Config::default(), &cf(0xb, true, b""));
        assert_eq!(err, ProtocolError::ReservedOpcode(0xb));
    }

    #[test]
    fn rsv_bits_without_extension_fail_1002() {
        for rsv in [RSV1, RSV2, crate::frame::RSV3] {
            let bytes = frame(1, true, rsv, Some([1, 2, 3, 4]), b"x");
            let (code, err) = server_fails_with(Config::default(), &bytes);
            assert_eq!(
                (code, err),
                (CloseCode::PROTOCOL_ERROR, ProtocolError::ReservedBits(rsv))
            );
        }
    }

    #[test]
    fn length_with_top_bit_fails_1002() {
        let mut bytes = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let (code, err) = server_fails_with(Config::default(), &bytes);
        assert_eq!((code, err), (CloseCode::PROTOCOL_ERROR, ProtocolError::InvalidLength));
    }

    #[test]
    fn length_2_pow_63_minus_1_fails_1009_without_allocating() {
        let mut bytes = vec![0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let (code, err) = server_fails_with(Config::default(), &bytes);
        assert_eq!(code, CloseCode::MESSAGE_TOO_BIG);
        assert!(matches!(err, ProtocolError::FrameTooLarge { size, .. } if size == u64::MAX >> 1));
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_events() {
        let mut stream = cf(1, false, "κό".as_bytes());
        stream.extend(cf(9, true, b"ping"));
        stream.extend(cf(0, true, "σμε".as_bytes()));
        stream.extend(cf(2, true, &[7; 300]));
        for cut in 0..stream.len() {
            let mut conn = server();
            conn.handle_read(&stream[..cut], now());
            conn.handle_read(&stream[cut..], now());
            assert_eq!(
                events(&mut conn),
                vec![
                    Event::Ping(Bytes::from_static(b"ping")),
                    text("κόσμε"),
                    Event::Message(Message::Binary(vec![7; 300].into()))
                ],
                "cut at {cut}"
            );
        }
    }
}

mod rfc6455_5_4_fragmentation {
    use super::*;

    #[test]
    fn fragments_are_reassembled() {
        let mut conn = server();
        let mut bytes = cf(1, false, b"Hel");
        bytes.extend(cf(0, false, b""));
        bytes.extend(cf(0, true, b"lo"));
        conn.handle_read(&bytes, now());
        assert_eq!(events(&mut conn), vec![text("Hello")]);
    }

    #[test]
    fn continuation_without_message_fails_1002() {
        let (code, err) = server_fails_with(Config::default(), &cf(0, true, b"x"));
        assert_eq!(
            (code, err),
            (CloseCode::PROTOCOL_ERROR, ProtocolError::UnexpectedContinuation)
        );
    }

    #[test]
    fn new_message_inside_fragmented_one_fails_1002() {
        let mut bytes = cf(1, false, b"a");
        bytes.extend(cf(2, true, b"b"));
        let (code, err) = server_fails_with(Config::default(), &bytes);
        assert_eq!(
            (code, err),
            (CloseCode::PROTOCOL_ERROR, ProtocolError::ExpectedContinuation)
        );
    }

    #[test]
    fn control_frames_between_fragments() {
        let mut conn = server();
        let mut bytes = cf(2, false, b"a");
        bytes.extend(cf(9, true, b"p"));
        bytes.extend(cf(0xa, true, b"q"));
        bytes.extend(cf(0, true, b"b"));
        conn.handle_read(&bytes, now());
        assert_eq!(
            events(&mut conn),
            vec![
                Event::Ping(Bytes::from_static(b"p")),
                Event::Pong(Bytes::from_static(b"q")),
                Event::Message(Message::Binary(Bytes::from_static(b"ab")))
            ]
        );
        assert_eq!(transmitted(&mut conn), [0x8a, 0x01, b'p']);
    }

    #[test]
    fn sending_fragments() {
        let mut conn = server();
        conn.send_fragment(DataKind::Text, &[0xe2, 0x82], false).unwrap();
        // Another message may not start while this one is open; a ping may.
        assert_eq!(conn.send_text("x"), Err(SendError::FragmentOrder));
        assert_eq!(
            conn.send_fragment(DataKind::Binary, b"x", true),
            Err(SendError::FragmentOrder)
        );
        conn.ping(b"").unwrap();
        conn.send_fragment(DataKind::Text, &[0xac], true).unwrap();
        assert_eq!(
            transmitted(&mut conn),
            [0x01, 0x02, 0xe2, 0x82, 0x89, 0x00, 0x80, 0x01, 0xac]
        );
        // Invalid UTF-8 is refused before anything is queued.
        assert_eq!(
            conn.send_fragment(DataKind::Text, &[0xff], true),
            Err(SendError::InvalidUtf8)
        );
        assert_eq!(
            conn.send_fragment(DataKind::Text, &[0xe2], true),
            Err(SendError::InvalidUtf8)
        );
        assert!(transmitted(&mut conn).is_empty());
    }

    /// A refused text fragment leaves the open message as it was: the
    /// carried part of a code point is still owed (fuzz: pair_ops).
    #[test]
    fn refused_fragment_leaves_the_message_unchanged() {
        let mut conn = server();
        conn.send_fragment(DataKind::Text, &[0xe3], false).unwrap();
        assert_eq!(
            conn.send_fragment(DataKind::Text, &[], true),
            Err(SendError::InvalidUtf8)
        );
        assert_eq!(
            conn.send_fragment(DataKind::Text, &[0x00], true),
            Err(SendError::InvalidUtf8)
        );
        let mut conn = server();
        conn.send_fragment(DataKind::Text, b"a\xe2", false).unwrap();
        assert_eq!(
            conn.send_fragment(DataKind::Text, &[0x82, 0xac, 0xff], false),
            Err(SendError::InvalidUtf8)
        );
        assert_eq!(
            conn.send_fragment(DataKind::Text, b"b", true),
            Err(SendError::InvalidUtf8)
        );
        conn.send_fragment(DataKind::Text, &[0x82, 0xac], true).unwrap();
    }

    #[test]
    fn automatic_fragmentation() {
        let mut config = Config::default();
        config.max_send_frame_size = Some(2);
        let mut conn = server_with(config);
        conn.send_binary(b"abcde").unwrap();
        assert_eq!(
            transmitted(&mut conn),
            [0x02, 2, b'a', b'b', 0x00, 2, b'c', b'd', 0x80, 1, b'e']
        );
    }

    /// A server's short messages sent by reference (`send_ref`, the lent
    /// echo's path) are split at the frame limit too, whatever the limit
    /// and the length around the short path's 125 bytes.
    #[test]
    fn short_messages_by_reference_respect_the_frame_limit() {
        for max in [
            None,
            Some(0),
            Some(1),
            Some(2),
            Some(20),
            Some(124),
            Some(125),
            Some(126),
            Some(200),
        ] {
            let mut config = Config::default();
            config.max_send_frame_size = max;
            for len in 0..=130usize {
                let mut conn = server_with(config.clone());
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                conn.send_ref(MessageRef::Binary(&payload), SendOptions::default())
                    .unwrap();
                let piece = match max {
                    Some(max) if max > 0 && len > max => max,
                    _ => len.max(1),
                };
                let mut expected = Vec::new();
                let pieces: Vec<&[u8]> = if len == 0 {
                    vec![&[][..]]
                } else {
                    payload.chunks(piece).collect()
                };
                for (i, chunk) in pieces.iter().enumerate() {
                    let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
                    let opcode = if i == 0 { 0x02 } else { 0x00 };
                    expected.push(fin | opcode);
                    if chunk.len() < 126 {
                        expected.push(chunk.len() as u8);
                    } else {
                        expected.push(126);
                        expected.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                    }
                    expected.extend_from_slice(chunk);
                }
                assert_eq!(transmitted(&mut conn), expected, "max {max:?}, len {len}");
            }
        }
    }
}

mod rfc6455_5_5_control_frames {
    use super::*;

    #[test]
    fn control_frame_over_125_bytes_fails_1002() {
        let (code, err) = server_fails_with(Config::default(), &cf(9, true, &[0; 126]));
        assert_eq!(
            (code, err),
            (CloseCode::PROTOCOL_ERROR, ProtocolError::ControlFrameTooLong)
        );
    }

    #[test]
    fn fragmented_control_frame_fails_1002() {
        let (code, err) = server_fails_with(Config::default(), &cf(9, false, b""));
        assert_eq!(
            (code, err),
            (CloseCode::PROTOCOL_ERROR, ProtocolError::FragmentedControlFrame)
        );
    }

    #[test]
    fn rsv_on_control_frame_fails_1002() {
        let bytes = frame(9, true, RSV1, Some([0; 4]), b"");
        assert_eq!(
            server_fails_with(Config::default(), &bytes).1,
            ProtocolError::ReservedBits(RSV1)
        );
    }

    #[test]
    fn rfc6455_5_5_2_ping_answered_with_same_payload() {
        let mut conn = server();
        conn.handle_read(&cf(9, true, &[0xfe; 125]), now());
        assert_eq!(events(&mut conn).len(), 1);
        let out = transmitted(&mut conn);
        assert_eq!(&out[..2], &[0x8a, 125]);
        assert_eq!(&out[2..], &[0xfe; 125]);
    }

    #[test]
    fn auto_pong_can_be_turned_off() {
        let mut config = Config::default();
        config.auto_pong = false;
        let mut conn = server_with(config);
        conn.handle_read(&cf(9, true, b"x"), now());
        assert_eq!(events(&mut conn), vec![Event::Ping(Bytes::from_static(b"x"))]);
        assert!(transmitted(&mut conn).is_empty());
        conn.pong(b"x").unwrap();
        assert_eq!(transmitted(&mut conn), [0x8a, 1, b'x']);
    }

    #[test]
    fn sending_oversized_control_frame_is_refused() {
        let mut conn = server();
        assert_eq!(conn.ping(&[0; 126]), Err(SendError::ControlFrameTooLong(126)));
    }
}

mod rfc6455_5_5_1_close {
    use super::*;

    #[test]
    fn peer_close_is_answered_with_its_code_and_reason() {
        let mut conn = server();
        conn.handle_read(&cf(8, true, &[0x0f, 0xa0, b'o', b'k']), now());
        let ev = events(&mut conn);
        assert_eq!(
            ev,
            vec![Event::Closed(Closed {
                code: CloseCode::new(4000),
                reason: "ok".into(),
                cause: CloseCause::Remote
            })]
        );
        assert_eq!(transmitted(&mut conn), [0x88, 4, 0x0f, 0xa0, b'o', b'k']);
        assert!(conn.should_close_transport());
        assert_eq!(conn.send_text("late"), Err(SendError::Closed));
    }

    #[test]
    fn empty_close_is_reported_as_1005_and_answered_with_1000() {
        let mut conn = server();
        conn.handle_read(&cf(8, true, b""), now());
        assert!(matches!(
            &events(&mut conn)[0],
            Event::Closed(Closed {
                code: CloseCode::NO_STATUS,
                ..
            })
        ));
        assert_eq!(transmitted(&mut conn), [0x88, 2, 0x03, 0xe8]);
    }

    #[test]
    fn a_123_byte_reason_is_echoed_whole() {
        let reason = "é".repeat(61) + "x";
        assert_eq!(reason.len(), 123);
        let mut payload = vec![0x03, 0xe9];
        payload.extend_from_slice(reason.as_bytes());
        let mut conn = client();
        conn.handle_read(&frame(8, true, 0, None, &payload), now());
        assert_eq!(events(&mut conn).len(), 1);
        assert_eq!(conn.closed().map(|c| c.reason.as_str()), Some(reason.as_str()));
        let sent = transmitted(&mut conn);
        // A masked client frame: 2 header bytes, the key, 125 payload bytes.
        assert_eq!(&sent[..2], &[0x88, 0x80 | 125]);
        let key = [sent[2], sent[3], sent[4], sent[5]];
        let unmasked: Vec<u8> = sent[6..].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        assert_eq!(unmasked, payload);
    }

    #[test]
    fn close_reply_of_the_applications_choice() {
        let mut config = Config::default();
        config.close_reply = CloseReply::with(CloseCode::GOING_AWAY, "bye").unwrap();
        let mut conn = server_with(config);
        conn.handle_read(&cf(8, true, &[0x0f, 0xa0, b'o', b'k']), now());
        assert_eq!(events(&mut conn).len(), 1);
        // The peer's code and reason are reported; ours are sent.
        assert_eq!(
            conn.closed(),
            Some(&Closed {
                code: CloseCode::new(4000),
                reason: "ok".into(),
                cause: CloseCause::Remote
            })
        );
        assert_eq!(transmitted(&mut conn), [0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']);
    }

    #[test]
    fn close_reply_refuses_what_may_not_be_sent() {
        assert_eq!(
            CloseReply::with(CloseCode::NO_STATUS, ""),
            Err(InvalidClose::Code(CloseCode::NO_STATUS))
        );
        assert_eq!(
            CloseReply::with(CloseCode::NORMAL, "x".repeat(124)),
            Err(InvalidClose::ReasonTooLong(124))
        );
        // Built by hand past the check: 1000 instead, the reason cut.
        let mut config = Config::default();
        config.close_reply = CloseReply::Frame(CloseFrame {
            code: CloseCode::ABNORMAL,
            reason: "y".repeat(200),
        });
        let mut conn = server_with(config);
        conn.handle_read(&cf(8, true, &[0x0f, 0xa0]), now());
        assert_eq!(events(&mut conn).len(), 1);
        let sent = transmitted(&mut conn);
        assert_eq!(&sent[..4], &[0x88, 125, 0x03, 0xe8]);
        assert_eq!(sent[4..], [b'y'; 123]);
    }

    #[test]
    fn empty_close_is_answered_with_1000_even_with_a_reply_of_echo() {
        let mut config = Config::default();
        config.close_reply = CloseReply::Echo;
        let mut conn = server_with(config);
        conn.handle_read(&cf(8, true, b""), now());
        assert_eq!(events(&mut conn).len(), 1);
        assert_eq!(transmitted(&mut conn), [0x88, 2, 0x03, 0xe8]);
    }

    #[test]
    fn invalid_close_payloads_fail_1002_or_1007() {
        assert_eq!(
            server_fails_with(Config::default(), &cf(8, true, &[3])).0,
            CloseCode::PROTOCOL_ERROR
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let (c, err) = server_fails_with(Config::default(), &cf(8, true, &code.to_be_bytes()));
            assert_eq!(
                (c, err),
                (CloseCode::PROTOCOL_ERROR, ProtocolError::InvalidCloseCode(code))
            );
        }
        let (code, _) = server_fails_with(Config::default(), &cf(8, true, &[0x03, 0xe8, 0xff]));
        assert_eq!(code, CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn locally_started_close() {
        let mut conn = server();
        conn.send_text("bye").unwrap();
        assert_eq!(
            conn.close(CloseCode::ABNORMAL, "", now()),
            Err(SendError::InvalidClose(InvalidClose::Code(CloseCode::ABNORMAL)))
        );
        conn.close(CloseCode::GOING_AWAY, "shutdown", now()).unwrap();
        assert_eq!(conn.state(), State::Closing);
        assert_eq!(conn.send_text("late"), Err(SendError::Closed));
        let out = transmitted(&mut conn);
        assert_eq!(&out[5..9], &[0x88, 10, 0x03, 0xe9]);
        // Messages that arrive before the peer's answer are still delivered;
        // pings are not answered any more.
        let mut bytes = cf(1, true, b"still here");
        bytes.extend(cf(9, true, b""));
        bytes.extend(cf(8, true, &[0x03, 0xe9]));
        bytes.extend(cf(1, true, b"after close"));
        conn.handle_read(&bytes, now());
        let ev = events(&mut conn);
        assert_eq!(ev[0], text("still here"));
        assert_eq!(
            ev[2],
            Event::Closed(Closed {
                code: CloseCode::GOING_AWAY,
                reason: String::new(),
                cause: CloseCause::Local
            })
        );
        assert_eq!(ev.len(), 3);
        assert!(transmitted(&mut conn).is_empty());
        assert!(conn.should_close_transport());
    }

    #[test]
    fn close_timeout_when_peer_never_answers() {
        let mut conn = server();
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        assert!(!transmitted(&mut conn).is_empty());
        let deadline = conn.poll_timeout().unwrap();
        assert_eq!(deadline, now() + Config::default().close_timeout);
        conn.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(conn.state(), State::Closing);
        conn.handle_timeout(deadline);
        assert!(matches!(
            &events(&mut conn)[0],
            Event::Closed(Closed {
                code: CloseCode::ABNORMAL,
                cause: CloseCause::CloseTimeout,
                ..
            })
        ));
        assert!(conn.should_close_transport());
        assert_eq!(conn.poll_timeout(), None);
    }

    #[test]
    fn closing_twice_while_closing_is_ok_and_sends_nothing() {
        let mut conn = server();
        conn.close(CloseCode::GOING_AWAY, "first", now()).unwrap();
        let deadline = conn.poll_timeout();
        assert!(!transmitted(&mut conn).is_empty());
        assert_eq!(
            conn.close(CloseCode::NORMAL, "second", now() + Duration::from_secs(1)),
            Ok(())
        );
        assert_eq!(conn.state(), State::Closing);
        assert!(transmitted(&mut conn).is_empty());
        assert_eq!(conn.pending_transmit(), 0);
        // The first close's deadline stands.
        assert_eq!(conn.poll_timeout(), deadline);
        // The peer's answer completes the first close, with its code.
        conn.handle_read(&cf(8, true, &[0x03, 0xe9]), now());
        let ev = events(&mut conn);
        assert_eq!(
            ev,
            vec![Event::Closed(Closed {
                code: CloseCode::GOING_AWAY,
                reason: String::new(),
                cause: CloseCause::Local
            })]
        );
    }

    #[test]
    fn closing_after_closed_is_ok_and_sends_nothing() {
        let mut conn = server();
        conn.handle_read(&cf(8, true, &[0x03, 0xe8, b'b', b'y', b'e']), now());
        assert_eq!(events(&mut conn).len(), 1);
        let before = conn.closed().cloned();
        assert!(before.is_some());
        assert_eq!(transmitted(&mut conn), [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);
        assert_eq!(conn.close(CloseCode::GOING_AWAY, "again", now()), Ok(()));
        assert!(transmitted(&mut conn).is_empty());
        assert_eq!(conn.state(), State::Closed);
        assert_eq!(conn.closed().cloned(), before);
        // No second Closed event.
        assert_eq!(conn.poll_event(), None);
    }

    #[test]
    fn closing_twice_still_checks_the_code_and_reason() {
        let mut conn = server();
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        assert_eq!(
            conn.close(CloseCode::ABNORMAL, "", now()),
            Err(SendError::InvalidClose(InvalidClose::Code(CloseCode::ABNORMAL)))
        );
        assert_eq!(
            conn.close(CloseCode::NORMAL, &"x".repeat(124), now()),
            Err(SendError::InvalidClose(InvalidClose::ReasonTooLong(124)))
        );
    }

    #[test]
    fn reason_is_limited_to_123_bytes() {
        let mut conn = server();
        assert_eq!(
            conn.close(CloseCode::NORMAL, &"x".repeat(124), now()),
            Err(SendError::InvalidClose(InvalidClose::ReasonTooLong(124)))
        );
        conn.close(CloseCode::NORMAL, &"x".repeat(123), now()).unwrap();
        assert_eq!(transmitted(&mut conn).len(), 2 + 125);
    }
}

/// `Connection::closed` and `Closed::is_clean`: how the connection ended,
/// kept by the core (RFC 6455 section 7.1.4 and 7.1.5).
mod rfc6455_7_1_4_closed_state {
    use super::*;

    fn closed_event(conn: &mut Connection) -> Closed {
        events(conn)
            .into_iter()
            .find_map(|e| match e {
                Event::Closed(c) => Some(c),
                _ => None,
            })
            .expect("a Closed event")
    }

    #[test]
    fn closed_is_none_while_open_and_closing() {
        let mut conn = server();
        assert_eq!(conn.closed(), None);
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        assert_eq!(conn.closed(), None);
    }

    #[test]
    fn closed_is_set_with_the_state_before_the_event_is_polled() {
        let mut conn = server();
        let mut bytes = cf(1, true, b"before");
        bytes.extend(cf(8, true, &[0x03, 0xe8]));
        conn.handle_read(&bytes, now());
        // The message comes first; the end is known once the close frame
        // is parsed, and `closed()` then matches the event that follows.
        assert_eq!(conn.poll_event(), Some(text("before")));
        assert_eq!(conn.closed(), None);
        let event = conn.poll_event();
        let Some(Event::Closed(closed)) = event else {
            panic!("expected Closed, got {event:?}")
        };
        assert_eq!(conn.closed(), Some(&closed));
        assert_eq!(conn.state(), State::Closed);
    }

    #[test]
    fn closed_matches_the_event_for_every_cause() {
        // Remote: the peer started the handshake.
        let mut conn = server();
        conn.handle_read(&cf(8, true, &[0x03, 0xe8]), now());
        let event = closed_event(&mut conn);
        assert_eq!(conn.closed(), Some(&event));
        assert!(event.is_clean());

        // Local: we started it and the peer answered.
        let mut conn = server();
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        conn.handle_read(&cf(8, true, &[0x03, 0xe8]), now());
        let event = closed_event(&mut conn);
        assert_eq!(event.cause, CloseCause::Local);
        assert_eq!(conn.closed(), Some(&event));
        assert!(event.is_clean());

        // Protocol error.
        let mut conn = server();
        conn.handle_read(&frame(1, true, 0, None, b"unmasked"), now());
        let event = closed_event(&mut conn);
        assert!(matches!(
            event.cause,
            CloseCause::Protocol(ProtocolError::UnmaskedFrame)
        ));
        assert_eq!(conn.closed(), Some(&event));
        assert!(!event.is_clean());

        // Abnormal: EOF without a close frame.
        let mut conn = server();
        conn.handle_eof(now());
        let event = closed_event(&mut conn);
        assert_eq!(event.cause, CloseCause::Abnormal);
        assert_eq!(conn.closed(), Some(&event));
        assert!(!event.is_clean());

        // Close timeout.
        let mut conn = server();
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        conn.handle_timeout(now() + Config::default().close_timeout);
        let event = closed_event(&mut conn);
        assert_eq!(event.cause, CloseCause::CloseTimeout);
        assert_eq!(conn.closed(), Some(&event));
        assert!(!event.is_clean());

        // Idle timeout.
        let mut config = Config::default();
        config.idle_timeout = Some(Duration::from_secs(5));
        config.ping_interval = None;
        let mut conn = server_with(config);
        conn.handle_timeout(now() + Duration::from_secs(5));
        let event = closed_event(&mut conn);
        assert_eq!(event.cause, CloseCause::IdleTimeout);
        assert_eq!(conn.closed(), Some(&event));
        assert!(!event.is_clean());
    }

    #[test]
    fn a_clean_close_may_carry_any_code() {
        let mut conn = server();
        conn.handle_read(&cf(8, true, &[0x0f, 0xa0]), now());
        let event = closed_event(&mut conn);
        assert_eq!(event.code, CloseCode::new(4000));
        assert!(event.is_clean());
    }
}

mod rfc6455_7_1_5_abnormal_closure {
    use super::*;

    #[test]
    fn eof_without_close_is_1006() {
        let mut conn = client();
        conn.handle_eof(now());
        assert_eq!(
            events(&mut conn),
            vec![Event::Closed(Closed {
                code: CloseCode::ABNORMAL,
                reason: String::new(),
                cause: CloseCause::Abnormal
            })]
        );
        assert!(conn.should_close_transport());
    }

    #[test]
    fn codes_1005_1006_1015_are_never_sent() {
        let mut conn = server();
        for code in [CloseCode::NO_STATUS, CloseCode::ABNORMAL, CloseCode::TLS_HANDSHAKE] {
            assert!(conn.close(code, "", now()).is_err());
        }
        assert!(transmitted(&mut conn).is_empty());
    }
}

mod rfc6455_8_1_utf8 {
    use super::*;

    #[test]
    fn invalid_utf8_fails_1007() {
        let (code, err) = server_fails_with(Config::default(), &cf(1, true, &[b'a', 0xff]));
        assert_eq!((code, err), (CloseCode::INVALID_PAYLOAD, ProtocolError::InvalidUtf8));
    }

    #[test]
    fn code_point_split_across_fragments() {
        let mut conn = server();
        let euro = "€".as_bytes();
        let mut bytes = cf(1, false, &euro[..1]);
        bytes.extend(cf(0, false, &euro[1..2]));
        bytes.extend(cf(0, true, &euro[2..]));
        conn.handle_read(&bytes, now());
        assert_eq!(events(&mut conn), vec![text("€")]);
    }

    #[test]
    fn fails_fast_before_the_message_ends() {
        // The first fragment already holds an impossible sequence: fail
        // without waiting for the rest of the message.
        let mut conn = server();
        conn.handle_read(&cf(1, false, &[0xce, 0xba, 0xf4, 0x90]), now());
        assert!(matches!(
            &events(&mut conn)[0],
            Event::Closed(Closed {
                code: CloseCode::INVALID_PAYLOAD,
                ..
            })
        ));
        // Likewise inside one frame whose payload is still arriving.
        let mut conn = server();
        let bytes = cf(1, true, &[b'a', 0xed, 0xa0, 0x80, b'b', b'c', b'd']);
        conn.handle_read(&bytes[..9], now());
        assert!(matches!(
            &events(&mut conn)[0],
            Event::Closed(Closed {
                code: CloseCode::INVALID_PAYLOAD,
                ..
            })
        ));
    }

    #[test]
    fn incomplete_code_point_at_message_end_fails_1007() {
        let mut bytes = cf(1, false, b"a");
        bytes.extend(cf(0, true, &[0xe2, 0x82]));
        assert_eq!(
            server_fails_with(Config::default(), &bytes).0,
            CloseCode::INVALID_PAYLOAD
        );
    }
}

mod limits_1009 {
    use super::*;

    #[test]
    fn frame_over_max_frame_size() {
        let mut config = Config::default();
        config.max_frame_size = 10;
        let (code, err) = server_fails_with(config, &cf(2, true, &[0; 11]));
        assert_eq!(
            (code, err),
            (
                CloseCode::MESSAGE_TOO_BIG,
                ProtocolError::FrameTooLarge { size: 11, limit: 10 }
            )
        );
    }

    #[test]
    fn message_grown_past_limit_by_small_fragments() {
        let mut config = Config::default();
        config.max_message_size = 100;
        let mut conn = server_with(config);
        let mut failed = false;
        for i in 0..200 {
            conn.handle_read(&cf(if i == 0 { 2 } else { 0 }, false, &[1]), now());
            let ev = events(&mut conn);
            if conn.state() == State::Closed {
                assert_eq!(i, 100, "fails on the first byte over the limit");
                assert!(matches!(
                    &ev[0],
                    Event::Closed(Closed {
                        code: CloseCode::MESSAGE_TOO_BIG,
                        ..
                    })
                ));
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn limits_are_inclusive() {
        let mut config = Config::default();
        config.max_frame_size = 10;
        config.max_message_size = 10;
        let mut conn = server_with(config);
        conn.handle_read(&cf(2, true, &[0; 10]), now());
        assert_eq!(events(&mut conn).len(), 1);
        assert_eq!(conn.state(), State::Open);
    }
}

mod streaming {
    use super::*;

    fn streaming_server(threshold: usize) -> Connection {
        let mut config = Config::default();
        config.stream_threshold = Some(threshold);
        server_with(config)
    }

    #[test]
    fn large_frame_delivered_as_bytes_arrive() {
        let mut conn = streaming_server(4);
        let bytes = cf(2, true, b"0123456789");
        // Header (2 + 4 mask) and the first 3 payload bytes: under the threshold.
        conn.handle_read(&bytes[..9], now());
        assert_eq!(events(&mut conn), vec![]);
        conn.handle_read(&bytes[9..12], now());
        let ev = events(&mut conn);
        assert_eq!(
            ev,
            vec![Event::Fragment(Fragment::new(
                DataKind::Binary,
                Bytes::from_static(b"012345"),
                true,
                false
            ))]
        );
        conn.handle_read(&bytes[12..], now());
        assert_eq!(
            events(&mut conn),
            vec![Event::Fragment(Fragment::new(
                DataKind::Binary,
                Bytes::from_static(b"6789"),
                false,
                true
            ))]
        );
    }

    #[test]
    fn small_messages_stay_whole() {
        let mut conn = streaming_server(100);
        conn.handle_read(&cf(1, true, b"short"), now());
        assert_eq!(events(&mut conn), vec![text("short")]);
    }

    #[test]
    fn text_pieces_never_split_a_code_point() {
        let mut conn = streaming_server(0);
        let euro = "a€b".as_bytes();
        let bytes = cf(1, true, euro);
        let mut pieces = Vec::new();
        for b in &bytes {
            conn.handle_read(std::slice::from_ref(b), now());
            for e in events(&mut conn) {
                let Event::Fragment(f) = e else { panic!("{e:?}") };
                pieces.push((f.text().unwrap().to_owned(), f.first, f.last));
            }
        }
        let expected = [("a", true, false), ("€", false, false), ("b", false, true)];
        assert_eq!(pieces, expected.map(|(t, f, l)| (t.to_owned(), f, l)));
    }

    #[test]
    fn streamed_message_still_limited() {
        let mut config = Config::default();
        config.stream_threshold = Some(0);
        config.max_message_size = 5;
        let mut conn = server_with(config);
        conn.handle_read(&cf(2, false, b"abc"), now());
        conn.handle_read(&cf(0, true, b"def"), now());
        let ev = events(&mut conn);
        assert!(matches!(
            ev.last(),
            Some(Event::Closed(Closed {
                code: CloseCode::MESSAGE_TOO_BIG,
                ..
            }))
        ));
    }
}

mod timers {
    use super::*;

    #[test]
    fn keepalive_ping_after_interval_without_traffic() {
        let mut config = Config::default();
        config.ping_interval = Some(Duration::from_secs(120));
        let mut conn = server_with(config);
        assert_eq!(conn.poll_timeout(), Some(now() + Duration::from_secs(120)));
        // Traffic pushes the ping back.
        let later = now() + Duration::from_secs(60);
        conn.handle_read(&cf(0xa, true, b""), later);
        assert_eq!(conn.poll_timeout(), Some(later + Duration::from_secs(120)));
        conn.handle_timeout(later + Duration::from_secs(120));
        assert_eq!(transmitted(&mut conn), [0x89, 0]);
        assert_eq!(conn.poll_timeout(), Some(later + Duration::from_secs(240)));
    }

    #[test]
    fn idle_timeout_fails_the_connection() {
        let mut config = Config::default();
        config.ping_interval = Some(Duration::from_secs(10));
        config.idle_timeout = Some(Duration::from_secs(20));
        let mut conn = server_with(config);
        let t1 = conn.poll_timeout().unwrap();
        conn.handle_timeout(t1);
        assert_eq!(transmitted(&mut conn), [0x89, 0]);
        let t2 = conn.poll_timeout().unwrap();
        assert_eq!(t2, now() + Duration::from_secs(20));
        conn.handle_timeout(t2);
        assert_eq!(
            events(&mut conn),
            vec![Event::Closed(Closed {
                code: CloseCode::ABNORMAL,
                reason: String::new(),
                cause: CloseCause::IdleTimeout
            })]
        );
        assert_eq!(&transmitted(&mut conn)[..4], &[0x88, 14, 0x03, 0xf3]);
        assert!(conn.should_close_transport());
        assert_eq!(conn.poll_timeout(), None);
    }

    #[test]
    fn zero_ping_interval_and_idle_timeout_are_off() {
        let mut config = Config::default();
        config.ping_interval = Some(Duration::ZERO);
        config.idle_timeout = Some(Duration::ZERO);
        let mut conn = server_with(config);
        assert_eq!(conn.poll_timeout(), None);
        // Hours later nothing has been sent and the connection is open.
        conn.handle_timeout(now() + Duration::from_secs(3600));
        assert!(transmitted(&mut conn).is_empty());
        assert_eq!(conn.state(), State::Open);
        assert!(events(&mut conn).is_empty());
        conn.handle_read(&cf(0xa, true, b""), now() + Duration::from_secs(3601));
        assert_eq!(conn.poll_timeout(), None);
    }

    /// The deadline asked at every wait is the earlier of the idle and
    /// the ping deadline, whichever settings are on and whether or not
    /// our last ping is newer than the last bytes received.
    #[test]
    fn the_next_deadline_is_the_earlier_of_idle_and_ping() {
        let secs = |n| Some(Duration::from_secs(n));
        let settings = [None, Some(Duration::ZERO), secs(10), secs(30), secs(60)];
        for ping_interval in settings {
            for idle_timeout in settings {
                let mut config = Config::default();
                config.ping_interval = ping_interval;
                config.idle_timeout = idle_timeout;
                let on = |d: Option<Duration>| d.filter(|d| !d.is_zero());
                let expect = |since_received: Instant, since_ping: Instant| {
                    let idle = on(idle_timeout).map(|t| since_received + t);
                    let ping = on(ping_interval).map(|t| since_ping + t);
                    match (idle, ping) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                };
                let mut conn = server_with(config);
                assert_eq!(
                    conn.poll_timeout(),
                    expect(now(), now()),
                    "{ping_interval:?} {idle_timeout:?}"
                );
                // Bytes received later push both later.
                let t1 = now() + Duration::from_secs(5);
                conn.handle_read(&cf(0xa, true, b""), t1);
                assert_eq!(
                    conn.poll_timeout(),
                    expect(t1, t1),
                    "{ping_interval:?} {idle_timeout:?}"
                );
                // A keepalive ping of ours, newer than them: the ping
                // deadline counts from it, the idle one from the bytes.
                if let Some(interval) = on(ping_interval) {
                    let t2 = t1 + interval;
                    conn.handle_timeout(t2);
                    if conn.state() == State::Open {
                        assert_eq!(transmitted(&mut conn), [0x89, 0]);
                        assert_eq!(
                            conn.poll_timeout(),
                            expect(t1, t2),
                            "{ping_interval:?} {idle_timeout:?}"
                        );
                        // Its answer: both from the answer again.
                        let t3 = t2 + Duration::from_secs(1);
                        conn.handle_read(&cf(0xa, true, b""), t3);
                        assert_eq!(
                            conn.poll_timeout(),
                            expect(t3, t3),
                            "{ping_interval:?} {idle_timeout:?}"
                        );
                    }
                }
            }
        }
    }

    /// While `deadline_moves_later_only` holds, the next deadline is no
    /// earlier than any deadline asked before, whatever happened in
    /// between (reads of data, pings and pongs, our own sends and pings,
    /// keepalive pings at their deadline, output blocked and taken again);
    /// and it stops holding as soon as another deadline runs (output
    /// blocked, a close under way, the end of the stream).
    #[test]
    fn while_only_the_keepalive_runs_the_deadline_moves_later_only() {
        let secs = |n| Some(Duration::from_secs(n));
        let settings = [None, secs(10), secs(30)];
        // `None` (no deadline) counts as the latest.
        let key = |d: Option<Instant>| d.map_or((1, now()), |d| (0, d));
        for ping_interval in settings {
            for idle_timeout in settings {
                for send_timeout in [None, secs(5)] {
                    let mut config = Config::default();
                    config.ping_interval = ping_interval;
                    config.idle_timeout = idle_timeout;
                    config.send_timeout = send_timeout;
                    let label = format!("{ping_interval:?} {idle_timeout:?} {send_timeout:?}");
                    let mut conn = server_with(config);
                    let mut latest = conn.poll_timeout();
                    let mut t = now();
                    let check = |conn: &mut Connection, latest: &mut Option<Instant>, step: &str| {
                        let deadline = conn.poll_timeout();
                        if conn.deadline_moves_later_only() {
                            assert!(key(deadline) >= key(*latest), "{label}: {step} moved it earlier");
                        }
                        if key(deadline) > key(*latest) {
                            *latest = deadline;
                        }
                    };
                    for round in 0..6u64 {
                        t += Duration::from_secs(3 + round);
                        conn.handle_read(&cf(0x2, true, b"data"), t);
                        while conn.poll_event().is_some() {}
                        check(&mut conn, &mut latest, "a message");
                        conn.send_binary(&b"answer"[..]).unwrap();
                        check(&mut conn, &mut latest, "a send");
                        // The output blocks for a while: another deadline
                        // runs, and the shortcut must not be taken.
                        t += Duration::from_secs(1);
                        conn.handle_write_blocked(t);
                        assert!(!conn.deadline_moves_later_only(), "{label}: blocked output");
                        check(&mut conn, &mut latest, "blocked output");
                        let _ = transmitted(&mut conn);
                        conn.advance_transmit(0);
                        check(&mut conn, &mut latest, "output taken");
                        conn.ping(b"app").unwrap();
                        let _ = transmitted(&mut conn);
                        check(&mut conn, &mut latest, "our own ping");
                        t += Duration::from_secs(1);
                        conn.handle_read(&cf(0x9, true, b"p"), t);
                        while conn.poll_event().is_some() {}
                        let _ = transmitted(&mut conn);
                        check(&mut conn, &mut latest, "a ping answered");
                        // Time passes to the deadline: a keepalive ping.
                        if let Some(deadline) = conn.poll_timeout() {
                            if round % 2 == 0 && conn.state() == State::Open {
                                t = t.max(deadline);
                                conn.handle_timeout(t);
                                let _ = transmitted(&mut conn);
                                check(&mut conn, &mut latest, "the deadline");
                            }
                        }
                        if conn.state() != State::Open {
                            break;
                        }
                    }
                    if conn.state() == State::Open {
                        conn.close(CloseCode::NORMAL, "", t).unwrap();
                        assert!(!conn.deadline_moves_later_only(), "{label}: closing");
                    }
                }
            }
        }
        let mut conn = server();
        conn.handle_eof(now());
        assert!(!conn.deadline_moves_later_only(), "the end of the stream");
    }

    #[test]
    fn unanswered_keepalive_pings_once_per_interval() {
        let mut config = Config::default();
        config.ping_interval = Some(Duration::from_secs(120));
        let mut conn = server_with(config);
        conn.handle_timeout(now() + Duration::from_secs(120));
        assert_eq!(transmitted(&mut conn), [0x89, 0]);
        // Not again before a whole interval has passed since that ping.
        conn.handle_timeout(now() + Duration::from_secs(239));
        assert!(transmitted(&mut conn).is_empty());
        conn.handle_timeout(now() + Duration::from_secs(240));
        assert_eq!(transmitted(&mut conn), [0x89, 0]);
    }
}

mod extension_pipeline {
    use super::*;
    use crate::extension::DecodeError;

    /// A toy extension on RSV2 that XORs every byte with 0x55.
    struct Xor;

    impl Extension for Xor {
        fn name(&self) -> &str {
            "x-xor"
        }
        fn rsv_bits(&self) -> u8 {
            RSV2
        }
        fn encode(&mut self, _kind: DataKind, payload: &[u8]) -> Result<Option<(BytesMut, u8)>, String> {
            Ok(Some((payload.iter().map(|b| b ^ 0x55).collect(), RSV2)))
        }
        fn decode(&mut self, input: &[u8], _last: bool, out: &mut BytesMut, limit: usize) -> Result<(), DecodeError> {
            if input.len() > limit {
                return Err(DecodeError::TooLarge);
            }
            out.extend(input.iter().map(|b| b ^ 0x55));
            Ok(())
        }
    }

    #[test]
    fn messages_pass_through_the_pipeline() {
        let mut c = client().with_extensions(vec![Box::new(Xor)]);
        let mut s = server().with_extensions(vec![Box::new(Xor)]);
        assert_eq!(s.extensions().collect::<Vec<_>>(), ["x-xor"]);
        c.send_text("héllo").unwrap();
        let wire = transmitted(&mut c);
        assert_eq!(wire[0], 0x80 | RSV2 | 1);
        s.handle_read(&wire, now());
        assert_eq!(events(&mut s), vec![text("héllo")]);
        // RSV2 on a continuation frame is still a protocol error.
        let mut bytes = frame(1, false, RSV2, Some([0; 4]), b"a");
        bytes.extend(frame(0, true, RSV2, Some([0; 4]), b"b"));
        s.handle_read(&bytes, now());
        assert!(matches!(
            &events(&mut s)[0],
            Event::Closed(Closed {
                cause: CloseCause::Protocol(ProtocolError::ReservedBits(_)),
                ..
            })
        ));
    }

    #[test]
    fn decoded_size_is_limited() {
        let mut config = Config::default();
        config.max_message_size = 3;
        let mut s = server_with(config).with_extensions(vec![Box::new(Xor)]);
        s.handle_read(&frame(2, true, RSV2, Some([0; 4]), b"abcd"), now());
        assert!(matches!(
            &events(&mut s)[0],
            Event::Closed(Closed {
                code: CloseCode::MESSAGE_TOO_BIG,
                ..
            })
        ));
    }
}

mod transmit {
    use super::*;

    #[test]
    fn replies_to_a_burst_leave_in_one_chunk() {
        let mut conn = server();
        let mut bytes = Vec::new();
        for _ in 0..10 {
            bytes.extend(cf(9, true, b"p"));
        }
        conn.handle_read(&bytes, now());
        assert_eq!(events(&mut conn).len(), 10);
        let first = conn.poll_transmit().unwrap();
        assert_eq!(first.len(), 30);
        assert_eq!(conn.poll_transmit(), None);
    }

    #[test]
    fn large_server_payloads_are_not_copied() {
        let mut conn = server();
        let payload = Bytes::from(vec![9u8; ZERO_COPY_MIN]);
        conn.send_text("small").unwrap();
        conn.send(payload.clone()).unwrap();
        assert_eq!(conn.pending_transmit(), 7 + 4 + ZERO_COPY_MIN);
        assert_eq!(
            &conn.poll_transmit().unwrap()[..],
            &[0x81, 5, b's', b'm', b'a', b'l', b'l', 0x82, 126, 0x40, 0x00]
        );
        let chunk = conn.poll_transmit().unwrap();
        assert_eq!(chunk.as_ptr(), payload.as_ptr());
        assert_eq!(conn.pending_transmit(), 0);
    }

    /// A server with a small frame, a large payload and another small frame
    /// queued.
    fn server_with_mixed_output() -> (Connection, Bytes) {
        let mut conn = server();
        let payload = Bytes::from(vec![9u8; ZERO_COPY_MIN]);
        conn.send_text("small").unwrap();
        conn.send(payload.clone()).unwrap();
        conn.send_text("after").unwrap();
        (conn, payload)
    }

    #[test]
    fn slices_are_batched_and_large_payloads_offered_in_place() {
        let (conn, payload) = server_with_mixed_output();
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(conn.transmit_slices(&mut slices), 3);
        // Two frames and the big header in one slice, the payload in place,
        // the last frame.
        assert_eq!(
            &slices[0][..],
            &[0x81, 5, b's', b'm', b'a', b'l', b'l', 0x82, 126, 0x40, 0x00]
        );
        assert_eq!(slices[1].as_ptr(), payload.as_ptr());
        assert_eq!(slices[1].len(), ZERO_COPY_MIN);
        assert_eq!(&slices[2][..], &[0x81, 5, b'a', b'f', b't', b'e', b'r']);
        let total: usize = slices[..3].iter().map(|s| s.len()).sum();
        assert_eq!(total, conn.pending_transmit());
        assert_eq!(conn.transmit_chunks().count(), 3);
    }

    #[test]
    fn offering_consumes_nothing_and_advance_does() {
        let (mut conn, _) = server_with_mixed_output();
        let all = offered(&conn);
        assert_eq!(offered(&conn), all, "offering twice offers the same bytes");
        conn.advance_transmit(all.len());
        assert_eq!(conn.pending_transmit(), 0);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(conn.transmit_slices(&mut slices), 0);
        assert_eq!(conn.transmit_chunks().count(), 0);
    }

    #[test]
    fn partial_writes_at_every_split_give_the_same_bytes() {
        let (mut reference, _) = server_with_mixed_output();
        let expected = transmitted(&mut reference);
        for step in [1, 3, 7, 11, 12, 1000, ZERO_COPY_MIN + 5] {
            let (mut conn, _) = server_with_mixed_output();
            let mut out = Vec::new();
            while conn.pending_transmit() > 0 {
                let before = conn.pending_transmit();
                let next = offered(&conn);
                let n = step.min(next.len());
                out.extend_from_slice(&next[..n]);
                conn.advance_transmit(n);
                assert_eq!(conn.pending_transmit(), before - n);
            }
            assert_eq!(out, expected, "writes of {step} bytes");
        }
    }

    /// Owned chunks (for transports whose writes own their buffers) are
    /// the same bytes as the slices, shared rather than copied, and partial
    /// writes with frames queued in between come out in order.
    #[test]
    fn owned_chunks_are_the_offered_bytes_shared() {
        let (mut conn, payload) = server_with_mixed_output();
        let expected = offered(&conn);
        let chunks: Vec<Bytes> = conn.transmit_owned().collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.concat(), expected);
        assert_eq!(chunks[1].as_ptr(), payload.as_ptr(), "the payload, not a copy");
        assert_eq!(offered(&conn), expected, "nothing consumed");
        drop(chunks);

        // A transport taking 5 bytes at a time, with a frame queued between
        // two writes: every byte once, in order.
        let (mut reference, _) = server_with_mixed_output();
        reference.send_text("later").unwrap();
        let expected = transmitted(&mut reference);
        let mut out = Vec::new();
        let mut writes = 0;
        while conn.pending_transmit() > 0 {
            let chunks: Vec<Bytes> = conn.transmit_owned().collect();
            let n = 5.min(chunks[0].len());
            out.extend_from_slice(&chunks[0][..n]);
            conn.advance_transmit(n);
            writes += 1;
            if writes == 2 {
                conn.send_text("later").unwrap();
            }
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn a_short_slice_array_gets_the_front_of_the_output() {
        let (mut conn, _) = server_with_mixed_output();
        let mut one = [IoSlice::new(&[]); 1];
        assert_eq!(conn.transmit_slices(&mut one), 1);
        assert_eq!(one[0].len(), 11);
        assert_eq!(conn.transmit_slices(&mut []), 0);
        conn.advance_transmit(11);
        let mut one = [IoSlice::new(&[]); 1];
        assert_eq!(conn.transmit_slices(&mut one), 1);
        assert_eq!(one[0].len(), ZERO_COPY_MIN);
    }

    #[test]
    fn the_front_is_the_first_slice_and_says_whether_more_follow() {
        let (mut conn, _) = server_with_mixed_output();
        let mut remaining = offered(&conn);
        while !remaining.is_empty() {
            let mut one = [IoSlice::new(&[]); 1];
            assert_eq!(conn.transmit_slices(&mut one), 1);
            let (front, more) = conn.transmit_front();
            assert_eq!(front, &one[0][..]);
            assert_eq!(more, front.len() < remaining.len());
            assert_eq!(front, &remaining[..front.len()]);
            // Written in two steps: the front of a partly written chunk.
            let n = front.len();
            conn.advance_transmit(n / 2);
            conn.advance_transmit(n - n / 2);
            remaining.drain(..n);
        }
        assert_eq!(conn.transmit_front(), (&[][..], false));
        // Output after everything was written starts the buffer afresh.
        conn.send_text("again").unwrap();
        assert_eq!(
            conn.transmit_front(),
            (&[0x81, 5, b'a', b'g', b'a', b'i', b'n'][..], false)
        );
    }

    #[test]
    fn advance_past_the_end_takes_everything() {
        let (mut conn, _) = server_with_mixed_output();
        conn.advance_transmit(usize::MAX);
        assert_eq!(conn.pending_transmit(), 0);
        assert!(offered(&conn).is_empty());
        conn.advance_transmit(1);
        // Output queued afterwards is offered whole.
        conn.send_text("again").unwrap();
        assert_eq!(offered(&conn), [0x81, 5, b'a', b'g', b'a', b'i', b'n']);
    }

    #[test]
    fn output_queued_behind_a_partial_write_follows_it() {
        let mut conn = server();
        conn.send_text("first").unwrap();
        conn.advance_transmit(3);
        conn.send_text("second").unwrap();
        let mut expected = b"irst".to_vec();
        expected.extend([0x81, 6]);
        expected.extend(b"second");
        assert_eq!(offered(&conn), expected);
        // The old and the new output API read the same queue.
        assert_eq!(transmitted(&mut conn), expected);
    }

    #[test]
    fn replies_to_a_burst_are_offered_as_one_slice() {
        let mut conn = server();
        let mut bytes = Vec::new();
        for _ in 0..10 {
            bytes.extend(cf(9, true, b"p"));
        }
        conn.handle_read(&bytes, now());
        assert_eq!(events(&mut conn).len(), 10);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(conn.transmit_slices(&mut slices), 1);
        assert_eq!(slices[0].len(), 30);
    }
}

/// The linger of unwritten output once the transport is to be closed: the
/// rule the tokio adapter applied (given up at once after an idle or close
/// timeout, otherwise after the close timeout), now a core deadline.
mod linger {
    use super::*;

    fn idle_server() -> Connection {
        let mut config = Config::default();
        config.idle_timeout = Some(Duration::from_secs(20));
        server_with(config)
    }

    #[test]
    fn output_left_after_the_close_handshake_is_given_up_after_the_close_timeout() {
        let mut conn = server();
        conn.send_binary(&[1; 100]).unwrap();
        conn.handle_read(&cf(8, true, &[0x03, 0xe8]), now());
        assert_eq!(events(&mut conn).len(), 1);
        assert!(conn.should_close_transport());
        let pending = conn.pending_transmit();
        assert!(pending > 100);
        let deadline = now() + Config::default().close_timeout;
        assert_eq!(conn.poll_timeout(), Some(deadline));
        conn.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(conn.pending_transmit(), pending);
        assert!(!conn.output_abandoned());
        conn.handle_timeout(deadline);
        assert!(conn.output_abandoned());
        assert_eq!(conn.pending_transmit(), 0);
        assert!(offered(&conn).is_empty());
        assert_eq!(conn.poll_timeout(), None);
        // The end stays as it was: a clean close whose output was lost.
        assert!(conn.closed().is_some_and(Closed::is_clean));
    }

    #[test]
    fn output_written_in_time_is_not_given_up() {
        let mut conn = server();
        conn.handle_read(&cf(8, true, &[0x03, 0xe8]), now());
        events(&mut conn);
        assert!(conn.poll_timeout().is_some());
        // A partial write does not move the deadline.
        conn.advance_transmit(1);
        assert_eq!(conn.poll_timeout(), Some(now() + Config::default().close_timeout));
        conn.advance_transmit(usize::MAX);
        assert_eq!(conn.poll_timeout(), None);
        conn.handle_timeout(now() + Duration::from_secs(3600));
        assert!(!conn.output_abandoned());
    }

    #[test]
    fn nothing_pending_means_no_deadline() {
        let mut conn = server();
        conn.handle_read(&cf(8, true, &[0x03, 0xe8]), now());
        events(&mut conn);
        transmitted(&mut conn);
        assert!(conn.should_close_transport());
        assert_eq!(conn.poll_timeout(), None);
        assert!(!conn.output_abandoned());
    }

    #[test]
    fn after_an_idle_timeout_the_output_is_given_up_at_once() {
        let mut conn = idle_server();
        conn.send_binary(&[1; 100]).unwrap();
        let t = now() + Duration::from_secs(20);
        conn.handle_timeout(t);
        assert!(conn.should_close_transport());
        // One attempt to write (the peer may still read the close frame):
        // the deadline is the timeout's own time.
        assert_eq!(conn.poll_timeout(), Some(t));
        assert!(!conn.output_abandoned());
        conn.handle_timeout(t);
        assert!(conn.output_abandoned());
        assert_eq!(conn.pending_transmit(), 0);
        assert_eq!(conn.poll_timeout(), None);
    }

    #[test]
    fn after_a_close_timeout_the_output_is_given_up_at_once() {
        let mut conn = server();
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        let t = conn.poll_timeout().unwrap();
        conn.handle_timeout(t);
        assert_eq!(conn.closed().map(|c| &c.cause), Some(&CloseCause::CloseTimeout));
        assert_eq!(conn.poll_timeout(), Some(t));
        conn.handle_timeout(t);
        assert!(conn.output_abandoned());
    }

    #[test]
    fn a_client_waiting_for_the_servers_eof_lingers_for_the_close_timeout() {
        // The client answered the server's close (cause Remote); the server
        // never closes the transport, and the client's answer is unwritten.
        let mut conn = client();
        conn.handle_read(&frame(8, true, 0, None, &[0x03, 0xe8]), now());
        events(&mut conn);
        assert!(!conn.should_close_transport());
        let wait = conn.poll_timeout().unwrap();
        conn.handle_timeout(wait);
        assert!(conn.should_close_transport());
        assert_eq!(conn.closed().map(|c| &c.cause), Some(&CloseCause::Remote));
        // Not a timeout cause: the output gets the whole close timeout.
        let linger = wait + Config::default().close_timeout;
        assert_eq!(conn.poll_timeout(), Some(linger));
        conn.handle_timeout(linger);
        assert!(conn.output_abandoned());
    }

    #[test]
    fn eof_counts_from_its_own_time() {
        let mut conn = client();
        conn.handle_read(&frame(8, true, 0, None, &[0x03, 0xe8]), now());
        events(&mut conn);
        let later = now() + Duration::from_secs(3);
        conn.handle_eof(later);
        assert!(conn.should_close_transport());
        assert_eq!(conn.poll_timeout(), Some(later + Config::default().close_timeout));
    }

    #[test]
    fn a_failed_connection_lingers_from_the_read_that_failed_it() {
        let mut conn = server();
        let read_at = now() + Duration::from_secs(7);
        conn.handle_read(&frame(1, true, 0, None, b"unmasked"), read_at);
        events(&mut conn);
        assert!(conn.should_close_transport());
        assert_eq!(conn.poll_timeout(), Some(read_at + Config::default().close_timeout));
    }

    #[test]
    fn the_old_output_api_never_lingers() {
        // Bytes taken with poll_transmit are the adapter's: the core has
        // nothing unwritten and sets no deadline for them.
        let mut conn = idle_server();
        conn.send_binary(&[1; 100]).unwrap();
        conn.handle_timeout(now() + Duration::from_secs(20));
        assert!(!transmitted(&mut conn).is_empty());
        assert_eq!(conn.poll_timeout(), None);
        assert!(!conn.output_abandoned());
    }
}

mod event_order {
    use super::*;

    /// Autobahn 3.2, 4.1.3, 5.15: a message followed in the same read by a
    /// violation is handed over first, and the application's answer leaves
    /// before the close frame.
    #[test]
    fn message_before_a_violation_can_be_answered() {
        let mut conn = server();
        let mut bytes = cf(1, true, b"Hello");
        bytes.extend(frame(1, true, RSV2, Some([1, 2, 3, 4]), b"x"));
        bytes.extend(cf(9, true, b""));
        conn.handle_read(&bytes, now());
        let Some(Event::Message(message)) = conn.poll_event() else {
            panic!("message first")
        };
        conn.send(message).unwrap();
        assert!(matches!(
            conn.poll_event(),
            Some(Event::Closed(Closed {
                code: CloseCode::PROTOCOL_ERROR,
                ..
            }))
        ));
        assert_eq!(conn.poll_event(), None, "nothing after the violation is parsed");
        let out = transmitted(&mut conn);
        assert_eq!(&out[..7], &[0x81, 5, b'H', b'e', b'l', b'l', b'o']);
        assert_eq!(&out[7..11], &[0x88, out[8], 0x03, 0xea]);
    }

    /// RFC 6455 section 5.5.1: an endpoint may finish sending its current
    /// message before answering a close; here the answer to a message that
    /// came before the close is not lost.
    #[test]
    fn message_before_a_close_can_be_answered() {
        let mut conn = server();
        let mut bytes = cf(2, true, b"data");
        bytes.extend(cf(8, true, &[0x03, 0xe8]));
        conn.handle_read(&bytes, now());
        let Some(Event::Message(message)) = conn.poll_event() else {
            panic!("message first")
        };
        conn.send(message).unwrap();
        assert!(matches!(
            conn.poll_event(),
            Some(Event::Closed(Closed {
                cause: CloseCause::Remote,
                ..
            }))
        ));
        assert_eq!(
            transmitted(&mut conn),
            [0x82, 4, b'd', b'a', b't', b'a', 0x88, 2, 0x03, 0xe8]
        );
    }

    #[test]
    fn frames_before_eof_are_delivered() {
        let mut conn = client();
        conn.handle_read(&frame(1, true, 0, None, b"last"), now());
        conn.handle_eof(now());
        assert!(!conn.should_close_transport(), "the buffered message comes first");
        assert_eq!(
            events(&mut conn),
            vec![
                text("last"),
                Event::Closed(Closed {
                    code: CloseCode::ABNORMAL,
                    reason: String::new(),
                    cause: CloseCause::Abnormal
                })
            ]
        );
        assert!(conn.should_close_transport());
    }

    #[test]
    fn every_whole_frame_before_eof_is_delivered_then_1006() {
        // Three whole messages in one read, a ping, another message and
        // half a frame, then the end of input: everything whole comes out,
        // in order, before the abnormal closure.
        let mut conn = client();
        let mut input = Vec::new();
        for body in [&b"one"[..], b"two", b"three"] {
            input.extend_from_slice(&frame(1, true, 0, None, body));
        }
        input.extend_from_slice(&frame(9, true, 0, None, b"p"));
        input.extend_from_slice(&frame(2, true, 0, None, b"four"));
        input.extend_from_slice(&frame(1, true, 0, None, b"never whole")[..5]);
        conn.handle_read(&input, now());
        conn.handle_eof(now());
        assert_eq!(
            events(&mut conn),
            vec![
                text("one"),
                text("two"),
                text("three"),
                Event::Ping(Bytes::from_static(b"p")),
                Event::Message(Message::Binary(Bytes::from_static(b"four"))),
                Event::Closed(Closed {
                    code: CloseCode::ABNORMAL,
                    reason: String::new(),
                    cause: CloseCause::Abnormal
                })
            ]
        );
        assert_eq!(conn.stats().messages_received, 4);
    }

    #[test]
    fn invalid_utf8_in_a_whole_frame_fails_with_1007_after_the_messages_before_it() {
        let mut conn = client();
        let mut input = frame(1, true, 0, None, b"fine").to_vec();
        input.extend_from_slice(&frame(1, true, 0, None, &[0xff, 0xfe]));
        input.extend_from_slice(&frame(1, true, 0, None, b"not delivered"));
        conn.handle_read(&input, now());
        let got = events(&mut conn);
        assert_eq!(got[0], text("fine"));
        assert!(
            matches!(&got[1..], [Event::Closed(Closed { code, cause: CloseCause::Protocol(_), .. })] if *code == CloseCode::INVALID_PAYLOAD),
            "{got:?}"
        );
    }
}

mod idle_memory {
    use super::*;

    #[test]
    fn shrink_buffers_keeps_what_is_pending_and_drops_the_rest() {
        let mut s = server();
        // A whole message and half of the next frame.
        let mut input = cf(0x1, true, b"hello");
        let second = cf(0x2, true, &[7; 300]);
        input.extend_from_slice(&second[..100]);
        s.handle_read(&input, now());
        assert_eq!(events(&mut s), vec![text("hello")]);
        s.send_text("reply").unwrap();
        // Nothing was taken yet: shrinking keeps every byte.
        s.shrink_buffers();
        s.handle_read(&second[100..], now());
        assert_eq!(
            events(&mut s),
            vec![Event::Message(Message::Binary(Bytes::from(vec![7; 300])))]
        );
        assert_eq!(transmitted(&mut s), frame(0x1, true, 0, None, b"reply"));
        // Drained: every buffer lets go of its memory.
        s.shrink_buffers();
        assert_eq!(s.recv.capacity(), 0);
        assert_eq!(s.transmit.buf.capacity(), 0);
        assert!(s.events.rest.is_none());
        assert_eq!(s.transmit.queue.capacity(), 0);
        // And the connection goes on as before.
        s.handle_read(&cf(0x1, true, b"again"), now());
        assert_eq!(events(&mut s), vec![text("again")]);
    }

    /// The echo loop of an async shell (buffer recycling on), message after
    /// message: read into the receive buffer, take the message, send it
    /// back, write it out. Each buffer goes to the thread's cache as soon as
    /// it is empty (parsed, written out), so that a connection the
    /// application does not poll holds none, and comes back from it for the
    /// next message: no allocation of either per message (none is made
    /// after the first message). Without recycling they are freed instead.
    #[test]
    fn an_echo_loop_reuses_its_buffers_through_the_thread() {
        use crate::spare::{kept, Kind};
        for recycling in [true, false] {
            let mut s = server();
            s.set_buffer_recycling(recycling);
            let kept_if = |n| if recycling { n } else { 0 };
            for i in 0..5u8 {
                let mut buf = s.recv_buffer_mut();
                buf.reserve(64 * 1024);
                assert_eq!(kept(Kind::Recv), 0, "message {i}: taken from the cache");
                buf.put_slice(&cf(0x2, true, &[i; 20]));
                s.handle_received(now());
                let Some(Event::Message(message)) = s.poll_event() else {
                    panic!("no message");
                };
                // Parsed: the emptied receive buffer is let go of at once.
                assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, kept_if(1)));
                s.send(message).unwrap();
                assert_eq!(kept(Kind::Send), 0, "message {i}: taken from the cache");
                let mut slices = [IoSlice::new(&[]); 4];
                assert_eq!(s.transmit_slices(&mut slices), 1);
                assert_eq!(&slices[0][2..], &[i; 20]);
                let len = slices[0].len();
                s.advance_transmit(len);
                if recycling {
                    // Written out: the transmit buffer too.
                    assert_eq!((s.transmit.buf.capacity(), kept(Kind::Send)), (0, 1));
                }
                assert_eq!(s.poll_event(), None);
                s.recycle_buffers();
                assert_eq!((s.recv.capacity(), s.transmit.buf.capacity()), (0, 0));
                assert_eq!(
                    (kept(Kind::Recv), kept(Kind::Send)),
                    (kept_if(1), 1),
                    "message {i}: kept"
                );
                if !recycling {
                    // `recycle_buffers` kept the transmit buffer; not wanted here.
                    let _ = crate::spare::take(Kind::Send, 1, 1);
                }
            }
        }
    }

    /// Messages lent in place leave the thread's buffer emptied from its
    /// start: each read of a run of small messages has the room the first
    /// one had, instead of that room less everything lent before it.
    #[test]
    fn lent_messages_leave_the_buffer_emptied_from_its_start() {
        use crate::spare::{kept, Kind};
        while crate::spare::take(Kind::Recv, 1, 1).is_some() {}
        let mut s = server();
        s.set_buffer_recycling(true);
        let mut rooms = Vec::new();
        for i in 0..3u8 {
            let room = s.read_into(4096, 64 * 1024, |buf| {
                let room = buf.spare_capacity();
                buf.put_slice(&cf(0x2, true, &[i; 20]));
                room
            });
            s.handle_received(now());
            rooms.push(room);
            let lent = s.lend_message(|message, _| message.to_message());
            assert_eq!(lent, Some(Message::Binary(Bytes::from(vec![i; 20]))));
            assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1));
        }
        assert!(rooms[0] >= 64 * 1024);
        assert_eq!(rooms, [rooms[0]; 3]);
        assert_eq!(s.stats().wire_bytes_received, 3 * 26);
    }

    /// `read_and_lend`: the messages of a read into the thread's buffer are
    /// lent where they arrived, and the buffer stays the thread's when all
    /// of it was lent; what is left over (an incomplete frame, a message
    /// that is not lent) makes it the connection's, and is taken from there
    /// as after any read. Every byte counts once.
    #[test]
    fn read_and_lend_leaves_the_threads_buffer_where_it_is_when_all_is_lent() {
        use crate::spare::{kept, Kind};
        while crate::spare::take(Kind::Recv, 1, 1).is_some() {}
        let mut s = server();
        s.set_buffer_recycling(true);
        let size = 64 * 1024;
        let mut got = Vec::new();
        let read = |s: &mut Connection, bytes: &[u8], got: &mut Vec<Vec<u8>>| {
            let (room, lent) = s.read_and_lend(
                4096,
                size,
                now,
                |buf| {
                    buf.put_slice(bytes);
                    buf.spare_capacity()
                },
                |message, mut out| {
                    got.push(message.as_bytes().to_vec());
                    out.send(message).expect("open");
                    ControlFlow::Continue(())
                },
            );
            (room, lent)
        };

        // Nothing kept: the connection's own buffer, read and lent from.
        let (_, lent) = read(&mut s, &[cf(2, true, b"a"), cf(2, true, b"b")].concat(), &mut got);
        assert_eq!(lent, 2);
        s.recycle_buffers();
        assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1));

        // Kept: lent in place, and it stays the thread's, with its room.
        let mut rooms = Vec::new();
        for i in 0..3u8 {
            let (room, lent) = read(&mut s, &[cf(2, true, &[i; 20]), cf(1, true, b"ok")].concat(), &mut got);
            assert_eq!(lent, 2);
            assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1), "read {i}");
            rooms.push(room);
        }
        assert_eq!(rooms, [rooms[0]; 3], "each read had the room of the first");

        // A whole message and the start of the next: the first is lent,
        // the buffer with the rest becomes the connection's, and the next
        // read completes the second there.
        let next = cf(2, true, b"second");
        let (_, lent) = read(&mut s, &[&cf(2, true, b"first")[..], &next[..4]].concat(), &mut got);
        assert_eq!((lent, s.recv.len(), kept(Kind::Recv)), (1, 4, 0));
        let (_, lent) = read(&mut s, &next[4..], &mut got);
        assert_eq!(lent, 1);
        s.recycle_buffers();
        assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1));

        // A message that is not lent (16 KiB: handed out owned) stays for
        // `poll_event`; a read that brings nothing changes nothing.
        let big = vec![5u8; 16 * 1024];
        let (_, lent) = read(&mut s, &cf(2, true, &big), &mut got);
        assert_eq!((lent, kept(Kind::Recv)), (0, 0));
        assert_eq!(s.poll_event(), Some(Event::Message(Message::Binary(big.into()))));
        s.recycle_buffers();
        let (_, lent) = read(&mut s, &[], &mut got);
        assert_eq!((lent, s.recv.capacity(), kept(Kind::Recv)), (0, 0, 1));

        let want: Vec<Vec<u8>> = [
            vec![b"a".to_vec(), b"b".to_vec()],
            (0..3u8).flat_map(|i| [vec![i; 20], b"ok".to_vec()]).collect(),
            vec![b"first".to_vec(), b"second".to_vec()],
        ]
        .concat();
        assert_eq!(got, want);
        let stats = s.stats();
        assert_eq!((stats.messages_received, stats.messages_sent), (11, 10));
        let wire = 2 * 7 + 3 * (26 + 8) + 11 + 12 + (16 * 1024 + 8);
        assert_eq!(stats.wire_bytes_received, wire as u64);
    }

    /// `read_and_take`: the first message of a read into the thread's
    /// buffer is split off where it arrived, and the buffer stays the
    /// thread's when that was all the read brought; bytes after it make
    /// the buffer the connection's, parsed from there by `poll_event`. A
    /// text that is not UTF-8 fails the connection (1007), no message.
    #[test]
    fn read_and_take_leaves_the_threads_buffer_where_it_is_when_one_message_came() {
        use crate::spare::{kept, Kind};
        while crate::spare::take(Kind::Recv, 1, 1).is_some() {}
        let mut s = server();
        s.set_buffer_recycling(true);
        let read = |s: &mut Connection, bytes: &[u8]| {
            s.read_and_take(4096, 64 * 1024, now, |buf| {
                buf.put_slice(bytes);
                buf.spare_capacity()
            })
        };

        // Nothing kept: read into the connection's own buffer, and the
        // message left for `poll_event`.
        let (_, taken) = read(&mut s, &cf(2, true, b"a"));
        assert_eq!(taken, None);
        assert_eq!(
            s.poll_event(),
            Some(Event::Message(Message::Binary(Bytes::from_static(b"a"))))
        );
        s.recycle_buffers();
        assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1));

        // Kept: taken in place, and the buffer stays the thread's.
        let mut rooms = Vec::new();
        for i in 0..3u8 {
            let (room, taken) = read(&mut s, &cf(1, true, &[b'a' + i; 20]));
            assert_eq!(
                taken,
                Some(Message::Text(
                    String::from_utf8(vec![b'a' + i; 20]).expect("ascii").into()
                ))
            );
            assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1), "read {i}");
            assert_eq!(s.poll_event(), None);
            rooms.push(room);
        }
        // The same buffer each time, its room after the frames split off
        // it (their payloads share its allocation).
        assert_eq!(rooms, [rooms[0], rooms[0] - 26, rooms[0] - 52]);

        // Two messages: the first taken, the second parsed from the buffer,
        // which became the connection's.
        let (_, taken) = read(&mut s, &[cf(2, true, b"first"), cf(2, true, b"second")].concat());
        assert_eq!(taken, Some(Message::Binary(Bytes::from_static(b"first"))));
        assert_eq!((s.recv.len(), kept(Kind::Recv)), (12, 0));
        assert_eq!(
            s.poll_event(),
            Some(Event::Message(Message::Binary(Bytes::from_static(b"second"))))
        );
        s.recycle_buffers();
        assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1));

        // A ping is not taken: parsed (and answered) by `poll_event`.
        let (_, taken) = read(&mut s, &cf(9, true, b"p"));
        assert_eq!(taken, None);
        assert!(matches!(s.poll_event(), Some(Event::Ping(p)) if p == "p"));
        s.recycle_buffers();

        let stats = s.stats();
        assert_eq!(stats.messages_received, 6);
        assert_eq!(stats.wire_bytes_received, (7 + 3 * 26 + 11 + 12 + 7) as u64);

        // Not UTF-8: nothing taken, the connection fails with 1007.
        let (_, taken) = read(&mut s, &cf(1, true, &[0xff, 0xfe]));
        assert_eq!(taken, None);
        assert!(matches!(s.poll_event(), Some(Event::Closed(c)) if c.code == CloseCode::INVALID_PAYLOAD));
    }

    /// A loop's send buffer lent for a connection's turn
    /// (`lend_send_buffer`) is written into, kept when written out even
    /// though the connection recycles, and taken back
    /// (`reclaim_send_buffer`); one still holding output stays with the
    /// connection; with nothing to lend, the buffer the connection takes is
    /// the one the loop gets back.
    #[test]
    fn a_loops_send_buffer_is_lent_for_a_turn_and_taken_back_once_written() {
        use crate::spare::{kept, Kind};
        while crate::spare::take(Kind::Send, 1, 1).is_some() {}
        let mut s = server();
        s.set_buffer_recycling(true);
        let mut slot = BytesMut::with_capacity(8192);
        let ptr = slot.as_ptr();

        // Lent, written into, written out, taken back: the same buffer.
        assert!(s.lend_send_buffer(&mut slot));
        assert_eq!(slot.capacity(), 0);
        s.send_binary(b"one").expect("open");
        assert_eq!(s.transmit_front().0.as_ptr(), ptr, "written into the loop's buffer");
        let n = s.pending_transmit();
        s.advance_transmit(n);
        assert_eq!(kept(Kind::Send), 0, "kept for the loop, not the thread");
        assert!(s.reclaim_send_buffer(&mut slot));
        assert_eq!((slot.as_ptr(), slot.capacity(), slot.len()), (ptr, 8192, 0));
        s.recycle_buffers();
        assert_eq!(kept(Kind::Send), 0);

        // Output left when the turn ends: it stays, the slot stays empty...
        assert!(s.lend_send_buffer(&mut slot));
        s.send_binary(&[1; 100]).expect("open");
        s.advance_transmit(10);
        assert!(!s.reclaim_send_buffer(&mut slot));
        assert_eq!(slot.capacity(), 0);
        // ...and once written out after the turn, it goes to the thread.
        let n = s.pending_transmit();
        s.advance_transmit(n);
        assert_eq!(kept(Kind::Send), 1);

        // Nothing to lend: the connection takes the thread's buffer, and
        // that is the one the loop gets back.
        assert!(!s.lend_send_buffer(&mut slot));
        s.send_binary(b"two").expect("open");
        let n = s.pending_transmit();
        s.advance_transmit(n);
        assert!(s.reclaim_send_buffer(&mut slot));
        // (The first buffer again, stepped over what was written while it
        // was not the loop's.)
        assert_eq!((slot.capacity(), kept(Kind::Send)), (8192 - 10, 0));

        // Not lent while the connection holds output of its own.
        assert!(s.lend_send_buffer(&mut slot));
        let (mut other, mut other_slot) = (server(), BytesMut::with_capacity(4096));
        other.send_binary(b"pending").expect("open");
        assert!(!other.lend_send_buffer(&mut other_slot));
        assert_eq!(other_slot.capacity(), 4096);
        assert_eq!(transmitted(&mut other), frame(2, true, 0, None, b"pending"));
    }

    /// A driving loop's read (`read_into`) into a connection that let go of
    /// its buffer: a read that would block uses a buffer the thread kept in
    /// place and leaves it there; a read that brings bytes takes it; with
    /// nothing kept (or the cache in use by the read itself) the connection
    /// gets a buffer of its own. Every byte read counts, whichever way.
    #[test]
    fn a_read_uses_a_kept_buffer_in_place_and_takes_it_only_with_bytes() {
        use crate::spare::{kept, Kind};
        while crate::spare::take(Kind::Recv, 1, 1).is_some() {}
        let mut s = server();
        s.set_buffer_recycling(true);
        let size = 64 * 1024;

        // Nothing kept: a buffer of `size` of its own; the read blocks.
        let room = s.read_into(4096, size, |buf| buf.spare_capacity());
        assert!(room >= size, "{room}");
        s.recycle_buffers();
        assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1));

        // Kept: lent in place, left in the cache by a read that blocks...
        for _ in 0..3 {
            let room = s.read_into(4096, size, |buf| buf.spare_capacity());
            assert!(room >= size);
            assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1));
        }
        // ...and taken by one that brings bytes.
        s.read_into(4096, size, |buf| buf.put_slice(&cf(0x2, true, &[9; 20])));
        assert_eq!(kept(Kind::Recv), 0);
        s.handle_received(now());
        assert_eq!(s.stats().wire_bytes_received, 26);
        assert_eq!(
            s.poll_event(),
            Some(Event::Message(Message::Binary(Bytes::from(vec![9; 20]))))
        );
        // Parsed: let go of at once, with the room after the message. The
        // next read uses that room as it is (no rewinding while at least
        // half the read size is left) and takes it with the bytes it
        // brings.
        assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1));
        let room = s.read_into(4096, size, |buf| {
            buf.put_slice(&cf(0x1, true, b"two"));
            buf.spare_capacity()
        });
        assert!(room < size - 26 && room >= size - 64, "{room}");
        s.handle_received(now());
        assert_eq!(events(&mut s), vec![text("two")]);
        assert_eq!(s.stats().wire_bytes_received, 26 + 9);

        // A kept buffer with a small room (the end of an allocation shared
        // with payloads still alive) is read into as it is, and let go of
        // again once parsed, however small its room: a connection that is
        // not polled must not hold it, and with it the whole allocation.
        while crate::spare::take(Kind::Recv, 1, 1).is_some() {}
        let mut shared = BytesMut::with_capacity(64 * 1024);
        shared.resize(56 * 1024, 0);
        let alive = shared.split().freeze();
        crate::spare::give(Kind::Recv, shared);
        // (Read sizes of 16 KiB: a kept buffer with half of that free is
        // read into as it is.)
        s.read_into(4096, 16 * 1024, |buf| {
            assert_eq!(buf.spare_capacity(), 8 * 1024);
            buf.put_slice(&cf(0x2, true, &[1; 100]));
        });
        s.handle_received(now());
        assert_eq!(
            s.poll_event(),
            Some(Event::Message(Message::Binary(Bytes::from(vec![1; 100]))))
        );
        assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 1));
        drop(alive);

        // With less than half the read size free, a kept buffer is rewound
        // to its start once no payload points into it, and dropped while
        // one does (its allocation goes with the payload).
        while crate::spare::take(Kind::Recv, 1, 1).is_some() {}
        let mut shared = BytesMut::with_capacity(size);
        shared.resize(size - 16 * 1024, 0);
        let alive = shared.split().freeze();
        crate::spare::give(Kind::Recv, shared);
        let room = s.read_into(4096, size, |buf| buf.spare_capacity());
        assert!(room >= size, "{room}: a buffer of its own");
        s.recycle_buffers();
        let mut shared = BytesMut::with_capacity(size);
        shared.resize(size - 16 * 1024, 0);
        drop(shared.split().freeze());
        while crate::spare::take(Kind::Recv, 1, 1).is_some() {}
        crate::spare::give(Kind::Recv, shared);
        let room = s.read_into(4096, size, |buf| buf.spare_capacity());
        assert_eq!(room, size, "rewound");
        assert_eq!(kept(Kind::Recv), 1);
        drop(alive);

        // A read that reaches another connection of the thread while the
        // cache is lent (a transport that is itself a connection): that one
        // finds the cache busy and reads into a buffer of its own.
        let mut inner = server();
        inner.set_buffer_recycling(true);
        assert_eq!(kept(Kind::Recv), 1);
        s.read_into(4096, size, |_| {
            inner.read_into(4096, size, |buf| buf.put_slice(&cf(0x1, true, b"in")));
        });
        assert_eq!((inner.recv.len(), kept(Kind::Recv)), (8, 1));
        inner.handle_received(now());
        assert_eq!(events(&mut inner), vec![text("in")]);
        // Parsed, its buffer joins the one lent.
        assert_eq!((s.recv.capacity(), kept(Kind::Recv)), (0, 2));
    }
}

mod in_place {
    use super::*;

    /// Appends `bytes` to the receive buffer the way a socket read into it
    /// does: into the room `chunk_mut` offers, then `advance_mut`.
    fn receive(conn: &mut Connection, mut bytes: &[u8]) {
        let mut buf = conn.recv_buffer_mut();
        while !bytes.is_empty() {
            if buf.spare_capacity() == 0 {
                buf.reserve(4096);
            }
            let room = buf.chunk_mut();
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            // SAFETY: the first `n` bytes of the room were just written.
            unsafe { buf.advance_mut(n) };
            bytes = &bytes[n..];
        }
        conn.handle_received(now());
    }

    #[test]
    fn a_frame_arriving_in_pieces_becomes_the_message_without_a_copy() {
        for (opcode, payload) in [(0x2, vec![7u8; 100_000]), (0x1, "h€llo ".repeat(10_000).into_bytes())] {
            let mut conn = server();
            let bytes = cf(opcode, true, &payload);
            let mut buf = conn.recv_buffer_mut();
            buf.reserve(bytes.len());
            assert!(buf.spare_capacity() >= bytes.len());
            let base = buf.chunk_mut().as_mut_ptr() as usize;
            let pieces: Vec<&[u8]> = bytes.chunks(7_001).collect();
            for (i, piece) in pieces.iter().enumerate() {
                receive(&mut conn, piece);
                if i + 1 < pieces.len() {
                    assert_eq!(conn.poll_event(), None);
                }
            }
            let Some(Event::Message(message)) = conn.poll_event() else {
                panic!("no message")
            };
            assert_eq!(message.as_bytes(), &payload[..]);
            // The payload is where the frame arrived, after its 14-byte header.
            assert_eq!(message.as_bytes().as_ptr() as usize, base + 14);
        }
    }

    /// A completion-based transport lends the receive buffer's room to a
    /// read and gives it back filled: the frame is received in place,
    /// without a copy, and a room given back after the buffer moved is
    /// copied after what the buffer holds (nothing lost or reordered).
    #[test]
    fn a_lent_room_comes_back_in_place() {
        let payload = vec![9u8; 50_000];
        let bytes = cf(0x2, true, &payload);
        let (first, rest) = bytes.split_at(1_000);
        let mut conn = server();
        receive(&mut conn, first);
        assert_eq!(conn.poll_event(), None);
        let mut buf = conn.recv_buffer_mut();
        // The frame's header is parsed: the rest of it is known.
        assert_eq!(buf.frame_rest(), rest.len());
        let mut room = buf.split_room(buf.frame_rest());
        assert_eq!((room.len(), buf.spare_capacity()), (0, 0));
        assert_eq!(room.capacity(), rest.len());
        let at = room.as_ptr() as usize;
        room.extend_from_slice(rest);
        buf.unsplit_room(room);
        conn.handle_received(now());
        let Some(Event::Message(message)) = conn.poll_event() else {
            panic!("no message")
        };
        assert_eq!(message.as_bytes(), &payload[..]);
        // In place: the bytes read into the room are where the room was.
        let tail = &message.as_bytes()[message.len() - rest.len()..];
        assert_eq!(tail.as_ptr() as usize, at);

        // The buffer grew (moved) while the room was lent: the room's bytes
        // follow the ones appended meanwhile.
        let mut conn = server();
        let bytes = [cf(0x1, true, b"one"), cf(0x1, true, b"two")].concat();
        let mut buf = conn.recv_buffer_mut();
        let mut room = buf.split_room(16);
        buf.put_slice(&bytes[..4]);
        room.extend_from_slice(&bytes[4..]);
        buf.unsplit_room(room);
        conn.handle_received(now());
        assert_eq!(events(&mut conn), vec![text("one"), text("two")]);
    }

    /// A read takes at most `MAX_READ` bytes, however much room the rest
    /// of a large frame has (its bytes are unmasked right after the read,
    /// while the processor's cache still holds them), or the read size the
    /// loop asked for if that is larger.
    #[test]
    fn a_read_takes_at_most_max_read_or_the_read_size() {
        let bytes = cf(0x2, true, &vec![1u8; 1 << 20]);
        let mut conn = server();
        conn.recv_buffer_mut().put_slice(&bytes[..40_000]);
        conn.handle_received(now());
        assert_eq!(conn.poll_event(), None);
        let mut buf = conn.recv_buffer_mut();
        buf.reserve_read(4096, 64 * 1024);
        // Room for the rest of the frame, read a part at a time.
        assert!(buf.spare_capacity() >= bytes.len() - 40_000, "{}", buf.spare_capacity());
        assert_eq!(buf.chunk_mut().len(), MAX_READ);
        let mut buf = conn.recv_buffer_mut();
        buf.reserve_read(4096, 2 * MAX_READ);
        assert_eq!(buf.chunk_mut().len(), 2 * MAX_READ);
        // A small buffer offers all its room.
        let mut conn = server();
        let mut buf = conn.recv_buffer_mut();
        buf.reserve_read(4096, 8192);
        let room = buf.spare_capacity();
        assert!(room >= 8192);
        assert_eq!(buf.chunk_mut().len(), room);
    }

    /// A large frame read as a driving loop reads it (`reserve_read`, then
    /// a read of what arrived, at most the room): the buffer grows once, to
    /// the rest of the frame, and its last bytes, arriving in a read of
    /// their own with less free than a read asks for, go into the room
    /// left for them. Growing for a whole read there would double the
    /// buffer and copy all that arrived.
    #[test]
    fn the_last_bytes_of_a_large_frame_do_not_grow_the_buffer_again() {
        for (len, arrivals) in [
            // 1 MiB in reads of 64 KiB: the last read brings the frame's
            // last 14 bytes (as many as its header took), with 14 free.
            (1usize << 20, 64 * 1024),
            (300_000, 30_000),
            (100_000, 4_000),
        ] {
            let bytes = cf(0x2, true, &vec![5u8; len]);
            let mut conn = server();
            let mut sent = 0;
            let mut allocations = Vec::new();
            let mut message = None;
            while message.is_none() {
                assert!(sent < bytes.len(), "{len}: every byte sent and no message");
                let mut buf = conn.recv_buffer_mut();
                buf.reserve_read(4096, 64 * 1024);
                let room = buf.spare_capacity();
                let read = arrivals.min(room).min(bytes.len() - sent);
                buf.put_slice(&bytes[sent..sent + read]);
                let capacity = buf.len() + buf.spare_capacity();
                if allocations.last() != Some(&capacity) {
                    allocations.push(capacity);
                }
                sent += read;
                conn.handle_received(now());
                message = conn.poll_event();
            }
            let Some(Event::Message(message)) = message else {
                panic!("{len}: {message:?}")
            };
            assert_eq!(message.len(), len);
            assert_eq!(sent, bytes.len());
            // The largest the buffer got: the frame's payload and the room
            // of one read, not twice the frame.
            let largest = allocations.iter().copied().max().unwrap_or(0);
            assert!(largest <= len + 64 * 1024, "{len}: grew to {largest} ({allocations:?})");
        }
    }

    /// Reads `bytes` (one client frame) as a driving loop reads them, in
    /// reads of at most `arrivals` bytes, and returns the message.
    fn read_as_a_loop(conn: &mut Connection, bytes: &[u8], arrivals: usize) -> Message {
        let mut sent = 0;
        loop {
            assert!(sent < bytes.len(), "every byte sent and no message");
            let mut buf = conn.recv_buffer_mut();
            buf.reserve_read(4096, 64 * 1024);
            let read = arrivals.min(buf.spare_capacity()).min(bytes.len() - sent);
            buf.put_slice(&bytes[sent..sent + read]);
            sent += read;
            conn.handle_received(now());
            match conn.poll_event() {
                None => {}
                Some(Event::Message(message)) => {
                    assert_eq!(sent, bytes.len());
                    return message;
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// A connection that recycles its buffers receives a large frame into
    /// the buffer its thread keeps for large frames, and the next large
    /// frame into the same allocation once the first one's payload is
    /// dropped: no allocation, no page faulted in again. (Another
    /// allocation of that size in between takes whatever the allocator
    /// would have given back; the kept one is not given back.)
    #[test]
    fn a_large_frame_arrives_in_the_threads_large_buffer_again() {
        let mut conn = server();
        conn.set_buffer_recycling(true);
        let first = read_as_a_loop(&mut conn, &cf(0x2, true, &vec![5u8; 1 << 20]), 64 * 1024);
        let at = first.as_bytes().as_ptr();
        drop(first);
        let elsewhere = vec![1u8; (1 << 20) + 64 * 1024];
        let second = read_as_a_loop(&mut conn, &cf(0x2, true, &vec![6u8; 1 << 20]), 64 * 1024);
        assert_eq!(second.as_bytes().as_ptr(), at);
        assert!(second.as_bytes().iter().all(|&b| b == 6));
        assert_eq!(second.len(), 1 << 20);
        drop(elsewhere);
        // A smaller large frame too, after a small message.
        drop(second);
        let small = read_as_a_loop(&mut conn, &cf(0x2, true, b"hi"), 64 * 1024);
        assert_eq!(small.as_bytes(), b"hi");
        let third = read_as_a_loop(&mut conn, &cf(0x2, true, &vec![7u8; 300_000]), 30_000);
        assert_eq!(third.as_bytes().as_ptr(), at);
        assert!(third.as_bytes().iter().all(|&b| b == 7));
    }

    /// While a payload received into the thread's large buffer is still
    /// held, the next large frame goes elsewhere, and the payload held is
    /// untouched; a connection that does not recycle its buffers (a thread
    /// per connection) never uses the thread's large buffer.
    #[test]
    fn a_large_buffer_in_use_or_a_thread_per_connection_is_not_reused() {
        let mut conn = server();
        conn.set_buffer_recycling(true);
        let first = read_as_a_loop(&mut conn, &cf(0x2, true, &vec![5u8; 1 << 20]), 64 * 1024);
        let second = read_as_a_loop(&mut conn, &cf(0x2, true, &vec![6u8; 1 << 20]), 64 * 1024);
        assert_ne!(second.as_bytes().as_ptr(), first.as_bytes().as_ptr());
        assert!(first.as_bytes().iter().all(|&b| b == 5));
        assert!(second.as_bytes().iter().all(|&b| b == 6));
        // Once both are dropped, the kept one serves again.
        let at = first.as_bytes().as_ptr();
        drop((first, second));
        let third = read_as_a_loop(&mut conn, &cf(0x2, true, &vec![7u8; 1 << 20]), 64 * 1024);
        assert_eq!(third.as_bytes().as_ptr(), at);
        drop(third);

        // Not recycling: the kept buffer stays where it is, unused.
        let mut conn = server();
        let fourth = read_as_a_loop(&mut conn, &cf(0x2, true, &vec![8u8; 1 << 20]), 64 * 1024);
        assert_ne!(fourth.as_bytes().as_ptr(), at);
        assert!(fourth.as_bytes().iter().all(|&b| b == 8));
    }

    /// Large payloads still held when the next large frames arrive (an
    /// echo still being written, on another connection of the thread):
    /// each frame gets a buffer of its own, and the thread keeps them up
    /// to 4 MiB in all (four for frames of 1 MiB; the fifth is not
    /// kept). Once they are dropped, the next four large frames, held at
    /// once too, arrive in the four kept allocations.
    #[test]
    fn the_thread_keeps_several_large_buffers_up_to_4_mib() {
        crate::spare::drop_large();
        let mut conn = server();
        conn.set_buffer_recycling(true);
        let held: Vec<Message> = (0..5u8)
            .map(|i| read_as_a_loop(&mut conn, &cf(0x2, true, &vec![i; 1 << 20]), 64 * 1024))
            .collect();
        let (count, bytes) = crate::spare::kept_large();
        assert_eq!((count, bytes), (4, 4 << 20));
        for (i, message) in (0..5u8).zip(&held) {
            assert_eq!(message.len(), 1 << 20);
            assert!(message.as_bytes().iter().all(|&b| b == i));
        }
        let mut kept_at: Vec<*const u8> = held[..4].iter().map(|m| m.as_bytes().as_ptr()).collect();
        kept_at.sort();
        drop(held);
        let again: Vec<Message> = (0..4)
            .map(|_| read_as_a_loop(&mut conn, &cf(0x2, true, &vec![9u8; 1 << 20]), 64 * 1024))
            .collect();
        let mut at: Vec<*const u8> = again.iter().map(|m| m.as_bytes().as_ptr()).collect();
        at.sort();
        assert_eq!(at, kept_at);
        assert!(again.iter().all(|m| m.as_bytes().iter().all(|&b| b == 9)));
        assert_eq!(crate::spare::kept_large(), (4, 4 << 20));
    }

    /// A large frame arriving in reads of a few KiB: once 32 KiB of it are
    /// held, the buffer's next growth makes room for the rest of the frame
    /// at once (one move, not one per doubling), never more than 1 MiB at
    /// a time; before that, and for a peer that announces a large frame
    /// and sends little, it grows as a vector does.
    #[test]
    fn a_large_frame_grows_the_buffer_once_to_its_rest() {
        for (len, pieces) in [(300_000usize, 4_096usize), (3 << 20, 16_384)] {
            let payload = vec![3u8; len];
            let bytes = cf(0x2, true, &payload);
            let mut conn = server();
            let mut moves = 0;
            for piece in bytes.chunks(pieces) {
                let mut buf = conn.recv_buffer_mut();
                let held = buf.len();
                let room_before = buf.spare_capacity();
                // What the core knows is still to come (the header parsed).
                let rest = buf.frame_rest();
                buf.put_slice(piece);
                if room_before < piece.len() {
                    // Grew: to the rest of the frame (bounded) once 32 KiB
                    // are held, by at most doubling before.
                    if held >= 32 * 1024 {
                        assert_eq!(rest, bytes.len() - 14 - held);
                        assert!(
                            buf.spare_capacity() + piece.len() >= rest.min(1 << 20),
                            "{len}: at {held}, room {} for {rest} to come",
                            buf.spare_capacity()
                        );
                        moves += 1;
                    } else {
                        assert!(buf.len() + buf.spare_capacity() <= 2 * (held + piece.len()).max(64 * 1024));
                    }
                }
                conn.handle_received(now());
                // Parsed as the loop parses: the header once it is whole.
                if rest != piece.len() {
                    assert_eq!(conn.poll_event(), None);
                }
            }
            let Some(Event::Message(message)) = conn.poll_event() else {
                panic!("no message")
            };
            assert_eq!(message.len(), len);
            // 300 KB: one growth past 32 KiB; 3 MiB: one per MiB.
            assert!(
                (1..=len.div_ceil(1 << 20)).contains(&moves),
                "{len}: {moves} growths after 32 KiB"
            );
        }
        // Announced 1 MB, sent 100 bytes: no room taken for the rest.
        let bytes = cf(0x2, true, &vec![0u8; 1_000_000]);
        let mut conn = server();
        conn.recv_buffer_mut().put_slice(&bytes[..100]);
        conn.handle_received(now());
        assert_eq!(conn.poll_event(), None);
        let mut buf = conn.recv_buffer_mut();
        assert!(buf.frame_rest() > 900_000);
        buf.put_slice(&bytes[100..5_000]);
        assert!(buf.len() + buf.spare_capacity() < 64 * 1024, "{}", buf.spare_capacity());
    }

    #[test]
    fn the_handle_appends_the_same_as_handle_read() {
        let mut bytes = cf(1, true, "ελληνικά".as_bytes());
        bytes.extend(cf(9, true, b"ping"));
        bytes.extend(cf(2, false, b"ab"));
        bytes.extend(cf(0, true, b"cd"));
        bytes.extend(cf(8, true, &[0x03, 0xe8]));
        let mut reference = server();
        reference.handle_read(&bytes, now());
        let expected = events(&mut reference);
        for split in [1, 2, 5, 13, bytes.len()] {
            let mut conn = server();
            let mut got = Vec::new();
            for piece in bytes.chunks(split) {
                let mut buf = conn.recv_buffer_mut();
                let before = buf.len();
                buf.put_slice(piece);
                assert_eq!(buf.len(), before + piece.len());
                conn.handle_received(now());
                got.extend(events(&mut conn));
            }
            assert_eq!(got, expected, "pieces of {split} bytes");
        }
    }

    #[test]
    fn the_handle_sees_only_what_is_not_consumed() {
        let mut conn = server();
        let mut buf = conn.recv_buffer_mut();
        assert!(buf.is_empty());
        buf.put_slice(&cf(1, true, b"one"));
        buf.put_slice(&cf(1, true, b"two")[..4]);
        conn.handle_received(now());
        assert_eq!(conn.poll_event(), Some(text("one")));
        assert_eq!(conn.poll_event(), None);
        // The first frame is gone; the start of the second waits.
        assert_eq!(conn.recv_buffer_mut().len(), 4);
    }

    #[test]
    fn bytes_appended_after_the_close_are_dropped() {
        let mut conn = server();
        conn.handle_read(&cf(8, true, &[0x03, 0xe8]), now());
        events(&mut conn);
        conn.recv_buffer_mut().put_slice(&cf(1, true, b"too late"));
        conn.handle_received(now());
        assert_eq!(conn.poll_event(), None);
        assert!(conn.recv_buffer_mut().is_empty());
    }

    #[test]
    fn invalid_utf8_still_fails_as_soon_as_it_arrives() {
        let mut conn = server();
        let mut payload = vec![b'a'; 50_000];
        payload[10_000] = 0xff;
        let bytes = cf(0x1, true, &payload);
        receive(&mut conn, &bytes[..20_000]);
        assert!(matches!(
            conn.poll_event(),
            Some(Event::Closed(Closed {
                code: CloseCode::INVALID_PAYLOAD,
                ..
            }))
        ));
    }
}

/// [`Config::send_timeout`]: output the transport does not take fails the
/// connection; a transport that keeps taking bytes, however slowly, never does.
mod send_timeout {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn server_with_send_timeout() -> Connection {
        let mut config = Config::default();
        config.send_timeout = Some(TIMEOUT);
        server_with(config)
    }

    #[test]
    fn blocked_output_fails_the_connection_after_the_timeout() {
        let mut conn = server_with_send_timeout();
        conn.send_binary(&[1; 100]).unwrap();
        // Queued output alone starts no clock: only a blocked write does.
        assert_eq!(conn.poll_timeout(), None);
        let t0 = now() + Duration::from_secs(1);
        conn.handle_write_blocked(t0);
        assert_eq!(conn.poll_timeout(), Some(t0 + TIMEOUT));
        // Reported again while blocked: the clock keeps its start.
        conn.handle_write_blocked(t0 + Duration::from_secs(10));
        assert_eq!(conn.poll_timeout(), Some(t0 + TIMEOUT));
        conn.handle_timeout(t0 + TIMEOUT - Duration::from_millis(1));
        assert_eq!(conn.state(), State::Open);
        conn.handle_timeout(t0 + TIMEOUT);
        assert_eq!(
            conn.closed(),
            Some(&Closed {
                code: CloseCode::ABNORMAL,
                reason: String::new(),
                cause: CloseCause::SendTimeout
            })
        );
        assert!(conn.should_close_transport());
        // No close frame queued behind what the peer does not read: one
        // more attempt to write, then the output is given up.
        assert_eq!(conn.pending_transmit(), 102);
        assert_eq!(conn.poll_timeout(), Some(t0 + TIMEOUT));
        conn.handle_timeout(t0 + TIMEOUT);
        assert!(conn.output_abandoned());
        assert_eq!(conn.send_text("late"), Err(SendError::Closed));
        assert_eq!(
            events(&mut conn),
            vec![Event::Closed(Closed {
                code: CloseCode::ABNORMAL,
                reason: String::new(),
                cause: CloseCause::SendTimeout
            })]
        );
    }

    #[test]
    fn any_progress_restarts_the_clock() {
        let mut conn = server_with_send_timeout();
        conn.send_binary(&[1; 100]).unwrap();
        conn.handle_write_blocked(now());
        // A slow reader: one byte 29 s later, then blocked again.
        let t1 = now() + Duration::from_secs(29);
        conn.advance_transmit(1);
        assert_eq!(conn.poll_timeout(), None);
        conn.handle_write_blocked(t1);
        assert_eq!(conn.poll_timeout(), Some(t1 + TIMEOUT));
        conn.handle_timeout(now() + TIMEOUT);
        assert_eq!(conn.state(), State::Open);
        // Everything written: nothing is waiting, no deadline.
        conn.advance_transmit(usize::MAX);
        conn.handle_write_blocked(t1 + Duration::from_secs(1));
        assert_eq!(conn.poll_timeout(), None);
    }

    #[test]
    fn off_by_default_and_when_zero() {
        for send_timeout in [None, Some(Duration::ZERO)] {
            let mut config = Config::default();
            config.send_timeout = send_timeout;
            let mut conn = server_with(config);
            conn.send_binary(&[1; 100]).unwrap();
            conn.handle_write_blocked(now());
            assert_eq!(conn.poll_timeout(), None, "{send_timeout:?}");
            conn.handle_timeout(now() + Duration::from_secs(3600));
            assert_eq!(conn.state(), State::Open, "{send_timeout:?}");
        }
        assert_eq!(Config::default().send_timeout, None);
    }

    #[test]
    fn counts_while_closing_too() {
        let mut conn = server_with_send_timeout();
        conn.send_binary(&[1; 100]).unwrap();
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        conn.handle_write_blocked(now());
        // The earlier of the send timeout and the close timeout.
        assert_eq!(conn.poll_timeout(), Some(now() + Config::default().close_timeout));
        let mut config = Config::default();
        config.send_timeout = Some(Duration::from_secs(2));
        let mut conn = server_with(config);
        conn.send_binary(&[1; 100]).unwrap();
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        conn.handle_write_blocked(now());
        let t = now() + Duration::from_secs(2);
        assert_eq!(conn.poll_timeout(), Some(t));
        conn.handle_timeout(t);
        assert_eq!(conn.closed().map(|c| &c.cause), Some(&CloseCause::SendTimeout));
    }
}

/// The documented limits and timers, pinned by value (the README and the
/// docs promise these figures), and enforced at exactly those figures.
mod documented_defaults {
    use super::*;

    #[test]
    fn limits_and_timers_by_value() {
        let config = Config::default();
        assert_eq!(config.max_frame_size, 16 * 1024 * 1024);
        assert_eq!(config.max_message_size, 64 * 1024 * 1024);
        assert_eq!(config.close_timeout, Duration::from_secs(10));
        assert_eq!(config.ping_interval, None);
        assert_eq!(config.idle_timeout, None);
        assert_eq!(config.send_timeout, None);
        assert_eq!(config.stream_threshold, None);
        assert!(config.auto_pong);
    }

    /// A masked client frame header announcing `len` payload bytes.
    fn header(len: u64) -> Vec<u8> {
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes
    }

    #[test]
    fn a_frame_of_16_mib_is_taken_and_one_byte_more_fails_1009() {
        let mut conn = server();
        conn.handle_read(&header(16 * 1024 * 1024), now());
        assert!(events(&mut conn).is_empty());
        assert_eq!(conn.state(), State::Open);
        let mut conn = server();
        conn.handle_read(&header(16 * 1024 * 1024 + 1), now());
        let closed = conn.poll_event();
        assert!(
            matches!(&closed, Some(Event::Closed(c)) if c.code == CloseCode::MESSAGE_TOO_BIG),
            "{closed:?}"
        );
    }

    #[test]
    fn a_message_over_64_mib_fails_1009() {
        // Five frames of 16 MiB, fragments of one message: the fifth takes
        // it over 64 MiB.
        let mut conn = server();
        let chunk = vec![0u8; 16 * 1024 * 1024];
        for i in 0..5u8 {
            let opcode = if i == 0 { 2 } else { 0 };
            conn.handle_read(&frame(opcode, false, 0, Some([0; 4]), &chunk), now());
            if let Some(event) = conn.poll_event() {
                assert_eq!(i, 4, "{event:?}");
                assert!(
                    matches!(&event, Event::Closed(c) if c.code == CloseCode::MESSAGE_TOO_BIG),
                    "{event:?}"
                );
                return;
            }
        }
        panic!("64 MiB + 16 MiB accepted");
    }

    #[test]
    fn the_close_timeout_is_10_seconds() {
        let mut conn = server();
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        assert_eq!(conn.poll_timeout(), Some(now() + Duration::from_secs(10)));
    }
}

/// [`Connection::stats`]: the core's counters, exact.
mod stats {
    use super::*;

    #[test]
    fn a_text_message_each_way() {
        let mut client = client();
        client.send_text("hello").unwrap();
        // Counted as the transport takes it, not when queued.
        assert_eq!(client.stats().wire_bytes_sent, 0);
        let bytes = offered(&client);
        assert_eq!(bytes.len(), 2 + 4 + 5, "header, mask, payload");
        client.advance_transmit(4);
        assert_eq!(client.stats().wire_bytes_sent, 4);
        client.advance_transmit(usize::MAX);
        let sent = client.stats();
        assert_eq!(
            (sent.wire_bytes_sent, sent.payload_bytes_sent, sent.messages_sent),
            (11, 5, 1)
        );

        let mut server = server();
        // In two reads, through the append-only buffer and handle_read.
        server.recv_buffer_mut().put_slice(&bytes[..3]);
        server.handle_received(now());
        server.handle_read(&bytes[3..], now());
        assert_eq!(server.stats().wire_bytes_received, 11);
        assert_eq!(server.stats().messages_received, 0, "not parsed yet");
        assert_eq!(events(&mut server), vec![text("hello")]);
        let received = server.stats();
        assert_eq!((received.payload_bytes_received, received.messages_received), (5, 1));
    }

    #[test]
    fn fragments_count_as_one_message_and_control_frames_as_none() {
        let mut client = client();
        client.send_fragment(DataKind::Binary, &[1; 10], false).unwrap();
        client.send_fragment(DataKind::Binary, &[2; 20], true).unwrap();
        client.ping(b"p").unwrap();
        let stats = client.stats();
        assert_eq!((stats.payload_bytes_sent, stats.messages_sent), (30, 1));

        let mut server = server();
        let mut input = cf(2, false, &[1; 10]);
        input.extend(cf(9, true, b"p"));
        input.extend(cf(0, true, &[2; 20]));
        server.handle_read(&input, now());
        assert_eq!(events(&mut server).len(), 2, "the ping and the message");
        let stats = server.stats();
        assert_eq!((stats.payload_bytes_received, stats.messages_received), (30, 1));
        assert_eq!(stats.wire_bytes_received, input.len() as u64);
        // The pong went out: wire bytes, no message.
        server.advance_transmit(usize::MAX);
        assert_eq!(server.stats().wire_bytes_sent, 3);
        assert_eq!(server.stats().messages_sent, 0);
    }

    #[test]
    fn streamed_pieces_count_as_they_are_delivered() {
        let mut config = Config::default();
        config.stream_threshold = Some(0);
        let mut server = server_with(config);
        server.handle_read(&cf(2, false, &[1; 10]), now());
        events(&mut server);
        assert_eq!(server.stats().payload_bytes_received, 10);
        assert_eq!(server.stats().messages_received, 0);
        server.handle_read(&cf(0, true, &[1; 5]), now());
        events(&mut server);
        assert_eq!(server.stats().payload_bytes_received, 15);
        assert_eq!(server.stats().messages_received, 1);
    }

    #[test]
    fn discarded_output_is_not_sent() {
        let mut server = server();
        server.send_binary(&[0; 100]).unwrap();
        server.advance_transmit(10);
        server.discard_transmit();
        assert_eq!(server.pending_transmit(), 0);
        assert_eq!(server.stats().wire_bytes_sent, 10);
    }
}

/// Connections made with equal settings on one thread share one copy of
/// them; other settings get their own, and nothing leaks between them.
#[test]
fn equal_settings_are_shared_between_connections() {
    let a = server();
    let b = client();
    assert!(
        std::ptr::eq(a.config(), b.config()),
        "equal default settings are one copy"
    );
    let mut other = Config::default();
    other.max_message_size = 1234;
    let c = server_with(other.clone());
    assert!(!std::ptr::eq(a.config(), c.config()));
    assert_eq!(c.config().max_message_size, 1234);
    assert_eq!(a.config().max_message_size, Config::default().max_message_size);
    // The thread's last settings are now `other`: a default connection
    // gets a fresh copy, still equal to the defaults.
    let d = server();
    assert_eq!(d.config(), &Config::default());
    let e = server_with(other);
    assert!(!std::ptr::eq(c.config(), d.config()));
    assert_eq!(e.config().max_message_size, 1234);
}

/// The whole-frame path (`take_small_message`): a frame that arrives whole
/// is taken without the event queue; it must give what the general path
/// gives the same bytes arriving one at a time (which never holds a whole
/// frame with a payload).
mod whole_frames {
    use super::*;

    /// What a connection did with its input: the events (pieces joined),
    /// its output and its state.
    type Outcome = (Vec<(String, Vec<u8>)>, Vec<u8>, State);

    /// How the input arrives, and how messages are taken.
    #[derive(Clone, Copy, PartialEq)]
    enum Arrival {
        /// All at once, taken with `poll_event`.
        Whole,
        /// All at once, taken with `lend_message` where it lends, else
        /// `poll_event`.
        Lent,
        /// All at once, taken with `lend_messages` (as many as it lends
        /// in one call) where it lends, else `poll_event`.
        LentMany,
        /// One byte per read.
        ByteByByte,
        /// Reads of this many bytes with `read_and_lend` (buffers
        /// recycled, so that reads go into the thread's buffer and its
        /// messages are lent there), the rest as after `LentMany`'s reads.
        ReadAndLend(usize),
        /// Reads of this many bytes with `read_and_take` (buffers
        /// recycled, so that reads go into the thread's buffer and its
        /// first message is taken there), the rest with `poll_event`.
        ReadAndTake(usize),
    }

    fn run(role: Role, config: &Config, input: &[u8], arrival: Arrival) -> Outcome {
        let mut conn = match role {
            Role::Server => server_with(config.clone()),
            Role::Client => Connection::client(config.clone(), Box::new(SeededRandom::new(7)), now()),
        };
        let mut seen = Vec::new();
        match arrival {
            Arrival::Whole => {
                conn.handle_read(input, now());
                seen.extend(events(&mut conn));
            }
            Arrival::Lent => {
                conn.handle_read(input, now());
                loop {
                    if let Some(event) = conn.lend_message(|message, _| Event::Message(message.to_message())) {
                        seen.push(event);
                    } else if let Some(event) = conn.poll_event() {
                        seen.push(event);
                    } else {
                        break;
                    }
                }
            }
            Arrival::LentMany => {
                conn.handle_read(input, now());
                lend_all(&mut conn, &mut seen);
            }
            Arrival::ByteByByte => {
                for byte in input {
                    conn.handle_read(std::slice::from_ref(byte), now());
                    seen.extend(events(&mut conn));
                }
            }
            Arrival::ReadAndLend(chunk) => {
                conn.set_buffer_recycling(true);
                // A buffer for the thread to keep (a read that brings
                // nothing), so that the first read goes into it.
                conn.read_into(4096, 64 * 1024, |_| ());
                conn.recycle_buffers();
                let mut received = 0;
                for piece in input.chunks(chunk) {
                    let (read, _) = conn.read_and_lend(
                        4096,
                        64 * 1024,
                        now,
                        |buf| {
                            buf.put_slice(piece);
                            piece.len()
                        },
                        |message, _| {
                            seen.push(Event::Message(message.to_message()));
                            ControlFlow::Continue(())
                        },
                    );
                    received += read;
                    lend_all(&mut conn, &mut seen);
                    conn.recycle_buffers();
                }
                assert_eq!(conn.stats().wire_bytes_received, received as u64);
            }
            Arrival::ReadAndTake(chunk) => {
                conn.set_buffer_recycling(true);
                conn.read_into(4096, 64 * 1024, |_| ());
                conn.recycle_buffers();
                let mut received = 0;
                for piece in input.chunks(chunk) {
                    let (read, taken) = conn.read_and_take(4096, 64 * 1024, now, |buf| {
                        buf.put_slice(piece);
                        piece.len()
                    });
                    received += read;
                    seen.extend(taken.map(Event::Message));
                    seen.extend(events(&mut conn));
                    conn.recycle_buffers();
                }
                assert_eq!(conn.stats().wire_bytes_received, received as u64);
            }
        }
        (merge_pieces(seen), transmitted(&mut conn), conn.state())
    }

    /// Everything `conn` holds: the messages `lend_messages` lends (as
    /// many as it lends in one call), the rest from `poll_event`.
    fn lend_all(conn: &mut Connection, seen: &mut Vec<Event>) {
        loop {
            let lent = conn.lend_messages(|message, _| {
                seen.push(Event::Message(message.to_message()));
                ControlFlow::Continue(())
            });
            if lent > 0 {
                continue;
            }
            let Some(event) = conn.poll_event() else {
                break;
            };
            seen.push(event);
        }
    }

    /// Streamed messages come in as many pieces as reads: compared as the
    /// pieces' bytes joined, marked by where each message starts and ends.
    fn merge_pieces(events: Vec<Event>) -> Vec<(String, Vec<u8>)> {
        let mut merged: Vec<(String, Vec<u8>)> = Vec::new();
        let mut open = false;
        for event in events {
            match event {
                Event::Fragment(piece) => {
                    if !open {
                        merged.push((format!("{:?} pieces", piece.kind), Vec::new()));
                    }
                    merged.last_mut().expect("pushed").1.extend_from_slice(&piece.data);
                    open = !piece.last;
                }
                other => merged.push((format!("{other:?}"), Vec::new())),
            }
        }
        merged
    }

    #[test]
    fn whole_and_byte_by_byte_arrival_agree() {
        let mut limited = Config::default();
        limited.max_message_size = 300;
        let mut framed = Config::default();
        framed.max_frame_size = 200;
        let mut streamed = Config::default();
        streamed.stream_threshold = Some(100);
        let configs = [Config::default(), limited, framed, streamed];
        for (role, mask) in [(Role::Server, Some([1, 2, 3, 4])), (Role::Client, None)] {
            let f = |opcode: u8, fin: bool, rsv: u8, payload: &[u8]| frame(opcode, fin, rsv, mask, payload);
            let wrong_mask = if mask.is_some() { None } else { Some([9, 8, 7, 6]) };
            let inputs: Vec<Vec<u8>> = vec![
                [f(1, true, 0, "κόσμε".as_bytes()), f(2, true, 0, &[5; 20])].concat(),
                [f(2, true, 0, b""), f(1, true, 0, b"")].concat(),
                [
                    f(2, true, 0, &[1; 125]),
                    f(2, true, 0, &[2; 126]),
                    f(2, true, 0, &[3; 300]),
                ]
                .concat(),
                [f(2, true, 0, &[4; 301]), f(2, true, 0, b"after")].concat(),
                [f(2, true, 0, &[6; 65535]), f(2, true, 0, &[7; 65536])].concat(),
                [f(1, true, 0, b"ok"), f(1, true, 0, &[0xce]), f(1, true, 0, b"never")].concat(),
                [f(2, true, RSV1, b"rsv"), f(2, true, 0, b"never")].concat(),
                [f(1, false, 0, b"fr"), f(2, true, 0, b"inside"), f(0, true, 0, b"ag")].concat(),
                [f(1, false, 0, b"fr"), f(0, true, 0, b"ag"), f(2, true, 0, b"next")].concat(),
                [f(8, true, 0, &[3, 232]), f(2, true, 0, b"after close")].concat(),
                [frame(2, true, 0, wrong_mask, b"wrong mask")].concat(),
                [f(3, true, 0, b"reserved"), f(2, true, 0, b"never")].concat(),
            ];
            for (c, config) in configs.iter().enumerate() {
                for (i, input) in inputs.iter().enumerate() {
                    let whole = run(role, config, input, Arrival::Whole);
                    assert_eq!(
                        whole,
                        run(role, config, input, Arrival::ByteByByte),
                        "{role:?}, config {c}, input {i}"
                    );
                    assert_eq!(
                        whole,
                        run(role, config, input, Arrival::Lent),
                        "lent: {role:?}, config {c}, input {i}"
                    );
                    assert_eq!(
                        whole,
                        run(role, config, input, Arrival::LentMany),
                        "lent many: {role:?}, config {c}, input {i}"
                    );
                    for chunk in [1, 7, 1000, input.len()] {
                        assert_eq!(
                            whole,
                            run(role, config, input, Arrival::ReadAndLend(chunk)),
                            "read and lent in reads of {chunk}: {role:?}, config {c}, input {i}"
                        );
                        assert_eq!(
                            whole,
                            run(role, config, input, Arrival::ReadAndTake(chunk)),
                            "read and taken in reads of {chunk}: {role:?}, config {c}, input {i}"
                        );
                    }
                }
            }
        }
    }
}

/// `lend_message`: messages lent in place and answered through the
/// outbox.
mod lent {
    use super::*;

    /// A server echoes client frames of every size class, lent (answered
    /// with `Outbox::send` while lent) and owned (`poll_event`, `send`):
    /// the same output, the same counters, and every message was lent.
    #[test]
    fn a_lent_echo_writes_what_an_owned_echo_writes() {
        let mut framed = Config::default();
        framed.max_send_frame_size = Some(100);
        for config in [Config::default(), framed] {
            lent_and_owned_echoes_agree(config.clone(), false);
            lent_and_owned_echoes_agree(config, true);
        }
    }

    /// `many`: lent with `lend_messages`, as many as it lends in a call.
    fn lent_and_owned_echoes_agree(config: Config, many: bool) {
        // Lent in place under 16 KiB; the larger ones are handed out owned.
        let sizes = [0, 1, 20, 125, 126, 300, 4096, 16383, 16384, 65535];
        let lendable = 2 * sizes.iter().filter(|&&n| n < 16 * 1024).count();
        let mut input = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..n).map(|b| (b * 7 + i) as u8).collect();
            input.extend(cf(2, true, &payload));
            let text: String = (0..n).map(|b| char::from(b'a' + (b % 26) as u8)).collect();
            input.extend(cf(1, true, text.as_bytes()));
        }
        let mut owned = server_with(config.clone());
        owned.handle_read(&input, now());
        let mut echoed = 0;
        while let Some(event) = owned.poll_event() {
            let Event::Message(message) = event else {
                panic!("not a message: {event:?}");
            };
            owned.send(message).expect("open");
            echoed += 1;
        }
        assert_eq!(echoed, 2 * sizes.len());

        let mut lent = server_with(config);
        lent.handle_read(&input, now());
        let (mut in_place, mut owned_ones) = (0, 0);
        loop {
            if many {
                let n = lent.lend_messages(|message, mut outbox| {
                    outbox.send(message).expect("open");
                    ControlFlow::Continue(())
                });
                in_place += n;
                if n > 0 {
                    continue;
                }
            } else if let Some(()) = lent.lend_message(|message, mut outbox| outbox.send(message).expect("open")) {
                in_place += 1;
                continue;
            }
            match lent.poll_event() {
                Some(Event::Message(message)) => {
                    assert!(message.len() >= 16 * 1024, "{} bytes not lent", message.len());
                    lent.outbox().send(MessageRef::from(&message)).expect("open");
                    owned_ones += 1;
                }
                None => break,
                Some(other) => panic!("not a message: {other:?}"),
            }
        }
        assert_eq!(in_place, lendable);
        assert_eq!(in_place + owned_ones, 2 * sizes.len());
        assert_eq!(transmitted(&mut lent), transmitted(&mut owned));
        assert_eq!(lent.stats(), owned.stats());
    }

    /// Nothing is lent while parsed events wait (they come first), nor a
    /// message that is not whole yet; it is lent once its last byte came.
    #[test]
    fn events_first_and_only_whole_messages() {
        let mut conn = server();
        let ping = cf(9, true, b"p");
        let message = cf(2, true, b"hello");
        conn.handle_read(&[ping, message[..4].to_vec()].concat(), now());
        // A ping is not lent, and not parsed by `lend_message` either.
        assert!(conn.lend_message(|_, _| ()).is_none());
        assert!(matches!(conn.poll_event(), Some(Event::Ping(_))));
        assert!(conn.lend_message(|_, _| ()).is_none(), "not whole yet");
        assert!(conn.poll_event().is_none());
        conn.handle_read(&message[4..], now());
        let got = conn.lend_message(|m, _| m.to_message());
        assert_eq!(got, Some(Message::Binary(Bytes::from_static(b"hello"))));
        assert!(conn.lend_message(|_, _| ()).is_none());
        assert!(conn.poll_event().is_none());
        // The pong the ping asked for, then nothing else.
        assert_eq!(transmitted(&mut conn), frame(10, true, 0, None, b"p"));
    }

    /// Text that is not UTF-8 fails the connection as `poll_event` would:
    /// nothing lent, the error is the next event, close code 1007.
    #[test]
    fn invalid_text_fails_the_connection() {
        let mut conn = server();
        conn.handle_read(
            &[cf(1, true, &[0xce, 0xba, 0xff]), cf(2, true, b"never")].concat(),
            now(),
        );
        assert!(conn.lend_message(|_, _| ()).is_none());
        let rest = events(&mut conn);
        assert!(
            rest.iter()
                .any(|e| matches!(e, Event::Closed(c) if c.code == CloseCode::INVALID_PAYLOAD)),
            "{rest:?}"
        );
        assert!(conn.lend_message(|_, _| ()).is_none());
    }

    /// A client's answer through the outbox is masked like any other.
    #[test]
    fn a_client_answers_masked() {
        let mut conn = client();
        conn.handle_read(&frame(1, true, 0, None, "κόσμε".as_bytes()), now());
        let sent = conn.lend_message(|message, mut outbox| {
            assert_eq!(message, MessageRef::Text("κόσμε"));
            outbox.send(message).expect("open");
            outbox.pending_transmit()
        });
        let out = transmitted(&mut conn);
        assert_eq!(sent, Some(out.len()));
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 10, "masked, 10 bytes");
        let mut payload = out[6..].to_vec();
        crate::mask::apply_mask_bytewise(&mut payload, [out[2], out[3], out[4], out[5]]);
        assert_eq!(payload, "κόσμε".as_bytes());
    }

    /// `lend_messages` lends every whole small message at the front, in
    /// order, in one call; stops at what it cannot lend (a ping, a message
    /// of 16 KiB), which `poll_event` takes; lends again after it.
    #[test]
    fn many_are_lent_in_one_call_up_to_what_cannot_be() {
        let mut conn = server();
        let big = vec![7u8; 16 * 1024];
        conn.handle_read(
            &[
                cf(2, true, b"one"),
                cf(1, true, "two".as_bytes()),
                cf(2, true, b""),
                cf(9, true, b"ping"),
                cf(2, true, b"four"),
                cf(2, true, &big),
                cf(1, true, b"six"),
            ]
            .concat(),
            now(),
        );
        let mut got = Vec::new();
        let lend = |conn: &mut Connection, got: &mut Vec<Message>| {
            conn.lend_messages(|message, _| {
                got.push(message.to_message());
                ControlFlow::Continue(())
            })
        };
        assert_eq!(lend(&mut conn, &mut got), 3);
        assert_eq!(lend(&mut conn, &mut got), 0, "the ping is next");
        assert!(matches!(conn.poll_event(), Some(Event::Ping(_))));
        assert_eq!(lend(&mut conn, &mut got), 1);
        assert_eq!(lend(&mut conn, &mut got), 0, "16 KiB is handed out owned");
        assert_eq!(conn.poll_event(), Some(Event::Message(Message::Binary(big.into()))));
        assert_eq!(lend(&mut conn, &mut got), 1);
        assert_eq!(lend(&mut conn, &mut got), 0);
        assert!(conn.poll_event().is_none());
        let want: Vec<Message> = vec![
            Message::Binary(Bytes::from_static(b"one")),
            Message::Text("two".into()),
            Message::Binary(Bytes::new()),
            Message::Binary(Bytes::from_static(b"four")),
            Message::Text("six".into()),
        ];
        assert_eq!(got, want);
        assert_eq!(conn.stats().messages_received, 6, "the data messages");
        assert!(conn.recv.is_empty());
    }

    /// `ControlFlow::Break` stops after the message it was returned for;
    /// the next call goes on from the one after.
    #[test]
    fn break_stops_after_the_message() {
        let mut conn = server();
        conn.handle_read(
            &[cf(2, true, b"a"), cf(2, true, b"b"), cf(2, true, b"c")].concat(),
            now(),
        );
        let mut got = Vec::new();
        let n = conn.lend_messages(|message, _| {
            got.push(message.as_bytes().to_vec());
            ControlFlow::Break(())
        });
        assert_eq!((n, &got[..]), (1, &[b"a".to_vec()][..]));
        let n = conn.lend_messages(|message, _| {
            got.push(message.as_bytes().to_vec());
            ControlFlow::Continue(())
        });
        assert_eq!(n, 2);
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    /// Invalid UTF-8 in the middle of a batch: the messages before it are
    /// lent, it is not, and the connection fails with 1007 as `poll_event`
    /// would have it; nothing after it is lent.
    #[test]
    fn invalid_text_in_a_batch_fails_after_the_valid_ones() {
        let mut conn = server();
        conn.handle_read(
            &[
                cf(2, true, b"ok"),
                cf(1, true, &[0xce, 0xba, 0xff]),
                cf(2, true, b"never"),
            ]
            .concat(),
            now(),
        );
        let mut got = Vec::new();
        let n = conn.lend_messages(|message, _| {
            got.push(message.to_message());
            ControlFlow::Continue(())
        });
        assert_eq!(n, 1);
        assert_eq!(got, [Message::Binary(Bytes::from_static(b"ok"))]);
        let rest = events(&mut conn);
        assert!(
            rest.iter()
                .any(|e| matches!(e, Event::Closed(c) if c.code == CloseCode::INVALID_PAYLOAD)),
            "{rest:?}"
        );
        assert_eq!(conn.lend_messages(|_, _| ControlFlow::Continue(())), 0);
    }
}

/// The short-frame path of `send_with` (a server's message under 126
/// bytes, no extension) writes what the general path writes.
mod short_frames {
    use super::*;

    #[test]
    fn a_servers_messages_of_every_short_length_are_framed_as_the_rfc_says() {
        for max in [None, Some(0), Some(50)] {
            let mut config = Config::default();
            config.max_send_frame_size = max;
            let mut conn = server_with(config);
            for len in 0..=130 {
                let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                conn.send(Message::Binary(payload.clone().into())).unwrap();
                let text = String::from_utf8(payload.clone()).unwrap();
                conn.send(Message::Text(text.as_str().into())).unwrap();
                let mut expected = Vec::new();
                for opcode in [2, 1] {
                    match max {
                        // Split by the frame size limit.
                        Some(max) if max > 0 && len > max => {
                            for (i, piece) in payload.chunks(max).enumerate() {
                                let op = if i == 0 { opcode } else { 0 };
                                let last = (i + 1) * max >= len;
                                expected.extend(frame(op, last, 0, None, piece));
                            }
                        }
                        _ => expected.extend(frame(opcode, true, 0, None, &payload)),
                    }
                }
                assert_eq!(transmitted(&mut conn), expected, "{len} bytes, limit {max:?}");
            }
            assert_eq!(conn.stats().messages_sent, 2 * 131);
            assert_eq!(conn.stats().payload_bytes_sent, 2 * (0..=130).sum::<u64>());
        }
    }

    #[test]
    fn nothing_is_sent_once_closing_or_while_a_message_is_fragmented() {
        let mut conn = server();
        conn.send_fragment(DataKind::Binary, b"part", false).unwrap();
        assert_eq!(
            conn.send(Message::Binary(Bytes::from_static(b"x"))),
            Err(SendError::FragmentOrder)
        );
        conn.send_fragment(DataKind::Binary, b"", true).unwrap();
        conn.close(CloseCode::NORMAL, "", now()).unwrap();
        assert_eq!(
            conn.send(Message::Binary(Bytes::from_static(b"x"))),
            Err(SendError::Closed)
        );
    }
}

/// A large message's payload is split off the end of the receive buffer,
/// which is left empty with no room but still pointing into the payload's
/// allocation. The connection must not keep that allocation alive once the
/// application dropped the payload: an idle connection would hold a whole
/// message (unseen: its buffer's capacity is zero) until its next read.
/// Whatever way the message came: its frame in several reads, all of it in
/// one, or in fragments; recycling buffers or not. (Recycling, the thread
/// keeps its large buffers, which a large frame may have arrived in: that
/// hold is the thread's, at most 4 MiB whatever its number of
/// connections, and is let go of here to see the connection's.)
#[test]
fn a_received_payload_is_the_only_hold_on_its_allocation() {
    let payload = vec![7u8; 1 << 20];
    let half = payload.len() / 2;
    let single = cf(0x2, true, &payload);
    let mut fragmented = cf(0x2, false, &payload[..half]);
    fragmented.extend_from_slice(&cf(0x0, true, &payload[half..]));
    for recycling in [false, true] {
        for (wire, step) in [(&single, 256 * 1024), (&single, single.len()), (&fragmented, 100_000)] {
            let mut s = server();
            s.set_buffer_recycling(recycling);
            let mut at = 0;
            let message = loop {
                assert!(at < wire.len(), "the whole message was read");
                let n = s.read_into(4096, 64 * 1024, |buf| {
                    let n = step.min(wire.len() - at);
                    buf.put_slice(&wire[at..at + n]);
                    n
                });
                at += n;
                s.handle_received(now());
                if let Some(event) = s.poll_event() {
                    break event;
                }
            };
            s.recycle_buffers();
            crate::spare::drop_large();
            let Event::Message(Message::Binary(received)) = message else {
                panic!("{message:?}");
            };
            assert_eq!(received.len(), payload.len());
            assert!(
                received.is_unique(),
                "recycling {recycling}, reads of {step}: the connection holds the payload's allocation"
            );
        }
    }
}
