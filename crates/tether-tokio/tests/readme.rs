//! The README's tokio examples compile (it is not run: it needs a network).
#![allow(dead_code)]

use futures_util::StreamExt;
use tether_tokio::{CloseCode, Message};

async fn run() -> Result<(), tether_tokio::Error> {
    let mut ws = tether_tokio::connect("wss://echo.example/ws").await?;
    ws.send(Message::Text("hello".into())).await?;
    if let Some(message) = ws.next().await {
        println!("received {:?}", message?);
    }
    ws.close(CloseCode::NORMAL, "done").await?;
    Ok(())
}

async fn serve(tcp: tokio::net::TcpStream) -> Result<(), tether_tokio::Error> {
    let mut ws = tether_tokio::accept(tcp).await?;
    while let Some(message) = ws.recv().await {
        ws.feed(message?).await?;
    }
    Ok(())
}

#[test]
fn readme_examples_compile() {
    let _ = run;
    let _ = serve;
}
