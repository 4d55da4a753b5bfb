//! Accepting connections.

use tether_proto::handshake::{Accept, HandshakeConfig, Request};

use crate::runtime::{block_on, Blocking, Transport};
use crate::transport::BlockingIo;
use crate::{Error, HttpResponse, WebSocket, WebSocketConfig};

/// Settings of accepted connections: the driver's
/// [`Server`](tether_driver::Server) behind blocking
/// [`accept`](Self::accept) and [`accept_with`](Self::accept_with).
///
/// ```no_run
/// use std::net::TcpListener;
/// use tether_blocking::{DeflateConfig, Server};
///
/// let listener = TcpListener::bind("127.0.0.1:9001")?;
/// let server = Server::new().permessage_deflate(DeflateConfig::default());
/// for tcp in listener.incoming() {
///     let (tcp, server) = (tcp?, server.clone());
///     std::thread::spawn(move || -> Result<(), tether_blocking::Error> {
///         let mut ws = server.accept(tcp)?;
///         while let Some(message) = ws.recv() {
///             ws.feed(message?)?;
///         }
///         Ok(())
///     });
/// }
/// # Ok::<_, std::io::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Server(tether_driver::Server<Blocking>);

impl From<tether_driver::Server<Blocking>> for Server {
    fn from(server: tether_driver::Server<Blocking>) -> Self {
        Self(server)
    }
}

impl Server {
    /// The default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// The opening handshake's limits and origin policy.
    pub fn handshake_config(self, config: HandshakeConfig) -> Self {
        Self(self.0.handshake_config(config))
    }

    /// The connection's settings.
    pub fn config(self, config: WebSocketConfig) -> Self {
        Self(self.0.config(config))
    }

    /// [`WebSocketConfig::read_buffer_size`](crate::WebSocketConfig::read_buffer_size),
    /// forwarded. This shell reads through a per-thread scratch buffer of
    /// 16 KiB (so that a thread blocked in an idle read holds no receive
    /// buffer): each read asks for at most 16 KiB whatever the setting.
    pub fn read_buffer_size(self, size: usize) -> Self {
        Self(self.0.read_buffer_size(size))
    }

    /// Accepts permessage-deflate with `config` in [`accept`](Self::accept)
    /// when the client offers it.
    #[cfg(feature = "deflate")]
    pub fn permessage_deflate(self, config: crate::DeflateConfig) -> Self {
        Self(self.0.permessage_deflate(config))
    }

    /// Accepts a WebSocket on `stream` whatever the path; see
    /// [`accept`](crate::accept).
    pub fn accept<S: BlockingIo>(&self, stream: S) -> Result<WebSocket<S>, Error> {
        block_on(self.0.accept(Transport::new(stream))).map(WebSocket::from)
    }

    /// Accepts as `callback` decides; see [`accept_with`](crate::accept_with).
    pub fn accept_with<S, F>(&self, stream: S, callback: F) -> Result<WebSocket<S>, Error>
    where
        S: BlockingIo,
        F: FnOnce(&Request) -> Result<Accept, HttpResponse>,
    {
        block_on(self.0.accept_with(Transport::new(stream), callback)).map(WebSocket::from)
    }
}
