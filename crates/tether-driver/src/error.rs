//! Errors.

use std::fmt;
use std::io;

use tether_proto::handshake::HandshakeError;
use tether_proto::{CloseCode, ProtocolError, SendError};

/// What went wrong on a WebSocket connection, or while opening one.
///
/// Each variant says what happened and what a program can do about it;
/// the enum may grow, so match with a wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed (connection refused, reset, DNS lookup failed...).
    Io(io::Error),
    /// The TLS handshake or the TLS session failed (unknown issuer, name
    /// mismatch, protocol alert...).
    #[cfg(feature = "tls")]
    Tls(rustls::Error),
    /// The host name of a `wss://` URI is not a valid TLS server name.
    #[cfg(feature = "tls")]
    InvalidServerName(String),
    /// The client's connect timeout passed before the connection was open
    /// (it covers DNS, TCP, TLS and the opening handshake).
    ConnectTimeout,
    /// The opening handshake failed. A server's refusal is
    /// [`HandshakeError::Rejected`] with its status, headers and body;
    /// [`HandshakeError::status`] is what a server answered for the others.
    Handshake(HandshakeError),
    /// The server application answered the request with a plain HTTP
    /// response (a page, a 404...) instead of accepting a WebSocket; the
    /// response was sent and the transport closed.
    NotWebSocket(http::StatusCode),
    /// The peer violated the protocol; the connection was failed with the
    /// close code of [`ProtocolError::close_code`].
    Protocol(ProtocolError),
    /// The peer closed the connection with this code and reason: nothing
    /// more can be sent.
    ClosedByPeer {
        /// The code the peer sent (1005 when its close frame had none).
        code: CloseCode,
        /// The reason the peer gave.
        reason: String,
    },
    /// This end closed the connection (or it already failed): nothing more
    /// can be sent.
    Closed,
    /// Nothing was received for the configured idle timeout: the peer is gone
    /// or unreachable. The connection is closed.
    IdleTimeout,
    /// Output waited for the send timeout without the transport taking any
    /// of it: the peer stopped reading. What was not written is lost (this
    /// error says so) and the transport is closed.
    SendTimeout,
    /// The peer did not answer our close frame (or, for a client, the server
    /// did not close the transport) within the close timeout.
    CloseTimeout,
    /// The transport ended without a close handshake (close code 1006).
    AbnormalClosure,
    /// A command was refused and nothing was sent: a control payload over
    /// 125 bytes, an invalid close code or reason, fragments out of order.
    Send(SendError),
}

impl Error {
    /// The close code that describes this error, where one applies: the
    /// code we failed the connection with (1002, 1007, 1009...), the peer's
    /// code, or 1006 for a connection lost without a close handshake.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Self::Protocol(e) => Some(e.close_code()),
            Self::ClosedByPeer { code, .. } => Some(*code),
            Self::IdleTimeout | Self::SendTimeout | Self::CloseTimeout | Self::AbnormalClosure => {
                Some(CloseCode::ABNORMAL)
            }
            _ => None,
        }
    }

    /// Classifies an I/O error: a TLS failure surfaces from tokio-rustls as
    /// an `io::Error` that wraps a `rustls::Error`.
    pub fn from_io(error: io::Error) -> Self {
        #[cfg(feature = "tls")]
        if error.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            if let Some(Ok(tls)) = error.into_inner().map(|b| b.downcast::<rustls::Error>()) {
                return Self::Tls(*tls);
            }
            return Self::Io(io::Error::other("TLS failure"));
        }
        Self::Io(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            #[cfg(feature = "tls")]
            Self::Tls(e) => write!(f, "TLS error: {e}"),
            #[cfg(feature = "tls")]
            Self::InvalidServerName(name) => write!(f, "{name:?} is not a valid TLS server name"),
            Self::ConnectTimeout => f.write_str("connect timeout: the connection did not open in time"),
            Self::Handshake(e) => write!(f, "opening handshake failed: {e}"),
            Self::NotWebSocket(status) => {
                write!(f, "the request was answered with HTTP status {status}, not a WebSocket")
            }
            Self::Protocol(e) => write!(f, "protocol violation by the peer ({}): {e}", e.close_code()),
            Self::ClosedByPeer { code, reason } => {
                write!(f, "the peer closed the connection with code {code}")?;
                if !reason.is_empty() {
                    write!(f, " ({reason:?})")?;
                }
                Ok(())
            }
            Self::Closed => f.write_str("the connection is closed: nothing more can be sent"),
            Self::IdleTimeout => f.write_str("idle timeout: nothing received from the peer in time"),
            Self::SendTimeout => {
                f.write_str("send timeout: the peer took none of our output in time; unsent output was dropped")
            }
            Self::CloseTimeout => f.write_str("close timeout: the peer did not complete the close handshake"),
            Self::AbnormalClosure => f.write_str("the connection was lost without a close handshake (1006)"),
            Self::Send(e) => write!(f, "refused to send: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            #[cfg(feature = "tls")]
            Self::Tls(e) => Some(e),
            Self::Handshake(e) => Some(e),
            Self::Protocol(e) => Some(e),
            Self::Send(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Self::from_io(error)
    }
}

impl From<HandshakeError> for Error {
    fn from(error: HandshakeError) -> Self {
        Self::Handshake(error)
    }
}

impl From<ProtocolError> for Error {
    fn from(error: ProtocolError) -> Self {
        Self::Protocol(error)
    }
}

impl From<Error> for io::Error {
    /// For the `AsyncRead` of a message reader: the error rides inside an
    /// `io::Error` (recover it with `get_ref` and `downcast_ref::<Error>`).
    fn from(error: Error) -> Self {
        match error {
            Error::Io(e) => e,
            other => Self::other(other),
        }
    }
}
