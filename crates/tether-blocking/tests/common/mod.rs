//! Helpers: a watchdog for every test, and an echo server thread.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tether_blocking::{Closed, Error, Server};

/// No test may take longer.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `test` on a thread and fails if it takes longer than
/// [`TEST_TIMEOUT`] (a blocking test that hangs would hang the suite).
pub(crate) fn bounded<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(test());
    });
    match rx.recv_timeout(TEST_TIMEOUT) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test did not finish in {TEST_TIMEOUT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test panicked"),
    }
}

/// A loopback listener and its `ws://` URL.
pub(crate) fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    (listener, url)
}

/// An echo server for one connection: answers every message with `feed`
/// until the connection ends, then returns how it ended.
pub(crate) fn echo_server(server: Server) -> (String, JoinHandle<Result<Option<Closed>, Error>>) {
    let (listener, url) = listener();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept()?;
        let mut ws = server.accept(tcp)?;
        assert!(ws.peer_addr()?.ip().is_loopback());
        while let Some(message) = ws.recv() {
            ws.feed(message?)?;
        }
        Ok(ws.close_info().cloned())
    });
    (url, handle)
}
