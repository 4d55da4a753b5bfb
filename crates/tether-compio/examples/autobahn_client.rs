//! Runs every case of an Autobahn fuzzing server as agent `tether-compio`,
//! then asks it to write its report:
//!
//! ```sh
//! cargo run --release -p tether-compio --example autobahn-client -- ws://127.0.0.1:9001
//! ```

use tether_compio::{ClientBuilder, Config, DeflateConfig, Message, WebSocketConfig};

#[path = "support/echo.rs"]
mod echo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    tether_compio::runtime()?.block_on(run_all(base.trim_end_matches('/'), "tether-compio"))
}

/// The client's settings for every connection: no keepalive pings (they
/// would show up in the case reports), and permessage-deflate offered with
/// client_no_context_takeover, which lets a server choose any of the
/// RFC 7692 parameter combinations.
fn builder(url: &str) -> ClientBuilder {
    let mut connection = Config::default();
    connection.ping_interval = None;
    let mut deflate = DeflateConfig::default();
    deflate.client_no_context_takeover = true;
    ClientBuilder::new(url)
        .config(WebSocketConfig::with_connection(connection))
        .permessage_deflate(deflate)
}

async fn run_all(base: &str, agent: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut count = 0u32;
    let mut ws = builder(&format!("{base}/getCaseCount")).connect().await?;
    while let Some(message) = ws.recv().await {
        if let Message::Text(text) = message? {
            count = text.parse()?;
        }
    }
    eprintln!("{count} cases");
    for case in 1..=count {
        match builder(&format!("{base}/runCase?case={case}&agent={agent}"))
            .connect()
            .await
        {
            Ok(ws) => echo::echo(ws).await,
            Err(e) => eprintln!("case {case}: {e}"),
        }
    }
    let ws = builder(&format!("{base}/updateReports?agent={agent}"))
        .connect()
        .await?;
    echo::echo(ws).await;
    eprintln!("report updated");
    Ok(())
}
