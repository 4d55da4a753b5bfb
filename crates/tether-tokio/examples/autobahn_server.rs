//! An echo server for the Autobahn testsuite's fuzzing client, with
//! permessage-deflate accepted:
//!
//! ```sh
//! cargo run --release -p tether-tokio --example autobahn-server -- 127.0.0.1:9001
//! ```
//!
//! With `many` after the address, it echoes with `recv_many_with` (every
//! message lent in place where the core can) instead of `next` + `feed`.

use futures_util::StreamExt;
use tether_tokio::{Server, WebSocketConfig};
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let many = std::env::args().nth(2).as_deref() == Some("many");
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("autobahn echo server on ws://{}", listener.local_addr()?);
    // No keepalive pings: they would show up in the case reports.
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    let server = Server::new()
        .config(config)
        .permessage_deflate(tether_tokio::DeflateConfig::default());
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let server = server.clone();
        tokio::spawn(async move {
            let mut ws = match server.accept(tcp).await {
                Ok(ws) => ws,
                Err(e) => return eprintln!("handshake failed: {e}"),
            };
            if many {
                while let Some(lent) = ws.recv_many_with(|message, reply| reply.send(message)).await {
                    if lent.is_err() {
                        break;
                    }
                }
            } else {
                while let Some(message) = ws.next().await {
                    match message {
                        Ok(message) => {
                            if ws.feed(message).await.is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            // Finish the close handshake if the loop stopped early.
            while ws.next().await.is_some() {}
        });
    }
}
