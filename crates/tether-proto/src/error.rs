//! Errors.

use core::fmt;

use crate::close::{CloseCode, InvalidClose};

/// A violation of the protocol by the peer. Each maps to the close code that
/// is sent when the connection is failed (RFC 6455 section 7.1.7).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame used a reserved opcode (section 5.2).
    ReservedOpcode(u8),
    /// A frame set RSV bits that no negotiated extension defines (section 5.2).
    ReservedBits(u8),
    /// A 64-bit payload length had its most significant bit set (section 5.2).
    InvalidLength,
    /// A control frame carried more than 125 bytes (section 5.5).
    ControlFrameTooLong,
    /// A control frame had FIN clear (section 5.5).
    FragmentedControlFrame,
    /// A client sent an unmasked frame (section 5.1).
    UnmaskedFrame,
    /// A server sent a masked frame (section 5.1).
    MaskedFrame,
    /// A continuation frame arrived with no message to continue (section 5.4).
    UnexpectedContinuation,
    /// A new text or binary frame arrived inside a fragmented message (section 5.4).
    ExpectedContinuation,
    /// A text message, or a close reason, was not valid UTF-8 (section 8.1).
    InvalidUtf8,
    /// A frame's payload was over the configured `max_frame_size`.
    FrameTooLarge {
        /// The announced payload length.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A message was over the configured `max_message_size`.
    MessageTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A close frame had a 1-byte payload (section 5.5.1).
    InvalidClosePayload,
    /// A close frame carried a code that may not be sent (section 7.4).
    InvalidCloseCode(u16),
    /// An extension failed to decode a message (for example corrupt deflate data).
    Extension(String),
}

impl ProtocolError {
    /// The close code sent when the connection fails with this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedOpcode(op) => write!(f, "frame uses reserved opcode {op:#x}"),
            Self::ReservedBits(bits) => write!(f, "frame sets RSV bits {bits:#04x} that no extension negotiated"),
            Self::InvalidLength => f.write_str("64-bit frame length has its most significant bit set"),
            Self::ControlFrameTooLong => f.write_str("control frame payload is longer than 125 bytes"),
            Self::FragmentedControlFrame => f.write_str("control frame is fragmented"),
            Self::UnmaskedFrame => f.write_str("client sent an unmasked frame"),
            Self::MaskedFrame => f.write_str("server sent a masked frame"),
            Self::UnexpectedContinuation => f.write_str("continuation frame with no message to continue"),
            Self::ExpectedContinuation => f.write_str("new data frame inside a fragmented message"),
            Self::InvalidUtf8 => f.write_str("text is not valid UTF-8"),
            Self::FrameTooLarge { size, limit } => {
                write!(
                    f,
                    "frame of {size} bytes is over the limit of {limit} bytes (max_frame_size)"
                )
            }
            Self::MessageTooLarge { limit } => {
                write!(f, "message is over the limit of {limit} bytes (max_message_size)")
            }
            Self::InvalidClosePayload => f.write_str("close frame has a 1-byte payload"),
            Self::InvalidCloseCode(code) => write!(f, "close frame carries code {code}, which may not be sent"),
            Self::Extension(msg) => write!(f, "extension failed to decode a message: {msg}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why a command (send, ping, close) was refused. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent (or the connection failed): no more
    /// frames may follow (RFC 6455 section 5.5.1).
    Closed,
    /// A control frame payload over 125 bytes.
    ControlFrameTooLong(usize),
    /// A text fragment was not valid UTF-8 so far.
    InvalidUtf8,
    /// A fragment was sent with no message started, or a new message was
    /// started while a fragmented one is still open.
    FragmentOrder,
    /// An invalid close code or reason.
    InvalidClose(InvalidClose),
    /// An extension failed to encode the message.
    Extension(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the connection is closing or closed; nothing more can be sent"),
            Self::ControlFrameTooLong(len) => {
                write!(f, "control frame payload of {len} bytes; at most 125 are allowed")
            }
            Self::InvalidUtf8 => f.write_str("text fragment is not valid UTF-8"),
            Self::FragmentOrder => {
                f.write_str("fragments out of order: continue the open fragmented message, or start one first")
            }
            Self::InvalidClose(e) => fmt::Display::fmt(e, f),
            Self::Extension(msg) => write!(f, "extension failed to encode the message: {msg}"),
        }
    }
}

impl std::error::Error for SendError {}

impl From<InvalidClose> for SendError {
    fn from(e: InvalidClose) -> Self {
        Self::InvalidClose(e)
    }
}
