//! The full receive path of a server: `handle_read` of a batch of masked
//! client frames (as one socket read would deliver them), then draining the
//! events. Covers header parsing, connection checks, unmasking, UTF-8
//! validation for text, and building the message events.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tether_proto::__internal::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use tether_proto::__internal::mask::apply_mask;
use tether_proto::{Config, Connection, Event};

/// Appends one masked frame, as a client sends it.
fn push_masked_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut head = [0; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
}

fn batch(count: usize, size: usize, opcode: OpCode) -> Vec<u8> {
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::new();
    for i in 0..count {
        push_masked_frame(
            &mut out,
            opcode,
            &payload,
            (i as u32).wrapping_mul(0x9e37_79b9).to_be_bytes(),
        );
    }
    out
}

fn receive(c: &mut Criterion) {
    let now = Instant::now();
    let cases = [
        (100, 20, OpCode::Binary),
        (10, 1024, OpCode::Binary),
        (1, 64 * 1024, OpCode::Binary),
        (1, 1024 * 1024, OpCode::Binary),
        (100, 20, OpCode::Text),
        (10, 1024, OpCode::Text),
        (1, 64 * 1024, OpCode::Text),
    ];
    let mut group = c.benchmark_group("receive");
    for (count, size, opcode) in cases {
        let wire = batch(count, size, opcode);
        let kind = if opcode == OpCode::Text { "text" } else { "binary" };
        // Elements are messages; bytes are payload bytes (headers excluded).
        group.throughput(Throughput::ElementsAndBytes {
            elements: count as u64,
            bytes: (count * size) as u64,
        });
        let mut server = Connection::server(Config::default(), now);
        let id = BenchmarkId::new(format!("server handle_read {kind}"), format!("{count}x{size}B"));
        group.bench_with_input(id, &wire, |b, wire| {
            b.iter(|| {
                server.handle_read(black_box(wire), now);
                let mut received = 0;
                while let Some(event) = server.poll_event() {
                    match event {
                        Event::Message(message) => received += black_box(message).len(),
                        other => panic!("unexpected event {other:?}"),
                    }
                }
                assert_eq!(received, count * size);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, receive);
criterion_main!(benches);
