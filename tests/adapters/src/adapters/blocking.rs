//! tether-blocking: a thread per connection.

use std::net::TcpListener;
use std::sync::mpsc;

use tether_blocking::tls::{ServerConnection, StreamOwned};
use tether_blocking::{BlockingIo, ClientBuilder, Message, Received, Server, WebSocket};
use tether_driver::{CloseCode, Closed, DataKind, Error};

use super::{accept_options, config};
use crate::{parse_close_request, ClientSettings, EchoServer, Options, ServerEnd, Ws};

/// The echo server: a listener thread and a thread per connection.
pub fn start_server(options: Options) -> EchoServer {
    let (ends_tx, ends) = mpsc::channel();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { break };
            let ends = ends_tx.clone();
            std::thread::spawn(move || {
                let mut server = Server::new().config(config(options));
                if let Some(size) = options.read_buffer_size {
                    server = server.read_buffer_size(size);
                }
                let accept = accept_options(options.deflate);
                if options.tls {
                    let Ok(tls) = ServerConnection::new(crate::tls::server_config()) else {
                        return;
                    };
                    let stream = StreamOwned::new(tls, tcp);
                    if let Ok(ws) = server.accept_with(stream, |_| Ok(accept)) {
                        echo(ws, &ends);
                    }
                } else if let Ok(ws) = server.accept_with(tcp, |_| Ok(accept)) {
                    echo(ws, &ends);
                }
            });
        }
    });
    EchoServer { addr, ends }
}

/// The echo loop with the blocking API.
fn echo<S: BlockingIo>(mut ws: WebSocket<S>, ends: &mpsc::Sender<ServerEnd>) {
    let mut facts = facts(&ws);
    let mut error = None;
    while let Some(event) = ws.recv_event() {
        match event {
            Ok(Received::Message(message)) => {
                if let Some((code, reason)) = parse_close_request(&message) {
                    if let Err(e) = ws.close(code, &reason) {
                        error = Some(e.to_string());
                    }
                    break;
                }
                if message == Message::Text(crate::TWICE_REQUEST.into()) {
                    let sent = ws
                        .feed_with(crate::compressible(), tether_blocking::SendOptions::uncompressed())
                        .and_then(|()| ws.feed(crate::compressible()));
                    if let Err(e) = sent {
                        error = Some(e.to_string());
                        break;
                    }
                    continue;
                }
                if let Err(e) = ws.feed(message) {
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

/// What a blocking connection tells about itself.
fn facts<S: BlockingIo>(ws: &WebSocket<S>) -> crate::Facts {
    crate::Facts {
        stats: ws.stats(),
        local_addr: ws.local_addr().ok(),
        peer_addr: ws.peer_addr().ok(),
        tls: ws.tls_info(),
        deflate: ws.deflate_params(),
    }
}

/// The client.
pub fn connect(url: &str, options: Options) -> Box<dyn Ws> {
    let mut builder = ClientBuilder::new(url).config(config(options));
    if let Some(size) = options.read_buffer_size {
        builder = builder.read_buffer_size(size);
    }
    if options.deflate {
        builder = builder.permessage_deflate(tether_blocking::DeflateConfig::default());
    }
    if options.tls {
        builder = builder.tls_config(crate::tls::client_config());
    }
    Box::new(builder.connect().unwrap())
}

impl<S: BlockingIo> Ws for WebSocket<S> {
    fn send(&mut self, message: Message) -> Result<(), Error> {
        Self::send(self, message)
    }

    fn send_fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) -> Result<(), Error> {
        Self::send_fragment(self, kind, data, fin)
    }

    fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        Self::ping(self, payload.to_vec())
    }

    fn recv_event(&mut self) -> Option<Result<Received, Error>> {
        Self::recv_event(self)
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        Self::close(self, code, reason)
    }

    fn close_info(&self) -> Option<Closed> {
        Self::close_info(self).cloned()
    }

    fn extensions(&self) -> Vec<String> {
        Self::extensions(self).map(str::to_owned).collect()
    }

    fn facts(&self) -> crate::Facts {
        facts(self)
    }
}

/// The client with [`ClientSettings`]; the error instead of a panic.
pub fn try_connect(url: &str, settings: ClientSettings) -> Result<Box<dyn Ws>, Error> {
    let builder = ClientBuilder::from(settings.builder::<tether_blocking::Blocking>(url));
    Ok(Box::new(builder.connect()?))
}

/// The server handshake on `tcp` (see [`crate::try_accept`]).
pub fn try_accept(
    tcp: std::net::TcpStream,
    handshake: tether_driver::HandshakeConfig,
    answer: Option<tether_driver::HttpResponse>,
) -> Result<(), Error> {
    let server = Server::new()
        .config(config(Options::default()))
        .handshake_config(handshake);
    let mut ws = server.accept_with(tcp, move |_| match answer {
        Some(response) => Err(response),
        None => Ok(accept_options(false)),
    })?;
    ws.recv().transpose().map(drop)
}
