//! Runs every case of an Autobahn fuzzing server as agent
//! `tether-blocking`, then asks it to write its report:
//!
//! ```sh
//! cargo run --release -p tether-blocking --example autobahn-client -- ws://127.0.0.1:9001
//! ```

use tether_blocking::{ClientBuilder, ClientSocket, DeflateConfig, Message, WebSocketConfig};

const AGENT: &str = "tether-blocking";

fn open(url: &str) -> Result<ClientSocket, tether_blocking::Error> {
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
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let base = base.trim_end_matches('/');

    let mut ws = open(&format!("{base}/getCaseCount"))?;
    let mut count = 0u32;
    for message in &mut ws {
        if let Message::Text(text) = message? {
            count = text.parse()?;
        }
    }
    eprintln!("{count} cases");

    for case in 1..=count {
        let mut ws = match open(&format!("{base}/runCase?case={case}&agent={AGENT}")) {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("case {case}: {e}");
                continue;
            }
        };
        while let Some(message) = ws.recv() {
            match message {
                Ok(message) => {
                    if ws.feed(message).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        while ws.recv().is_some() {}
    }

    let mut ws = open(&format!("{base}/updateReports?agent={AGENT}"))?;
    while ws.recv().is_some() {}
    eprintln!("report updated");
    Ok(())
}
