//! Proxies: HTTP `CONNECT` tunnels (`http://` and `https://` proxies) and
//! SOCKS5 (`socks5://`, `socks5h://`), set on the client builder or taken
//! from the environment (`wss_proxy`, `https_proxy`, `no_proxy`...).
//!
//! The proxy protocols are written sans-IO, like the core: what to send
//! ([`ProxyHandshake`]'s output) and what the answer means (its
//! `handle_read`), run over any runtime by the client builder.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::BytesMut;
use http::StatusCode;

use crate::io::{read_until, write_all};
use crate::runtime::{Connect, RuntimeIo};
use crate::Error;

/// The largest HTTP answer head a proxy may send to `CONNECT`.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// Which protocol a proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyScheme {
    /// `http://`: an HTTP proxy asked for a tunnel with `CONNECT` (RFC 9110
    /// section 9.3.6) over plain TCP. Default port 80 (curl uses 1080; give
    /// the port).
    Http,
    /// `https://`: the same over TLS to the proxy; a `wss://` connection
    /// then runs TLS to the server inside it. Default port 443.
    Https,
    /// `socks5://`: SOCKS5 (RFC 1928), the host name resolved by the
    /// client. Default port 1080.
    Socks5,
    /// `socks5h://`: SOCKS5 with the host name resolved by the proxy.
    /// Default port 1080.
    Socks5h,
}

/// A proxy to open client connections through.
///
/// ```
/// use tether_driver::proxy::{Proxy, ProxyScheme};
///
/// let proxy = Proxy::new("http://alice:s%40cret@proxy.corp:3128")?;
/// assert_eq!(proxy.scheme(), ProxyScheme::Http);
/// assert_eq!((proxy.host(), proxy.port()), ("proxy.corp", 3128));
/// // The password never shows.
/// assert!(!format!("{proxy:?}").contains("cret"));
/// # Ok::<(), tether_driver::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    scheme: ProxyScheme,
    host: String,
    port: u16,
    /// User name and password (decoded).
    credentials: Option<(Vec<u8>, Vec<u8>)>,
    no_proxy: NoProxy,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| format!("{}:<hidden>", String::from_utf8_lossy(user))),
            )
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Why a proxy URL was refused.
fn invalid(reason: &'static str) -> Error {
    Error::Proxy(ProxyError::InvalidUrl(reason))
}

impl Proxy {
    /// A proxy from its URL: `http://`, `https://`, `socks5://` or
    /// `socks5h://`, with optional percent-encoded credentials
    /// (`http://user:password@host:port`); without a scheme, `http://` (as
    /// curl does). A path, if any, is ignored.
    pub fn new(url: &str) -> Result<Self, Error> {
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), url),
        };
        let scheme = match scheme.as_str() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            _ => return Err(invalid("the scheme must be http, https, socks5 or socks5h")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let default_port = match scheme {
            ProxyScheme::Http => 80,
            ProxyScheme::Https => 443,
            ProxyScheme::Socks5 | ProxyScheme::Socks5h => 1080,
        };
        let (host, port) = split_host_port(host_port, default_port).ok_or(invalid("not a valid host and port"))?;
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let credentials = userinfo.map(|userinfo| {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (decode(user), decode(password))
        });
        let mut proxy = Self {
            scheme,
            host: host.to_owned(),
            port,
            credentials: None,
            no_proxy: NoProxy::default(),
        };
        if let Some((user, password)) = credentials {
            proxy = proxy.credentials_bytes(user, password)?;
        }
        Ok(proxy)
    }

    /// Credentials for the proxy: `Proxy-Authorization: Basic` for HTTP
    /// proxies, username/password authentication (RFC 1929) for SOCKS5.
    /// They replace any from the URL.
    pub fn credentials(self, user: impl Into<String>, password: impl Into<String>) -> Result<Self, Error> {
        self.credentials_bytes(user.into().into_bytes(), password.into().into_bytes())
    }

    fn credentials_bytes(mut self, user: Vec<u8>, password: Vec<u8>) -> Result<Self, Error> {
        if matches!(self.scheme, ProxyScheme::Socks5 | ProxyScheme::Socks5h)
            && (user.len() > 255 || password.len() > 255)
        {
            return Err(invalid(
                "SOCKS5 user names and passwords are at most 255 bytes (RFC 1929)",
            ));
        }
        if user.contains(&b':') {
            return Err(invalid("a user name cannot contain ':' (RFC 7617 section 2)"));
        }
        if user.iter().chain(&password).any(u8::is_ascii_control) {
            return Err(invalid("control characters in the proxy's credentials"));
        }
        self.credentials = Some((user, password));
        Ok(self)
    }

    /// Hosts to reach without this proxy, in the `no_proxy` syntax (see
    /// [`NoProxy`]).
    pub fn no_proxy(mut self, list: &str) -> Self {
        self.no_proxy = NoProxy::parse(list);
        self
    }

    /// The proxy's protocol.
    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// The proxy's host (a name or an IP address, without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether credentials are set.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Whether a connection to `host:port` goes through this proxy (not in
    /// its [`no_proxy`](Self::no_proxy) list).
    pub fn applies_to(&self, host: &str, port: u16) -> bool {
        !self.no_proxy.matches(host, port)
    }

    /// The proxy the environment names for a `ws://` (`secure` false) or
    /// `wss://` connection to `host:port`, or `None` for a direct
    /// connection; `lookup` reads a variable (`std::env::var`, or a map in
    /// tests). What Python's `websockets` and curl read, first found wins,
    /// the lower-case spelling before the upper-case one:
    ///
    /// - `no_proxy`: hosts reached directly (see [`NoProxy`]);
    /// - `wss://`: `wss_proxy`, `https_proxy`, `all_proxy`;
    /// - `ws://`: `ws_proxy`, `https_proxy`, `http_proxy`, `all_proxy`.
    ///
    /// `HTTP_PROXY` (upper case) is ignored when `REQUEST_METHOD` is set: in
    /// a CGI program it comes from the request's `Proxy:` header ("httpoxy").
    /// An empty variable counts as unset. Any of them may name any kind of
    /// proxy (`https_proxy=socks5h://...`).
    pub fn from_env_for(
        secure: bool,
        host: &str,
        port: u16,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, Error> {
        let var = |name: &str| -> Option<String> {
            let lower = lookup(name).filter(|v| !v.trim().is_empty());
            lower.or_else(|| {
                let upper = name.to_ascii_uppercase();
                if upper == "HTTP_PROXY" && lookup("REQUEST_METHOD").is_some() {
                    return None;
                }
                lookup(&upper).filter(|v| !v.trim().is_empty())
            })
        };
        if let Some(list) = var("no_proxy") {
            if NoProxy::parse(&list).matches(host, port) {
                return Ok(None);
            }
        }
        let names: &[&str] = if secure {
            &["wss_proxy", "https_proxy", "all_proxy"]
        } else {
            &["ws_proxy", "https_proxy", "http_proxy", "all_proxy"]
        };
        names
            .iter()
            .find_map(|name| var(name))
            .map(|url| Self::new(&url))
            .transpose()
    }

    /// `Proxy-Authorization` for an HTTP proxy.
    fn basic_authorization(&self) -> Option<String> {
        self.credentials.as_ref().map(|(user, password)| {
            let mut pair = user.clone();
            pair.push(b':');
            pair.extend_from_slice(password);
            format!("Basic {}", BASE64.encode(pair))
        })
    }
}

/// Reads one environment variable.
pub(crate) type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where client connections go: straight to the server, through one proxy,
/// or through the one the environment names for each destination.
#[derive(Clone, Default)]
pub(crate) enum ProxySetting {
    #[default]
    Direct,
    Fixed(Proxy),
    Env(EnvLookup),
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("Direct"),
            Self::Fixed(proxy) => f.debug_tuple("Fixed").field(proxy).finish(),
            Self::Env(_) => f.write_str("Env"),
        }
    }
}

impl ProxySetting {
    /// The proxy for a connection to `host:port`.
    pub(crate) fn for_target(&self, secure: bool, host: &str, port: u16) -> Result<Option<Proxy>, Error> {
        match self {
            Self::Direct => Ok(None),
            Self::Fixed(proxy) => Ok(proxy.applies_to(host, port).then(|| proxy.clone())),
            Self::Env(lookup) => Proxy::from_env_for(secure, host, port, &**lookup),
        }
    }
}

/// A `no_proxy` list: hosts reached without the proxy.
///
/// Comma- or space-separated entries, matched without regard to case:
/// `*` (every host); a domain (`example.com` or `.example.com`: the name
/// itself and every name under it); an IP address (`127.0.0.1`, `::1` or
/// `[::1]`); a CIDR block (`10.0.0.0/8`, `fd00::/8`, as curl 7.86 and
/// later); any of them with `:port` to match that port only (as Python).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyEntry {
    All,
    Domain { name: String, port: Option<u16> },
    Ip { addr: IpAddr, port: Option<u16> },
    Cidr { net: IpAddr, prefix: u8 },
}

impl NoProxy {
    /// Parses a list; entries that mean nothing are skipped.
    pub fn parse(list: &str) -> Self {
        let entries = list
            .split([',', ' ', '\t'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .filter_map(|entry| {
                if entry == "*" {
                    return Some(NoProxyEntry::All);
                }
                if let Some((net, prefix)) = entry.split_once('/') {
                    let net = net
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .ok()?;
                    let prefix = prefix.parse::<u8>().ok()?;
                    let max = if net.is_ipv4() { 32 } else { 128 };
                    return (prefix <= max).then_some(NoProxyEntry::Cidr { net, prefix });
                }
                if let Ok(addr) = entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                    return Some(NoProxyEntry::Ip { addr, port: None });
                }
                let (host, port) = split_host_port(entry, 0)?;
                let port = (port != 0).then_some(port);
                if let Ok(addr) = host.parse::<IpAddr>() {
                    return Some(NoProxyEntry::Ip { addr, port });
                }
                let name = host
                    .trim_start_matches("*.")
                    .trim_start_matches('.')
                    .to_ascii_lowercase();
                (!name.is_empty()).then_some(NoProxyEntry::Domain { name, port })
            })
            .collect();
        Self { entries }
    }

    /// Whether `host:port` is on the list.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
        let ip = host.parse::<IpAddr>().ok();
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        self.entries.iter().any(|entry| match entry {
            NoProxyEntry::All => true,
            NoProxyEntry::Domain { name, port: p } => {
                let host = host.to_ascii_lowercase();
                port_ok(p)
                    && (host == *name || host.strip_suffix(name.as_str()).is_some_and(|head| head.ends_with('.')))
            }
            NoProxyEntry::Ip { addr, port: p } => port_ok(p) && ip == Some(*addr),
            NoProxyEntry::Cidr { net, prefix } => ip.is_some_and(|ip| in_cidr(ip, *net, *prefix)),
        })
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the host without brackets.
fn split_host_port(s: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address has more than one colon.
        Some((host, _)) if host.contains(':') => Some((s, default_port)),
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((s, default_port)),
    }
}

fn decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// A proxy's refusal or failure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL cannot be used.
    InvalidUrl(&'static str),
    /// An HTTP proxy answered `CONNECT` with this status: 407 (or 401, from
    /// some proxies) when it wants (other) credentials, with its
    /// `Proxy-Authenticate` (or `WWW-Authenticate`) challenge; 403
    /// for a destination it does not allow; 502 or 503 when it could not
    /// reach the server...
    Rejected {
        /// The proxy's status.
        status: StatusCode,
        /// Its `Proxy-Authenticate` header, or `WWW-Authenticate` when it
        /// sent only that.
        challenge: Option<String>,
    },
    /// A SOCKS5 proxy accepts none of the authentication methods offered:
    /// it wants a user name and password and none were given, or it wants
    /// something else.
    SocksNoAcceptableMethod,
    /// A SOCKS5 proxy refused the user name and password.
    SocksAuthFailed,
    /// A SOCKS5 proxy could not open the connection; the reply code
    /// (RFC 1928 section 6): 2 not allowed by its rules, 3 network
    /// unreachable, 4 host unreachable, 5 connection refused, 6 TTL
    /// expired...
    SocksReply(u8),
    /// The proxy broke its protocol (a malformed answer, data sent before
    /// the tunnel was used).
    Protocol(&'static str),
}

impl ProxyError {
    /// Whether it asks for credentials (a 407 or 401 from an HTTP proxy, a
    /// SOCKS5 proxy that wants a password or refused it).
    pub fn needs_credentials(&self) -> bool {
        match self {
            // Some proxies (tinyproxy) answer wrong credentials with 401:
            // `CONNECT` goes to the proxy only, so it is the proxy's too.
            Self::Rejected { status, .. } => {
                *status == StatusCode::PROXY_AUTHENTICATION_REQUIRED || *status == StatusCode::UNAUTHORIZED
            }
            Self::SocksNoAcceptableMethod | Self::SocksAuthFailed => true,
            _ => false,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(reason) => write!(f, "invalid proxy URL: {reason}"),
            Self::Rejected { status, challenge } => {
                write!(f, "the proxy refused the tunnel with HTTP status {status}")?;
                match challenge {
                    Some(challenge) => write!(f, " (Proxy-Authenticate: {challenge})"),
                    None => Ok(()),
                }
            }
            Self::SocksNoAcceptableMethod => {
                f.write_str("the SOCKS5 proxy accepts none of the authentication methods offered (credentials needed?)")
            }
            Self::SocksAuthFailed => f.write_str("the SOCKS5 proxy refused the user name and password"),
            Self::SocksReply(code) => {
                let what = match code {
                    1 => "general failure",
                    2 => "connection not allowed by its rules",
                    3 => "network unreachable",
                    4 => "host unreachable",
                    5 => "connection refused",
                    6 => "TTL expired",
                    7 => "command not supported",
                    8 => "address type not supported",
                    _ => "unknown reply",
                };
                write!(f, "the SOCKS5 proxy could not connect: {what} (reply {code})")
            }
            Self::Protocol(reason) => write!(f, "the proxy broke its protocol: {reason}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// The destination a proxy is asked to connect to.
#[derive(Debug, Clone)]
pub enum ProxyTarget<'a> {
    /// A host name (or an address literal) and a port.
    Name(&'a str, u16),
    /// An address the client resolved (`socks5://`).
    Addr(SocketAddr),
}

/// The client side of a proxy's handshake, sans-IO: send
/// [`start`](Self::start)'s bytes, then feed what the proxy answers to
/// [`handle_read`](Self::handle_read), sending what it returns, until it
/// says the tunnel is open.
#[derive(Debug)]
pub struct ProxyHandshake {
    state: HandshakeState,
    credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// The SOCKS5 CONNECT request, sent after authentication.
    socks_request: Vec<u8>,
    buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandshakeState {
    /// Waiting for the answer to CONNECT.
    HttpResponse,
    /// Waiting for the SOCKS5 method selection.
    SocksMethod,
    /// Waiting for the RFC 1929 authentication status.
    SocksAuth,
    /// Waiting for the SOCKS5 reply.
    SocksReply,
    Done,
}

/// What to do after [`ProxyHandshake::handle_read`].
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyStep {
    /// Read more.
    Read,
    /// Send these bytes, then read more.
    Send(Vec<u8>),
    /// The tunnel is open: speak to the server.
    Open,
}

impl ProxyHandshake {
    /// Starts the handshake with `proxy` for `target`; returns the bytes to
    /// send first.
    pub fn start(proxy: &Proxy, target: &ProxyTarget<'_>) -> (Self, Vec<u8>) {
        match proxy.scheme {
            ProxyScheme::Http | ProxyScheme::Https => {
                let authority = match target {
                    ProxyTarget::Name(host, port) if host.contains(':') => format!("[{host}]:{port}"),
                    ProxyTarget::Name(host, port) => format!("{host}:{port}"),
                    ProxyTarget::Addr(addr) => addr.to_string(),
                };
                let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
                if let Some(value) = proxy.basic_authorization() {
                    request.push_str("Proxy-Authorization: ");
                    request.push_str(&value);
                    request.push_str("\r\n");
                }
                request.push_str("\r\n");
                let handshake = Self {
                    state: HandshakeState::HttpResponse,
                    credentials: None,
                    socks_request: Vec::new(),
                    buf: Vec::new(),
                };
                (handshake, request.into_bytes())
            }
            ProxyScheme::Socks5 | ProxyScheme::Socks5h => {
                // RFC 1928 section 4: CONNECT, then the address.
                let mut request = vec![5, 1, 0];
                match target {
                    ProxyTarget::Addr(SocketAddr::V4(addr)) => {
                        request.push(1);
                        request.extend_from_slice(&addr.ip().octets());
                    }
                    ProxyTarget::Addr(SocketAddr::V6(addr)) => {
                        request.push(4);
                        request.extend_from_slice(&addr.ip().octets());
                    }
                    ProxyTarget::Name(host, _) => match host.parse::<IpAddr>() {
                        Ok(IpAddr::V4(ip)) => {
                            request.push(1);
                            request.extend_from_slice(&ip.octets());
                        }
                        Ok(IpAddr::V6(ip)) => {
                            request.push(4);
                            request.extend_from_slice(&ip.octets());
                        }
                        Err(_) => {
                            // At most 255 bytes: `tunnel` refuses longer
                            // names before starting (DNS names have 253).
                            request.push(3);
                            let name = &host.as_bytes()[..host.len().min(255)];
                            request.push(name.len() as u8);
                            request.extend_from_slice(name);
                        }
                    },
                }
                let port = match target {
                    ProxyTarget::Name(_, port) => *port,
                    ProxyTarget::Addr(addr) => addr.port(),
                };
                request.extend_from_slice(&port.to_be_bytes());
                // Section 3: the methods offered, "no authentication" and,
                // with credentials, "username/password" (RFC 1929).
                let greeting = if proxy.credentials.is_some() {
                    vec![5, 2, 0, 2]
                } else {
                    vec![5, 1, 0]
                };
                let handshake = Self {
                    state: HandshakeState::SocksMethod,
                    credentials: proxy.credentials.clone(),
                    socks_request: request,
                    buf: Vec::new(),
                };
                (handshake, greeting)
            }
        }
    }

    /// Input: bytes the proxy sent.
    pub fn handle_read(&mut self, data: &[u8]) -> Result<ProxyStep, ProxyError> {
        self.buf.extend_from_slice(data);
        let result = self.step();
        if result.is_err() {
            self.state = HandshakeState::Done;
        }
        result
    }

    fn step(&mut self) -> Result<ProxyStep, ProxyError> {
        match self.state {
            HandshakeState::Done => Err(ProxyError::Protocol("data after the handshake ended")),
            HandshakeState::HttpResponse => self.http_response(),
            HandshakeState::SocksMethod => {
                let Some(answer) = self.take(2)? else {
                    return Ok(ProxyStep::Read);
                };
                if answer[0] != 5 {
                    return Err(ProxyError::Protocol("not a SOCKS5 answer"));
                }
                match (answer[1], &self.credentials) {
                    (0, _) => {
                        self.state = HandshakeState::SocksReply;
                        Ok(ProxyStep::Send(self.socks_request.clone()))
                    }
                    (2, Some((user, password))) => {
                        // RFC 1929 section 2.
                        let mut auth = vec![1, user.len() as u8];
                        auth.extend_from_slice(user);
                        auth.push(password.len() as u8);
                        auth.extend_from_slice(password);
                        self.state = HandshakeState::SocksAuth;
                        Ok(ProxyStep::Send(auth))
                    }
                    (0xff, _) => Err(ProxyError::SocksNoAcceptableMethod),
                    _ => Err(ProxyError::Protocol("the SOCKS5 proxy chose a method not offered")),
                }
            }
            HandshakeState::SocksAuth => {
                let Some(answer) = self.take(2)? else {
                    return Ok(ProxyStep::Read);
                };
                if answer[1] != 0 {
                    return Err(ProxyError::SocksAuthFailed);
                }
                self.state = HandshakeState::SocksReply;
                Ok(ProxyStep::Send(self.socks_request.clone()))
            }
            HandshakeState::SocksReply => {
                // VER REP RSV ATYP BND.ADDR BND.PORT
                if self.buf.len() < 2 {
                    return Ok(ProxyStep::Read);
                }
                if self.buf[0] != 5 {
                    return Err(ProxyError::Protocol("not a SOCKS5 reply"));
                }
                if self.buf[1] != 0 {
                    return Err(ProxyError::SocksReply(self.buf[1]));
                }
                if self.buf.len() < 5 {
                    return Ok(ProxyStep::Read);
                }
                let len = match self.buf[3] {
                    1 => 4 + 4 + 2,
                    4 => 4 + 16 + 2,
                    3 => 4 + 1 + usize::from(self.buf[4]) + 2,
                    _ => return Err(ProxyError::Protocol("unknown address type in the SOCKS5 reply")),
                };
                if self.take(len)?.is_none() {
                    return Ok(ProxyStep::Read);
                }
                self.state = HandshakeState::Done;
                Ok(ProxyStep::Open)
            }
        }
    }

    /// The first `n` bytes received, once they are all here; more than `n`
    /// is an error (a SOCKS5 proxy answers only what was asked).
    fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, ProxyError> {
        match self.buf.len() {
            len if len < n => Ok(None),
            len if len == n => Ok(Some(std::mem::take(&mut self.buf))),
            _ => Err(ProxyError::Protocol("the SOCKS5 proxy sent more than its answer")),
        }
    }

    fn http_response(&mut self) -> Result<ProxyStep, ProxyError> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response
            .parse(&self.buf)
            .map_err(|_| ProxyError::Protocol("malformed HTTP answer to CONNECT"))?;
        let httparse::Status::Complete(head) = parsed else {
            if self.buf.len() > MAX_CONNECT_RESPONSE {
                return Err(ProxyError::Protocol("the answer to CONNECT is over 16 KiB"));
            }
            return Ok(ProxyStep::Read);
        };
        let status = response
            .code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or(ProxyError::Protocol("malformed HTTP status"))?;
        if status.is_informational() {
            // 1xx: another answer follows.
            self.buf.drain(..head);
            return self.http_response();
        }
        if !status.is_success() {
            let challenge = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("proxy-authenticate"))
                .or_else(|| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("www-authenticate"))
                })
                .map(|h| String::from_utf8_lossy(h.value).into_owned());
            return Err(ProxyError::Rejected { status, challenge });
        }
        // The server speaks only after the client (TLS, or the WebSocket
        // request): nothing may follow the proxy's answer yet.
        if self.buf.len() > head {
            return Err(ProxyError::Protocol("data after the answer to CONNECT"));
        }
        self.state = HandshakeState::Done;
        Ok(ProxyStep::Open)
    }
}

/// Runs `proxy`'s handshake on `io` (already connected to the proxy, over
/// TLS for an `https://` proxy) to open a tunnel to `host:port`, by
/// `deadline`.
pub(crate) async fn tunnel<S, R>(
    io: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
    deadline: Option<Instant>,
) -> Result<(), Error>
where
    R: Connect + RuntimeIo<S>,
{
    if matches!(proxy.scheme, ProxyScheme::Socks5 | ProxyScheme::Socks5h) && host.len() > 255 {
        return Err(invalid(
            "a host name over 255 bytes cannot go through SOCKS5 (RFC 1928)",
        ));
    }
    let target = match proxy.scheme {
        // socks5://: the client resolves; the first address is used.
        ProxyScheme::Socks5 => {
            let addrs = R::resolve(host, port).await.map_err(|error| Error::Resolve {
                host: host.to_owned(),
                error,
            })?;
            let addr = addrs.first().copied().ok_or_else(|| Error::Resolve {
                host: host.to_owned(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
            ProxyTarget::Addr(addr)
        }
        _ => ProxyTarget::Name(host, port),
    };
    let (mut handshake, first) = ProxyHandshake::start(proxy, &target);
    write_all::<S, R>(io, &first).await.map_err(Error::from_io)?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let n = match read_until::<S, R>(io, &mut buf, deadline).await {
            None => return Err(Error::ConnectTimeout),
            Some(Err(e)) => return Err(Error::from_io(e)),
            Some(Ok(0)) => {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the proxy closed the connection during its handshake",
                )))
            }
            Some(Ok(n)) => n,
        };
        match handshake.handle_read(&buf[..n]).map_err(Error::Proxy)? {
            ProxyStep::Read => {}
            ProxyStep::Send(bytes) => write_all::<S, R>(io, &bytes).await.map_err(Error::from_io)?,
            ProxyStep::Open => return Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn proxy_urls() {
        let p = Proxy::new("http://proxy:3128").unwrap();
        assert_eq!(
            (p.scheme(), p.host(), p.port(), p.has_credentials()),
            (ProxyScheme::Http, "proxy", 3128, false)
        );
        let p = Proxy::new("proxy.corp:8080").unwrap();
        assert_eq!(
            (p.scheme(), p.host(), p.port()),
            (ProxyScheme::Http, "proxy.corp", 8080)
        );
        let p = Proxy::new("HTTPS://[::1]/").unwrap();
        assert_eq!((p.scheme(), p.host(), p.port()), (ProxyScheme::Https, "::1", 443));
        let p = Proxy::new("socks5h://u:p%3Aw@127.0.0.1").unwrap();
        assert_eq!(
            (p.scheme(), p.host(), p.port()),
            (ProxyScheme::Socks5h, "127.0.0.1", 1080)
        );
        assert_eq!(p.credentials, Some((b"u".to_vec(), b"p:w".to_vec())));
        assert!(!format!("{p:?}").contains("p:w"));
        for bad in [
            "ftp://x",
            "http://",
            "http://x:port",
            "http://[::1",
            "socks5://u%0A:p@x",
        ] {
            assert!(Proxy::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_connect_request_and_answers() {
        let proxy = Proxy::new("http://Aladdin:open%20sesame@p:1").unwrap();
        let (mut h, request) = ProxyHandshake::start(&proxy, &ProxyTarget::Name("::1", 9001));
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "CONNECT [::1]:9001 HTTP/1.1\r\nHost: [::1]:9001\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        assert_eq!(
            h.handle_read(b"HTTP/1.1 200 Connection established\r\n").unwrap(),
            ProxyStep::Read
        );
        assert_eq!(h.handle_read(b"\r\n").unwrap(), ProxyStep::Open);

        let proxy = Proxy::new("http://p:1").unwrap();
        let (mut h, request) = ProxyHandshake::start(&proxy, &ProxyTarget::Name("example.com", 443));
        assert!(!String::from_utf8(request).unwrap().contains("Proxy-Authorization"));
        let answer =
            b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n<html>";
        assert_eq!(
            h.handle_read(answer),
            Err(ProxyError::Rejected {
                status: StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                challenge: Some("Basic realm=\"x\"".into())
            })
        );

        let (mut h, _) = ProxyHandshake::start(&proxy, &ProxyTarget::Name("a", 1));
        assert_eq!(
            h.handle_read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")
                .unwrap(),
            ProxyStep::Open
        );
        let (mut h, _) = ProxyHandshake::start(&proxy, &ProxyTarget::Name("a", 1));
        assert!(matches!(
            h.handle_read(b"HTTP/1.1 200 OK\r\n\r\nextra"),
            Err(ProxyError::Protocol(_))
        ));
        let (mut h, _) = ProxyHandshake::start(&proxy, &ProxyTarget::Name("a", 1));
        assert!(matches!(
            h.handle_read(b"SSH-2.0-x\r\n\r\n"),
            Err(ProxyError::Protocol(_))
        ));
        let (mut h, _) = ProxyHandshake::start(&proxy, &ProxyTarget::Name("a", 1));
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_CONNECT_RESPONSE));
        assert!(matches!(h.handle_read(long.as_bytes()), Err(ProxyError::Protocol(_))));
    }

    #[test]
    fn socks5_handshakes() {
        // socks5h: the name goes to the proxy; no credentials.
        let proxy = Proxy::new("socks5h://p").unwrap();
        let (mut h, greeting) = ProxyHandshake::start(&proxy, &ProxyTarget::Name("ws.test", 80));
        assert_eq!(greeting, [5, 1, 0]);
        let ProxyStep::Send(request) = h.handle_read(&[5, 0]).unwrap() else {
            panic!()
        };
        assert_eq!(request, [&[5, 1, 0, 3, 7][..], b"ws.test", &[0, 80]].concat());
        assert_eq!(h.handle_read(&[5, 0, 0, 1, 127, 0]).unwrap(), ProxyStep::Read);
        assert_eq!(h.handle_read(&[0, 1, 0x1f, 0x90]).unwrap(), ProxyStep::Open);

        // socks5 with an address and credentials (RFC 1929).
        let proxy = Proxy::new("socks5://alice:pw@p").unwrap();
        let target = ProxyTarget::Addr("[::1]:443".parse().unwrap());
        let (mut h, greeting) = ProxyHandshake::start(&proxy, &target);
        assert_eq!(greeting, [5, 2, 0, 2]);
        let ProxyStep::Send(auth) = h.handle_read(&[5, 2]).unwrap() else {
            panic!()
        };
        assert_eq!(auth, [&[1, 5][..], b"alice", &[2], b"pw"].concat());
        let ProxyStep::Send(request) = h.handle_read(&[1, 0]).unwrap() else {
            panic!()
        };
        assert_eq!(request[..4], [5, 1, 0, 4]);
        assert_eq!(request.len(), 4 + 16 + 2);
        let mut reply = vec![5, 0, 0, 3, 4];
        reply.extend_from_slice(b"host\x01\xbb");
        assert_eq!(h.handle_read(&reply).unwrap(), ProxyStep::Open);

        // Refusals.
        let (mut h, _) = ProxyHandshake::start(&proxy, &target);
        h.handle_read(&[5, 2]).unwrap();
        assert_eq!(h.handle_read(&[1, 1]), Err(ProxyError::SocksAuthFailed));
        let (mut h, _) = ProxyHandshake::start(&Proxy::new("socks5://p").unwrap(), &target);
        assert_eq!(h.handle_read(&[5, 0xff]), Err(ProxyError::SocksNoAcceptableMethod));
        let (mut h, _) = ProxyHandshake::start(&Proxy::new("socks5://p").unwrap(), &target);
        assert_eq!(h.handle_read(&[5, 2]).map_err(|e| e.needs_credentials()), Err(false));
        let (mut h, _) = ProxyHandshake::start(&Proxy::new("socks5://p").unwrap(), &target);
        h.handle_read(&[5, 0]).unwrap();
        assert_eq!(h.handle_read(&[5, 5, 0, 1]), Err(ProxyError::SocksReply(5)));
        let (mut h, _) = ProxyHandshake::start(&Proxy::new("socks5://p").unwrap(), &target);
        assert!(matches!(h.handle_read(&[4, 0]), Err(ProxyError::Protocol(_))));
        let (mut h, _) = ProxyHandshake::start(&Proxy::new("socks5://p").unwrap(), &target);
        h.handle_read(&[5, 0]).unwrap();
        assert!(matches!(h.handle_read(&[5, 0, 0, 9, 0]), Err(ProxyError::Protocol(_))));
    }

    #[test]
    fn no_proxy_lists() {
        let list = NoProxy::parse("localhost, .internal.corp,example.org:8080 10.0.0.0/8,[::1],fd00::/8, *.svc");
        assert!(list.matches("localhost", 80));
        assert!(list.matches("LOCALHOST.", 80));
        assert!(list.matches("a.internal.corp", 443));
        assert!(list.matches("internal.corp", 443));
        assert!(!list.matches("xinternal.corp", 443));
        assert!(list.matches("example.org", 8080));
        assert!(!list.matches("example.org", 443));
        assert!(list.matches("10.1.2.3", 1));
        assert!(!list.matches("11.1.2.3", 1));
        assert!(list.matches("::1", 1));
        assert!(list.matches("fd12::1", 1));
        assert!(list.matches("db.svc", 1));
        assert!(!list.matches("example.com", 80));
        assert!(NoProxy::parse("*").matches("anything", 1));
        assert!(!NoProxy::parse("").matches("anything", 1));
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8", 1));
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    fn chosen(secure: bool, host: &str, vars: &[(&str, &str)]) -> Option<String> {
        Proxy::from_env_for(secure, host, 443, &env(vars))
            .unwrap()
            .map(|p| format!("{}:{}", p.host(), p.port()))
    }

    #[test]
    fn environment_precedence() {
        let all = [
            ("wss_proxy", "wss:1"),
            ("ws_proxy", "ws:1"),
            ("https_proxy", "https:1"),
            ("http_proxy", "http:1"),
            ("all_proxy", "all:1"),
        ];
        assert_eq!(chosen(true, "h", &all).as_deref(), Some("wss:1"));
        assert_eq!(chosen(false, "h", &all).as_deref(), Some("ws:1"));
        assert_eq!(chosen(true, "h", &all[1..]).as_deref(), Some("https:1"));
        assert_eq!(chosen(false, "h", &all[2..]).as_deref(), Some("https:1"));
        // http_proxy is for ws:// only.
        assert_eq!(chosen(false, "h", &all[3..]).as_deref(), Some("http:1"));
        assert_eq!(chosen(true, "h", &all[3..]).as_deref(), Some("all:1"));
        assert_eq!(chosen(true, "h", &all[4..]).as_deref(), Some("all:1"));
        assert_eq!(chosen(true, "h", &[]), None);
        // Lower case first; upper case when the lower-case one is unset or empty.
        assert_eq!(
            chosen(true, "h", &[("HTTPS_PROXY", "U:1"), ("https_proxy", "l:1")]).as_deref(),
            Some("l:1")
        );
        assert_eq!(
            chosen(true, "h", &[("HTTPS_PROXY", "U:1"), ("https_proxy", " ")]).as_deref(),
            Some("U:1")
        );
        // httpoxy: HTTP_PROXY is not trusted in a CGI program.
        assert_eq!(chosen(false, "h", &[("HTTP_PROXY", "U:1")]).as_deref(), Some("U:1"));
        assert_eq!(
            chosen(false, "h", &[("HTTP_PROXY", "U:1"), ("REQUEST_METHOD", "GET")]),
            None
        );
        // no_proxy / NO_PROXY.
        assert_eq!(
            chosen(true, "a.local", &[("https_proxy", "p:1"), ("no_proxy", ".local")]),
            None
        );
        assert_eq!(
            chosen(true, "a.local", &[("https_proxy", "p:1"), ("NO_PROXY", "a.local")]),
            None
        );
        assert_eq!(
            chosen(true, "b.test", &[("https_proxy", "p:1"), ("no_proxy", ".local")]).as_deref(),
            Some("p:1")
        );
        // Any kind of proxy in any variable.
        let p = Proxy::from_env_for(true, "h", 443, &env(&[("https_proxy", "socks5h://s:1080")]))
            .unwrap()
            .unwrap();
        assert_eq!(p.scheme(), ProxyScheme::Socks5h);
        assert!(Proxy::from_env_for(true, "h", 443, &env(&[("https_proxy", "ftp://x")])).is_err());
    }

    #[test]
    fn a_fixed_proxy_has_its_own_exceptions() {
        let setting = ProxySetting::Fixed(Proxy::new("http://p:1").unwrap().no_proxy("localhost"));
        assert!(setting.for_target(false, "localhost", 80).unwrap().is_none());
        assert!(setting.for_target(false, "example.com", 80).unwrap().is_some());
        assert!(ProxySetting::Direct
            .for_target(false, "example.com", 80)
            .unwrap()
            .is_none());
    }
}
