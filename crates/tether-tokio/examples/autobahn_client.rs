//! Runs every case of an Autobahn fuzzing server as agent `tether-tokio`,
//! then asks it to write its report:
//!
//! ```sh
//! cargo run --release -p tether-tokio --example autobahn-client -- ws://127.0.0.1:9001
//! ```

use futures_util::StreamExt;
use tether_tokio::{ClientBuilder, ClientStream, DeflateConfig, Message, WebSocketConfig};

const AGENT: &str = "tether-tokio";

async fn open(url: &str) -> Result<ClientStream, tether_tokio::Error> {
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    // Offer permessage-deflate; promising not to use context takeover
    // (client_no_context_takeover) lets a server choose any of the RFC 7692
    // parameter combinations.
    let mut deflate = DeflateConfig::default();
    deflate.client_no_context_takeover = true;
    ClientBuilder::new(url)
        .config(config)
        .permessage_deflate(deflate)
        .connect()
        .await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let base = base.trim_end_matches('/');

    let mut ws = open(&format!("{base}/getCaseCount")).await?;
    let mut count = 0u32;
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message? {
            count = text.parse()?;
        }
    }
    eprintln!("{count} cases");

    for case in 1..=count {
        let mut ws = match open(&format!("{base}/runCase?case={case}&agent={AGENT}")).await {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("case {case}: {e}");
                continue;
            }
        };
        while let Some(message) = ws.next().await {
            match message {
                Ok(message) => {
                    if ws.feed(message).await.is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        while ws.next().await.is_some() {}
    }

    let mut ws = open(&format!("{base}/updateReports?agent={AGENT}")).await?;
    while ws.next().await.is_some() {}
    eprintln!("report updated");
    Ok(())
}
