//! Close codes and close frame payloads (RFC 6455 sections 5.5.1, 7.4).

use core::fmt;

use bytes::{BufMut, Bytes};

use crate::error::ProtocolError;
use crate::frame::MAX_CONTROL_PAYLOAD;

/// A close status code (RFC 6455 section 7.4).
///
/// Any `u16` can be represented; [`CloseCode::is_sendable`] tells whether it
/// may appear in a close frame on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present. Reported locally, never sent.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection closed without a close frame. Reported locally, never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: data inconsistent with the message type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violates the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected the server to negotiate an extension.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (IANA registry).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: bad gateway (IANA registry).
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: the TLS handshake failed. Reported locally, never sent.
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// A code from its number.
    pub const fn new(code: u16) -> Self {
        Self(code)
    }

    /// The number.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether the code may be sent in a close frame (RFC 6455 section 7.4):
    /// the defined codes other than 1005, 1006 and 1015, the IANA-registered
    /// 1012 to 1014, and the ranges 3000-3999 (libraries, frameworks) and
    /// 4000-4999 (private use).
    pub const fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Largest close reason: a control payload of 125 bytes less the 2-byte code.
pub const MAX_REASON_LEN: usize = MAX_CONTROL_PAYLOAD - 2;

/// The content of a close frame: a code and a UTF-8 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, at most 123 bytes of UTF-8.
    pub reason: String,
}

/// Why a close frame could not be built from the caller's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidClose {
    /// The code may not be sent (1005, 1006, 1015, or outside the ranges of section 7.4).
    Code(CloseCode),
    /// The reason is longer than 123 bytes.
    ReasonTooLong(usize),
}

impl fmt::Display for InvalidClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "close code {code} may not be sent (RFC 6455 section 7.4)"),
            Self::ReasonTooLong(len) => {
                write!(
                    f,
                    "close reason is {len} bytes; at most {MAX_REASON_LEN} fit in a close frame"
                )
            }
        }
    }
}

impl std::error::Error for InvalidClose {}

/// What the connection answers when the peer starts the close handshake
/// ([`Config::close_reply`](crate::Config::close_reply)). The answer is sent
/// by the core as soon as the peer's close frame arrives (RFC 6455 section
/// 5.5.1: "It SHOULD do so as soon as practical"), so the application
/// chooses it ahead, not per close.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CloseReply {
    /// Echo the peer's code and reason (the default; section 5.5.1 allows
    /// it, and Python `websockets` and Node `ws` do the same). A close frame
    /// without a code is answered with 1000 and no reason.
    #[default]
    Echo,
    /// Answer every close with this code and reason, whatever the peer
    /// sent. Build it with [`CloseReply::with`], which checks them; a code
    /// that may not be sent is replaced by 1000, and a reason longer than
    /// 123 bytes is cut at a character boundary.
    Frame(CloseFrame),
}

impl CloseReply {
    /// Answers every close with `code` and `reason`, checked as for
    /// [`CloseFrame::new`].
    pub fn with(code: CloseCode, reason: impl Into<String>) -> Result<Self, InvalidClose> {
        CloseFrame::new(code, reason).map(Self::Frame)
    }
}

impl CloseFrame {
    /// Checks a code and reason that the application wants to send.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Result<Self, InvalidClose> {
        let reason = reason.into();
        if !code.is_sendable() {
            return Err(InvalidClose::Code(code));
        }
        if reason.len() > MAX_REASON_LEN {
            return Err(InvalidClose::ReasonTooLong(reason.len()));
        }
        Ok(Self { code, reason })
    }

    /// Parses the payload of a received close frame (RFC 6455 section 5.5.1).
    /// An empty payload is `Ok(None)` (status 1005 is then reported locally).
    pub fn parse(payload: &[u8]) -> Result<Option<Self>, ProtocolError> {
        match payload {
            [] => Ok(None),
            [_] => Err(ProtocolError::InvalidClosePayload),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = core::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Some(Self {
                    code,
                    reason: reason.to_owned(),
                }))
            }
        }
    }

    /// The payload of this close frame.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(2 + self.reason.len());
        out.put_u16(self.code.0);
        out.extend_from_slice(self.reason.as_bytes());
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_7_4_1_sendable_codes() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(code).is_sendable(), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(code).is_sendable(), "{code}");
        }
    }

    #[test]
    fn rfc6455_5_5_1_close_payload() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
        assert_eq!(CloseFrame::parse(&[0x03]), Err(ProtocolError::InvalidClosePayload));
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xed]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(CloseFrame::parse(&[0x03, 0xe8, 0xff]), Err(ProtocolError::InvalidUtf8));
        let frame = CloseFrame::parse(&[0x03, 0xe8, b'b', b'y', b'e']).unwrap().unwrap();
        assert_eq!(
            frame,
            CloseFrame {
                code: CloseCode::NORMAL,
                reason: "bye".into()
            }
        );
        assert_eq!(&frame.encode()[..], &[0x03, 0xe8, b'b', b'y', b'e']);
    }

    #[test]
    fn rfc6455_5_5_1_application_close_checked() {
        assert_eq!(
            CloseFrame::new(CloseCode::ABNORMAL, ""),
            Err(InvalidClose::Code(CloseCode::ABNORMAL))
        );
        assert_eq!(
            CloseFrame::new(CloseCode::NORMAL, "x".repeat(124)),
            Err(InvalidClose::ReasonTooLong(124))
        );
        assert!(CloseFrame::new(CloseCode::NORMAL, "é".repeat(61)).is_ok());
    }
}
