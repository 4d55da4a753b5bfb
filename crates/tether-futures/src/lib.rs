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
//! sockets are async-io's (`async_io::Timer`, [`TcpStream`] over
//! `Async<std::net::TcpStream>`), the reactor that smol and async-std both
//! run on. Use it on **smol** (recommended), or on
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
//!     // smol's `Async<TcpListener>`, its streams in tether's `TcpStream`:
//!     // about 0.6 KiB less per idle connection than `smol::net`'s streams
//!     // (async-net), which work too.
//!     let listener = smol::Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0))?;
//!     let url = format!("ws://{}/", listener.get_ref().local_addr()?);
//!     let server = smol::spawn(async move {
//!         let (tcp, _) = listener.accept().await?;
//!         let mut ws = tether_futures::accept(tether_futures::TcpStream::from(tcp)).await?;
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
//! `async_std::net::TcpListener` (its streams go to `accept` as they are)
//! and `async_std::task::spawn`.
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
//! bytes are queued and unwritten, and receiving stops reading while more
//! than the limit of answers it caused (pongs) are stuck behind a peer that
//! does not read: the application's output stays within the limit plus one
//! message, the answers within the limit plus one read's worth. The
//! application's own queued output never stops a receiver, so two ends
//! that stream to each other through split halves do not stall.
#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

mod runtime;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

pub use runtime::{AsyncIoTimer, FuturesIo};
pub use transport::{MaybeTlsStream, TcpStream};

pub use tether_driver::TransportAddrs;

tether_driver::async_shell_api!(runtime: FuturesIo, client_stream: MaybeTlsStream<TcpStream>);
