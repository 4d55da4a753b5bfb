//! The event loop against real clients on loopback: tether-blocking's
//! client, and raw TCP where the client must misbehave.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tether_mio::{
    Accept, CloseCause, CloseCode, Closed, DataKind, DeflateConfig, Fragment, Handle, Handler, HandshakeConfig,
    HandshakeError, HttpResponse, Loop, Message, MessageRef, Request, SendOptions, Server, Socket, SocketId,
    StatusCode, WebSocketConfig,
};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What the test handler saw.
#[derive(Debug, Default)]
struct Seen {
    opened: Vec<SocketId>,
    closed: Vec<(SocketId, Closed)>,
    subprotocols: Vec<Option<String>>,
    extensions: Vec<Vec<String>>,
    max_buffered: usize,
    pieces: usize,
    pongs: usize,
    rejected: Vec<HandshakeError>,
    drains: usize,
}

/// Echoes; "close:CODE:REASON" closes; "to:N:TEXT" sends TEXT to the N-th
/// connection opened; "stop" stops the server. Requests for paths other
/// than /ws get 400; "chat" is accepted as subprotocol when offered;
/// permessage-deflate when `deflate`.
struct Test {
    seen: Arc<Mutex<Seen>>,
    deflate: bool,
    /// Hand streamed pieces to the default (reassembly) or count them and
    /// echo each piece's length.
    count_pieces: bool,
    /// Chunks still to stream to a connection ("stream:N").
    streams: std::collections::HashMap<SocketId, usize>,
}

/// What "stream:N" keeps queued at most before it waits for `drain`.
const STREAM_BOUND: usize = 256 * 1024;
const STREAM_CHUNK: usize = 64 * 1024;

impl Test {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Streams the chunks still due while the output is under the bound.
    fn pump(&mut self, socket: &mut Socket<'_>) {
        let Some(left) = self.streams.get_mut(&socket.id()) else {
            return;
        };
        let chunk = Message::Binary(vec![9u8; STREAM_CHUNK].into());
        while *left > 0 && socket.buffered_amount() < STREAM_BOUND {
            assert!(socket.send_message(chunk.clone(), SendOptions::default()).is_ok());
            *left -= 1;
            let buffered = socket.buffered_amount();
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.max_buffered = seen.max_buffered.max(buffered);
        }
        if *left > 0 {
            socket.request_drain();
        }
    }
}

impl Handler for Test {
    fn accept(&mut self, request: &Request, _peer: SocketAddr) -> std::result::Result<Accept, HttpResponse> {
        if request.path() != "/ws" {
            return Err(HttpResponse::new(StatusCode::BAD_REQUEST).body("WebSocket endpoint is /ws"));
        }
        let mut accept = Accept::new();
        if request.protocols().contains(&"chat") {
            accept = accept.subprotocol("chat");
        }
        if self.deflate {
            accept = accept.permessage_deflate(DeflateConfig::default());
        }
        Ok(accept)
    }

    fn rejected(&mut self, _peer: SocketAddr, error: &HandshakeError) {
        self.seen().rejected.push(error.clone());
    }

    fn open(&mut self, socket: &mut Socket<'_>) {
        let mut seen = self.seen();
        seen.opened.push(socket.id());
        seen.subprotocols.push(socket.subprotocol().map(str::to_owned));
        seen.extensions.push(socket.extensions().map(str::to_owned).collect());
    }

    fn message(&mut self, socket: &mut Socket<'_>, message: MessageRef<'_>) {
        if let MessageRef::Text(text) = message {
            if let Some(rest) = text.strip_prefix("close:") {
                let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
                let code = CloseCode::from(code.parse::<u16>().unwrap_or(1000));
                assert!(socket.close(code, reason).is_ok());
                return;
            }
            if let Some(rest) = text.strip_prefix("to:") {
                let (n, text) = rest.split_once(':').unwrap_or((rest, ""));
                let target = self.seen().opened[n.parse::<usize>().unwrap_or(0)];
                socket.event_loop().send_to(target, Message::Text(text.into()));
                return;
            }
            if let Some(rest) = text.strip_prefix("pieces:") {
                // The text back in three pieces, cut inside its characters.
                let bytes = rest.as_bytes();
                let (a, b) = (bytes.len() / 3, 2 * bytes.len() / 3);
                for (piece, fin) in [(&bytes[..a], false), (&bytes[a..b], false), (&bytes[b..], true)] {
                    assert!(socket.send_fragment(DataKind::Text, piece, fin).is_ok());
                }
                // Another message while one is open is refused.
                assert!(socket.send_fragment(DataKind::Binary, b"x", false).is_ok());
                assert!(matches!(socket.send("nope"), Err(tether_mio::SendError::FragmentOrder)));
                assert!(socket.send_fragment(DataKind::Binary, b"y", true).is_ok());
                return;
            }
            if let Some(n) = text.strip_prefix("stream:") {
                self.streams.insert(socket.id(), n.parse().unwrap_or(0));
                self.pump(socket);
                return;
            }
            if text == "stop" {
                socket.event_loop().stop();
                return;
            }
            if text == "secret" {
                let _ = socket.send_with("secret", SendOptions::uncompressed());
                return;
            }
        }
        let _ = socket.send(message);
        let buffered = socket.buffered_amount();
        let mut seen = self.seen();
        seen.max_buffered = seen.max_buffered.max(buffered);
    }

    fn fragment(&mut self, socket: &mut Socket<'_>, fragment: Fragment) {
        if self.count_pieces {
            self.seen().pieces += 1;
            if fragment.last {
                let pieces = self.seen().pieces;
                let _ = socket.send(format!("pieces:{pieces}").as_str());
            }
        } else if let Some(message) = socket.reassemble(fragment) {
            self.message(socket, MessageRef::from(&message));
        }
    }

    fn drain(&mut self, socket: &mut Socket<'_>) {
        self.seen().drains += 1;
        self.pump(socket);
    }

    fn pong(&mut self, _socket: &mut Socket<'_>, _payload: &[u8]) {
        self.seen().pongs += 1;
    }

    fn close(&mut self, _lp: &mut Loop, id: SocketId, closed: &Closed) {
        self.seen().closed.push((id, closed.clone()));
    }
}

struct Running {
    addr: SocketAddr,
    handle: Handle,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<std::io::Result<Test>>>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (bounded) until `f` holds for what the handler saw.
    fn wait_for(&self, what: &str, f: impl Fn(&Seen) -> bool) -> Result {
        let start = Instant::now();
        while !f(&self.seen()) {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("timed out waiting for {what}: {:?}", self.seen()).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops the server and waits for its thread.
    fn stop(mut self) -> Result<Test> {
        self.handle.stop()?;
        let thread = self.thread.take().ok_or("stopped twice")?;
        Ok(thread.join().map_err(|_| "the server thread panicked")??)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test: stop the loop so that its thread ends too.
        if let Some(thread) = self.thread.take() {
            let _ = self.handle.stop();
            let _ = thread.join();
        }
    }
}

fn serve(config: WebSocketConfig, handshake: HandshakeConfig, deflate: bool, count_pieces: bool) -> Result<Running> {
    let server = Server::bind("127.0.0.1:0")?.config(config).handshake_config(handshake);
    let addr = server.local_addr()?;
    let handle = server.handle();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let handler = Test {
        seen: Arc::clone(&seen),
        deflate,
        count_pieces,
        streams: Default::default(),
    };
    let thread = std::thread::spawn(move || server.run(handler));
    Ok(Running {
        addr,
        handle,
        seen,
        thread: Some(thread),
    })
}

fn serve_default() -> Result<Running> {
    serve(WebSocketConfig::default(), HandshakeConfig::default(), false, false)
}

/// Pings after 100 ms without a byte from the peer, the idle timeout
/// after 400 ms.
fn serve_quick_keepalive() -> Result<Running> {
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = Some(Duration::from_millis(100));
    config.connection.idle_timeout = Some(Duration::from_millis(400));
    serve(config, HandshakeConfig::default(), false, false)
}

/// A raw client: the opening handshake by hand; returns the stream and
/// the response head.
fn raw_handshake(addr: SocketAddr, path: &str, extra: &str) -> Result<(TcpStream, String)> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    // In two reads of the server: its handshake waits (with its timeout
    // armed) before the request is whole.
    tcp.write_all(&request.as_bytes()[..10])?;
    std::thread::sleep(Duration::from_millis(30));
    tcp.write_all(&request.as_bytes()[10..])?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok((tcp, String::from_utf8(head)?))
}

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [1u8, 2, 3, 4];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

#[test]
fn echoes_text_and_binary_of_every_size() -> Result {
    let server = serve_default()?;
    let mut ws = tether_blocking::connect(&server.url("/ws"))?;
    for size in [0usize, 1, 125, 126, 65_535, 65_536, 1 << 20] {
        let text: String = "é".repeat(size / 2);
        ws.send(Message::Text(text.clone().into()))?;
        assert_eq!(
            ws.recv().transpose()?,
            Some(Message::Text(text.into())),
            "text of {size}"
        );
        let binary: Vec<u8> = (0..size).map(|i| i as u8).collect();
        ws.send(Message::Binary(binary.clone().into()))?;
        assert_eq!(
            ws.recv().transpose()?,
            Some(Message::Binary(binary.into())),
            "binary of {size}"
        );
    }
    // Many at once: one read delivers several, each answered.
    for i in 0..1000 {
        ws.feed(Message::Text(format!("m{i}").into()))?;
    }
    ws.flush()?;
    for i in 0..1000 {
        assert_eq!(ws.recv().transpose()?, Some(Message::Text(format!("m{i}").into())));
    }
    ws.close(CloseCode::NORMAL, "done")?;
    server.wait_for("the close callback", |seen| seen.closed.len() == 1)?;
    let (id, closed) = server.seen().closed[0].clone();
    assert_eq!(id, server.seen().opened[0]);
    assert!(closed.is_clean(), "{closed:?}");
    assert_eq!((closed.code, closed.reason.as_str()), (CloseCode::NORMAL, "done"));
    server.stop()?;
    Ok(())
}

#[test]
fn other_paths_get_400_and_origins_are_checked() -> Result {
    let mut handshake = HandshakeConfig::default();
    handshake.allowed_origins = Some(vec!["https://example.com".to_owned()]);
    let server = serve(WebSocketConfig::default(), handshake, false, false)?;
    let (mut tcp, head) = raw_handshake(server.addr, "/other", "")?;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let mut body = String::new();
    tcp.read_to_string(&mut body)?;
    assert_eq!(body, "WebSocket endpoint is /ws");
    let (_, head) = raw_handshake(server.addr, "/ws", "Origin: https://evil.example\r\n")?;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (_, head) = raw_handshake(server.addr, "/ws", "Origin: https://example.com\r\n")?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Not a WebSocket request at all.
    let mut tcp = TcpStream::connect(server.addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)?;
    assert!(
        answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 426"),
        "{answer}"
    );
    server.wait_for("one connection opened", |seen| seen.opened.len() == 1)?;
    // The handler learns of the failed handshakes (not of its own 400).
    server.wait_for("two rejections", |seen| seen.rejected.len() == 2)?;
    let rejected = server.seen().rejected.clone();
    assert!(
        matches!(rejected[0], HandshakeError::OriginNotAllowed(_)),
        "{rejected:?}"
    );
    assert_eq!(rejected[1].status().map(|s| s.as_u16()), Some(400), "{rejected:?}");
    server.stop()?;
    Ok(())
}

#[test]
fn closes_with_a_code_and_a_reason() -> Result {
    let server = serve_default()?;
    let mut ws = tether_blocking::connect(&server.url("/ws"))?;
    ws.send(Message::Text("close:4001:bye now".into()))?;
    // The server's close arrives; the client's end is clean.
    while let Some(message) = ws.recv() {
        if let Err(e) = message {
            return Err(e.into());
        }
    }
    let closed = ws.close_info().ok_or("no close info")?.clone();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (CloseCode::from(4001), "bye now")
    );
    server.wait_for("the close callback", |seen| seen.closed.len() == 1)?;
    let closed = server.seen().closed[0].1.clone();
    assert!(closed.is_clean(), "{closed:?}");
    assert_eq!(closed.code, CloseCode::from(4001));
    server.stop()?;
    Ok(())
}

#[test]
fn keepalive_pings_and_the_idle_timeout() -> Result {
    let server = serve_quick_keepalive()?;
    // A peer that answers pings stays.
    let mut ws = tether_blocking::ClientBuilder::new(&server.url("/ws"))
        .ping_interval(None)
        .idle_timeout(None)
        .connect()?;
    for _ in 0..4 {
        // Quiet for longer than the ping interval, shorter than the idle
        // timeout: the server pings, and the client's recv answers.
        std::thread::sleep(Duration::from_millis(250));
        ws.send(Message::Text("hi".into()))?;
        assert_eq!(ws.recv().transpose()?, Some(Message::Text("hi".into())));
    }
    assert!(server.seen().closed.is_empty(), "{:?}", server.seen().closed);
    assert!(server.seen().pongs > 0, "the live client's pongs reached the handler");
    drop(ws);
    server.wait_for("the live client's end", |seen| seen.closed.len() == 1)?;
    // A silent peer that never answers: pings, then the idle timeout.
    let (mut tcp, head) = raw_handshake(server.addr, "/ws", "")?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let started = Instant::now();
    let mut received = Vec::new();
    tcp.read_to_end(&mut received)?;
    let waited = started.elapsed();
    assert!(
        received.starts_with(&[0x89, 0x00]),
        "a keepalive ping first: {received:?}"
    );
    assert!(waited >= Duration::from_millis(350), "closed after {waited:?}");
    server.wait_for("the idle connection's close callback", |seen| seen.closed.len() == 2)?;
    let closed = server.seen().closed[1].1.clone();
    assert_eq!(closed.cause, CloseCause::IdleTimeout, "{closed:?}");
    server.stop()?;
    Ok(())
}

#[test]
fn a_peer_that_does_not_read_is_not_read_and_times_out() -> Result {
    let mut config = WebSocketConfig::default();
    config.write_buffer_limit = 64 * 1024;
    config.connection.send_timeout = Some(Duration::from_millis(500));
    let server = serve(config, HandshakeConfig::default(), false, false)?;
    let (mut tcp, head) = raw_handshake(server.addr, "/ws", "")?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Small receive window on our side, and never a read: the server's
    // answers stay in its output; it must stop taking our messages.
    let message = frame(0x2, &[7u8; 16 * 1024]);
    tcp.set_write_timeout(Some(Duration::from_millis(300)))?;
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match tcp.write_all(&message) {
            Ok(()) => sent += message.len(),
            Err(_) => break,
        }
    }
    assert!(sent < 64 << 20, "the server kept reading: {sent} bytes taken");
    server.wait_for("the send timeout", |seen| seen.closed.len() == 1)?;
    let seen = server.seen();
    let (_, closed) = &seen.closed[0];
    assert_eq!(closed.cause, CloseCause::SendTimeout, "{closed:?}");
    // Within the limit plus the one answer that crossed it.
    assert!(
        seen.max_buffered <= 64 * 1024 + 16 * 1024 + 14,
        "output grew to {} bytes",
        seen.max_buffered
    );
    drop(seen);
    server.stop()?;
    Ok(())
}

#[test]
fn large_messages_stream_in_pieces() -> Result {
    let mut config = WebSocketConfig::default();
    config.connection.stream_threshold = Some(4096);
    // Reassembled by the default `fragment`.
    let server = serve(config.clone(), HandshakeConfig::default(), false, false)?;
    let mut ws = tether_blocking::connect(&server.url("/ws"))?;
    let big: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
    ws.send(Message::Binary(big.clone().into()))?;
    assert_eq!(ws.recv().transpose()?, Some(Message::Binary(big.clone().into())));
    ws.send(Message::Text("small".into()))?;
    assert_eq!(ws.recv().transpose()?, Some(Message::Text("small".into())));
    drop(ws);
    server.stop()?;
    // Taken piece by piece.
    let server = serve(config, HandshakeConfig::default(), false, true)?;
    let mut ws = tether_blocking::connect(&server.url("/ws"))?;
    ws.send(Message::Binary(big.into()))?;
    let Some(Message::Text(answer)) = ws.recv().transpose()? else {
        return Err("no answer".into());
    };
    let pieces: usize = answer.strip_prefix("pieces:").ok_or("not a count")?.parse()?;
    assert!(pieces > 1, "{answer}");
    drop(ws);
    server.stop()?;
    Ok(())
}

#[test]
fn sends_to_other_connections_from_callbacks_and_threads() -> Result {
    let server = serve_default()?;
    let mut first = tether_blocking::connect(&server.url("/ws"))?;
    server.wait_for("the first open", |seen| seen.opened.len() == 1)?;
    let mut second = tether_blocking::connect(&server.url("/ws"))?;
    server.wait_for("the second open", |seen| seen.opened.len() == 2)?;
    first.send(Message::Text("to:1:hello second".into()))?;
    assert_eq!(second.recv().transpose()?, Some(Message::Text("hello second".into())));
    // From another thread, through the handle.
    let id = server.seen().opened[0];
    let handle = server.handle.clone();
    std::thread::spawn(move || handle.send(id, Message::Binary(vec![1, 2, 3].into())))
        .join()
        .map_err(|_| "the sending thread panicked")??;
    assert_eq!(first.recv().transpose()?, Some(Message::Binary(vec![1, 2, 3].into())));
    server.handle.close(id, CloseCode::from(4002), "from a thread")?;
    assert!(first.recv().is_none());
    assert_eq!(first.close_info().map(|c| c.code), Some(CloseCode::from(4002)));
    // A connection that is gone: dropped, nothing else happens.
    server.handle.send(id, Message::Text("late".into()))?;
    second.send(Message::Text("still here".into()))?;
    assert_eq!(second.recv().transpose()?, Some(Message::Text("still here".into())));
    drop((first, second));
    server.stop()?;
    Ok(())
}

#[test]
fn stop_closes_every_connection_with_going_away() -> Result {
    let server = serve_default()?;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(tether_blocking::connect(&server.url("/ws"))?);
    }
    server.wait_for("five opens", |seen| seen.opened.len() == 5)?;
    let server_handle = server.handle.clone();
    let seen_first = server.seen().opened[0];
    clients[2].send(Message::Text("stop".into()))?;
    for client in &mut clients {
        // The server's close is answered by the client's recv.
        while let Some(message) = client.recv() {
            message?;
        }
        assert_eq!(client.close_info().map(|c| c.code), Some(CloseCode::GOING_AWAY));
    }
    let thread = {
        let mut server = server;
        server.thread.take().ok_or("no thread")?
    };
    let handler = thread.join().map_err(|_| "the server thread panicked")??;
    assert_eq!(
        server_handle
            .send(seen_first, Message::Text("after the end".into()))
            .map_err(|e| e.kind()),
        Err(std::io::ErrorKind::NotConnected)
    );
    let seen = handler.seen();
    assert_eq!(seen.closed.len(), 5);
    assert!(
        seen.closed.iter().all(|(_, closed)| closed.is_clean()),
        "{:?}",
        seen.closed
    );
    // Nothing listens any more.
    Ok(())
}

#[test]
fn subprotocol_and_opt_in_compression() -> Result {
    let server = serve(WebSocketConfig::default(), HandshakeConfig::default(), true, false)?;
    let mut ws = tether_blocking::ClientBuilder::new(&server.url("/ws"))
        .protocols(["chat"])
        .permessage_deflate(DeflateConfig::default())
        .connect()?;
    assert_eq!(ws.subprotocol(), Some("chat"));
    assert_eq!(ws.extensions().collect::<Vec<_>>(), ["permessage-deflate"]);
    let text = "compressible ".repeat(1000);
    ws.send(Message::Text(text.clone().into()))?;
    assert_eq!(ws.recv().transpose()?, Some(Message::Text(text.into())));
    let before = ws.stats().wire_bytes_received;
    ws.send(Message::Text("secret".into()))?;
    assert_eq!(ws.recv().transpose()?, Some(Message::Text("secret".into())));
    // Sent uncompressed: a 2-byte header and the 6 bytes as they are.
    assert_eq!(ws.stats().wire_bytes_received - before, 8);
    server.wait_for("the open", |seen| seen.opened.len() == 1)?;
    assert_eq!(server.seen().subprotocols, [Some("chat".to_owned())]);
    assert_eq!(server.seen().extensions, [vec!["permessage-deflate".to_owned()]]);
    drop(ws);
    server.stop()?;
    // Without the handler's opt-in, no compression is negotiated.
    let server = serve_default()?;
    let ws = tether_blocking::ClientBuilder::new(&server.url("/ws"))
        .permessage_deflate(DeflateConfig::default())
        .connect()?;
    assert_eq!(ws.extensions().count(), 0);
    assert_eq!(ws.subprotocol(), None);
    drop(ws);
    server.stop()?;
    Ok(())
}

#[test]
fn invalid_frames_close_with_the_right_code() -> Result {
    let server = serve_default()?;
    let (mut tcp, head) = raw_handshake(server.addr, "/ws", "")?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Text that is not UTF-8: 1007.
    tcp.write_all(&frame(0x1, &[0xff, 0xfe]))?;
    let mut received = Vec::new();
    tcp.read_to_end(&mut received)?;
    assert_eq!(
        (received[0], &received[2..4]),
        (0x88, &[0x03, 0xef][..]),
        "{received:?}"
    );
    server.wait_for("the close callback", |seen| seen.closed.len() == 1)?;
    assert_eq!(server.seen().closed[0].1.code, CloseCode::from(1007));
    server.stop()?;
    Ok(())
}

#[test]
fn loops_on_clones_of_one_listener_share_its_connections() -> Result {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    let mut seens = Vec::new();
    for _ in 0..2 {
        let server = Server::new(listener.try_clone()?)?;
        handles.push(server.handle());
        let seen = Arc::new(Mutex::new(Seen::default()));
        seens.push(Arc::clone(&seen));
        let handler = Test {
            seen,
            deflate: false,
            count_pieces: false,
            streams: Default::default(),
        };
        threads.push(std::thread::spawn(move || server.run(handler)));
    }
    drop(listener);
    for i in 0..20 {
        let mut ws = tether_blocking::connect(&format!("ws://{addr}/ws"))?;
        ws.send(Message::Text(format!("hello {i}").into()))?;
        assert_eq!(ws.recv().transpose()?, Some(Message::Text(format!("hello {i}").into())));
    }
    for handle in &handles {
        handle.stop()?;
    }
    for thread in threads {
        thread.join().map_err(|_| "a server thread panicked")??;
    }
    let opened: usize = seens
        .iter()
        .map(|seen| seen.lock().map_or(0, |seen| seen.opened.len()))
        .sum();
    assert_eq!(opened, 20);
    Ok(())
}

#[test]
fn sends_a_message_in_pieces() -> Result {
    let server = serve_default()?;
    let mut ws = tether_blocking::connect(&server.url("/ws"))?;
    let text = "pieces:ééé€€€😀😀";
    ws.send(Message::Text(text.into()))?;
    assert_eq!(
        ws.recv().transpose()?,
        Some(Message::Text(text["pieces:".len()..].to_owned().into()))
    );
    assert_eq!(ws.recv().transpose()?, Some(Message::Binary(b"xy".to_vec().into())));
    drop(ws);
    server.stop()?;
    Ok(())
}

#[test]
fn an_end_of_stream_that_comes_with_the_last_bytes_is_seen() -> Result {
    let server = serve_default()?;
    for i in 0..10 {
        // Part of a frame, then the end, at once: one readiness event for
        // both (edge-triggered).
        let (mut tcp, head) = raw_handshake(server.addr, "/ws", "")?;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        tcp.write_all(&frame(0x2, &[1u8; 100])[..7])?;
        tcp.shutdown(std::net::Shutdown::Write)?;
        let started = Instant::now();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest)?;
        assert!(started.elapsed() < Duration::from_secs(5), "connection {i} ended late");
    }
    server.wait_for("ten ends", |seen| seen.closed.len() == 10)?;
    assert!(server
        .seen()
        .closed
        .iter()
        .all(|(_, closed)| closed.cause == CloseCause::Abnormal));
    // The same inside the opening handshake: half a request, then the end.
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(server.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")?;
        tcp.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest)?;
    }
    server.wait_for("five failed handshakes", |seen| seen.rejected.len() == 5)?;
    assert!(server
        .seen()
        .rejected
        .iter()
        .all(|e| matches!(e, HandshakeError::UnexpectedEof)));
    server.stop()?;
    Ok(())
}

#[test]
fn a_stream_to_a_slow_reader_resumes_on_drain_in_bounded_memory() -> Result {
    let server = serve_default()?;
    let mut ws = tether_blocking::ClientBuilder::new(&server.url("/ws"))
        .idle_timeout(Some(Duration::from_secs(5)))
        .connect()?;
    let chunks = 200;
    ws.send(Message::Text(format!("stream:{chunks}").into()))?;
    // Not reading for a while: the server's writes block and it waits.
    std::thread::sleep(Duration::from_millis(300));
    let mut received = 0;
    while received < chunks * STREAM_CHUNK {
        match ws.recv().transpose()? {
            Some(Message::Binary(data)) => received += data.len(),
            other => return Err(format!("after {received} bytes: {other:?}").into()),
        }
    }
    assert_eq!(received, chunks * STREAM_CHUNK);
    let seen = server.seen();
    assert!(seen.drains > 0, "no drain: {seen:?}");
    assert!(
        seen.max_buffered < STREAM_BOUND + STREAM_CHUNK + 14,
        "output grew to {}",
        seen.max_buffered
    );
    drop(seen);
    drop(ws);
    server.stop()?;
    Ok(())
}

/// Reads one unmasked server frame: (first byte, payload).
fn read_server_frame(tcp: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head)?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            tcp.read_exact(&mut n)?;
            usize::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            tcp.read_exact(&mut n)?;
            usize::try_from(u64::from_be_bytes(n))?
        }
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload)?;
    Ok((head[0], payload))
}

#[test]
fn a_large_frame_sent_slowly_is_not_taken_for_an_idle_peer() -> Result {
    // Every piece of a frame counts as the peer's activity, long before the
    // frame is whole (a guard for any change in how reads are scheduled:
    // an experiment that waited for a large frame's rest with the socket's
    // low-water mark failed here until its timer read the pieces).
    let server = serve_quick_keepalive()?;
    let (mut tcp, head) = raw_handshake(server.addr, "/ws", "")?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let payload: Vec<u8> = (0..1 << 20).map(|i: usize| (i % 251) as u8).collect();
    let wire = frame(0x2, &payload);
    let (first, rest) = wire.split_at(256 * 1024);
    tcp.write_all(first)?;
    // 1.5 s of 1 KiB pieces every 50 ms: far past the idle timeout.
    let mut sent = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        tcp.write_all(&rest[sent..sent + 1024])?;
        sent += 1024;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.seen().closed.is_empty(), "{:?}", server.seen().closed);
    tcp.write_all(&rest[sent..])?;
    // The echo, after any keepalive pings.
    let echoed = loop {
        match read_server_frame(&mut tcp)? {
            (0x89, _) => continue,
            (first, payload) => break (first, payload),
        }
    };
    assert_eq!(echoed.0, 0x82);
    assert!(echoed.1 == payload, "the echo differs");
    assert!(server.seen().closed.is_empty(), "{:?}", server.seen().closed);
    drop(tcp);
    server.stop()?;
    // Part of a large frame, then the end of the stream: seen at once
    // (default settings: no timer comes before 2 minutes).
    let server = serve_default()?;
    let (mut tcp, _) = raw_handshake(server.addr, "/ws", "")?;
    tcp.write_all(first)?;
    std::thread::sleep(Duration::from_millis(20));
    tcp.write_all(&rest[..1024])?;
    tcp.shutdown(std::net::Shutdown::Write)?;
    server.wait_for("the close callback", |seen| seen.closed.len() == 1)?;
    assert_eq!(server.seen().closed[0].1.cause, CloseCause::Abnormal);
    server.stop()?;
    Ok(())
}
