//! A chat node: a message sent to `/ws/ROOM` on any node reaches every
//! client of `/ws/ROOM` on every node, the sender included. Nodes share the
//! rooms through Redis pub/sub: a client's message is published to the
//! Redis channel `tether:room:ROOM`; each node subscribes to
//! `tether:room:*` and hands what comes to its local [`Hub`], which sends
//! it, encoded once, to its clients of that room.
//!
//! ```sh
//! cargo run --release -p tether-tokio --example chat-node -- --bind 127.0.0.1:9101 --redis redis://127.0.0.1:6379
//! ```
//!
//! Stateless nodes behind a TCP or TLS load balancer (sticky or not): any
//! node serves any room, Redis carries the fan-out between them. Redis
//! pub/sub keeps no history: a node that dies loses its connections (their
//! clients reconnect, with backoff, to another node) and what was in
//! flight to them; a client that must not miss anything resumes from the
//! last id it saw, which needs a log (Redis Streams, `XADD`/`XREAD`) rather
//! than pub/sub.

use futures_util::StreamExt;
use redis::AsyncCommands;
use tether_tokio::hub::{Delivery, Hub, HubConfig, SlowPolicy, Subscriber};
use tether_tokio::{Accept, CloseCode, Error, HttpResponse, Message, Request, WebSocketStream};
use tokio::net::{TcpListener, TcpStream};

const CHANNEL_PREFIX: &str = "tether:room:";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut bind = "127.0.0.1:9101".to_owned();
    let mut redis_url = "redis://127.0.0.1:6379".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--bind", Some(value)) => bind = value,
            ("--redis", Some(value)) => redis_url = value,
            _ => return Err(format!("usage: chat-node --bind ADDR --redis redis://HOST:PORT (got {arg:?})").into()),
        }
    }
    let client = redis::Client::open(redis_url.as_str())?;
    let publisher = client.get_multiplexed_async_connection().await?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe(format!("{CHANNEL_PREFIX}*")).await?;

    let hub = Hub::new(HubConfig::new(4096, SlowPolicy::Disconnect(CloseCode::TRY_AGAIN_LATER)));
    // Redis to the local hub: one task, in the order Redis delivers.
    let local = hub.clone();
    let from_redis = tokio::spawn(async move {
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Some(room) = msg.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
                continue;
            };
            if let Some(message) = decode(msg.get_payload_bytes()) {
                local.publish(room, message);
            }
        }
    });

    let listener = TcpListener::bind(&bind).await?;
    eprintln!(
        "chat node on ws://{}/ws/ROOM (redis {redis_url})",
        listener.local_addr()?
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = accepted?;
                tcp.set_nodelay(true)?;
                let (hub, publisher) = (hub.clone(), publisher.clone());
                tokio::spawn(async move {
                    // Subscribed to the room before the handshake's answer
                    // leaves: a client that sees its connection open receives
                    // everything published after.
                    let subscriber = hub.subscriber();
                    let mut room = String::new();
                    let accepted = tether_tokio::accept_with(tcp, |request: &Request| {
                        let accept = route(request, &mut room)?;
                        subscriber.subscribe(&room);
                        Ok(accept)
                    })
                    .await;
                    let Ok(ws) = accepted else { return };
                    let _ = relay(ws, &subscriber, &room, publisher).await;
                });
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    from_redis.abort();
    Ok(())
}

/// `/ws/ROOM` is a room; anything else is 404.
fn route(request: &Request, room: &mut String) -> Result<Accept, HttpResponse> {
    match request.path().strip_prefix("/ws/") {
        Some(name) if !name.is_empty() && !name.contains('/') => {
            *room = name.to_owned();
            Ok(Accept::new())
        }
        _ => Err(HttpResponse::new(http::StatusCode::NOT_FOUND)),
    }
}

/// One client: what it sends goes to Redis; what the room delivers goes to
/// it, a burst in one write.
async fn relay(
    mut ws: WebSocketStream<TcpStream>,
    subscriber: &Subscriber,
    room: &str,
    mut redis: redis::aio::MultiplexedConnection,
) -> Result<(), Error> {
    let channel = format!("{CHANNEL_PREFIX}{room}");
    loop {
        tokio::select! {
            delivery = subscriber.recv() => match delivery {
                Delivery::Message(message) => ws.send_burst(&message, subscriber).await?,
                Delivery::Disconnect(code) => return ws.close(code, "too slow for the room").await,
                _ => {}
            },
            incoming = ws.recv() => match incoming {
                Some(Ok(message)) => {
                    let published: Result<(), _> = redis.publish(&channel, encode(&message)).await;
                    if let Err(e) = published {
                        // Without Redis the room cannot be served: say so.
                        eprintln!("redis publish failed: {e}");
                        return ws.close(CloseCode::TRY_AGAIN_LATER, "broker unavailable").await;
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}

/// A message on the Redis channel: `t` or `b`, then the payload.
fn encode(message: &Message) -> Vec<u8> {
    let (kind, payload): (u8, &[u8]) = match message {
        Message::Text(text) => (b't', text.as_str().as_bytes()),
        Message::Binary(data) => (b'b', &data[..]),
    };
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

fn decode(payload: &[u8]) -> Option<Message> {
    match payload.split_first()? {
        (b't', text) => std::str::from_utf8(text).ok().map(|t| Message::Text(t.into())),
        (b'b', data) => Some(Message::Binary(bytes::Bytes::copy_from_slice(data))),
        _ => None,
    }
}
