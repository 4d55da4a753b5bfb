//! UTF-8 validation (RFC 6455 section 8.1) of 64 KiB of ASCII and of 64 KiB
//! of multi-byte text: the whole-payload `utf8::validate` (simdutf8 basic),
//! the incremental `Utf8Validator` fed 4 KiB pieces (simdutf8 compat, code
//! points split between pieces), `std::str::from_utf8`, and a 64 KiB memcpy
//! as the memory-speed yardstick.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tether_proto::__internal::utf8::{self, Utf8Validator};

#[path = "common.rs"]
mod common;
use common::CopyBuffers;

const LEN: usize = 64 * 1024;
const PIECE: usize = 4 * 1024;

fn ascii() -> Vec<u8> {
    (0..LEN).map(|i| b' ' + (i % 95) as u8).collect()
}

/// Greek (2 bytes), CJK and symbols (3 bytes) and astral-plane (4 bytes)
/// characters, padded with ASCII to exactly 64 KiB.
fn multibyte() -> Vec<u8> {
    let sample = "κόσμε日本語の文章€𝄞😀Ωß中文";
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
    text.into_bytes()
}

fn validate(c: &mut Criterion) {
    for (name, text) in [("ascii", ascii()), ("multibyte", multibyte())] {
        assert_eq!(text.len(), LEN);
        assert!(std::str::from_utf8(&text).is_ok());
        let mut group = c.benchmark_group(format!("utf8_64KiB_{name}"));
        group.throughput(Throughput::Bytes(LEN as u64));

        let mut copy = CopyBuffers::new(LEN, &text);
        group.bench_function("memcpy (copy_from_slice)", |b| {
            let (src, dst) = copy.split();
            b.iter(|| {
                dst.copy_from_slice(black_box(src));
                black_box(&mut *dst);
            });
        });
        group.bench_function("utf8::validate (whole)", |b| {
            b.iter(|| utf8::validate(black_box(&text)));
        });
        group.bench_function("Utf8Validator (4 KiB pieces)", |b| {
            b.iter(|| {
                let mut validator = Utf8Validator::new();
                for piece in black_box(&text).chunks(PIECE) {
                    validator.feed(piece)?;
                }
                validator.finish()
            });
        });
        group.bench_function("std::str::from_utf8", |b| {
            b.iter(|| std::str::from_utf8(black_box(&text)).is_ok());
        });
        group.finish();
    }
}

criterion_group!(benches, validate);
criterion_main!(benches);
