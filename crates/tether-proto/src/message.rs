//! Messages: what the application sends and receives.

use core::fmt;
use core::ops::Deref;

use bytes::Bytes;

use crate::utf8;

/// Bytes that are known to be valid UTF-8: text that can be shared without
/// copying and read as `&str` without validating again.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// An empty string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// Text from a static string, without allocating.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    /// Checks that `bytes` are UTF-8.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Bytes> {
        match utf8::validate(&bytes) {
            Ok(()) => Ok(Self(bytes)),
            Err(_) => Err(bytes),
        }
    }

    /// Wraps bytes already validated by the caller in this crate.
    pub(crate) const fn from_validated(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor guarantees the bytes are valid UTF-8
        // (`try_from_bytes` and the receive path validate; `From<String>` and
        // `From<&str>` start from a `str`), and the bytes are immutable.
        // Validating again on every access would cost a pass over the text.
        unsafe { core::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Converts into the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two kinds of data message (RFC 6455 section 5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

/// A whole data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// The message's kind.
    pub const fn kind(&self) -> DataKind {
        match self {
            Self::Text(_) => DataKind::Text,
            Self::Binary(_) => DataKind::Binary,
        }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Binary(bytes) => bytes,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as `Bytes`.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Self::Text(text) => text.into_bytes(),
            Self::Binary(bytes) => bytes,
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::Text(text.into())
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::Text(text.into())
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Binary(bytes.into())
    }
}

impl From<&[u8]> for Message {
    fn from(bytes: &[u8]) -> Self {
        Self::Binary(Bytes::copy_from_slice(bytes))
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Self {
        Self::Binary(bytes)
    }
}

/// A whole data message lent in place: its payload where it arrived (the
/// connection's receive buffer), for the time of a call, without a copy or
/// an allocation of its own (see
/// [`Connection::lend_message`](crate::Connection::lend_message)). Turn it
/// into an owned [`Message`] with [`to_message`](Self::to_message) (a
/// copy) to keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageRef<'a> {
    /// A text message (valid UTF-8).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> MessageRef<'a> {
    /// The message's kind.
    pub const fn kind(&self) -> DataKind {
        match self {
            Self::Text(_) => DataKind::Text,
            Self::Binary(_) => DataKind::Binary,
        }
    }

    /// The payload bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Binary(bytes) => bytes,
        }
    }

    /// The payload length in bytes.
    pub const fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An owned copy.
    pub fn to_message(&self) -> Message {
        match self {
            Self::Text(text) => Message::Text((*text).into()),
            Self::Binary(bytes) => Message::Binary(Bytes::copy_from_slice(bytes)),
        }
    }
}

impl<'a> From<&'a Message> for MessageRef<'a> {
    fn from(message: &'a Message) -> Self {
        match message {
            Message::Text(text) => Self::Text(text),
            Message::Binary(bytes) => Self::Binary(bytes),
        }
    }
}

impl<'a> From<&'a str> for MessageRef<'a> {
    fn from(text: &'a str) -> Self {
        Self::Text(text)
    }
}

impl<'a> From<&'a [u8]> for MessageRef<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Self::Binary(bytes)
    }
}

/// A piece of a message delivered as it arrives (see
/// [`Config::stream_threshold`](crate::Config::stream_threshold)).
///
/// The pieces of one message arrive in order, the first with `first` set and
/// the last with `last` set; no other message's pieces come in between. A text
/// piece never splits a code point, so each piece is valid UTF-8 by itself.
/// [`Reassembler`](crate::Reassembler) puts them back together without
/// validating the text again.
#[derive(Clone)]
pub struct Fragment {
    /// The message's kind.
    pub kind: DataKind,
    /// This piece's bytes (possibly empty on the last piece).
    pub data: Bytes,
    /// The first piece of the message.
    pub first: bool,
    /// The last piece of the message.
    pub last: bool,
    /// For a text piece made by a connection: the bytes `data` was made
    /// with, validated. `data` is a public field that can be replaced, so
    /// the proof holds only while `data` still views these very bytes (see
    /// [`Fragment::validated_text`]). Holding them keeps that memory alive
    /// and unchanged (`Bytes` is immutable), so equal pointers and lengths
    /// mean equal bytes.
    validated: Option<Utf8Bytes>,
}

impl Fragment {
    /// A fragment built by hand (for tests, or a reassembly of your own).
    /// Its text is not known to be valid: [`Reassembler`](crate::Reassembler)
    /// validates it.
    pub fn new(kind: DataKind, data: Bytes, first: bool, last: bool) -> Self {
        Self {
            kind,
            data,
            first,
            last,
            validated: None,
        }
    }

    /// A piece the connection made: text pieces were validated and never
    /// split a code point.
    pub(crate) fn from_connection(kind: DataKind, data: Bytes, first: bool, last: bool) -> Self {
        let validated = (kind == DataKind::Text).then(|| Utf8Bytes::from_validated(data.clone()));
        Self {
            kind,
            data,
            first,
            last,
            validated,
        }
    }

    /// The piece as text, for a text message: without validating again when
    /// the connection made this piece, checked otherwise (`None` if the
    /// bytes are not UTF-8).
    pub fn text(&self) -> Option<&str> {
        match self.kind {
            DataKind::Text => match self.validated_text() {
                Some(text) => Some(text.as_str()),
                None => core::str::from_utf8(&self.data).ok(),
            },
            DataKind::Binary => None,
        }
    }

    /// The piece as validated text, when the connection made it and `data`
    /// was not replaced since.
    pub(crate) fn validated_text(&self) -> Option<&Utf8Bytes> {
        self.validated.as_ref().filter(|v| {
            let v = v.as_bytes();
            v.as_ptr() == self.data.as_ptr() && v.len() == self.data.len()
        })
    }
}

impl PartialEq for Fragment {
    /// Fragments are equal when their public fields are: the same piece,
    /// whether made by a connection or by hand.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.data == other.data && self.first == other.first && self.last == other.last
    }
}

impl Eq for Fragment {}

impl fmt::Debug for Fragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fragment")
            .field("kind", &self.kind)
            .field("data", &self.data)
            .field("first", &self.first)
            .field("last", &self.last)
            .finish()
    }
}
