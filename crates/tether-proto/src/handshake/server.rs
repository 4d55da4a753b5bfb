//! The server side: reading a request, then accepting or rejecting it (RFC
//! 6455 section 4.2).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use super::header::{extension_offers, has_token, list_elements, single_value};
use super::http1::{
    empty_headers, header_map, parse_error, write_headers, write_response, write_status_line, HeadBuffer,
};
use super::{
    accept_key, ExtensionOffer, HandshakeError, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEADER_BYTES, KEY_LEN,
    WEBSOCKET_VERSION,
};
use crate::{Config, Connection};

/// Response headers the handshake writes itself; [`Accept::header`] cannot
/// set them.
const RESERVED_RESPONSE_HEADERS: [HeaderName; 9] = [
    http::header::UPGRADE,
    http::header::CONNECTION,
    http::header::SEC_WEBSOCKET_ACCEPT,
    http::header::SEC_WEBSOCKET_KEY,
    http::header::SEC_WEBSOCKET_VERSION,
    http::header::SEC_WEBSOCKET_PROTOCOL,
    http::header::SEC_WEBSOCKET_EXTENSIONS,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
];

/// Limits and policy of a server's opening handshakes.
///
/// ```
/// # use std::time::Duration;
/// let mut config = tether_proto::handshake::HandshakeConfig::default();
/// config.timeout = Some(Duration::from_secs(5));
/// config.allowed_origins = Some(vec!["https://example.com".to_owned()]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// Largest request head (request line and headers), in bytes; a larger
    /// one fails with [`HandshakeError::HeadersTooLarge`] (431) without
    /// being buffered. Also caps the bytes held between the request and the
    /// answer. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in a request; more fail with
    /// [`HandshakeError::TooManyHeaders`] (431). Default 64.
    pub max_headers: usize,
    /// How long a client has to send its complete request head; a request
    /// that trickles in fails with [`HandshakeError::Timeout`] (408).
    /// Default 10 seconds.
    pub timeout: Option<Duration>,
    /// Origins allowed to open a connection (RFC 6455 section 10.2).
    ///
    /// `None` (the default) allows every origin. `Some(list)` allows an
    /// `Origin` header that matches an entry exactly, ignoring ASCII case,
    /// and answers others with [`HandshakeError::OriginNotAllowed`] (403).
    /// A request *without* `Origin` is always allowed: only browsers are
    /// required to send one, and the check exists to stop scripts of other
    /// sites running in a browser, not non-browser clients (which could
    /// send any `Origin` they like).
    pub allowed_origins: Option<Vec<String>>,
}

/// What a server answers to a request it accepts: the subprotocol, the
/// extensions, and extra headers of the 101 response.
///
/// ```
/// use tether_proto::handshake::Accept;
///
/// let options = Accept::new()
///     .subprotocol("chat")
///     .header(http::header::SET_COOKIE, http::HeaderValue::from_static("session=1"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Accept {
    /// The subprotocol selected; must be one the client offered
    /// ([`Request::protocols`]).
    pub subprotocol: Option<String>,
    /// The extensions accepted, with their response parameters, each one the
    /// client offered ([`Request::extensions`]).
    pub extensions: Vec<ExtensionOffer>,
    /// Extra response headers (`Set-Cookie`...). Those the handshake writes
    /// itself (`Upgrade`, `Connection`, `Sec-WebSocket-*`, `Content-Length`,
    /// `Transfer-Encoding`) are refused.
    pub headers: HeaderMap,
    /// permessage-deflate (RFC 7692): `Some` accepts the first offer these
    /// settings allow, if any. Off by default: compressing secrets next to
    /// attacker-controlled data leaks them (CRIME, BREACH).
    #[cfg(feature = "deflate")]
    pub deflate: Option<crate::deflate::DeflateConfig>,
}

/// An HTTP request as a server received it: WebSocket handshake or not.
///
/// [`ServerHandshake::handle_read`] returns every well-formed request, so
/// that an application can serve a page at `/` and answer 400 to a plain
/// GET on its WebSocket path. [`is_websocket_upgrade`](Self::is_websocket_upgrade)
/// tells which it is.
#[derive(Debug, Clone)]
pub struct Request {
    request: http::Request<()>,
    target: String,
}

/// A server's opening handshake in progress.
///
/// Feed it bytes with [`handle_read`](Self::handle_read) until it returns a
/// [`Request`], then answer with [`accept`](Self::accept) or
/// [`reject`](Self::reject). On an error, send
/// [`HandshakeError::response`] and close the transport.
#[derive(Debug)]
pub struct ServerHandshake {
    config: HandshakeConfig,
    head: HeadBuffer,
    state: State,
    deadline: Option<Instant>,
}

/// An accepted handshake: the 101 response to send and what goes into the
/// connection.
#[derive(Debug)]
pub struct Accepted {
    response: Vec<u8>,
    subprotocol: Option<String>,
    extensions: Vec<ExtensionOffer>,
    deflate: Option<super::DeflateSettings>,
    leftover: Vec<u8>,
}

#[derive(Debug)]
enum State {
    /// Reading the request head.
    Head,
    /// The request was returned; bytes that followed it wait for the
    /// connection.
    Received { leftover: Vec<u8> },
    /// Answered, or failed.
    Done,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            timeout: Some(Duration::from_secs(10)),
            allowed_origins: None,
        }
    }
}

impl Accept {
    /// Accept with no subprotocol, no extension, no extra header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Selects `subprotocol`.
    #[must_use]
    pub fn subprotocol(mut self, subprotocol: impl Into<String>) -> Self {
        self.subprotocol = Some(subprotocol.into());
        self
    }

    /// Accepts these extensions, with their response parameters.
    #[must_use]
    pub fn extensions(mut self, extensions: Vec<ExtensionOffer>) -> Self {
        self.extensions = extensions;
        self
    }

    /// Accepts permessage-deflate (RFC 7692) when the client offers a
    /// configuration that `config` allows; declines it otherwise, and the
    /// connection runs uncompressed.
    #[cfg(feature = "deflate")]
    #[must_use]
    pub fn permessage_deflate(mut self, config: crate::deflate::DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// Adds a response header.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

impl Request {
    /// Wraps a request parsed elsewhere (by hyper, for example) so that the
    /// handshake checks of [`accept_response`] apply to it.
    pub fn from_http(request: http::Request<()>) -> Self {
        let uri = request.uri();
        let target = uri
            .path_and_query()
            .map_or_else(|| uri.to_string(), |pq| pq.as_str().to_owned());
        Self { request, target }
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        self.request.method()
    }

    /// The request target as received (`/chat?room=1`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The request target, parsed.
    pub fn uri(&self) -> &Uri {
        self.request.uri()
    }

    /// The path of the target (`/chat`).
    pub fn path(&self) -> &str {
        self.request.uri().path()
    }

    /// The query of the target, without `?` (`room=1`).
    pub fn query(&self) -> Option<&str> {
        self.request.uri().query()
    }

    /// The HTTP version: 1.0 or 1.1.
    pub fn version(&self) -> Version {
        self.request.version()
    }

    /// Every header line.
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    /// The `Origin` header, if there is one and it is ASCII.
    pub fn origin(&self) -> Option<&str> {
        self.headers().get(http::header::ORIGIN)?.to_str().ok()
    }

    /// The `Sec-WebSocket-Key` header, if there is one and it is ASCII.
    pub fn key(&self) -> Option<&str> {
        self.headers().get(http::header::SEC_WEBSOCKET_KEY)?.to_str().ok()
    }

    /// Whether this asks for a WebSocket: a GET with `Upgrade: websocket`
    /// and `Connection: upgrade` (tokens compared ignoring ASCII case). The
    /// other checks happen in [`ServerHandshake::accept`], which answers
    /// what fails with the right status.
    pub fn is_websocket_upgrade(&self) -> bool {
        (self.method() == Method::GET
            && has_token(self.headers(), http::header::UPGRADE, "websocket")
            && has_token(self.headers(), http::header::CONNECTION, "upgrade"))
            || self.is_extended_connect()
    }

    /// Whether this is an HTTP/2 extended CONNECT for a WebSocket (RFC 8441
    /// section 4): `:method CONNECT` with `:protocol websocket`, which the
    /// HTTP/2 front end records as a [`ConnectProtocol`] extension of the
    /// request.
    pub fn is_extended_connect(&self) -> bool {
        self.method() == Method::CONNECT
            && self
                .request
                .extensions()
                .get::<ConnectProtocol>()
                .is_some_and(|p| p.0.eq_ignore_ascii_case("websocket"))
    }

    /// The subprotocols the client offers, in its order of preference
    /// (every `Sec-WebSocket-Protocol` line).
    pub fn protocols(&self) -> Vec<&str> {
        list_elements(self.headers(), http::header::SEC_WEBSOCKET_PROTOCOL)
            .filter_map(|p| core::str::from_utf8(p).ok())
            .collect()
    }

    /// The extensions the client offers, in its order of preference (every
    /// `Sec-WebSocket-Extensions` line), or
    /// [`HandshakeError::InvalidExtensionHeader`] (400) if malformed.
    pub fn extensions(&self) -> Result<Vec<ExtensionOffer>, HandshakeError> {
        Ok(extension_offers(self.headers())?)
    }

    /// The request as an [`http::Request`].
    pub fn as_http(&self) -> &http::Request<()> {
        &self.request
    }

    /// Unwraps the [`http::Request`].
    pub fn into_http(self) -> http::Request<()> {
        self.request
    }
}

impl From<http::Request<()>> for Request {
    fn from(request: http::Request<()>) -> Self {
        Self::from_http(request)
    }
}

impl ServerHandshake {
    /// A handshake waiting for a request, on a transport accepted at `now`.
    pub fn new(config: HandshakeConfig, now: Instant) -> Self {
        Self {
            head: HeadBuffer::new(config.max_header_bytes),
            deadline: config.timeout.and_then(|timeout| now.checked_add(timeout)),
            config,
            state: State::Head,
        }
    }

    /// Input: bytes received from the client.
    ///
    /// `Ok(None)` while the request head is incomplete; `Ok(Some(request))`
    /// once it is complete, for any well-formed HTTP request. Bytes received
    /// after the request head are kept and fed to the connection that
    /// [`accept`](Self::accept) builds; calls after the request was returned
    /// may add up to `max_header_bytes` of them, beyond which the handshake
    /// fails with [`HandshakeError::TooMuchEarlyData`]. Malformed or
    /// oversized requests fail with an error whose
    /// [`response`](HandshakeError::response) is the answer to send.
    pub fn handle_read(&mut self, data: &[u8]) -> Result<Option<Request>, HandshakeError> {
        let result = match &mut self.state {
            State::Head => self.read_head(data),
            State::Received { leftover } => {
                if data.len() > self.config.max_header_bytes.saturating_sub(leftover.len()) {
                    Err(HandshakeError::TooMuchEarlyData {
                        limit: self.config.max_header_bytes,
                    })
                } else {
                    leftover.extend_from_slice(data);
                    Ok(None)
                }
            }
            State::Done => Err(HandshakeError::InvalidState("handle_read after the handshake finished")),
        };
        if result.is_err() {
            self.state = State::Done;
        }
        result
    }

    /// Input: the client closed the transport. Ends the handshake with
    /// [`HandshakeError::UnexpectedEof`]: nothing can be answered.
    pub fn handle_eof(&mut self) -> HandshakeError {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Head | State::Received { .. } => HandshakeError::UnexpectedEof,
            State::Done => HandshakeError::InvalidState("handle_eof after the handshake finished"),
        }
    }

    /// Input: the time now. Once the deadline of
    /// [`poll_timeout`](Self::poll_timeout) has passed without a complete
    /// request head, fails with [`HandshakeError::Timeout`] (answer 408 and
    /// close).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), HandshakeError> {
        if matches!(self.state, State::Head) && self.deadline.is_some_and(|deadline| now >= deadline) {
            self.state = State::Done;
            return Err(HandshakeError::Timeout);
        }
        Ok(())
    }

    /// Output: when to call [`handle_timeout`](Self::handle_timeout). `None`
    /// without a timeout, and once the request head is complete: from then
    /// on, the application decides how long to take.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Head => self.deadline,
            State::Received { .. } | State::Done => None,
        }
    }

    /// Command: accepts `request` (the one [`handle_read`](Self::handle_read)
    /// returned). Returns the 101 response to send and the server
    /// [`Connection`], already fed the bytes that followed the request.
    ///
    /// Fails, with the status to answer in [`HandshakeError::status`], if
    /// the request is not a valid WebSocket handshake: not GET (405), not
    /// HTTP/1.1 (400), no `Host` (400), no `Upgrade: websocket` or
    /// `Connection: upgrade` (400), a `Sec-WebSocket-Key` that is not 16
    /// bytes in base64 (400), a `Sec-WebSocket-Version` other than 13 (426),
    /// an `Origin` not allowed (403), a malformed extension offer (400).
    /// Fails with [`HandshakeError::InvalidAcceptOptions`] if `options`
    /// select what the client did not offer; the handshake then stays
    /// usable.
    pub fn accept(
        &mut self,
        request: &Request,
        options: Accept,
        connection_config: Config,
        now: Instant,
    ) -> Result<(Vec<u8>, Connection), HandshakeError> {
        // Refuse an extension this crate cannot run while the handshake can
        // still be answered otherwise.
        super::build_extensions(&options.extensions, crate::Role::Server, None)?;
        self.accept_parts(request, options)?
            .into_connection(connection_config, now)
    }

    /// Like [`accept`](Self::accept), but returns the parts instead of
    /// building the [`Connection`]: the 101 response, what was negotiated,
    /// and the bytes that followed the request. Then call
    /// [`Accepted::into_connection`].
    pub fn accept_parts(&mut self, request: &Request, options: Accept) -> Result<Accepted, HandshakeError> {
        if !matches!(self.state, State::Received { .. }) {
            return Err(HandshakeError::InvalidState(
                "accept needs the request returned by handle_read",
            ));
        }
        let response = match accept_response(request, &self.config, &options) {
            Ok(response) => response,
            Err(e @ HandshakeError::InvalidAcceptOptions(_)) => return Err(e),
            Err(e) => {
                self.state = State::Done;
                return Err(e);
            }
        };
        let State::Received { leftover } = std::mem::replace(&mut self.state, State::Done) else {
            return Err(HandshakeError::InvalidState(
                "accept needs the request returned by handle_read",
            ));
        };
        let extensions = answered_extensions(&response)?;
        let mut bytes = Vec::with_capacity(256);
        write_status_line(&mut bytes, response.status());
        write_headers(&mut bytes, response.headers());
        bytes.extend_from_slice(b"\r\n");
        Ok(Accepted {
            response: bytes,
            deflate: deflate_settings(&options).cloned(),
            subprotocol: options.subprotocol,
            extensions,
            leftover,
        })
    }

    /// Command: answers with `status`, `headers` and `body` instead of a
    /// WebSocket (a web page, a 404, a redirect...). Returns the response to
    /// send; close the transport after it. `Content-Length` and
    /// `Connection: close` are set here, replacing any in `headers`.
    pub fn reject(&mut self, status: StatusCode, mut headers: HeaderMap, body: &[u8]) -> Vec<u8> {
        self.state = State::Done;
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(http::header::TRANSFER_ENCODING);
        headers.remove(http::header::CONNECTION);
        write_response(status, &headers, body)
    }

    fn read_head(&mut self, data: &[u8]) -> Result<Option<Request>, HandshakeError> {
        let taken = self.head.fill(data);
        if let Some(buf) = self.head.parse_candidate() {
            let mut headers = empty_headers(self.config.max_headers);
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let request = convert_request(&request)?;
                    let leftover = self.head.take_leftover(len, data.get(taken..).unwrap_or_default());
                    self.state = State::Received { leftover };
                    return Ok(Some(request));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(parse_error(e, self.config.max_headers)),
            }
        }
        if self.head.is_full() {
            return Err(HandshakeError::HeadersTooLarge {
                limit: self.config.max_header_bytes,
            });
        }
        Ok(None)
    }
}

impl Accepted {
    /// The 101 response to send.
    pub fn response(&self) -> &[u8] {
        &self.response
    }

    /// The subprotocol selected.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The extensions accepted.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// Bytes received after the request head: the client's first frames.
    pub fn leftover(&self) -> &[u8] {
        &self.leftover
    }

    /// Builds the server [`Connection`] and feeds it the
    /// [`leftover`](Self::leftover) bytes; returns it with the 101 response
    /// to send. Send the response before the connection's own output.
    ///
    /// Fails with [`HandshakeError::ExtensionNotImplemented`] (before
    /// anything is sent) when the accepted extensions include one this crate
    /// cannot run.
    pub fn into_connection(self, config: Config, now: Instant) -> Result<(Vec<u8>, Connection), HandshakeError> {
        let extensions = super::build_extensions(&self.extensions, crate::Role::Server, self.deflate.as_ref())?;
        let mut connection = Connection::server(config, now)
            .with_subprotocol(self.subprotocol)
            .with_extensions(extensions);
        if !self.leftover.is_empty() {
            connection.handle_read(&self.leftover, now);
        }
        Ok((self.response, connection))
    }
}

/// Checks `request` as an HTTP/1.1 WebSocket handshake under `config`, and
/// builds the 101 response that accepts it with `options`.
///
/// [`ServerHandshake::accept`] uses it; call it directly for a request that
/// arrived another way (an upgrade through hyper, for example, with
/// [`Request::from_http`]). Errors are those of [`ServerHandshake::accept`].
pub fn accept_response(
    request: &Request,
    config: &HandshakeConfig,
    options: &Accept,
) -> Result<http::Response<()>, HandshakeError> {
    let key = check_http1(request)?;
    let offered_extensions = check_common(request.headers(), config)?;
    let mut response = http::Response::new(());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    // RFC 6455 section 4.2.2 item 5.
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = HeaderValue::from_str(&accept_key(key.as_bytes()))
        .map_err(|_| HandshakeError::InvalidState("accept key is not a header value"))?;
    headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    negotiate(
        request.headers(),
        &offered_extensions,
        &*with_deflate(&offered_extensions, options)?,
        headers,
    )?;
    Ok(response)
}

/// The `:protocol` pseudo-header of an HTTP/2 extended CONNECT (RFC 8441
/// section 4), as an extension of the [`http::Request`] given to
/// [`Request::from_http`]: the core knows no HTTP/2 library, so the front
/// end that decoded the request puts it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectProtocol(pub String);

/// Checks `request` as an HTTP/2 extended CONNECT for a WebSocket (RFC 8441
/// section 5: `:method CONNECT`, `:protocol websocket` as a
/// [`ConnectProtocol`] extension, `Sec-WebSocket-Version: 13`) under
/// `config`, and builds the 200 response that accepts it with `options`:
/// the same Origin policy, subprotocol and extension negotiation as over
/// HTTP/1.1 (no key, no accept hash, no `Upgrade`). Build the connection
/// with [`server_connection`] and the same `options`.
///
/// Fails with 405 for another method, 400 for another `:protocol`, and as
/// [`accept_response`] for the shared checks.
pub fn accept_extended_connect(
    request: &Request,
    config: &HandshakeConfig,
    options: &Accept,
) -> Result<http::Response<()>, HandshakeError> {
    if request.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotAllowed(request.method().clone()));
    }
    if !request.is_extended_connect() {
        return Err(HandshakeError::InvalidHeader {
            name: ":protocol",
            reason: "an extended CONNECT for a WebSocket has :protocol websocket (RFC 8441 section 4)",
        });
    }
    let offered_extensions = check_common(request.headers(), config)?;
    let mut response = http::Response::new(());
    *response.status_mut() = StatusCode::OK;
    negotiate(
        request.headers(),
        &offered_extensions,
        &*with_deflate(&offered_extensions, options)?,
        response.headers_mut(),
    )?;
    Ok(response)
}

/// Builds the server [`Connection`] for a `response` made by
/// [`accept_response`] (101) or [`accept_extended_connect`] (200, HTTP/2)
/// with the same `options`: for requests that arrived another way, such as
/// an upgrade through hyper or a stream of an HTTP/2 connection.
pub fn server_connection(
    response: &http::Response<()>,
    options: &Accept,
    config: Config,
    now: Instant,
) -> Result<Connection, HandshakeError> {
    let extensions = answered_extensions(response)?;
    let pipeline = super::build_extensions(&extensions, crate::Role::Server, deflate_settings(options))?;
    let subprotocol = response
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Connection::server(config, now)
        .with_subprotocol(subprotocol)
        .with_extensions(pipeline))
}

/// The permessage-deflate settings of `options`.
#[cfg(feature = "deflate")]
fn deflate_settings(options: &Accept) -> Option<&super::DeflateSettings> {
    options.deflate.as_ref()
}

#[cfg(not(feature = "deflate"))]
fn deflate_settings(_options: &Accept) -> Option<&super::DeflateSettings> {
    None
}

/// The extensions a 101 response accepted, as written in it.
fn answered_extensions(response: &http::Response<()>) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    match response.headers().get(http::header::SEC_WEBSOCKET_EXTENSIONS) {
        None => Ok(Vec::new()),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| ExtensionOffer::parse_list(v).ok())
            .ok_or(HandshakeError::InvalidState(
                "the response's extension header does not parse",
            )),
    }
}

/// `options` with the permessage-deflate answer, if one is negotiated, put
/// first among the accepted extensions.
#[cfg(feature = "deflate")]
fn with_deflate<'a>(
    offers: &[ExtensionOffer],
    options: &'a Accept,
) -> Result<std::borrow::Cow<'a, Accept>, HandshakeError> {
    let Some(config) = &options.deflate else {
        return Ok(std::borrow::Cow::Borrowed(options));
    };
    config.validate().map_err(HandshakeError::InvalidAcceptOptions)?;
    if options
        .extensions
        .iter()
        .any(|e| e.name.eq_ignore_ascii_case(crate::deflate::EXTENSION_NAME))
    {
        return Err(HandshakeError::InvalidAcceptOptions(
            "permessage-deflate is accepted through Accept::permessage_deflate, not Accept::extensions".to_owned(),
        ));
    }
    let Some(answer) = config.accept(offers) else {
        return Ok(std::borrow::Cow::Borrowed(options));
    };
    let mut options = options.clone();
    options.extensions.insert(0, answer);
    Ok(std::borrow::Cow::Owned(options))
}

#[cfg(not(feature = "deflate"))]
#[allow(clippy::unnecessary_wraps)]
fn with_deflate<'a>(
    _offers: &[ExtensionOffer],
    options: &'a Accept,
) -> Result<std::borrow::Cow<'a, Accept>, HandshakeError> {
    Ok(std::borrow::Cow::Borrowed(options))
}

/// The checks that only HTTP/1.1 has (RFC 6455 section 4.2.1 items 1-5):
/// GET, HTTP/1.1 or later, `Host`, `Upgrade`, `Connection`, and the key.
/// Returns the key. (RFC 8441's extended CONNECT replaces all of these with
/// `:method CONNECT` and `:protocol websocket`.)
fn check_http1(request: &Request) -> Result<&str, HandshakeError> {
    // Item 1.
    if request.method() != Method::GET {
        return Err(HandshakeError::MethodNotAllowed(request.method().clone()));
    }
    if request.version() < Version::HTTP_11 {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    let headers = request.headers();
    // Item 2.
    if single_value(headers, &http::header::HOST, "Host")?.is_none() {
        return Err(HandshakeError::MissingHeader("Host"));
    }
    // Item 3.
    if !headers.contains_key(http::header::UPGRADE) {
        return Err(HandshakeError::MissingHeader("Upgrade"));
    }
    if !has_token(headers, http::header::UPGRADE, "websocket") {
        return Err(HandshakeError::InvalidUpgradeHeader);
    }
    // Item 4.
    if !headers.contains_key(http::header::CONNECTION) {
        return Err(HandshakeError::MissingHeader("Connection"));
    }
    if !has_token(headers, http::header::CONNECTION, "upgrade") {
        return Err(HandshakeError::InvalidConnectionHeader);
    }
    // Item 5: base64 of a 16-byte nonce.
    let Some(key) = single_value(headers, &http::header::SEC_WEBSOCKET_KEY, "Sec-WebSocket-Key")? else {
        return Err(HandshakeError::MissingHeader("Sec-WebSocket-Key"));
    };
    match BASE64.decode(key) {
        Ok(nonce) if nonce.len() == KEY_LEN => Ok(key),
        _ => Err(HandshakeError::InvalidKey),
    }
}

/// The checks that HTTP/1.1 and RFC 8441 extended CONNECT share (RFC 6455
/// section 4.2.1 items 6-9, RFC 8441 section 5): version 13, the origin
/// policy, a well-formed extension offer. Returns the extensions offered.
pub(crate) fn check_common(
    headers: &HeaderMap,
    config: &HandshakeConfig,
) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    // Item 6, section 4.4.
    match single_value(headers, &http::header::SEC_WEBSOCKET_VERSION, "Sec-WebSocket-Version")? {
        Some(WEBSOCKET_VERSION) => {}
        other => return Err(HandshakeError::UnsupportedVersion(other.map(str::to_owned))),
    }
    // Item 7, section 10.2.
    if let Some(allowed) = &config.allowed_origins {
        if let Some(origin) = single_value(headers, &http::header::ORIGIN, "Origin")? {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
                return Err(HandshakeError::OriginNotAllowed(origin.to_owned()));
            }
        }
    }
    // Item 9, section 9.1.
    Ok(extension_offers(headers)?)
}

/// Checks the application's choices against the client's offers (RFC 6455
/// section 4.2.2 item 5.5-5.6) and writes the negotiated headers and the
/// extra ones into `response`. Shared with RFC 8441 extended CONNECT.
pub(crate) fn negotiate(
    request: &HeaderMap,
    offered_extensions: &[ExtensionOffer],
    options: &Accept,
    response: &mut HeaderMap,
) -> Result<(), HandshakeError> {
    let invalid = |reason: String| Err(HandshakeError::InvalidAcceptOptions(reason));
    if let Some(protocol) = &options.subprotocol {
        if !list_elements(request, http::header::SEC_WEBSOCKET_PROTOCOL).any(|p| p == protocol.as_bytes()) {
            return invalid(format!("subprotocol {protocol:?} was not offered by the client"));
        }
        match HeaderValue::from_str(protocol) {
            Ok(value) => response.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value),
            Err(_) => return invalid(format!("subprotocol {protocol:?} is not a header value")),
        };
    }
    if !options.extensions.is_empty() {
        for extension in &options.extensions {
            extension.validate().or_else(invalid)?;
            if !offered_extensions
                .iter()
                .any(|offer| offer.name.eq_ignore_ascii_case(&extension.name))
            {
                return invalid(format!("extension {} was not offered by the client", extension.name));
            }
        }
        match HeaderValue::from_str(&ExtensionOffer::format_list(&options.extensions)) {
            Ok(value) => response.insert(http::header::SEC_WEBSOCKET_EXTENSIONS, value),
            Err(_) => return invalid("the extensions are not a header value".to_owned()),
        };
    }
    if let Some(name) = options
        .headers
        .keys()
        .find(|name| RESERVED_RESPONSE_HEADERS.contains(name))
    {
        return invalid(format!(
            "the {name} header is written by the handshake and cannot be set"
        ));
    }
    for (name, value) in &options.headers {
        response.append(name, value.clone());
    }
    Ok(())
}

/// Converts httparse's borrowed request into a [`Request`].
fn convert_request(request: &httparse::Request<'_, '_>) -> Result<Request, HandshakeError> {
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Err(HandshakeError::InvalidHttp("incomplete request line"));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HandshakeError::InvalidHttp("invalid method"))?;
    let uri = target
        .parse::<Uri>()
        .map_err(|_| HandshakeError::InvalidHttp("invalid request target"))?;
    let version = match version {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return Err(HandshakeError::InvalidHttp("invalid HTTP version")),
    };
    let mut http_request = http::Request::new(());
    *http_request.method_mut() = method;
    *http_request.uri_mut() = uri;
    *http_request.version_mut() = version;
    *http_request.headers_mut() = header_map(request.headers)?;
    Ok(Request {
        request: http_request,
        target: target.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::handshake::{ClientHandshake, ClientRequest};
    use crate::SeededRandom;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// The request of RFC 6455 section 1.2, with `extra` header lines, and
    /// any line naming a header in `without` left out.
    fn request_bytes(without: &[&str], extra: &str) -> String {
        let lines = [
            "Host: server.example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Origin: http://example.com",
            "Sec-WebSocket-Protocol: chat, superchat",
            "Sec-WebSocket-Version: 13",
        ];
        let mut out = "GET /chat HTTP/1.1\r\n".to_owned();
        for line in lines {
            if !without.iter().any(|w| line.starts_with(&format!("{w}:"))) {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str(extra);
        out.push_str("\r\n");
        out
    }

    fn read(config: HandshakeConfig, bytes: &[u8]) -> (ServerHandshake, Result<Option<Request>, HandshakeError>) {
        let mut server = ServerHandshake::new(config, Instant::now());
        let result = server.handle_read(bytes);
        (server, result)
    }

    fn accept_with(
        config: HandshakeConfig,
        request: &str,
        options: Accept,
    ) -> (ServerHandshake, Result<Accepted, HandshakeError>) {
        let (mut server, result) = read(config, request.as_bytes());
        let request = result.unwrap().unwrap();
        let accepted = server.accept_parts(&request, options);
        (server, accepted)
    }

    fn status_of(request: &str) -> Option<StatusCode> {
        accept_with(HandshakeConfig::default(), request, Accept::new())
            .1
            .unwrap_err()
            .status()
    }

    #[test]
    fn rfc6455_4_2_2_accept_key_example() {
        let (_, accepted) = accept_with(
            HandshakeConfig::default(),
            &request_bytes(&[], ""),
            Accept::new().subprotocol("chat"),
        );
        let accepted = accepted.unwrap();
        assert_eq!(
            String::from_utf8(accepted.response().to_vec()).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        );
        assert_eq!(accepted.subprotocol(), Some("chat"));
    }

    #[test]
    fn rfc6455_4_2_1_request_getters() {
        let (_, result) = read(
            HandshakeConfig::default(),
            request_bytes(
                &[],
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            )
            .replace("/chat", "/chat?room=1")
            .as_bytes(),
        );
        let request = result.unwrap().unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            (request.path(), request.query(), request.target()),
            ("/chat", Some("room=1"), "/chat?room=1")
        );
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.origin(), Some("http://example.com"));
        assert_eq!(request.key(), Some(KEY));
        assert_eq!(request.protocols(), ["chat", "superchat"]);
        assert_eq!(
            request.extensions().unwrap(),
            [ExtensionOffer::new("permessage-deflate").with_param("client_max_window_bits", None)]
        );
        assert!(request.is_websocket_upgrade());
        assert_eq!(request.headers().get("host").unwrap(), "server.example.com");
    }

    #[test]
    fn rfc6455_4_2_1_plain_http_request_is_returned() {
        let (mut server, result) = read(
            HandshakeConfig::default(),
            b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n",
        );
        let request = result.unwrap().unwrap();
        assert!(!request.is_websocket_upgrade());
        assert_eq!(request.path(), "/");
        let page = server.reject(StatusCode::OK, HeaderMap::new(), b"<h1>hi</h1>");
        assert_eq!(
            page,
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n<h1>hi</h1>"
        );
        assert!(matches!(server.handle_read(b"x"), Err(HandshakeError::InvalidState(_))));

        // A plain GET on the WebSocket path gets 400 from accept.
        let (mut server, result) = read(HandshakeConfig::default(), b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n");
        let request = result.unwrap().unwrap();
        let e = server.accept_parts(&request, Accept::new()).unwrap_err();
        assert_eq!(e, HandshakeError::MissingHeader("Upgrade"));
        assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));

        // POST requests are returned too, and the upgrade is refused with 405.
        let (mut server, result) = read(
            HandshakeConfig::default(),
            b"POST /ws HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        );
        let request = result.unwrap().unwrap();
        assert!(!request.is_websocket_upgrade());
        let e = server.accept_parts(&request, Accept::new()).unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::METHOD_NOT_ALLOWED));
    }

    #[test]
    fn rfc6455_4_2_1_missing_key_is_400() {
        let request = request_bytes(&["Sec-WebSocket-Key"], "");
        let (_, result) = accept_with(HandshakeConfig::default(), &request, Accept::new());
        let e = result.unwrap_err();
        assert_eq!(e, HandshakeError::MissingHeader("Sec-WebSocket-Key"));
        let response = String::from_utf8(e.response().unwrap()).unwrap();
        assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{response}");
        assert!(response.contains("missing Sec-WebSocket-Key header"), "{response}");
    }

    #[test]
    fn rfc6455_4_2_1_validation_failures_map_to_statuses() {
        let bad = StatusCode::BAD_REQUEST;
        let cases: Vec<(String, HandshakeError, StatusCode)> = vec![
            (request_bytes(&["Host"], ""), HandshakeError::MissingHeader("Host"), bad),
            (
                request_bytes(&[], "Host: again\r\n"),
                HandshakeError::InvalidHeader {
                    name: "Host",
                    reason: "it appears more than once",
                },
                bad,
            ),
            (
                request_bytes(&["Upgrade"], ""),
                HandshakeError::MissingHeader("Upgrade"),
                bad,
            ),
            (
                request_bytes(&["Upgrade"], "Upgrade: h2c\r\n"),
                HandshakeError::InvalidUpgradeHeader,
                bad,
            ),
            (
                request_bytes(&["Connection"], ""),
                HandshakeError::MissingHeader("Connection"),
                bad,
            ),
            (
                request_bytes(&["Connection"], "Connection: keep-alive\r\n"),
                HandshakeError::InvalidConnectionHeader,
                bad,
            ),
            (
                request_bytes(&["Sec-WebSocket-Key"], "Sec-WebSocket-Key: c2hvcnQ=\r\n"),
                HandshakeError::InvalidKey,
                bad,
            ),
            (
                request_bytes(&["Sec-WebSocket-Key"], "Sec-WebSocket-Key: !!!\r\n"),
                HandshakeError::InvalidKey,
                bad,
            ),
            (
                request_bytes(&[], &format!("Sec-WebSocket-Key: {KEY}\r\n")),
                HandshakeError::InvalidHeader {
                    name: "Sec-WebSocket-Key",
                    reason: "it appears more than once",
                },
                bad,
            ),
            (
                request_bytes(&[], "Sec-WebSocket-Extensions: permessage-deflate; =\r\n"),
                HandshakeError::InvalidExtensionHeader(
                    ExtensionOffer::parse_list("permessage-deflate; =").unwrap_err(),
                ),
                bad,
            ),
            (
                request_bytes(&[], "").replace("HTTP/1.1", "HTTP/1.0"),
                HandshakeError::UnsupportedHttpVersion,
                bad,
            ),
            (
                request_bytes(&[], "").replace("GET", "PUT"),
                HandshakeError::MethodNotAllowed(Method::PUT),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
        ];
        for (request, expected, status) in cases {
            let (mut server, result) = accept_with(HandshakeConfig::default(), &request, Accept::new());
            let e = result.unwrap_err();
            assert_eq!(e, expected, "{request}");
            assert_eq!(e.status(), Some(status), "{request}");
            assert_eq!(status_of(&request), Some(status));
            assert!(String::from_utf8(e.response().unwrap())
                .unwrap()
                .starts_with(&format!("HTTP/1.1 {}", status.as_str())));
            // The handshake is failed.
            assert!(matches!(server.handle_read(b""), Err(HandshakeError::InvalidState(_))));
        }
    }

    #[test]
    fn rfc6455_4_4_wrong_version_426() {
        for (without, extra, offered) in [
            (
                &["Sec-WebSocket-Version"][..],
                "Sec-WebSocket-Version: 8\r\n",
                Some("8"),
            ),
            (&["Sec-WebSocket-Version"][..], "", None),
            (
                &["Sec-WebSocket-Version"][..],
                "Sec-WebSocket-Version: 13, 8\r\n",
                Some("13, 8"),
            ),
        ] {
            let (_, result) = accept_with(
                HandshakeConfig::default(),
                &request_bytes(without, extra),
                Accept::new(),
            );
            let e = result.unwrap_err();
            assert_eq!(e, HandshakeError::UnsupportedVersion(offered.map(str::to_owned)));
            let response = String::from_utf8(e.response().unwrap()).unwrap();
            assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{response}");
            assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{response}");
        }
    }

    #[test]
    fn rfc6455_10_2_allowed_origins() {
        let config = HandshakeConfig {
            allowed_origins: Some(vec!["https://a.example".into(), "http://example.com".into()]),
            ..HandshakeConfig::default()
        };
        // Listed, in any ASCII case.
        let request = request_bytes(&["Origin"], "Origin: HTTP://Example.COM\r\n");
        assert!(accept_with(config.clone(), &request, Accept::new()).1.is_ok());
        // No Origin: a non-browser client.
        let request = request_bytes(&["Origin"], "");
        assert!(accept_with(config.clone(), &request, Accept::new()).1.is_ok());
        // Not listed.
        let request = request_bytes(&["Origin"], "Origin: https://evil.example\r\n");
        let e = accept_with(config.clone(), &request, Accept::new()).1.unwrap_err();
        assert_eq!(e, HandshakeError::OriginNotAllowed("https://evil.example".into()));
        assert_eq!(e.status(), Some(StatusCode::FORBIDDEN));
        // Not an exact match.
        let request = request_bytes(&["Origin"], "Origin: https://a.example.evil\r\n");
        assert!(accept_with(config.clone(), &request, Accept::new()).1.is_err());
        // Default: everything allowed.
        let request = request_bytes(&["Origin"], "Origin: https://evil.example\r\n");
        assert!(accept_with(HandshakeConfig::default(), &request, Accept::new())
            .1
            .is_ok());
    }

    #[test]
    fn rfc6455_4_2_2_accept_options() {
        let request = request_bytes(
            &[],
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        );
        // A subprotocol that was not offered is the application's error; the
        // handshake stays usable.
        let (mut server, result) = read(HandshakeConfig::default(), request.as_bytes());
        let parsed = result.unwrap().unwrap();
        for options in [
            Accept::new().subprotocol("other"),
            Accept::new().subprotocol("Chat"),
            Accept::new().extensions(vec![ExtensionOffer::new("x-other")]),
            Accept::new().extensions(vec![ExtensionOffer::new("permessage-deflate").with_param("a b", None)]),
            Accept::new().header(http::header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("x")),
            Accept::new().header(http::header::CONNECTION, HeaderValue::from_static("close")),
        ] {
            let e = server.accept_parts(&parsed, options).unwrap_err();
            assert!(matches!(e, HandshakeError::InvalidAcceptOptions(_)), "{e:?}");
            assert_eq!(e.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
        }
        let options = Accept::new()
            .subprotocol("superchat")
            .extensions(vec![
                ExtensionOffer::new("permessage-deflate").with_param("server_no_context_takeover", None)
            ])
            .header(http::header::SET_COOKIE, HeaderValue::from_static("a=1"))
            .header(http::header::SET_COOKIE, HeaderValue::from_static("b=2"));
        let accepted = server.accept_parts(&parsed, options).unwrap();
        let text = String::from_utf8(accepted.response().to_vec()).unwrap();
        assert!(text.contains("\r\nSec-WebSocket-Protocol: superchat\r\n"), "{text}");
        assert!(
            text.contains("\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"), "{text}");
        assert_eq!(accepted.extensions().len(), 1);
        // Answered once only.
        assert!(matches!(
            server.accept_parts(&parsed, Accept::new()),
            Err(HandshakeError::InvalidState(_))
        ));
    }

    #[test]
    fn rfc6455_4_2_1_request_byte_by_byte() {
        let mut bytes = request_bytes(&[], "").into_bytes();
        let head_len = bytes.len();
        bytes.extend_from_slice(b"\x81\x85abcd");
        let mut server = ServerHandshake::new(HandshakeConfig::default(), Instant::now());
        let mut request = None;
        for (i, b) in bytes.iter().enumerate() {
            match server.handle_read(&[*b]).unwrap() {
                Some(r) => {
                    assert_eq!(i, head_len - 1);
                    request = Some(r);
                }
                None => assert!(request.is_some() || i < head_len - 1),
            }
        }
        let accepted = server.accept_parts(&request.unwrap(), Accept::new()).unwrap();
        assert_eq!(accepted.leftover(), b"\x81\x85abcd");
    }

    #[test]
    fn rfc6455_4_2_1_leftover_after_request_is_kept() {
        let mut bytes = request_bytes(&[], "").into_bytes();
        bytes.extend_from_slice(b"\x81\x85ab");
        let (mut server, result) = read(HandshakeConfig::default(), &bytes);
        let request = result.unwrap().unwrap();
        assert!(server.handle_read(b"cd").unwrap().is_none());
        let accepted = server.accept_parts(&request, Accept::new()).unwrap();
        assert_eq!(accepted.leftover(), b"\x81\x85abcd");
    }

    #[test]
    fn early_data_is_capped() {
        let config = HandshakeConfig {
            max_header_bytes: 1024,
            ..HandshakeConfig::default()
        };
        let (mut server, result) = read(config, request_bytes(&[], "").as_bytes());
        result.unwrap().unwrap();
        assert!(server.handle_read(&[0; 1000]).unwrap().is_none());
        assert_eq!(
            server.handle_read(&[0; 25]).unwrap_err(),
            HandshakeError::TooMuchEarlyData { limit: 1024 }
        );
    }

    #[test]
    fn rfc6455_4_2_1_headers_too_large_is_431() {
        let mut server = ServerHandshake::new(HandshakeConfig::default(), Instant::now());
        assert!(server.handle_read(b"GET / HTTP/1.1\r\n").unwrap().is_none());
        let line = format!("X-Big: {}\r\n", "a".repeat(1000));
        let e = loop {
            match server.handle_read(line.as_bytes()) {
                Ok(None) => assert!(server.head.len() <= DEFAULT_MAX_HEADER_BYTES),
                Ok(Some(_)) => panic!("too large a request was accepted"),
                Err(e) => break e,
            }
        };
        assert_eq!(
            e,
            HandshakeError::HeadersTooLarge {
                limit: DEFAULT_MAX_HEADER_BYTES
            }
        );
        assert_eq!(e.status(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        assert!(String::from_utf8(e.response().unwrap())
            .unwrap()
            .starts_with("HTTP/1.1 431 "));

        // One huge read is not copied past the limit either.
        let mut server = ServerHandshake::new(HandshakeConfig::default(), Instant::now());
        let huge = vec![b'a'; 1 << 20];
        assert!(server.handle_read(&huge).is_err());
        assert!(server.head.len() <= DEFAULT_MAX_HEADER_BYTES);

        // A line without end.
        let mut server = ServerHandshake::new(HandshakeConfig::default(), Instant::now());
        let e = loop {
            if let Err(e) = server.handle_read(&[b'a'; 1000]) {
                break e;
            }
        };
        assert_eq!(e.status(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }

    #[test]
    fn rfc6455_4_2_1_too_many_headers_is_431() {
        let config = HandshakeConfig {
            max_headers: 10,
            ..HandshakeConfig::default()
        };
        let request = request_bytes(&[], &"X-A: b\r\n".repeat(4));
        let (_, result) = read(config.clone(), request.as_bytes());
        let e = result.unwrap_err();
        assert_eq!(e, HandshakeError::TooManyHeaders { limit: 10 });
        assert_eq!(e.status(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        let request = request_bytes(&[], &"X-A: b\r\n".repeat(3));
        assert!(read(config, request.as_bytes()).1.unwrap().is_some());
    }

    #[test]
    fn rfc6455_4_2_1_malformed_http_is_400() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"[..],
            b"GET\x00/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded\r\n\r\n",
        ] {
            let (_, result) = read(HandshakeConfig::default(), bytes);
            let e = result.unwrap_err();
            assert!(matches!(e, HandshakeError::InvalidHttp(_)), "{bytes:?}: {e:?}");
            assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
        }
    }

    #[test]
    fn rfc6455_4_2_1_handshake_timeout() {
        let now = Instant::now();
        let config = HandshakeConfig {
            timeout: Some(Duration::from_secs(3)),
            ..HandshakeConfig::default()
        };
        let mut server = ServerHandshake::new(config, now);
        assert_eq!(server.poll_timeout(), Some(now + Duration::from_secs(3)));
        // Slowloris: a request that trickles in.
        let bytes = request_bytes(&[], "");
        for (i, b) in bytes.bytes().take(20).enumerate() {
            let t = now + Duration::from_millis(100 * i as u64);
            server.handle_timeout(t).unwrap();
            assert!(server.handle_read(&[b]).unwrap().is_none());
        }
        let e = server.handle_timeout(now + Duration::from_secs(3)).unwrap_err();
        assert_eq!(e, HandshakeError::Timeout);
        assert!(String::from_utf8(e.response().unwrap())
            .unwrap()
            .starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert_eq!(server.poll_timeout(), None);
        assert!(server.handle_read(b"x").is_err());

        // Once the request is in, the application owns the clock.
        let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
        server.handle_read(bytes.as_bytes()).unwrap().unwrap();
        assert_eq!(server.poll_timeout(), None);
        assert_eq!(server.handle_timeout(now + Duration::from_secs(3600)), Ok(()));
    }

    #[test]
    fn rfc6455_4_2_1_eof() {
        let mut server = ServerHandshake::new(HandshakeConfig::default(), Instant::now());
        assert!(server.handle_read(b"GET / HT").unwrap().is_none());
        assert_eq!(server.handle_eof(), HandshakeError::UnexpectedEof);
        assert_eq!(server.handle_eof().status(), None);
    }

    #[test]
    fn reject_replaces_framing_headers() {
        let mut server = ServerHandshake::new(HandshakeConfig::default(), Instant::now());
        let mut headers = HeaderMap::new();
        headers.insert(http::header::LOCATION, HeaderValue::from_static("/elsewhere"));
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let bytes = server.reject(StatusCode::FOUND, headers, b"");
        assert_eq!(
            bytes,
            b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn request_from_http() {
        let http_request = http::Request::get("/chat?x")
            .header("host", "a")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-key", KEY)
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        let request = Request::from_http(http_request);
        assert_eq!(request.target(), "/chat?x");
        let response = accept_response(&request, &HandshakeConfig::default(), &Accept::new()).unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// Client and server cores wired together in memory.
    #[test]
    fn rfc6455_4_end_to_end() {
        let now = Instant::now();
        let request = ClientRequest::new("ws://localhost:9001/chat?v=2")
            .unwrap()
            .origin("http://localhost")
            .protocols(["v2", "v1"])
            .extensions(vec![
                ExtensionOffer::new("permessage-deflate"),
                ExtensionOffer::new("x-foo"),
            ]);
        let (mut client, request_bytes) =
            ClientHandshake::new(request, &mut SeededRandom::new(42), now, Some(Duration::from_secs(5))).unwrap();

        let config = HandshakeConfig {
            allowed_origins: Some(vec!["http://localhost".into()]),
            ..HandshakeConfig::default()
        };
        let mut server = ServerHandshake::new(config, now);
        let request = server.handle_read(&request_bytes).unwrap().unwrap();
        assert!(request.is_websocket_upgrade());
        assert_eq!(request.headers()["host"], "localhost:9001");
        assert_eq!(request.protocols(), ["v2", "v1"]);
        let chosen = request
            .extensions()
            .unwrap()
            .into_iter()
            .filter(|e| e.name == "x-foo")
            .collect();
        let accepted = server
            .accept_parts(&request, Accept::new().subprotocol("v1").extensions(chosen))
            .unwrap();

        let mut bytes = accepted.response().to_vec();
        bytes.extend_from_slice(b"\x81\x00");
        let response = client.handle_read(&bytes).unwrap().unwrap();
        assert_eq!(response.subprotocol(), Some("v1"));
        assert_eq!(response.extensions(), [ExtensionOffer::new("x-foo")]);
        assert_eq!(response.leftover(), b"\x81\x00");
    }

    mod proptests {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn rfc6455_4_2_1_arbitrary_request_never_panics(
                data in proptest::collection::vec(any::<u8>(), 0..512),
                cut in 0usize..512,
            ) {
                let mut server = ServerHandshake::new(HandshakeConfig::default(), Instant::now());
                let cut = cut.min(data.len());
                let first = server.handle_read(&data[..cut]);
                let second = server.handle_read(&data[cut..]);
                for result in [first, second] {
                    match result {
                        Ok(Some(request)) => {
                            let _ = request.extensions();
                            let _ = request.protocols();
                            let _ = server.accept_parts(&request, Accept::new());
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let _ = e.response();
                        }
                    }
                }
            }

            #[test]
            fn rfc6455_4_2_1_arbitrary_header_values_never_panic(
                values in proptest::collection::vec("[ -~]{0,30}", 7),
            ) {
                let names = ["Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
                    "Sec-WebSocket-Extensions", "Origin"];
                let mut request = "GET / HTTP/1.1\r\n".to_owned();
                for (name, value) in names.iter().zip(&values) {
                    request.push_str(&format!("{name}: {value}\r\n"));
                }
                request.push_str("\r\n");
                let config = HandshakeConfig { allowed_origins: Some(vec!["x".into()]), ..HandshakeConfig::default() };
                let mut server = ServerHandshake::new(config, Instant::now());
                if let Ok(Some(request)) = server.handle_read(request.as_bytes()) {
                    match server.accept_parts(&request, Accept::new()) {
                        Ok(accepted) => prop_assert!(accepted.response().starts_with(b"HTTP/1.1 101 ")),
                        Err(e) => prop_assert!(e.response().is_some()),
                    }
                }
            }

            #[test]
            fn rfc6455_4_2_1_any_split_gives_the_same_request(a in 0usize..300, b in 0usize..300) {
                let mut bytes = request_bytes(&[], "Sec-WebSocket-Extensions: permessage-deflate\r\n").into_bytes();
                bytes.extend_from_slice(b"\x88\x80abcd");
                let (a, b) = (a.min(bytes.len()), b.min(bytes.len()));
                let (a, b) = (a.min(b), a.max(b));
                let mut server = ServerHandshake::new(HandshakeConfig::default(), Instant::now());
                let mut request = None;
                for chunk in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    if let Some(r) = server.handle_read(chunk).unwrap() {
                        prop_assert!(request.is_none());
                        request = Some(r);
                    }
                }
                let request = request.unwrap();
                prop_assert_eq!(request.path(), "/chat");
                prop_assert_eq!(request.headers().len(), 8);
                let accepted = server.accept_parts(&request, Accept::new()).unwrap();
                prop_assert_eq!(accepted.leftover(), b"\x88\x80abcd");
            }
        }
    }
}
