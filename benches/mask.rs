//! Masking (RFC 6455 section 5.3) of a 64 KiB payload, beside a plain
//! 64 KiB `copy_from_slice` in the same group: the target is masking within
//! 2x the time of the copy.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tether_proto::__internal::mask::{apply_mask, apply_mask_bytewise};

#[path = "common.rs"]
mod common;
use common::CopyBuffers;

const LEN: usize = 64 * 1024;
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask_64KiB");
    group.throughput(Throughput::Bytes(LEN as u64));

    let mut copy = CopyBuffers::new(LEN, &[0xa5; LEN]);
    group.bench_function("memcpy (copy_from_slice)", |b| {
        let (src, dst) = copy.split();
        b.iter(|| {
            dst.copy_from_slice(black_box(src));
            black_box(&mut *dst);
        });
    });

    // A 64-byte aligned payload, and one starting a byte later.
    let mut storage = vec![0xa5u8; LEN + 64 + 1];
    let aligned = storage.as_ptr().align_offset(64);
    let buf = &mut storage[aligned..];
    group.bench_function("apply_mask aligned, offset 0", |b| {
        b.iter(|| apply_mask(black_box(&mut buf[..LEN]), black_box(KEY), 0));
    });
    group.bench_function("apply_mask unaligned start (+1), offset 0", |b| {
        b.iter(|| apply_mask(black_box(&mut buf[1..=LEN]), black_box(KEY), 0));
    });
    group.bench_function("apply_mask unaligned start (+1), offset 3", |b| {
        b.iter(|| apply_mask(black_box(&mut buf[1..=LEN]), black_box(KEY), 3));
    });
    group.bench_function("apply_mask_bytewise (reference)", |b| {
        b.iter(|| apply_mask_bytewise(black_box(&mut buf[..LEN]), black_box(KEY)));
    });
    group.finish();
}

criterion_group!(benches, mask);
criterion_main!(benches);
