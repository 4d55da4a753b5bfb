//! The blocking server: a listener thread and a thread per connection,
//! with the same handlers as the async adapters, written with the blocking
//! API.
//!
//! Where the async handlers give up on a send with a timeout (a future
//! can be dropped), a blocking send cannot be abandoned: the handlers that
//! fill a peer that does not read split the connection, send from a
//! thread of their own and watch its progress; to give up they shut the
//! socket down, which is what dropping the connection does on the async
//! adapters.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use tether_blocking::{Blocking, Reader, WebSocket, Writer};
use tether_driver::{Accept, CloseCode, DeflateConfig, Error, HttpResponse, Message};

use super::{settings_for, Ended, Outcome, Settings, Shared};
use crate::attack::{path, HANG_LIMIT, SEND_CHUNK, SEND_STALL};

type Ws = WebSocket<TcpStream>;

/// Accepts on 127.0.0.1 until stopped, a thread per connection. The
/// connections left when it stops end with their peers (the attackers of a
/// test are gone by then): keeping a handle on their sockets to shut them
/// down would also keep them open after their handlers drop them, and a
/// peer would see no reset where the async adapters' would.
pub(super) fn run(settings: &Settings, shared: &Shared, addr: &mpsc::Sender<std::net::SocketAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    addr.send(listener.local_addr().unwrap()).unwrap();
    let server = tether_blocking::Server::from(settings_for::<Blocking>(settings));
    let deflate = settings.deflate.clone();
    for accepted in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(tcp) = accepted else { continue };
        let Ok(peer) = tcp.peer_addr() else { continue };
        let (server, deflate, outcomes) = (server.clone(), deflate.clone(), shared.outcomes.clone());
        std::thread::Builder::new()
            .name(format!("blocking connection from {peer}"))
            .spawn(move || {
                let outcome = serve(&server, deflate, tcp);
                outcomes.report(peer, outcome);
            })
            .unwrap();
    }
}

fn serve(server: &tether_blocking::Server, deflate: Option<DeflateConfig>, tcp: TcpStream) -> Outcome {
    let mut options = Accept::new();
    if let Some(deflate) = deflate {
        options = options.permessage_deflate(deflate);
    }
    // Shuts the connection down when a handler gives up on it.
    let socket = tcp.try_clone().unwrap();
    let mut path = String::new();
    let accepted = server.accept_with(tcp, |request| {
        path = request.path().to_owned();
        if path == path::NOT_FOUND {
            Err(HttpResponse::new(StatusCode::NOT_FOUND))
        } else {
            Ok(options)
        }
    });
    let ws = match accepted {
        Ok(ws) => ws,
        Err(e) => return Outcome::Rejected(e),
    };
    Outcome::Ended(match path.as_str() {
        path::SEND_FOREVER => send_forever(ws, &socket),
        path::CLOSE_FIRST => close_first(ws),
        path::WATCH_BUFFER => watch_buffer(ws),
        path::FILL_THEN_CLOSE | path::FILL_THEN_RECV => fill_then(ws, &socket, path == path::FILL_THEN_CLOSE),
        path::FEED_ECHO => echo(ws, true),
        _ => echo(ws, false),
    })
}

/// Echoes until the end; with `feed`, the answers are queued and written
/// when receiving waits (one write per read) instead of sent one by one.
fn echo(mut ws: Ws, feed: bool) -> Ended {
    let mut ended = Ended::default();
    loop {
        match ws.recv() {
            Some(Ok(message)) => {
                ended.received.push(message.len());
                // A failed send ends nothing: receiving reports the end.
                let _ = if feed { ws.feed(message) } else { ws.send(message) };
            }
            Some(Err(e)) => {
                ended.end = Some(e);
                break;
            }
            None => break,
        }
    }
    ended.closed = ws.close_info().cloned();
    ended
}

fn close_first(mut ws: Ws) -> Ended {
    let result = ws.close(CloseCode::NORMAL, "server closing");
    Ended {
        end: result.err(),
        closed: ws.close_info().cloned(),
        ..Ended::default()
    }
}

fn split(ws: Ws) -> (Reader<TcpStream>, Writer<TcpStream>) {
    ws.split().expect("splitting a TCP connection")
}

/// Sends until the peer stalls, then gives up: shuts the socket down (what
/// dropping the connection does on the async adapters).
fn send_forever(ws: Ws, socket: &TcpStream) -> Ended {
    let (reader, writer) = split(ws);
    let mut ended = fill(&writer);
    ended.closed = reader.close_info();
    let _ = socket.shutdown(Shutdown::Both);
    ended
}

/// Fills the write buffer of a peer that does not read, then closes (or
/// receives), recording whether that returned within [`HANG_LIMIT`].
fn fill_then(ws: Ws, socket: &TcpStream, close: bool) -> Ended {
    let (mut reader, writer) = split(ws);
    let mut ended = fill(&writer);
    if ended.end.is_some() {
        let _ = socket.shutdown(Shutdown::Both);
        return ended;
    }
    let started = Instant::now();
    let result = if close {
        // Without a reader, the writer's close waits for the close
        // handshake itself, as the async adapters' `close` does.
        // (The writer has no close info to record.)
        drop(reader);
        within_hang_limit(socket, || writer.close(CloseCode::NORMAL, "server closing").err())
    } else {
        let result = within_hang_limit(socket, || match reader.recv() {
            Some(Ok(message)) => panic!("the peer sent nothing, got {message:?}"),
            Some(Err(e)) => Some(e),
            None => None,
        });
        ended.closed = reader.close_info();
        result
    };
    ended.took = started.elapsed();
    match result {
        Some(end) => ended.end = end,
        None => ended.hung = true,
    }
    ended
}

/// Runs `call`; `None` if it had not returned after [`HANG_LIMIT`], in
/// which case the socket is shut down so that it does return.
fn within_hang_limit<T>(socket: &TcpStream, call: impl FnOnce() -> T) -> Option<T> {
    let (done, finished) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let watchdog = scope.spawn(move || {
            let hung = finished.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Timeout);
            if hung {
                let _ = socket.shutdown(Shutdown::Both);
            }
            hung
        });
        let output = call();
        let _ = done.send(());
        let hung = watchdog.join().unwrap();
        (!hung).then_some(output)
    })
}

/// What the sending thread of [`fill`] reports.
enum Progress {
    Sent,
    Failed(Error),
}

/// Sends [`SEND_CHUNK`] messages from a thread of its own until three
/// periods of [`SEND_STALL`] in a row pass without a send completing. The
/// thread keeps trying its last send until the connection ends.
fn fill(writer: &Writer<TcpStream>) -> Ended {
    let (progress, reports) = mpsc::channel();
    let sender = writer.clone();
    std::thread::spawn(move || {
        let chunk = Bytes::from(vec![7u8; SEND_CHUNK]);
        loop {
            match sender.send(Message::Binary(chunk.clone())) {
                Ok(()) => {
                    if progress.send(Progress::Sent).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = progress.send(Progress::Failed(e));
                    break;
                }
            }
        }
    });
    let mut ended = Ended::default();
    let mut stalls = 0;
    while stalls < 3 {
        match reports.recv_timeout(SEND_STALL) {
            Ok(Progress::Sent) => {
                ended.sent += 1;
                stalls = 0;
            }
            Ok(Progress::Failed(e)) => {
                ended.end = Some(e);
                break;
            }
            Err(RecvTimeoutError::Timeout) => {
                ended.stalled = true;
                stalls += 1;
            }
            Err(RecvTimeoutError::Disconnected) => unreachable!("the sender reports how it ended"),
        }
        ended.max_buffered = ended.max_buffered.max(writer.buffered_amount());
    }
    ended
}

/// Receives on a reader thread while the writer's buffered amount is
/// sampled every 5 ms.
fn watch_buffer(ws: Ws) -> Ended {
    let (mut reader, writer) = split(ws);
    let (done, finished) = mpsc::channel::<()>();
    let reading = std::thread::spawn(move || {
        let mut ended = Ended::default();
        while let Some(message) = reader.recv() {
            match message {
                Ok(message) => ended.received.push(message.len()),
                Err(e) => ended.end = Some(e),
            }
        }
        ended.closed = reader.close_info();
        let _ = done.send(());
        ended
    });
    let mut most = 0;
    while finished.recv_timeout(Duration::from_millis(5)) == Err(RecvTimeoutError::Timeout) {
        most = most.max(writer.buffered_amount());
    }
    let mut ended = reading.join().unwrap();
    ended.max_buffered = most.max(writer.buffered_amount());
    ended
}
