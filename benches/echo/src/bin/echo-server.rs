//! One echo server per crate, all on the same footing: a single-threaded
//! tokio runtime, TCP_NODELAY on every accepted socket, one task per
//! connection. Each echo loop is written the way that crate's own README and
//! `examples/echo_server` write it (noted beside each), with default
//! settings: text is echoed as text, binary as binary, pings are answered and
//! closes completed by the crate itself.
//!
//! ```sh
//! echo-server <tether|tungstenite|fastwebsockets|tokio-websockets> <addr>
//! ```
//!
//! Prints `listening on ADDR` on stdout once it accepts.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Crate {
    Tether,
    Tungstenite,
    FastWebSockets,
    TokioWebSockets,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(addr)) = (args.next(), args.next()) else {
        return Err("usage: echo-server <tether|tungstenite|fastwebsockets|tokio-websockets> <addr>".into());
    };
    let which = match name.as_str() {
        "tether" => Crate::Tether,
        "tungstenite" | "tokio-tungstenite" => Crate::Tungstenite,
        "fastwebsockets" => Crate::FastWebSockets,
        "tokio-websockets" => Crate::TokioWebSockets,
        other => return Err(format!("unknown crate {other:?}").into()),
    };
    tether_echo_bench::raise_fd_limit();
    let addr: SocketAddr = addr.parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(which, addr))
}

async fn serve(which: Crate, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving the others.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tcp.set_nodelay(true)?;
        match which {
            Crate::Tether => tokio::spawn(tether(tcp)),
            Crate::Tungstenite => tokio::spawn(tungstenite(tcp)),
            Crate::FastWebSockets => tokio::spawn(fastwebsockets::serve(tcp)),
            // As in tokio-websockets' examples/echo_server.rs.
            Crate::TokioWebSockets => tokio::spawn(tokio::task::unconstrained(tokio_websockets(tcp))),
        };
    }
}

/// tether-tokio: the echo loop of `WebSocketStream::feed`'s docs, default
/// `WebSocketConfig`. `feed` queues the echo; `recv` writes what is queued
/// before it waits, so the echoes of one read leave in one write.
async fn tether(tcp: TcpStream) {
    let result = async {
        let mut ws = tether_tokio::accept(tcp).await?;
        while let Some(message) = ws.recv().await {
            ws.feed(message?).await?;
        }
        Ok::<_, tether_tokio::Error>(())
    };
    if let Err(e) = result.await {
        eprintln!("tether: {e}");
    }
}

/// tokio-tungstenite: examples/echo-server.rs (split, keep text and binary,
/// forward the reader into the writer).
async fn tungstenite(tcp: TcpStream) {
    let result = async {
        let ws = tokio_tungstenite::accept_async(tcp).await?;
        let (write, read) = ws.split();
        read.try_filter(|msg| std::future::ready(msg.is_text() || msg.is_binary()))
            .forward(write)
            .await
    };
    match result.await {
        // `forward` closes the sink after the stream ended with the peer's
        // close, which tungstenite reports as already closed.
        Ok(()) | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => {}
        Err(e) => eprintln!("tungstenite: {e}"),
    }
}

/// tokio-websockets: examples/echo_server.rs (`next` and `send`, text and
/// binary only).
async fn tokio_websockets(tcp: TcpStream) {
    let result = async {
        let (_request, mut ws) = tokio_websockets::ServerBuilder::new().accept(tcp).await?;
        while let Some(item) = ws.next().await {
            let item = item?;
            if item.is_text() || item.is_binary() {
                ws.send(item).await?;
            }
        }
        Ok::<_, tokio_websockets::Error>(())
    };
    if let Err(e) = result.await {
        eprintln!("tokio-websockets: {e}");
    }
}

/// fastwebsockets: examples/echo_server.rs (upgrade inside a hyper 1 HTTP/1
/// server, `FragmentCollector`, `read_frame` and `write_frame`).
mod fastwebsockets {
    use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use tokio::net::TcpStream;

    pub(crate) async fn serve(tcp: TcpStream) {
        let io = hyper_util::rt::TokioIo::new(tcp);
        let conn = http1::Builder::new()
            .serve_connection(io, service_fn(upgrade))
            .with_upgrades();
        if let Err(e) = conn.await {
            eprintln!("fastwebsockets (http): {e:?}");
        }
    }

    async fn upgrade(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
        let (response, fut) = upgrade::upgrade(&mut req)?;
        tokio::spawn(async move {
            if let Err(e) = tokio::task::unconstrained(echo(fut)).await {
                eprintln!("fastwebsockets: {e}");
            }
        });
        Ok(response)
    }

    async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
        let mut ws = FragmentCollector::new(fut.await?);
        loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
                _ => {}
            }
        }
        Ok(())
    }
}
