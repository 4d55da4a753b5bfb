//! tether-futures, on smol and on async-std.

use std::future::Future;
use std::sync::mpsc;

use tether_futures::tls::TlsAcceptor;
use tether_futures::{ClientBuilder, FuturesIo};

use super::{accept_options, config, echo, server, AsyncWs, Executor};
use crate::{ClientSettings, EchoServer, Options, Ws};

/// Which executor runs the futures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    /// `smol::block_on` (and `smol::spawn` for server connections).
    Smol,
    /// `async_std::task::block_on` (and `async_std::task::spawn`).
    AsyncStd,
}

impl Executor for Exec {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self {
            Self::Smol => smol::block_on(future),
            Self::AsyncStd => async_std::task::block_on(future),
        }
    }
}

fn spawn<F: Future<Output = ()> + Send + 'static>(exec: Exec, future: F) {
    match exec {
        Exec::Smol => smol::spawn(future).detach(),
        Exec::AsyncStd => {
            async_std::task::spawn(future);
        }
    }
}

/// The echo server, on its own thread. On smol the listener is async-net's;
/// on async-std it is async-std's own, so that each runtime serves with its
/// own sockets.
pub fn start_server(exec: Exec, options: Options) -> EchoServer {
    let (ends_tx, ends) = mpsc::channel();
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        exec.block_on(async move {
            let acceptor = TlsAcceptor::from(crate::tls::server_config());
            match exec {
                Exec::Smol => {
                    let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    while let Ok((tcp, _)) = listener.accept().await {
                        spawn(exec, serve(tcp, acceptor.clone(), options, ends_tx.clone()));
                    }
                }
                Exec::AsyncStd => {
                    let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    while let Ok((tcp, _)) = listener.accept().await {
                        spawn(exec, serve(tcp, acceptor.clone(), options, ends_tx.clone()));
                    }
                }
            }
        });
    });
    EchoServer {
        addr: addr_rx.recv().unwrap(),
        ends,
    }
}

async fn serve<S>(tcp: S, acceptor: TlsAcceptor, options: Options, ends: mpsc::Sender<crate::ServerEnd>)
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + Send + 'static,
    FuturesIo: tether_driver::TransportAddrs<S>,
{
    let server = server::<FuturesIo>(options);
    let accept = accept_options(options.deflate);
    if options.tls {
        let Ok(tls) = acceptor.accept(tcp).await else { return };
        if let Ok(ws) = server.accept_with(tls, |_| Ok(accept)).await {
            echo(ws, ends).await;
        }
    } else if let Ok(ws) = server.accept_with(tcp, |_| Ok(accept)).await {
        echo(ws, ends).await;
    }
}

/// The client, its every call run on `exec`.
pub fn connect(exec: Exec, url: &str, options: Options) -> Box<dyn Ws> {
    let mut builder = ClientBuilder::new(url).config(config(options));
    if let Some(size) = options.read_buffer_size {
        builder = builder.read_buffer_size(size);
    }
    if options.deflate {
        builder = builder.permessage_deflate(tether_futures::DeflateConfig::default());
    }
    if options.tls {
        builder = builder.tls_config(crate::tls::client_config());
    }
    let ws = exec.block_on(builder.connect()).unwrap();
    Box::new(AsyncWs { ws, executor: exec })
}

/// The client with [`ClientSettings`], its every call run on `exec`; the
/// error instead of a panic.
pub fn try_connect(exec: Exec, url: &str, settings: ClientSettings) -> Result<Box<dyn Ws>, tether_driver::Error> {
    let builder = settings.builder::<tether_futures::FuturesIo>(url);
    let ws = exec.block_on(builder.connect())?;
    Ok(Box::new(AsyncWs { ws, executor: exec }))
}

/// The server handshake on `tcp`, run on `exec` (see [`crate::try_accept`]).
pub fn try_accept(
    exec: Exec,
    tcp: std::net::TcpStream,
    handshake: tether_driver::HandshakeConfig,
    answer: Option<tether_driver::HttpResponse>,
) -> Result<(), tether_driver::Error> {
    exec.block_on(async move {
        let tcp = async_net::TcpStream::try_from(tcp).unwrap();
        let server = server::<FuturesIo>(Options::default()).handshake_config(handshake);
        let mut ws = server
            .accept_with(tcp, move |_| match answer {
                Some(response) => Err(response),
                None => Ok(accept_options(false)),
            })
            .await?;
        ws.recv().await.transpose().map(drop)
    })
}
