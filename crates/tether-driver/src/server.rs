//! Accepting connections.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::marker::PhantomData;
use tether_proto::handshake::{Accept, HandshakeConfig, HandshakeError, Request, ServerHandshake};

use bytes::BytesMut;

use crate::io::{read_until, write_all, write_and_close};
use crate::runtime::{Runtime, RuntimeIo};
use crate::{Error, WebSocketConfig, WebSocketStream};

/// Size of the reads during the opening handshake: most requests fit in
/// one; larger ones take a few reads. Small, because a server accepting
/// many connections at once holds one such buffer per handshake.
const HANDSHAKE_READ: usize = 1024;

/// An HTTP answer instead of a WebSocket: a page, a redirect, a 404, a 403.
/// The transport is closed after it (`Connection: close`).
///
/// Boxed inside, so that the callback's `Result<Accept, HttpResponse>`
/// stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct HttpResponse(Box<Parts>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl HttpResponse {
    /// An answer with `status` and no body.
    pub fn new(status: StatusCode) -> Self {
        Self(Box::new(Parts {
            status,
            headers: HeaderMap::new(),
            body: Vec::new(),
        }))
    }

    /// Adds a header; `Content-Length` and `Connection` are set for you.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.append(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.0.body = body.into();
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.0.body
    }
}

/// Accepts a WebSocket on `stream` with the default settings, whatever the
/// path. A request that is not a valid WebSocket handshake (a plain GET, a
/// wrong version) is answered with the right status (400, 426...) and
/// fails with [`Error::Handshake`]. Each shell wraps it for its runtime.
pub async fn accept<S, R: RuntimeIo<S>>(stream: S) -> Result<WebSocketStream<S, R>, Error> {
    // Boxed here and in `Server::accept_with`: the handshake's state lives on
    // the heap while it runs and is freed after, instead of making every
    // connection's task as large as the handshake future forever.
    Box::pin(async move { Server::<R>::new().accept(stream).await }).await
}

/// Accepts on `stream` as `callback` decides: it sees the request (path,
/// query, headers, `Origin`, offered subprotocols with
/// [`Request::protocols`]) and returns either the options to accept with (a
/// subprotocol, response headers) or an [`HttpResponse`] to send instead.
pub async fn accept_with<S, R, F>(stream: S, callback: F) -> Result<WebSocketStream<S, R>, Error>
where
    R: RuntimeIo<S>,
    F: FnOnce(&Request) -> Result<Accept, HttpResponse>,
{
    Box::pin(async move { Server::<R>::new().accept_with(stream, callback).await }).await
}

/// Settings of accepted connections: the opening handshake's limits and
/// policy (allowed origins, header limits, its timeout) and the
/// connection's.
#[derive(Debug)]
#[must_use]
pub struct Server<R> {
    /// The opening handshake's limits and origin policy.
    pub handshake: HandshakeConfig,
    /// The connection's settings.
    pub config: WebSocketConfig,
    /// permessage-deflate settings that [`accept`](Self::accept) accepts
    /// compression with when the client offers it (`None`: no compression).
    /// [`accept_with`](Self::accept_with) leaves it to the callback's
    /// [`Accept`].
    #[cfg(feature = "deflate")]
    pub deflate: Option<tether_proto::deflate::DeflateConfig>,
    runtime: PhantomData<fn() -> R>,
}

impl<R> Clone for Server<R> {
    fn clone(&self) -> Self {
        Self {
            handshake: self.handshake.clone(),
            config: self.config.clone(),
            #[cfg(feature = "deflate")]
            deflate: self.deflate.clone(),
            runtime: PhantomData,
        }
    }
}

impl<R> Default for Server<R> {
    fn default() -> Self {
        Self {
            handshake: HandshakeConfig::default(),
            config: WebSocketConfig::default(),
            #[cfg(feature = "deflate")]
            deflate: None,
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime> Server<R> {
    /// The default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// The opening handshake's settings.
    pub fn handshake_config(mut self, config: HandshakeConfig) -> Self {
        self.handshake = config;
        self
    }

    /// The connection's settings.
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// How much room each read of the transport asks for (default
    /// [`DEFAULT_READ_BUFFER_SIZE`](crate::DEFAULT_READ_BUFFER_SIZE), 64 KiB;
    /// at least 4 KiB is used): [`WebSocketConfig::read_buffer_size`].
    pub fn read_buffer_size(mut self, size: usize) -> Self {
        self.config.read_buffer_size = size;
        self
    }

    /// Accepts permessage-deflate with `config` in [`accept`](Self::accept)
    /// when the client offers it.
    #[cfg(feature = "deflate")]
    pub fn permessage_deflate(mut self, config: tether_proto::deflate::DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// The opening handshake's settings (for front ends that accept
    /// through another HTTP stack, such as HTTP/2).
    pub fn handshake_settings(&self) -> &HandshakeConfig {
        &self.handshake
    }

    /// The connection's settings.
    pub fn websocket_config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// Accepts a WebSocket whatever the path; see [`accept`].
    pub async fn accept<S>(&self, stream: S) -> Result<WebSocketStream<S, R>, Error>
    where
        R: RuntimeIo<S>,
    {
        #[cfg(feature = "deflate")]
        let options = match &self.deflate {
            Some(config) => Accept::new().permessage_deflate(config.clone()),
            None => Accept::new(),
        };
        #[cfg(not(feature = "deflate"))]
        let options = Accept::new();
        self.accept_with(stream, move |_| Ok(options)).await
    }

    /// Accepts as `callback` decides; see [`accept_with`].
    pub async fn accept_with<S, F>(&self, io: S, callback: F) -> Result<WebSocketStream<S, R>, Error>
    where
        R: RuntimeIo<S>,
        F: FnOnce(&Request) -> Result<Accept, HttpResponse>,
    {
        // Boxed: see `accept`.
        Box::pin(self.handshake(io, callback)).await
    }

    async fn handshake<S, F>(&self, mut io: S, callback: F) -> Result<WebSocketStream<S, R>, Error>
    where
        R: RuntimeIo<S>,
        F: FnOnce(&Request) -> Result<Accept, HttpResponse>,
    {
        let mut handshake = ServerHandshake::new(self.handshake.clone(), R::now());
        let request = match read_request::<S, R>(&mut io, &mut handshake).await {
            Ok(request) => request,
            Err(Error::Handshake(e)) => return Err(answer_error::<S, R>(io, e).await),
            Err(e) => return Err(e),
        };
        match callback(&request) {
            Err(HttpResponse(response)) => {
                let Parts { status, headers, body } = *response;
                let bytes = handshake.reject(status, headers, &body);
                write_and_close::<S, R>(&mut io, &bytes).await?;
                Err(Error::NotWebSocket(status))
            }
            Ok(options) => match handshake.accept(&request, options, self.config.connection.clone(), R::now()) {
                Ok((response, connection)) => {
                    write_all::<S, R>(&mut io, &response).await.map_err(Error::from_io)?;
                    Ok(WebSocketStream::from_connection(io, connection, &self.config))
                }
                Err(e) => {
                    if matches!(e, HandshakeError::InvalidAcceptOptions(_)) {
                        tracing::warn!("accept options refused: {e}");
                    }
                    Err(answer_error::<S, R>(io, e).await)
                }
            },
        }
    }
}

/// Reads the request head, bounded by the handshake's timeout.
async fn read_request<S, R: RuntimeIo<S>>(io: &mut S, handshake: &mut ServerHandshake) -> Result<Request, Error> {
    let mut buf = BytesMut::with_capacity(HANDSHAKE_READ);
    loop {
        let request = match read_until::<S, R>(io, &mut buf, handshake.poll_timeout()).await {
            None => {
                handshake.handle_timeout(R::now())?;
                None
            }
            Some(Ok(0)) => return Err(handshake.handle_eof().into()),
            Some(Ok(_)) => handshake.handle_read(&buf)?,
            Some(Err(e)) => return Err(Error::from_io(e)),
        };
        if let Some(request) = request {
            return Ok(request);
        }
    }
}

/// Sends the answer the core wrote for a failed handshake, if any, and
/// returns the error.
async fn answer_error<S, R: RuntimeIo<S>>(mut io: S, error: HandshakeError) -> Error {
    tracing::debug!("opening handshake failed: {error}");
    if let Some(response) = error.response() {
        // The peer may be gone already; the handshake error is what matters.
        let _ = write_and_close::<S, R>(&mut io, &response).await;
    }
    Error::Handshake(error)
}
