//! tether-tokio.

use std::future::Future;
use std::sync::mpsc;

use tether_tokio::tls::TlsAcceptor;
use tether_tokio::ClientBuilder;

use super::{accept_options, config, echo, server, AsyncWs, Executor};
use crate::{ClientSettings, EchoServer, Options, Ws};

/// A current-thread tokio runtime.
pub struct TokioExecutor(tokio::runtime::Runtime);

impl TokioExecutor {
    fn new() -> Self {
        Self(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        )
    }
}

impl Executor for TokioExecutor {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

/// The echo server, on its own thread and runtime.
pub fn start_server(options: Options) -> EchoServer {
    let (ends_tx, ends) = mpsc::channel();
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = TokioExecutor::new();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let acceptor = TlsAcceptor::from(crate::tls::server_config());
            while let Ok((tcp, _)) = listener.accept().await {
                let ends = ends_tx.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let server = server::<tether_tokio::Tokio>(options);
                    let accept = accept_options(options.deflate);
                    if options.tls {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        if let Ok(ws) = server.accept_with(tls, |_| Ok(accept)).await {
                            echo(ws, ends).await;
                        }
                    } else if let Ok(ws) = server.accept_with(tcp, |_| Ok(accept)).await {
                        echo(ws, ends).await;
                    }
                });
            }
        });
    });
    EchoServer {
        addr: addr_rx.recv().unwrap(),
        ends,
    }
}

/// The client.
pub fn connect(url: &str, options: Options) -> Box<dyn Ws> {
    let executor = TokioExecutor::new();
    let mut builder = ClientBuilder::new(url).config(config(options));
    if let Some(size) = options.read_buffer_size {
        builder = builder.read_buffer_size(size);
    }
    if options.deflate {
        builder = builder.permessage_deflate(tether_tokio::DeflateConfig::default());
    }
    if options.tls {
        builder = builder.tls_config(crate::tls::client_config());
    }
    let ws = executor.block_on(builder.connect()).unwrap();
    Box::new(AsyncWs { ws, executor })
}

/// The client with [`ClientSettings`]; the error instead of a panic.
pub fn try_connect(url: &str, settings: ClientSettings) -> Result<Box<dyn Ws>, tether_driver::Error> {
    let executor = TokioExecutor::new();
    let builder = settings.builder::<tether_tokio::Tokio>(url);
    let ws = executor.block_on(builder.connect())?;
    Ok(Box::new(AsyncWs { ws, executor }))
}

/// The server handshake on `tcp` (see [`crate::try_accept`]).
pub fn try_accept(
    tcp: std::net::TcpStream,
    handshake: tether_driver::HandshakeConfig,
    answer: Option<tether_driver::HttpResponse>,
) -> Result<(), tether_driver::Error> {
    let executor = TokioExecutor::new();
    executor.block_on(async move {
        tcp.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
        let server = server::<tether_tokio::Tokio>(Options::default()).handshake_config(handshake);
        let mut ws = server
            .accept_with(tcp, move |_| match answer {
                Some(response) => Err(response),
                None => Ok(accept_options(false)),
            })
            .await?;
        ws.recv().await.transpose().map(drop)
    })
}

/// The echo server over HTTP/2 (RFC 8441): every WebSocket a stream of an
/// HTTP/2 connection (`tether_tokio::http2::serve_connection`), over TLS
/// with ALPN `h2`, or cleartext with prior knowledge.
pub fn start_h2_server(options: Options) -> EchoServer {
    let (ends_tx, ends) = mpsc::channel();
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = TokioExecutor::new();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let mut tls_config = (*crate::tls::server_config()).clone();
            tls_config.alpn_protocols = vec![b"h2".to_vec()];
            let acceptor = TlsAcceptor::from(std::sync::Arc::new(tls_config));
            while let Ok((tcp, peer)) = listener.accept().await {
                let ends = ends_tx.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let server = server::<tether_tokio::Tokio>(options);
                    let accept = accept_options(options.deflate);
                    let addrs = tether_tokio::hyper::ConnectionAddrs {
                        local: tcp.local_addr().unwrap(),
                        peer,
                    };
                    let route = move |_: &tether_tokio::Request| Ok(accept.clone());
                    let handler = move |ws| echo(ws, ends.clone());
                    if options.tls {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let _ = tether_tokio::http2::serve_connection(tls, Some(addrs), &server, route, handler).await;
                    } else {
                        let _ = tether_tokio::http2::serve_connection(tcp, Some(addrs), &server, route, handler).await;
                    }
                });
            }
        });
    });
    EchoServer {
        addr: addr_rx.recv().unwrap(),
        ends,
    }
}

/// The client over HTTP/2: one HTTP/2 connection per WebSocket here (the
/// scenario opens them one at a time), TLS with ALPN `h2` or prior
/// knowledge.
pub fn connect_h2(url: &str, options: Options) -> Box<dyn Ws> {
    let executor = TokioExecutor::new();
    let ws = executor.block_on(async {
        let request = tether_tokio::ClientRequest::new(url).unwrap();
        let tcp = tokio::net::TcpStream::connect((request.host(), request.port()))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let connection = if options.tls {
            let mut tls_config = (*crate::tls::client_config()).clone();
            tls_config.alpn_protocols = vec![b"h2".to_vec()];
            let name = tether_tokio::tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tether_tokio::tls::TlsConnector::from(std::sync::Arc::new(tls_config))
                .connect(name, tcp)
                .await
                .unwrap();
            tether_tokio::http2::Http2Connection::handshake(tls, None)
                .await
                .unwrap()
        } else {
            tether_tokio::http2::Http2Connection::handshake(tcp, None)
                .await
                .unwrap()
        };
        let mut config = config(options);
        if let Some(size) = options.read_buffer_size {
            config.read_buffer_size = size;
        }
        let request = if options.deflate {
            request.permessage_deflate(tether_tokio::DeflateConfig::default())
        } else {
            request
        };
        connection.config(config).open(request).await.unwrap()
    });
    Box::new(AsyncWs { ws, executor })
}
