//! Checks on the events one connection emits, and a normal form of them that
//! does not depend on how the input was split.

use tether_proto::{CloseCause, Closed, Config, DataKind, Event, Message, Reassembler, MAX_REASON_LEN};

/// Largest control payload (RFC 6455 section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Largest frame header: 2 + 8 + 4 bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// One delivered item, with streamed messages joined back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A data message; `streamed` when it came as `Event::Fragment`s.
    Message {
        kind: DataKind,
        data: Vec<u8>,
        streamed: bool,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Closed(Closed),
}

/// Consumes the events of one connection and asserts what must hold
/// whatever the peer sent.
#[derive(Debug)]
pub struct EventChecker {
    max_message_size: u64,
    stream_threshold: Option<usize>,
    /// A `Closed` event was seen: nothing may follow it.
    pub closed: Option<Closed>,
    /// The streamed message being delivered.
    streaming: Option<(DataKind, Vec<u8>)>,
    /// The core's reassembly of the same fragments, checked against ours.
    reassembler: Reassembler,
    /// Everything delivered, in order.
    pub log: Vec<Item>,
}

impl EventChecker {
    pub fn new(config: &Config) -> Self {
        Self {
            max_message_size: config.max_message_size,
            stream_threshold: config.stream_threshold,
            closed: None,
            streaming: None,
            reassembler: Reassembler::new(),
            log: Vec::new(),
        }
    }

    pub fn event(&mut self, event: Event) {
        assert!(self.closed.is_none(), "event after Closed: {event:?}");
        match event {
            Event::Message(message) => {
                assert!(self.streaming.is_none(), "whole message inside a streamed one");
                let data = message.as_bytes();
                assert!(
                    data.len() as u64 <= self.max_message_size,
                    "message of {} bytes over max_message_size {}",
                    data.len(),
                    self.max_message_size
                );
                if let Some(threshold) = self.stream_threshold {
                    assert!(
                        data.len() < threshold,
                        "whole message of {} bytes at or over stream_threshold {threshold}",
                        data.len()
                    );
                }
                if let Message::Text(text) = &message {
                    // `Utf8Bytes::as_str` trusts the receive path: re-check.
                    assert!(
                        std::str::from_utf8(text.as_bytes()).is_ok(),
                        "text message is not UTF-8"
                    );
                }
                self.log.push(Item::Message {
                    kind: message.kind(),
                    data: data.to_vec(),
                    streamed: false,
                });
            }
            Event::Fragment(fragment) => {
                assert!(
                    self.stream_threshold.is_some(),
                    "fragment event without stream_threshold"
                );
                if fragment.kind == DataKind::Text {
                    assert!(
                        std::str::from_utf8(&fragment.data).is_ok(),
                        "text fragment is not UTF-8"
                    );
                    assert!(fragment.text().is_some());
                }
                match &mut self.streaming {
                    None => {
                        assert!(fragment.first, "first fragment of a message without `first`");
                        self.streaming = Some((fragment.kind, Vec::new()));
                    }
                    Some((kind, _)) => {
                        assert!(!fragment.first, "`first` fragment inside a streamed message");
                        assert_eq!(*kind, fragment.kind, "fragment kind changed within a message");
                    }
                }
                let reassembled = self.reassembler.push(fragment.clone());
                let Some((kind, data)) = &mut self.streaming else {
                    unreachable!()
                };
                data.extend_from_slice(&fragment.data);
                match reassembled {
                    Ok(Some(message)) => {
                        assert!(fragment.last, "Reassembler finished early");
                        assert_eq!(message.kind(), *kind);
                        assert_eq!(message.as_bytes(), &data[..], "Reassembler differs");
                        if let Message::Text(text) = &message {
                            assert!(std::str::from_utf8(text.as_bytes()).is_ok(), "reassembled text is not UTF-8");
                        }
                    }
                    Ok(None) => assert!(!fragment.last, "Reassembler did not finish"),
                    Err(e) => panic!("Reassembler refused the connection's fragments: {e:?}"),
                }
                assert!(
                    data.len() as u64 <= self.max_message_size,
                    "streamed message of {} bytes over max_message_size {}",
                    data.len(),
                    self.max_message_size
                );
                if fragment.last {
                    let item = Item::Message {
                        kind: *kind,
                        data: std::mem::take(data),
                        streamed: true,
                    };
                    self.log.push(item);
                    self.streaming = None;
                }
            }
            Event::Ping(payload) => {
                assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
                self.log.push(Item::Ping(payload.to_vec()));
            }
            Event::Pong(payload) => {
                assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
                self.log.push(Item::Pong(payload.to_vec()));
            }
            Event::Closed(closed) => {
                assert!(
                    closed.reason.len() <= MAX_REASON_LEN,
                    "close reason too long: {closed:?}"
                );
                if let CloseCause::Protocol(error) = &closed.cause {
                    assert_eq!(closed.code, error.close_code(), "close code does not match {error:?}");
                }
                // A streamed message cut short by the close is not compared:
                // how much of it was delivered depends on the split.
                self.streaming = None;
                self.reassembler.clear();
                self.closed = Some(closed.clone());
                self.log.push(Item::Closed(closed));
            }
            other => panic!("unknown event {other:?}"),
        }
    }
}
