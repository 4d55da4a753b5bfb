//! tether-driver: the driving loop of tether, written once for every
//! runtime.
//!
//! The sans-IO core [`tether_proto`] knows the protocol; this crate moves
//! bytes, time and events between it and a transport, through the small
//! traits of [`runtime`]: a clock and a timer ([`Runtime`], [`Timer`]),
//! poll-based I/O on a transport ([`RuntimeIo`]), and opening client
//! transports ([`Connect`]). The shells implement them and add only what
//! needs their runtime:
//!
//! - `tether-tokio`: tokio I/O and `tokio::time`, TLS through tokio-rustls,
//!   hyper upgrades;
//! - `tether-futures`: `futures-io` and async-io timers (smol, async-std),
//!   TLS through futures-rustls;
//! - `tether-blocking`: `std::net` (any `Read + Write`), the deadlines as
//!   socket timeouts, TLS through rustls' `StreamOwned`.
//!
//! Everything above the traits is here: [`WebSocketStream`] (a `Stream` and
//! `Sink` of messages, plain methods beside), [`split`](WebSocketStream::split)
//! halves, the piece-by-piece [`MessageReader`], the errors, the settings,
//! the server's opening handshake ([`Server`], [`HttpResponse`]) and the
//! client's ([`ClientBuilder`]).
//!
//! # The driving loop
//!
//! Each connection is the core's [`Connection`](tether_proto::Connection)
//! and [`Driver`], a loop run by whoever polls the connection (no
//! background task):
//!
//! ```text
//!  transport --read--> recv_buffer / handle_received ---+
//!  EOF       --------> handle_eof                       |
//!  timer     --fires-> handle_timeout                   v
//!                                          +--- Connection (core) ---+
//!  app <--Message-- poll_event (until None) <----------+             |
//!  app  --send----> send / ping / close  -------------->+             |
//!  transport <-write-- poll_transmit (all, one write) --+             |
//!  transport <-shutdown- should_close_transport --------+             |
//!  timer     <-arm---- poll_timeout (one timer) --------+-------------+
//! ```
//!
//! # Writing a shell
//!
//! Implement [`Runtime`] and [`RuntimeIo`] on a marker type for your
//! runtime (and [`Connect`] for clients that open their own transports),
//! then name the types for your users: `type WebSocketStream<S> =
//! tether_driver::WebSocketStream<S, MyRuntime>`. `ARCHITECTURE.md` at the
//! root of the repository walks through the three shells.
#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

mod client;
mod driver;
mod error;
pub mod hub;
mod io;
pub mod proxy;
mod random;
mod reader;
pub mod runtime;
mod server;
mod shell;
mod split;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

pub use client::{connect_addrs, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_REDIRECTS};
pub use driver::{Driver, Incoming, Reply, Side};
pub use error::{Error, ErrorKind};
pub use random::OsRandom;
pub use reader::MessageReader;
pub use runtime::{Connect, Runtime, RuntimeIo, Timer};
pub use server::{accept, accept_with, HttpResponse, Server};
pub use split::{ReadHalf, ReuniteError, WriteHalf};
pub use stream::{Received, WebSocketStream};

pub use tether_proto;
#[cfg(feature = "deflate")]
pub use tether_proto::deflate::{DeflateConfig, DeflateParams};
pub use tether_proto::handshake::{Accept, ClientRequest, HandshakeConfig, HandshakeError, Request};
pub use tether_proto::{
    CloseCause, CloseCode, CloseReply, Closed, Config, DataKind, Message, MessageRef, PreparedMessage, ProtocolError,
    Role, SendOptions, State, Stats, Utf8Bytes,
};

/// The local and peer addresses of a runtime's transports, for
/// [`WebSocketStream::local_addr`] and [`WebSocketStream::peer_addr`].
pub trait TransportAddrs<S>: Runtime {
    /// The local address of `io`.
    fn local_addr(io: &S) -> std::io::Result<SocketAddr>;
    /// The peer's address of `io`.
    fn peer_addr(io: &S) -> std::io::Result<SocketAddr>;

    /// What TLS agreed on `io`, if it is a TLS stream (default: `None`).
    #[cfg(feature = "tls")]
    fn tls_info(io: &S) -> Option<tls::TlsInfo> {
        let _ = io;
        None
    }
}

/// The keepalive interval the adapters use by default: 2 minutes, as
/// ASP.NET Core does. A ping goes out once 2 minutes have passed since the
/// later of the last bytes received and the last keepalive ping sent (see
/// [`Config::ping_interval`]).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(120);

/// The idle timeout the adapters use by default: 4 minutes, twice
/// [`DEFAULT_PING_INTERVAL`]. A healthy peer answers the keepalive ping long
/// before; a peer that vanished without closing the transport (no FIN) is
/// noticed after 4 minutes without receiving anything (see
/// [`Config::idle_timeout`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(240);

/// The send timeout the adapters use by default: 30 seconds, as the Windows
/// runtime's WebSocket does. A send (or flush, or close) whose output the
/// transport has not taken a byte of for 30 seconds fails with
/// [`Error::SendTimeout`] and the transport is closed: the peer stopped
/// reading. A slow peer that keeps reading is never cut off (see
/// [`Config::send_timeout`]).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`WebSocketConfig::write_buffer_limit`]: 128 KiB.
pub const DEFAULT_WRITE_BUFFER_LIMIT: usize = 128 * 1024;

/// Default [`WebSocketConfig::read_buffer_size`]: 64 KiB.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 64 * 1024;

/// Settings of a connection: the core's [`Config`] (limits, timers) and the
/// adapter's buffers.
///
/// The default is the core's, with keepalive and an idle timeout:
/// a ping after [`DEFAULT_PING_INTERVAL`] (2 minutes) without receiving
/// anything, and the connection fails ([`Error::IdleTimeout`]) after
/// [`DEFAULT_IDLE_TIMEOUT`] (4 minutes) without receiving anything; and a
/// send timeout: output the peer does not take for [`DEFAULT_SEND_TIMEOUT`]
/// (30 seconds) fails the connection ([`Error::SendTimeout`]). Set
/// `connection.ping_interval`, `connection.idle_timeout` or
/// `connection.send_timeout` to `None` (or `Some(Duration::ZERO)`) to switch
/// any of them off.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// The core's settings: message and frame limits, streaming threshold,
    /// keepalive, idle and close timeouts.
    pub connection: Config,
    /// Bytes queued for the transport past which sending waits. Receiving
    /// stops reading while more than this many bytes of answers to the
    /// peer (pongs) are unwritten: a peer that pings and never reads
    /// cannot grow the queue. The application's own output does not stop
    /// a receiver, so two ends streaming to each other do not stall.
    /// Values above 4 GiB (`u32::MAX` bytes) count as 4 GiB.
    pub write_buffer_limit: usize,
    /// How much room each read asks for (at most 4 GiB, as above). While a
    /// large message arrives, room for the rest of its frame is made at
    /// once (up to 1 MiB more), and each read then takes up to 256 KiB of
    /// it, or this size if larger: what a read brings is unmasked right
    /// after it, while the processor's cache still holds it.
    pub read_buffer_size: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        let mut connection = Config::default();
        connection.ping_interval = Some(DEFAULT_PING_INTERVAL);
        connection.idle_timeout = Some(DEFAULT_IDLE_TIMEOUT);
        connection.send_timeout = Some(DEFAULT_SEND_TIMEOUT);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapters_default_to_a_ping_after_2_minutes_and_an_idle_timeout_of_4() {
        let config = WebSocketConfig::default();
        assert_eq!(config.connection.ping_interval, Some(Duration::from_secs(120)));
        assert_eq!(config.connection.idle_timeout, Some(Duration::from_secs(240)));
        assert_eq!(config.connection.send_timeout, Some(Duration::from_secs(30)));
    }
}
