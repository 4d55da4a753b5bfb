//! tether-compio: WebSockets on [compio](https://docs.rs/compio), a
//! completion-based runtime (io_uring on Linux), driven by the sans-IO core
//! [`tether_proto`].
//!
//! The same API as the other shells (the driving loop is
//! [`tether_driver`]'s): [`accept`], [`accept_with`], [`Server`], [`connect`],
//! [`ClientBuilder`], and [`WebSocketStream`], a
//! [`Stream`](futures_core::Stream) and [`Sink`](futures_sink::Sink) of
//! messages with plain async methods beside. What differs is underneath:
//!
//! - **One submission per loop turn.** Every read and write is an io_uring
//!   operation queued while the runtime's tasks run and submitted, for all
//!   sockets at once, when the turn ends, in the same system call that
//!   waits for completions. With many connections the system calls per
//!   message fall below one, where an epoll runtime makes a `recvfrom` and a
//!   `sendto` for each.
//! - **No receive buffer per waiting connection.** Reads use the runtime's
//!   pool of provided buffers: the kernel picks one only when data arrives;
//!   the bytes are appended to the connection and the buffer goes back to
//!   the pool. See [`CompioStream`] for the details and [`runtime`] for a
//!   runtime with a pool sized for servers.
//!
//! compio runs one runtime per thread and its tasks stay on their thread
//! (they need not be `Send`); run one runtime per core, each with its own
//! listener (`SO_REUSEPORT`) or its share of accepted connections. Where
//! io_uring is missing or forbidden (an old kernel, a container's seccomp
//! profile), compio falls back to its poll driver and this crate works the
//! same, with one system call per operation.
//!
//! Not here yet: TLS (`wss://` fails with a clear error) and HTTP/2; use
//! tether-tokio for those.
//!
//! # Example
//!
//! An echo server and a client, on loopback:
//!
//! ```
//! use tether_compio::{CloseCode, CompioStream, Message};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! tether_compio::runtime()?.block_on(async {
//!     let listener = compio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let url = format!("ws://{}/", listener.local_addr()?);
//!     let server = compio::runtime::spawn(async move {
//!         let (tcp, _) = listener.accept().await?;
//!         let mut ws = tether_compio::accept(CompioStream::from(tcp)).await?;
//!         // Echo until the client closes; `feed` queues each answer and
//!         // `recv` writes them before it waits: one write per read.
//!         while let Some(message) = ws.recv().await {
//!             ws.feed(message?).await?;
//!         }
//!         Ok::<_, Box<dyn std::error::Error>>(())
//!     });
//!
//!     let mut ws = tether_compio::connect(&url).await?;
//!     ws.send(Message::Text("hello".into())).await?;
//!     assert_eq!(ws.recv().await.transpose()?, Some(Message::Text("hello".into())));
//!     ws.close(CloseCode::NORMAL, "done").await?;
//!     server.await.map_err(|_| "the server task panicked")??;
//!     Ok(())
//! })
//! # }
//! ```
#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

mod runtime;
mod transport;

use std::io;
use std::num::NonZero;

pub use compio;
pub use runtime::{Compio, CompioTimer};
pub use tether_driver::TransportAddrs;
pub use transport::{read_counts, CompioStream, ReadCounts};

tether_driver::async_shell_api!(runtime: Compio, client_stream: CompioStream);

/// Buffers in the pool of a runtime made by [`runtime`]: reads in flight
/// take one only when their data arrives, so this bounds the reads that
/// complete in one loop turn before the others fall back to a buffer of
/// their own for one read.
pub const POOL_BUFFERS: u16 = 64;

/// The size of each pool buffer of a runtime made by [`runtime`]: a
/// message of up to 64 KiB with its header arrives in one read (with 16
/// KiB buffers a 16 KiB message took two reads, and the echo benchmark's
/// CPU per 16 KiB message fell by a quarter at 64 KiB).
pub const POOL_BUFFER_LEN: usize = 64 * 1024;

/// A compio runtime for WebSocket servers and clients: io_uring (or the
/// poll driver where io_uring is not available) with a pool of
/// [`POOL_BUFFERS`] receive buffers of [`POOL_BUFFER_LEN`] bytes shared by
/// every connection of the thread (4 MiB), instead of compio's default of
/// eight 8 KiB buffers, and io_uring's `SINGLE_ISSUER` and `DEFER_TASKRUN`
/// (Linux 6.1): the kernel completes the operations when the loop asks for
/// completions instead of interrupting the thread for each one, which
/// measured at half the kernel time per message or less (see the echo
/// benchmark's README). On an older kernel that refuses them, the runtime
/// is made without them. The pool is made at once (compio makes it at the
/// first read otherwise): a fixed cost of the runtime, not of its
/// connections.
///
/// Any compio runtime works; this one is sized and set for many
/// connections. See [`runtime_builder`] to change it further.
pub fn runtime() -> io::Result<compio::runtime::Runtime> {
    let runtime = match runtime_builder().build() {
        Ok(runtime) if runtime.driver_type().is_iouring() => runtime,
        // io_uring refused the setup flags (a kernel before 6.1), or there
        // is no io_uring: without them.
        _ => builder(false).build()?,
    };
    // Where the driver has no pool (an old kernel), reads use spare buffers.
    let _ = runtime.buffer_pool();
    Ok(runtime)
}

/// The builder behind [`runtime`], to change it further (the submission
/// queue's size, thread pool limits). It asks for `DEFER_TASKRUN`, which a
/// kernel before 6.1 refuses (compio then falls back to its poll driver);
/// [`runtime`] retries without it.
pub fn runtime_builder() -> compio::runtime::RuntimeBuilder {
    builder(true)
}

fn builder(defer_taskrun: bool) -> compio::runtime::RuntimeBuilder {
    let mut proactor = compio::driver::ProactorBuilder::new();
    proactor
        .capacity(4096)
        .buffer_pool_size(NonZero::new(POOL_BUFFERS).unwrap_or(NonZero::<u16>::MIN))
        .buffer_pool_buffer_len(POOL_BUFFER_LEN)
        .single_issuer(defer_taskrun)
        .defer_taskrun(defer_taskrun);
    let mut builder = compio::runtime::RuntimeBuilder::new();
    builder.with_proactor(proactor);
    builder
}
