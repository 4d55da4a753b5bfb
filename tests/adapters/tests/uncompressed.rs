//! `send_with(message, SendOptions::uncompressed())` on every adapter's
//! server: with permessage-deflate negotiated, the frame goes out with RSV1
//! clear and the payload as it is, while a plain send of the same message is
//! compressed (RSV1 set, smaller). Read on the wire by a raw TCP client.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tether_adapter_tests::{compressible, start_server, Adapter, Options, TWICE_REQUEST};

/// A frame header and payload as received (server frames are not masked).
struct Frame {
    first: u8,
    payload: Vec<u8>,
}

fn read_frame(tcp: &mut TcpStream) -> Frame {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(head[1] & 0x80, 0, "a server frame is not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            tcp.read_exact(&mut n).unwrap();
            usize::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            tcp.read_exact(&mut n).unwrap();
            usize::try_from(u64::from_be_bytes(n)).unwrap()
        }
        n => usize::from(n),
    };
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload).unwrap();
    Frame {
        first: head[0],
        payload,
    }
}

/// Opens a connection that offers permessage-deflate and checks it was
/// accepted.
fn open(adapter: Adapter) -> (TcpStream, tether_adapter_tests::EchoServer) {
    let server = start_server(
        adapter,
        Options {
            deflate: true,
            ..Options::default()
        },
    );
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).unwrap();
    // The response head, byte by byte up to the blank line.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("permessage-deflate"), "{head}");
    (tcp, server)
}

/// A masked client text frame (mask key fixed: the test is the client).
fn text_frame(text: &str) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let payload = text.as_bytes();
    assert!(payload.len() < 126);
    let mut frame = vec![0x81, 0x80 | u8::try_from(payload.len()).unwrap()];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

fn uncompressed_then_compressed(adapter: Adapter) {
    let (mut tcp, _server) = open(adapter);
    tcp.write_all(&text_frame(TWICE_REQUEST)).unwrap();
    let plain = compressible();
    let uncompressed = read_frame(&mut tcp);
    assert_eq!(uncompressed.first, 0x81, "{adapter:?}: FIN + text, RSV1 clear");
    assert_eq!(
        uncompressed.payload,
        plain.as_bytes(),
        "{adapter:?}: the payload as it is"
    );
    let compressed = read_frame(&mut tcp);
    assert_eq!(compressed.first, 0xc1, "{adapter:?}: FIN + RSV1 + text");
    assert!(
        compressed.payload.len() < plain.len() / 4,
        "{adapter:?}: {} compressed bytes for {}",
        compressed.payload.len(),
        plain.len()
    );
}

#[test]
fn tokio_server_sends_uncompressed_on_request() {
    uncompressed_then_compressed(Adapter::Tokio);
}

#[test]
fn smol_server_sends_uncompressed_on_request() {
    uncompressed_then_compressed(Adapter::Smol);
}

#[test]
fn async_std_server_sends_uncompressed_on_request() {
    uncompressed_then_compressed(Adapter::AsyncStd);
}

#[test]
fn blocking_server_sends_uncompressed_on_request() {
    uncompressed_then_compressed(Adapter::Blocking);
}
