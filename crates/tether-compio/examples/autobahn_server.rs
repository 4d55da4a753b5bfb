//! An echo server for the Autobahn testsuite's fuzzing client, with
//! permessage-deflate accepted, on compio (io_uring):
//!
//! ```sh
//! cargo run --release -p tether-compio --example autobahn-server -- 127.0.0.1:9001
//! ```

#[path = "support/echo.rs"]
mod echo;
use tether_compio::{CompioStream, DeflateConfig, Server, WebSocketConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    // No keepalive pings: they would show up in the case reports.
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    let server = Server::new()
        .config(config)
        .permessage_deflate(DeflateConfig::default());
    tether_compio::runtime()?.block_on(async {
        let listener = compio::net::TcpListener::bind(&addr).await?;
        eprintln!("autobahn echo server on ws://{} (compio)", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let server = server.clone();
            compio::runtime::spawn(async move {
                match server.accept(CompioStream::from(tcp)).await {
                    Ok(ws) => echo::echo(ws).await,
                    Err(e) => eprintln!("handshake failed: {e}"),
                }
            })
            .detach();
        }
    })
}
