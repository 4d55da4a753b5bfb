//! tether-blocking: WebSockets on blocking `std::net` sockets (and any
//! `Read + Write`), driven by the sans-IO core [`tether_proto`].
//!
//! Clients ([`connect`], [`ClientBuilder`], `wss://` through rustls'
//! `StreamOwned`), servers ([`accept`], [`accept_with`], [`Server`], TLS
//! with a [`rustls::ServerConnection`] in a
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
//!
//! # Sending from other threads
//!
//! A blocking read cannot be polled: a thread that waits in `read` while
//! holding the connection's lock would block every sender until the peer
//! speaks. So the halves share the driver behind a `Mutex`, and the lock is
//! never held across a wait for the peer:
//!
//! ```text
//!  Reader thread                          shared: Mutex<Driver>           Writer threads
//!  lock: poll_message (pongs, timers,     transport = the write handle;   lock: queue, write
//!        queued output), deadline()       its reads return Pending        (bounded by the
//!  unlock                                                                  write timeout),
//!  read the read handle, timeout =                                         unlock
//!        the deadline (capped at 250 ms)
//!  lock: handle_read(bytes) / handle_read_end
//! ```
//!
//! - The [`Reader`] reads a second handle on the socket
//!   ([`SplitIo::read_side`]: a cloned `TcpStream`; for TLS the raw socket,
//!   whose records the shared session decrypts under the lock) without the
//!   lock, then locks to hand the bytes to the driver
//!   ([`Driver::handle_read`](tether_driver::Driver::handle_read)) and runs the loop once
//!   ([`Driver::poll_message`](tether_driver::Driver::poll_message)), which answers pings, runs the timers and
//!   writes queued output, and unlocks.
//! - A [`Writer`] locks, queues, writes, and unlocks; if a write waits for
//!   a peer that does not read, it unlocks each time the write timeout
//!   (the next deadline, capped at 250 ms) passes, so the reader gets its
//!   turn.
//! - The read timeout is the driver's next deadline, fetched under the
//!   lock. A writer can move it earlier while the reader waits (a close
//!   starts the close timeout), so the wait is capped at 250 ms: such a
//!   timer fires at most that late.
//! - While more than the write limit of answers to the peer (pongs, the
//!   close reply) waits unwritten, the reader does not read: a peer that
//!   pings and never reads the pongs would otherwise grow the output
//!   without bound. Each turn then only writes (waiting at most the write
//!   timeout) and runs the timers, as the async loops do
//!   ([`Driver::reads_paused`](tether_driver::Driver::reads_paused)).
//! - Dropping the reader turns reads back on in the shared driver, so a
//!   writer's [`close`](Writer::close) can then wait for the close
//!   handshake itself.
//!
//! ```no_run
//! use tether_blocking::CloseCode;
//! # fn main() -> Result<(), tether_blocking::Error> {
//! let ws = tether_blocking::connect("ws://127.0.0.1:9001/")?;
//! let (mut reader, writer) = ws.split()?;
//! let sender = std::thread::spawn(move || -> Result<(), tether_blocking::Error> {
//!     for i in 0..10 {
//!         writer.send(format!("tick {i}"))?;
//!     }
//!     writer.close(CloseCode::NORMAL, "done")
//! });
//! // Ends once the close handshake the writer began is complete.
//! for message in &mut reader {
//!     println!("{:?}", message?);
//! }
//! sender.join().expect("the sender panicked")?;
//! # Ok(()) }
//! ```
//!
//! # Timers through socket timeouts
//!
//! Nothing wakes a blocked thread but its socket. Before every read and
//! write the loop hands its next deadline (keepalive ping, idle timeout,
//! close timeout, linger of unwritten output) to the transport, which sets
//! it as `SO_RCVTIMEO`/`SO_SNDTIMEO` (at least 1 ms). A read or write that
//! times out returns `Pending` to the loop, which comes round, finds the
//! timer expired and hands the time to the core. A timeout that ends
//! before the deadline is always correct (one more round), so the one set
//! is kept while it ends no later than the deadline and no earlier than
//! halfway to it: a busy connection makes no `setsockopt` call per read.
//! Timeouts are the transport's own: [`NoTimeouts`] wraps any `Read +
//! Write` without them, and then timers only fire when data arrives.
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

pub use tether_driver::hub;
pub use tether_driver::proxy;
pub use tether_driver::{tether_proto, Accept, ClientRequest, HandshakeConfig, HandshakeError, Request};
pub use tether_driver::{
    Error, ErrorKind, HttpResponse, Received, Reply, WebSocketConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_REDIRECTS, DEFAULT_PING_INTERVAL, DEFAULT_READ_BUFFER_SIZE, DEFAULT_SEND_TIMEOUT,
    DEFAULT_WRITE_BUFFER_LIMIT,
};
#[cfg(feature = "deflate")]
pub use tether_proto::deflate::{DeflateConfig, DeflateParams};
pub use tether_proto::{
    CloseCause, CloseCode, CloseReply, Closed, Config, DataKind, Message, MessageRef, PreparedMessage, ProtocolError,
    Role, SendOptions, State, Utf8Bytes,
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
