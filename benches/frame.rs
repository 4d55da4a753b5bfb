//! Frame headers: parsing (every header form) and emitting (server and
//! client sends drained from the transmit buffer).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tether_proto::__internal::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use tether_proto::{Config, Connection, Message, SeededRandom};

fn header(payload_len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: OpCode::Binary,
        mask,
        payload_len,
    };
    let mut out = [0; MAX_HEADER_LEN];
    let n = header.encode(&mut out);
    out[..n].to_vec()
}

/// `FrameHeader::parse` on each header form (RFC 6455 section 5.2), using
/// the result as the connection does (length, mask, header size). The target
/// is under 5 ns per header.
///
/// Handing the whole `Result<Option<(FrameHeader, usize)>, ProtocolError>`
/// back to criterion instead costs about 12 ns here, whatever the header:
/// the 40-byte value goes through memory and its drop checks for the
/// `String` inside `ProtocolError::Extension`.
fn parse(c: &mut Criterion) {
    let key = Some([0x37, 0xfa, 0x21, 0x3d]);
    let cases = [
        ("2B unmasked 7-bit len", header(20, None)),
        ("4B unmasked 16-bit len", header(1024, None)),
        ("6B masked 7-bit len", header(20, key)),
        ("10B unmasked 64-bit len", header(1 << 20, None)),
        ("14B masked 64-bit len", header(1 << 20, key)),
    ];
    let mut group = c.benchmark_group("frame_parse");
    group.throughput(Throughput::Elements(1));
    for (name, bytes) in &cases {
        assert!(matches!(FrameHeader::parse(bytes), Ok(Some((_, n))) if n == bytes.len()));
        group.bench_with_input(BenchmarkId::from_parameter(name), bytes, |b, bytes| {
            b.iter(|| match FrameHeader::parse(black_box(bytes)) {
                Ok(Some((header, len))) => (header.payload_len, header.mask, len),
                _ => (0, None, 0),
            });
        });
    }
    group.finish();
}

/// A send followed by draining `poll_transmit`: header encoding, the copy
/// into the transmit buffer (or the zero-copy queueing of large server
/// payloads), and for a client the mask key and masking.
fn emit(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("frame_emit");
    for size in [20usize, 1024, 64 * 1024] {
        let payload = Bytes::from(vec![0x5a; size]);
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: size as u64,
        });

        let mut server = Connection::server(Config::default(), now);
        group.bench_with_input(BenchmarkId::new("server send(Bytes)", size), &payload, |b, payload| {
            b.iter(|| {
                let _ = server.send(Message::Binary(payload.clone()));
                let mut out = 0;
                while let Some(chunk) = server.poll_transmit() {
                    out += black_box(chunk).len();
                }
                out
            });
        });

        let mut server = Connection::server(Config::default(), now);
        group.bench_with_input(
            BenchmarkId::new("server send_binary(&[u8])", size),
            &payload,
            |b, payload| {
                b.iter(|| {
                    let _ = server.send_binary(payload);
                    let mut out = 0;
                    while let Some(chunk) = server.poll_transmit() {
                        out += black_box(chunk).len();
                    }
                    out
                });
            },
        );

        let mut client = Connection::client(Config::default(), Box::new(SeededRandom::new(1)), now);
        group.bench_with_input(
            BenchmarkId::new("client send(Bytes) masked", size),
            &payload,
            |b, payload| {
                b.iter(|| {
                    let _ = client.send(Message::Binary(payload.clone()));
                    let mut out = 0;
                    while let Some(chunk) = client.poll_transmit() {
                        out += black_box(chunk).len();
                    }
                    out
                });
            },
        );
    }

    // Coalescing: 100 small sends, then one drain.
    let payload = Bytes::from(vec![0x5a; 20]);
    group.throughput(Throughput::ElementsAndBytes {
        elements: 100,
        bytes: 100 * 20,
    });
    let mut server = Connection::server(Config::default(), now);
    group.bench_function("server 100x20B then drain", |b| {
        b.iter(|| {
            for _ in 0..100 {
                let _ = server.send(Message::Binary(payload.clone()));
            }
            let mut out = 0;
            while let Some(chunk) = server.poll_transmit() {
                out += black_box(chunk).len();
            }
            out
        });
    });
    group.finish();
}

criterion_group!(benches, parse, emit);
criterion_main!(benches);
