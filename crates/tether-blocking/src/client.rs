//! Opening client connections.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tether_proto::handshake::ClientRequest;

use crate::runtime::{block_on, Blocking, Transport};
use crate::transport::BlockingIo;
use crate::{Error, MaybeTlsStream, WebSocket, WebSocketConfig};
use std::net::TcpStream;

/// Settings of a client connection, and the blocking connect that uses
/// them.
///
/// The driver's [`ClientBuilder`](tether_driver::ClientBuilder) (the same
/// settings on every runtime) behind blocking [`connect`](Self::connect)
/// and [`connect_over`](Self::connect_over): the driver's are `async`, and
/// a blocking library's connect blocks. Every setter forwards unchanged; a
/// builder made with the driver's type converts with `From`.
///
/// ```no_run
/// use std::time::Duration;
/// let ws = tether_blocking::ClientBuilder::new("wss://example.com/feed")
///     .protocols(["v2.feed"])
///     .ping_interval(Some(Duration::from_secs(30)))
///     .connect_timeout(Some(Duration::from_secs(10)))
///     .connect()?;
/// # Ok::<_, tether_blocking::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder(tether_driver::ClientBuilder<Blocking>);

impl From<tether_driver::ClientBuilder<Blocking>> for ClientBuilder {
    fn from(builder: tether_driver::ClientBuilder<Blocking>) -> Self {
        Self(builder)
    }
}

impl ClientBuilder {
    /// Settings for `url` (`ws://` or `wss://`). An invalid URL is reported
    /// by [`connect`](Self::connect).
    pub fn new(url: &str) -> Self {
        Self(tether_driver::ClientBuilder::new(url))
    }

    /// Settings for a request built with the core's [`ClientRequest`].
    pub fn from_request(request: ClientRequest) -> Self {
        Self(tether_driver::ClientBuilder::from_request(request))
    }

    /// Adds a header to the opening handshake.
    pub fn header(self, name: HeaderName, value: HeaderValue) -> Self {
        Self(self.0.header(name, value))
    }

    /// The subprotocols to offer, in order of preference.
    pub fn protocols<I: IntoIterator<Item = P>, P: Into<String>>(self, protocols: I) -> Self {
        Self(self.0.protocols(protocols))
    }

    /// The `Origin` header.
    pub fn origin(self, origin: impl Into<String>) -> Self {
        Self(self.0.origin(origin))
    }

    /// Offers permessage-deflate (RFC 7692) with `config`.
    #[cfg(feature = "deflate")]
    pub fn permessage_deflate(self, config: crate::DeflateConfig) -> Self {
        Self(self.0.permessage_deflate(config))
    }

    /// All connection settings at once.
    pub fn config(self, config: WebSocketConfig) -> Self {
        Self(self.0.config(config))
    }

    /// The largest message accepted (default 64 MiB).
    pub fn max_message_size(self, size: u64) -> Self {
        Self(self.0.max_message_size(size))
    }

    /// The largest frame accepted (default 16 MiB).
    pub fn max_frame_size(self, size: u64) -> Self {
        Self(self.0.max_frame_size(size))
    }

    /// Keepalive: a ping after this long without receiving (default 2
    /// minutes; `None` turns it off).
    pub fn ping_interval(self, interval: Option<Duration>) -> Self {
        Self(self.0.ping_interval(interval))
    }

    /// Fail the connection when nothing was received for this long.
    pub fn idle_timeout(self, timeout: Option<Duration>) -> Self {
        Self(self.0.idle_timeout(timeout))
    }

    /// The limit of the write buffer, past which sending waits.
    pub fn write_buffer_limit(self, limit: usize) -> Self {
        Self(self.0.write_buffer_limit(limit))
    }

    /// [`WebSocketConfig::read_buffer_size`](crate::WebSocketConfig::read_buffer_size),
    /// forwarded. This shell reads through a per-thread scratch buffer of
    /// 16 KiB (so that a thread blocked in an idle read holds no receive
    /// buffer): each read asks for at most 16 KiB whatever the setting.
    pub fn read_buffer_size(self, size: usize) -> Self {
        Self(self.0.read_buffer_size(size))
    }

    /// How long DNS, TCP, TLS and the opening handshake may take together
    /// (default 60 seconds). The system's resolver is not bounded by it.
    pub fn connect_timeout(self, timeout: Option<Duration>) -> Self {
        Self(self.0.connect_timeout(timeout))
    }

    /// `TCP_NODELAY` (default on).
    pub fn nodelay(self, nodelay: bool) -> Self {
        Self(self.0.nodelay(nodelay))
    }

    /// Which certificates a `wss://` connection trusts (default: the
    /// compiled-in webpki roots).
    #[cfg(feature = "tls")]
    pub fn tls_roots(self, roots: crate::tls::TlsRoots) -> Self {
        Self(self.0.tls_roots(roots))
    }

    /// A rustls client configuration of the caller's.
    #[cfg(feature = "tls")]
    pub fn tls_config(self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        Self(self.0.tls_config(config))
    }

    /// How many redirects to follow (default 10; 0 follows none). See
    /// the driver's `ClientBuilder::max_redirects`.
    pub fn max_redirects(self, max: usize) -> Self {
        Self(self.0.max_redirects(max))
    }

    /// Follows a redirect from `wss://` to `ws://` (default: refused).
    pub fn allow_insecure_redirects(self, allow: bool) -> Self {
        Self(self.0.allow_insecure_redirects(allow))
    }

    /// TLS settings: extra or own roots from PEM, a client certificate,
    /// ALPN (see [`TlsClient`](crate::tls::TlsClient)).
    #[cfg(feature = "tls")]
    pub fn tls(self, settings: crate::tls::TlsClient) -> Self {
        Self(self.0.tls(settings))
    }

    /// Connects through `proxy` (HTTP `CONNECT` over `http://` or
    /// `https://`, or SOCKS5); see the driver's `ClientBuilder::proxy`.
    pub fn proxy(self, proxy: crate::proxy::Proxy) -> Self {
        Self(self.0.proxy(proxy))
    }

    /// Connects through the proxy the environment names (`https_proxy`,
    /// `no_proxy`...; see [`Proxy::from_env_for`](crate::proxy::Proxy::from_env_for)).
    pub fn proxy_from_env(self) -> Self {
        Self(self.0.proxy_from_env())
    }

    /// [`proxy_from_env`](Self::proxy_from_env) with variables from `lookup`.
    pub fn proxy_from_env_with(self, lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(self.0.proxy_from_env_with(lookup))
    }

    /// Connects directly, without a proxy (the default).
    pub fn no_proxy(self) -> Self {
        Self(self.0.no_proxy())
    }

    /// Resolves the host, connects to each resolved address in turn (each
    /// with its share of the connect timeout, `TcpStream::connect_timeout`)
    /// until one answers, runs TLS for `wss://`, then the opening
    /// handshake, all within the connect timeout.
    pub fn connect(self) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, Error> {
        block_on(self.0.connect()).map(WebSocket::from)
    }

    /// Runs the opening handshake over a transport the caller opened (a
    /// Unix socket, a proxy tunnel...); the connect timeout bounds it.
    pub fn connect_over<S: BlockingIo>(self, stream: S) -> Result<WebSocket<S>, Error> {
        block_on(self.0.connect_over(Transport::new(stream))).map(WebSocket::from)
    }
}
