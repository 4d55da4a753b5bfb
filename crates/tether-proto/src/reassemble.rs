//! Whole messages from streamed pieces.

use bytes::{Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::message::{DataKind, Fragment, Message, Utf8Bytes};
use crate::utf8;

/// Puts the [`Fragment`]s of a streamed message back together into a
/// [`Message`]: for an adapter or application that reads some messages
/// piece by piece (see [`Config::stream_threshold`](crate::Config::stream_threshold))
/// and wants others whole.
///
/// Text is not validated again: each text piece a connection makes was
/// validated as it arrived and holds whole code points, and it carries the
/// proof. A fragment built by hand ([`Fragment::new`]), or one whose `data`
/// was replaced, carries none; a message with such a piece is validated
/// once, whole, at its end. Either way the text of the message is valid
/// UTF-8.
///
/// ```
/// use bytes::Bytes;
/// use tether_proto::{DataKind, Fragment, Message, Reassembler};
///
/// let mut reassembler = Reassembler::new();
/// let first = Fragment::new(DataKind::Text, Bytes::from_static("h\u{e9}".as_bytes()), true, false);
/// let last = Fragment::new(DataKind::Text, Bytes::from_static(b"llo"), false, true);
/// assert_eq!(reassembler.push(first), Ok(None));
/// assert_eq!(reassembler.push(last), Ok(Some(Message::Text("h\u{e9}llo".into()))));
/// ```
#[derive(Debug, Default)]
pub struct Reassembler {
    /// The message in progress (boxed: most connections never need one).
    partial: Option<Box<Partial>>,
}

#[derive(Debug)]
struct Partial {
    kind: DataKind,
    buf: BytesMut,
    /// Every text piece so far carried the connection's proof of validity.
    validated: bool,
}

impl Reassembler {
    /// A reassembler with no message in progress.
    pub const fn new() -> Self {
        Self { partial: None }
    }

    /// Adds the next piece; returns the whole message with its last piece.
    ///
    /// Errors, after which no message is in progress:
    /// - [`ProtocolError::InvalidUtf8`]: a text message with pieces built by
    ///   hand is not UTF-8 (pieces from a connection never are);
    /// - [`ProtocolError::ExpectedContinuation`]: a first piece, or a piece
    ///   of the other kind, while a message is in progress;
    /// - [`ProtocolError::UnexpectedContinuation`]: a piece that is not a
    ///   first one while no message is in progress.
    pub fn push(&mut self, fragment: Fragment) -> Result<Option<Message>, ProtocolError> {
        let validated = fragment.kind == DataKind::Binary || fragment.validated_text().is_some();
        match &mut self.partial {
            None if !fragment.first => Err(ProtocolError::UnexpectedContinuation),
            None if fragment.last => {
                // A message in one piece: handed on without a copy.
                message(fragment.kind, fragment.data, validated).map(Some)
            }
            None => {
                self.partial = Some(Box::new(Partial {
                    kind: fragment.kind,
                    buf: BytesMut::from(&fragment.data[..]),
                    validated,
                }));
                Ok(None)
            }
            Some(partial) if fragment.first || partial.kind != fragment.kind => {
                self.partial = None;
                Err(ProtocolError::ExpectedContinuation)
            }
            Some(partial) => {
                partial.buf.extend_from_slice(&fragment.data);
                partial.validated &= validated;
                if !fragment.last {
                    return Ok(None);
                }
                let Some(partial) = self.partial.take() else {
                    return Ok(None);
                };
                let Partial { kind, buf, validated } = *partial;
                message(kind, buf.freeze(), validated).map(Some)
            }
        }
    }

    /// Takes the message in progress as it is, for a reader that goes on
    /// with the rest piece by piece: its kind and the bytes so far. Text
    /// may end inside a code point only if pieces were built by hand.
    pub fn take_partial(&mut self) -> Option<(DataKind, Bytes)> {
        self.partial.take().map(|partial| (partial.kind, partial.buf.freeze()))
    }

    /// Drops the message in progress.
    pub fn clear(&mut self) {
        self.partial = None;
    }

    /// Whether a message is in progress.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// The bytes of the message in progress so far (0 when none).
    pub fn len(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.buf.len())
    }

    /// Whether no bytes are held (no message in progress, or only empty
    /// pieces so far).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The message, validating text that carries no proof.
fn message(kind: DataKind, payload: Bytes, validated: bool) -> Result<Message, ProtocolError> {
    Ok(match kind {
        DataKind::Binary => Message::Binary(payload),
        DataKind::Text if validated => Message::Text(Utf8Bytes::from_validated(payload)),
        DataKind::Text => {
            utf8::validate(&payload).map_err(|_| ProtocolError::InvalidUtf8)?;
            Message::Text(Utf8Bytes::from_validated(payload))
        }
    })
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{Config, Connection, Event};

    fn hand(kind: DataKind, data: &'static [u8], first: bool, last: bool) -> Fragment {
        Fragment::new(kind, Bytes::from_static(data), first, last)
    }

    /// The fragments a streaming client connection makes of `payload` sent
    /// by a server as one text frame, arriving `piece` bytes at a time.
    fn connection_fragments(payload: &[u8], piece: usize) -> Vec<Fragment> {
        let now = Instant::now();
        let mut config = Config::default();
        config.stream_threshold = Some(0);
        let mut conn = Connection::client(config, Box::new(crate::SeededRandom::new(1)), now);
        let mut bytes = vec![0x81, 127];
        bytes.extend((payload.len() as u64).to_be_bytes());
        bytes.extend_from_slice(payload);
        let mut fragments = Vec::new();
        for chunk in bytes.chunks(piece) {
            conn.handle_read(chunk, now);
            while let Some(event) = conn.poll_event() {
                match event {
                    Event::Fragment(f) => fragments.push(f),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        fragments
    }

    mod rfc6455_5_4_fragmentation {
        use super::*;

        #[test]
        fn pieces_from_a_connection_become_the_message() {
            let text = "h€llo wörld ".repeat(1000);
            let fragments = connection_fragments(text.as_bytes(), 997);
            assert!(fragments.len() > 10);
            assert!(fragments.iter().all(|f| f.validated_text().is_some()));
            let mut r = Reassembler::new();
            let mut out = None;
            for f in fragments {
                assert!(out.is_none());
                out = r.push(f).unwrap();
            }
            assert_eq!(out, Some(Message::Text(text.as_str().into())));
            assert!(!r.in_progress());
        }

        #[test]
        fn a_single_piece_is_handed_on_without_a_copy() {
            let data = Bytes::from_static(b"whole");
            let ptr = data.as_ptr();
            let mut r = Reassembler::new();
            let message = r
                .push(Fragment::new(DataKind::Binary, data, true, true))
                .unwrap()
                .unwrap();
            assert_eq!(message.as_bytes().as_ptr(), ptr);
        }

        #[test]
        fn binary_pieces() {
            let mut r = Reassembler::new();
            assert_eq!(r.push(hand(DataKind::Binary, b"\xff\x00", true, false)), Ok(None));
            assert_eq!(r.len(), 2);
            assert_eq!(r.push(hand(DataKind::Binary, b"", false, false)), Ok(None));
            assert_eq!(
                r.push(hand(DataKind::Binary, b"\x01", false, true)),
                Ok(Some(Message::Binary(Bytes::from_static(b"\xff\x00\x01"))))
            );
        }

        #[test]
        fn out_of_order_pieces_are_refused() {
            let mut r = Reassembler::new();
            assert_eq!(
                r.push(hand(DataKind::Text, b"a", false, true)),
                Err(ProtocolError::UnexpectedContinuation)
            );
            r.push(hand(DataKind::Text, b"a", true, false)).unwrap();
            assert_eq!(
                r.push(hand(DataKind::Text, b"b", true, false)),
                Err(ProtocolError::ExpectedContinuation)
            );
            assert!(!r.in_progress());
            r.push(hand(DataKind::Text, b"a", true, false)).unwrap();
            assert_eq!(
                r.push(hand(DataKind::Binary, b"b", false, true)),
                Err(ProtocolError::ExpectedContinuation)
            );
        }

        #[test]
        fn take_partial_hands_over_the_bytes_so_far() {
            let mut r = Reassembler::new();
            r.push(hand(DataKind::Text, b"abc", true, false)).unwrap();
            assert_eq!(r.take_partial(), Some((DataKind::Text, Bytes::from_static(b"abc"))));
            assert!(!r.in_progress());
            assert_eq!(r.take_partial(), None);
        }
    }

    /// Soundness: no safe code can make a `Utf8Bytes` holding invalid
    /// UTF-8 through the reassembler.
    mod rfc6455_8_1_utf8 {
        use super::*;

        #[test]
        fn invalid_text_built_by_hand_is_refused() {
            let mut r = Reassembler::new();
            assert_eq!(
                r.push(hand(DataKind::Text, b"\xff", true, true)),
                Err(ProtocolError::InvalidUtf8)
            );
            r.push(hand(DataKind::Text, b"ok", true, false)).unwrap();
            assert_eq!(
                r.push(hand(DataKind::Text, b"\xc3", false, true)),
                Err(ProtocolError::InvalidUtf8)
            );
        }

        #[test]
        fn a_code_point_split_by_hand_across_pieces_is_accepted() {
            let euro = "€".as_bytes();
            let mut r = Reassembler::new();
            r.push(Fragment::new(
                DataKind::Text,
                Bytes::copy_from_slice(&euro[..1]),
                true,
                false,
            ))
            .unwrap();
            assert_eq!(
                r.push(Fragment::new(
                    DataKind::Text,
                    Bytes::copy_from_slice(&euro[1..]),
                    false,
                    true
                )),
                Ok(Some(Message::Text("€".into())))
            );
        }

        #[test]
        fn replacing_the_data_of_a_connection_piece_loses_its_proof() {
            let mut fragments = connection_fragments("valid text".as_bytes(), 3);
            assert!(fragments.len() > 1);
            let last = fragments.len() - 1;
            // Same kind, invalid bytes: a forgery.
            fragments[last].data = Bytes::from(vec![0xff; 2]);
            assert!(fragments[last].validated_text().is_none());
            assert_eq!(fragments[last].text(), None);
            let mut r = Reassembler::new();
            let mut result = Ok(None);
            for f in fragments {
                result = r.push(f);
            }
            assert_eq!(result, Err(ProtocolError::InvalidUtf8));
        }

        #[test]
        fn a_connection_piece_with_a_slice_of_its_own_data_is_checked() {
            let mut fragments = connection_fragments("ab€".as_bytes(), 100);
            assert_eq!(fragments.len(), 1);
            let f = &mut fragments[0];
            // A sub-slice of the validated bytes may split a code point.
            f.data = f.data.slice(..4);
            assert!(f.validated_text().is_none());
            assert_eq!(Reassembler::new().push(f.clone()), Err(ProtocolError::InvalidUtf8));
        }
    }
}
