//! The pub/sub hub on futures-io runtimes (smol and async-std): three
//! clients subscribed through a hub server, one publishes, all receive in
//! order; the hub needs no tokio.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use common::Exec;
use futures_util::future::{select, Either};
use tether_futures::hub::{Delivery, Hub, HubConfig};
use tether_futures::{ClientBuilder, CloseCode, Message};

on_both_executors!(publish_reaches_every_subscriber);

async fn publish_reaches_every_subscriber(exec: Exec) {
    let hub = Hub::new(HubConfig::default());
    let listener = exec.listen().await;
    let url = listener.url();
    let server_hub = hub.clone();
    let _server = exec.spawn(async move {
        let mut connections = Vec::new();
        for _ in 0..3 {
            let tcp = listener.accept().await;
            let hub = server_hub.clone();
            connections.push(exec.spawn(async move {
                let mut ws = tether_futures::accept(tcp).await.unwrap();
                let subscriber = hub.subscriber();
                subscriber.subscribe("t");
                loop {
                    let next = {
                        let delivery = std::pin::pin!(subscriber.recv());
                        let incoming = std::pin::pin!(ws.recv());
                        match select(delivery, incoming).await {
                            Either::Left((delivery, _)) => Either::Left(delivery),
                            Either::Right((incoming, _)) => Either::Right(incoming),
                        }
                    };
                    match next {
                        Either::Left(Delivery::Message(message)) => ws.send_prepared(&message).await.unwrap(),
                        Either::Left(_) => break,
                        Either::Right(Some(Ok(message))) => {
                            hub.publish("t", message);
                        }
                        Either::Right(_) => break,
                    }
                }
            }));
        }
        for connection in connections {
            connection.await;
        }
    });
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(ClientBuilder::new(&url).connect().await.unwrap());
    }
    // All three subscribed: wait until the hub has them.
    while hub.subscribers("t") < 3 {
        futures_lite::future::yield_now().await;
    }
    for i in 0..100 {
        clients[0].send(Message::Text(format!("m{i}").into())).await.unwrap();
    }
    for ws in &mut clients {
        for i in 0..100 {
            let got = ws.recv().await.unwrap().unwrap();
            assert_eq!(got, Message::Text(format!("m{i}").into()));
        }
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    }
}
