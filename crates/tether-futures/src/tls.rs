//! TLS through rustls (ring provider): `wss://` clients and TLS servers.
//!
//! The configurations are the driving crate's, the same on every runtime;
//! the streams are futures-rustls'. A TLS server wraps
//! [`server_config`] in a [`TlsAcceptor`] and hands the accepted streams to
//! [`accept`](crate::accept).

pub use futures_rustls::{client::TlsStream as ClientTlsStream, server::TlsStream as ServerTlsStream};
pub use futures_rustls::{TlsAcceptor, TlsConnector};
pub use tether_driver::tls::*;
