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
/// The most `LIVE` reached since the last [`reset_peak`].
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Heap bytes a server connection holds once it has received and echoed
/// `rounds` compressed messages (the client is dropped first, so only the
/// server is counted), the most it held above that while echoing (the
/// transient zlib states of a preset that frees them between messages),
/// and the time per echo.
fn server_memory(
    client_config: DeflateConfig,
    server_config: Option<DeflateConfig>,
    rounds: u32,
) -> (isize, isize, f64) {
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
    let mut transient = 0;
    for _ in 0..rounds {
        let base = live();
        reset_peak();
        server.handle_read(&wire, now);
        let Some(Event::Message(m)) = server.poll_event() else {
            panic!("no message")
        };
        server.send(m).unwrap();
        while server.poll_transmit().is_some() {}
        transient = transient.max(PEAK.load(Ordering::Relaxed) - base);
    }
    let per_echo = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    // Only the server is counted: the client connection was built after
    // `before` and is dropped here.
    drop(client);
    let used = live() - before;
    std::hint::black_box(&server);
    (used, transient, per_echo)
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    println!("permessage-deflate: heap held by one idle server connection after echoing a 2.4 KB JSON message");
    println!(
        "{:<30} {:>14} {:>20} {:>16}",
        "server settings", "held (KiB)", "peak in echo (KiB)", "µs per echo"
    );
    let rows = [
        ("no compression", None),
        ("DeflateConfig::default()", Some(DeflateConfig::default())),
        ("DeflateConfig::low_memory()", Some(DeflateConfig::low_memory())),
    ];
    for (name, server) in rows {
        let (used, transient, per_echo) = server_memory(DeflateConfig::default(), server, 2000);
        println!(
            "{name:<30} {:>14.1} {:>20.1} {:>16.2}",
            used as f64 / 1024.0,
            transient as f64 / 1024.0,
            per_echo
        );
    }
}
