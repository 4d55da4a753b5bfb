//! tether-proto: the sans-IO WebSocket protocol core of tether.
//!
//! This crate knows RFC 6455 and nothing of sockets, runtimes or clocks. It
//! turns received bytes into [`Event`]s and commands into bytes to transmit;
//! time comes in as an [`Instant`](std::time::Instant) argument and leaves as
//! a deadline; randomness (masking keys, `Sec-WebSocket-Key`) comes from an
//! injected [`RandomSource`]. The runtime adapters (tokio, futures-io,
//! blocking `std::net`) are loops around it, and so is anything you build on
//! a transport of your own.
//!
//! # The driving loop
//!
//! ```text
//!              +------------------------- Connection -------------------------+
//!  socket ---> | handle_read(bytes, now)    handle_eof(now)  handle_timeout(now)| inputs
//!  app    ---> | send(..)  send_fragment(..)  ping(..)  close(code, reason, now)| commands
//!              |                                                               |
//!  app    <--- | poll_event() -> Message | Fragment | Ping | Pong | Closed     | outputs, drained
//!  socket <--- | transmit_slices(..) + advance_transmit(n)                     | after every input
//!              | should_close_transport()  output_abandoned()                  | or command
//!  timer  <--- | poll_timeout() -> next deadline                               |
//!              +---------------------------------------------------------------+
//! ```
//!
//! After every input or command, drain the outputs in this order:
//! 1. [`Connection::poll_event`] until `None`, handing events to the
//!    application (which may send in reply). Received bytes are parsed here, one
//!    event at a time, so a reply to a message is queued before the close
//!    frame that a later, invalid frame of the same read causes;
//! 2. [`Connection::transmit_slices`]: write the slices it offers (one
//!    vectored write carries the replies to everything one read delivered),
//!    then [`Connection::advance_transmit`] by what the transport took. The
//!    output stays in the connection until it is written, so the adapter
//!    keeps no queue of its own and the connection knows what is unwritten;
//! 3. when [`Connection::should_close_transport`] says so and
//!    [`pending_transmit`](Connection::pending_transmit) is 0, close the
//!    transport. If the peer stops reading, the connection gives up the
//!    unwritten output on a deadline of its own and says so with
//!    [`Connection::output_abandoned`];
//! 4. [`Connection::poll_timeout`]: arm one timer; when it fires, call
//!    [`Connection::handle_timeout`].
//!
//! To read without a copy, read the transport straight into
//! [`Connection::recv_buffer_mut`] (an append-only [`RecvBuf`]) and call
//! [`Connection::handle_received`] instead of
//! [`handle_read`](Connection::handle_read).
//!
//! Messages streamed as [`Event::Fragment`]s can be put back together with
//! a [`Reassembler`], which does not validate text a second time.
//!
//! The end of the connection is kept: [`Connection::closed`] returns the
//! same [`Closed`] as [`Event::Closed`], and [`Closed::is_clean`] tells a
//! completed close handshake from an error.
//!
//! The opening handshake runs before a [`Connection`] exists, with the push
//! parsers of the [`handshake`] module, which hand over any bytes that
//! arrived behind the handshake so no frame is lost.
//!
//! Compression (permessage-deflate, RFC 7692, the default `deflate` cargo
//! feature) is negotiated by the handshake and runs inside the connection as
//! an [`Extension`]; see the [`deflate`] module. It is opt-in on servers.
//!
//! # Example
//!
//! A client and a server wired to each other in memory; an adapter does the
//! same with a socket in between.
//!
//! ```
//! use std::time::Instant;
//! use tether_proto::{CloseCode, Config, Connection, Event, Message, SeededRandom};
//!
//! /// Moves everything `from` wants to send into `to`.
//! fn pump(from: &mut Connection, to: &mut Connection, now: Instant) {
//!     let mut written = 0;
//!     for chunk in from.transmit_chunks() {
//!         to.handle_read(chunk, now);
//!         written += chunk.len();
//!     }
//!     from.advance_transmit(written);
//! }
//!
//! let now = Instant::now();
//! // SeededRandom is for tests: give real clients a cryptographically secure source.
//! let mut client = Connection::client(Config::default(), Box::new(SeededRandom::new(1)), now);
//! let mut server = Connection::server(Config::default(), now);
//!
//! client.send_text("hello").unwrap();
//! pump(&mut client, &mut server, now);
//!
//! // An echo server: answer every message with itself.
//! while let Some(event) = server.poll_event() {
//!     if let Event::Message(message) = event {
//!         server.send(message).unwrap();
//!     }
//! }
//! pump(&mut server, &mut client, now);
//! assert_eq!(client.poll_event(), Some(Event::Message(Message::Text("hello".into()))));
//!
//! // The close handshake: the client starts it, the server answers and
//! // closes the transport first.
//! client.close(CloseCode::NORMAL, "bye", now).unwrap();
//! pump(&mut client, &mut server, now);
//! assert!(matches!(server.poll_event(), Some(Event::Closed(c)) if c.reason == "bye"));
//! pump(&mut server, &mut client, now); // the server's answer
//! assert!(server.should_close_transport());
//! assert!(matches!(client.poll_event(), Some(Event::Closed(c)) if c.code == CloseCode::NORMAL));
//! client.handle_eof(now); // the server closed the transport
//! assert!(client.should_close_transport());
//! ```
#![warn(missing_docs)]

mod close;
mod config;
mod connection;
#[cfg(feature = "deflate")]
pub mod deflate;
mod error;
pub mod extension;
mod frame;
pub mod handshake;
mod mask;
mod message;
mod prepared;
mod random;
mod reassemble;
mod spare;
mod utf8;

/// Framing, masking and UTF-8 validation, for tether's own benches and fuzz
/// targets: **not** part of the public API and not covered by semver. They
/// exist only with the `unstable-internals` cargo feature, which nothing but
/// those crates should enable.
#[cfg(feature = "unstable-internals")]
#[doc(hidden)]
pub mod __internal {
    /// Frame headers (RFC 6455 section 5.2).
    pub mod frame {
        pub use crate::frame::*;
    }
    /// Masking (RFC 6455 section 5.3).
    pub mod mask {
        pub use crate::mask::*;
    }
    /// UTF-8 validation (RFC 6455 section 8.1).
    pub mod utf8 {
        pub use crate::utf8::*;
    }
}

pub use close::{CloseCode, CloseFrame, CloseReply, InvalidClose, MAX_REASON_LEN};
pub use config::Config;
pub use connection::{CloseCause, Closed, Connection, Event, Outbox, RecvBuf, Role, SendOptions, State, Stats};
pub use error::{ProtocolError, SendError};
pub use extension::Extension;
pub use message::{DataKind, Fragment, Message, MessageRef, Utf8Bytes};
pub use prepared::PreparedMessage;
pub use random::{RandomSource, SeededRandom};
pub use reassemble::Reassembler;
