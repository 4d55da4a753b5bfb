//! After a large message, a waiting connection holds none of it: once the
//! application dropped the message, its memory goes, on the server that
//! echoed it (tether-tokio, tether-mio) and on the client that got it back
//! (tether-tokio), without waiting for the connection's next message.
//!
//! Counted with a counting global allocator, so this file holds one test:
//! nothing else allocates in the process while it counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alloc;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tether_driver::{CloseCode, Message, Server};
use tether_mio::{Accept, Handler, HttpResponse, MessageRef, Request, Socket};
use tether_tokio::{ClientBuilder, Tokio};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// Connections, each echoing one large message and then waiting.
const CONNECTIONS: usize = 32;
/// The large message: one frame, 1 MiB.
const LARGE: usize = 1 << 20;
/// The bound on what a waiting connection holds, both ends: a quarter of
/// the message. The threads' buffer caches count in it (at most 8
/// buffers of at most 128 KiB of each kind per thread, 4 MiB for the two
/// threads here, 128 KiB per connection at worst); the message itself,
/// held on either end, is four times the bound.
const MAX_HELD: usize = LARGE / 4;

/// An echo server on tether-mio's event loop.
struct Echo;

impl Handler for Echo {
    fn accept(&mut self, _: &Request, _: SocketAddr) -> Result<Accept, HttpResponse> {
        Ok(Accept::new())
    }

    fn message(&mut self, socket: &mut Socket<'_>, message: MessageRef<'_>) {
        let _ = socket.send(message);
    }
}

#[test]
fn a_waiting_connection_holds_nothing_of_the_large_message_it_got() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // tether-tokio's server, on the test's runtime.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = runtime.spawn(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let server = std::sync::Arc::new(Server::<Tokio>::new());
        while let Ok((tcp, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = server.accept(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.recv().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let held = runtime.block_on(held_per_connection(addr));
    accepting.abort();
    println!("tether-tokio server and clients: {held} bytes held per idle connection after a 1 MiB echo");
    assert!(held < MAX_HELD, "tether-tokio: {held} bytes held per connection");

    // tether-mio's server, on a thread of its own.
    let server = tether_mio::Server::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run(Echo).map(drop));
    let held = runtime.block_on(held_per_connection(addr));
    handle.stop().unwrap();
    thread.join().unwrap().unwrap();
    println!("tether-mio server, tether-tokio clients: {held} bytes held per idle connection after a 1 MiB echo");
    assert!(held < MAX_HELD, "tether-mio: {held} bytes held per connection");
}

/// Connects [`CONNECTIONS`] clients to the echo server at `addr`; each sends
/// a large message, gets it back and drops it. Returns the bytes allocated
/// per connection (both ends) while they then wait, over what they held
/// once connected (see [`MAX_HELD`] for the threads' buffer caches).
async fn held_per_connection(addr: SocketAddr) -> usize {
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let ws = ClientBuilder::new(&format!("ws://{addr}/"))
            .connect_timeout(Some(Duration::from_secs(10)))
            .connect()
            .await
            .unwrap();
        clients.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let connected = alloc::current();
    for (i, ws) in clients.iter_mut().enumerate() {
        let payload: Bytes = (0..LARGE).map(|k| (k + i) as u8).collect();
        ws.send(Message::Binary(payload.clone())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), ws.recv())
            .await
            .expect("the echo in time")
            .expect("an echo")
            .unwrap();
        assert_eq!(echoed, Message::Binary(payload));
    }
    // The servers' last writes complete and their connections wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = alloc::current();
    for mut ws in clients {
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    }
    idle.saturating_sub(connected) / CONNECTIONS
}
