//! tether-futures: WebSockets on futures-io runtimes (smol, async-std),
//! driven by the sans-IO core [`tether_proto`].
//!
//! Clients ([`connect`], [`ClientBuilder`], `wss://` through
//! futures-rustls), servers ([`accept`], [`accept_with`], TLS through
//! [`tls::TlsAcceptor`]), and one connection type, [`WebSocketStream`]: a
//! [`Stream`](futures_core::Stream) of messages and a
//! [`Sink`](futures_sink::Sink) of messages, with plain async methods
//! beside, over any [`futures_io::AsyncRead`] + [`futures_io::AsyncWrite`]
//! transport.
//!
//! # Which executor
//!
//! The library needs none: its I/O is futures-io's, its timers and TCP
//! sockets are async-io's (`async_io::Timer`, async-net), the reactor that
//! smol and async-std both run on. Use it on **smol** (recommended), or on
//! async-std 1.13, which is discontinued upstream (RUSTSEC-2025-0052) and
//! itself points to smol; the `async-std` feature adds only the addresses
//! ([`TransportAddrs`]) of `async_std::net::TcpStream`, for
//! [`peer_addr`](WebSocketStream::peer_addr) on what its listener accepts.
//!
//! # The driving loop
//!
//! This crate holds no protocol logic and no driving loop: each connection
//! is the core's [`Connection`](tether_proto::Connection) and the loop of
//! [`tether_driver`] around it, run by whoever polls the connection (no
//! background task). This crate is the futures-io glue ([`FuturesIo`]: the
//! clock, an async-io timer, `AsyncRead`/`AsyncWrite`, TCP and TLS
//! connect):
//!
//! ```text
//!  socket --read--> recv_buffer / handle_received ---+
//!  EOF    --------> handle_eof                       |
//!  timer  --fires-> handle_timeout                   v
//!                                        +--- Connection (core) ---+
//!  app <--Message-- poll_event (until None) <--------+             |
//!  app  --send----> send / ping / close  ----------->+             |
//!  socket <-write-- poll_transmit (all, one write) --+             |
//!  socket <-close--- should_close_transport ---------+             |
//!  timer  <-arm---- poll_timeout (one async-io Timer)+-------------+
//! ```
//!
//! # Example
//!
//! An echo server and a client, on loopback, on smol:
//!
//! ```
//! use tether_futures::{CloseCode, Message};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let url = format!("ws://{}/", listener.local_addr()?);
//!     let server = smol::spawn(async move {
//!         let (tcp, _) = listener.accept().await?;
//!         let mut ws = tether_futures::accept(tcp).await?;
//!         // Echo until the client closes; `feed` queues each answer and
//!         // `recv` writes them before it waits: one write per read.
//!         while let Some(message) = ws.recv().await {
//!             ws.feed(message?).await?;
//!         }
//!         Ok::<_, tether_futures::Error>(())
//!     });
//!
//!     let mut ws = tether_futures::connect(&url).await?;
//!     ws.send(Message::Text("hello".into())).await?;
//!     assert_eq!(ws.recv().await.transpose()?, Some(Message::Text("hello".into())));
//!     ws.close(CloseCode::NORMAL, "done").await?;
//!     server.await?;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! On async-std the same code runs with `async_std::task::block_on`,
//! `async_std::net::TcpListener` and `async_std::task::spawn`.
//!
//! A message can also be read piece by piece as it arrives, as a
//! [`futures_io::AsyncRead`] ([`MessageReader`]):
//!
//! ```no_run
//! use futures_util::io::AsyncReadExt;
//! # async fn run(ws: &mut tether_futures::ClientStream) -> Result<(), tether_futures::Error> {
//! if let Some(reader) = ws.recv_reader().await {
//!     let mut reader = reader?;
//!     let mut piece = [0u8; 16 * 1024];
//!     loop {
//!         let n = reader.read(&mut piece).await?;
//!         if n == 0 {
//!             break; // the end of the message
//!         }
//!         // use &piece[..n]
//!     }
//! }
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

mod runtime;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

use async_net::TcpStream;
use futures_io::{AsyncRead, AsyncWrite};

pub use runtime::{AsyncIoTimer, FuturesIo};
pub use transport::MaybeTlsStream;

pub use tether_driver::{
    Error, HttpResponse, Received, WebSocketConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PING_INTERVAL,
    DEFAULT_READ_BUFFER_SIZE, DEFAULT_WRITE_BUFFER_LIMIT,
};
pub use tether_driver::{tether_proto, Accept, TransportAddrs, ClientRequest, HandshakeConfig, HandshakeError, Request};
#[cfg(feature = "deflate")]
pub use tether_proto::deflate::DeflateConfig;
pub use tether_proto::{
    CloseCause, CloseCode, Closed, Config, DataKind, Message, ProtocolError, Role, SendOptions, State, Utf8Bytes,
};

/// An open WebSocket connection on a futures-io transport `S`: a
/// [`Stream`](futures_core::Stream) and [`Sink`](futures_sink::Sink) of
/// messages, with plain async methods beside. See
/// [`tether_driver::WebSocketStream`] for every method.
pub type WebSocketStream<S> = tether_driver::WebSocketStream<S, FuturesIo>;
/// The receiving half of a split [`WebSocketStream`].
pub type ReadHalf<S> = tether_driver::ReadHalf<S, FuturesIo>;
/// The sending half of a split [`WebSocketStream`].
pub type WriteHalf<S> = tether_driver::WriteHalf<S, FuturesIo>;
/// The halves given to `reunite` came from different connections.
pub type ReuniteError<S> = tether_driver::ReuniteError<S, FuturesIo>;
/// One received message as a [`futures_io::AsyncRead`], piece by piece.
pub type MessageReader<'a, S> = tether_driver::MessageReader<'a, S, FuturesIo>;
/// Settings of accepted connections; see [`tether_driver::Server`].
pub type Server = tether_driver::Server<FuturesIo>;
/// Settings of a client connection; see [`tether_driver::ClientBuilder`].
pub type ClientBuilder = tether_driver::ClientBuilder<FuturesIo>;
/// A client connection opened with [`connect`].
pub type ClientStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket connection to a `ws://` or `wss://` URL with the
/// default settings. See [`ClientBuilder`] for the others.
///
/// ```no_run
/// # async fn run() -> Result<(), tether_futures::Error> {
/// let mut ws = tether_futures::connect("ws://127.0.0.1:8080/ws").await?;
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
/// use tether_futures::{Accept, HttpResponse};
/// # async fn run(tcp: smol::net::TcpStream) -> Result<(), tether_futures::Error> {
/// let ws = tether_futures::accept_with(tcp, |request| match request.path() {
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
