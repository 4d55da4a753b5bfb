//! `tether bench`: a load generator that checks every echo byte for byte.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tether_tokio::tls::TlsClient;
use tether_tokio::{ClientBuilder, CloseCode, DeflateConfig, Message};

use crate::exit::{self, Failure};

/// Load a WebSocket echo server: N connections, each keeping P messages of
/// S bytes in flight for T; every echo is checked byte for byte.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  tether bench ws://127.0.0.1:8080/ws --connections 100 --size 20 --duration 10s
  tether bench ws://127.0.0.1:8080/ws -c 10 -s 64KiB -p 16 -d 30s --compression
  tether bench ws://127.0.0.1:8080/ws -c 100 --server-pid \"$(pgrep -n tether)\"

Prints messages/s, bytes/s, round-trip latency percentiles (p50, p90, p99,
p99.9, max), errors by kind and, with --server-pid, the server's CPU time per
message (user and system, from /proc). Exits 1 when any error happened.")]
pub(crate) struct Args {
    /// ws:// or wss:// URL of an echo endpoint
    url: String,
    /// Connections
    #[arg(short, long, default_value_t = 10)]
    connections: usize,
    /// Message size: bytes, or with a suffix (KiB, MiB, k, M)
    #[arg(short, long, default_value = "20", value_parser = parse_size)]
    size: usize,
    /// Messages in flight per connection
    #[arg(short = 'p', long, default_value_t = 1)]
    in_flight: usize,
    /// How long to send: 10s, 500ms, 2m (a bare number is seconds)
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Text messages (default: binary)
    #[arg(long)]
    text: bool,
    /// Offer permessage-deflate
    #[arg(long)]
    compression: bool,
    /// Report this process's CPU time per message (Linux /proc)
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Accept any server certificate (development only)
    #[arg(short = 'k', long)]
    insecure: bool,
}

/// What every connection adds up.
#[derive(Default)]
struct Totals {
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Option<Histogram<u64>>>,
}

impl Totals {
    fn error(&self, kind: String) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind).or_default() += 1;
        }
    }
}

pub(crate) async fn run(args: Args) -> Result<u8, Failure> {
    if args.connections == 0 || args.in_flight == 0 || args.size == 0 {
        return Err(Failure::usage(
            "--connections, --in-flight and --size must be at least 1",
        ));
    }
    let mut builder = ClientBuilder::new(&args.url).max_message_size((args.size as u64).max(1 << 20));
    if args.compression {
        builder = builder.permessage_deflate(DeflateConfig::default());
    }
    if args.insecure {
        builder = builder.tls(TlsClient::new().dangerous_accept_any_certificate());
    }
    // One connection first: a bad URL or a server that is not there fails
    // here, with its exit status, instead of as N errors.
    let first = builder.clone().connect().await.map_err(|e| exit::for_error(&e))?;

    let totals = Arc::new(Totals::default());
    let cpu_before = args.server_pid.map(cpu_time).transpose()?;
    let start = Instant::now();
    let stop = start + args.duration;
    let mut tasks = Vec::with_capacity(args.connections);
    let mut first = Some(first);
    for id in 0..args.connections {
        let totals = totals.clone();
        let builder = builder.clone();
        let ws = first.take();
        let (size, in_flight, text) = (args.size, args.in_flight, args.text);
        tasks.push(tokio::spawn(async move {
            let ws = match ws {
                Some(ws) => ws,
                None => match builder.connect().await {
                    Ok(ws) => ws,
                    Err(e) => return totals.error(format!("connect: {:?}", e.kind())),
                },
            };
            connection(ws, id as u64, size, in_flight, text, stop, &totals).await;
        }));
    }

    let progress = indicatif::ProgressBar::new(args.duration.as_millis() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let ticker = {
        let totals = totals.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let messages = totals.messages.load(Ordering::Relaxed);
                let rate = (messages - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, messages);
                let errors: u64 = totals.errors.lock().map(|e| e.values().sum()).unwrap_or(0);
                progress.set_position(now.duration_since(start).as_millis() as u64);
                progress.set_message(format!("{messages} messages, {rate:.0}/s, {errors} errors"));
            }
        })
    };
    for task in tasks {
        if let Err(e) = task.await {
            totals.error(format!("task: {e}"));
        }
    }
    ticker.abort();
    progress.finish_and_clear();
    let elapsed = start.elapsed();
    let cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => {
            let after = cpu_time(pid)?;
            Some((after.0 - before.0, after.1 - before.1))
        }
        _ => None,
    };
    Ok(report(&args, &totals, elapsed, cpu))
}

/// One connection's loop: keeps `in_flight` messages out until `stop`,
/// checks each echo, then closes.
async fn connection(
    mut ws: tether_tokio::ClientStream,
    id: u64,
    size: usize,
    in_flight: usize,
    text: bool,
    stop: Instant,
    totals: &Totals,
) {
    let mut histogram = new_histogram();
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::with_capacity(in_flight);
    let mut next_seq = 0u64;
    let mut failed = false;
    'run: loop {
        // Refill the window while there is time.
        while pending.len() < in_flight && Instant::now() < stop {
            let message = payload(id, next_seq, size, text);
            if let Err(e) = ws.feed(message).await {
                totals.error(format!("send: {:?}", e.kind()));
                failed = true;
                break 'run;
            }
            pending.push_back((next_seq, Instant::now()));
            next_seq += 1;
        }
        if let Err(e) = ws.flush().await {
            totals.error(format!("send: {:?}", e.kind()));
            failed = true;
            break;
        }
        let Some(&(seq, sent)) = pending.front() else { break };
        // The last echoes may take a while; a stuck server is an error.
        let Ok(received) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await else {
            totals.error("timeout waiting for an echo".to_owned());
            failed = true;
            break;
        };
        match received {
            Some(Ok(message)) => {
                let rtt = sent.elapsed();
                pending.pop_front();
                if message != payload(id, seq, size, text) {
                    totals.error("echo differs from the message sent".to_owned());
                    failed = true;
                    break;
                }
                let _ = histogram.record(rtt.as_micros().max(1) as u64);
                totals.messages.fetch_add(1, Ordering::Relaxed);
                totals.bytes.fetch_add(size as u64, Ordering::Relaxed);
            }
            Some(Err(e)) => {
                totals.error(format!("receive: {:?}", e.kind()));
                failed = true;
                break;
            }
            None => {
                totals.error("the server closed the connection".to_owned());
                failed = true;
                break;
            }
        }
    }
    if !failed {
        if let Err(e) = ws.close(CloseCode::NORMAL, "").await {
            totals.error(format!("close: {:?}", e.kind()));
        }
    }
    if let Ok(mut latency) = totals.latency.lock() {
        match latency.as_mut() {
            Some(total) => {
                let _ = total.add(&histogram);
            }
            None => *latency = Some(histogram),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid bounds")
}

/// Message `seq` of connection `id`: a header naming both, then a pattern
/// that depends on them, so that a mixed-up or corrupted echo is noticed.
fn payload(id: u64, seq: u64, size: usize, text: bool) -> Message {
    let header = format!("{id:x}.{seq:x}.");
    let mut bytes: Vec<u8> = header.into_bytes();
    let mut state = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
    while bytes.len() < size {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let byte = (state >> 56) as u8;
        bytes.push(if text { b'a' + byte % 26 } else { byte });
    }
    bytes.truncate(size);
    if text {
        // ASCII only: always valid UTF-8.
        Message::Text(String::from_utf8(bytes).unwrap_or_default().into())
    } else {
        Message::Binary(bytes.into())
    }
}

/// User and system CPU seconds of a process, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Result<(f64, f64), Failure> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| Failure::usage(format!("--server-pid {pid}: {e}")))?;
    // Fields after the command name (which may hold spaces, in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(Failure::usage(format!(
            "--server-pid {pid}: unexpected /proc/{pid}/stat"
        )));
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok((user as f64 / hz, system as f64 / hz))
}

fn report(args: &Args, totals: &Totals, elapsed: Duration, cpu: Option<(f64, f64)>) -> u8 {
    let secs = elapsed.as_secs_f64();
    let messages = totals.messages.load(Ordering::Relaxed);
    let bytes = totals.bytes.load(Ordering::Relaxed);
    let errors = totals.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let error_count: u64 = errors.values().sum();
    let latency = totals.latency.lock().ok().and_then(|l| l.clone());
    let kind = if args.text { "text" } else { "binary" };
    let compression = if args.compression {
        ", permessage-deflate offered"
    } else {
        ""
    };
    println!("url             {}", args.url);
    println!("connections     {}", args.connections);
    println!("message         {} B {kind}{compression}", args.size);
    println!("in flight       {} per connection", args.in_flight);
    println!("duration        {secs:.2} s");
    println!("messages        {messages} ({:.0}/s)", messages as f64 / secs);
    println!(
        "bytes           {bytes} ({:.2} MiB/s each way)",
        bytes as f64 / secs / (1024.0 * 1024.0)
    );
    match latency.filter(|h| !h.is_empty()) {
        Some(h) => {
            for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
                println!("latency {name:<7} {}", micros(h.value_at_quantile(q)));
            }
            println!("latency max     {}", micros(h.max()));
        }
        None => println!("latency         (no echo received)"),
    }
    println!("errors          {error_count}");
    for (kind, count) in &errors {
        println!("  {count:>6}  {kind}");
    }
    if let Some((user, system)) = cpu {
        let per = |s: f64| if messages == 0 { 0.0 } else { s * 1e6 / messages as f64 };
        println!(
            "server CPU      {:.2} µs/message (user {:.2}, system {:.2}; {:.2} s in all)",
            per(user + system),
            per(user),
            per(system),
            user + system
        );
    }
    if error_count == 0 && messages > 0 {
        exit::OK
    } else {
        exit::OTHER
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: usize = number.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("{s:?}: unknown unit (B, KiB, MiB)")),
    };
    number.checked_mul(scale).ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        _ => return Err(format!("{s:?}: unknown unit (ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("20"), Ok(20));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("1G").is_err());
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn payloads_differ_by_connection_and_sequence() {
        assert_eq!(payload(1, 2, 100, false), payload(1, 2, 100, false));
        assert_ne!(payload(1, 2, 100, false), payload(1, 3, 100, false));
        assert_ne!(payload(1, 2, 100, false), payload(2, 2, 100, false));
        let Message::Text(text) = payload(3, 4, 1000, true) else {
            panic!()
        };
        assert_eq!(text.len(), 1000);
        let Message::Binary(small) = payload(0, 0, 3, false) else {
            panic!()
        };
        assert_eq!(small.len(), 3);
    }
}
