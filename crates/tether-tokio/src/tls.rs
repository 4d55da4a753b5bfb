//! TLS through rustls (ring provider): `wss://` clients and TLS servers.

pub use tether_driver::tls::*;
pub use tokio_rustls::{client::TlsStream as ClientTlsStream, server::TlsStream as ServerTlsStream};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};
