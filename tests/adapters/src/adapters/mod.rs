//! Each adapter's echo server and client, and the echo loop they share.

pub mod blocking;
pub mod compio;
pub mod futures;
pub mod tokio;

use std::future::Future;
use std::sync::mpsc;

use tether_driver::{Accept, DeflateConfig, Error, Received, RuntimeIo, Server, TransportAddrs, WebSocketConfig};

use crate::{parse_close_request, Options, ServerEnd, Timers};

/// The connection settings of every test server and client: no keepalive
/// pings (they would interleave with the scenario's own), no idle or send
/// timeout unless [`Options::timers`] asks for them.
pub fn config(options: Options) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    let timers = options.timers.unwrap_or(Timers::OFF);
    config.connection.ping_interval = timers.ping_interval;
    config.connection.idle_timeout = timers.idle_timeout;
    config.connection.send_timeout = timers.send_timeout;
    config
}

/// The accept options of a test server.
pub fn accept_options(deflate: bool) -> Accept {
    if deflate {
        Accept::new().permessage_deflate(DeflateConfig::default())
    } else {
        Accept::new()
    }
}

/// A server of runtime `R` with the test settings.
pub fn server<R: tether_driver::Runtime>(options: Options) -> Server<R> {
    let server = Server::new().config(config(options));
    match options.read_buffer_size {
        Some(size) => server.read_buffer_size(size),
        None => server,
    }
}

/// Runs `future` to completion on a fresh single-threaded executor of the
/// adapter: what the [`Ws`](crate::Ws) implementations of async adapters
/// do for each call.
pub trait Executor {
    /// Runs `future` to completion.
    fn block_on<F: Future>(&self, future: F) -> F::Output;
}

/// The echo loop of every async server: echoes messages (answers written
/// together by `feed` + the next receive), closes when asked by a
/// [`close_request`](crate::close_request), and reports the end.
pub async fn echo<S, R: RuntimeIo<S> + TransportAddrs<S>>(
    mut ws: tether_driver::WebSocketStream<S, R>,
    ends: mpsc::Sender<ServerEnd>,
) {
    let mut facts = async_facts(&ws);
    let mut error = None;
    while let Some(event) = ws.recv_event().await {
        match event {
            Ok(Received::Message(message)) => {
                if let Some((code, reason)) = parse_close_request(&message) {
                    if let Err(e) = ws.close(code, &reason).await {
                        error = Some(e.to_string());
                    }
                    break;
                }
                if message == tether_driver::Message::Text(crate::TWICE_REQUEST.into()) {
                    let uncompressed = tether_driver::SendOptions::uncompressed();
                    if let Err(e) = ws.feed_with(crate::compressible(), uncompressed).await {
                        error = Some(e.to_string());
                        break;
                    }
                    if let Err(e) = ws.feed(crate::compressible()).await {
                        error = Some(e.to_string());
                        break;
                    }
                    continue;
                }
                if let Err(e) = ws.feed(message).await {
                    error = Some(e.to_string());
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    facts.stats = ws.stats();
    let _ = ends.send(ServerEnd {
        closed: ws.close_info().cloned(),
        error,
        facts,
    });
}

/// What an async adapter's connection tells about itself.
pub fn async_facts<S, R: TransportAddrs<S>>(ws: &tether_driver::WebSocketStream<S, R>) -> crate::Facts {
    crate::Facts {
        stats: ws.stats(),
        local_addr: ws.local_addr().ok(),
        peer_addr: ws.peer_addr().ok(),
        tls: ws.tls_info(),
        deflate: ws.deflate_params(),
    }
}

/// A [`Ws`](crate::Ws) over an async adapter's stream: each call runs on
/// the adapter's executor.
pub struct AsyncWs<S, R: tether_driver::Runtime, E> {
    /// The connection.
    pub ws: tether_driver::WebSocketStream<S, R>,
    /// Its executor.
    pub executor: E,
}

impl<S, R: RuntimeIo<S> + TransportAddrs<S>, E: Executor> crate::Ws for AsyncWs<S, R, E> {
    fn send(&mut self, message: tether_driver::Message) -> Result<(), Error> {
        self.executor.block_on(self.ws.send(message))
    }

    fn send_fragment(&mut self, kind: tether_driver::DataKind, data: &[u8], fin: bool) -> Result<(), Error> {
        self.executor.block_on(self.ws.send_fragment(kind, data, fin))
    }

    fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.executor.block_on(self.ws.ping(payload.to_vec()))
    }

    fn recv_event(&mut self) -> Option<Result<Received, Error>> {
        self.executor.block_on(self.ws.recv_event())
    }

    fn close(&mut self, code: tether_driver::CloseCode, reason: &str) -> Result<(), Error> {
        self.executor.block_on(self.ws.close(code, reason))
    }

    fn close_info(&self) -> Option<tether_driver::Closed> {
        self.ws.close_info().cloned()
    }

    fn extensions(&self) -> Vec<String> {
        self.ws.extensions().map(str::to_owned).collect()
    }

    fn facts(&self) -> crate::Facts {
        async_facts(&self.ws)
    }
}
