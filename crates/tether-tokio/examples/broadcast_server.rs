//! Broadcast: every text or binary message any client sends to `/ws` is
//! published to every client connected to `/ws`, the sender included,
//! through a [`Hub`](tether_tokio::hub::Hub): encoded once, shared by all
//! connections, a bounded queue per client (a client that falls 4096
//! messages behind is closed with 1013, try again later).
//!
//! ```sh
//! cargo run --release -p tether-tokio --example broadcast-server -- 127.0.0.1:9002
//! ```

use tether_tokio::hub::{Delivery, Hub, HubConfig, SlowPolicy, Subscriber};
use tether_tokio::{Accept, CloseCode, Error, HttpResponse, Request, WebSocketStream};
use tokio::net::{TcpListener, TcpStream};

const TOPIC: &str = "/ws";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9002".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    // Tests and scripts wait for this line.
    eprintln!("broadcast server on ws://{}/ws", listener.local_addr()?);
    let hub = Hub::new(HubConfig::new(4096, SlowPolicy::Disconnect(CloseCode::TRY_AGAIN_LATER)));
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let hub = hub.clone();
        tokio::spawn(async move {
            // Subscribed before the handshake's answer leaves: a client that
            // sees its connection open receives everything published after.
            let subscriber = hub.subscriber();
            subscriber.subscribe(TOPIC);
            let Ok(ws) = tether_tokio::accept_with(tcp, route).await else {
                return;
            };
            let _ = relay(ws, &hub, &subscriber, TOPIC).await;
        });
    }
}

/// Only `/ws` is a WebSocket endpoint.
fn route(request: &Request) -> Result<Accept, HttpResponse> {
    match request.path() {
        TOPIC => Ok(Accept::new()),
        _ => Err(HttpResponse::new(http::StatusCode::NOT_FOUND)),
    }
}

/// One connection: what it sends is published to `topic`; what the topic
/// delivers is sent to it, a burst in one write.
async fn relay(
    mut ws: WebSocketStream<TcpStream>,
    hub: &Hub,
    subscriber: &Subscriber,
    topic: &str,
) -> Result<(), Error> {
    loop {
        tokio::select! {
            delivery = subscriber.recv() => match delivery {
                Delivery::Message(message) => ws.send_burst(&message, subscriber).await?,
                Delivery::Disconnect(code) => return ws.close(code, "too slow for the broadcast").await,
                _ => {}
            },
            incoming = ws.recv() => match incoming {
                Some(Ok(message)) => {
                    hub.publish(topic, message);
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}
