//! The adapter matrix: each adapter's client against each adapter's server
//! over loopback, proving the shells equal.
//!
//! A client is driven through [`Ws`], one synchronous interface over every
//! adapter (the async ones run each call on their executor), so that each
//! scenario is written once. A server is an echo server of one adapter on
//! its own thread, which reports how each connection ended.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

/// The README's Rust examples, compiled (and the self-contained ones run) as
/// doc tests: the README is included, not copied.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;

pub mod adapters;
pub mod scenario;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tether_driver::tls::rustls::ClientConfig;
use tether_driver::{
    CloseCode, Closed, DataKind, Error, HandshakeConfig, HttpResponse, Message, Received, WebSocketConfig,
};

/// The bound on any one step of a scenario.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The adapters under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// `tether-tokio`.
    Tokio,
    /// `tether-futures` on smol.
    Smol,
    /// `tether-futures` on async-std.
    AsyncStd,
    /// `tether-blocking`.
    Blocking,
    /// `tether-tokio` over HTTP/2 (RFC 8441): for the scenario matrix only
    /// (not in [`Adapter::ALL`]: the raw-TCP batteries speak HTTP/1.1).
    TokioHttp2,
    /// `tether-compio` (io_uring): the scenario matrix, plain TCP (the shell
    /// has no TLS yet), not in [`Adapter::ALL`].
    Compio,
    /// `tether-mio` (one event loop with callbacks): a server only, for the
    /// bad-input battery; not in [`Adapter::ALL`] nor in the scenario
    /// matrix (it has no client).
    Mio,
}

impl Adapter {
    /// Every adapter, each runtime of `tether-futures` counted apart.
    pub const ALL: &'static [Self] = &[Self::Tokio, Self::Smol, Self::AsyncStd, Self::Blocking];
}

/// How a server accepts and a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// permessage-deflate offered by the client and accepted by the server.
    pub deflate: bool,
    /// `wss://` with a certificate made for the test.
    pub tls: bool,
    /// Keepalive, idle and send timeouts of the server and the client
    /// (default: all off, see [`adapters::config`]).
    pub timers: Option<Timers>,
    /// Set through the builders' `read_buffer_size` (default: not called).
    pub read_buffer_size: Option<usize>,
}

/// `ping_interval`, `idle_timeout` and `send_timeout` of both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// `Config::ping_interval`.
    pub ping_interval: Option<Duration>,
    /// `Config::idle_timeout`.
    pub idle_timeout: Option<Duration>,
    /// `Config::send_timeout`.
    pub send_timeout: Option<Duration>,
}

impl Timers {
    /// All three off.
    pub const OFF: Self = Self {
        ping_interval: None,
        idle_timeout: None,
        send_timeout: None,
    };
}

/// One WebSocket client connection, whatever its adapter.
pub trait Ws {
    /// Sends a whole message.
    fn send(&mut self, message: Message) -> Result<(), Error>;
    /// Sends one frame of a fragmented message.
    fn send_fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), Error>;
    /// Sends a ping.
    fn ping(&mut self, payload: &[u8]) -> Result<(), Error>;
    /// The next message, ping or pong; `None` after a clean close.
    fn recv_event(&mut self) -> Option<Result<Received, Error>>;
    /// Closes with `code` and `reason` and waits for the end.
    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error>;
    /// How the connection ended.
    fn close_info(&self) -> Option<Closed>;
    /// The negotiated extensions.
    fn extensions(&self) -> Vec<String>;
    /// What the connection tells about itself: statistics, addresses,
    /// TLS, agreed permessage-deflate parameters.
    fn facts(&self) -> Facts;
}

/// What a connection tells about itself (`stats`, `local_addr`,
/// `peer_addr`, `tls_info`, `deflate_params`), the same on every adapter.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The core's counters.
    pub stats: tether_driver::Stats,
    /// The local address.
    pub local_addr: Option<SocketAddr>,
    /// The peer's address.
    pub peer_addr: Option<SocketAddr>,
    /// What TLS agreed, over TLS.
    pub tls: Option<tether_driver::tls::TlsInfo>,
    /// The permessage-deflate parameters, if negotiated.
    pub deflate: Option<tether_driver::DeflateParams>,
}

/// A running echo server of one adapter. Each connection's end is sent on
/// `ends`. Stopped when dropped (its thread is detached; it holds only its
/// listener).
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How each connection ended, as the server saw it.
    pub ends: mpsc::Receiver<ServerEnd>,
}

/// How a server connection ended.
#[derive(Debug, Clone)]
pub struct ServerEnd {
    /// The close information of the connection.
    pub closed: Option<Closed>,
    /// The error that ended it, if not a clean close.
    pub error: Option<String>,
    /// What the connection told about itself: addresses, TLS and deflate
    /// parameters as it opened, statistics as it ended.
    pub facts: Facts,
}

impl EchoServer {
    /// The URL of its echo endpoint.
    pub fn url(&self, options: Options) -> String {
        let scheme = if options.tls { "wss" } else { "ws" };
        // The test certificate is made for "localhost".
        let host = if options.tls {
            "localhost".to_owned()
        } else {
            self.addr.ip().to_string()
        };
        format!("{scheme}://{host}:{}/echo", self.addr.port())
    }

    /// The end of the next connection, within [`STEP_TIMEOUT`].
    pub fn next_end(&self) -> ServerEnd {
        self.ends
            .recv_timeout(STEP_TIMEOUT)
            .expect("the server reports every connection's end")
    }
}

/// The text message that asks the echo server to close with this code and
/// reason instead of echoing.
pub fn close_request(code: u16, reason: &str) -> Message {
    Message::Text(format!("close-me {code} {reason}").into())
}

/// The text message that asks the echo server to answer with
/// [`compressible`] twice: first with `SendOptions::uncompressed()`, then
/// with a plain send.
pub const TWICE_REQUEST: &str = "send-twice";

/// A message permessage-deflate shrinks a lot.
pub fn compressible() -> Message {
    Message::Text("secret=hunter2; ".repeat(64).into())
}

/// Parses a [`close_request`].
pub fn parse_close_request(message: &Message) -> Option<(CloseCode, String)> {
    let Message::Text(text) = message else { return None };
    let rest = text.as_str().strip_prefix("close-me ")?;
    let (code, reason) = rest.split_once(' ')?;
    Some((CloseCode::from(code.parse::<u16>().ok()?), reason.to_owned()))
}

/// Starts `adapter`'s echo server.
pub fn start_server(adapter: Adapter, options: Options) -> EchoServer {
    match adapter {
        Adapter::Tokio => adapters::tokio::start_server(options),
        Adapter::Smol => adapters::futures::start_server(adapters::futures::Exec::Smol, options),
        Adapter::AsyncStd => adapters::futures::start_server(adapters::futures::Exec::AsyncStd, options),
        Adapter::Blocking => adapters::blocking::start_server(options),
        Adapter::TokioHttp2 => adapters::tokio::start_h2_server(options),
        Adapter::Compio => adapters::compio::start_server(options),
        Adapter::Mio => panic!("{adapter:?} runs the bad-input battery only"),
    }
}

/// Connects `adapter`'s client to `server`.
pub fn connect(adapter: Adapter, server: &EchoServer, options: Options) -> Box<dyn Ws> {
    let url = server.url(options);
    match adapter {
        Adapter::Tokio => adapters::tokio::connect(&url, options),
        Adapter::Smol => adapters::futures::connect(adapters::futures::Exec::Smol, &url, options),
        Adapter::AsyncStd => adapters::futures::connect(adapters::futures::Exec::AsyncStd, &url, options),
        Adapter::Blocking => adapters::blocking::connect(&url, options),
        Adapter::TokioHttp2 => adapters::tokio::connect_h2(&url, options),
        Adapter::Compio => adapters::compio::connect(&url, options),
        Adapter::Mio => panic!("{adapter:?} has no client"),
    }
}

/// A client's settings for [`try_connect`], where a test needs more than
/// [`Options`].
#[derive(Clone, Default)]
pub struct ClientSettings {
    /// The connection settings (default: [`adapters::config`] of the
    /// default options).
    pub config: Option<WebSocketConfig>,
    /// The connect timeout (default: the builder's).
    pub connect_timeout: Option<Duration>,
    /// The TLS configuration for `wss://` (default: the builder's, with the
    /// platform's roots).
    pub tls_config: Option<Arc<ClientConfig>>,
    /// TLS settings through the builder's `tls` (roots from PEM, a client
    /// certificate, ALPN...).
    pub tls: Option<tether_driver::tls::TlsClient>,
    /// Headers of the opening handshake.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `max_redirects` (default: the builder's).
    pub max_redirects: Option<usize>,
    /// `allow_insecure_redirects`.
    pub allow_insecure_redirects: bool,
    /// A proxy set with the builder's `proxy`.
    pub proxy: Option<tether_driver::proxy::Proxy>,
    /// Environment variables for `proxy_from_env_with` (when given).
    pub proxy_env: Option<Vec<(String, String)>>,
}

impl ClientSettings {
    /// The driver's builder for `url` with these settings: what every
    /// adapter's client is built from (the tokio and futures builders are
    /// the driver's; the blocking one wraps it).
    pub fn builder<R: tether_driver::Runtime>(self, url: &str) -> tether_driver::ClientBuilder<R> {
        let mut builder = tether_driver::ClientBuilder::<R>::new(url)
            .config(self.config.unwrap_or_else(|| adapters::config(Options::default())));
        if let Some(timeout) = self.connect_timeout {
            builder = builder.connect_timeout(Some(timeout));
        }
        if let Some(tls) = self.tls_config {
            builder = builder.tls_config(tls);
        }
        if let Some(tls) = self.tls {
            builder = builder.tls(tls);
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        if let Some(max) = self.max_redirects {
            builder = builder.max_redirects(max);
        }
        if let Some(proxy) = self.proxy {
            builder = builder.proxy(proxy);
        }
        if let Some(vars) = self.proxy_env {
            let vars: std::collections::HashMap<String, String> = vars.into_iter().collect();
            builder = builder.proxy_from_env_with(move |name| vars.get(name).cloned());
        }
        builder.allow_insecure_redirects(self.allow_insecure_redirects)
    }
}

/// One `#[test]` per adapter for each function named, each called with its
/// [`Adapter`]: `mod tokio { fn name() }`, `mod smol`, `mod async_std`,
/// `mod blocking`.
#[macro_export]
macro_rules! every_adapter {
    ($($name:ident),* $(,)?) => {
        mod tokio {
            $(#[test] fn $name() { super::$name($crate::Adapter::Tokio); })*
        }
        mod smol {
            $(#[test] fn $name() { super::$name($crate::Adapter::Smol); })*
        }
        mod async_std {
            $(#[test] fn $name() { super::$name($crate::Adapter::AsyncStd); })*
        }
        mod blocking {
            $(#[test] fn $name() { super::$name($crate::Adapter::Blocking); })*
        }
    };
}

/// Connects `adapter`'s client to `url`, returning the error instead of
/// panicking.
pub fn try_connect(adapter: Adapter, url: &str, settings: ClientSettings) -> Result<Box<dyn Ws>, Error> {
    match adapter {
        Adapter::Tokio => adapters::tokio::try_connect(url, settings),
        Adapter::Smol => adapters::futures::try_connect(adapters::futures::Exec::Smol, url, settings),
        Adapter::AsyncStd => adapters::futures::try_connect(adapters::futures::Exec::AsyncStd, url, settings),
        Adapter::Blocking => adapters::blocking::try_connect(url, settings),
        Adapter::TokioHttp2 | Adapter::Compio => panic!("{adapter:?} runs the scenario matrix only"),
        Adapter::Mio => panic!("{adapter:?} runs the bad-input battery only"),
    }
}

/// Runs `adapter`'s server handshake on an accepted TCP connection with
/// `handshake` settings; `answer`, when given, is the plain HTTP response
/// the application sends instead of accepting. Returns how it ended: `Ok`
/// with the connection's first event's error if it was accepted (then
/// dropped at once), or the accept's error.
pub fn try_accept(
    adapter: Adapter,
    tcp: std::net::TcpStream,
    handshake: HandshakeConfig,
    answer: Option<HttpResponse>,
) -> Result<(), Error> {
    match adapter {
        Adapter::Tokio => adapters::tokio::try_accept(tcp, handshake, answer),
        Adapter::Smol => adapters::futures::try_accept(adapters::futures::Exec::Smol, tcp, handshake, answer),
        Adapter::AsyncStd => adapters::futures::try_accept(adapters::futures::Exec::AsyncStd, tcp, handshake, answer),
        Adapter::Blocking => adapters::blocking::try_accept(tcp, handshake, answer),
        Adapter::TokioHttp2 | Adapter::Compio => panic!("{adapter:?} runs the scenario matrix only"),
        Adapter::Mio => panic!("{adapter:?} runs the bad-input battery only"),
    }
}
