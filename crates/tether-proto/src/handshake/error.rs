//! Why an opening handshake failed, and what a server answers.

use core::fmt;

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::header::ExtensionHeaderError;
use super::http1::write_response;
use super::WEBSOCKET_VERSION;

/// Why an opening handshake failed.
///
/// Errors caused by the peer carry what a program needs to act on them: the
/// status and body of a rejection, the header that was wrong, the limit that
/// was exceeded. On the server side, [`status`](Self::status) is the HTTP
/// status to answer with and [`response`](Self::response) the bytes to send
/// before closing the transport, so that adapters never write HTTP by hand.
///
/// After an error, the handshake stays failed: its inputs answer
/// [`HandshakeError::InvalidState`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    // --- Either side: transport and HTTP syntax. ---
    /// The opening handshake did not complete before its timeout.
    Timeout,
    /// The transport reached end of stream before the handshake completed.
    UnexpectedEof,
    /// The HTTP head (request or status line and headers) is over the limit
    /// of `limit` bytes. A server answers 431.
    HeadersTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The HTTP head has more than `limit` header fields. A server answers 431.
    TooManyHeaders {
        /// The configured limit, in header fields.
        limit: usize,
    },
    /// The peer sent malformed HTTP; the text says what was wrong. A server
    /// answers 400.
    InvalidHttp(&'static str),
    /// The handshake was used out of order: input after it finished or
    /// failed, or `accept` before a request was received. A program error,
    /// not a peer's; the text says which call.
    InvalidState(&'static str),

    // --- Client: building the request. ---
    /// The URI given to [`ClientRequest::new`](super::ClientRequest::new) is
    /// not a usable `ws://` or `wss://` URI; the text says why.
    InvalidUri(&'static str),
    /// The [`ClientRequest`](super::ClientRequest) cannot be sent: an
    /// invalid origin, subprotocol or extension offer, or an extra header
    /// that would override one of the handshake's own.
    InvalidRequest(String),

    // --- Client: the server's answer. ---
    /// The server answered with a status other than 101 Switching Protocols.
    ///
    /// A redirect keeps its `Location` in `headers`; see
    /// [`location`](Self::location). The body is truncated at 64 KiB.
    Rejected {
        /// The status the server answered with.
        status: StatusCode,
        /// The headers of the answer (boxed: they would make every
        /// `Result` carrying this error four times as large).
        headers: Box<HeaderMap>,
        /// The body of the answer, at most 64 KiB.
        body: Vec<u8>,
    },
    /// `Sec-WebSocket-Accept` does not match the key that was sent (RFC 6455
    /// section 4.1): the peer is not a WebSocket server, or a proxy meddled.
    InvalidAcceptKey,
    /// The server selected a subprotocol that the client did not offer
    /// (RFC 6455 section 4.1); the field is the selected value.
    UnofferedSubprotocol(String),
    /// The server accepted an extension that the client did not offer (RFC
    /// 6455 section 4.1); the field is the extension's name.
    UnofferedExtension(String),

    // --- Either side: header checks. A server answers 400. ---
    /// A required header is absent; the field is its name.
    MissingHeader(&'static str),
    /// A header is present but unusable: repeated where it must appear once,
    /// or with a value that does not parse.
    InvalidHeader {
        /// The header's name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `Upgrade` header does not name `websocket`.
    InvalidUpgradeHeader,
    /// The `Connection` header does not contain the `upgrade` token.
    InvalidConnectionHeader,
    /// `Sec-WebSocket-Extensions` does not follow the grammar of RFC 6455
    /// section 9.1.
    InvalidExtensionHeader(ExtensionHeaderError),

    // --- Server: the client's request. ---
    /// The request method is not GET. A server answers 405 with `Allow: GET`.
    MethodNotAllowed(Method),
    /// The request is HTTP/1.0; the handshake needs HTTP/1.1 or later (RFC
    /// 6455 section 4.1). A server answers 400.
    UnsupportedHttpVersion,
    /// `Sec-WebSocket-Key` is not the base64 encoding of 16 bytes (RFC 6455
    /// section 4.2.1). A server answers 400.
    InvalidKey,
    /// `Sec-WebSocket-Version` is absent (`None`) or not 13 (RFC 6455
    /// section 4.4). A server answers 426 with `Sec-WebSocket-Version: 13`.
    UnsupportedVersion(Option<String>),
    /// The `Origin` header is not in the server's allowed list. A server
    /// answers 403.
    OriginNotAllowed(String),
    /// Bytes arrived after the request and before the server answered, more
    /// than `limit` bytes of them (a client must wait for the answer, RFC
    /// 6455 section 4.1). A server answers 400.
    TooMuchEarlyData {
        /// The limit, in bytes (the server's `max_header_bytes`).
        limit: usize,
    },
    /// The server application's [`Accept`](super::Accept) options are
    /// invalid: a subprotocol or extension the client did not offer, or a
    /// header that would override the handshake's own. A program error; the
    /// handshake is not failed, so the application may retry or reject. If
    /// answered, the status is 500.
    InvalidAcceptOptions(String),
    /// The handshake negotiated an extension that this crate has no
    /// implementation for, so no connection can be built that would
    /// understand its frames. On a server this is a program error (500); a
    /// client fails the connection.
    ExtensionNotImplemented(String),
    /// The server's answer for an extension (permessage-deflate) does not fit
    /// what was offered, or its parameters are malformed (RFC 7692 section
    /// 7.1). The client fails the connection.
    InvalidExtensionAnswer(String),
}

impl HandshakeError {
    /// The HTTP status a server answers with when its handshake fails with
    /// this error: 400, 403, 405, 408, 426, 431 or 500.
    ///
    /// `None` for errors where there is nothing to answer: the transport
    /// closed, the handshake was misused, or the error only happens on a
    /// client (a rejection, an invalid accept key, an unoffered subprotocol
    /// or extension, an invalid URI or request).
    pub fn status(&self) -> Option<StatusCode> {
        Some(match self {
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge { .. } | Self::TooManyHeaders { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::InvalidHttp(_)
            | Self::MissingHeader(_)
            | Self::InvalidHeader { .. }
            | Self::InvalidUpgradeHeader
            | Self::InvalidConnectionHeader
            | Self::InvalidExtensionHeader(_)
            | Self::UnsupportedHttpVersion
            | Self::InvalidKey
            | Self::TooMuchEarlyData { .. } => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedVersion(_) => StatusCode::UPGRADE_REQUIRED,
            Self::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::InvalidAcceptOptions(_) | Self::ExtensionNotImplemented(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UnexpectedEof
            | Self::InvalidState(_)
            | Self::InvalidUri(_)
            | Self::InvalidRequest(_)
            | Self::Rejected { .. }
            | Self::InvalidAcceptKey
            | Self::UnofferedSubprotocol(_)
            | Self::UnofferedExtension(_)
            | Self::InvalidExtensionAnswer(_) => return None,
        })
    }

    /// The complete HTTP/1.1 response a server sends for this error before
    /// closing the transport: the [`status`](Self::status), a plain-text body
    /// saying what went wrong, `Connection: close`, and the headers the
    /// status calls for (`Sec-WebSocket-Version: 13` with 426, `Allow: GET`
    /// with 405). `None` where [`status`](Self::status) is `None`.
    pub fn response(&self) -> Option<Vec<u8>> {
        let status = self.status()?;
        let mut headers = HeaderMap::new();
        match self {
            // RFC 6455 section 4.4; RFC 9110 section 15.5.22 asks for Upgrade with 426.
            Self::UnsupportedVersion(_) => {
                headers.insert(
                    http::header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static(WEBSOCKET_VERSION),
                );
                headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade, close"));
            }
            // RFC 9110 section 15.5.6: a 405 lists the allowed methods.
            Self::MethodNotAllowed(_) => {
                headers.insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let body = format!("Failed to open a WebSocket connection: {self}.\n");
        Some(write_response(status, &headers, body.as_bytes()))
    }

    /// The authentication challenge of a rejection: `WWW-Authenticate` of
    /// a 401, `Proxy-Authenticate` of a 407 (which scheme and realm the
    /// credentials are for).
    pub fn challenge(&self) -> Option<&str> {
        match self {
            Self::Rejected { status, headers, .. } => {
                let name = match status.as_u16() {
                    401 => http::header::WWW_AUTHENTICATE,
                    407 => http::header::PROXY_AUTHENTICATE,
                    _ => return None,
                };
                headers.get(name)?.to_str().ok()
            }
            _ => None,
        }
    }

    /// The `Location` header of a rejection, where a redirect points to.
    pub fn location(&self) -> Option<&str> {
        match self {
            Self::Rejected { headers, .. } => headers.get(http::header::LOCATION)?.to_str().ok(),
            _ => None,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("the opening handshake did not complete in time"),
            Self::UnexpectedEof => f.write_str("the connection closed before the opening handshake completed"),
            Self::HeadersTooLarge { limit } => write!(f, "the HTTP headers are over the limit of {limit} bytes"),
            Self::TooManyHeaders { limit } => write!(f, "the HTTP head has more than {limit} header fields"),
            Self::InvalidHttp(reason) => write!(f, "malformed HTTP: {reason}"),
            Self::InvalidState(reason) => write!(f, "handshake used out of order: {reason}"),
            Self::InvalidUri(reason) => write!(f, "invalid WebSocket URI: {reason}"),
            Self::InvalidRequest(reason) => write!(f, "invalid handshake request: {reason}"),
            Self::Rejected { status, .. } => {
                write!(
                    f,
                    "the server rejected the WebSocket handshake with HTTP status {status}"
                )?;
                match self.location() {
                    Some(location) => write!(f, ", redirecting to {location}"),
                    None => Ok(()),
                }
            }
            Self::InvalidAcceptKey => f.write_str(
                "Sec-WebSocket-Accept does not match the key sent: the peer is not a WebSocket server, \
                 or a proxy altered the response",
            ),
            Self::UnofferedSubprotocol(protocol) => {
                write!(
                    f,
                    "the server selected subprotocol {protocol:?}, which the client did not offer"
                )
            }
            Self::UnofferedExtension(name) => {
                write!(
                    f,
                    "the server accepted extension {name:?}, which the client did not offer"
                )
            }
            Self::MissingHeader(name) => write!(f, "missing {name} header"),
            Self::InvalidHeader { name, reason } => write!(f, "invalid {name} header: {reason}"),
            Self::InvalidUpgradeHeader => f.write_str("the Upgrade header does not name websocket"),
            Self::InvalidConnectionHeader => f.write_str("the Connection header does not contain the upgrade token"),
            Self::InvalidExtensionHeader(e) => fmt::Display::fmt(e, f),
            Self::MethodNotAllowed(method) => write!(f, "the method is {method}; a WebSocket handshake uses GET"),
            Self::UnsupportedHttpVersion => f.write_str("a WebSocket handshake needs HTTP/1.1 or later"),
            Self::InvalidKey => f.write_str("Sec-WebSocket-Key is not the base64 encoding of 16 bytes"),
            Self::UnsupportedVersion(Some(version)) => {
                write!(
                    f,
                    "unsupported WebSocket version {version:?}; this server speaks version {WEBSOCKET_VERSION}"
                )
            }
            Self::UnsupportedVersion(None) => write!(
                f,
                "missing Sec-WebSocket-Version header; this server speaks version {WEBSOCKET_VERSION}"
            ),
            Self::OriginNotAllowed(origin) => write!(f, "origin {origin:?} is not allowed"),
            Self::TooMuchEarlyData { limit } => write!(
                f,
                "more than {limit} bytes arrived before the handshake was answered; \
                 a client must wait for the server's response"
            ),
            Self::InvalidAcceptOptions(reason) => write!(f, "invalid accept options: {reason}"),
            Self::InvalidExtensionAnswer(reason) => write!(f, "invalid extension answer from the server: {reason}"),
            Self::ExtensionNotImplemented(name) => write!(
                f,
                "extension {name:?} was negotiated but is not implemented here; do not offer or accept it"
            ),
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidExtensionHeader(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ExtensionHeaderError> for HandshakeError {
    fn from(e: ExtensionHeaderError) -> Self {
        Self::InvalidExtensionHeader(e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_4_4_version_response_lists_13() {
        let e = HandshakeError::UnsupportedVersion(Some("8".into()));
        assert_eq!(e.status(), Some(StatusCode::UPGRADE_REQUIRED));
        let bytes = String::from_utf8(e.response().unwrap()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{bytes}");
        assert!(bytes.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{bytes}");
        assert!(bytes.contains("\r\nConnection: Upgrade, close\r\n"), "{bytes}");
    }

    #[test]
    fn client_only_errors_have_no_response() {
        for e in [
            HandshakeError::InvalidAcceptKey,
            HandshakeError::UnexpectedEof,
            HandshakeError::UnofferedSubprotocol("x".into()),
            HandshakeError::InvalidState("x"),
        ] {
            assert_eq!(e.status(), None);
            assert_eq!(e.response(), None);
        }
    }

    #[test]
    fn redirect_location() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::LOCATION, HeaderValue::from_static("wss://example.com/"));
        let e = HandshakeError::Rejected {
            status: StatusCode::FOUND,
            headers: Box::new(headers),
            body: Vec::new(),
        };
        assert_eq!(e.location(), Some("wss://example.com/"));
        assert!(e.to_string().contains("wss://example.com/"));
    }

    #[test]
    fn method_not_allowed_lists_get() {
        let e = HandshakeError::MethodNotAllowed(Method::POST);
        let bytes = String::from_utf8(e.response().unwrap()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{bytes}");
        assert!(bytes.contains("\r\nAllow: GET\r\n"), "{bytes}");
    }
}
