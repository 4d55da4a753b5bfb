//! Property tests over the public API: whatever the messages, the framing and
//! the way the byte stream is split, the receiver sees the same events.
#![allow(clippy::unwrap_used)]

use std::io::IoSlice;
use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;
use tether_proto::{Config, Connection, DataKind, Event, Message, Reassembler, SeededRandom};

fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ".{0,200}".prop_map(Message::from),
        proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Message::from),
    ]
}

fn client(config: Config, now: Instant) -> Connection {
    Connection::client(config, Box::new(SeededRandom::new(42)), now)
}

/// Everything `conn` queued for the transport.
fn drain(conn: &mut Connection) -> Vec<u8> {
    std::iter::from_fn(|| conn.poll_transmit()).flatten().collect()
}

/// Feeds `wire` in pieces whose sizes cycle through `cuts`; returns the events.
fn feed_split(conn: &mut Connection, wire: &[u8], cuts: &[usize], now: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    let mut rest = wire;
    let mut sizes = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().map_or(rest.len(), |&n| n.max(1)).min(rest.len());
        conn.handle_read(&rest[..n], now);
        rest = &rest[n..];
        events.extend(std::iter::from_fn(|| conn.poll_event()));
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Client to server: any messages, any automatic fragmentation, any split
    /// of the byte stream arrive whole and in order.
    #[test]
    fn client_to_server_any_split(
        messages in proptest::collection::vec(any_message(), 1..8),
        frame_size in prop_oneof![Just(None), (1usize..500).prop_map(Some)],
        cuts in proptest::collection::vec(1usize..700, 0..8),
    ) {
        let now = Instant::now();
        let mut config = Config::default();
        config.max_send_frame_size = frame_size;
        let mut c = client(config, now);
        for m in &messages {
            c.send(m.clone()).unwrap();
        }
        c.ping(b"interleaved").unwrap();
        let wire = drain(&mut c);
        let mut s = Connection::server(Config::default(), now);
        let events = feed_split(&mut s, &wire, &cuts, now);
        let mut expected: Vec<Event> = messages.into_iter().map(Event::Message).collect();
        expected.push(Event::Ping(Bytes::from_static(b"interleaved")));
        prop_assert_eq!(events, expected);
    }

    /// Server to client, with explicit fragments and control frames in between.
    #[test]
    fn server_to_client_fragments(
        text in ".{0,300}",
        pieces in proptest::collection::vec(0usize..400, 0..6),
        cuts in proptest::collection::vec(1usize..50, 0..8),
    ) {
        let now = Instant::now();
        let mut s = Connection::server(Config::default(), now);
        let bytes = text.as_bytes();
        let mut bounds: Vec<usize> = pieces.into_iter().map(|p| p.min(bytes.len())).collect();
        bounds.sort_unstable();
        let mut start = 0;
        for end in bounds {
            s.send_fragment(DataKind::Text, &bytes[start..end], false).unwrap();
            s.pong(b"").unwrap();
            start = end;
        }
        s.send_fragment(DataKind::Text, &bytes[start..], true).unwrap();
        let wire = drain(&mut s);
        let mut c = client(Config::default(), now);
        let events = feed_split(&mut c, &wire, &cuts, now);
        let messages: Vec<_> = events.into_iter().filter(|e| !matches!(e, Event::Pong(_))).collect();
        prop_assert_eq!(messages, vec![Event::Message(Message::Text(text.as_str().into()))]);
    }

    /// Streaming: the pieces of a message, concatenated, are the message,
    /// whatever the threshold and the split; text pieces are each valid UTF-8.
    #[test]
    fn streamed_pieces_concatenate_to_the_message(
        message in any_message(),
        threshold in 0usize..500,
        cuts in proptest::collection::vec(1usize..300, 0..8),
    ) {
        let now = Instant::now();
        let mut c = client(Config::default(), now);
        c.send(message.clone()).unwrap();
        let wire = drain(&mut c);
        let mut config = Config::default();
        config.stream_threshold = Some(threshold);
        let mut s = Connection::server(config, now);
        let events = feed_split(&mut s, &wire, &cuts, now);
        let mut assembled = Vec::new();
        let mut whole = None;
        let mut reassembler = Reassembler::new();
        let mut reassembled = None;
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Fragment(f) => {
                    // The core's reassembler agrees, and finishes with the last piece.
                    match reassembler.push(f.clone()) {
                        Ok(Some(m)) => reassembled = Some(m),
                        Ok(None) => prop_assert!(!f.last),
                        Err(e) => prop_assert!(false, "Reassembler refused {:?}", e),
                    }
                    prop_assert_eq!(f.first, i == 0);
                    prop_assert_eq!(f.last, i == events.len() - 1);
                    prop_assert_eq!(f.kind, message.kind());
                    if f.kind == DataKind::Text {
                        prop_assert!(f.text().is_some());
                    }
                    assembled.extend_from_slice(&f.data);
                }
                Event::Message(m) => whole = Some(m.clone()),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        match whole {
            Some(m) => {
                prop_assert_eq!(events.len(), 1);
                prop_assert!(threshold > 0 && message.len() < threshold);
                prop_assert_eq!(m, message);
            }
            None => {
                prop_assert_eq!(&assembled[..], message.as_bytes());
                prop_assert_eq!(reassembled, Some(message));
            }
        }
    }

    /// Output offered as slices: whatever the partial writes (each taking
    /// any number of bytes of what is offered), the bytes on the wire are
    /// those `poll_transmit` hands out, and the peer gets every message.
    #[test]
    fn partial_writes_give_the_same_stream(
        messages in proptest::collection::vec(any_message(), 1..8),
        big in proptest::option::of(16_384usize..40_000),
        writes in proptest::collection::vec(0usize..5000, 1..12),
        max_slices in 1usize..5,
    ) {
        let now = Instant::now();
        let queue = |s: &mut Connection| {
            for m in &messages {
                s.send(m.clone()).unwrap();
            }
            if let Some(len) = big {
                // A payload the server offers in place.
                s.send(Message::Binary(vec![0xab; len].into())).unwrap();
            }
            s.ping(b"p").unwrap();
        };
        let mut reference = Connection::server(Config::default(), now);
        queue(&mut reference);
        let expected = drain(&mut reference);

        let mut s = Connection::server(Config::default(), now);
        queue(&mut s);
        let mut wire = Vec::new();
        let mut sizes = writes.iter().cycle();
        let mut stalls = 0;
        while s.pending_transmit() > 0 {
            let mut slices = [IoSlice::new(&[]); 4];
            let count = s.transmit_slices(&mut slices[..max_slices]);
            prop_assert!(count > 0);
            let offered: usize = slices[..count].iter().map(|x| x.len()).sum();
            let n = sizes.next().copied().unwrap_or(0).min(offered);
            let mut left = n;
            for slice in &slices[..count] {
                let take = left.min(slice.len());
                wire.extend_from_slice(&slice[..take]);
                left -= take;
            }
            s.advance_transmit(n);
            stalls = if n == 0 { stalls + 1 } else { 0 };
            if stalls > writes.len() {
                // Every size was 0: the rest in one go.
                let rest: Vec<u8> = s.transmit_chunks().flatten().copied().collect();
                wire.extend_from_slice(&rest);
                s.advance_transmit(rest.len());
            }
        }
        prop_assert_eq!(&wire, &expected);
        let mut c = client(Config::default(), now);
        let events = feed_split(&mut c, &wire, &[], now);
        let received: Vec<Message> = events
            .into_iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        prop_assert_eq!(received.len(), messages.len() + usize::from(big.is_some()));
        prop_assert_eq!(&received[..messages.len()], &messages[..]);
    }
}
