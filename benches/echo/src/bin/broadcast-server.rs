//! One broadcast server per crate, on the same footing as `echo-server`
//! (tokio's current-thread runtime, TCP_NODELAY, one task per connection):
//! every message any client sends is sent to every connected client, the
//! sender included.
//!
//! - tether: the `broadcast-server` example's loop: a `Hub` topic, the
//!   message prepared once (`PreparedMessage`, the frame's bytes shared),
//!   each connection forwarding what its bounded queue holds in one write.
//! - tokio-tungstenite and fastwebsockets as their users write a broadcast:
//!   an unbounded channel per connection, the message cloned into each,
//!   and a writer task per connection that encodes and sends each message
//!   (tokio-tungstenite's `examples/server.rs` chat; fastwebsockets through
//!   its split halves, the obligated pongs and closes through the channel).
//!
//! ```sh
//! broadcast-server <tether|tungstenite|fastwebsockets> <addr>
//! ```
//!
//! Prints `listening on ADDR` on stdout once it accepts.

use std::net::SocketAddr;

use tokio::net::TcpListener;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(addr)) = (args.next(), args.next()) else {
        return Err("usage: broadcast-server <tether|tungstenite|fastwebsockets> <addr>".into());
    };
    tether_echo_bench::raise_fd_limit();
    let addr: SocketAddr = addr.parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(name, addr))
}

async fn serve(name: String, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let tether_hub = tether::hub();
    let peers = tungstenite::Peers::default();
    let fast_peers = fastwebsockets::Peers::default();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tcp.set_nodelay(true)?;
        match name.as_str() {
            "tether" => tokio::spawn(tether::connection(tcp, tether_hub.clone())),
            "tungstenite" => tokio::spawn(tungstenite::connection(tcp, peers.clone())),
            "fastwebsockets" => tokio::spawn(fastwebsockets::connection(tcp, fast_peers.clone())),
            other => return Err(format!("unknown crate {other:?}").into()),
        };
    }
}

mod tether {
    use tether_tokio::hub::{Delivery, Hub, HubConfig, SlowPolicy};
    use tether_tokio::CloseCode;
    use tokio::net::TcpStream;

    const TOPIC: &str = "all";

    pub(crate) fn hub() -> Hub {
        Hub::new(HubConfig::new(4096, SlowPolicy::Disconnect(CloseCode::TRY_AGAIN_LATER)))
    }

    pub(crate) async fn connection(tcp: TcpStream, hub: Hub) {
        let result = async {
            let subscriber = hub.subscriber();
            subscriber.subscribe(TOPIC);
            let mut ws = tether_tokio::accept(tcp).await?;
            loop {
                tokio::select! {
                    delivery = subscriber.recv() => match delivery {
                        Delivery::Message(message) => ws.send_burst(&message, &subscriber).await?,
                        Delivery::Disconnect(code) => return ws.close(code, "too slow").await,
                        _ => {}
                    },
                    incoming = ws.recv() => match incoming {
                        Some(Ok(message)) => {
                            hub.publish(TOPIC, message);
                        }
                        Some(Err(e)) => return Err(e),
                        None => return Ok(()),
                    },
                }
            }
        };
        if let Err(e) = result.await {
            eprintln!("tether: {e}");
        }
    }
}

mod tungstenite {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
    use tokio_tungstenite::tungstenite::Message;

    /// tokio-tungstenite's `examples/server.rs`: a map of peers to their
    /// unbounded senders.
    #[derive(Clone, Default)]
    pub(crate) struct Peers {
        map: Arc<Mutex<HashMap<u64, UnboundedSender<Message>>>>,
        next: Arc<AtomicU64>,
    }

    pub(crate) async fn connection(tcp: TcpStream, peers: Peers) {
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let id = peers.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = unbounded_channel();
        peers.map.lock().unwrap().insert(id, tx);
        let (mut write, mut read) = ws.split();
        let writer = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if write.send(message).await.is_err() {
                    break;
                }
            }
        });
        while let Some(Ok(message)) = read.next().await {
            if message.is_text() || message.is_binary() {
                for tx in peers.map.lock().unwrap().values() {
                    let _ = tx.send(message.clone());
                }
            }
        }
        peers.map.lock().unwrap().remove(&id);
        writer.abort();
    }
}

mod fastwebsockets {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use fastwebsockets::{upgrade, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

    /// What a connection's writer task sends: a broadcast message, or a
    /// frame the reader is obliged to send (pong, close).
    enum Out {
        Message(Arc<(OpCode, Bytes)>),
        Frame(Frame<'static>),
    }

    #[derive(Clone, Default)]
    pub(crate) struct Peers {
        map: Arc<Mutex<HashMap<u64, UnboundedSender<Arc<(OpCode, Bytes)>>>>>,
        next: Arc<AtomicU64>,
    }

    pub(crate) async fn connection(tcp: TcpStream, peers: Peers) {
        let io = hyper_util::rt::TokioIo::new(tcp);
        let service = service_fn(move |req| upgrade(req, peers.clone()));
        let conn = http1::Builder::new().serve_connection(io, service).with_upgrades();
        if let Err(e) = conn.await {
            eprintln!("fastwebsockets (http): {e:?}");
        }
    }

    async fn upgrade(mut req: Request<Incoming>, peers: Peers) -> Result<Response<Empty<Bytes>>, WebSocketError> {
        let (response, fut) = upgrade::upgrade(&mut req)?;
        tokio::spawn(async move {
            if let Err(e) = run(fut, peers).await {
                eprintln!("fastwebsockets: {e}");
            }
        });
        Ok(response)
    }

    async fn run(fut: upgrade::UpgradeFut, peers: Peers) -> Result<(), WebSocketError> {
        let ws = fut.await?;
        let (read, mut write) = ws.split(tokio::io::split);
        let mut read = FragmentCollectorRead::new(read);
        let id = peers.next.fetch_add(1, Ordering::Relaxed);
        let (broadcast_tx, mut broadcast_rx) = unbounded_channel::<Arc<(OpCode, Bytes)>>();
        let (obligated_tx, mut obligated_rx) = unbounded_channel::<Frame<'static>>();
        peers.map.lock().unwrap().insert(id, broadcast_tx);
        let writer = tokio::spawn(async move {
            loop {
                let out = tokio::select! {
                    Some(frame) = obligated_rx.recv() => Out::Frame(frame),
                    Some(message) = broadcast_rx.recv() => Out::Message(message),
                    else => break,
                };
                let written = match out {
                    Out::Frame(frame) => write.write_frame(frame).await,
                    // Encoded for this connection, the payload borrowed.
                    Out::Message(message) => {
                        let (opcode, bytes) = (message.0, &message.1);
                        write
                            .write_frame(Frame::new(true, opcode, None, Payload::Borrowed(bytes)))
                            .await
                    }
                };
                if written.is_err() {
                    break;
                }
            }
        });
        let mut send_fn = |frame: Frame<'_>| {
            let owned = Frame::new(frame.fin, frame.opcode, None, Payload::Owned(frame.payload.to_vec()));
            let sent = obligated_tx.send(owned).map_err(|_| "writer gone");
            async move { sent }
        };
        loop {
            let frame = match read.read_frame(&mut send_fn).await {
                Ok(frame) => frame,
                Err(_) => break,
            };
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => {
                    let message = Arc::new((frame.opcode, Bytes::copy_from_slice(&frame.payload)));
                    for tx in peers.map.lock().unwrap().values() {
                        let _ = tx.send(message.clone());
                    }
                }
                _ => {}
            }
        }
        peers.map.lock().unwrap().remove(&id);
        drop(obligated_tx);
        let _ = writer.await;
        Ok(())
    }
}
