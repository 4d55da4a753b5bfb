//! WebSockets inside a hyper 1.x (or axum) server.
//!
//! In a service: check [`is_upgrade_request`], call [`upgrade`] with the
//! request, return the response it builds (101 Switching Protocols) from the
//! service, and await the [`Upgrade`] future in a spawned task: it resolves
//! to the connection once hyper hands over the upgraded I/O. Serve the
//! connection with `.with_upgrades()` (`hyper::server::conn::http1`).
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
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tether_proto::handshake::{accept_response, server_connection, Accept, HandshakeConfig, Request};

use crate::{Error, WebSocketConfig, WebSocketStream};
use tether_driver::runtime::Runtime;

/// A connection accepted through hyper.
pub type HyperWebSocket = WebSocketStream<TokioIo<Upgraded>>;

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
    let response = accept_response(&head, handshake, &options)?;
    // Built before answering 101, so that a negotiation the core cannot run
    // is refused while the request can still be answered otherwise.
    let connection = server_connection(&response, &options, config.connection.clone(), crate::Tokio::now())?;
    let on_upgrade = hyper::upgrade::on(request);
    let future = async move {
        let upgraded = on_upgrade.await.map_err(|e| Error::Io(std::io::Error::other(e)))?;
        Ok(WebSocketStream::from_connection(
            TokioIo::new(upgraded),
            connection,
            &config,
        ))
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
fn head_of<B>(request: &http::Request<B>) -> http::Request<()> {
    let mut head = http::Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    head
}
