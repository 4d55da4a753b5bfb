//! Exit statuses: one per kind of failure a person or a script acts on
//! differently, documented in `tether connect --help` and the README.

use tether_tokio::{CloseCode, Error, ErrorKind, HandshakeError};

/// Closed normally: by us, or by the peer with 1000, 1001 or no code.
pub(crate) const OK: u8 = 0;
/// Another error (I/O, a verification failure in `bench`).
pub(crate) const OTHER: u8 = 1;
/// A bad argument or URL (also clap's status for usage errors).
pub(crate) const USAGE: u8 = 2;
/// Connection refused, reset or unreachable.
pub(crate) const REFUSED: u8 = 3;
/// The host name did not resolve.
pub(crate) const DNS: u8 = 4;
/// TLS failed: an untrusted, expired or wrong-name certificate, a TLS alert.
pub(crate) const TLS: u8 = 5;
/// The server refused the opening handshake (an HTTP status), or is not a
/// WebSocket server.
pub(crate) const REJECTED: u8 = 6;
/// A timeout: connect, idle, send or close.
pub(crate) const TIMEOUT: u8 = 7;
/// A proxy refused or wants credentials.
pub(crate) const PROXY: u8 = 8;
/// The connection broke: a protocol violation by the peer, a message over
/// the limit, lost without a close handshake (1006).
pub(crate) const BROKEN: u8 = 9;
/// The peer closed with a code other than 1000, 1001 or none.
pub(crate) const PEER_CLOSED: u8 = 10;

/// The table printed by `--help` (a macro, for `concat!`).
macro_rules! exit_table {
    () => {
        "\
Exit status:
  0   closed normally (by you, or by the server with 1000, 1001 or no code)
  1   another error
  2   bad argument or URL
  3   connection refused, reset or unreachable
  4   host not found
  5   TLS or certificate error
  6   handshake rejected by the server (its HTTP status and body are shown)
  7   timeout (connect, idle, send, close)
  8   proxy error (refused, or credentials needed)
  9   connection broken (protocol violation, message too big, lost without a close)
  10  closed by the server with another code (shown)"
    };
}
pub(crate) use exit_table;

/// A failure: its exit status and a one-line message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: u8, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }
}

/// The exit status for a close code the peer sent.
pub(crate) fn for_peer_close(code: CloseCode) -> u8 {
    match u16::from(code) {
        1000 | 1001 | 1005 => OK,
        _ => PEER_CLOSED,
    }
}

/// The exit status and message for an error of the library.
pub(crate) fn for_error(error: &Error) -> Failure {
    let status = match error.kind() {
        ErrorKind::ClosedNormally => OK,
        ErrorKind::InvalidInput => USAGE,
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => REFUSED,
        ErrorKind::HostNotFound => DNS,
        ErrorKind::CertificateUntrusted
        | ErrorKind::CertificateExpired
        | ErrorKind::CertificateWrongName
        | ErrorKind::CertificateInvalid
        | ErrorKind::Tls => TLS,
        ErrorKind::Unauthorized | ErrorKind::Rejected(_) | ErrorKind::HandshakeFailed | ErrorKind::NotWebSocket => {
            REJECTED
        }
        ErrorKind::ConnectTimeout
        | ErrorKind::HandshakeTimeout
        | ErrorKind::SendTimeout
        | ErrorKind::IdleTimeout
        | ErrorKind::CloseTimeout => TIMEOUT,
        ErrorKind::ProxyAuthenticationRequired | ErrorKind::Proxy => PROXY,
        ErrorKind::ProtocolViolation(_) | ErrorKind::MessageTooBig | ErrorKind::AbnormalClosure => BROKEN,
        ErrorKind::ClosedByPeer(code) => for_peer_close(code),
        _ => OTHER,
    };
    Failure::new(status, describe(error))
}

/// One line a person can act on; a rejection shows its status and the
/// start of its body.
pub(crate) fn describe(error: &Error) -> String {
    match error {
        Error::Handshake(HandshakeError::Rejected { status, body, .. }) => {
            let body = String::from_utf8_lossy(body);
            let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut line = format!("the server rejected the WebSocket handshake: HTTP {status}");
            if let Some(challenge) = error.challenge() {
                line.push_str(&format!(" (WWW-Authenticate: {challenge})"));
            }
            if !body.is_empty() {
                let cut: String = body.chars().take(200).collect();
                line.push_str(": ");
                line.push_str(&cut);
                if cut.len() < body.len() {
                    line.push_str("...");
                }
            }
            line
        }
        other => other.to_string(),
    }
}
