//! One echo server per crate, all on the same footing: a single-threaded
//! runtime (tokio's current-thread runtime; smol's `LocalExecutor` on the
//! calling thread; async-std with one worker thread), TCP_NODELAY on every
//! accepted socket, one task per connection (tether-blocking: one thread
//! per connection, as a blocking server is written). Each echo loop is written the way that crate's own README and
//! `examples/echo_server` write it (noted beside each), with default
//! settings: text is echoed as text, binary as binary, pings are answered and
//! closes completed by the crate itself.
//!
//! ```sh
//! echo-server <tether|tether-lent|tether-many|tungstenite|fastwebsockets|tokio-websockets|tether-smol|tether-async-std|async-tungstenite-smol|tether-blocking|tether-h2|tether-compio|tether-mio> <addr>
//! ```
//!
//! Prints `listening on ADDR` on stdout once it accepts.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Crate {
    Tether,
    TetherLent,
    TetherMany,
    Tungstenite,
    FastWebSockets,
    TokioWebSockets,
    TetherSmol,
    TetherAsyncStd,
    AsyncTungsteniteSmol,
    TetherBlocking,
    TetherHttp2,
    TetherCompio,
    TetherMio,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(addr)) = (args.next(), args.next()) else {
        return Err("usage: echo-server <crate> <addr>".into());
    };
    let which = match name.as_str() {
        "tether" => Crate::Tether,
        "tether-lent" => Crate::TetherLent,
        "tether-many" => Crate::TetherMany,
        "tungstenite" | "tokio-tungstenite" => Crate::Tungstenite,
        "fastwebsockets" => Crate::FastWebSockets,
        "tokio-websockets" => Crate::TokioWebSockets,
        "tether-smol" => Crate::TetherSmol,
        "tether-async-std" => Crate::TetherAsyncStd,
        "async-tungstenite-smol" => Crate::AsyncTungsteniteSmol,
        "tether-blocking" => Crate::TetherBlocking,
        "tether-h2" => Crate::TetherHttp2,
        "tether-compio" => Crate::TetherCompio,
        "tether-mio" => Crate::TetherMio,
        other => return Err(format!("unknown crate {other:?}").into()),
    };
    tether_echo_bench::raise_fd_limit();
    let addr: SocketAddr = addr.parse()?;
    match which {
        Crate::TetherSmol | Crate::AsyncTungsteniteSmol => return futures_io_servers::smol(which, addr),
        Crate::TetherAsyncStd => return futures_io_servers::async_std(addr),
        Crate::TetherBlocking => return blocking_server(addr),
        Crate::TetherCompio => return compio_server(addr),
        Crate::TetherMio => return mio_server(addr),
        _ => {}
    }
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
            Crate::TetherLent => tokio::spawn(tether_lent(tcp)),
            Crate::TetherMany => tokio::spawn(tether_many(tcp)),
            Crate::Tungstenite => tokio::spawn(tungstenite(tcp)),
            Crate::FastWebSockets => tokio::spawn(fastwebsockets::serve(tcp)),
            // As in tokio-websockets' examples/echo_server.rs.
            Crate::TokioWebSockets => tokio::spawn(tokio::task::unconstrained(tokio_websockets(tcp))),
            Crate::TetherHttp2 => tokio::spawn(tether_h2(tcp)),
            _ => unreachable!("served by its own runtime"),
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

/// tether-tokio, each message lent in place (`recv_with`, the loop of its
/// docs) and answered with a copy queued (`Reply::send`): no `Bytes` per
/// message, as uWebSockets' callback echo.
async fn tether_lent(tcp: TcpStream) {
    let result = async {
        let mut ws = tether_tokio::accept(tcp).await?;
        while let Some(result) = ws.recv_with(|message, reply| reply.send(message)).await {
            result??;
        }
        Ok::<_, tether_tokio::Error>(())
    };
    if let Err(e) = result.await {
        eprintln!("tether-lent: {e}");
    }
}

/// tether-tokio, every message a read delivered lent in one call
/// (`recv_many_with`, the loop of its docs), each answered with a copy
/// queued: uWebSockets' message callback.
async fn tether_many(tcp: TcpStream) {
    let result = async {
        let mut ws = tether_tokio::accept(tcp).await?;
        while let Some(lent) = ws.recv_many_with(|message, reply| reply.send(message)).await {
            lent?;
        }
        Ok::<_, tether_tokio::Error>(())
    };
    if let Err(e) = result.await {
        eprintln!("tether-many: {e}");
    }
}

/// tether-tokio over HTTP/2 (RFC 8441, cleartext with prior knowledge):
/// every WebSocket stream of the connection runs the same loop as
/// `tether`.
async fn tether_h2(tcp: TcpStream) {
    let server = tether_tokio::Server::new();
    let result = tether_tokio::http2::serve_connection(
        tcp,
        None,
        &server,
        |_| Ok(tether_tokio::Accept::new()),
        |mut ws| async move {
            while let Some(Ok(message)) = ws.recv().await {
                if ws.feed(message).await.is_err() {
                    break;
                }
            }
        },
    )
    .await;
    if let Err(e) = result {
        eprintln!("tether-h2: {e}");
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

/// The futures-io servers: tether-futures on smol and on async-std, and
/// async-tungstenite on smol (the other futures-io crate), each on one thread.
mod futures_io_servers {
    use std::net::SocketAddr;
    use std::rc::Rc;

    use futures_util::{StreamExt, TryStreamExt};

    use super::Crate;

    /// smol: a `LocalExecutor` run by `block_on` on this thread.
    pub(super) fn smol(which: Crate, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
        let executor = Rc::new(smol::LocalExecutor::new());
        smol::block_on(executor.run(async {
            // smol's own listener type (its examples' `Async<TcpListener>`),
            // tether's streams in tether-futures' `TcpStream` over it: about
            // 0.6 KiB less per idle connection than async-net's `TcpStream`
            // (what `smol::net` re-exports).
            let listener = smol::Async::<std::net::TcpListener>::bind(addr)?;
            println!("listening on {}", listener.get_ref().local_addr()?);
            loop {
                let (tcp, _) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        smol::Timer::after(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                tcp.get_ref().set_nodelay(true)?;
                match which {
                    Crate::AsyncTungsteniteSmol => executor.spawn(async_tungstenite(tcp)).detach(),
                    _ => executor.spawn(tether(tether_futures::TcpStream::from(tcp))).detach(),
                }
            }
        }))
    }

    /// async-std with one worker thread (its default is one per core).
    pub(super) fn async_std(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
        // Read by async-std when its runtime starts, below.
        std::env::set_var("ASYNC_STD_THREAD_COUNT", "1");
        async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::bind(addr).await?;
            println!("listening on {}", listener.local_addr()?);
            loop {
                let (tcp, _) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        async_std::task::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                tcp.set_nodelay(true)?;
                async_std::task::spawn(tether(tcp));
            }
        })
    }

    /// tether-futures: the same loop as tether-tokio's (recv, feed).
    async fn tether<S>(tcp: S)
    where
        S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
    {
        let result = async {
            let mut ws = tether_futures::accept(tcp).await?;
            while let Some(message) = ws.recv().await {
                ws.feed(message?).await?;
            }
            Ok::<_, tether_futures::Error>(())
        };
        if let Err(e) = result.await {
            eprintln!("tether-futures: {e}");
        }
    }

    /// async-tungstenite: its examples/echo-server.rs (split, keep text and
    /// binary, forward the reader into the writer).
    async fn async_tungstenite(tcp: smol::Async<std::net::TcpStream>) {
        let result = async {
            let ws = async_tungstenite::accept_async(tcp).await?;
            let (write, read) = ws.split();
            read.try_filter(|msg| std::future::ready(msg.is_text() || msg.is_binary()))
                .forward(write)
                .await
        };
        match result.await {
            Ok(()) | Err(async_tungstenite::tungstenite::Error::ConnectionClosed) => {}
            Err(e) => eprintln!("async-tungstenite: {e}"),
        }
    }
}

/// tether-compio: compio's runtime on the one thread (io_uring, a
/// 64 x 64 KiB receive-buffer pool shared by every connection), one task
/// per connection, the same recv + feed loop as tether-tokio.
fn compio_server(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    tether_compio::runtime()?.block_on(async {
        let listener = compio::net::TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    eprintln!("accept: {e}");
                    compio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            tcp.set_nodelay(true)?;
            compio::runtime::spawn(async move {
                let result = async {
                    let mut ws = tether_compio::accept(tether_compio::CompioStream::from(tcp)).await?;
                    while let Some(message) = ws.recv().await {
                        ws.feed(message?).await?;
                    }
                    Ok::<_, tether_compio::Error>(())
                };
                if let Err(e) = result.await {
                    eprintln!("tether-compio: {e}");
                }
            })
            .detach();
        }
    })
}

/// tether-mio: the event loop on this thread, the echo callback of its
/// crate docs (each message of a read lent in place, answered with a copy
/// queued; one write per socket and wake-up): uWebSockets' design.
fn mio_server(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    struct Echo;
    impl tether_mio::Handler for Echo {
        fn message(&mut self, socket: &mut tether_mio::Socket<'_>, message: tether_mio::MessageRef<'_>) {
            if let Err(e) = socket.send(message) {
                eprintln!("tether-mio: {e}");
            }
        }
    }
    let server = tether_mio::Server::bind(addr)?;
    println!("listening on {}", server.local_addr()?);
    server.run(Echo)?;
    Ok(())
}

/// tether-blocking: a thread per connection (small stacks), recv + feed
/// (the next recv writes what was fed).
fn blocking_server(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = std::net::TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    for tcp in listener.incoming() {
        let tcp = match tcp {
            Ok(tcp) => tcp,
            Err(e) => {
                eprintln!("accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        tcp.set_nodelay(true)?;
        let spawned = std::thread::Builder::new().stack_size(128 * 1024).spawn(move || {
            let result = (|| {
                let mut ws = tether_blocking::accept(tcp)?;
                while let Some(message) = ws.recv() {
                    ws.feed(message?)?;
                }
                Ok::<_, tether_blocking::Error>(())
            })();
            if let Err(e) = result {
                eprintln!("tether-blocking: {e}");
            }
        });
        if let Err(e) = spawned {
            eprintln!("spawn: {e}");
        }
    }
    Ok(())
}
