//! The echo sample app: a web page at `/` (Connect, Send, Close Socket and a
//! log of each open, send, receive and close) and the echo WebSocket
//! endpoint at `/ws`.
//!
//! ```sh
//! cargo run --release -p tether-tokio --example echo-app -- [ADDR]   # default 127.0.0.1:8080
//! ```
//!
//! A plain HTTP request to `/ws` gets 400; other paths get 404.

use futures_util::StreamExt;
use http::{header, HeaderValue, StatusCode};
use tether_tokio::{Accept, DeflateConfig, HttpResponse, Request};
use tokio::net::TcpListener;

const PAGE: &str = include_str!("echo_app.html");

/// What the app answers to each request.
fn route(request: &Request) -> Result<Accept, HttpResponse> {
    match request.path() {
        // Compression is opt-in; this echo app holds no secrets, and browsers
        // offer permessage-deflate, so the page exercises it.
        "/ws" if request.is_websocket_upgrade() => Ok(Accept::new().permessage_deflate(DeflateConfig::default())),
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    eprintln!("echo app on http://{local}/ (WebSocket endpoint ws://{local}/ws)");
    loop {
        let (tcp, peer) = listener.accept().await?;
        tokio::spawn(async move {
            let mut ws = match tether_tokio::accept_with(tcp, route).await {
                Ok(ws) => ws,
                Err(tether_tokio::Error::NotWebSocket(_)) => return,
                Err(e) => return eprintln!("{peer}: {e}"),
            };
            eprintln!("{peer}: open");
            while let Some(message) = ws.next().await {
                match message {
                    Ok(message) => {
                        if let Err(e) = ws.feed(message).await {
                            eprintln!("{peer}: {e}");
                            break;
                        }
                    }
                    Err(e) => {
                        eprintln!("{peer}: {e}");
                        break;
                    }
                }
            }
            while ws.next().await.is_some() {}
            match ws.close_info() {
                Some(closed) => eprintln!("{peer}: closed ({} {:?})", closed.code, closed.reason),
                None => eprintln!("{peer}: closed"),
            }
        });
    }
}
