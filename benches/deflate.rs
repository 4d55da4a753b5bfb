//! permessage-deflate throughput at the default settings (window 15, level 6,
//! memory level 8, context takeover): a server compressing what it sends and
//! decompressing what a client sent, for text-like and random payloads.
//! Throughput is in uncompressed bytes.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tether_proto::deflate::DeflateConfig;
use tether_proto::handshake::{Accept, ClientHandshake, ClientRequest, HandshakeConfig, ServerHandshake};
use tether_proto::{Config, Connection, Event, Message, SeededRandom};

/// A client and a server that negotiated permessage-deflate (default settings).
fn pair() -> (Connection, Connection) {
    let now = Instant::now();
    let request = ClientRequest::new("ws://bench/")
        .unwrap()
        .permessage_deflate(DeflateConfig::default());
    let (mut client, bytes) = ClientHandshake::new(request, &mut SeededRandom::new(1), now, None).unwrap();
    let mut server = ServerHandshake::new(HandshakeConfig::default(), now);
    let request = server.handle_read(&bytes).unwrap().unwrap();
    let accept = Accept::new().permessage_deflate(DeflateConfig::default());
    let (response, server) = server.accept(&request, accept, Config::default(), now).unwrap();
    let client = client
        .handle_read(&response)
        .unwrap()
        .unwrap()
        .into_connection(Config::default(), Box::new(SeededRandom::new(2)), now)
        .unwrap();
    (client, server)
}

/// JSON-like text: the kind of payload compression is for.
fn text_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while out.len() < len {
        i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let record = format!(
            "{{\"id\":{},\"symbol\":\"SYM{}\",\"price\":{}.{:02},\"side\":\"{}\"}},",
            i >> 44,
            (i >> 20) % 500,
            (i >> 30) % 1000,
            (i >> 10) % 100,
            if i & 1 == 0 { "buy" } else { "sell" }
        );
        out.extend_from_slice(record.as_bytes());
    }
    out.truncate(len);
    out
}

fn random(len: usize) -> Vec<u8> {
    let mut rng = SeededRandom::new(9);
    let mut out = vec![0; len];
    tether_proto::RandomSource::fill_bytes(&mut rng, &mut out);
    out
}

fn deflate(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("deflate");
    for (name, payload) in [
        ("text-like 1 KiB", text_like(1024)),
        ("text-like 64 KiB", text_like(64 * 1024)),
        ("random 64 KiB", random(64 * 1024)),
    ] {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        let (_, mut server) = pair();
        let message = Message::Binary(payload.clone().into());
        group.bench_with_input(BenchmarkId::new("compress", name), &message, |b, message| {
            b.iter(|| {
                server.send(message.clone()).unwrap();
                while let Some(chunk) = server.poll_transmit() {
                    black_box(chunk);
                }
            });
        });
        // Decompression: one compressed message from a client, replayed with
        // context takeover off so every copy decodes on its own.
        let (mut client, mut server) = {
            let nct = {
                let mut c = DeflateConfig::default();
                c.client_no_context_takeover = true;
                c
            };
            let request = ClientRequest::new("ws://bench/").unwrap().permessage_deflate(nct);
            let (mut hs, bytes) = ClientHandshake::new(request, &mut SeededRandom::new(1), now, None).unwrap();
            let mut shs = ServerHandshake::new(HandshakeConfig::default(), now);
            let req = shs.handle_read(&bytes).unwrap().unwrap();
            let (resp, server) = shs
                .accept(
                    &req,
                    Accept::new().permessage_deflate(DeflateConfig::default()),
                    Config::default(),
                    now,
                )
                .unwrap();
            let client = hs
                .handle_read(&resp)
                .unwrap()
                .unwrap()
                .into_connection(Config::default(), Box::new(SeededRandom::new(2)), now)
                .unwrap();
            (client, server)
        };
        client.send(message).unwrap();
        let wire: Vec<u8> = std::iter::from_fn(|| client.poll_transmit()).flatten().collect();
        if name == "text-like 64 KiB" {
            println!(
                "deflate: {name} compresses to {} bytes ({:.1}%)",
                wire.len(),
                100.0 * wire.len() as f64 / payload.len() as f64
            );
        }
        group.bench_with_input(BenchmarkId::new("decompress", name), &wire, |b, wire| {
            b.iter(|| {
                server.handle_read(wire, now);
                let Some(Event::Message(m)) = server.poll_event() else {
                    panic!("no message")
                };
                black_box(m);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);
