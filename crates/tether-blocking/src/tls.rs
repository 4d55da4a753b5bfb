//! TLS through rustls (ring provider): `wss://` clients and TLS servers,
//! with rustls' blocking [`StreamOwned`].
//!
//! A TLS server wraps each accepted socket and passes it to
//! [`accept`](crate::accept); the TLS handshake runs within the first reads:
//!
//! ```no_run
//! # fn run(listener: std::net::TcpListener, config: std::sync::Arc<tether_blocking::tls::rustls::ServerConfig>)
//! # -> Result<(), tether_blocking::Error> {
//! use tether_blocking::tls::{ServerConnection, StreamOwned};
//! let (tcp, _) = listener.accept()?;
//! let tls = StreamOwned::new(ServerConnection::new(config).map_err(tether_blocking::Error::Tls)?, tcp);
//! let mut ws = tether_blocking::accept(tls)?;
//! # Ok(()) }
//! ```

pub use rustls::{ClientConnection, ServerConnection, StreamOwned};
pub use tether_driver::tls::*;
