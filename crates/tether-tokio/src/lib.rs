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
//! This crate holds no protocol logic: each connection is the core's
//! [`Connection`](tether_proto::Connection) and a loop around it, run by
//! whoever polls the connection (no background task):
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
// `Error` is large (a rejection carries its headers and body) so that a
// program can match on `Error::Handshake(HandshakeError::Rejected { .. })`
// directly; errors are the cold path, and boxing would cost that.
#![allow(clippy::result_large_err)]

mod client;
mod driver;
mod error;
#[cfg(feature = "hyper")]
pub mod hyper;
mod random;
mod reader;
mod server;
mod split;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

use std::time::Duration;

pub use client::{client_over, connect, ClientBuilder, ClientStream, DEFAULT_CONNECT_TIMEOUT};
pub use error::Error;
pub use reader::MessageReader;
pub use server::{accept, accept_with, HttpResponse, Server};
pub use split::{ReadHalf, ReuniteError, WriteHalf};
pub use stream::{Received, WebSocketStream};
pub use transport::{MaybeTlsStream, SocketAddrs};

pub use tether_proto;
#[cfg(feature = "deflate")]
pub use tether_proto::deflate::DeflateConfig;
pub use tether_proto::handshake::{Accept, ClientRequest, HandshakeConfig, HandshakeError, Request};
pub use tether_proto::{
    CloseCause, CloseCode, Closed, Config, DataKind, Message, ProtocolError, Role, State, Utf8Bytes,
};

/// The keepalive interval this adapter uses by default: 2 minutes, as
/// ASP.NET Core does.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(120);

/// Default [`WebSocketConfig::write_buffer_limit`]: 128 KiB.
pub const DEFAULT_WRITE_BUFFER_LIMIT: usize = 128 * 1024;

/// Default [`WebSocketConfig::read_buffer_size`]: 64 KiB.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 64 * 1024;

/// Settings of a connection: the core's [`Config`] (limits, timers) and the
/// adapter's buffers.
///
/// The default is the core's, with a keepalive ping every
/// [`DEFAULT_PING_INTERVAL`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// The core's settings: message and frame limits, streaming threshold,
    /// keepalive, idle and close timeouts.
    pub connection: Config,
    /// Bytes queued for the transport past which sending waits (and
    /// receiving stops reading until the queue drains).
    pub write_buffer_limit: usize,
    /// How much room each read asks for.
    pub read_buffer_size: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        let mut connection = Config::default();
        connection.ping_interval = Some(DEFAULT_PING_INTERVAL);
        Self {
            connection,
            write_buffer_limit: DEFAULT_WRITE_BUFFER_LIMIT,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
        }
    }
}

impl WebSocketConfig {
    /// The default settings with the core's `connection` settings.
    pub fn with_connection(connection: Config) -> Self {
        Self {
            connection,
            ..Self::default()
        }
    }
}
