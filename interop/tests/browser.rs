//! Headless Chromium (the Debian package, driven by `playwright-core` in
//! `interop/node/browser.mjs`) on the echo app's real page: Connect, send
//! ASCII, multi-byte UTF-8 and 1 MiB through the page's Send button, see each
//! echo in the communication log, Close Socket, see the clean close, with
//! permessage-deflate negotiated by Chromium.
//!
//! The echo app is `tether serve` (crates/tether-cli), built here by cargo
//! into this test's target directory and run on port 0; its own routes are
//! tested here too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tether_interop::cli::start_serve;
use tether_interop::peer::{chromium, interop_dir, node};
use tether_interop::process::Process;
use tokio::process::Command;

/// The whole browser session (launch, three echoes, close).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_uses_the_echo_app_page() {
    let chromium = chromium();
    let node = node();
    let (mut server, addr) = start_echo_app().await;
    let page = format!("http://{addr}/");

    let mut command = Command::new(node);
    command
        .arg(interop_dir().join("node/browser.mjs"))
        .arg(&page)
        .env("TETHER_INTEROP_CHROMIUM", chromium);
    let mut browser = Process::spawn("browser script", command);
    let status = browser.wait(BROWSER_TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
    let transcript = browser.transcript();
    assert!(
        status.success(),
        "the browser script failed ({status}):\n{transcript}\n--- echo app ---\n{}",
        server.transcript()
    );
    let extensions = browser.stdout_line("EXTENSIONS ", STEP_TIMEOUT).await.unwrap();
    assert!(
        extensions.starts_with("permessage-deflate"),
        "Chromium did not negotiate permessage-deflate: {extensions:?}"
    );
    // Lengths in UTF-16 code units, as JavaScript counts them.
    for chars in [14, 20, 1 << 20] {
        let echo = browser.stdout_line("ECHO ", STEP_TIMEOUT).await.unwrap();
        assert_eq!(echo, format!("{chars} chars"), "{transcript}");
    }
    // The page shows the code and the reason the server echoed.
    assert_eq!(
        browser.stdout_line("CLOSE ", STEP_TIMEOUT).await.unwrap(),
        "code 1000, reason: bye"
    );

    // The server's side: one connection, closed by the page with its code
    // and reason, over permessage-deflate.
    let closed = server
        .stderr_line("connection closed", STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for part in ["close_code=1000", "close_reason=bye", "permessage-deflate", "HTTP/1.1"] {
        assert!(closed.contains(part), "the echo app logged {closed:?}");
    }
}

/// Starts the echo app (`tether serve`, accepting permessage-deflate) on
/// port 0 and returns it with its address.
async fn start_echo_app() -> (Process, std::net::SocketAddr) {
    start_serve(&["--compression"]).await
}

/// One plain HTTP request; the response's status line, headers and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, tcp.read_to_end(&mut response))
        .await
        .expect("the echo app answered and closed")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The echo app's own routes, on the app itself (not the library): the page
/// at `/`, the WebSocket endpoint at `/ws` (echoing text and binary), 400
/// for a plain request to `/ws`, 404 elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_app_routes() {
    use tether_tokio::{CloseCode, Message};
    let (_server, addr) = start_echo_app().await;

    let (head, body) = get(addr, "/").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/html"), "{head}");
    assert!(body.contains("<title>tether echo</title>") && body.contains("Communication Log"));

    let (head, _) = get(addr, "/ws").await;
    assert!(head.starts_with("HTTP/1.1 400 "), "a plain request to /ws: {head}");
    let (head, _) = get(addr, "/nope").await;
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");

    let mut ws = tether_tokio::connect(&format!("ws://{addr}/ws")).await.unwrap();
    for message in [
        Message::Text("hello".into()),
        Message::Binary(vec![0, 1, 2, 255].into()),
    ] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), message);
    }
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert_eq!(
        ws.close_info().unwrap().reason,
        "done",
        "the app echoes the close reason"
    );
}
