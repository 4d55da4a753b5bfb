//! tether-tokio: WebSockets on tokio, driven by the sans-IO core
//! [`tether_proto`].
//!
//! Clients ([`connect`], [`ClientBuilder`], `wss://` through rustls),
//! servers ([`accept`], [`accept_with`], TLS through [`tls::TlsAcceptor`],
//! hyper upgrades with the `hyper` feature), and one connection type,
//! [`WebSocketStream`]: a [`Stream`](futures_core::Stream) of messages and a
//! [`Sink`](futures_sink::Sink) of messages, with plain async methods beside.
//!
//! # The driving loop
//!
//! This crate holds no protocol logic and no driving loop: each connection
//! is the core's [`Connection`](tether_proto::Connection) and the loop of
//! [`tether_driver`] around it, run by whoever polls the connection (no
//! background task). This crate is the tokio glue ([`Tokio`]: the clock, a
//! timer, `AsyncRead`/`AsyncWrite`, TCP and TLS connect):
//!
//! ```text
//!  socket --read--> recv_buffer / handle_received ---+
//!  EOF    --------> handle_eof                       |
//!  timer  --fires-> handle_timeout                   v
//!                                        +--- Connection (core) ---+
//!  app <--Message-- poll_event (until None) <--------+             |
//!  app  --send----> send / ping / close  ----------->+             |
//!  socket <-write-- poll_transmit (all, one write) --+             |
//!  socket <-shutdown- should_close_transport --------+             |
//!  timer  <-arm---- poll_timeout (one tokio Sleep) --+-------------+
//! ```
//!
//! # Example
//!
//! An echo server and a client, on loopback:
//!
//! ```
//! use futures_util::{SinkExt, StreamExt};
//! use tether_tokio::{CloseCode, Message};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/", listener.local_addr()?);
//! tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut ws = tether_tokio::accept(tcp).await?;
//!     // Echo until the client closes; `feed` queues each answer and `next`
//!     // writes them before it waits: one write per read.
//!     while let Some(message) = ws.next().await {
//!         ws.feed(message?).await?;
//!     }
//!     Ok::<_, tether_tokio::Error>(())
//! });
//!
//! let mut ws = tether_tokio::connect(&url).await?;
//! ws.send(Message::Text("hello".into())).await?;
//! assert_eq!(ws.recv().await.transpose()?, Some(Message::Text("hello".into())));
//! ws.close(CloseCode::NORMAL, "done").await?;
//! # Ok(()) }
//! ```
//!
//! # Backpressure
//!
//! Sending waits while more than [`WebSocketConfig::write_buffer_limit`]
//! bytes are queued and unwritten, and receiving stops reading while the
//! answers it caused (pongs) are stuck behind a peer that does not read:
//! memory stays bounded by the limit plus one message.
#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

#[cfg(feature = "hyper")]
pub mod hyper;
mod runtime;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use runtime::{Tokio, TokioTimer};
pub use transport::{MaybeTlsStream, SocketAddrs};

pub use tether_driver::{
    Error, HttpResponse, Received, WebSocketConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PING_INTERVAL,
    DEFAULT_READ_BUFFER_SIZE, DEFAULT_WRITE_BUFFER_LIMIT,
};
pub use tether_driver::{tether_proto, Accept, ClientRequest, HandshakeConfig, HandshakeError, Request};
#[cfg(feature = "deflate")]
pub use tether_proto::deflate::DeflateConfig;
pub use tether_proto::{
    CloseCause, CloseCode, Closed, Config, DataKind, Message, ProtocolError, Role, SendOptions, State, Utf8Bytes,
};

/// An open WebSocket connection on a tokio transport `S`: a
/// [`Stream`](futures_core::Stream) and [`Sink`](futures_sink::Sink) of
/// messages, with plain async methods beside. See
/// [`tether_driver::WebSocketStream`] for every method.
pub type WebSocketStream<S> = tether_driver::WebSocketStream<S, Tokio>;
/// The receiving half of a split [`WebSocketStream`].
pub type ReadHalf<S> = tether_driver::ReadHalf<S, Tokio>;
/// The sending half of a split [`WebSocketStream`].
pub type WriteHalf<S> = tether_driver::WriteHalf<S, Tokio>;
/// The halves given to `reunite` came from different connections.
pub type ReuniteError<S> = tether_driver::ReuniteError<S, Tokio>;
/// One received message as a [`tokio::io::AsyncRead`], piece by piece.
pub type MessageReader<'a, S> = tether_driver::MessageReader<'a, S, Tokio>;
/// Settings of accepted connections; see [`tether_driver::Server`].
pub type Server = tether_driver::Server<Tokio>;
/// Settings of a client connection; see [`tether_driver::ClientBuilder`].
pub type ClientBuilder = tether_driver::ClientBuilder<Tokio>;
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

/// Accepts a WebSocket on `stream` with the default settings, whatever the
/// path. A request that is not a valid WebSocket handshake (a plain GET, a
/// wrong version) is answered with the right status (400, 426...) and
/// fails with [`Error::Handshake`].
pub async fn accept<S>(stream: S) -> Result<WebSocketStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tether_driver::accept(stream).await
}

/// Accepts on `stream` as `callback` decides: it sees the request (path,
/// query, headers, `Origin`, offered subprotocols with
/// [`Request::protocols`]) and returns either the options to accept with (a
/// subprotocol, response headers) or an [`HttpResponse`] to send instead.
///
/// ```no_run
/// use tether_tokio::{Accept, HttpResponse};
/// # async fn run(tcp: tokio::net::TcpStream) -> Result<(), tether_tokio::Error> {
/// let ws = tether_tokio::accept_with(tcp, |request| match request.path() {
///     "/chat" if request.protocols().contains(&"chat.v1") => Ok(Accept::new().subprotocol("chat.v1")),
///     "/chat" => Ok(Accept::new()),
///     _ => Err(HttpResponse::new(http::StatusCode::NOT_FOUND)),
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn accept_with<S, F>(stream: S, callback: F) -> Result<WebSocketStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> Result<Accept, HttpResponse>,
{
    tether_driver::accept_with(stream, callback).await
}
