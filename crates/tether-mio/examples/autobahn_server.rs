//! An echo server for the Autobahn testsuite's fuzzing client, with
//! permessage-deflate accepted, on the mio event loop:
//!
//! ```sh
//! cargo run --release -p tether-mio --example autobahn-server -- 127.0.0.1:9001
//! ```

use tether_mio::{Accept, DeflateConfig, Handler, HttpResponse, MessageRef, Request, Server, Socket, WebSocketConfig};

struct Echo;

impl Handler for Echo {
    fn accept(&mut self, _: &Request, _: std::net::SocketAddr) -> Result<Accept, HttpResponse> {
        Ok(Accept::new().permessage_deflate(DeflateConfig::default()))
    }

    fn message(&mut self, socket: &mut Socket<'_>, message: MessageRef<'_>) {
        // Fails only once the connection is closing: nothing to answer then.
        let _ = socket.send(message);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    // No keepalive pings: they would show up in the case reports.
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    let server = Server::bind(&addr)?.config(config);
    eprintln!("autobahn echo server on ws://{} (mio)", server.local_addr()?);
    server.run(Echo)?;
    Ok(())
}
