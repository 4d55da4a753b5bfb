//! The client side: the request to send and the response to check (RFC 6455
//! section 4.1).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};

use super::header::{extension_offers, has_token, is_token, list_elements, single_value, write_header_name};
use super::http1::{empty_headers, header_map, parse_error, write_headers, HeadBuffer};
use super::{
    accept_key, ExtensionOffer, HandshakeError, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEADER_BYTES, KEY_LEN,
    MAX_REJECTION_BODY, WEBSOCKET_VERSION,
};
use crate::{Config, Connection, RandomSource};

/// Default port of `ws://` URIs (RFC 6455 section 3).
const WS_PORT: u16 = 80;
/// Default port of `wss://` URIs (RFC 6455 section 3).
const WSS_PORT: u16 = 443;

/// Headers the handshake writes itself; [`ClientRequest::header`] cannot
/// set them.
const RESERVED_REQUEST_HEADERS: [HeaderName; 11] = [
    http::header::HOST,
    http::header::UPGRADE,
    http::header::CONNECTION,
    http::header::SEC_WEBSOCKET_KEY,
    http::header::SEC_WEBSOCKET_VERSION,
    http::header::SEC_WEBSOCKET_PROTOCOL,
    http::header::SEC_WEBSOCKET_EXTENSIONS,
    http::header::SEC_WEBSOCKET_ACCEPT,
    http::header::ORIGIN,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
];

/// What a client asks for: where to connect, and the headers of its
/// opening handshake (RFC 6455 section 4.1).
///
/// ```
/// use tether_proto::handshake::{ClientRequest, ExtensionOffer};
///
/// let request = ClientRequest::new("wss://example.com/feed?room=1")?
///     .origin("https://example.com")
///     .protocols(["v2.feed", "v1.feed"])
///     .extensions(vec![ExtensionOffer::new("permessage-deflate").with_param("client_max_window_bits", None)])
///     .header(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer abc"));
/// assert!(request.is_secure());
/// assert_eq!((request.host(), request.port()), ("example.com", 443));
/// # Ok::<(), tether_proto::handshake::HandshakeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientRequest {
    uri: Uri,
    secure: bool,
    /// The host to connect to, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    /// The `Host` header: brackets kept, default port omitted.
    host_header: String,
    /// The request target: path (`/` if empty) and query.
    target: String,
    origin: Option<String>,
    protocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
    /// permessage-deflate offers, in the order they appear in `extensions`.
    deflate: Vec<super::DeflateSettings>,
    headers: HeaderMap,
    /// `Basic` credentials from the URI's userinfo: a sensitive header
    /// value (`Debug` shows `Sensitive`), sent as `Authorization` unless a
    /// header of that name was added.
    credentials: Option<HeaderValue>,
}

/// A client's opening handshake in progress: checks the server's response.
///
/// Feed it the bytes received with [`handle_read`](Self::handle_read) until
/// it returns a [`ClientResponse`] or an error; call
/// [`handle_eof`](Self::handle_eof) at end of stream and
/// [`handle_timeout`](Self::handle_timeout) when
/// [`poll_timeout`](Self::poll_timeout) passes.
#[derive(Debug)]
pub struct ClientHandshake {
    /// The `Sec-WebSocket-Accept` value the server must answer.
    accept: String,
    protocols: Vec<String>,
    extension_names: Vec<String>,
    #[cfg_attr(not(feature = "deflate"), allow(dead_code))]
    deflate: Vec<super::DeflateSettings>,
    head: HeadBuffer,
    max_headers: usize,
    state: State,
    deadline: Option<Instant>,
}

/// A successful handshake: the server's 101 response and what it
/// negotiated.
#[derive(Debug)]
pub struct ClientResponse {
    response: http::Response<()>,
    subprotocol: Option<String>,
    extensions: Vec<ExtensionOffer>,
    /// The permessage-deflate offer the server's answer matched.
    deflate: Option<super::DeflateSettings>,
    leftover: Vec<u8>,
}

#[derive(Debug)]
enum State {
    /// Reading the response head.
    Head,
    /// Reading the body of a rejection.
    Body(Box<Rejection>),
    /// Succeeded or failed.
    Done,
}

/// A non-101 response whose body is still arriving.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    framing: Framing,
}

/// How the end of a rejection's body is found (RFC 9112 section 6.3).
#[derive(Debug)]
enum Framing {
    /// `Content-Length`: this many bytes remain.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// Neither: the body runs to end of stream.
    UntilEof,
}

/// Decoder state of a chunked body (RFC 9112 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// In a chunk-size line; the size so far, and whether a digit was seen.
    Size { size: u64, digits: bool },
    /// After the size, in chunk extensions, up to the end of the line.
    Extension { size: u64 },
    /// In chunk data.
    Data { remaining: u64 },
    /// After chunk data, expecting CRLF.
    DataEnd,
    /// In the trailer section; whether the current line is empty so far.
    Trailer { empty_line: bool },
    /// The body ended, or its framing was broken.
    Done,
}

impl ClientRequest {
    /// A request for `uri`, which must be a `ws://` or `wss://` URI with a
    /// host and without a fragment (RFC 6455 section 3). The port defaults
    /// to 80 and 443, the path to `/`; IPv6 literals are written in
    /// brackets (`ws://[::1]:9001/`).
    pub fn new(uri: &str) -> Result<Self, HandshakeError> {
        if uri.contains('#') {
            return Err(HandshakeError::InvalidUri(
                "a WebSocket URI has no fragment (RFC 6455 section 3); escape # as %23",
            ));
        }
        let uri = uri
            .parse::<Uri>()
            .map_err(|_| HandshakeError::InvalidUri("not a valid URI"))?;
        Self::from_uri(uri)
    }

    /// A request for an already parsed URI; see [`new`](Self::new). (A
    /// [`Uri`] has already dropped any fragment.)
    pub fn from_uri(uri: Uri) -> Result<Self, HandshakeError> {
        let secure = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => false,
            Some(s) if s.eq_ignore_ascii_case("wss") => true,
            _ => return Err(HandshakeError::InvalidUri("the scheme must be ws or wss")),
        };
        let Some(authority) = uri.authority() else {
            return Err(HandshakeError::InvalidUri("missing host"));
        };
        // `user:password@`: Basic credentials, as browsers and Python
        // `websockets` take them. They never stay in the URI (it is logged,
        // shown by `Debug`, followed by redirects).
        let userinfo = authority
            .as_str()
            .rsplit_once('@')
            .map(|(userinfo, host_port)| (userinfo.to_owned(), host_port.to_owned()));
        let (uri, credentials) = match userinfo {
            None => (uri, None),
            Some((userinfo, host_port)) => {
                let credentials = basic_credentials(&userinfo)?;
                let mut parts = uri.into_parts();
                parts.authority = Some(
                    host_port
                        .parse()
                        .map_err(|_| HandshakeError::InvalidUri("not a valid host and port"))?,
                );
                let uri = Uri::from_parts(parts).map_err(|_| HandshakeError::InvalidUri("not a valid URI"))?;
                (uri, Some(credentials))
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(HandshakeError::InvalidUri("missing host"));
        };
        let bracketed = authority.host();
        let host = bracketed
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(bracketed);
        if host.is_empty() {
            return Err(HandshakeError::InvalidUri("missing host"));
        }
        let default_port = if secure { WSS_PORT } else { WS_PORT };
        let port = match authority.port() {
            None => default_port,
            Some(port) => port.as_u16(),
        };
        let host_header = if port == default_port {
            bracketed.to_owned()
        } else {
            format!("{bracketed}:{port}")
        };
        let mut target = if uri.path().is_empty() {
            "/".to_owned()
        } else {
            uri.path().to_owned()
        };
        if let Some(query) = uri.query() {
            target.push('?');
            target.push_str(query);
        }
        Ok(Self {
            host: host.to_owned(),
            uri,
            secure,
            port,
            host_header,
            target,
            origin: None,
            protocols: Vec::new(),
            extensions: Vec::new(),
            deflate: Vec::new(),
            headers: HeaderMap::new(),
            credentials,
        })
    }

    /// Sends an `Origin` header (RFC 6455 section 4.1 item 8, section 10.2).
    /// Browsers always send one; other clients may.
    #[must_use]
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Offers these subprotocols, in order of preference
    /// (`Sec-WebSocket-Protocol`, RFC 6455 section 4.1 item 10). Each must
    /// be a token.
    #[must_use]
    pub fn protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Offers these extensions, in order of preference
    /// (`Sec-WebSocket-Extensions`, RFC 6455 section 4.1 item 11).
    #[must_use]
    pub fn extensions(mut self, extensions: Vec<ExtensionOffer>) -> Self {
        self.extensions = extensions;
        self
    }

    /// Offers permessage-deflate (RFC 7692) with `config`. Call it more than
    /// once to offer several configurations, in order of preference; the
    /// server picks one or none.
    #[cfg(feature = "deflate")]
    #[must_use]
    pub fn permessage_deflate(mut self, config: crate::deflate::DeflateConfig) -> Self {
        self.extensions.push(config.offer());
        self.deflate.push(config);
        self
    }

    /// Adds a header line (`Authorization`, `Cookie`, `User-Agent`...).
    ///
    /// The headers that the handshake writes itself (`Host`, `Upgrade`,
    /// `Connection`, `Origin`, `Sec-WebSocket-*`, `Content-Length`,
    /// `Transfer-Encoding`) cannot be set this way:
    /// [`ClientHandshake::new`] refuses them with
    /// [`HandshakeError::InvalidRequest`].
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Whether the request carries credentials from the URI's userinfo
    /// (`ws://user:password@host/`), sent as a `Basic` `Authorization`
    /// header unless [`header`](Self::header) set one.
    pub fn has_uri_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// The URI requested, without its userinfo (the credentials are kept
    /// apart: see [`has_uri_credentials`](Self::has_uri_credentials)).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Whether the URI is `wss://`: the transport must be TLS.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host to connect to (and the TLS server name): a name or an IP
    /// address, without the brackets of an IPv6 literal.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to: the URI's, or 80 for `ws://` and 443 for
    /// `wss://`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request to send after a redirect (301, 302, 303, 307, 308) to
    /// `location`: an absolute `ws`, `wss`, `http` or `https` URL (`http`
    /// and `https` become `ws` and `wss`), a scheme-relative `//host/path`,
    /// an absolute path or a relative one, resolved against this request's
    /// URI (RFC 3986 section 5.2, without dot segments). Origin,
    /// subprotocols, extension offers and headers are kept, except that
    /// `Authorization` and `Cookie` are dropped when the host changes: the
    /// credentials were meant for this host only.
    ///
    /// Whether to follow at all (how many hops, `wss` to `ws`) is the
    /// caller's policy.
    pub fn redirect(&self, location: &str) -> Result<Self, HandshakeError> {
        let location = location.trim();
        let lower = location.to_ascii_lowercase();
        let scheme = if self.secure { "wss" } else { "ws" };
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        let absolute = if let Some(rest) = strip_scheme(location, &lower, &["ws://", "http://"]) {
            format!("ws://{rest}")
        } else if let Some(rest) = strip_scheme(location, &lower, &["wss://", "https://"]) {
            format!("wss://{rest}")
        } else if let Some(rest) = location.strip_prefix("//") {
            format!("{scheme}://{rest}")
        } else if location.starts_with('/') {
            format!("{scheme}://{authority}{location}")
        } else if location.contains("://") {
            return Err(HandshakeError::InvalidUri(
                "a redirect to a scheme other than ws, wss, http or https",
            ));
        } else {
            // Relative to the directory of the current path.
            let path = self.uri.path();
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            let dir = if dir.is_empty() { "/" } else { dir };
            format!("{scheme}://{authority}{dir}{location}")
        };
        let mut next = Self::new(&absolute)?;
        next.origin.clone_from(&self.origin);
        next.protocols.clone_from(&self.protocols);
        next.extensions.clone_from(&self.extensions);
        next.deflate.clone_from(&self.deflate);
        next.headers = self.headers.clone();
        if next.host.eq_ignore_ascii_case(&self.host) {
            // A location's own credentials win; otherwise the URI's follow.
            if next.credentials.is_none() {
                next.credentials.clone_from(&self.credentials);
            }
        } else {
            next.headers.remove(http::header::AUTHORIZATION);
            next.headers.remove(http::header::COOKIE);
        }
        Ok(next)
    }

    /// Checks the parts the builder methods took without checking.
    fn validate(&self) -> Result<(), HandshakeError> {
        let invalid = |reason: String| Err(HandshakeError::InvalidRequest(reason));
        if let Some(origin) = &self.origin {
            if HeaderValue::from_str(origin).is_err() {
                return invalid(format!("origin {origin:?} is not a valid header value"));
            }
        }
        if let Some(protocol) = self.protocols.iter().find(|p| !is_token(p)) {
            return invalid(format!("subprotocol {protocol:?} is not a token"));
        }
        for offer in &self.extensions {
            offer.validate().or_else(invalid)?;
        }
        #[cfg(feature = "deflate")]
        for config in &self.deflate {
            config.validate().or_else(invalid)?;
        }
        if let Some(name) = self.headers.keys().find(|name| RESERVED_REQUEST_HEADERS.contains(name)) {
            return invalid(format!(
                "the {name} header is written by the handshake and cannot be set"
            ));
        }
        Ok(())
    }

    /// The extended CONNECT request of RFC 8441 section 5 (without the
    /// `:protocol` pseudo-header, which the HTTP/2 library sets).
    fn extended_connect_request(&self) -> Result<http::Request<()>, HandshakeError> {
        let scheme = if self.secure { "https" } else { "http" };
        let uri = format!("{scheme}://{}{}", self.host_header, self.target)
            .parse::<Uri>()
            .map_err(|_| HandshakeError::InvalidUri("not a valid URI"))?;
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::CONNECT;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        let headers = request.headers_mut();
        headers.insert(
            http::header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(WEBSOCKET_VERSION),
        );
        let invalid = |what: &str| HandshakeError::InvalidRequest(format!("{what} is not a header value"));
        if let Some(origin) = &self.origin {
            headers.insert(
                http::header::ORIGIN,
                HeaderValue::from_str(origin).map_err(|_| invalid("the origin"))?,
            );
        }
        if !self.protocols.is_empty() {
            headers.insert(
                http::header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(&self.protocols.join(", ")).map_err(|_| invalid("the subprotocols"))?,
            );
        }
        if !self.extensions.is_empty() {
            headers.insert(
                http::header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(&ExtensionOffer::format_list(&self.extensions))
                    .map_err(|_| invalid("the extension offers"))?,
            );
        }
        if let Some(credentials) = &self.credentials {
            if !self.headers.contains_key(http::header::AUTHORIZATION) {
                headers.insert(http::header::AUTHORIZATION, credentials.clone());
            }
        }
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        Ok(request)
    }

    /// Writes the request (RFC 6455 section 4.1).
    fn write(&self, key: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut line = |name: &HeaderName, value: &[u8]| {
            write_header_name(&mut out, name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        // Items 1-2: GET, HTTP/1.1 or higher; the target is the path and query.
        let request_line = format!("GET {} HTTP/1.1\r\n", self.target);
        line(&http::header::HOST, self.host_header.as_bytes()); // item 4
        line(&http::header::UPGRADE, b"websocket"); // item 5
        line(&http::header::CONNECTION, b"Upgrade"); // item 6
        line(&http::header::SEC_WEBSOCKET_KEY, key.as_bytes()); // item 7
        line(&http::header::SEC_WEBSOCKET_VERSION, WEBSOCKET_VERSION.as_bytes()); // item 9
        if let Some(origin) = &self.origin {
            line(&http::header::ORIGIN, origin.as_bytes()); // item 8
        }
        if !self.protocols.is_empty() {
            line(
                &http::header::SEC_WEBSOCKET_PROTOCOL,
                self.protocols.join(", ").as_bytes(),
            ); // item 10
        }
        if !self.extensions.is_empty() {
            line(
                &http::header::SEC_WEBSOCKET_EXTENSIONS,
                ExtensionOffer::format_list(&self.extensions).as_bytes(),
            );
        }
        if let Some(credentials) = &self.credentials {
            if !self.headers.contains_key(http::header::AUTHORIZATION) {
                line(&http::header::AUTHORIZATION, credentials.as_bytes());
            }
        }
        write_headers(&mut out, &self.headers); // item 12
        out.extend_from_slice(b"\r\n");
        let mut bytes = request_line.into_bytes();
        bytes.extend_from_slice(&out);
        bytes
    }
}

impl ClientHandshake {
    /// Starts a handshake: draws a 16-byte `Sec-WebSocket-Key` from
    /// `random` and returns the request bytes to send. The opening
    /// handshake fails with [`HandshakeError::Timeout`] if it has not
    /// completed `timeout` after `now`.
    ///
    /// Fails with [`HandshakeError::InvalidRequest`] if the request cannot
    /// be sent: an origin that is not a header value, a subprotocol or
    /// extension offer that is not made of tokens, or a reserved header.
    pub fn new(
        request: ClientRequest,
        random: &mut dyn RandomSource,
        now: Instant,
        timeout: Option<Duration>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        Self::with_deadline(request, random, timeout.and_then(|timeout| now.checked_add(timeout)))
    }

    /// Starts a handshake that fails with [`HandshakeError::Timeout`] if it
    /// has not completed by `deadline`: for an adapter with one deadline
    /// for the whole connect (DNS, TCP, TLS and this handshake), which
    /// passes what is left of it as it is, with no `now` and no duration to
    /// recompute. A deadline already past fails at the first
    /// [`handle_timeout`](Self::handle_timeout). Otherwise the same as
    /// [`new`](Self::new).
    pub fn with_deadline(
        request: ClientRequest,
        random: &mut dyn RandomSource,
        deadline: Option<Instant>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        request.validate()?;
        let mut nonce = [0; KEY_LEN];
        random.fill_bytes(&mut nonce);
        let key = BASE64.encode(nonce);
        let bytes = request.write(&key);
        let handshake = Self {
            accept: accept_key(key.as_bytes()),
            protocols: request.protocols,
            extension_names: request.extensions.into_iter().map(|offer| offer.name).collect(),
            deflate: request.deflate,
            head: HeadBuffer::new(DEFAULT_MAX_HEADER_BYTES),
            max_headers: DEFAULT_MAX_HEADERS,
            state: State::Head,
            deadline,
        };
        Ok((handshake, bytes))
    }

    /// Starts a handshake over HTTP/2 (RFC 8441): returns the extended
    /// CONNECT request to send on a new stream, `:method CONNECT` with the
    /// URI's scheme (`https` for `wss://`, `http` for `ws://`), authority and
    /// path, `Sec-WebSocket-Version: 13`, and the same Origin, subprotocol
    /// and extension offers and headers as over HTTP/1.1 (no key). The
    /// HTTP/2 library adds `:protocol websocket` its own way (the h2
    /// crate: an `h2::ext::Protocol` extension). Check the answer with
    /// [`handle_extended_connect_response`](Self::handle_extended_connect_response).
    pub fn extended_connect(request: ClientRequest) -> Result<(Self, http::Request<()>), HandshakeError> {
        request.validate()?;
        let http_request = request.extended_connect_request()?;
        let handshake = Self {
            accept: String::new(),
            protocols: request.protocols,
            extension_names: request.extensions.into_iter().map(|offer| offer.name).collect(),
            deflate: request.deflate,
            head: HeadBuffer::new(0),
            max_headers: DEFAULT_MAX_HEADERS,
            state: State::Head,
            deadline: None,
        };
        Ok((handshake, http_request))
    }

    /// Checks the response to an extended CONNECT (RFC 8441 section 5): a
    /// 2xx accepts the WebSocket, with the same subprotocol and extension
    /// checks as over HTTP/1.1; anything else is
    /// [`HandshakeError::Rejected`] with its status and headers (the body,
    /// if the caller wants it, is on the stream).
    pub fn handle_extended_connect_response(
        &mut self,
        response: http::Response<()>,
    ) -> Result<ClientResponse, HandshakeError> {
        if !matches!(self.state, State::Head) {
            return Err(HandshakeError::InvalidState("the handshake already finished"));
        }
        let (parts, ()) = response.into_parts();
        if !parts.status.is_success() {
            self.state = State::Done;
            return Err(HandshakeError::Rejected {
                status: parts.status,
                headers: Box::new(parts.headers),
                body: Vec::new(),
            });
        }
        let result = self.check_negotiation(parts.status, parts.headers, Vec::new());
        self.state = State::Done;
        result
    }

    /// Input: bytes received from the server.
    ///
    /// `Ok(None)` while the response is incomplete. `Ok(Some(response))`
    /// once a valid 101 response arrived: build the connection with
    /// [`ClientResponse::into_connection`], which also gets the bytes that
    /// followed the response. A non-101 answer becomes
    /// [`HandshakeError::Rejected`] once its body has arrived (read per
    /// `Content-Length` or chunked encoding; without either, at
    /// [`handle_eof`](Self::handle_eof)). Informational responses (1xx other
    /// than 101) are skipped.
    ///
    /// The response head may take up to 16 KiB and 64 header fields.
    pub fn handle_read(&mut self, data: &[u8]) -> Result<Option<ClientResponse>, HandshakeError> {
        let result = match &mut self.state {
            State::Done => return Err(HandshakeError::InvalidState("handle_read after the handshake finished")),
            State::Head => self.read_head(data),
            State::Body(rejection) => {
                if rejection.feed(data) {
                    Err(self.finish_rejection())
                } else {
                    Ok(None)
                }
            }
        };
        if result.is_err() {
            self.state = State::Done;
        }
        result
    }

    /// Input: the server closed the transport. Ends the handshake: a
    /// pending rejection whose body runs to end of stream (or whose body was
    /// cut short) becomes [`HandshakeError::Rejected`]; otherwise
    /// [`HandshakeError::UnexpectedEof`].
    pub fn handle_eof(&mut self) -> HandshakeError {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Head => HandshakeError::UnexpectedEof,
            State::Body(rejection) => rejection.into_error(),
            State::Done => HandshakeError::InvalidState("handle_eof after the handshake finished"),
        }
    }

    /// Input: the time now. Once the deadline of
    /// [`poll_timeout`](Self::poll_timeout) has passed, the handshake fails
    /// with [`HandshakeError::Timeout`] (or, if a rejection's body was being
    /// read, with that [`HandshakeError::Rejected`] and the body so far).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), HandshakeError> {
        if self.deadline.is_none_or(|deadline| now < deadline) {
            return Ok(());
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Head => Err(HandshakeError::Timeout),
            State::Body(rejection) => Err(rejection.into_error()),
            State::Done => Ok(()),
        }
    }

    /// Output: when to call [`handle_timeout`](Self::handle_timeout); `None`
    /// without a timeout or once the handshake is finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Done => None,
            State::Head | State::Body(_) => self.deadline,
        }
    }

    fn read_head(&mut self, mut data: &[u8]) -> Result<Option<ClientResponse>, HandshakeError> {
        loop {
            let taken = self.head.fill(data);
            data = data.get(taken..).unwrap_or_default();
            if let Some(buf) = self.head.parse_candidate() {
                let mut headers = empty_headers(self.max_headers);
                let mut response = httparse::Response::new(&mut headers);
                let (len, status, headers) = match response.parse(buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = StatusCode::from_u16(response.code.unwrap_or_default())
                            .map_err(|_| HandshakeError::InvalidHttp("invalid response status"))?;
                        (len, status, header_map(response.headers)?)
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.head.is_full() {
                            return Err(HandshakeError::HeadersTooLarge {
                                limit: DEFAULT_MAX_HEADER_BYTES,
                            });
                        }
                        return Ok(None);
                    }
                    Err(e) => return Err(parse_error(e, self.max_headers)),
                };
                if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                    // 100 Continue, 103 Early Hints...: a final response follows.
                    self.head.consume(len);
                    continue;
                }
                let leftover = self.head.take_leftover(len, data);
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return self.check_switch(headers, leftover).map(Some);
                }
                return self.start_rejection(status, headers, &leftover);
            }
            if self.head.is_full() {
                return Err(HandshakeError::HeadersTooLarge {
                    limit: DEFAULT_MAX_HEADER_BYTES,
                });
            }
            // Not full, so `fill` took everything.
            return Ok(None);
        }
    }

    /// Checks a 101 response (RFC 6455 section 4.1, the client's checks
    /// 1-6 on the server's response).
    fn check_switch(&mut self, headers: HeaderMap, leftover: Vec<u8>) -> Result<ClientResponse, HandshakeError> {
        // 2. Upgrade: websocket, case-insensitively.
        if !headers.contains_key(http::header::UPGRADE) {
            return Err(HandshakeError::MissingHeader("Upgrade"));
        }
        let mut upgrade = list_elements(&headers, http::header::UPGRADE);
        let is_websocket =
            upgrade.next().is_some_and(|p| p.eq_ignore_ascii_case(b"websocket")) && upgrade.next().is_none();
        drop(upgrade);
        if !is_websocket {
            return Err(HandshakeError::InvalidUpgradeHeader);
        }
        // 3. Connection: upgrade, case-insensitively.
        if !headers.contains_key(http::header::CONNECTION) {
            return Err(HandshakeError::MissingHeader("Connection"));
        }
        if !has_token(&headers, http::header::CONNECTION, "upgrade") {
            return Err(HandshakeError::InvalidConnectionHeader);
        }
        // 4. Sec-WebSocket-Accept: base64(SHA-1(key ++ GUID)).
        match single_value(&headers, &http::header::SEC_WEBSOCKET_ACCEPT, "Sec-WebSocket-Accept")? {
            None => return Err(HandshakeError::MissingHeader("Sec-WebSocket-Accept")),
            Some(accept) if accept != self.accept => return Err(HandshakeError::InvalidAcceptKey),
            Some(_) => {}
        }
        self.check_negotiation(StatusCode::SWITCHING_PROTOCOLS, headers, leftover)
    }

    /// The checks of a server's acceptance that HTTP/1.1 and RFC 8441
    /// extended CONNECT share: the subprotocol and the extensions answered
    /// were offered, permessage-deflate's answer fits an offer.
    fn check_negotiation(
        &mut self,
        status: StatusCode,
        headers: HeaderMap,
        leftover: Vec<u8>,
    ) -> Result<ClientResponse, HandshakeError> {
        // 6. Sec-WebSocket-Protocol: absent, or one that was offered.
        let subprotocol = match single_value(
            &headers,
            &http::header::SEC_WEBSOCKET_PROTOCOL,
            "Sec-WebSocket-Protocol",
        )? {
            None => None,
            Some(protocol) if protocol.contains(',') => {
                return Err(HandshakeError::InvalidHeader {
                    name: "Sec-WebSocket-Protocol",
                    reason: "the server must select a single subprotocol",
                })
            }
            Some(protocol) if self.protocols.iter().any(|p| p == protocol) => Some(protocol.to_owned()),
            Some(protocol) => return Err(HandshakeError::UnofferedSubprotocol(protocol.to_owned())),
        };
        // 5. Sec-WebSocket-Extensions: only extensions that were offered.
        let extensions = extension_offers(&headers)?;
        if let Some(unoffered) = extensions.iter().find(|e| {
            !self
                .extension_names
                .iter()
                .any(|name| name.eq_ignore_ascii_case(&e.name))
        }) {
            return Err(HandshakeError::UnofferedExtension(unoffered.name.clone()));
        }
        let deflate = self.match_deflate(&extensions)?;
        self.state = State::Done;
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(ClientResponse {
            response,
            subprotocol,
            extensions,
            deflate,
            leftover,
        })
    }

    /// Finds the permessage-deflate offer that the server's answer accepts,
    /// if it answered permessage-deflate (RFC 7692 section 7.1).
    #[cfg(feature = "deflate")]
    fn match_deflate(&self, answers: &[ExtensionOffer]) -> Result<Option<super::DeflateSettings>, HandshakeError> {
        let name = crate::deflate::EXTENSION_NAME;
        let mut answers = answers.iter().filter(|a| a.name.eq_ignore_ascii_case(name));
        let Some(answer) = answers.next() else {
            return Ok(None);
        };
        if answers.next().is_some() {
            return Err(HandshakeError::InvalidExtensionAnswer(format!("{name} answered twice")));
        }
        let mut reasons = Vec::new();
        for config in &self.deflate {
            match config.check_answer(answer) {
                Ok(()) => return Ok(Some(config.clone())),
                Err(reason) => reasons.push(reason),
            }
        }
        if reasons.is_empty() {
            // Offered through `ClientRequest::extensions`, not as permessage-deflate:
            // `into_connection` reports that it cannot run it.
            return Ok(None);
        }
        Err(HandshakeError::InvalidExtensionAnswer(reasons.join("; ")))
    }

    #[cfg(not(feature = "deflate"))]
    #[allow(clippy::unnecessary_wraps, clippy::unused_self)]
    fn match_deflate(&self, _answers: &[ExtensionOffer]) -> Result<Option<super::DeflateSettings>, HandshakeError> {
        Ok(None)
    }

    /// Starts reading the body of a non-101 response, with the bytes that
    /// followed its head.
    fn start_rejection(
        &mut self,
        status: StatusCode,
        headers: HeaderMap,
        leftover: &[u8],
    ) -> Result<Option<ClientResponse>, HandshakeError> {
        let mut rejection = Box::new(Rejection {
            framing: Framing::of(status, &headers),
            status,
            headers,
            body: Vec::new(),
        });
        if rejection.feed(leftover) {
            return Err(rejection.into_error());
        }
        self.state = State::Body(rejection);
        Ok(None)
    }

    fn finish_rejection(&mut self) -> HandshakeError {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Body(rejection) => rejection.into_error(),
            State::Head | State::Done => HandshakeError::InvalidState("no rejection to finish"),
        }
    }
}

impl ClientResponse {
    /// The server's 101 response, with its headers.
    pub fn response(&self) -> &http::Response<()> {
        &self.response
    }

    /// The subprotocol the server selected, one of those offered.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The extensions the server accepted, with their parameters, in the
    /// server's order. Each was offered; whether its parameters are
    /// acceptable is for the extension's own negotiation to decide.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// Bytes received after the response head: the first frames from the
    /// server.
    pub fn leftover(&self) -> &[u8] {
        &self.leftover
    }

    /// Builds the client [`Connection`] for this response and feeds it the
    /// [`leftover`](Self::leftover) bytes, so frames that arrived with the
    /// response are not lost. Check [`Connection`]'s outputs afterwards.
    ///
    /// Fails with [`HandshakeError::ExtensionNotImplemented`] when the server
    /// accepted an extension this crate cannot run.
    pub fn into_connection(
        self,
        config: Config,
        random: Box<dyn RandomSource>,
        now: Instant,
    ) -> Result<Connection, HandshakeError> {
        let extensions = super::build_extensions(&self.extensions, crate::Role::Client, self.deflate.as_ref())?;
        let mut connection = Connection::client(config, random, now)
            .with_subprotocol(self.subprotocol)
            .with_extensions(extensions);
        if !self.leftover.is_empty() {
            connection.handle_read(&self.leftover, now);
        }
        Ok(connection)
    }
}

impl Rejection {
    /// Takes body bytes; returns whether the body is complete.
    fn feed(&mut self, data: &[u8]) -> bool {
        let keep = |body: &mut Vec<u8>, bytes: &[u8]| {
            let room = MAX_REJECTION_BODY.saturating_sub(body.len());
            body.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        };
        match &mut self.framing {
            Framing::Length(remaining) => {
                let n = usize::try_from(*remaining).unwrap_or(usize::MAX).min(data.len());
                keep(&mut self.body, data.get(..n).unwrap_or_default());
                *remaining -= n as u64;
                *remaining == 0
            }
            Framing::UntilEof => {
                keep(&mut self.body, data);
                false
            }
            Framing::Chunked(chunked) => chunked.feed(data, |bytes| keep(&mut self.body, bytes)),
        }
    }

    fn into_error(self) -> HandshakeError {
        HandshakeError::Rejected {
            status: self.status,
            headers: Box::new(self.headers),
            body: self.body,
        }
    }
}

impl Framing {
    /// How the body of a response with `status` and `headers` ends (RFC
    /// 9112 section 6.3).
    fn of(status: StatusCode, headers: &HeaderMap) -> Self {
        if status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Self::Length(0);
        }
        if headers.contains_key(http::header::TRANSFER_ENCODING) {
            let last = list_elements(headers, http::header::TRANSFER_ENCODING).last();
            return if last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")) {
                Self::Chunked(Chunked::Size { size: 0, digits: false })
            } else {
                Self::UntilEof
            };
        }
        if !headers.contains_key(http::header::CONTENT_LENGTH) {
            return Self::UntilEof;
        }
        // Repeated values must agree; an invalid length leaves the body
        // unknowable, so it is taken as empty: the rejection still stands.
        let mut lengths = list_elements(headers, http::header::CONTENT_LENGTH).map(|v| {
            core::str::from_utf8(v)
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))?
                .parse::<u64>()
                .ok()
        });
        let first = lengths.next().flatten();
        Self::Length(match first {
            Some(length) if lengths.all(|other| other == Some(length)) => length,
            _ => 0,
        })
    }
}

impl Chunked {
    /// Decodes `data`, passing chunk data to `body`; returns whether the
    /// body is complete (or its framing broken, which also ends it).
    fn feed(&mut self, data: &[u8], mut body: impl FnMut(&[u8])) -> bool {
        let mut i = 0;
        while i < data.len() {
            if let Self::Data { remaining } = self {
                let n = usize::try_from(*remaining).unwrap_or(usize::MAX).min(data.len() - i);
                body(data.get(i..i + n).unwrap_or_default());
                *remaining -= n as u64;
                i += n;
                if *remaining == 0 {
                    *self = Self::DataEnd;
                }
                continue;
            }
            let b = data.get(i).copied().unwrap_or_default();
            i += 1;
            *self = match *self {
                Self::Size { size, digits } => match (b as char).to_digit(16) {
                    Some(d) => match size.checked_mul(16).and_then(|s| s.checked_add(u64::from(d))) {
                        Some(size) => Self::Size { size, digits: true },
                        None => Self::Done,
                    },
                    None if !digits => Self::Done,
                    None if b == b'\n' => Self::after_size(size),
                    None => Self::Extension { size },
                },
                Self::Extension { size } if b == b'\n' => Self::after_size(size),
                Self::Extension { size } => Self::Extension { size },
                Self::DataEnd if b == b'\r' => Self::DataEnd,
                Self::DataEnd if b == b'\n' => Self::Size { size: 0, digits: false },
                Self::Trailer { empty_line } if b == b'\n' => {
                    if empty_line {
                        Self::Done
                    } else {
                        Self::Trailer { empty_line: true }
                    }
                }
                Self::Trailer { empty_line } if b == b'\r' => Self::Trailer { empty_line },
                Self::Trailer { .. } => Self::Trailer { empty_line: false },
                Self::DataEnd | Self::Data { .. } | Self::Done => Self::Done,
            };
            if *self == Self::Done {
                return true;
            }
        }
        *self == Self::Done
    }

    fn after_size(size: u64) -> Self {
        if size == 0 {
            Self::Trailer { empty_line: true }
        } else {
            Self::Data { remaining: size }
        }
    }
}

/// `location` after the first of `schemes` it starts with (compared
/// without case on `lower`, its lowercase copy).
/// The `Authorization` value for a URI's userinfo (`user` or
/// `user:password`, percent-encoded, RFC 3986 section 3.2.1): `Basic`
/// with the decoded `user:password` in base64 (RFC 7617), marked
/// sensitive.
fn basic_credentials(userinfo: &str) -> Result<HeaderValue, HandshakeError> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |part: &str| -> Result<Vec<u8>, HandshakeError> {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(part).collect();
        if bytes.iter().any(u8::is_ascii_control) {
            return Err(HandshakeError::InvalidUri(
                "control characters in the URI's credentials",
            ));
        }
        Ok(bytes)
    };
    let mut pair = decode(user)?;
    if pair.contains(&b':') {
        return Err(HandshakeError::InvalidUri(
            "a user name in the URI cannot contain ':' (RFC 7617 section 2)",
        ));
    }
    pair.push(b':');
    pair.extend(decode(password)?);
    let mut value = HeaderValue::from_str(&format!("Basic {}", BASE64.encode(&pair)))
        .map_err(|_| HandshakeError::InvalidUri("the URI's credentials"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn strip_scheme<'a>(location: &'a str, lower: &str, schemes: &[&str]) -> Option<&'a str> {
    schemes
        .iter()
        .find(|scheme| lower.starts_with(*scheme))
        .map(|scheme| &location[scheme.len()..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SeededRandom;

    /// The key drawn by `SeededRandom::new(7)`, and its accept value.
    fn handshake(request: ClientRequest) -> (ClientHandshake, String, String) {
        let (hs, bytes) = ClientHandshake::new(request, &mut SeededRandom::new(7), Instant::now(), None).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .to_owned();
        let accept = accept_key(key.as_bytes());
        (hs, text, accept)
    }

    fn simple() -> (ClientHandshake, String) {
        let request = ClientRequest::new("ws://example.com/chat")
            .unwrap()
            .protocols(["chat", "superchat"])
            .extensions(vec![
                ExtensionOffer::new("permessage-deflate").with_param("client_max_window_bits", None)
            ]);
        let (hs, _, accept) = handshake(request);
        (hs, accept)
    }

    fn ok_response(accept: &str, extra: &str) -> String {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n")
    }

    fn request_text(uri: &str) -> String {
        handshake(ClientRequest::new(uri).unwrap()).1
    }

    #[test]
    fn rfc6455_4_1_client_request_headers() {
        let request = ClientRequest::new("ws://example.com/chat?x=1&y")
            .unwrap()
            .origin("http://example.com")
            .protocols(["chat", "superchat"])
            .extensions(vec![
                ExtensionOffer::new("permessage-deflate").with_param("client_max_window_bits", None)
            ])
            .header(http::header::COOKIE, HeaderValue::from_static("a=b"));
        let (_, text, _) = handshake(request);
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next(), Some("GET /chat?x=1&y HTTP/1.1"));
        let headers: Vec<&str> = lines.collect();
        let key = headers
            .iter()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        assert_eq!(BASE64.decode(key).unwrap().len(), 16);
        assert_eq!(
            headers,
            [
                "Host: example.com",
                "Upgrade: websocket",
                "Connection: Upgrade",
                &format!("Sec-WebSocket-Key: {key}"),
                "Sec-WebSocket-Version: 13",
                "Origin: http://example.com",
                "Sec-WebSocket-Protocol: chat, superchat",
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                "Cookie: a=b",
                "",
                "",
            ]
        );
    }

    #[test]
    fn rfc6455_4_1_key_is_random_per_handshake() {
        let request = ClientRequest::new("ws://a/").unwrap();
        let mut random = SeededRandom::new(1);
        let (_, a) = ClientHandshake::new(request.clone(), &mut random, Instant::now(), None).unwrap();
        let (_, b) = ClientHandshake::new(request, &mut random, Instant::now(), None).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn rfc6455_3_uris() {
        let r = ClientRequest::new("ws://example.com").unwrap();
        assert_eq!((r.host(), r.port(), r.is_secure()), ("example.com", 80, false));
        assert!(request_text("ws://example.com").starts_with("GET / HTTP/1.1\r\nHost: example.com\r\n"));
        assert!(request_text("ws://example.com?q").starts_with("GET /?q HTTP/1.1\r\n"));
        assert!(request_text("ws://example.com:80/").contains("\r\nHost: example.com\r\n"));
        assert!(request_text("ws://example.com:443/").contains("\r\nHost: example.com:443\r\n"));
        assert!(request_text("wss://example.com:443/").contains("\r\nHost: example.com\r\n"));
        assert!(request_text("wss://example.com:8443/").contains("\r\nHost: example.com:8443\r\n"));

        let r = ClientRequest::new("wss://Example.COM/a").unwrap();
        assert_eq!((r.host(), r.port(), r.is_secure()), ("Example.COM", 443, true));
        assert_eq!(r.uri().path(), "/a");

        let r = ClientRequest::new("ws://[::1]:9001/x").unwrap();
        assert_eq!((r.host(), r.port()), ("::1", 9001));
        assert!(request_text("ws://[::1]:9001/x").starts_with("GET /x HTTP/1.1\r\nHost: [::1]:9001\r\n"));
        assert!(request_text("ws://[::1]/").contains("\r\nHost: [::1]\r\n"));
        assert!(request_text("ws://127.0.0.1:9001").contains("\r\nHost: 127.0.0.1:9001\r\n"));
    }

    #[test]
    fn rfc6455_3_invalid_uris() {
        for uri in [
            "http://example.com/",
            "ftp://example.com/",
            "/relative",
            "example.com",
            "ws://example.com/#frag",
            "ws:///path",
            "ws://us%3Aer:pass@example.com/",
            "ws://user:pa%0Ass@example.com/",
            "ws://exa mple.com/",
            "",
        ] {
            assert!(
                matches!(ClientRequest::new(uri), Err(HandshakeError::InvalidUri(_))),
                "{uri:?}: {:?}",
                ClientRequest::new(uri)
            );
        }
    }

    #[test]
    fn rfc6455_4_1_invalid_request_parts() {
        let base = || ClientRequest::new("ws://a/").unwrap();
        for request in [
            base().origin("http://a\r\nX: y"),
            base().protocols(["a b"]),
            base().protocols([""]),
            base().extensions(vec![ExtensionOffer::new("a;b")]),
            base().header(http::header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("x")),
            base().header(http::header::HOST, HeaderValue::from_static("x")),
            base().header(http::header::ORIGIN, HeaderValue::from_static("x")),
        ] {
            let result = ClientHandshake::new(request, &mut SeededRandom::new(1), Instant::now(), None);
            assert!(matches!(result, Err(HandshakeError::InvalidRequest(_))), "{result:?}");
        }
    }

    #[test]
    fn rfc6455_4_1_valid_response() {
        let (mut hs, accept) = simple();
        let response = ok_response(
            &accept,
            "sec-websocket-protocol: superchat\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
        );
        let mut bytes = response.into_bytes();
        bytes.extend_from_slice(b"\x81\x02hi");
        let response = hs.handle_read(&bytes).unwrap().unwrap();
        assert_eq!(response.subprotocol(), Some("superchat"));
        assert_eq!(
            response.extensions(),
            [ExtensionOffer::new("permessage-deflate").with_param("server_no_context_takeover", None)]
        );
        assert_eq!(response.leftover(), b"\x81\x02hi");
        assert_eq!(response.response().status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(hs.poll_timeout(), None);
        assert!(matches!(hs.handle_read(b"x"), Err(HandshakeError::InvalidState(_))));
    }

    #[test]
    fn rfc6455_4_1_case_insensitive_values() {
        let (mut hs, accept) = simple();
        let response = format!(
            "HTTP/1.1 101 OK\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, UPGRADE\r\nsec-websocket-accept: {accept}\r\n\r\n"
        );
        let response = hs.handle_read(response.as_bytes()).unwrap().unwrap();
        assert_eq!(response.subprotocol(), None);
        assert!(response.extensions().is_empty());
        assert!(response.leftover().is_empty());
    }

    #[test]
    fn rfc6455_4_1_response_checks() {
        let cases: Vec<(String, HandshakeError)> = {
            let (_, accept) = simple();
            let head = |lines: &str| format!("HTTP/1.1 101 Switching Protocols\r\n{lines}\r\n");
            let up = "Upgrade: websocket\r\n";
            let conn = "Connection: Upgrade\r\n";
            let acc = format!("Sec-WebSocket-Accept: {accept}\r\n");
            vec![
                (head(&format!("{conn}{acc}")), HandshakeError::MissingHeader("Upgrade")),
                (
                    head(&format!("Upgrade: h2c\r\n{conn}{acc}")),
                    HandshakeError::InvalidUpgradeHeader,
                ),
                (
                    head(&format!("Upgrade: websocket, h2c\r\n{conn}{acc}")),
                    HandshakeError::InvalidUpgradeHeader,
                ),
                (head(&format!("{up}{acc}")), HandshakeError::MissingHeader("Connection")),
                (
                    head(&format!("{up}Connection: keep-alive\r\n{acc}")),
                    HandshakeError::InvalidConnectionHeader,
                ),
                (
                    head(&format!("{up}{conn}")),
                    HandshakeError::MissingHeader("Sec-WebSocket-Accept"),
                ),
                (
                    head(&format!(
                        "{up}{conn}Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                    )),
                    HandshakeError::InvalidAcceptKey,
                ),
                (
                    head(&format!("{up}{conn}{acc}{acc}")),
                    HandshakeError::InvalidHeader {
                        name: "Sec-WebSocket-Accept",
                        reason: "it appears more than once",
                    },
                ),
                (
                    head(&format!("{up}{conn}{acc}Sec-WebSocket-Protocol: other\r\n")),
                    HandshakeError::UnofferedSubprotocol("other".into()),
                ),
                (
                    head(&format!("{up}{conn}{acc}Sec-WebSocket-Protocol: chat, superchat\r\n")),
                    HandshakeError::InvalidHeader {
                        name: "Sec-WebSocket-Protocol",
                        reason: "the server must select a single subprotocol",
                    },
                ),
                (
                    head(&format!("{up}{conn}{acc}Sec-WebSocket-Extensions: x-other\r\n")),
                    HandshakeError::UnofferedExtension("x-other".into()),
                ),
                (
                    head(&format!(
                        "{up}{conn}{acc}Sec-WebSocket-Extensions: permessage-deflate;\r\n"
                    )),
                    HandshakeError::InvalidExtensionHeader(
                        ExtensionOffer::parse_list("permessage-deflate;").unwrap_err(),
                    ),
                ),
                (
                    "HTTP/1.1 1O1 Switching\r\n\r\n".into(),
                    HandshakeError::InvalidHttp("invalid response status"),
                ),
                (
                    "GET / HTTP/1.1\r\n\r\n".into(),
                    HandshakeError::InvalidHttp("invalid HTTP version"),
                ),
            ]
        };
        for (response, expected) in cases {
            let (mut hs, _) = simple();
            assert_eq!(hs.handle_read(response.as_bytes()).unwrap_err(), expected, "{response}");
            // The handshake stays failed.
            assert!(matches!(hs.handle_read(b""), Err(HandshakeError::InvalidState(_))));
        }
    }

    #[test]
    fn rfc6455_4_1_subprotocol_answered_when_none_offered() {
        let (mut hs, _, accept) = handshake(ClientRequest::new("ws://a/").unwrap());
        let response = ok_response(&accept, "Sec-WebSocket-Protocol: chat\r\n");
        assert_eq!(
            hs.handle_read(response.as_bytes()).unwrap_err(),
            HandshakeError::UnofferedSubprotocol("chat".into())
        );
    }

    #[test]
    fn rfc6455_4_1_rejection_with_content_length() {
        let (mut hs, _) = simple();
        let response = "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nX-Why: no\r\n\r\nno!";
        assert!(hs.handle_read(response.as_bytes()).unwrap().is_none());
        let Err(HandshakeError::Rejected { status, headers, body }) = hs.handle_read(b"!!trailing garbage") else {
            panic!("expected a rejection")
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers.get("x-why").unwrap(), "no");
        assert_eq!(body, b"no!!!");
    }

    #[test]
    fn rfc6455_4_1_rejection_until_eof() {
        let (mut hs, _) = simple();
        assert!(hs.handle_read(b"HTTP/1.1 500 Oops\r\n\r\nsome").unwrap().is_none());
        assert!(hs.handle_read(b" body").unwrap().is_none());
        let HandshakeError::Rejected { status, body, .. } = hs.handle_eof() else {
            panic!("expected a rejection")
        };
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, b"some body");
    }

    #[test]
    fn rfc6455_4_1_rejection_chunked() {
        let (mut hs, _) = simple();
        let response = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let Err(HandshakeError::Rejected { status, body, .. }) = hs.handle_read(response.as_bytes()) else {
            panic!("expected a rejection")
        };
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn rfc6455_4_1_rejection_without_body() {
        for head in [
            "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
        ] {
            let (mut hs, _) = simple();
            assert!(matches!(
                hs.handle_read(head.as_bytes()),
                Err(HandshakeError::Rejected { .. })
            ));
        }
    }

    #[test]
    fn rfc6455_4_1_rejection_body_is_capped() {
        let (mut hs, _) = simple();
        let total = MAX_REJECTION_BODY + 1000;
        let head = format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {total}\r\n\r\n");
        assert!(hs.handle_read(head.as_bytes()).unwrap().is_none());
        let chunk = vec![b'x'; 4096];
        let mut sent = 0;
        let result = loop {
            let n = chunk.len().min(total - sent);
            sent += n;
            match hs.handle_read(&chunk[..n]) {
                Ok(None) => assert!(sent < total),
                other => break other,
            }
        };
        let Err(HandshakeError::Rejected { body, .. }) = result else {
            panic!("expected a rejection")
        };
        assert_eq!(body.len(), MAX_REJECTION_BODY);
    }

    #[test]
    fn rfc6455_4_1_redirect_keeps_location() {
        let (mut hs, _) = simple();
        let response = "HTTP/1.1 302 Found\r\nLocation: wss://other.example/chat\r\nContent-Length: 0\r\n\r\n";
        let e = hs.handle_read(response.as_bytes()).unwrap_err();
        assert_eq!(e.location(), Some("wss://other.example/chat"));
        assert!(matches!(
            e,
            HandshakeError::Rejected {
                status: StatusCode::FOUND,
                ..
            }
        ));
    }

    #[test]
    fn rfc6455_4_1_informational_responses_are_skipped() {
        let (mut hs, accept) = simple();
        let response = format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n{}",
            ok_response(&accept, "")
        );
        assert!(hs.handle_read(response.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn rfc6455_4_1_eof_before_response() {
        let (mut hs, _) = simple();
        assert!(hs.handle_read(b"HTTP/1.1 101 Swi").unwrap().is_none());
        assert_eq!(hs.handle_eof(), HandshakeError::UnexpectedEof);
        assert!(matches!(hs.handle_eof(), HandshakeError::InvalidState(_)));
    }

    #[test]
    fn rfc6455_4_1_headers_too_large() {
        let (mut hs, _) = simple();
        assert!(hs
            .handle_read(b"HTTP/1.1 101 Switching Protocols\r\n")
            .unwrap()
            .is_none());
        let line = format!("X-Big: {}\r\n", "a".repeat(1000));
        let mut result = Ok(None);
        for _ in 0..20 {
            result = hs.handle_read(line.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result.unwrap_err(),
            HandshakeError::HeadersTooLarge {
                limit: DEFAULT_MAX_HEADER_BYTES
            }
        );
        assert!(hs.head.len() <= DEFAULT_MAX_HEADER_BYTES);

        let (mut hs, _) = simple();
        let many = format!(
            "HTTP/1.1 101 Switching Protocols\r\n{}",
            "X: y\r\n".repeat(DEFAULT_MAX_HEADERS + 1)
        );
        assert_eq!(
            hs.handle_read(many.as_bytes()).unwrap_err(),
            HandshakeError::TooManyHeaders {
                limit: DEFAULT_MAX_HEADERS
            }
        );
    }

    #[test]
    fn rfc6455_4_1_response_split_at_every_byte() {
        let (_, accept) = simple();
        let mut bytes = ok_response(&accept, "Sec-WebSocket-Protocol: chat\r\n").into_bytes();
        bytes.extend_from_slice(b"\x81\x05hello");
        for split in 0..=bytes.len() {
            let (mut hs, _) = simple();
            let (a, b) = bytes.split_at(split);
            let response = match hs.handle_read(a).unwrap() {
                Some(response) => {
                    assert!(split >= bytes.len() - 7);
                    let mut leftover = response.leftover().to_vec();
                    leftover.extend_from_slice(b);
                    assert_eq!(leftover, b"\x81\x05hello");
                    continue;
                }
                None => hs.handle_read(b).unwrap().unwrap(),
            };
            assert_eq!(response.subprotocol(), Some("chat"));
            assert_eq!(response.leftover(), b"\x81\x05hello", "split at {split}");
        }
        // Byte by byte.
        let (mut hs, _) = simple();
        let mut done = None;
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(response) = hs.handle_read(&[b]).unwrap() {
                done = Some((i, response));
                break;
            }
        }
        let (i, response) = done.unwrap();
        assert_eq!(i, bytes.len() - 8);
        assert!(response.leftover().is_empty());
    }

    #[test]
    fn rfc6455_4_1_handshake_timeout() {
        let now = Instant::now();
        let request = ClientRequest::new("ws://a/").unwrap();
        let (mut hs, _) =
            ClientHandshake::new(request, &mut SeededRandom::new(1), now, Some(Duration::from_secs(5))).unwrap();
        let deadline = hs.poll_timeout().unwrap();
        assert_eq!(deadline, now + Duration::from_secs(5));
        assert_eq!(hs.handle_timeout(now + Duration::from_secs(4)), Ok(()));
        assert!(hs.handle_read(b"HTTP/1.1 10").unwrap().is_none());
        assert_eq!(hs.handle_timeout(deadline), Err(HandshakeError::Timeout));
        assert_eq!(hs.poll_timeout(), None);
        assert!(matches!(hs.handle_read(b"1"), Err(HandshakeError::InvalidState(_))));

        // No timeout: no deadline; an overflowing one is no deadline either.
        let request = ClientRequest::new("ws://a/").unwrap();
        let (hs, _) = ClientHandshake::new(request, &mut SeededRandom::new(1), now, Some(Duration::MAX)).unwrap();
        assert_eq!(hs.poll_timeout(), None);
    }

    #[test]
    fn rfc6455_4_1_handshake_overall_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(3);
        let request = ClientRequest::new("ws://a/").unwrap();
        let (mut hs, bytes) =
            ClientHandshake::with_deadline(request.clone(), &mut SeededRandom::new(1), Some(deadline)).unwrap();
        // The same request as `new` sends.
        let (_, same) = ClientHandshake::new(request, &mut SeededRandom::new(1), now, None).unwrap();
        assert_eq!(bytes, same);
        assert_eq!(hs.poll_timeout(), Some(deadline));
        assert_eq!(hs.handle_timeout(deadline - Duration::from_millis(1)), Ok(()));
        assert_eq!(hs.handle_timeout(deadline), Err(HandshakeError::Timeout));

        // What is left of a deadline already spent on DNS, TCP and TLS.
        let request = ClientRequest::new("ws://a/").unwrap();
        let (mut hs, _) = ClientHandshake::with_deadline(request, &mut SeededRandom::new(1), Some(now)).unwrap();
        assert_eq!(
            hs.handle_timeout(now + Duration::from_millis(1)),
            Err(HandshakeError::Timeout)
        );

        let request = ClientRequest::new("ws://a/").unwrap();
        let (hs, _) = ClientHandshake::with_deadline(request, &mut SeededRandom::new(1), None).unwrap();
        assert_eq!(hs.poll_timeout(), None);
    }

    mod proptests {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn rfc6455_4_1_arbitrary_response_never_panics(
                data in proptest::collection::vec(any::<u8>(), 0..512),
                cut in 0usize..512,
            ) {
                let (mut hs, _) = simple();
                let cut = cut.min(data.len());
                let _ = hs.handle_read(&data[..cut]);
                let _ = hs.handle_read(&data[cut..]);
                let _ = hs.handle_eof();
            }

            #[test]
            fn rfc6455_4_1_arbitrary_response_after_valid_head_never_panics(
                status in 100u16..600,
                tail in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let (mut hs, _) = simple();
                let head = format!("HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n");
                let _ = hs.handle_read(head.as_bytes());
                let _ = hs.handle_read(&tail);
                let _ = hs.handle_eof();
            }

            #[test]
            fn rfc6455_4_1_any_split_gives_the_same_response(
                a in 0usize..400,
                b in 0usize..400,
                rejected in any::<bool>(),
            ) {
                let (_, accept) = simple();
                let bytes = if rejected {
                    "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".as_bytes().to_vec()
                } else {
                    let mut bytes = ok_response(&accept, "Sec-WebSocket-Protocol: chat\r\n").into_bytes();
                    bytes.extend_from_slice(b"\x81\x00");
                    bytes
                };
                let (a, b) = (a.min(bytes.len()), b.min(bytes.len()));
                let (a, b) = (a.min(b), a.max(b));
                let (mut hs, _) = simple();
                let mut result = Ok(None);
                let mut leftover = Vec::new();
                for chunk in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    match &result {
                        Ok(Some(_)) => leftover.extend_from_slice(chunk),
                        Ok(None) => {
                            result = hs.handle_read(chunk).map(|r| {
                                r.map(|r| {
                                    leftover = r.leftover().to_vec();
                                    r.subprotocol
                                })
                            });
                        }
                        Err(_) => {}
                    }
                }
                if rejected {
                    let Err(HandshakeError::Rejected { body, .. }) = result else { panic!("{result:?}") };
                    prop_assert_eq!(body, b"abc");
                } else {
                    prop_assert_eq!(result, Ok(Some(Some("chat".to_owned()))));
                    prop_assert_eq!(leftover, b"\x81\x00");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod redirect_tests {
    use super::*;

    fn request() -> ClientRequest {
        ClientRequest::new("wss://a.example:8443/chat/room?x=1")
            .unwrap()
            .origin("https://a.example")
            .protocols(["v1"])
            .header(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer t"))
            .header(http::header::COOKIE, HeaderValue::from_static("s=1"))
            .header(HeaderName::from_static("x-trace"), HeaderValue::from_static("7"))
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let r = request();
        let cases = [
            ("wss://b.example/x", "wss://b.example/x"),
            ("https://b.example/x", "wss://b.example/x"),
            ("HTTP://b.example:81/x", "ws://b.example:81/x"),
            ("ws://b.example/x", "ws://b.example/x"),
            ("//b.example/y", "wss://b.example/y"),
            ("/other?q=2", "wss://a.example:8443/other?q=2"),
            ("lobby", "wss://a.example:8443/chat/lobby"),
        ];
        for (location, expected) in cases {
            let next = r.redirect(location).unwrap();
            assert_eq!(next.uri().to_string(), expected, "{location}");
        }
    }

    #[test]
    fn everything_but_credentials_follows_to_another_host() {
        let r = request();
        let same = r.redirect("/elsewhere").unwrap();
        assert_eq!(same.headers.get(http::header::AUTHORIZATION).unwrap(), "Bearer t");
        assert_eq!(same.headers.get(http::header::COOKIE).unwrap(), "s=1");
        let other = r.redirect("wss://b.example/").unwrap();
        assert!(other.headers.get(http::header::AUTHORIZATION).is_none());
        assert!(other.headers.get(http::header::COOKIE).is_none());
        assert_eq!(other.headers.get("x-trace").unwrap(), "7");
        assert_eq!(other.origin.as_deref(), Some("https://a.example"));
        assert_eq!(other.protocols, ["v1"]);
    }

    #[test]
    fn uri_credentials_become_basic_authorization() {
        // RFC 7617 section 2's example, percent-encoded in the URI.
        let r = ClientRequest::new("wss://Aladdin:open%20sesame@example.com:8443/chat?x=1").unwrap();
        assert!(r.has_uri_credentials());
        assert_eq!(r.uri().to_string(), "wss://example.com:8443/chat?x=1");
        assert_eq!((r.host(), r.port()), ("example.com", 8443));
        let debug = format!("{r:?}");
        assert!(
            !debug.contains("QWxhZGRpbjpvcGVuIHNlc2FtZQ") && !debug.contains("sesame"),
            "{debug}"
        );
        let request_text = |uri: &str| {
            let mut random = crate::SeededRandom::new(1);
            let request = ClientRequest::new(uri).unwrap();
            let (_, bytes) = ClientHandshake::new(request, &mut random, Instant::now(), None).unwrap();
            String::from_utf8(bytes).unwrap()
        };
        let text = request_text("wss://Aladdin:open%20sesame@example.com:8443/chat?x=1");
        assert!(
            text.starts_with("GET /chat?x=1 HTTP/1.1\r\nHost: example.com:8443\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nAuthorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"),
            "{text}"
        );
        assert!(!text.contains("sesame") && !text.contains('@'));
        // A user without a password; an empty password; IPv6 hosts.
        assert!(request_text("ws://bob@[::1]:9/").contains("Authorization: Basic Ym9iOg==\r\n"));
        assert!(request_text("ws://bob:@[::1]/").contains("\r\nHost: [::1]\r\n"));
        // An Authorization header of the caller's wins over the URI's.
        let mut random = crate::SeededRandom::new(1);
        let explicit = ClientRequest::new("ws://u:p@a/")
            .unwrap()
            .header(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let (_, bytes) = ClientHandshake::new(explicit, &mut random, Instant::now(), None).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.matches("Authorization").count(), 1);
        assert!(text.contains("Authorization: Bearer t\r\n"));
    }

    #[test]
    fn uri_credentials_follow_redirects_on_the_same_host_only() {
        let r = ClientRequest::new("ws://u:p@a.example/x").unwrap();
        let same = r.redirect("/y").unwrap();
        assert!(same.has_uri_credentials());
        assert_eq!(same.uri().to_string(), "ws://a.example/y");
        let other = r.redirect("ws://b.example/").unwrap();
        assert!(!other.has_uri_credentials());
        let own = r.redirect("ws://v:q@b.example/").unwrap();
        assert!(own.has_uri_credentials());
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(request().redirect("ftp://b.example/").is_err());
        assert!(request().redirect("javascript://x").is_err());
    }
}
