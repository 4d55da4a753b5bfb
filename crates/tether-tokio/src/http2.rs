//! WebSockets over HTTP/2 (RFC 8441), client and server, through hyper's
//! HTTP/2 (the `h2` crate).
//!
//! An HTTP/2 WebSocket is one stream of an HTTP/2 connection, opened with
//! an extended CONNECT (`:protocol websocket`) instead of a GET with
//! `Upgrade`; many share one connection, next to ordinary requests. The
//! application sees the same [`WebSocketStream`] as over HTTP/1.1 (over
//! [`HyperIo`]); closing it ends its stream only. HTTP/2 flow control
//! applies per stream: a socket whose reader is slow stops only its own
//! stream.
//!
//! - **Server:** [`serve_connection`] runs one HTTP/2 connection (after TLS
//!   chose `h2` by ALPN, or cleartext with prior knowledge), advertising
//!   `SETTINGS_ENABLE_CONNECT_PROTOCOL`; the same route callback as
//!   [`Server::accept_with`](crate::Server::accept_with) answers each
//!   request: a page, or a WebSocket handed to your handler.
//!   [`serve_connection_auto`] picks HTTP/2 or HTTP/1.1 by what TLS's ALPN
//!   agreed, on one port.
//! - **Client:** [`Http2Connection`] opens one HTTP/2 connection and any
//!   number of WebSockets on it ([`Http2Connection::open`]).
//! - **hyper and axum:** [`crate::hyper::upgrade`] accepts extended CONNECT
//!   as well, in a server built with hyper's `http2` builder and
//!   `enable_connect_protocol()`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tether_proto::handshake::{ClientHandshake, ClientRequest, HandshakeError, Request};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::hyper::{ConnectionAddrs, HyperIo, HyperWebSocket};
use crate::{Accept, Error, HttpResponse, Server, WebSocketConfig, WebSocketStream};

/// A response body: a page, an error text, or nothing (the 200 that opens a
/// WebSocket).
type Body = Full<Bytes>;

/// Serves one HTTP/2 connection on `io` (TLS after ALPN `h2`, or cleartext
/// with prior knowledge), until the client closes it. Each request goes to
/// `route`, as with [`Server::accept_with`](crate::Server::accept_with):
/// `Err(response)` answers it with a page, a redirect, a 404...;
/// `Ok(accept)` on an extended CONNECT for a WebSocket (RFC 8441) opens the
/// socket with `server`'s settings and hands it to `on_websocket` in a task
/// of its own (`Ok` on anything else is answered 400: a WebSocket over
/// HTTP/2 needs an extended CONNECT). `addrs`, when given, are the
/// connection's addresses, which every WebSocket on it reports.
pub async fn serve_connection<IO, R, H, F>(
    io: IO,
    addrs: Option<ConnectionAddrs>,
    server: &Server,
    route: R,
    on_websocket: H,
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Fn(&Request) -> Result<Accept, HttpResponse> + Send + Sync + 'static,
    H: Fn(HyperWebSocket) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let shared = Arc::new(Shared {
        route,
        on_websocket,
        handshake: server.handshake_settings().clone(),
        config: server.websocket_config().clone(),
    });
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        let shared = shared.clone();
        async move {
            if let Some(addrs) = addrs {
                request.extensions_mut().insert(addrs);
            }
            Ok::<_, std::convert::Infallible>(answer(&mut request, &shared))
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.enable_connect_protocol();
    builder
        .serve_connection(TokioIo::new(io), service)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))
}

/// What every request of a connection needs.
struct Shared<R, H> {
    route: R,
    on_websocket: H,
    handshake: tether_proto::handshake::HandshakeConfig,
    config: WebSocketConfig,
}

/// One request's answer.
fn answer<R, H, F>(request: &mut http::Request<Incoming>, shared: &Arc<Shared<R, H>>) -> http::Response<Body>
where
    R: Fn(&Request) -> Result<Accept, HttpResponse> + Send + Sync + 'static,
    H: Fn(HyperWebSocket) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let head = Request::from_http(crate::hyper::head_of(request));
    match (shared.route)(&head) {
        Err(response) => {
            let mut answer = http::Response::new(Full::new(Bytes::from(response.body_bytes().to_vec())));
            *answer.status_mut() = response.status();
            *answer.headers_mut() = response.headers().clone();
            answer
        }
        Ok(_) if !head.is_extended_connect() => error_response(&HandshakeError::InvalidHeader {
            name: ":protocol",
            reason: "a WebSocket over HTTP/2 is opened with an extended CONNECT (RFC 8441)",
        }),
        Ok(accept) => {
            match crate::hyper::upgrade_with::<_, ()>(request, &shared.handshake, accept, shared.config.clone()) {
                Ok((response, upgrade)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        match upgrade.await {
                            Ok(ws) => (shared.on_websocket)(ws).await,
                            Err(e) => tracing::debug!("HTTP/2 WebSocket stream failed to open: {e}"),
                        }
                    });
                    response.map(|()| Full::new(Bytes::new()))
                }
                Err(Error::Handshake(e)) => error_response(&e),
                Err(e) => {
                    tracing::debug!("HTTP/2 WebSocket refused: {e}");
                    let mut response = http::Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    response
                }
            }
        }
    }
}

/// The answer to a failed handshake: its status and a line of text.
fn error_response(error: &HandshakeError) -> http::Response<Body> {
    let status = error.status().unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut response = http::Response::new(Full::new(Bytes::from(format!(
        "Failed to open a WebSocket connection: {error}.\n"
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves one connection after TLS: HTTP/2 when ALPN agreed on `h2`,
/// HTTP/1.1 otherwise (one WebSocket or one plain answer per connection,
/// as [`Server::accept_with`](crate::Server::accept_with)). Offer both on
/// the server's TLS configuration (`TlsServer::alpn(["h2", "http/1.1"])`).
pub async fn serve_connection_auto<R, H, F>(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    server: &Server,
    route: R,
    on_websocket: H,
    on_http1: impl FnOnce(
        Result<WebSocketStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>, Error>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<(), Error>
where
    R: Fn(&Request) -> Result<Accept, HttpResponse> + Send + Sync + 'static,
    H: Fn(HyperWebSocket) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (tcp, session) = tls.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let addrs = match (tcp.local_addr(), tcp.peer_addr()) {
        (Ok(local), Ok(peer)) => Some(ConnectionAddrs { local, peer }),
        _ => None,
    };
    if h2 {
        serve_connection(tls, addrs, server, route, on_websocket).await
    } else {
        let accepted = server.accept_with(tls, |request| route(request)).await;
        on_http1(accepted).await;
        Ok(())
    }
}

/// One HTTP/2 connection of a client, on which any number of WebSockets
/// open (each a stream). Cheap to clone: the clones share the connection.
#[derive(Clone)]
pub struct Http2Connection {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    addrs: Option<ConnectionAddrs>,
    config: WebSocketConfig,
}

impl std::fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Connection")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Http2Connection {
    /// Opens an HTTP/2 connection to `url`'s host (DNS, TCP and TLS within
    /// 60 seconds, [`DEFAULT_CONNECT_TIMEOUT`](crate::DEFAULT_CONNECT_TIMEOUT)): TLS with ALPN `h2` for
    /// `wss://` (trusting `tls`'s roots, the compiled-in webpki roots by
    /// default), prior knowledge for `ws://`. Fails when the server does not
    /// speak HTTP/2 (ALPN chose something else): connect over HTTP/1.1
    /// instead.
    pub async fn connect(url: &str, tls: Option<crate::tls::TlsClient>) -> Result<Self, Error> {
        let request = ClientRequest::new(url)?;
        match dial(&request, tls).await? {
            (Dialed::Plain(tcp), addrs) => Self::handshake(tcp, addrs).await,
            (Dialed::Tls(stream), addrs) if is_h2(&stream) => Self::handshake(*stream, addrs).await,
            (Dialed::Tls(_), _) => Err(not_h2()),
        }
    }

    /// The HTTP/2 handshake over a transport the caller opened (prior
    /// knowledge, or TLS that agreed on `h2`); the connection runs in a
    /// task of its own until every clone and stream is dropped.
    pub async fn handshake<IO>(io: IO, addrs: Option<ConnectionAddrs>) -> Result<Self, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io));
        let (send, connection) = tokio::time::timeout(tether_driver::DEFAULT_CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| Error::ConnectTimeout)?
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("HTTP/2 connection ended: {e}");
            }
        });
        Ok(Self {
            send,
            addrs,
            config: WebSocketConfig::default(),
        })
    }

    /// The settings of the WebSockets opened from now on.
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens a WebSocket on a new stream of this connection: the extended
    /// CONNECT for `request` (its path, subprotocols, extension offers,
    /// headers), checked as over HTTP/1.1, within 60 seconds. A refusal is
    /// [`HandshakeError::Rejected`] with the server's status.
    pub async fn open(&self, request: ClientRequest) -> Result<crate::ClientStream, Error> {
        // The opening handshake within the default connect timeout.
        tokio::time::timeout(tether_driver::DEFAULT_CONNECT_TIMEOUT, self.open_now(request))
            .await
            .unwrap_or(Err(Error::ConnectTimeout))
    }

    async fn open_now(&self, request: ClientRequest) -> Result<crate::ClientStream, Error> {
        let (mut handshake, head) = ClientHandshake::extended_connect(request)?;
        let (mut parts, ()) = head.into_parts();
        parts.extensions.insert(hyper::ext::Protocol::from_static("websocket"));
        let mut send = self.send.clone();
        send.ready().await.map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let mut response = send
            .send_request(http::Request::from_parts(parts, Empty::new()))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let head = {
            let mut head = http::Response::new(());
            *head.status_mut() = response.status();
            *head.headers_mut() = response.headers().clone();
            head
        };
        let accepted = match handshake.handle_extended_connect_response(head) {
            Ok(accepted) => accepted,
            Err(HandshakeError::Rejected { status, headers, .. }) => {
                // The refusal's body, within a bound, for the error.
                let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                return Err(Error::Handshake(HandshakeError::Rejected { status, headers, body }));
            }
            Err(e) => return Err(e.into()),
        };
        let upgraded = hyper::upgrade::on(&mut response)
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let connection = accepted.into_connection(
            self.config.connection.clone(),
            Box::new(tether_driver::OsRandom::new()),
            <crate::Tokio as tether_driver::Runtime>::now(),
        )?;
        let io = HyperIo::new(TokioIo::new(upgraded), self.addrs);
        Ok(WebSocketStream::from_connection(
            crate::MaybeTlsStream::Http2(Box::new(io)),
            connection,
            &self.config,
        ))
    }
}

/// Opens a WebSocket for `request` over HTTP/2 when the server offers it
/// (TLS with ALPN `h2`, and `SETTINGS_ENABLE_CONNECT_PROTOCOL`), over
/// HTTP/1.1 otherwise: the same [`ClientStream`](crate::ClientStream)
/// either way ([`MaybeTlsStream::Http2`](crate::MaybeTlsStream::Http2)
/// for HTTP/2). TLS offers `h2` and `http/1.1`; when the server picks
/// HTTP/1.1 the same TLS connection carries the opening handshake. `ws://`
/// uses HTTP/1.1 (HTTP/2 without TLS needs prior knowledge:
/// [`Http2Connection::handshake`]). `tls` and `config` apply to both.
pub async fn connect_prefer_http2(
    request: ClientRequest,
    tls: Option<crate::tls::TlsClient>,
    config: WebSocketConfig,
) -> Result<crate::ClientStream, Error> {
    let builder = |request: ClientRequest, config: WebSocketConfig| {
        let mut builder = crate::ClientBuilder::from_request(request).config(config);
        if let Some(tls) = &tls {
            builder = builder.tls(tls.clone());
        }
        builder
    };
    if !request.is_secure() {
        return builder(request, config).connect().await;
    }
    match dial(&request, tls.clone()).await? {
        (Dialed::Tls(stream), addrs) if is_h2(&stream) => {
            let connection = Http2Connection::handshake(*stream, addrs).await?.config(config.clone());
            match connection.open(request.clone()).await {
                Ok(ws) => Ok(ws),
                // HTTP/2 without WebSockets (no extended CONNECT): a new
                // connection over HTTP/1.1.
                Err(Error::Io(e)) => {
                    tracing::debug!("no WebSocket over HTTP/2 ({e}): HTTP/1.1");
                    builder(request, config).connect().await
                }
                Err(e) => Err(e),
            }
        }
        (Dialed::Tls(stream), _) => {
            builder(request, config)
                .connect_over(crate::MaybeTlsStream::Tls(stream))
                .await
        }
        (Dialed::Plain(tcp), _) => {
            builder(request, config)
                .connect_over(crate::MaybeTlsStream::Plain(tcp))
                .await
        }
    }
}

/// A connected transport, before HTTP.
enum Dialed {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// TCP to `request`'s host, and TLS offering `h2` then `http/1.1` for
/// `wss://`.
/// [`dial_now`] within the default connect timeout (60 s, as
/// [`ClientBuilder`](crate::ClientBuilder)'s): DNS, TCP and TLS.
async fn dial(
    request: &ClientRequest,
    tls: Option<crate::tls::TlsClient>,
) -> Result<(Dialed, Option<ConnectionAddrs>), Error> {
    tokio::time::timeout(tether_driver::DEFAULT_CONNECT_TIMEOUT, dial_now(request, tls))
        .await
        .unwrap_or(Err(Error::ConnectTimeout))
}

async fn dial_now(
    request: &ClientRequest,
    tls: Option<crate::tls::TlsClient>,
) -> Result<(Dialed, Option<ConnectionAddrs>), Error> {
    let addrs = tokio::net::lookup_host((request.host(), request.port()))
        .await
        .map_err(|error| Error::Resolve {
            host: request.host().to_owned(),
            error,
        })?
        .collect::<Vec<SocketAddr>>();
    let tcp = tether_driver::connect_addrs::<crate::Tokio>(request.host(), &addrs, true, None).await?;
    let conn_addrs = match (tcp.local_addr(), tcp.peer_addr()) {
        (Ok(local), Ok(peer)) => Some(ConnectionAddrs { local, peer }),
        _ => None,
    };
    if !request.is_secure() {
        return Ok((Dialed::Plain(tcp), conn_addrs));
    }
    let mut config = (*tls.unwrap_or_default().client_config()?).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(request.host().to_owned())
        .map_err(|_| Error::InvalidServerName(request.host().to_owned()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(Error::from_io)?;
    Ok((Dialed::Tls(Box::new(stream)), conn_addrs))
}

fn is_h2(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

fn not_h2() -> Error {
    Error::Handshake(HandshakeError::InvalidState(
        "the server does not speak HTTP/2 (ALPN did not choose h2)",
    ))
}
