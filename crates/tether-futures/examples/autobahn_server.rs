//! An echo server for the Autobahn testsuite's fuzzing client, with
//! permessage-deflate accepted, on async-std (the default) or smol:
//!
//! ```sh
//! cargo run --release -p tether-futures --example autobahn-server -- 127.0.0.1:9001 smol
//! ```

use futures_io::{AsyncRead, AsyncWrite};

#[path = "support/echo.rs"]
mod echo;
use tether_futures::{DeflateConfig, Server, WebSocketConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let executor = args.next().unwrap_or_else(|| "async-std".to_owned());
    // No keepalive pings: they would show up in the case reports.
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    let server = Server::new()
        .config(config)
        .permessage_deflate(DeflateConfig::default());
    match executor.as_str() {
        "smol" => smol::block_on(async {
            let addr: std::net::SocketAddr = addr.parse()?;
            let listener = smol::Async::<std::net::TcpListener>::bind(addr)?;
            eprintln!(
                "autobahn echo server on ws://{} (smol)",
                listener.get_ref().local_addr()?
            );
            loop {
                let (tcp, _) = listener.accept().await?;
                tcp.get_ref().set_nodelay(true)?;
                smol::spawn(serve(server.clone(), tether_futures::TcpStream::from(tcp))).detach();
            }
        }),
        "async-std" => async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::bind(&addr).await?;
            eprintln!("autobahn echo server on ws://{} (async-std)", listener.local_addr()?);
            loop {
                let (tcp, _) = listener.accept().await?;
                tcp.set_nodelay(true)?;
                async_std::task::spawn(serve(server.clone(), tcp));
            }
        }),
        other => Err(format!("unknown executor {other:?}: async-std or smol").into()),
    }
}

/// Accepts with `server`'s settings, then echoes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(server: Server, tcp: S) {
    match server.accept(tcp).await {
        Ok(ws) => echo::echo(ws).await,
        Err(e) => eprintln!("handshake failed: {e}"),
    }
}
