//! The README's tokio example compiles (it is not run: it needs a network).
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

#[test]
fn readme_example_compiles() {
    let _ = run;
}
