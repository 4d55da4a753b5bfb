//! Opening client connections, on any runtime that implements [`Connect`].

use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{HeaderName, HeaderValue};
use tether_proto::handshake::{ClientHandshake, ClientRequest, HandshakeError};

use crate::io::{read_until, with_deadline, write_all};
use crate::proxy::{tunnel, Proxy, ProxyScheme, ProxySetting};
use crate::random::OsRandom;
use crate::runtime::{share_of_deadline, Connect, Runtime, RuntimeIo};
use crate::{Error, WebSocketConfig, WebSocketStream};

/// Default connect timeout: 60 seconds, covering DNS, TCP, TLS and the
/// opening handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Size of the reads during the opening handshake.
const HANDSHAKE_READ: usize = 4 * 1024;

/// Settings of a client connection, and the connect that uses them. Each
/// shell names it for its runtime (`tether_tokio::ClientBuilder`).
///
/// ```ignore
/// # async fn run() -> Result<(), tether_tokio::Error> {
/// use std::time::Duration;
/// let ws = tether_tokio::ClientBuilder::new("wss://example.com/feed")
///     .protocols(["v2.feed"])
///     .origin("https://example.com")
///     .header(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer abc"))
///     .max_message_size(1 << 20)
///     .ping_interval(Some(Duration::from_secs(30)))
///     .connect_timeout(Some(Duration::from_secs(10)))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ClientBuilder<R> {
    request: Result<ClientRequest, HandshakeError>,
    config: WebSocketConfig,
    connect_timeout: Option<Duration>,
    nodelay: bool,
    max_redirects: usize,
    insecure_redirects: bool,
    proxy: ProxySetting,
    #[cfg(feature = "tls")]
    roots: crate::tls::TlsRoots,
    runtime: PhantomData<fn() -> R>,
}

/// Default [`ClientBuilder::max_redirects`]: 10.
pub const DEFAULT_MAX_REDIRECTS: usize = 10;

impl<R> std::fmt::Debug for ClientBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("request", &self.request)
            .field("config", &self.config)
            .field("connect_timeout", &self.connect_timeout)
            .field("nodelay", &self.nodelay)
            .field("max_redirects", &self.max_redirects)
            .field("insecure_redirects", &self.insecure_redirects)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl<R> Clone for ClientBuilder<R> {
    fn clone(&self) -> Self {
        Self {
            request: self.request.clone(),
            config: self.config.clone(),
            connect_timeout: self.connect_timeout,
            nodelay: self.nodelay,
            max_redirects: self.max_redirects,
            insecure_redirects: self.insecure_redirects,
            proxy: self.proxy.clone(),
            #[cfg(feature = "tls")]
            roots: self.roots.clone(),
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime> ClientBuilder<R> {
    /// Settings for `url` (`ws://` or `wss://`). An invalid URL is reported
    /// by [`connect`](Self::connect).
    pub fn new(url: &str) -> Self {
        Self::with_request(ClientRequest::new(url))
    }

    /// Settings for a request built with the core's [`ClientRequest`].
    pub fn from_request(request: ClientRequest) -> Self {
        Self::with_request(Ok(request))
    }

    fn with_request(request: Result<ClientRequest, HandshakeError>) -> Self {
        Self {
            request,
            config: WebSocketConfig::default(),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            nodelay: true,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            insecure_redirects: false,
            proxy: ProxySetting::Direct,
            #[cfg(feature = "tls")]
            roots: crate::tls::TlsRoots::default(),
            runtime: PhantomData,
        }
    }

    fn map_request(mut self, f: impl FnOnce(ClientRequest) -> ClientRequest) -> Self {
        self.request = self.request.map(f);
        self
    }

    /// Adds a header to the opening handshake (cookies, authorization...).
    pub fn header(self, name: HeaderName, value: HeaderValue) -> Self {
        self.map_request(|r| r.header(name, value))
    }

    /// The subprotocols to offer, in order of preference.
    pub fn protocols<I, P>(self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.map_request(|r| r.protocols(protocols))
    }

    /// The `Origin` header.
    pub fn origin(self, origin: impl Into<String>) -> Self {
        self.map_request(|r| r.origin(origin))
    }

    /// Offers permessage-deflate (RFC 7692) with `config`; call again to
    /// offer several configurations in order of preference. The server
    /// picks one or none; [`WebSocketStream::extensions`] tells which.
    #[cfg(feature = "deflate")]
    pub fn permessage_deflate(self, config: tether_proto::deflate::DeflateConfig) -> Self {
        self.map_request(|r| r.permessage_deflate(config))
    }

    /// How many redirects (301, 302, 303, 307, 308 with a `Location`) to
    /// follow before giving up with the last one's
    /// [`HandshakeError::Rejected`]; 0 follows none. Default 10. Every hop
    /// shares the connect timeout; see [`ClientRequest::redirect`] for how
    /// a location is resolved and which headers follow.
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.max_redirects = max;
        self
    }

    /// Follows a redirect from `wss://` to `ws://` (default: refused with
    /// [`Error::RedirectRefused`]: the connection would lose its TLS).
    pub fn allow_insecure_redirects(mut self, allow: bool) -> Self {
        self.insecure_redirects = allow;
        self
    }

    /// Connects through `proxy` (HTTP `CONNECT` over `http://` or
    /// `https://`, or SOCKS5), except to the hosts of its
    /// [`no_proxy`](Proxy::no_proxy) list. The connect timeout covers the
    /// proxy's leg too; a redirect goes through the same proxy.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxySetting::Fixed(proxy);
        self
    }

    /// Connects through the proxy the environment names for each
    /// destination (`wss_proxy`, `https_proxy`, `ws_proxy`, `http_proxy`,
    /// `all_proxy`, `no_proxy`; see [`Proxy::from_env_for`] for the
    /// precedence), read at every connect. Off by default: a library does
    /// not route through a proxy unless its user says so.
    pub fn proxy_from_env(self) -> Self {
        self.proxy_from_env_with(|name| std::env::var(name).ok())
    }

    /// [`proxy_from_env`](Self::proxy_from_env) with variables from
    /// `lookup` instead of the process environment (a configuration file,
    /// a test).
    pub fn proxy_from_env_with(mut self, lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.proxy = ProxySetting::Env(std::sync::Arc::new(lookup));
        self
    }

    /// Connects directly, without a proxy (the default).
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxySetting::Direct;
        self
    }

    /// All connection settings at once.
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// The largest message accepted (default 64 MiB).
    pub fn max_message_size(mut self, size: u64) -> Self {
        self.config.connection.max_message_size = size;
        self
    }

    /// The largest frame accepted (default 16 MiB).
    pub fn max_frame_size(mut self, size: u64) -> Self {
        self.config.connection.max_frame_size = size;
        self
    }

    /// Keepalive: a ping after this long without receiving (default 2
    /// minutes; `None` turns it off).
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.connection.ping_interval = interval;
        self
    }

    /// Fail the connection when nothing was received for this long (default
    /// `None`).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.connection.idle_timeout = timeout;
        self
    }

    /// The limit of the write buffer, past which sending waits.
    pub fn write_buffer_limit(mut self, limit: usize) -> Self {
        self.config.write_buffer_limit = limit;
        self
    }

    /// How much room each read of the transport asks for (default
    /// [`DEFAULT_READ_BUFFER_SIZE`](crate::DEFAULT_READ_BUFFER_SIZE), 64 KiB;
    /// at least 4 KiB is used): [`WebSocketConfig::read_buffer_size`].
    pub fn read_buffer_size(mut self, size: usize) -> Self {
        self.config.read_buffer_size = size;
        self
    }

    /// How long DNS, TCP, TLS and the opening handshake may take together
    /// (default 60 seconds; `None`: no limit).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// `TCP_NODELAY` (default on: frames leave at once; off turns Nagle's
    /// algorithm back on).
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Which certificates a `wss://` connection trusts (default: the
    /// compiled-in webpki roots).
    #[cfg(feature = "tls")]
    pub fn tls_roots(mut self, roots: crate::tls::TlsRoots) -> Self {
        self.roots = roots;
        self
    }

    /// A rustls client configuration of the caller's.
    #[cfg(feature = "tls")]
    pub fn tls_config(self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls_roots(crate::tls::TlsRoots::Custom(config))
    }

    /// TLS settings: extra or own roots from PEM, a client certificate,
    /// ALPN (see [`TlsClient`](crate::tls::TlsClient)).
    #[cfg(feature = "tls")]
    pub fn tls(self, settings: crate::tls::TlsClient) -> Self {
        self.tls_roots(crate::tls::TlsRoots::Settings(Box::new(settings)))
    }

    /// Resolves the host, connects to each resolved address in turn until
    /// one answers, runs TLS for `wss://`, then the opening handshake, all
    /// within the connect timeout.
    pub async fn connect(self) -> Result<WebSocketStream<R::Stream, R>, Error>
    where
        R: Connect + RuntimeIo<<R as Connect>::Stream>,
    {
        let request = self.request.clone()?;
        let deadline = self.connect_timeout.map(|t| R::now() + t);
        let open = self.follow_redirects(request, deadline);
        // The core's handshake timer ends the handshake at the deadline; the
        // runtime's timer ends the steps before it (DNS, TCP, TLS). Either
        // way it is the connect timeout that passed.
        match with_deadline::<R, _>(deadline, open).await {
            None | Some(Err(Error::Handshake(HandshakeError::Timeout))) => Err(Error::ConnectTimeout),
            // The last address's attempt used up what was left of the
            // deadline (a blocking connect times out by itself).
            Some(Err(Error::Io(e)))
                if e.kind() == io::ErrorKind::TimedOut && deadline.is_some_and(|d| R::now() >= d) =>
            {
                Err(Error::ConnectTimeout)
            }
            Some(result) => result,
        }
    }

    /// Runs the opening handshake over a transport the caller opened; the
    /// connect timeout bounds the handshake.
    pub async fn connect_over<S>(self, stream: S) -> Result<WebSocketStream<S, R>, Error>
    where
        R: RuntimeIo<S>,
    {
        let request = self.request?;
        let deadline = self.connect_timeout.map(|t| R::now() + t);
        handshake::<S, R>(stream, request, &self.config, deadline).await
    }

    /// Opens the connection for `request`, following redirects as the
    /// builder allows.
    async fn follow_redirects(
        &self,
        mut request: ClientRequest,
        deadline: Option<Instant>,
    ) -> Result<WebSocketStream<R::Stream, R>, Error>
    where
        R: Connect + RuntimeIo<<R as Connect>::Stream>,
    {
        let mut hops = 0;
        loop {
            let stream = self.open(&request, deadline).await?;
            let error = match handshake::<R::Stream, R>(stream, request.clone(), &self.config, deadline).await {
                Err(Error::Handshake(error)) => error,
                other => return other,
            };
            let status = match &error {
                HandshakeError::Rejected { status, .. } => Some(*status),
                _ => None,
            };
            let redirect = status.is_some_and(|s| matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308));
            let (Some(status), true, Some(location)) = (status, redirect, error.location()) else {
                return Err(Error::Handshake(error));
            };
            if hops == self.max_redirects {
                return Err(Error::Handshake(error));
            }
            let next = request.redirect(location).map_err(|_| Error::RedirectRefused {
                status,
                location: location.to_owned(),
                reason: "not a ws, wss, http or https URL",
            })?;
            if request.is_secure() && !next.is_secure() && !self.insecure_redirects {
                return Err(Error::RedirectRefused {
                    status,
                    location: location.to_owned(),
                    reason: "from wss:// to ws:// (allow_insecure_redirects)",
                });
            }
            tracing::debug!(%status, location, "following a redirect");
            hops += 1;
            request = next;
        }
    }

    /// TCP to the first resolved address that answers (of the server, or
    /// of the proxy and then the proxy's tunnel), then TLS for `wss://`.
    async fn open(&self, request: &ClientRequest, deadline: Option<Instant>) -> Result<R::Stream, Error>
    where
        R: Connect + RuntimeIo<<R as Connect>::Stream>,
    {
        let proxy = self
            .proxy
            .for_target(request.is_secure(), request.host(), request.port())?;
        let stream = match &proxy {
            None => R::plain(self.tcp(request.host(), request.port(), deadline).await?),
            Some(proxy) => {
                tracing::debug!(proxy = %format_args!("{}:{}", proxy.host(), proxy.port()), "connecting through a proxy");
                let tcp = self.tcp(proxy.host(), proxy.port(), deadline).await?;
                let mut stream = R::plain(tcp);
                if proxy.scheme() == ProxyScheme::Https {
                    stream = self.start_tls(stream, proxy.host(), deadline).await?;
                }
                tunnel::<R::Stream, R>(&mut stream, proxy, request.host(), request.port(), deadline).await?;
                stream
            }
        };
        if request.is_secure() {
            self.start_tls(stream, request.host(), deadline).await
        } else {
            Ok(stream)
        }
    }

    /// Resolves `host` and connects to the first address that answers.
    async fn tcp(&self, host: &str, port: u16, deadline: Option<Instant>) -> Result<R::Tcp, Error>
    where
        R: Connect,
    {
        let addrs = R::resolve(host, port).await.map_err(|error| Error::Resolve {
            host: host.to_owned(),
            error,
        })?;
        if addrs.is_empty() {
            return Err(Error::Resolve {
                host: host.to_owned(),
                error: io::Error::new(io::ErrorKind::NotFound, "no address"),
            });
        }
        connect_addrs::<R>(host, &addrs, self.nodelay, deadline).await
    }

    /// TLS for the server `host` over `stream` (TCP, or a proxy's tunnel).
    #[cfg_attr(not(feature = "tls"), allow(clippy::unused_async))]
    async fn start_tls(&self, stream: R::Stream, host: &str, deadline: Option<Instant>) -> Result<R::Stream, Error>
    where
        R: Connect,
    {
        #[cfg(feature = "tls")]
        {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|_| Error::InvalidServerName(host.to_owned()))?;
            let config = self.roots.client_config()?;
            R::tls(stream, name, config, deadline).await
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (stream, host, deadline);
            Err(Error::Handshake(HandshakeError::InvalidUri(
                "wss:// and https:// proxies need the `tls` feature of the adapter",
            )))
        }
    }
}

/// Tries every address in `addrs`, in order, sharing what is left of the
/// deadline between the addresses not tried yet, so that one unreachable
/// address cannot use it all up. Public so that shells and tests can run it
/// on an address list of their own.
pub async fn connect_addrs<R: Connect>(
    host: &str,
    addrs: &[SocketAddr],
    nodelay: bool,
    deadline: Option<Instant>,
) -> Result<R::Tcp, Error> {
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolved to no address"));
    for (i, addr) in addrs.iter().enumerate() {
        let share = deadline.map(|d| share_of_deadline(d, R::now(), addrs.len() - i));
        let attempt = R::connect_tcp(*addr, nodelay, share);
        let result = match share {
            Some(share) => with_deadline::<R, _>(Some(R::now() + share), attempt)
                .await
                .unwrap_or_else(|| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {addr} timed out"),
                    ))
                }),
            None => attempt.await,
        };
        match result {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                tracing::debug!(%addr, "connect failed: {e}");
                last_error = e;
            }
        }
    }
    Err(Error::Io(last_error))
}

/// The client side of the opening handshake on `io`, bounded by `deadline`
/// through the core's handshake timer.
pub(crate) async fn handshake<S, R: RuntimeIo<S>>(
    mut io: S,
    request: ClientRequest,
    config: &WebSocketConfig,
    deadline: Option<Instant>,
) -> Result<WebSocketStream<S, R>, Error> {
    let mut random = OsRandom::new();
    let now = R::now();
    let timeout = deadline.map(|d| d.saturating_duration_since(now));
    let (mut handshake, bytes) = ClientHandshake::new(request, &mut random, now, timeout)?;
    write_all::<S, R>(&mut io, &bytes).await.map_err(Error::from_io)?;
    let mut buf = BytesMut::with_capacity(HANDSHAKE_READ);
    loop {
        let response = match read_until::<S, R>(&mut io, &mut buf, handshake.poll_timeout()).await {
            None => {
                handshake.handle_timeout(R::now())?;
                continue;
            }
            Some(Ok(0)) => return Err(handshake.handle_eof().into()),
            Some(Ok(_)) => handshake.handle_read(&buf)?,
            Some(Err(e)) => return Err(Error::from_io(e)),
        };
        if let Some(response) = response {
            let connection = response.into_connection(config.connection.clone(), Box::new(random), R::now())?;
            return Ok(WebSocketStream::from_connection(io, connection, config));
        }
    }
}
