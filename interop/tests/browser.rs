//! Headless Chromium (the Debian package, driven by `playwright-core` in
//! `interop/node/browser.mjs`) on the echo app's real page: Connect, send
//! ASCII, multi-byte UTF-8 and 1 MiB through the page's Send button, see each
//! echo in the communication log, Close Socket, see the clean close, with
//! permessage-deflate negotiated by Chromium.
//!
//! The echo app is the `echo-app` example of tether-tokio, built here by
//! cargo into this test's target directory and run on port 0; its own
//! routes are tested here too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use tether_interop::peer::{chromium, interop_dir, node};
use tether_interop::process::Process;
use tokio::process::Command;

/// Building the example, when the test run did not already.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// The whole browser session (launch, three echoes, close).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the echo-app example with this test's profile and target
/// directory and returns its path.
async fn build_echo_app() -> PathBuf {
    // target/<profile>/deps/browser-<hash>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap().to_owned();
    let target_dir = profile_dir.parent().unwrap().to_owned();
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(interop_dir().parent().unwrap())
        .args([
            "build",
            "--quiet",
            "-p",
            "tether-tokio",
            "--example",
            "echo-app",
            "--target-dir",
        ])
        .arg(&target_dir)
        .kill_on_drop(true);
    // Without the variables cargo set for this test: build scripts that
    // watch them (ring's watches CARGO_MANIFEST_DIR) would rerun, and the
    // next `cargo test` would rebuild them again.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_crates = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"].contains(&name.as_ref());
        if set_for_crates {
            command.env_remove(name.as_ref());
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    let status = tokio::time::timeout(BUILD_TIMEOUT, command.status())
        .await
        .expect("building the echo app timed out")
        .expect("cargo runs");
    assert!(status.success(), "building the echo app failed: {status}");
    profile_dir.join("examples").join("echo-app")
}

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

    // The server's side: one connection, opened and closed by the page with
    // its code and reason.
    server
        .stderr_line(": open", STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let closed = server
        .stderr_line(": closed", STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        closed.ends_with("closed (1000 \"bye\")"),
        "the echo app logged {closed:?}"
    );
}

/// Starts the echo app on port 0 and returns it with its address.
async fn start_echo_app() -> (Process, std::net::SocketAddr) {
    let app = build_echo_app().await;
    let mut command = Command::new(&app);
    command.arg("127.0.0.1:0").env("RUST_LOG", "off");
    let mut server = Process::spawn("echo app", command);
    let line = server
        .stderr_line("echo app on http://", STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|url| url.strip_prefix("http://"))
        .and_then(|url| url.strip_suffix('/'))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected address in {line:?}"));
    (server, addr)
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
