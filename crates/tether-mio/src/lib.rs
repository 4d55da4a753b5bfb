//! tether-mio: a WebSocket server as one event loop on [mio], driven by
//! the sans-IO core [`tether_proto`].
//!
//! The other shells (tokio, smol, async-std, blocking, compio) give each
//! connection a task or a thread and a stream to `recv` from. This one is
//! written the way uWebSockets is: one thread waits on one poll for every
//! socket, reads each ready socket, and hands the messages a read delivered
//! to the [`Handler`]'s callbacks in place, in the receive buffer, where the
//! answers are queued and written with one write per socket and wake-up.
//! There is no task, no waker and no channel per connection; a connection
//! that waits holds no buffer (receive buffers are lent by the thread while
//! a socket is read and handed back once it has nothing left in them).
//!
//! It is for servers that want the least CPU per message: use it when a
//! callback API fits (echo, fan-out, game and market-data servers). For
//! clients, TLS and code that wants `async`, use one of the other shells.
//!
//! # The loop
//!
//! ```text
//!  listener --accept--> opening handshake (push parser) --Handler::accept--> 101 / HTTP answer
//!  socket   --readable--> read into the connection's buffer (one lent by the loop's thread)
//!           --> Handler::message for every message of the read, in place (lend_messages)
//!           --> one (vectored) write of every answer; the rest waits for writable
//!           --> Handler::drain once it is all written, if asked (Socket::request_drain)
//!  timers   --> one heap of deadlines (keepalive, idle, send, close, handshake timeouts)
//!  Handle   --> sends, closes and stop from other threads (a mio Waker)
//! ```
//!
//! A connection whose unwritten output passes
//! [`WebSocketConfig::write_buffer_limit`] is not read until the peer takes
//! it below: a peer that sends and never reads cannot grow the server's
//! memory; a handler that streams to a slow reader keeps its own output
//! bounded with [`Socket::buffered_amount`] and [`Handler::drain`].
//! Settings are the other shells' ([`WebSocketConfig`]): keepalive ping
//! every 2 minutes, idle timeout 4 minutes, send timeout 30 seconds.
//!
//! # Example
//!
//! An echo server on a path, other paths answered with 400:
//!
//! ```no_run
//! use tether_mio::{Accept, Handler, HttpResponse, MessageRef, Request, Server, Socket, StatusCode};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn accept(&mut self, request: &Request, _peer: std::net::SocketAddr) -> Result<Accept, HttpResponse> {
//!         if request.path() == "/ws" {
//!             Ok(Accept::new())
//!         } else {
//!             Err(HttpResponse::new(StatusCode::BAD_REQUEST))
//!         }
//!     }
//!
//!     fn message(&mut self, socket: &mut Socket<'_>, message: MessageRef<'_>) {
//!         // A copy of the message, queued; written once the read's
//!         // messages are all handled.
//!         let _ = socket.send(message);
//!     }
//! }
//!
//! # fn main() -> std::io::Result<()> {
//! let server = Server::bind("127.0.0.1:9001")?;
//! server.run(Echo)?; // until `Handle::stop`
//! # Ok(()) }
//! ```
//!
//! One loop uses one core. For more, run one [`Server`] per thread on
//! clones of one listener ([`Server::new`] with
//! [`TcpListener::try_clone`](std::net::TcpListener::try_clone)): the
//! kernel hands each connection to one of them.

mod event_loop;
mod socket;

pub use event_loop::{Handle, Server, SocketId};
pub use socket::{Handler, Loop, Socket};

pub use http::StatusCode;
pub use tether_driver::{HttpResponse, WebSocketConfig};
pub use tether_proto;
#[cfg(feature = "deflate")]
pub use tether_proto::deflate::DeflateConfig;
pub use tether_proto::handshake::{Accept, HandshakeConfig, HandshakeError, Request};
pub use tether_proto::{
    CloseCause, CloseCode, Closed, Config, DataKind, Fragment, Message, MessageRef, SendError, SendOptions, Utf8Bytes,
};
