//! WebSockets inside a hyper 1.x (or axum) server.
//!
//! In a service: check [`is_upgrade_request`], call [`upgrade`] with the
//! request, return the response it builds (101 Switching Protocols) from the
//! service, and await the [`Upgrade`] future in a spawned task: it resolves
//! to the connection once hyper hands over the upgraded I/O. Serve the
//! connection with `.with_upgrades()` (`hyper::server::conn::http1`).
//!
//! hyper hands over the upgraded I/O without its addresses: to have
//! `local_addr` and `peer_addr` on the connection, put a [`ConnectionAddrs`]
//! in each request's extensions from the accept loop (the service closure
//! knows them).
//!
//! ```no_run
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use tether_tokio::{Accept, WebSocketConfig};
//!
//! async fn service(
//!     mut request: hyper::Request<hyper::body::Incoming>,
//! ) -> Result<hyper::Response<Empty<Bytes>>, tether_tokio::Error> {
//!     let (response, upgrade) = tether_tokio::hyper::upgrade(&mut request, Accept::new(), WebSocketConfig::default())?;
//!     tokio::spawn(async move {
//!         if let Ok(mut ws) = upgrade.await {
//!             while let Some(Ok(message)) = ws.recv().await {
//!                 let _ = ws.send(message).await;
//!             }
//!         }
//!     });
//!     Ok(response)
//! }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tether_proto::handshake::{accept_response, server_connection, Accept, HandshakeConfig, Request};

use crate::{Error, SocketAddrs, WebSocketConfig, WebSocketStream};
use tether_driver::runtime::Runtime;

/// A connection accepted through hyper.
pub type HyperWebSocket = WebSocketStream<HyperIo>;

/// The addresses of the TCP connection a request came on. Insert it into
/// the request's extensions before [`upgrade`]
/// (`request.extensions_mut().insert(ConnectionAddrs { local, peer })`),
/// and the WebSocket knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionAddrs {
    /// The server's address.
    pub local: SocketAddr,
    /// The client's address.
    pub peer: SocketAddr,
}

/// The transport of a connection accepted through hyper: hyper's upgraded
/// I/O, and the addresses if the request carried a [`ConnectionAddrs`].
#[derive(Debug)]
pub struct HyperIo {
    io: TokioIo<Upgraded>,
    addrs: Option<ConnectionAddrs>,
}

impl HyperIo {
    /// Wraps an upgraded stream with the addresses of its connection.
    pub(crate) fn new(io: TokioIo<Upgraded>, addrs: Option<ConnectionAddrs>) -> Self {
        Self { io, addrs }
    }

    /// hyper's upgraded I/O.
    pub fn get_ref(&self) -> &TokioIo<Upgraded> {
        &self.io
    }
}

impl AsyncRead for HyperIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf).map_err(stream_lost)
    }
}

impl AsyncWrite for HyperIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf).map_err(stream_lost)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io)
            .poll_write_vectored(cx, bufs)
            .map_err(stream_lost)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx).map_err(stream_lost)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx).map_err(stream_lost)
    }
}

/// hyper reports the reset of an upgraded HTTP/2 stream by the peer
/// (`RST_STREAM`) and the end of its connection (`GOAWAY`) as I/O errors of
/// kind `Other` carrying h2's error (hyper's, on the write side). To the
/// WebSocket on that stream they are what a TCP reset is to one on a socket
/// of its own, so they get that kind, and with it the same
/// [`ErrorKind::ConnectionReset`](crate::ErrorKind::ConnectionReset); h2's
/// error stays the source. Over HTTP/1.1 the upgraded socket's errors pass
/// as they are.
fn stream_lost(error: io::Error) -> io::Error {
    #[cfg(feature = "http2")]
    if error.kind() == io::ErrorKind::Other && error.get_ref().is_some_and(|inner| is_h2_stream_loss(inner)) {
        return match error.into_inner() {
            Some(inner) => io::Error::new(io::ErrorKind::ConnectionReset, inner),
            None => io::ErrorKind::ConnectionReset.into(),
        };
    }
    error
}

/// Whether `error` is hyper's or h2's report of a lost stream: h2's error
/// with a reason (a `RST_STREAM` or `GOAWAY` received, or the reason one
/// carried, as hyper's send task passes it on), or a hyper error of the
/// stream's send task without one (its stream closed under it).
#[cfg(feature = "http2")]
fn is_h2_stream_loss(error: &(dyn std::error::Error + 'static)) -> bool {
    let from_hyper = error.is::<hyper::Error>();
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.reason().is_some();
        }
        next = error.source();
    }
    from_hyper
}

impl SocketAddrs for HyperIo {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.addrs.map(|a| a.local).ok_or_else(no_addrs)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.addrs.map(|a| a.peer).ok_or_else(no_addrs)
    }
}

fn no_addrs() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the request carried no tether_tokio::hyper::ConnectionAddrs",
    )
}

/// Whether `request` asks for a WebSocket (`Upgrade: websocket`), as
/// opposed to a plain HTTP request on the same path.
pub fn is_upgrade_request<B>(request: &http::Request<B>) -> bool {
    Request::from_http(head_of(request)).is_websocket_upgrade()
}

/// Checks `request` as a WebSocket handshake and accepts it with `options`:
/// returns the 101 response to send back from the service, and the future
/// of the connection.
///
/// On error, the handshake is refused: answer with the status of the
/// [`HandshakeError`](tether_proto::handshake::HandshakeError) (400, 403,
/// 426...).
pub fn upgrade<B, R>(
    request: &mut http::Request<B>,
    options: Accept,
    config: WebSocketConfig,
) -> Result<(http::Response<R>, Upgrade), Error>
where
    R: Default,
{
    upgrade_with(request, &HandshakeConfig::default(), options, config)
}

/// [`upgrade`] with the handshake's policy (allowed origins).
pub fn upgrade_with<B, R>(
    request: &mut http::Request<B>,
    handshake: &HandshakeConfig,
    options: Accept,
    config: WebSocketConfig,
) -> Result<(http::Response<R>, Upgrade), Error>
where
    R: Default,
{
    let head = Request::from_http(head_of(request));
    // HTTP/2 (RFC 8441): an extended CONNECT is answered 200; HTTP/1.1 101.
    let response = if head.is_extended_connect() {
        tether_proto::handshake::accept_extended_connect(&head, handshake, &options)?
    } else {
        accept_response(&head, handshake, &options)?
    };
    // Built before answering 101, so that a negotiation the core cannot run
    // is refused while the request can still be answered otherwise.
    let connection = server_connection(&response, &options, config.connection.clone(), crate::Tokio::now())?;
    let addrs = request.extensions().get::<ConnectionAddrs>().copied();
    let on_upgrade = hyper::upgrade::on(request);
    let future = async move {
        let upgraded = on_upgrade.await.map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let io = HyperIo::new(TokioIo::new(upgraded), addrs);
        Ok(WebSocketStream::from_connection(io, connection, &config))
    };
    Ok((response.map(|()| R::default()), Upgrade(Box::pin(future))))
}

/// The connection of an accepted upgrade: resolves once hyper has sent the
/// 101 response and handed over the I/O.
#[must_use = "the connection exists only once this future is awaited"]
pub struct Upgrade(Pin<Box<dyn Future<Output = Result<HyperWebSocket, Error>> + Send>>);

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upgrade")
    }
}

impl Future for Upgrade {
    type Output = Result<HyperWebSocket, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// The request line and headers, without the body.
pub(crate) fn head_of<B>(request: &http::Request<B>) -> http::Request<()> {
    let mut head = http::Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    // HTTP/2's `:protocol` (RFC 8441), as the core knows it.
    #[cfg(feature = "http2")]
    if let Some(protocol) = request.extensions().get::<hyper::ext::Protocol>() {
        head.extensions_mut()
            .insert(tether_proto::handshake::ConnectProtocol(protocol.as_str().to_owned()));
    }
    head
}
