//! tether-blocking: WebSockets on blocking `std::net` sockets (and any
//! `Read + Write`), driven by the sans-IO core [`tether_proto`].
//!
//! Clients ([`connect`], [`ClientBuilder`], `wss://` through rustls'
//! `StreamOwned`), servers ([`accept`], [`accept_with`], [`Server`], TLS
//! with a [`rustls::ServerConnection`](tls::rustls::ServerConnection) in a
//! `StreamOwned`), and one connection type, [`WebSocket`], with plain
//! methods that block: [`recv`](WebSocket::recv), an iterator over
//! messages, [`send`](WebSocket::send), [`feed`](WebSocket::feed),
//! [`close`](WebSocket::close), a [`std::io::Read`] over one message
//! ([`recv_reader`](WebSocket::recv_reader)), and [`split`](WebSocket::split)
//! into a [`Reader`] thread and [`Writer`]s that send from other threads.
//!
//! # The driving loop
//!
//! This crate holds no protocol logic and no driving loop: each connection
//! is the core's [`Connection`](tether_proto::Connection) in the loop of
//! [`tether_driver`], run on the calling thread while a method runs (no
//! background thread). This crate is the glue ([`Blocking`]): the clock,
//! reads and writes that block, and the core's next deadline as the
//! socket's timeout, so that a blocked read returns in time for the timer:
//!
//! ```text
//!  socket --read (SO_RCVTIMEO = next deadline)--> handle_received ---+
//!  EOF    ------------------------------------> handle_eof           |
//!  read timed out -> Pending -> loop again -> timer expired          |
//!                             -> handle_timeout                      v
//!                                                 +--- Connection (core) ---+
//!  app <--Message-- recv / iterator (poll_event) <+                         |
//!  app  --send----> send / feed / ping / close -->+                         |
//!  socket <-write (SO_SNDTIMEO)-- transmit, one vectored write -------------+
//!  socket <-shutdown-- should_close_transport ------------------------------+
//! ```
//!
//! # Example
//!
//! An echo server thread and a client, on loopback:
//!
//! ```
//! use std::net::TcpListener;
//! use tether_blocking::{CloseCode, Message};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let url = format!("ws://{}/", listener.local_addr()?);
//! let server = std::thread::spawn(move || -> Result<(), tether_blocking::Error> {
//!     let (tcp, _) = listener.accept()?;
//!     let mut ws = tether_blocking::accept(tcp)?;
//!     // Echo until the client closes; `feed` queues each answer and the
//!     // next receive writes them before it waits: one write per read.
//!     while let Some(message) = ws.recv() {
//!         ws.feed(message?)?;
//!     }
//!     Ok(())
//! });
//!
//! let mut ws = tether_blocking::connect(&url)?;
//! ws.send(Message::Text("hello".into()))?;
//! assert_eq!(ws.recv().transpose()?, Some(Message::Text("hello".into())));
//! ws.close(CloseCode::NORMAL, "done")?;
//! server.join().expect("the server thread panicked")?;
//! # Ok(()) }
//! ```
//!
//! A client that only listens iterates: `for message in &mut ws { ... }`.
#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

mod client;
mod runtime;
mod server;
mod split;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;
mod websocket;

pub use client::ClientBuilder;
pub use runtime::{block_on, Blocking, BlockingTimer, Transport};
pub use server::Server;
pub use split::{Reader, ReaderMessages, Writer};
pub use transport::{BlockingIo, MaybeTlsStream, NoTimeouts, SplitIo};
pub use websocket::{MessageReader, Messages, WebSocket};

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

use std::net::TcpStream;

/// A client connection opened with [`connect`].
pub type ClientSocket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket connection to a `ws://` or `wss://` URL with the
/// default settings, blocking until it is open (at most the default
/// connect timeout, 60 seconds). See [`ClientBuilder`] for the others.
///
/// ```no_run
/// let mut ws = tether_blocking::connect("ws://127.0.0.1:8080/ws")?;
/// ws.send("hello")?;
/// let reply = ws.recv();
/// # Ok::<_, tether_blocking::Error>(())
/// ```
pub fn connect(url: &str) -> Result<ClientSocket, Error> {
    ClientBuilder::new(url).connect()
}

/// Runs the client handshake for `request` over a transport the caller
/// opened, with the default settings.
pub fn client_over<S: BlockingIo>(stream: S, request: ClientRequest) -> Result<WebSocket<S>, Error> {
    ClientBuilder::from_request(request).connect_over(stream)
}

/// Accepts a WebSocket on `stream` with the default settings, whatever the
/// path. A request that is not a valid WebSocket handshake is answered with
/// the right status (400, 426...) and fails with [`Error::Handshake`].
pub fn accept<S: BlockingIo>(stream: S) -> Result<WebSocket<S>, Error> {
    Server::new().accept(stream)
}

/// Accepts on `stream` as `callback` decides: it sees the request (path,
/// query, headers, `Origin`, offered subprotocols) and returns either the
/// options to accept with or an [`HttpResponse`] to send instead.
///
/// ```no_run
/// use tether_blocking::{Accept, HttpResponse};
/// # fn run(tcp: std::net::TcpStream) -> Result<(), tether_blocking::Error> {
/// let ws = tether_blocking::accept_with(tcp, |request| match request.path() {
///     "/chat" if request.protocols().contains(&"chat.v1") => Ok(Accept::new().subprotocol("chat.v1")),
///     "/chat" => Ok(Accept::new()),
///     _ => Err(HttpResponse::new(http::StatusCode::NOT_FOUND)),
/// })?;
/// # Ok(()) }
/// ```
pub fn accept_with<S, F>(stream: S, callback: F) -> Result<WebSocket<S>, Error>
where
    S: BlockingIo,
    F: FnOnce(&Request) -> Result<Accept, HttpResponse>,
{
    Server::new().accept_with(stream, callback)
}
