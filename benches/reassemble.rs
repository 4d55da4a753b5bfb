//! Reassembling a streamed 1 MiB text message from the connection's
//! fragments (64 KiB pieces): `tether_proto::Reassembler`, which trusts the
//! connection's validation, against what the tokio adapter did before it
//! (`absorb_fragment`: concatenate, then `Utf8Bytes::try_from_bytes`, a
//! second pass over the text), and against the same `Reassembler` fed
//! pieces built by hand (`Fragment::new`: validated once, at the end).
//! The difference between the first two is the double validation removed.

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tether_proto::{Config, Connection, DataKind, Event, Fragment, Message, Reassembler, SeededRandom, Utf8Bytes};

const LEN: usize = 1 << 20;
const PIECE: usize = 64 * 1024;

/// Multi-byte text (2, 3 and 4-byte code points), exactly `LEN` bytes.
fn text() -> String {
    let sample = "κόσμε日本語の文章€𝄞😀Ωß中文 ascii too ";
    let mut text = String::with_capacity(LEN);
    'fill: loop {
        for ch in sample.chars() {
            if text.len() + ch.len_utf8() > LEN {
                break 'fill;
            }
            text.push(ch);
        }
    }
    while text.len() < LEN {
        text.push('.');
    }
    text
}

/// The fragments a streaming client connection makes of one server text
/// frame arriving `PIECE` bytes at a time.
fn fragments(text: &str) -> Vec<Fragment> {
    let now = Instant::now();
    let mut config = Config::default();
    config.stream_threshold = Some(0);
    let mut conn = Connection::client(config, Box::new(SeededRandom::new(1)), now);
    let mut bytes = vec![0x81, 127];
    bytes.extend((text.len() as u64).to_be_bytes());
    bytes.extend_from_slice(text.as_bytes());
    let mut out = Vec::new();
    for chunk in bytes.chunks(PIECE) {
        conn.handle_read(chunk, now);
        while let Some(event) = conn.poll_event() {
            if let Event::Fragment(f) = event {
                out.push(f);
            }
        }
    }
    out
}

/// The adapter's reassembly before the core had one.
fn concat_and_revalidate(fragments: &[Fragment]) -> Option<Message> {
    let mut buf = BytesMut::new();
    for f in fragments {
        buf.extend_from_slice(&f.data);
    }
    Utf8Bytes::try_from_bytes(buf.freeze()).ok().map(Message::Text)
}

fn reassemble(fragments: &[Fragment]) -> Option<Message> {
    let mut r = Reassembler::new();
    let mut out = None;
    for f in fragments {
        out = r.push(f.clone()).ok()?;
    }
    out
}

fn bench(c: &mut Criterion) {
    let text = text();
    let from_connection = fragments(&text);
    let by_hand: Vec<Fragment> = from_connection
        .iter()
        .map(|f| Fragment::new(DataKind::Text, Bytes::copy_from_slice(&f.data), f.first, f.last))
        .collect();
    let expected = Some(Message::Text(text.as_str().into()));
    assert_eq!(reassemble(&from_connection), expected);
    assert_eq!(concat_and_revalidate(&from_connection), expected);
    assert_eq!(reassemble(&by_hand), expected);
    println!(
        "reassembling 1 MiB of multi-byte text from {} fragments of the connection",
        from_connection.len()
    );

    let mut group = c.benchmark_group("reassemble_1MiB_text");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.bench_function("Reassembler (connection fragments, no second validation)", |b| {
        b.iter(|| reassemble(black_box(&from_connection)));
    });
    group.bench_function("concat + Utf8Bytes::try_from_bytes (adapter before)", |b| {
        b.iter(|| concat_and_revalidate(black_box(&from_connection)));
    });
    group.bench_function("Reassembler (hand-built fragments, validated once)", |b| {
        b.iter(|| reassemble(black_box(&by_hand)));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
