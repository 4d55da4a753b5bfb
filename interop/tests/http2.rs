//! WebSockets over HTTP/2 (RFC 8441) with real peers, on `tether serve`:
//! headless Chromium (Debian's) loading the echo page over `https://` with
//! the server's self-signed certificate, its WebSocket carried by HTTP/2
//! (asserted from the server's log), sending ASCII, UTF-8 and 1 MiB through
//! the page with permessage-deflate; and Node's own `http2` module doing the
//! extended CONNECT by hand, over TLS (ALPN h2) and over cleartext with
//! prior knowledge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tether_interop::cli::start_serve;
use tether_interop::peer::{chromium, interop_dir, node};
use tether_interop::process::Process;
use tokio::process::Command;

const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_the_page_websocket_over_http2() {
    let (chromium, node) = (chromium(), node());
    let (mut server, addr) = start_serve(&["--tls-self-signed", "--compression"]).await;
    let mut command = Command::new(node);
    command
        .arg(interop_dir().join("node/browser.mjs"))
        .arg(format!("https://{addr}/"))
        .env("TETHER_INTEROP_CHROMIUM", chromium);
    let mut browser = Process::spawn("browser script", command);
    let status = browser.wait(BROWSER_TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.success(),
        "the browser script failed ({status}):\n{}\n--- tether serve ---\n{}",
        browser.transcript(),
        server.transcript()
    );
    let closed = server
        .stderr_line("connection closed", STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for part in [
        "HTTP/2",
        "permessage-deflate",
        "close_code=1000",
        "close_reason=bye",
        "messages_in=3",
    ] {
        assert!(closed.contains(part), "{part} missing: the server logged {closed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_http2_extended_connect_by_hand() {
    for tls in [true, false] {
        let args: &[&str] = if tls { &["--tls-self-signed"] } else { &[] };
        let (mut server, addr) = start_serve(args).await;
        let scheme = if tls { "https" } else { "http" };
        let mut command = Command::new(node());
        command
            .arg(interop_dir().join("node/h2peer.mjs"))
            .arg(format!("{scheme}://{addr}"));
        let mut peer = Process::spawn("node h2peer", command);
        let ok = peer
            .stdout_line("OK ", STEP_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok, "echo, close 1000 bye");
        let line = server
            .stderr_line("connection closed", STEP_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(line.contains("HTTP/2") && line.contains("close_reason=bye"), "{line}");
    }
}
