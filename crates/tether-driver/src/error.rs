//! Errors.

use std::fmt;
use std::io;

use tether_proto::handshake::HandshakeError;
use tether_proto::{CloseCause, CloseCode, Closed, ProtocolError, SendError};

/// What went wrong on a WebSocket connection, or while opening one.
///
/// Each variant says what happened and what a program can do about it;
/// the enum may grow, so match with a wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed (connection refused, reset...).
    Io(io::Error),
    /// The host name of the URI could not be resolved to an address (no
    /// such host, or no name server answered).
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        error: io::Error,
    },
    /// The TLS handshake or the TLS session failed (unknown issuer, name
    /// mismatch, protocol alert...).
    #[cfg(feature = "tls")]
    Tls(rustls::Error),
    /// The host name of a `wss://` URI is not a valid TLS server name.
    #[cfg(feature = "tls")]
    InvalidServerName(String),
    /// A certificate, key or root given for TLS could not be used (bad
    /// PEM, no certificate in it).
    #[cfg(feature = "tls")]
    TlsConfig(String),
    /// The client's connect timeout passed before the connection was open
    /// (it covers DNS, TCP, TLS and the opening handshake).
    ConnectTimeout,
    /// The opening handshake failed. A server's refusal is
    /// [`HandshakeError::Rejected`] with its status, headers and body;
    /// [`HandshakeError::status`] is what a server answered for the others.
    Handshake(HandshakeError),
    /// A redirect was not followed: it pointed to something other than a
    /// WebSocket URL, or from `wss://` down to `ws://` (see
    /// `ClientBuilder::allow_insecure_redirects`).
    RedirectRefused {
        /// The redirect's status.
        status: http::StatusCode,
        /// Where it pointed.
        location: String,
        /// Why it was not followed.
        reason: &'static str,
    },
    /// The server application answered the request with a plain HTTP
    /// response (a page, a 404...) instead of accepting a WebSocket; the
    /// response was sent and the transport closed.
    NotWebSocket(http::StatusCode),
    /// A proxy refused the tunnel or failed (see
    /// [`ProxyError`](crate::proxy::ProxyError)); a 407 or a SOCKS5
    /// authentication failure is
    /// [`ErrorKind::ProxyAuthenticationRequired`].
    Proxy(crate::proxy::ProxyError),
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

/// What kind of error an [`Error`] is: one value to match on to decide
/// what to do (retry, reconnect, fix the configuration, tell the user),
/// like the Windows runtime's `WebErrorStatus`. Get it with [`Error::kind`].
///
/// The enum may grow: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The host name could not be resolved ([`Error::Resolve`]).
    HostNotFound,
    /// Nothing listens at the address (TCP connection refused).
    ConnectionRefused,
    /// The transport was reset or aborted (TCP RST, broken pipe), or ended
    /// in the middle of the opening handshake.
    ConnectionReset,
    /// The transport ended without a close handshake (close code 1006,
    /// [`Error::AbnormalClosure`]).
    AbnormalClosure,
    /// The client's connect timeout passed ([`Error::ConnectTimeout`]).
    ConnectTimeout,
    /// A server's opening-handshake timeout passed: the client did not send
    /// its request in time.
    HandshakeTimeout,
    /// The peer took none of our output for the send timeout
    /// ([`Error::SendTimeout`]).
    SendTimeout,
    /// Nothing was received for the idle timeout ([`Error::IdleTimeout`]).
    IdleTimeout,
    /// The close handshake did not complete in time ([`Error::CloseTimeout`]).
    CloseTimeout,
    /// The peer's certificate is not signed by a trusted authority (unknown
    /// issuer, self-signed, bad signature).
    CertificateUntrusted,
    /// The peer's certificate has expired (or is not valid yet).
    CertificateExpired,
    /// The peer's certificate is not valid for the host name connected to.
    CertificateWrongName,
    /// Another certificate problem: revoked, badly encoded, not presented
    /// where one is required, or refused by the peer (a TLS alert about our
    /// certificate).
    CertificateInvalid,
    /// Another TLS failure (no common protocol version or cipher suite, a
    /// peer's alert, a corrupt record), or a host name that is not a valid
    /// TLS server name.
    Tls,
    /// The server answered the opening handshake with 401 Unauthorized:
    /// credentials are needed (see the `WWW-Authenticate` header of the
    /// [`HandshakeError::Rejected`]).
    Unauthorized,
    /// A proxy wants (other) credentials: an HTTP proxy answered 407 Proxy
    /// Authentication Required (its challenge is in
    /// [`ProxyError::Rejected`](crate::proxy::ProxyError::Rejected)), a
    /// SOCKS5 proxy asked for a password or refused it.
    ProxyAuthenticationRequired,
    /// A proxy refused the tunnel for another reason (a destination it does
    /// not allow, a server it could not reach), broke its protocol, or its
    /// URL is not valid ([`Error::Proxy`]).
    Proxy,
    /// The server answered the opening handshake with this status instead
    /// of accepting the WebSocket (403 for an Origin not allowed, 404...).
    Rejected(http::StatusCode),
    /// The opening handshake failed otherwise: the peer is not a WebSocket
    /// peer, or broke the handshake's rules (a wrong accept key, an
    /// extension or subprotocol not offered, a malformed request).
    HandshakeFailed,
    /// The server application answered the request with a plain HTTP
    /// response instead of a WebSocket ([`Error::NotWebSocket`]).
    NotWebSocket,
    /// The peer violated the protocol; the connection was failed with this
    /// close code (1002 protocol error, 1007 invalid payload...).
    ProtocolViolation(CloseCode),
    /// A received frame or message was over the configured limit
    /// (`max_frame_size`, `max_message_size`); the connection was failed
    /// with 1009.
    MessageTooBig,
    /// The connection was closed by a close handshake with code 1000, by
    /// either end: nothing more can be sent ([`Error::Closed`], or
    /// [`Error::ClosedByPeer`] with 1000).
    ClosedNormally,
    /// The peer closed the connection with this code, other than 1000
    /// (1001 going away, 1011 server error, 1013 try again later, an
    /// application's 4000-4999...).
    ClosedByPeer(CloseCode),
    /// A command was refused before anything was sent (a control payload
    /// over 125 bytes, an invalid close code, fragments out of order), the
    /// URI is not valid, or a certificate or key given for TLS is not.
    InvalidInput,
    /// Another I/O error of the transport.
    Io,
}

impl Error {
    /// The error a connection that ended as `closed` reports at the end of
    /// its receive side: `None` after a completed close handshake (either
    /// side started it); the protocol violation; the timeout that ended it;
    /// otherwise (the transport ended without a close handshake)
    /// [`Error::AbnormalClosure`], which a shell that kept the transport's
    /// I/O error reports as that error instead. For shells without a
    /// stream (tether-mio's `Handler::close` hands over the `Closed`).
    pub fn from_closed(closed: &Closed) -> Option<Self> {
        match &closed.cause {
            CloseCause::Remote | CloseCause::Local => None,
            CloseCause::Protocol(e) => Some(Self::Protocol(e.clone())),
            CloseCause::IdleTimeout => Some(Self::IdleTimeout),
            CloseCause::SendTimeout => Some(Self::SendTimeout),
            CloseCause::CloseTimeout => Some(Self::CloseTimeout),
            _ => Some(Self::AbnormalClosure),
        }
    }

    /// What kind of error this is, to act on (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io(e) => io_kind(e),
            Self::Resolve { .. } => ErrorKind::HostNotFound,
            #[cfg(feature = "tls")]
            Self::Tls(e) => tls_kind(e),
            #[cfg(feature = "tls")]
            Self::InvalidServerName(_) => ErrorKind::Tls,
            #[cfg(feature = "tls")]
            Self::TlsConfig(_) => ErrorKind::InvalidInput,
            Self::ConnectTimeout => ErrorKind::ConnectTimeout,
            Self::Handshake(e) => handshake_kind(e),
            Self::NotWebSocket(_) => ErrorKind::NotWebSocket,
            Self::Proxy(e) if e.needs_credentials() => ErrorKind::ProxyAuthenticationRequired,
            Self::Proxy(_) => ErrorKind::Proxy,
            Self::RedirectRefused { status, .. } => ErrorKind::Rejected(*status),
            Self::Protocol(ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. }) => {
                ErrorKind::MessageTooBig
            }
            Self::Protocol(e) => ErrorKind::ProtocolViolation(e.close_code()),
            Self::ClosedByPeer { code, .. } if *code == CloseCode::NORMAL => ErrorKind::ClosedNormally,
            Self::ClosedByPeer { code, .. } => ErrorKind::ClosedByPeer(*code),
            Self::Closed => ErrorKind::ClosedNormally,
            Self::IdleTimeout => ErrorKind::IdleTimeout,
            Self::SendTimeout => ErrorKind::SendTimeout,
            Self::CloseTimeout => ErrorKind::CloseTimeout,
            Self::AbnormalClosure => ErrorKind::AbnormalClosure,
            Self::Send(_) => ErrorKind::InvalidInput,
        }
    }

    /// The authentication challenge that came with a refusal: the
    /// server's `WWW-Authenticate` with a 401, a proxy's
    /// `Proxy-Authenticate` with a 407.
    pub fn challenge(&self) -> Option<&str> {
        match self {
            Self::Handshake(e) => e.challenge(),
            Self::Proxy(crate::proxy::ProxyError::Rejected { challenge, .. }) => challenge.as_deref(),
            _ => None,
        }
    }

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

fn io_kind(error: &io::Error) -> ErrorKind {
    // An error of ours carried through an `io::Error` (a message reader's
    // `AsyncRead`), or a TLS error from a TLS stream.
    if let Some(inner) = error.get_ref() {
        if let Some(ours) = inner.downcast_ref::<Error>() {
            return ours.kind();
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return tls_kind(tls);
        }
    }
    match error.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => ErrorKind::ConnectionReset,
        _ => ErrorKind::Io,
    }
}

fn handshake_kind(error: &HandshakeError) -> ErrorKind {
    match error {
        HandshakeError::Timeout => ErrorKind::HandshakeTimeout,
        HandshakeError::UnexpectedEof => ErrorKind::ConnectionReset,
        HandshakeError::Rejected { status, .. } => match status.as_u16() {
            401 => ErrorKind::Unauthorized,
            407 => ErrorKind::ProxyAuthenticationRequired,
            _ => ErrorKind::Rejected(*status),
        },
        HandshakeError::InvalidUri(_) => ErrorKind::InvalidInput,
        _ => ErrorKind::HandshakeFailed,
    }
}

#[cfg(feature = "tls")]
fn tls_kind(error: &rustls::Error) -> ErrorKind {
    use rustls::{AlertDescription, CertificateError};
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => ErrorKind::CertificateUntrusted,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => ErrorKind::CertificateExpired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                ErrorKind::CertificateWrongName
            }
            _ => ErrorKind::CertificateInvalid,
        },
        rustls::Error::NoCertificatesPresented => ErrorKind::CertificateInvalid,
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired,
        ) => ErrorKind::CertificateInvalid,
        _ => ErrorKind::Tls,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Resolve { host, error } => write!(f, "host {host:?} not found: {error}"),
            #[cfg(feature = "tls")]
            Self::Tls(e) => write!(f, "TLS error: {e}"),
            #[cfg(feature = "tls")]
            Self::InvalidServerName(name) => write!(f, "{name:?} is not a valid TLS server name"),
            #[cfg(feature = "tls")]
            Self::TlsConfig(detail) => write!(f, "TLS settings: {detail}"),
            Self::ConnectTimeout => f.write_str("connect timeout: the connection did not open in time"),
            Self::Handshake(e) => write!(f, "opening handshake failed: {e}"),
            Self::RedirectRefused {
                status,
                location,
                reason,
            } => write!(f, "redirect {status} to {location:?} not followed: {reason}"),
            Self::NotWebSocket(status) => {
                write!(f, "the request was answered with HTTP status {status}, not a WebSocket")
            }
            Self::Proxy(e) => write!(f, "proxy: {e}"),
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
            Self::Io(e) | Self::Resolve { error: e, .. } => Some(e),
            #[cfg(feature = "tls")]
            Self::Tls(e) => Some(e),
            Self::Handshake(e) => Some(e),
            Self::Proxy(e) => Some(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_carried_in_an_io_error_keeps_its_kind() {
        // A message reader's `AsyncRead` carries the connection's error in
        // an `io::Error`.
        let carried = Error::Io(io::Error::from(Error::IdleTimeout));
        assert_eq!(carried.kind(), ErrorKind::IdleTimeout);
        let carried = Error::from_io(io::Error::from(Error::Protocol(ProtocolError::InvalidUtf8)));
        assert_eq!(carried.kind(), ErrorKind::ProtocolViolation(CloseCode::INVALID_PAYLOAD));
    }

    #[test]
    fn io_kinds() {
        let kind = |k: io::ErrorKind| Error::Io(k.into()).kind();
        assert_eq!(kind(io::ErrorKind::ConnectionRefused), ErrorKind::ConnectionRefused);
        for k in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
        ] {
            assert_eq!(kind(k), ErrorKind::ConnectionReset, "{k:?}");
        }
        assert_eq!(kind(io::ErrorKind::PermissionDenied), ErrorKind::Io);
    }

    #[test]
    fn closes() {
        let by_peer = |code: u16| {
            Error::ClosedByPeer {
                code: CloseCode::from(code),
                reason: String::new(),
            }
            .kind()
        };
        assert_eq!(by_peer(1000), ErrorKind::ClosedNormally);
        assert_eq!(by_peer(1001), ErrorKind::ClosedByPeer(CloseCode::from(1001)));
        assert_eq!(Error::Closed.kind(), ErrorKind::ClosedNormally);
        let too_big = Error::Protocol(ProtocolError::FrameTooLarge { size: 2, limit: 1 });
        assert_eq!(too_big.kind(), ErrorKind::MessageTooBig);
    }
}
