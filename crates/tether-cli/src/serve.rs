//! `tether serve`: the echo sample app: the page at `/` and the echo
//! WebSocket endpoint at `/ws`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use http::{header, HeaderValue, StatusCode};
use tether_tokio::tls::{TlsAcceptor, TlsServer};
use tether_tokio::{
    Accept, DeflateConfig, Error, HandshakeConfig, HttpResponse, Request, Server, WebSocketConfig, WebSocketStream,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::exit::Failure;

/// The page: Connect, Send, Close Socket and the communication log.
const PAGE: &str = include_str!("page.html");

/// Serve the echo app: a web page at / talking to the echo WebSocket
/// endpoint at /ws (a plain request to /ws gets 400, other paths 404).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  tether serve
  tether serve --bind 0.0.0.0:8443 --tls-self-signed --compression
  tether serve --tls-cert cert.pem --tls-key key.pem --allowed-origin https://example.com

Each connection is logged when it ends (address, HTTP version, subprotocol,
compression, close code and reason, bytes each way); RUST_LOG=debug says more.")]
pub(crate) struct Args {
    /// The address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// TLS certificate chain (PEM); with --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// TLS with a self-signed certificate for localhost and 127.0.0.1,
    /// made at start (browsers will warn)
    #[arg(long)]
    tls_self_signed: bool,
    /// An Origin allowed to open a WebSocket (repeatable; default: any);
    /// others get 403
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Accept permessage-deflate when a client offers it (off by default:
    /// compression of secrets next to attacker-controlled data leaks them,
    /// CRIME/BREACH)
    #[arg(long)]
    compression: bool,
    /// The largest message accepted, in bytes (larger ones close the
    /// connection with 1009)
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    max_message_size: u64,
}

pub(crate) async fn run(args: Args) -> Result<u8, Failure> {
    let tls = tls_acceptor(&args)?;
    let listener = TcpListener::bind(&args.bind)
        .await
        .map_err(|e| Failure::new(crate::exit::REFUSED, format!("cannot listen on {}: {e}", args.bind)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::new(crate::exit::OTHER, e.to_string()))?;
    let (http, ws) = if tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    // The line tests and scripts wait for (on stderr, whatever RUST_LOG says).
    eprintln!("echo app on {http}://{local}/ (WebSocket endpoint {ws}://{local}/ws)");

    let mut config = WebSocketConfig::default();
    config.connection.max_message_size = args.max_message_size;
    let mut handshake = HandshakeConfig::default();
    handshake.allowed_origins = (!args.allowed_origins.is_empty()).then(|| args.allowed_origins.clone());
    let app = Arc::new(App {
        server: Server::new().config(config).handshake_config(handshake),
        compression: args.compression,
    });
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, for example: wait and go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped");
                return Ok(crate::exit::OK);
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                // Cleartext: HTTP/2 with prior knowledge when the client
                // starts with the HTTP/2 preface, HTTP/1.1 otherwise.
                None if starts_with_h2_preface(&tcp).await => app.http2(tcp, peer).await,
                None => app.connection(tcp, peer).await,
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => app.http2(tls, peer).await,
                    Ok(tls) => app.connection(tls, peer).await,
                    Err(e) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                },
            }
        });
    }
}

struct App {
    server: Server,
    compression: bool,
}

impl App {
    /// Answers one HTTP request: the page, or the echo WebSocket.
    async fn connection<S>(&self, io: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + tether_tokio::SocketAddrs + 'static,
    {
        let compression = self.compression;
        let mut ws = match self.server.accept_with(io, |request| route(request, compression)).await {
            Ok(ws) => ws,
            Err(Error::NotWebSocket(status)) => {
                tracing::debug!(%peer, %status, "plain HTTP request");
                return;
            }
            Err(e) => {
                tracing::info!(%peer, "opening handshake failed: {e}");
                return;
            }
        };
        tracing::debug!(%peer, "open");
        let error = echo(&mut ws).await.err();
        log_end(&ws, peer, "HTTP/1.1", error);
    }
}

/// The client preface of HTTP/2 (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a cleartext client speaks HTTP/2 with prior knowledge: peeks at
/// its first bytes (at most 5 s) without consuming them.
async fn starts_with_h2_preface(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 24];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await else {
            return false;
        };
        if n == 0 || !H2_PREFACE.starts_with(&buf[..n]) {
            return false;
        }
        if n == H2_PREFACE.len() {
            return true;
        }
        // A partial preface: wait for more.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

impl App {
    /// Serves an HTTP/2 connection: the page and any number of WebSockets
    /// (extended CONNECT, RFC 8441), each logged with its HTTP version.
    async fn http2<S>(&self, io: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + tether_tokio::SocketAddrs + 'static,
    {
        let addrs = io
            .local_addr()
            .ok()
            .map(|local| tether_tokio::hyper::ConnectionAddrs { local, peer });
        let compression = self.compression;
        let result = tether_tokio::http2::serve_connection(
            io,
            addrs,
            &self.server,
            move |request| route(request, compression),
            move |mut ws| async move {
                let error = echo(&mut ws).await.err();
                log_end(&ws, peer, "HTTP/2", error);
            },
        )
        .await;
        if let Err(e) = result {
            tracing::debug!(%peer, "HTTP/2 connection ended: {e}");
        }
    }
}

/// Echoes every message until the connection ends.
async fn echo<S>(ws: &mut WebSocketStream<S>) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        ws.feed(message?).await?;
    }
    Ok(())
}

fn log_end<S>(ws: &WebSocketStream<S>, peer: SocketAddr, http: &str, error: Option<Error>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stats = ws.stats();
    let compression = ws
        .negotiated_extensions()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let (code, reason) = ws
        .close_info()
        .map_or((1006, String::new()), |c| (u16::from(c.code), c.reason.clone()));
    let error = error.map(|e| e.to_string()).unwrap_or_default();
    tracing::info!(
        %peer,
        http,
        subprotocol = ws.subprotocol().unwrap_or("-"),
        compression = if compression.is_empty() { "off" } else { compression.as_str() },
        close_code = code,
        close_reason = %reason,
        bytes_in = stats.wire_bytes_received,
        bytes_out = stats.wire_bytes_sent,
        messages_in = stats.messages_received,
        messages_out = stats.messages_sent,
        error = %error,
        "connection closed"
    );
}

/// What the app answers to each request.
fn route(request: &Request, compression: bool) -> Result<Accept, HttpResponse> {
    match request.path() {
        "/ws" if request.is_websocket_upgrade() => {
            let accept = Accept::new();
            Ok(if compression {
                accept.permessage_deflate(DeflateConfig::default())
            } else {
                accept
            })
        }
        "/ws" => Err(text(
            StatusCode::BAD_REQUEST,
            "This is a WebSocket endpoint: connect with a WebSocket client.\n",
        )),
        "/" | "/index.html" => Err(HttpResponse::new(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )
            .header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
            .body(PAGE)),
        _ => Err(text(StatusCode::NOT_FOUND, "Not found.\n")),
    }
}

fn text(status: StatusCode, body: &str) -> HttpResponse {
    HttpResponse::new(status)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )
        .body(body)
}

/// The TLS acceptor the arguments ask for, if any.
fn tls_acceptor(args: &Args) -> Result<Option<TlsAcceptor>, Failure> {
    let (chain, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read =
                |path: &PathBuf| std::fs::read(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())));
            (read(cert)?, read(key)?)
        }
        _ if args.tls_self_signed => {
            let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
            let certified = rcgen::generate_simple_self_signed(names)
                .map_err(|e| Failure::new(crate::exit::OTHER, format!("making a certificate: {e}")))?;
            eprintln!("self-signed certificate for localhost, 127.0.0.1 and ::1 (clients must trust it or be told to ignore it)");
            (
                certified.cert.pem().into_bytes(),
                certified.key_pair.serialize_pem().into_bytes(),
            )
        }
        _ => return Ok(None),
    };
    let server = TlsServer::from_pem(&chain, &key)
        .and_then(|server| server.alpn(["h2", "http/1.1"]).server_config())
        .map_err(|e| Failure::usage(format!("TLS: {e}")))?;
    Ok(Some(TlsAcceptor::from(server)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_what_the_guides_show() {
        for part in ["Connect", "Send", "Close Socket", "Communication Log", "/ws"] {
            assert!(PAGE.contains(part), "{part}");
        }
    }
}
