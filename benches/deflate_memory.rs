//! Heap memory of a permessage-deflate connection, per preset: a counting
//! global allocator measures a server connection's growth once it has
//! compressed one message and decompressed one (both zlib states allocated).
//! Prints a table; `cargo bench -p tether-benches --bench deflate_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use tether_proto::deflate::DeflateConfig;
use tether_proto::handshake::{Accept, ClientHandshake, ClientRequest, HandshakeConfig, ServerHandshake};
use tether_proto::{Config, Event, Message, SeededRandom};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Heap bytes a server connection holds right after accepting, and once it
/// has received and echoed `rounds` compressed messages (the client is
/// dropped first, so only the server is counted), and the time per echo.
fn server_memory(client_config: DeflateConfig, server_config: Option<DeflateConfig>, rounds: u32) -> (isize, f64) {
    let now = Instant::now();
    let request = ClientRequest::new("ws://bench/")
        .unwrap()
        .permessage_deflate(client_config);
    let (mut hs, bytes) = ClientHandshake::new(request, &mut SeededRandom::new(1), now, None).unwrap();
    let mut shs = ServerHandshake::new(HandshakeConfig::default(), now);
    let req = shs.handle_read(&bytes).unwrap().unwrap();
    let accept = match server_config {
        Some(c) => Accept::new().permessage_deflate(c),
        None => Accept::new(),
    };
    let before = live();
    let (response, mut server) = shs.accept(&req, accept, Config::default(), now).unwrap();
    let mut client = hs
        .handle_read(&response)
        .unwrap()
        .unwrap()
        .into_connection(Config::default(), Box::new(SeededRandom::new(2)), now)
        .unwrap();
    drop(response);
    let text = "{\"event\":\"tick\",\"price\":101.25,\"symbol\":\"ABC\"}".repeat(50);
    let mut wire = Vec::new();
    client.send(Message::Text(text.as_str().into())).unwrap();
    wire.extend(std::iter::from_fn(|| client.poll_transmit()).flatten());
    let start = Instant::now();
    for _ in 0..rounds {
        server.handle_read(&wire, now);
        let Some(Event::Message(m)) = server.poll_event() else {
            panic!("no message")
        };
        server.send(m).unwrap();
        while server.poll_transmit().is_some() {}
    }
    let per_echo = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    // Only the server is counted: the client connection was built after
    // `before` and is dropped here.
    drop(client);
    let used = live() - before;
    std::hint::black_box(&server);
    (used, per_echo)
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    println!("permessage-deflate: heap held by one idle server connection after echoing a 2.4 KB JSON message");
    println!("{:<30} {:>14} {:>16}", "server settings", "held (KiB)", "µs per echo");
    let rows = [
        ("no compression", None),
        ("DeflateConfig::default()", Some(DeflateConfig::default())),
        ("DeflateConfig::low_memory()", Some(DeflateConfig::low_memory())),
    ];
    for (name, server) in rows {
        let (used, per_echo) = server_memory(DeflateConfig::default(), server, 2000);
        println!("{name:<30} {:>14.1} {:>16.2}", used as f64 / 1024.0, per_echo);
    }
}
