//! Tools of the bad-input battery: a server of any adapter on loopback
//! that records how each connection ended on its side ([`server`]), and an
//! attacker on a raw tokio `TcpStream` that writes requests and frames by
//! hand and reads what the server puts on the wire. The attacker does not
//! care which adapter serves; the tests run once per adapter.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod server;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tether_driver::WebSocketConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use server::{Ended, Settings, TestServer};

/// Every test is bounded by this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The key of RFC 6455 section 1.3's example.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The mask key of the attacker's frames.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// First byte of a frame (RFC 6455 section 5.2).
pub const FIN: u8 = 0x80;
pub const RSV1: u8 = 0x40;
pub const RSV2: u8 = 0x20;
pub const RSV3: u8 = 0x10;
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xa;

/// Request paths that select what the server does with a connection.
pub mod path {
    /// Echo every message (any other path does too).
    pub const ECHO: &str = "/";
    /// Send 16 KiB messages without receiving, until sends keep waiting.
    pub const SEND_FOREVER: &str = "/send-forever";
    /// Start the close handshake at once.
    pub const CLOSE_FIRST: &str = "/close-first";
    /// Receive on a read half while watching the write buffer.
    pub const WATCH_BUFFER: &str = "/watch-buffer";
    /// Answered with a plain 404 by the `accept_with` callback.
    pub const NOT_FOUND: &str = "/404";
    /// Like `SEND_FOREVER`, then start the close handshake.
    pub const FILL_THEN_CLOSE: &str = "/fill-then-close";
    /// Like `SEND_FOREVER`, then receive.
    pub const FILL_THEN_RECV: &str = "/fill-then-recv";
    /// Echo with `feed` (queue, written by the next receive) instead of `send`.
    pub const FEED_ECHO: &str = "/feed-echo";
}

/// How long the `FILL_THEN_*` handlers wait for `close` or `recv` to
/// return before they record that it hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(3);

/// How long a send of the `SEND_FOREVER` handler may wait before it counts
/// as stalled.
pub const SEND_STALL: Duration = Duration::from_millis(300);
/// Size of the `SEND_FOREVER` handler's messages.
pub const SEND_CHUNK: usize = 16 * 1024;

/// Settings without keepalive pings, so that attackers see only the frames
/// they cause.
pub fn quiet() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.connection.ping_interval = None;
    config
}

// ---- The attacker ------------------------------------------------------

/// An HTTP request written by hand: a valid WebSocket handshake to start
/// from, with headers to remove, replace or add.
#[derive(Debug, Clone)]
pub struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Req {
    /// A valid handshake for `/`.
    pub fn websocket() -> Self {
        Self {
            method: "GET".into(),
            path: "/".into(),
            headers: [
                ("Host", "127.0.0.1"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", KEY),
                ("Sec-WebSocket-Version", "13"),
            ]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        }
    }

    pub fn method(mut self, method: &str) -> Self {
        method.clone_into(&mut self.method);
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        path.clone_into(&mut self.path);
        self
    }

    /// Removes every `name` header.
    pub fn remove(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Replaces the `name` headers with one line.
    pub fn set(self, name: &str, value: &str) -> Self {
        self.remove(name).add(name, value)
    }

    /// Adds a header line.
    pub fn add(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// An HTTP response as the attacker read it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first `name` header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A frame as the attacker read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// A client that writes whatever it likes on a raw TCP connection.
pub struct Attacker {
    pub tcp: TcpStream,
    /// Received and not consumed yet.
    buf: Vec<u8>,
    /// The server closed its side (or reset the connection).
    eof: bool,
}

impl Attacker {
    /// A TCP connection, nothing sent.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Self {
            tcp,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// A connection through a valid handshake: the 101 was read.
    pub async fn open(addr: SocketAddr) -> Self {
        Self::open_with(addr, Req::websocket()).await.0
    }

    /// A connection through `request`, which must be accepted.
    pub async fn open_with(addr: SocketAddr, request: Req) -> (Self, Response) {
        let mut attacker = Self::connect(addr).await;
        attacker.send(&request.bytes()).await.unwrap();
        let response = attacker.response_head().await;
        assert_eq!(response.status, 101, "{response:?}");
        (attacker, response)
    }

    /// The address the server sees this connection come from.
    pub fn peer(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap()
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// Reads more; false at the end of the stream (a reset counts as one:
    /// the server may close with our bytes unread, which resets).
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match self.tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads a response head; the body (if any) stays buffered.
    pub async fn response_head(&mut self) -> Response {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf.drain(..end + 4).collect()).unwrap();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap();
                let status = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
                let headers = lines
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (name, value) = l.split_once(':').unwrap();
                        (name.trim().to_owned(), value.trim().to_owned())
                    })
                    .collect();
                return Response {
                    status,
                    headers,
                    body: Vec::new(),
                };
            }
            assert!(
                self.fill().await,
                "the server closed without a complete response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads a whole response that ends the connection (a rejection): the
    /// head, then the body up to the end of the stream.
    pub async fn response(&mut self) -> Response {
        let mut response = self.response_head().await;
        while self.fill().await {}
        response.body = std::mem::take(&mut self.buf);
        if let Some(len) = response.header("Content-Length") {
            assert_eq!(response.body.len(), len.parse::<usize>().unwrap());
        }
        response
    }

    /// The next frame, or `None` at the end of the stream.
    pub async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, len)) = parse_frame(&self.buf) {
                self.buf.drain(..len);
                return Some(frame);
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "stream ended inside a frame: {:?}", self.buf);
                return None;
            }
        }
    }

    /// Reads frames until a close frame; returns its code and reason. Data
    /// frames, pings and pongs before it are skipped.
    pub async fn close_frame(&mut self) -> (u16, String) {
        loop {
            let frame = self.frame().await.expect("the stream ended without a close frame");
            assert!(!frame.masked, "a server frame was masked");
            if frame.opcode == CLOSE {
                assert!(frame.fin);
                let [hi, lo, reason @ ..] = &frame.payload[..] else {
                    panic!("close frame without a code: {frame:?}");
                };
                return (
                    u16::from_be_bytes([*hi, *lo]),
                    String::from_utf8(reason.to_vec()).unwrap(),
                );
            }
        }
    }

    /// Reads and drops everything until the end of the stream; returns how
    /// many bytes that was.
    pub async fn drain(&mut self) -> usize {
        let mut total = std::mem::take(&mut self.buf).len();
        let mut chunk = vec![0u8; 64 * 1024];
        while !self.eof {
            match self.tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => self.eof = true,
                Ok(n) => total += n,
            }
        }
        total
    }

    /// Asserts that the server closed the connection and sent nothing more.
    pub async fn expect_eof(&mut self) {
        let more = self.frame().await;
        assert!(more.is_none(), "expected the end of the stream, got {more:?}");
    }
}

/// Parses one server frame from the start of `buf`.
fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    let (len, mut pos) = match b1 & 0x7f {
        126 => (u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)), 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let masked = b1 & 0x80 != 0;
    let key = if masked {
        let key: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(key)
    } else {
        None
    };
    let end = pos + usize::try_from(len).ok()?;
    let mut payload = buf.get(pos..end)?.to_vec();
    if let Some(key) = key {
        payload = mask(&payload, key);
    }
    Some((
        Frame {
            fin: b0 & FIN != 0,
            rsv: b0 & 0x70,
            opcode: b0 & 0x0f,
            masked,
            payload,
        },
        end,
    ))
}

// ---- Frames written by hand ----------------------------------------------

/// How a frame header encodes its payload length: the shortest form, or
/// any form with any value (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy)]
pub enum Len {
    /// The minimal encoding of this length.
    Minimal(u64),
    /// The 7-bit field.
    Short(u8),
    /// 126 and a 16-bit length.
    Medium(u16),
    /// 127 and a 64-bit length.
    Long(u64),
}

/// A frame header: `b0` is FIN | RSV | opcode.
pub fn header(b0: u8, len: Len, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = match len {
        Len::Minimal(n @ 0..=125) => Len::Short(n as u8),
        Len::Minimal(n @ 126..=0xffff) => Len::Medium(n as u16),
        Len::Minimal(n) => Len::Long(n),
        other => other,
    };
    let mut out = vec![b0];
    match len {
        Len::Short(n) => out.push(mask_bit | n),
        Len::Medium(n) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Len::Long(n) => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Len::Minimal(_) => unreachable!(),
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// `payload` masked with `key` (RFC 6455 section 5.3).
pub fn mask(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect()
}

/// A masked frame with the minimal length encoding, as a client must send.
pub fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(b0, Len::Minimal(payload.len() as u64), Some(MASK));
    out.extend_from_slice(&mask(payload, MASK));
    out
}

/// An unmasked frame, which a client must never send.
pub fn unmasked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(b0, Len::Minimal(payload.len() as u64), None);
    out.extend_from_slice(payload);
    out
}

/// A close frame payload.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// A permessage-deflate payload (RFC 7692 section 7.2.1: raw deflate, the
/// final `00 00 ff ff` left off) that inflates to `1 + 258 * matches` zero
/// bytes: one fixed-Huffman block (RFC 1951 section 3.2.6) with a literal 0
/// then `matches` copies of 258 bytes at distance 1, 13 bits each (a ratio
/// of about 160), then the empty stored block of a sync flush, whose
/// `LEN`/`NLEN` the receiver appends.
pub fn deflate_zeros(matches: usize) -> Vec<u8> {
    let mut bits = BitWriter::default();
    bits.put(0, 1); // BFINAL: not the last block
    bits.put(1, 2); // BTYPE 01: fixed Huffman codes
    bits.huffman(0x30, 8); // literal 0
    for _ in 0..matches {
        bits.huffman(0xc5, 8); // length code 285: 258, no extra bits
        bits.huffman(0, 5); // distance code 0: 1, no extra bits
    }
    bits.huffman(0, 7); // end of block (256)
    bits.put(0, 3); // a stored block, not final: LEN/NLEN follow, byte-aligned
    bits.finish()
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl BitWriter {
    /// `count` bits of `value`, least significant first (header fields).
    fn put(&mut self, value: u32, count: u32) {
        for i in 0..count {
            self.bit((value >> i) & 1);
        }
    }

    /// A Huffman code, most significant bit first.
    fn huffman(&mut self, code: u32, len: u32) {
        for i in (0..len).rev() {
            self.bit((code >> i) & 1);
        }
    }

    fn bit(&mut self, bit: u32) {
        self.acc |= bit << self.n;
        self.n += 1;
        if self.n == 8 {
            self.out.push(self.acc as u8);
            self.acc = 0;
            self.n = 0;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}
