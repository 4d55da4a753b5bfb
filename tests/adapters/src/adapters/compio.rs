//! tether-compio (io_uring through compio; plain TCP only: the shell has
//! no TLS yet).

use std::future::Future;
use std::sync::mpsc;

use tether_compio::{ClientBuilder, Compio, CompioStream};

use super::{accept_options, config, echo, server, AsyncWs, Executor};
use crate::{EchoServer, Options, Ws};

/// A compio runtime (tether-compio's, with its buffer pool): a client's
/// operations belong to the runtime that started them, so every call of a
/// client runs on the same one.
pub struct CompioExecutor(compio::runtime::Runtime);

impl CompioExecutor {
    fn new() -> Self {
        Self(tether_compio::runtime().unwrap())
    }
}

impl Executor for CompioExecutor {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

/// The echo server, on its own thread and runtime.
pub fn start_server(options: Options) -> EchoServer {
    assert!(!options.tls, "tether-compio has no TLS");
    let (ends_tx, ends) = mpsc::channel();
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = CompioExecutor::new();
        runtime.block_on(async move {
            let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let ends = ends_tx.clone();
                compio::runtime::spawn(async move {
                    let server = server::<Compio>(options);
                    let accept = accept_options(options.deflate);
                    if let Ok(ws) = server.accept_with(CompioStream::from(tcp), |_| Ok(accept)).await {
                        echo(ws, ends).await;
                    }
                })
                .detach();
            }
        });
    });
    EchoServer {
        addr: addr_rx.recv().unwrap(),
        ends,
    }
}

/// The client, its every call run on its own compio runtime.
pub fn connect(url: &str, options: Options) -> Box<dyn Ws> {
    assert!(!options.tls, "tether-compio has no TLS");
    let mut builder = ClientBuilder::new(url).config(config(options));
    if let Some(size) = options.read_buffer_size {
        builder = builder.read_buffer_size(size);
    }
    if options.deflate {
        builder = builder.permessage_deflate(tether_compio::DeflateConfig::default());
    }
    let executor = CompioExecutor::new();
    let ws = executor.block_on(builder.connect()).unwrap();
    Box::new(AsyncWs { ws, executor })
}
