//! Opening client connections.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tether_proto::handshake::{ClientHandshake, ClientRequest, HandshakeError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::driver::now;
use crate::random::OsRandom;
use crate::{Error, MaybeTlsStream, WebSocketConfig, WebSocketStream};

/// Default connect timeout: 60 seconds, covering DNS, TCP, TLS and the
/// opening handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Size of the reads during the opening handshake.
const HANDSHAKE_READ: usize = 4 * 1024;

/// A client connection opened with [`connect`].
pub type ClientStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket connection to a `ws://` or `wss://` URL with the
/// default settings. See [`ClientBuilder`] for the others.
///
/// ```no_run
/// # async fn run() -> Result<(), tether_tokio::Error> {
/// let mut ws = tether_tokio::connect("ws://127.0.0.1:8080/ws").await?;
/// ws.send("hello").await?;
/// let reply = ws.recv().await;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<ClientStream, Error> {
    ClientBuilder::new(url).connect().await
}

/// Runs the client handshake for `request` over a transport the caller
/// opened (a Unix socket, a proxy tunnel, an in-memory pipe...), with the
/// default settings.
pub async fn client_over<S>(stream: S, request: ClientRequest) -> Result<WebSocketStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ClientBuilder::from_request(request).connect_over(stream).await
}

/// Settings of a client connection.
///
/// ```no_run
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
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    request: Result<ClientRequest, HandshakeError>,
    config: WebSocketConfig,
    connect_timeout: Option<Duration>,
    nodelay: bool,
    #[cfg(feature = "tls")]
    roots: crate::tls::TlsRoots,
}

impl ClientBuilder {
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
            #[cfg(feature = "tls")]
            roots: crate::tls::TlsRoots::default(),
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

    /// Resolves the host, connects to each resolved address in turn until
    /// one answers, runs TLS for `wss://`, then the opening handshake, all
    /// within the connect timeout.
    pub async fn connect(self) -> Result<ClientStream, Error> {
        let request = self.request.clone()?;
        let deadline = self.connect_timeout.map(|t| tokio::time::Instant::now() + t);
        let open = self.open(request, deadline);
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, open)
                .await
                .unwrap_or(Err(Error::ConnectTimeout)),
            None => open.await,
        }
    }

    /// Runs the opening handshake over a transport the caller opened; the
    /// connect timeout bounds the handshake.
    pub async fn connect_over<S>(self, stream: S) -> Result<WebSocketStream<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let request = self.request?;
        handshake(stream, request, &self.config, self.connect_timeout).await
    }

    async fn open(
        &self,
        request: ClientRequest,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<ClientStream, Error> {
        let tcp = connect_tcp(request.host(), request.port(), deadline).await?;
        if self.nodelay {
            tcp.set_nodelay(true)?;
        }
        let stream = if request.is_secure() {
            #[cfg(feature = "tls")]
            {
                let config = self.roots.client_config()?;
                let name = rustls::pki_types::ServerName::try_from(request.host().to_owned())
                    .map_err(|_| Error::InvalidServerName(request.host().to_owned()))?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(Error::from_io)?;
                MaybeTlsStream::Tls(Box::new(tls))
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::Handshake(HandshakeError::InvalidUri(
                "wss:// needs the `tls` feature of tether-tokio",
            )));
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        // The outer timeout bounds the handshake too.
        handshake(stream, request, &self.config, None).await
    }
}

/// Tries every address `host` resolves to, in order, sharing what is left
/// of the deadline between the addresses not tried yet, so that one
/// unreachable address cannot use it all up.
async fn connect_tcp(host: &str, port: u16, deadline: Option<tokio::time::Instant>) -> Result<TcpStream, Error> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolved to no address"));
    for (i, addr) in addrs.iter().enumerate() {
        let attempt = TcpStream::connect(addr);
        let result = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
                match tokio::time::timeout(share, attempt).await {
                    Ok(result) => result,
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {addr} timed out"),
                    )),
                }
            }
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

/// The client side of the opening handshake on `io`.
pub(crate) async fn handshake<S>(
    mut io: S,
    request: ClientRequest,
    config: &WebSocketConfig,
    timeout: Option<Duration>,
) -> Result<WebSocketStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut random = OsRandom::new();
    let (mut handshake, bytes) = ClientHandshake::new(request, &mut random, now(), timeout)?;
    io.write_all(&bytes).await?;
    io.flush().await?;
    let mut buf = vec![0; HANDSHAKE_READ];
    loop {
        let read = match handshake.poll_timeout() {
            Some(deadline) => tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), io.read(&mut buf))
                .await
                .ok(),
            None => Some(io.read(&mut buf).await),
        };
        let response = match read {
            None => {
                handshake.handle_timeout(now())?;
                continue;
            }
            Some(Ok(0)) => return Err(handshake.handle_eof().into()),
            Some(Ok(n)) => handshake.handle_read(&buf[..n])?,
            Some(Err(e)) => return Err(Error::from_io(e)),
        };
        if let Some(response) = response {
            let connection = response.into_connection(config.connection.clone(), Box::new(random), now())?;
            return Ok(WebSocketStream::from_connection(io, connection, config));
        }
    }
}
