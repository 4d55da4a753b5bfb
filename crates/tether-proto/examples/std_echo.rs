//! The driving loop on blocking `std::net` sockets, in one file: an echo
//! server and an Autobahn fuzzing-server client, each a thread per connection.
//!
//! This is what an adapter is: read into a buffer, hand it to the core, write
//! what it asks to transmit, arm one timer from its next deadline. It is the
//! testee the core's conformance runs use before the runtime adapters land:
//!
//! ```sh
//! cargo run --release -p tether-proto --example std_echo -- server 127.0.0.1:9001
//! cargo run --release -p tether-proto --example std_echo -- autobahn-client ws://127.0.0.1:9001
//! ```

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tether_proto::deflate::DeflateConfig;
use tether_proto::handshake::{Accept, ClientHandshake, ClientRequest, HandshakeConfig, ServerHandshake};
use tether_proto::{Config, Connection, Event, Message, RandomSource};

const READ_BUFFER: usize = 64 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server", addr] => serve(addr),
        ["autobahn-client", url] => autobahn_client(url, "tether-proto-std"),
        ["autobahn-client", url, agent] => autobahn_client(url, agent),
        _ => {
            eprintln!("usage: std_echo server ADDR | std_echo autobahn-client ws://HOST:PORT [AGENT]");
            std::process::exit(2);
        }
    }
}

/// Masking keys and handshake nonces from the operating system.
fn os_random() -> Box<dyn RandomSource> {
    Box::new(|buf: &mut [u8]| {
        if let Err(e) = getrandom::fill(buf) {
            // No entropy means no safe masking: stop rather than send predictable keys.
            panic!("the operating system's random source failed: {e}");
        }
    })
}

fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr)?;
    eprintln!("echo server on ws://{}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(e) = serve_one(stream) {
                eprintln!("connection error: {e}");
            }
        });
    }
    Ok(())
}

fn serve_one(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let now = Instant::now();
    let mut handshake = ServerHandshake::new(HandshakeConfig::default(), now);
    let mut buf = vec![0; READ_BUFFER];
    let request = loop {
        let timeout = handshake
            .poll_timeout()
            .map(|d| d.saturating_duration_since(Instant::now()));
        stream.set_read_timeout(timeout.map(|t| t.max(Duration::from_millis(1))))?;
        let result = match stream.read(&mut buf) {
            Ok(0) => Err(handshake.handle_eof()),
            Ok(n) => handshake.handle_read(&buf[..n]),
            Err(e) if is_timeout(&e) => handshake.handle_timeout(Instant::now()).map(|()| None),
            Err(e) => return Err(e),
        };
        match result {
            Ok(Some(request)) => break request,
            Ok(None) => {}
            Err(e) => return reject(&mut stream, &e),
        }
    };
    if !request.is_websocket_upgrade() {
        let body = b"This is a WebSocket echo endpoint.\n";
        stream.write_all(&handshake.reject(http::StatusCode::BAD_REQUEST, http::HeaderMap::new(), body))?;
        return Ok(());
    }
    // Compression is opt-in on a server; this echo server opts in.
    let accept = Accept::new().permessage_deflate(DeflateConfig::default());
    match handshake.accept(&request, accept, Config::default(), Instant::now()) {
        Ok((response, mut conn)) => {
            stream.write_all(&response)?;
            drive(&mut stream, &mut conn, true)
        }
        Err(e) => reject(&mut stream, &e),
    }
}

fn reject(stream: &mut TcpStream, error: &tether_proto::handshake::HandshakeError) -> io::Result<()> {
    eprintln!("handshake failed: {error}");
    if let Some(response) = error.response() {
        stream.write_all(&response)?;
    }
    Ok(())
}

/// Opens a client connection: TCP, then the opening handshake.
fn connect(url: &str) -> Result<(TcpStream, Connection), Box<dyn std::error::Error>> {
    // Offer permessage-deflate; promising not to use context takeover
    // (client_no_context_takeover) lets a server choose any of the RFC 7692
    // parameter combinations.
    let mut deflate = DeflateConfig::default();
    deflate.client_no_context_takeover = true;
    let request = ClientRequest::new(url)?.permessage_deflate(deflate);
    let mut stream = TcpStream::connect((request.host(), request.port()))?;
    stream.set_nodelay(true)?;
    let mut random = os_random();
    let (mut handshake, bytes) = ClientHandshake::new(request, &mut *random, Instant::now(), Some(HANDSHAKE_TIMEOUT))?;
    stream.write_all(&bytes)?;
    let mut buf = vec![0; READ_BUFFER];
    loop {
        let timeout = handshake
            .poll_timeout()
            .map(|d| d.saturating_duration_since(Instant::now()));
        stream.set_read_timeout(timeout.map(|t| t.max(Duration::from_millis(1))))?;
        let response = match stream.read(&mut buf) {
            Ok(0) => return Err(handshake.handle_eof().into()),
            Ok(n) => handshake.handle_read(&buf[..n])?,
            Err(e) if is_timeout(&e) => {
                handshake.handle_timeout(Instant::now())?;
                None
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(response) = response {
            return Ok((
                stream,
                response.into_connection(Config::default(), random, Instant::now())?,
            ));
        }
    }
}

/// The driving loop. Returns when the transport should be closed.
fn drive(stream: &mut TcpStream, conn: &mut Connection, echo: bool) -> io::Result<()> {
    let mut buf = vec![0; READ_BUFFER];
    loop {
        while let Some(event) = conn.poll_event() {
            if let (Event::Message(message), true) = (event, echo) {
                // Refused only once the connection is closing: then there is
                // nobody to echo to.
                let _ = conn.send(message);
            }
        }
        // The output stays in the connection until written: offer it as
        // slices, one vectored write, then advance past what was taken.
        while conn.pending_transmit() > 0 {
            let mut slices = [io::IoSlice::new(&[]); 8];
            let count = conn.transmit_slices(&mut slices);
            let written = stream.write_vectored(&slices[..count])?;
            if written == 0 {
                return Err(ErrorKind::WriteZero.into());
            }
            conn.advance_transmit(written);
        }
        if conn.should_close_transport() {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        let timeout = conn.poll_timeout().map(|d| d.saturating_duration_since(Instant::now()));
        stream.set_read_timeout(timeout.map(|t| t.max(Duration::from_millis(1))))?;
        match stream.read(&mut buf) {
            Ok(0) => conn.handle_eof(Instant::now()),
            Ok(n) => conn.handle_read(&buf[..n], Instant::now()),
            Err(e) if is_timeout(&e) => conn.handle_timeout(Instant::now()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => conn.handle_eof(Instant::now()),
            Err(e) => return Err(e),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Runs every case of an Autobahn fuzzing server, then asks for its report.
fn autobahn_client(base: &str, agent: &str) -> Result<(), Box<dyn std::error::Error>> {
    let base = base.trim_end_matches('/');
    let (mut stream, mut conn) = connect(&format!("{base}/getCaseCount"))?;
    let mut count = 0;
    let mut buf = vec![0; READ_BUFFER];
    while conn.state() == tether_proto::State::Open {
        match conn.poll_event() {
            Some(Event::Message(Message::Text(text))) => count = text.parse()?,
            Some(_) => {}
            None => match stream.read(&mut buf)? {
                0 => conn.handle_eof(Instant::now()),
                n => conn.handle_read(&buf[..n], Instant::now()),
            },
        }
    }
    drive(&mut stream, &mut conn, false)?;
    eprintln!("{count} cases");
    for case in 1..=count {
        let (mut stream, mut conn) = connect(&format!("{base}/runCase?case={case}&agent={agent}"))?;
        drive(&mut stream, &mut conn, true)?;
    }
    let (mut stream, mut conn) = connect(&format!("{base}/updateReports?agent={agent}"))?;
    drive(&mut stream, &mut conn, false)?;
    Ok(())
}
