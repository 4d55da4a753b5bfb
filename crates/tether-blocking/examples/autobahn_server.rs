//! An echo server for the Autobahn testsuite's fuzzing client, with
//! permessage-deflate accepted, a thread per connection:
//!
//! ```sh
//! cargo run --release -p tether-blocking --example autobahn-server -- 127.0.0.1:9001
//! ```

use std::net::TcpListener;

use tether_blocking::{Server, WebSocketConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let listener = TcpListener::bind(&addr)?;
    eprintln!("autobahn echo server on ws://{}", listener.local_addr()?);
    // No keepalive pings: they would show up in the case reports.
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    let server = Server::new()
        .config(config)
        .permessage_deflate(tether_blocking::DeflateConfig::default());
    for tcp in listener.incoming() {
        let tcp = tcp?;
        tcp.set_nodelay(true)?;
        let server = server.clone();
        std::thread::spawn(move || {
            let mut ws = match server.accept(tcp) {
                Ok(ws) => ws,
                Err(e) => return eprintln!("handshake failed: {e}"),
            };
            while let Some(message) = ws.recv() {
                match message {
                    Ok(message) => {
                        if ws.feed(message).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            // Finish the close handshake if the loop stopped early.
            while ws.recv().is_some() {}
        });
    }
    Ok(())
}
