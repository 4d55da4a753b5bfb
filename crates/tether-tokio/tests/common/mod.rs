//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tether_tokio::{Server, WebSocketConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Every test is bounded by this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// An echo server on loopback that serves `connections` connections.
pub async fn echo_server(connections: usize, config: WebSocketConfig) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (tcp, _) = listener.accept().await.unwrap();
            let server = Server::new().config(config.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(mut ws) = server.accept(tcp).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
                while ws.next().await.is_some() {}
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    (addr, task)
}

/// A config without keepalive and idle timeout, for tests that count
/// frames or wait in paused time.
pub fn quiet() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    config.connection.idle_timeout = None;
    config
}

/// A transport that counts the writes made to it.
pub struct CountingWrites {
    pub inner: tokio::io::DuplexStream,
    pub writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for CountingWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingWrites {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client and a server connected over an in-memory pipe of `pipe` bytes
/// each way.
pub async fn pair(
    client: WebSocketConfig,
    server: WebSocketConfig,
    pipe: usize,
) -> (
    tether_tokio::WebSocketStream<tokio::io::DuplexStream>,
    tether_tokio::WebSocketStream<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(pipe);
    let accept = tokio::spawn(async move { Server::new().config(server).accept(b).await.unwrap() });
    let request = tether_tokio::ClientRequest::new("ws://pipe.invalid/").unwrap();
    let client = tether_tokio::ClientBuilder::from_request(request)
        .config(client)
        .connect_over(a)
        .await
        .unwrap();
    (client, accept.await.unwrap())
}
