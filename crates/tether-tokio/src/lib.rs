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
//! bytes are queued and unwritten, and receiving stops reading while more
//! than the limit of answers it caused (pongs) are stuck behind a peer that
//! does not read: the application's output stays within the limit plus one
//! message, the answers within the limit plus one read's worth. The
//! application's own queued output never stops a receiver, so two ends
//! that stream to each other through split halves do not stall.
#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

#[cfg(feature = "http2")]
pub mod http2;
#[cfg(feature = "hyper")]
pub mod hyper;
mod runtime;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

use tokio::net::TcpStream;

pub use runtime::{Tokio, TokioTimer};
pub use transport::{MaybeTlsStream, SocketAddrs};

tether_driver::async_shell_api!(runtime: Tokio, client_stream: MaybeTlsStream<TcpStream>);
