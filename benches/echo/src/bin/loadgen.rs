//! The load generator of the echo benchmark, written on raw tokio TCP so that
//! it favours no WebSocket crate: the opening handshake is written by hand
//! with a fixed `Sec-WebSocket-Key`, the client frames are encoded and masked
//! once up front, and the server's frames are parsed here and compared byte
//! for byte with what was sent, in order.
//!
//! It starts the server itself (`echo-server <crate> 127.0.0.1:0`), samples
//! the server's CPU time from `/proc/<pid>/stat` at both ends of the measured
//! window, and stops the server by its PID.
//!
//! ```text
//! loadgen suite --server PATH [--crates tether,tungstenite,...] [--workloads 20b,20b-p16,1k,16k,1m]
//!               [--kinds text,binary] [--warmup SECS] [--secs SECS] [--rounds N]
//!               [--idle-conns N | --no-idle] [--syscalls] [--pin] [--external NAME=COMMAND ...]
//! loadgen run   --server PATH --crate NAME --conns N --size BYTES --inflight P --kind text|binary
//!               [--warmup SECS] [--secs SECS]
//! loadgen idle  --server PATH --crate NAME [--idle-conns N]
//! loadgen broadcast --server PATH(broadcast-server) [--crates tether,tungstenite,fastwebsockets]
//!               [--subs 1000,5000] [--sizes 20,1k] [--warmup SECS] [--secs SECS]
//! ```
//!
//! The broadcast mode: `subs` subscriber connections and one publisher
//! (which is a subscriber too: a broadcast goes to the sender as well); the
//! publisher sends as fast as the slowest part allows, with at most 16
//! messages per subscriber not yet delivered; every subscriber's frames
//! are parsed and checked. It reports deliveries per second, the server's
//! CPU time per delivery, its system calls per delivery (all, and writes:
//! `strace -c -f` attached for a second window of 1 s after the measured
//! one, when strace is installed), and its memory.
//!
//! `--external NAME=COMMAND` adds a server built outside this workspace
//! (uWebSockets, for one: no registry package builds it), started as
//! `COMMAND 127.0.0.1:0` and expected to print `listening on ADDR`.
//! `--syscalls` adds one window of 1 s per run under `strace -c -f` and a
//! table of the server's system calls per message.
//!
//! `--pin` binds the load generator to CPU 0 and each server (every thread
//! of it) to CPU 1, so that neither is moved between the cores or shares
//! one with the other: on a 2-vCPU machine, steadier figures.
//!
//! `--callgrind` runs each server under `valgrind --tool=callgrind` and
//! prints, instead of times, the instructions the server executed in user
//! space per echoed message over the measured window (its counters zeroed
//! at the start with `callgrind_control -z`, dumped at the end with `-d`):
//! a count that repeats from run to run whatever else the machine is doing,
//! for comparing code paths where the times are noisy. With
//! `TETHER_BENCH_CALLGRIND_KEEP=DIR` in the environment each window's dump
//! is kept in `DIR` for `callgrind_annotate`. The server runs
//! about 50 times slower under it, so it batches differently from a native
//! run (more messages per read at 16 in flight): compare crates with one
//! another in the same mode, not with the times.
//!
//! The suite prints its tables in markdown on stdout, progress on stderr.
//! With `--rounds N` it runs everything N times, each round starting with
//! another crate, and reports the median of each figure. With tether-tokio
//! and another tether adapter in the run, it also prints each adapter's CPU
//! per message against tether-tokio's and against the best other crate on
//! the same runtime (the ratios of issue 10).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

type Error = Box<dyn std::error::Error>;

const CRATES: [&str; 13] = [
    "tether",
    "tether-lent",
    "tether-many",
    "tungstenite",
    "fastwebsockets",
    "tokio-websockets",
    "tether-smol",
    "tether-async-std",
    "async-tungstenite-smol",
    "tether-blocking",
    "tether-h2",
    "tether-compio",
    "tether-mio",
];
/// The runtime each server runs on: the issue-10 ratios compare a tether
/// adapter with the other crates on the same one.
fn runtime_of(krate: &str) -> &'static str {
    match krate {
        "tether-smol" | "async-tungstenite-smol" => "smol",
        "tether-async-std" => "async-std",
        "tether-blocking" => "threads",
        "tether-compio" => "compio",
        "tether-mio" => "mio",
        _ => "tokio",
    }
}

/// tether itself, on any runtime: never counted as "another crate".
fn is_tether(krate: &str) -> bool {
    krate == "tether" || krate.starts_with("tether-")
}

/// How the tables name each crate.
fn display_name(krate: &str) -> &str {
    match krate {
        "tungstenite" => "tokio-tungstenite",
        other => other,
    }
}

/// The workloads of issue 5: (id, connections, message size, in flight).
const WORKLOADS: [(&str, usize, usize, usize); 5] = [
    ("20b", 100, 20, 1),
    ("20b-p16", 100, 20, 16),
    ("1k", 10, 1024, 1),
    ("16k", 200, 16 * 1024, 1),
    ("1m", 10, 1024 * 1024, 1),
];

/// The RFC 6455 section 1.3 example key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Sent in a ping before each connection closes.
const PING_PAYLOAD: &[u8] = b"tether-echo-bench";

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

fn main() -> Result<(), Error> {
    tether_echo_bench::raise_fd_limit();
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let opts = Opts::parse(args)?;
    if opts.pin {
        // Before the runtime: its threads inherit the set.
        pin_to_cpu(0, LOADGEN_CPU)?;
        PIN_SERVERS.store(true, Ordering::Relaxed);
    }
    // One thread: the server runs on the other core.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match mode.as_str() {
        "suite" => rt.block_on(suite(&opts)),
        "run" => {
            let krate = opts.krate.clone().ok_or("--crate is required")?;
            let workload = Workload {
                conns: opts.conns.ok_or("--conns is required")?,
                size: opts.size.ok_or("--size is required")?,
                inflight: opts.inflight.unwrap_or(1),
                text: opts.kinds.first().map(|k| k == "text").unwrap_or(false),
            };
            let result = rt.block_on(run(&opts, &krate, &workload))?;
            println!("{}", result.describe());
            Ok(())
        }
        "idle" => {
            let krate = opts.krate.clone().ok_or("--crate is required")?;
            let idle = rt.block_on(idle(&opts, &krate))?;
            println!("{}", idle.describe());
            Ok(())
        }
        "broadcast" => rt.block_on(broadcast::suite(&opts)),
        _ => Err("usage: loadgen suite|run|idle|broadcast --server PATH [options] (see the source's header)".into()),
    }
}

// ---------------------------------------------------------------------------
// Options

struct Opts {
    server: String,
    crates: Vec<String>,
    workloads: Vec<String>,
    kinds: Vec<String>,
    warmup: f64,
    secs: f64,
    rounds: usize,
    idle_conns: usize,
    krate: Option<String>,
    conns: Option<usize>,
    size: Option<usize>,
    inflight: Option<usize>,
    /// Broadcast mode: subscriber counts and message sizes.
    subs: Vec<usize>,
    sizes: Vec<usize>,
    /// Whether `--crates` was given (the broadcast mode has its own default).
    crates_given: bool,
    /// Servers built outside this workspace, `--external NAME=COMMAND`:
    /// started as `COMMAND 127.0.0.1:0`, they print `listening on ADDR`.
    external: Vec<(String, String)>,
    /// `--syscalls`: one more window of 1 s under `strace -c -f` per run.
    syscalls: bool,
    /// `--callgrind`: servers under callgrind; instructions per message.
    callgrind: bool,
    /// `--pin`: the load generator on CPU 0, each server on CPU 1.
    pin: bool,
}

impl Opts {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, Error> {
        let mut opts = Self {
            server: "target/release/echo-server".to_owned(),
            crates: CRATES.iter().map(|s| (*s).to_owned()).collect(),
            workloads: WORKLOADS.iter().map(|w| w.0.to_owned()).collect(),
            kinds: vec!["text".to_owned(), "binary".to_owned()],
            warmup: 1.0,
            secs: 3.0,
            rounds: 1,
            idle_conns: 5000,
            krate: None,
            conns: None,
            size: None,
            inflight: None,
            subs: vec![1000, 5000],
            sizes: vec![20, 1024],
            crates_given: false,
            external: Vec::new(),
            syscalls: false,
            callgrind: false,
            pin: false,
        };
        let list = |s: String| s.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--server" => opts.server = value()?,
                "--crates" => {
                    opts.crates = list(value()?);
                    opts.crates_given = true;
                }
                "--subs" => opts.subs = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
                "--sizes" => opts.sizes = value()?.split(',').map(parse_size).collect::<Result<_, _>>()?,
                "--workloads" => opts.workloads = list(value()?),
                "--kinds" | "--kind" => opts.kinds = list(value()?),
                "--warmup" => opts.warmup = value()?.parse()?,
                "--secs" => opts.secs = value()?.parse()?,
                "--rounds" => opts.rounds = value()?.parse::<usize>()?.max(1),
                "--idle-conns" => opts.idle_conns = value()?.parse()?,
                "--no-idle" => opts.idle_conns = 0,
                "--crate" => opts.krate = Some(value()?),
                "--conns" => opts.conns = Some(value()?.parse()?),
                "--size" => opts.size = Some(parse_size(&value()?)?),
                "--inflight" => opts.inflight = Some(value()?.parse()?),
                "--external" => {
                    let spec = value()?;
                    let (name, command) = spec.split_once('=').ok_or("--external needs NAME=COMMAND")?;
                    opts.external.push((name.to_owned(), command.to_owned()));
                    if !opts.crates.iter().any(|c| c == name) {
                        opts.crates.push(name.to_owned());
                    }
                }
                "--syscalls" => opts.syscalls = true,
                "--callgrind" => opts.callgrind = true,
                "--pin" => opts.pin = true,
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        for krate in opts.crates.iter().chain(&opts.krate) {
            if !CRATES.contains(&krate.as_str()) && !opts.external.iter().any(|(name, _)| name == krate) {
                return Err(format!("unknown crate {krate}; one of {CRATES:?}").into());
            }
        }
        for id in &opts.workloads {
            if !WORKLOADS.iter().any(|w| w.0 == id) {
                let ids: Vec<_> = WORKLOADS.iter().map(|w| w.0).collect();
                return Err(format!("unknown workload {id}; one of {ids:?}").into());
            }
        }
        for kind in &opts.kinds {
            if kind != "text" && kind != "binary" {
                return Err(format!("unknown kind {kind}: text or binary").into());
            }
        }
        Ok(opts)
    }
}

fn parse_size(s: &str) -> Result<usize, Error> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let unit = match unit {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "m" | "mib" => 1024 * 1024,
        _ => return Err(format!("bad size {s}").into()),
    };
    Ok(digits.parse::<usize>()? * unit)
}

// ---------------------------------------------------------------------------
// The suite: every crate on every workload, then idle memory, then the tables.

async fn suite(opts: &Opts) -> Result<(), Error> {
    let started = Instant::now();
    let ticks = clock_ticks();
    eprintln!(
        "echo benchmark: crates {:?}, workloads {:?}, kinds {:?}, warm-up {} s, measured {} s, {} idle connections; \
         server CPU from /proc/<pid>/stat at {ticks} ticks/s",
        opts.crates, opts.workloads, opts.kinds, opts.warmup, opts.secs, opts.idle_conns
    );
    // (workload label, crate) -> the rounds' results; None for a failed run.
    let mut results: HashMap<(String, String), Vec<Option<RunResult>>> = HashMap::new();
    let mut rows = Vec::new();
    let mut failed = false;
    for round in 0..opts.rounds {
        if opts.rounds > 1 {
            eprintln!("round {} of {}", round + 1, opts.rounds);
        }
        for (_, conns, size, inflight) in WORKLOADS.iter().filter(|w| opts.workloads.iter().any(|id| id == w.0)) {
            for kind in &opts.kinds {
                let workload = Workload {
                    conns: *conns,
                    size: *size,
                    inflight: *inflight,
                    text: kind == "text",
                };
                let label = workload.label();
                if round == 0 {
                    rows.push(label.clone());
                }
                // Each round starts with another crate, so that none always
                // runs first (or right after a given one).
                let n = opts.crates.len();
                for krate in opts.crates.iter().cycle().skip(round % n).take(n) {
                    let result = match run(opts, krate, &workload).await {
                        Ok(result) => {
                            eprintln!("  {}", result.describe());
                            Some(result)
                        }
                        Err(e) => {
                            eprintln!("  ERROR {krate} {label}: {e}");
                            failed = true;
                            None
                        }
                    };
                    results.entry((label.clone(), krate.clone())).or_default().push(result);
                }
            }
        }
    }
    let mut idle_results = Vec::new();
    // Memory under valgrind is valgrind's: no idle runs with `--callgrind`.
    if opts.idle_conns > 0 && !opts.callgrind {
        for krate in &opts.crates {
            match idle(opts, krate).await {
                Ok(result) => {
                    eprintln!("  {}", result.describe());
                    idle_results.push((krate.clone(), Some(result)));
                }
                Err(e) => {
                    eprintln!("  ERROR {krate} idle: {e}");
                    failed = true;
                    idle_results.push((krate.clone(), None));
                }
            }
        }
    }
    print_tables(opts, &rows, &results, &idle_results, ticks);
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    if failed {
        return Err("some runs failed (see ERROR above)".into());
    }
    Ok(())
}

fn print_tables(
    opts: &Opts,
    rows: &[String],
    results: &HashMap<(String, String), Vec<Option<RunResult>>>,
    idle: &[(String, Option<IdleResult>)],
    ticks: u64,
) {
    // The other crates: tether's own adapters are not among them.
    let others: Vec<&String> = opts.crates.iter().filter(|c| !is_tether(c)).collect();
    let has_tether = opts.crates.iter().any(|c| c == "tether");
    let header = |what: &str, ratio: Option<&str>| {
        let mut line = format!("| {what} |");
        let mut rule = "|---|".to_owned();
        for krate in &opts.crates {
            line += &format!(" {} |", display_name(krate));
            rule += "---:|";
        }
        if let Some(ratio) = ratio.filter(|_| has_tether && !others.is_empty()) {
            line += &format!(" {ratio} |");
            rule += "---:|";
        }
        println!("{line}\n{rule}");
    };
    let get = |row: &String, krate: &String| {
        results
            .get(&(row.clone(), krate.clone()))
            .and_then(|runs| Stats::of(runs))
    };
    // Best other crate by `key`, better = `lower`.
    let ratio = |row: &String, key: &dyn Fn(&Stats) -> f64, lower: bool| -> String {
        let Some(tether) = get(row, &"tether".to_owned()) else {
            return "-".to_owned();
        };
        let values = others.iter().filter_map(|c| get(row, c)).map(|s| key(&s));
        let best = if lower {
            values.fold(f64::INFINITY, f64::min)
        } else {
            values.fold(0.0, f64::max)
        };
        if best.is_finite() && best > 0.0 {
            format!("**{:.2}**", key(&tether) / best)
        } else {
            "-".to_owned()
        }
    };

    // One table: a row per workload, a cell per crate (`cell` gives `None`
    // for a figure the run has not: printed as `missing`), and with
    // `ratio` = (label, figure, lower is better) a last column of tether
    // against the best other crate.
    type Ratio<'a> = Option<(&'a str, &'a dyn Fn(&Stats) -> f64, bool)>;
    let table = |title: &str, ratio_of: Ratio<'_>, cell: &dyn Fn(&Stats) -> Option<String>, missing: &str| {
        println!();
        println!("{title}");
        println!();
        header("workload", ratio_of.map(|(label, _, _)| label));
        for row in rows {
            let mut line = format!("| {row} |");
            for krate in &opts.crates {
                let value = get(row, krate).map(|r| cell(&r));
                line += &match value {
                    Some(Some(v)) => format!(" {v} |"),
                    Some(None) => format!(" {missing} |"),
                    None => " FAIL |".to_owned(),
                };
            }
            if let Some((_, key, lower)) = ratio_of.filter(|_| has_tether && !others.is_empty()) {
                line += &format!(" {} |", ratio(row, key, lower));
            }
            println!("{line}");
        }
    };

    println!();
    println!(
        "Echo benchmark: {} s warm-up, {} s measured per run; one fresh server per run; {}.",
        opts.warmup,
        opts.secs,
        if opts.rounds > 1 {
            format!("median of {} rounds", opts.rounds)
        } else {
            "one round".to_owned()
        }
    );
    if opts.callgrind {
        // Under valgrind the times are valgrind's: only the counts.
        table(
            "Server instructions per echoed message, user space (callgrind, counted over the measured window; \
             lower is better):",
            Some((
                "tether / best other",
                &|s| s.instructions_per_msg.unwrap_or(f64::NAN),
                true,
            )),
            &|r| r.instructions_per_msg.map(thousands),
            "FAIL",
        );
        return;
    }
    table(
        "Server CPU time per echoed message, µs (lower is better):",
        Some(("tether / best other", &|s| s.cpu_us_per_msg, true)),
        &|r| Some(format!("{:.2}", r.cpu_us_per_msg)),
        "FAIL",
    );
    print_adapter_ratios(opts, rows, &get);
    print_paired(opts, rows, results);
    table(
        "Server CPU time per echoed message apart, µs: user + system (user: the library and its runtime; \
         system: the kernel's socket work and system calls):",
        Some(("tether user / best other user", &|s| s.user_us_per_msg, true)),
        &|r| Some(format!("{:.2} + {:.2}", r.user_us_per_msg, r.sys_us_per_msg)),
        "FAIL",
    );
    if opts.syscalls {
        table(
            "Server system calls per echoed message (`strace -c -f`, one more window of 1 s):",
            None,
            &|r| r.syscalls_per_msg.map(|calls| format!("{calls:.3}")),
            "-",
        );
    }
    table(
        "Messages echoed per second (higher is better):",
        Some(("tether / best other", &|s| s.msgs_per_sec, false)),
        &|r| Some(thousands(r.msgs_per_sec)),
        "FAIL",
    );
    table(
        "Server CPU use during the window, % of one core (below ~95 %: the server waited on the load generator):",
        None,
        &|r| Some(format!("{:.0}", r.server_busy * 100.0)),
        "FAIL",
    );
    table(
        "Server waits that slept, per echoed message (voluntary context switches of its threads; each is a \
         sleep and a wake-up, kernel time charged to the server: a server faster than the load generator \
         sleeps more often):",
        None,
        &|r| Some(format!("{:.3}", r.sleeps_per_msg)),
        "FAIL",
    );
    if !idle.is_empty() {
        println!();
        println!(
            "Server resident memory (VmRSS) growth per connection, KiB, {} connections \
             (lower is better), from a baseline taken after a warm-up ({WARMUP_CONNS} connections, \
             {WARMUP_ECHOES} echoes of 16 KiB each, closed) that makes what a server holds once \
             (a runtime's read-buffer pool, a thread's buffers); the last column is that once-only growth:",
            opts.idle_conns
        );
        println!();
        let tokio_idle = idle
            .iter()
            .find(|(krate, _)| krate == "tether")
            .and_then(|(_, r)| r.as_ref())
            .map(IdleResult::idle_kib_per_conn)
            .filter(|kib| *kib > 0.0);
        println!(
            "| crate | idle after handshake | idle again after one 16 KiB echo each | idle / tether (tokio) \
             | warm-up, KiB once per server |"
        );
        println!("|---|---:|---:|---:|---:|");
        for (krate, result) in idle {
            match result {
                Some(r) => println!(
                    "| {} | {:.2} | {:.2} | {} | {} |",
                    display_name(krate),
                    r.idle_kib_per_conn(),
                    r.after_echo_kib_per_conn(),
                    tokio_idle.map_or_else(|| "-".to_owned(), |t| format!("{:.2}", r.idle_kib_per_conn() / t)),
                    r.base_kib.saturating_sub(r.start_kib),
                ),
                None => println!("| {} | FAIL | FAIL | - | - |", display_name(krate)),
            }
        }
    }
    let mut unclean: Vec<String> = results
        .values()
        .flatten()
        .flatten()
        .filter(|r| r.clean_closes < r.conns)
        .map(|r| format!("{} {}: {}/{}", display_name(&r.krate), r.label, r.clean_closes, r.conns))
        .collect();
    unclean.sort();
    println!();
    if unclean.is_empty() {
        println!("Every connection answered a ping and completed the close handshake at the end.");
    } else {
        println!("Connections that did not answer the ping or complete the close handshake: {unclean:?}");
    }
    println!(
        "(CPU time from /proc/<pid>/stat utime+stime at {ticks} ticks/s; the load generator is one thread \
         of raw TCP.)"
    );
}

/// The ratios of issue 10, when the run has tether-tokio and another tether
/// adapter: each adapter's CPU per message against tether-tokio's (target:
/// at most 1.15 for the futures-io adapters), and against the best other
/// crate on the same runtime (target: below 1).
fn print_adapter_ratios(opts: &Opts, rows: &[String], get: &dyn Fn(&String, &String) -> Option<Stats>) {
    let tokio = "tether".to_owned();
    let adapters: Vec<&String> = opts.crates.iter().filter(|c| is_tether(c) && **c != tokio).collect();
    if adapters.is_empty() {
        return;
    }
    let has_tokio = opts.crates.contains(&tokio);
    // (column title, adapter, the crates it is divided by)
    let mut columns: Vec<(String, &String, Vec<&String>)> = Vec::new();
    for adapter in &adapters {
        if has_tokio {
            columns.push((
                format!("{} / tether (tokio)", display_name(adapter)),
                adapter,
                vec![&tokio],
            ));
        }
        let rivals: Vec<&String> = opts
            .crates
            .iter()
            .filter(|c| !is_tether(c) && runtime_of(c) == runtime_of(adapter))
            .collect();
        if !rivals.is_empty() {
            let title = format!("{} / best other on {}", display_name(adapter), runtime_of(adapter));
            columns.push((title, adapter, rivals));
        }
    }
    if columns.is_empty() {
        return;
    }
    println!();
    println!(
        "tether's other adapters, server CPU per message as ratios (issue 10: futures-io at most 1.15x \
         tether-tokio, and below every other crate on the same runtime):"
    );
    println!();
    let mut line = "| workload |".to_owned();
    let mut rule = "|---|".to_owned();
    for (title, _, _) in &columns {
        line += &format!(" {title} |");
        rule += "---:|";
    }
    println!("{line}\n{rule}");
    for row in rows {
        let mut line = format!("| {row} |");
        for (_, adapter, against) in &columns {
            let best = against
                .iter()
                .filter_map(|c| get(row, c))
                .map(|s| s.cpu_us_per_msg)
                .fold(f64::INFINITY, f64::min);
            line += &match get(row, adapter) {
                Some(s) if best.is_finite() && best > 0.0 => format!(" {:.2} |", s.cpu_us_per_msg / best),
                _ => " - |".to_owned(),
            };
        }
        println!("{line}");
    }
}

/// With three rounds or more, each tether crate's CPU per message against
/// each other crate's round by round: the median of the per-round ratios,
/// and in how many rounds tether's was the lower. The crates of a round run
/// one after the other, so what drifts between rounds (the machine's other
/// load, where memory lands) weighs on both sides of a ratio. A ratio to
/// the best of several crates in each round would lean the other way: the
/// least of two or three noisy figures is low by chance.
fn print_paired(opts: &Opts, rows: &[String], results: &HashMap<(String, String), Vec<Option<RunResult>>>) {
    if opts.rounds < 3 {
        return;
    }
    let pairs: Vec<(&String, &String)> = opts
        .crates
        .iter()
        .filter(|c| is_tether(c))
        .flat_map(|ours| {
            opts.crates
                .iter()
                .filter(|c| !is_tether(c))
                .map(move |other| (ours, other))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    println!();
    println!(
        "Server CPU time per echoed message, round by round: the median of the per-round ratios (in how many \
         rounds the first was lower):"
    );
    println!();
    let mut line = "| workload |".to_owned();
    let mut rule = "|---|".to_owned();
    for (ours, other) in &pairs {
        line += &format!(" {} / {} |", display_name(ours), display_name(other));
        rule += "---:|";
    }
    println!("{line}\n{rule}");
    for row in rows {
        let mut line = format!("| {row} |");
        for (ours, other) in &pairs {
            let rounds = |krate: &String| results.get(&(row.clone(), krate.clone()));
            let ratios: Vec<f64> = match (rounds(ours), rounds(other)) {
                (Some(a), Some(b)) => a
                    .iter()
                    .zip(b)
                    .filter_map(|(a, b)| Some(a.as_ref()?.cpu_us_per_msg() / b.as_ref()?.cpu_us_per_msg()))
                    .collect(),
                _ => Vec::new(),
            };
            let lower = ratios.iter().filter(|&&r| r < 1.0).count();
            let n = ratios.len();
            line += &match median(ratios) {
                Some(m) => format!(" {m:.3} ({lower}/{n}) |"),
                None => " - |".to_owned(),
            };
        }
        println!("{line}");
    }
}

/// The median of `values` (the mean of the two middle ones for an even
/// count); `None` for none.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        Some(values[mid])
    } else {
        Some((*values.get(mid.checked_sub(1)?)? + values[mid]) / 2.0)
    }
}

/// The median of each figure over the rounds of one cell of the tables;
/// `None` if a round failed.
struct Stats {
    cpu_us_per_msg: f64,
    user_us_per_msg: f64,
    sys_us_per_msg: f64,
    msgs_per_sec: f64,
    server_busy: f64,
    sleeps_per_msg: f64,
    syscalls_per_msg: Option<f64>,
    instructions_per_msg: Option<f64>,
}

impl Stats {
    fn of(runs: &[Option<RunResult>]) -> Option<Self> {
        let runs: Vec<&RunResult> = runs.iter().map(Option::as_ref).collect::<Option<_>>()?;
        let figure = |f: fn(&RunResult) -> f64| median(runs.iter().map(|r| f(r)).collect());
        let syscalls = {
            let mut v: Vec<f64> = runs.iter().filter_map(|r| r.syscalls_per_msg).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        let instructions = {
            let mut v: Vec<f64> = runs.iter().filter_map(|r| r.instructions_per_msg).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        Some(Self {
            instructions_per_msg: instructions,
            cpu_us_per_msg: figure(RunResult::cpu_us_per_msg)?,
            user_us_per_msg: figure(RunResult::user_us_per_msg)?,
            sys_us_per_msg: figure(RunResult::sys_us_per_msg)?,
            syscalls_per_msg: syscalls,
            msgs_per_sec: figure(RunResult::msgs_per_sec)?,
            server_busy: figure(RunResult::server_busy)?,
            sleeps_per_msg: figure(RunResult::sleeps_per_msg)?,
        })
    }
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// One measured run.

struct Workload {
    conns: usize,
    size: usize,
    inflight: usize,
    text: bool,
}

impl Workload {
    fn label(&self) -> String {
        let size = match self.size {
            s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
            s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
            s => format!("{s} B"),
        };
        let kind = if self.text { "text" } else { "binary" };
        format!("{} x {size}, {} in flight, {kind}", self.conns, self.inflight)
    }
}

struct RunResult {
    krate: String,
    label: String,
    echoed: u64,
    elapsed: Duration,
    server_ticks: u64,
    server_user_ticks: u64,
    server_sys_ticks: u64,
    syscalls_per_msg: Option<f64>,
    /// `--callgrind`: the server's instructions per message in the window.
    instructions_per_msg: Option<f64>,
    /// The server's context switches in the window, all its threads:
    /// voluntary (it slept: nothing to do) and involuntary (preempted).
    server_switches: (u64, u64),
    loadgen_ticks: u64,
    ticks_per_sec: u64,
    clean_closes: usize,
    conns: usize,
}

impl RunResult {
    fn msgs_per_sec(&self) -> f64 {
        self.echoed as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_us_per_msg(&self) -> f64 {
        self.server_ticks as f64 * 1e6 / self.ticks_per_sec as f64 / self.echoed.max(1) as f64
    }

    fn user_us_per_msg(&self) -> f64 {
        self.server_user_ticks as f64 * 1e6 / self.ticks_per_sec as f64 / self.echoed.max(1) as f64
    }

    fn sys_us_per_msg(&self) -> f64 {
        self.server_sys_ticks as f64 * 1e6 / self.ticks_per_sec as f64 / self.echoed.max(1) as f64
    }

    fn server_busy(&self) -> f64 {
        self.server_ticks as f64 / self.ticks_per_sec as f64 / self.elapsed.as_secs_f64()
    }

    fn sleeps_per_msg(&self) -> f64 {
        self.server_switches.0 as f64 / self.echoed.max(1) as f64
    }

    fn describe(&self) -> String {
        let mut line = format!(
            "{:<16} {:<36} {:>12} msgs/s  {:>7.2} us/msg server CPU  (server {:.0} %, loadgen {:.0} % of a core; \
             {}/{} answered a ping and closed cleanly)",
            display_name(&self.krate),
            self.label,
            thousands(self.msgs_per_sec()),
            self.cpu_us_per_msg(),
            self.server_busy() * 100.0,
            self.loadgen_ticks as f64 / self.ticks_per_sec as f64 / self.elapsed.as_secs_f64() * 100.0,
            self.clean_closes,
            self.conns,
        );
        if let Some(n) = self.instructions_per_msg {
            line += &format!("  {} instructions/msg (callgrind)", thousands(n));
        }
        line
    }
}

/// Shared by the controller and every connection of a run.
struct Shared {
    echoed: AtomicU64,
    sending: AtomicBool,
}

async fn run(opts: &Opts, krate: &str, workload: &Workload) -> Result<RunResult, Error> {
    let messages = Arc::new(Messages::new(workload.size, workload.inflight, workload.text));
    let mut server = Server::start_for(opts, krate).await?;
    let result = measure(opts, krate, workload, &messages, &server).await;
    server.stop().await;
    result
}

async fn measure(
    opts: &Opts,
    krate: &str,
    workload: &Workload,
    messages: &Arc<Messages>,
    server: &Server,
) -> Result<RunResult, Error> {
    let shared = Arc::new(Shared {
        echoed: AtomicU64::new(0),
        sending: AtomicBool::new(true),
    });
    let mut tasks = tokio::task::JoinSet::new();
    if krate == "tether-h2" {
        // HTTP/2: the WebSockets as streams, up to 100 per connection.
        let mut connection = None;
        for id in 0..workload.conns {
            if id % h2io::STREAMS_PER_CONNECTION == 0 {
                connection = Some(h2io::connect(&server.addr).await?);
            }
            let client = connection.clone().ok_or("no HTTP/2 connection")?;
            let (addr, messages, shared) = (server.addr.clone(), messages.clone(), shared.clone());
            tasks.spawn(async move {
                let stream = h2io::open(client, &addr)
                    .await
                    .map_err(|e| format!("stream {id}: {e}"))?;
                echo_connection(id, stream, Vec::new(), &messages, &shared).await
            });
        }
    } else {
        for id in 0..workload.conns {
            let (addr, messages, shared) = (server.addr.clone(), messages.clone(), shared.clone());
            tasks.spawn(async move {
                let (tcp, leftover) = handshake(&addr).await.map_err(|e| format!("connection {id}: {e}"))?;
                echo_connection(id, tcp, leftover, &messages, &shared).await
            });
        }
    }
    // Warm up (connections open meanwhile), then measure.
    tokio::time::sleep(Duration::from_secs_f64(opts.warmup)).await;
    if server.callgrind.is_some() {
        callgrind_control(server.pid, "-z").await?;
    }
    let ticks_per_sec = clock_ticks();
    let switches0 = context_switches(server.pid)?;
    let (echoed0, server0, loadgen0, t0) = (
        shared.echoed.load(Ordering::Relaxed),
        cpu_times(server.pid)?,
        cpu_ticks_self()?,
        Instant::now(),
    );
    let mut early_failure = None;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(opts.secs)) => {}
        // A connection that fails ends the run at once.
        Some(joined) = tasks.join_next() => early_failure = Some(joined),
    }
    let (echoed1, server1, loadgen1, elapsed) = (
        shared.echoed.load(Ordering::Relaxed),
        cpu_times(server.pid)?,
        cpu_ticks_self()?,
        t0.elapsed(),
    );
    let switches1 = context_switches(server.pid)?;
    let instructions = match &server.callgrind {
        Some(out) => Some(callgrind_dump(server.pid, out).await?),
        None => None,
    };
    // The system calls, in one more window under strace (which slows the
    // server: only the count per message is used).
    let mut syscalls_per_msg = None;
    if opts.syscalls && early_failure.is_none() {
        let before = shared.echoed.load(Ordering::Relaxed);
        if let Some((calls, _)) = strace_counts(server.pid, Duration::from_secs(1)).await {
            let echoed = shared.echoed.load(Ordering::Relaxed) - before;
            syscalls_per_msg = Some(calls as f64 / echoed.max(1) as f64);
        }
    }
    shared.sending.store(false, Ordering::Relaxed);
    let mut clean_closes = 0;
    let mut first_error = None;
    let drain = async {
        if let Some(joined) = early_failure {
            match joined {
                Ok(Ok(clean)) => clean_closes += usize::from(clean),
                Ok(Err(e)) => first_error = first_error.take().or(Some(e)),
                Err(e) => first_error = first_error.take().or(Some(e.to_string())),
            }
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(clean)) => clean_closes += usize::from(clean),
                Ok(Err(e)) => first_error = first_error.take().or(Some(e)),
                Err(e) => first_error = first_error.take().or(Some(e.to_string())),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), drain).await.is_err() {
        tasks.abort_all();
        return Err("connections did not finish within 30 s of the end of the window".into());
    }
    if let Some(e) = first_error {
        return Err(e.into());
    }
    let echoed = echoed1 - echoed0;
    if echoed == 0 {
        return Err("no message echoed in the measured window".into());
    }
    Ok(RunResult {
        krate: krate.to_owned(),
        label: workload.label(),
        echoed,
        elapsed,
        server_ticks: (server1.0 + server1.1) - (server0.0 + server0.1),
        server_user_ticks: server1.0 - server0.0,
        server_sys_ticks: server1.1 - server0.1,
        syscalls_per_msg,
        instructions_per_msg: instructions.map(|n| n as f64 / echoed as f64),
        server_switches: (
            switches1.0.saturating_sub(switches0.0),
            switches1.1.saturating_sub(switches0.1),
        ),
        loadgen_ticks: loadgen1 - loadgen0,
        ticks_per_sec,
        clean_closes,
        conns: workload.conns,
    })
}

/// Keeps `inflight` messages outstanding until the run stops sending, then
/// collects the outstanding echoes and closes. Returns whether the close
/// handshake completed (close frame answered, then end of stream).
async fn echo_connection<T: Transport>(
    id: usize,
    mut tcp: T,
    leftover: Vec<u8>,
    messages: &Messages,
    shared: &Shared,
) -> Result<bool, String> {
    {
        let inflight = messages.inflight;
        let (mut rd, mut wr) = tcp.halves();
        // Messages the writer may send; `sent` counts the messages taken. (Both
        // futures run in this one task: atomics only because tasks must be Send.)
        let credits = AtomicUsize::new(inflight);
        let sent = AtomicU64::new(0);
        let wake_writer = Notify::new();

        // Ends only on an error.
        let writer = async {
            let mut next = 0;
            loop {
                let n = credits.swap(0, Ordering::Relaxed);
                if n == 0 {
                    wake_writer.notified().await;
                    continue;
                }
                sent.fetch_add(n as u64, Ordering::Relaxed);
                if let Err(e) = wr.write_all(messages.frames(next, n)).await {
                    return e;
                }
                next = (next + n) % messages.count();
            }
        };
        let reader = async {
            let mut parser = Parser::new(messages);
            let mut buf = vec![0u8; messages.read_size()];
            let mut filled = leftover.len();
            buf[..filled].copy_from_slice(&leftover);
            let mut received = 0u64;
            loop {
                let (done, consumed) = parser
                    .feed(&buf[..filled])
                    .map_err(|e| format!("connection {id}: {e}"))?;
                buf.copy_within(consumed..filled, 0);
                filled -= consumed;
                if done > 0 {
                    received += done as u64;
                    shared.echoed.fetch_add(done as u64, Ordering::Relaxed);
                    if shared.sending.load(Ordering::Relaxed) {
                        credits.fetch_add(done, Ordering::Relaxed);
                        wake_writer.notify_one();
                    }
                }
                if !shared.sending.load(Ordering::Relaxed) {
                    credits.store(0, Ordering::Relaxed);
                    if received == sent.load(Ordering::Relaxed) {
                        return Ok::<_, String>(());
                    }
                }
                let n = rd
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| format!("connection {id}: read: {e}"))?;
                if n == 0 {
                    return Err(format!("connection {id}: the server closed the connection mid-run"));
                }
                filled += n;
            }
        };
        // The reader ends once the run stopped and every echo is in.
        tokio::select! {
            r = reader => r?,
            e = writer => return Err(format!("connection {id}: write: {e}")),
        }
    }
    close(&mut tcp, messages)
        .await
        .map_err(|e| format!("connection {id}: close: {e}"))
}

/// Sends a ping and a close frame (1000) in one write and reads until the
/// end of the stream, within 5 s. Clean: the pong echoed the ping's
/// payload, the close frame came back with 1000, then the end of stream.
async fn close<T: Transport>(tcp: &mut T, messages: &Messages) -> Result<bool, String> {
    let mut frames = encode_masked(OP_PING, PING_PAYLOAD, MASK);
    frames.extend(encode_masked(OP_CLOSE, &1000u16.to_be_bytes(), MASK));
    let result = tokio::time::timeout(Duration::from_secs(5), async {
        tcp.write_all(&frames).await.map_err(|e| e.to_string())?;
        let mut parser = Parser::new(messages);
        let mut buf = vec![0u8; 4096];
        let mut filled = 0;
        loop {
            let n = tcp.read(&mut buf[filled..]).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(parser.pong.as_deref() == Some(PING_PAYLOAD) && parser.close_code == Some(1000));
            }
            filled += n;
            let (done, consumed) = parser.feed(&buf[..filled])?;
            if done > 0 {
                return Err("a message arrived after the close frame".to_owned());
            }
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
    })
    .await;
    match result {
        Ok(r) => r,
        Err(_) => Ok(false),
    }
}

// ---------------------------------------------------------------------------
// Idle memory.

struct IdleResult {
    krate: String,
    conns: usize,
    /// VmRSS before anything connected, and after the warm-up's connections
    /// came and went (the baseline the per-connection figures start from).
    start_kib: u64,
    base_kib: u64,
    idle_kib: u64,
    after_echo_kib: u64,
}

impl IdleResult {
    fn idle_kib_per_conn(&self) -> f64 {
        self.idle_kib.saturating_sub(self.base_kib) as f64 / self.conns as f64
    }

    fn after_echo_kib_per_conn(&self) -> f64 {
        self.after_echo_kib.saturating_sub(self.base_kib) as f64 / self.conns as f64
    }

    fn describe(&self) -> String {
        format!(
            "{:<16} idle memory: VmRSS {} KiB at start, {} KiB after the warm-up, {} KiB with {} idle \
             connections ({:.2} KiB each), {} KiB after one 16 KiB echo on each ({:.2} KiB each)",
            display_name(&self.krate),
            self.start_kib,
            self.base_kib,
            self.idle_kib,
            self.conns,
            self.idle_kib_per_conn(),
            self.after_echo_kib,
            self.after_echo_kib_per_conn()
        )
    }
}

async fn idle(opts: &Opts, krate: &str) -> Result<IdleResult, Error> {
    let mut server = Server::start_for(opts, krate).await?;
    let result = tokio::time::timeout(Duration::from_secs(120), idle_inner(opts, krate, &server)).await;
    // Stop the server before the connections drop, so that it does not log
    // 5,000 closes without a close handshake.
    server.stop().await;
    let (result, conns) = result.map_err(|_| "idle-memory mode did not finish in 120 s")??;
    drop(conns);
    Ok(result)
}

async fn idle_inner(opts: &Opts, krate: &str, server: &Server) -> Result<(IdleResult, Vec<TcpStream>), Error> {
    let n = opts.idle_conns;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_kib = vm_rss_kib(server.pid)?;
    let messages = Messages::new(16 * 1024, 1, false);
    let mut buf = vec![0u8; messages.read_size()];

    // The warm-up: what a server holds once per thread rather than per
    // connection (a runtime's pool of read buffers, which the kernel
    // touches page by page as reads land in it; a thread's scratch buffer
    // and buffer cache) is made and touched before the baseline, so that
    // the per-connection figures count what each connection adds. Four
    // connections, each 48 echoes of 16 KiB (192 reads of 16 KiB or more:
    // more than a pool of 128 buffers), then the close handshake.
    for id in 0..WARMUP_CONNS {
        let (mut tcp, leftover) = handshake(&server.addr).await?;
        if !leftover.is_empty() {
            return Err("bytes after the handshake response".into());
        }
        for _ in 0..WARMUP_ECHOES {
            echo_one(&mut tcp, &messages, &mut buf, id).await?;
        }
        if !close(&mut tcp, &messages).await? {
            return Err(format!("warm-up connection {id}: no clean close").into());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base_kib = vm_rss_kib(server.pid)?;

    // Open them 250 at a time (the listen backlog is 1024).
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        let batch = (n - conns.len()).min(250);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..batch {
            let addr = server.addr.clone();
            set.spawn(async move { (i, handshake(&addr).await.map_err(|e| e.to_string())) });
        }
        let mut opened = Vec::with_capacity(batch);
        while let Some(joined) = set.join_next().await {
            let (i, result) = joined?;
            let (tcp, leftover) = result?;
            if !leftover.is_empty() {
                return Err("bytes after the handshake response".into());
            }
            opened.push((i, tcp));
        }
        opened.sort_by_key(|(i, _)| *i);
        conns.extend(opened.into_iter().map(|(_, tcp)| tcp));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = vm_rss_kib(server.pid)?;

    // One 16 KiB binary echo on each, one connection at a time so that the
    // allocator can reuse what a connection gave back for the next one.
    for (id, tcp) in conns.iter_mut().enumerate() {
        echo_one(tcp, &messages, &mut buf, id).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_echo_kib = vm_rss_kib(server.pid)?;
    Ok((
        IdleResult {
            krate: krate.to_owned(),
            conns: n,
            start_kib,
            base_kib,
            idle_kib,
            after_echo_kib,
        },
        conns,
    ))
}

/// The idle mode's warm-up: connections, and 16 KiB echoes on each.
const WARMUP_CONNS: usize = 4;
const WARMUP_ECHOES: usize = 48;

/// Sends one message of `messages` (one frame) and reads until its echo
/// has arrived whole.
async fn echo_one(tcp: &mut TcpStream, messages: &Messages, buf: &mut [u8], id: usize) -> Result<(), Error> {
    tcp.write_all(messages.frames(0, 1)).await?;
    let mut parser = Parser::new(messages);
    let mut filled = 0;
    loop {
        let read = tcp.read(&mut buf[filled..]).await?;
        if read == 0 {
            return Err(format!("connection {id}: closed by the server").into());
        }
        filled += read;
        let (done, consumed) = parser
            .feed(&buf[..filled])
            .map_err(|e| format!("connection {id}: {e}"))?;
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if done > 0 {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// The server process.

struct Server {
    child: Child,
    pid: u32,
    addr: String,
    /// Under callgrind (`--callgrind`): where its dumps go (`PATH.1`, ...).
    callgrind: Option<String>,
}

impl Server {
    /// The server of `krate`: the bench's own `echo-server`, or the
    /// `--external` command given for it.
    async fn start_for(opts: &Opts, krate: &str) -> Result<Self, Error> {
        let callgrind = opts.callgrind.then(|| {
            std::env::temp_dir()
                .join(format!("tether-echo-callgrind-{}-{krate}.out", std::process::id()))
                .display()
                .to_string()
        });
        match opts.external.iter().find(|(name, _)| name == krate) {
            Some((_, command)) => Self::spawn(command, &[], krate, callgrind).await,
            None => Self::spawn(&opts.server, &[krate], krate, callgrind).await,
        }
    }

    async fn start(path: &str, krate: &str) -> Result<Self, Error> {
        Self::spawn(path, &[krate], krate, None).await
    }

    async fn spawn(path: &str, args: &[&str], krate: &str, callgrind: Option<String>) -> Result<Self, Error> {
        let mut command = match &callgrind {
            Some(out) => {
                let mut command = Command::new("valgrind");
                // `--trace-children`: an `--external` command may be a
                // script that execs the server.
                command
                    .args(["-q", "--tool=callgrind", "--trace-children=yes"])
                    .arg(format!("--callgrind-out-file={out}"));
                if std::env::var_os("TETHER_BENCH_CALLGRIND_KEEP").is_some() {
                    // Kept dumps are for reading: costs per instruction too.
                    command.arg("--dump-instr=yes");
                }
                command.arg(path);
                command
            }
            None => Command::new(path),
        };
        if PIN_SERVERS.load(Ordering::Relaxed) {
            // SAFETY: the closure runs in the child between fork and exec
            // and makes one system call, which is async-signal-safe.
            unsafe {
                command.pre_exec(|| pin_to_cpu(0, SERVER_CPU));
            }
        }
        let mut child = command
            .args(args)
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {path}: {e}"))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), BufReader::new(stdout).read_line(&mut line)).await;
        let mut server = Self {
            child,
            pid,
            addr: String::new(),
            callgrind,
        };
        match read {
            Ok(Ok(_)) if line.starts_with("listening on ") => {
                server.addr = line["listening on ".len()..].trim().to_owned();
                Ok(server)
            }
            _ => {
                server.stop().await;
                Err(format!("{path} {krate}: no \"listening on\" line within 10 s (got {line:?})").into())
            }
        }
    }

    /// SIGTERM to our child's PID, then SIGKILL after 2 s.
    async fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: plain system call on the PID of the child we spawned
            // and have not yet waited for, so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        if let Some(out) = &self.callgrind {
            // The dump callgrind writes at exit.
            let _ = std::fs::remove_file(out);
        }
    }
}

/// `--pin`: the CPU of the load generator and the CPU of each server (the
/// server's every thread: set before it starts).
const LOADGEN_CPU: usize = 0;
const SERVER_CPU: usize = 1;
static PIN_SERVERS: AtomicBool = AtomicBool::new(false);

/// Binds process or thread `pid` (0: the caller) to one CPU.
fn pin_to_cpu(pid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    // SAFETY: an all-zero `cpu_set_t` is the empty set; `CPU_SET` and
    // `sched_setaffinity` are given it with its size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of
/// `/proc/<pid>/stat`, counted after the command name in parentheses).
fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let (user, system) = cpu_times(pid)?;
    Ok(user + system)
}

/// utime and stime of a process apart, in clock ticks.
fn cpu_times(pid: u32) -> Result<(u64, u64), Error> {
    parse_stat_apart(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

fn cpu_ticks_self() -> Result<u64, Error> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat")?)
}

fn parse_stat(stat: &str) -> Result<u64, Error> {
    let (utime, stime) = parse_stat_apart(stat)?;
    Ok(utime + stime)
}

fn parse_stat_apart(stat: &str) -> Result<(u64, u64), Error> {
    let after = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).ok_or("short /proc stat")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("short /proc stat")?.parse()?;
    Ok((utime, stime))
}

/// Context switches of every thread of process `pid`, summed from
/// `/proc/<pid>/task/*/status`: (voluntary, involuntary). A voluntary
/// switch is a wait that slept (nothing was ready); going to sleep and
/// being woken is kernel time charged to the server.
fn context_switches(pid: u32) -> Result<(u64, u64), Error> {
    let (mut voluntary, mut involuntary) = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended between the listing and the read is skipped.
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(n) = line.strip_prefix("voluntary_ctxt_switches:") {
                voluntary += n.trim().parse::<u64>()?;
            } else if let Some(n) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                involuntary += n.trim().parse::<u64>()?;
            }
        }
    }
    Ok((voluntary, involuntary))
}

fn vm_rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS line")?;
    Ok(line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// System calls of process `pid` over `window`, counted by `strace -c -f`
/// attached for that long (the tracing slows the server: only the counts
/// per delivery are used): (all calls, writes: write, writev, sendto,
/// sendmsg). `None` without strace.
/// `callgrind_control FLAG PID`: `-z` zeroes the server's counters, `-d`
/// dumps them.
async fn callgrind_control(pid: u32, flag: &str) -> Result<(), Error> {
    let status = Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(|e| format!("cannot run callgrind_control (valgrind installed?): {e}"))?;
    if !status.success() {
        return Err(format!("callgrind_control {flag} {pid}: {status}").into());
    }
    Ok(())
}

/// Dumps the counters of the server under callgrind (zeroed at the start of
/// the window) and returns the instructions counted: the `summary:` line of
/// the dump (`OUT.1`, the first and only dump; the one at exit is `OUT`).
async fn callgrind_dump(pid: u32, out: &str) -> Result<u64, Error> {
    callgrind_control(pid, "-d").await?;
    let dump = format!("{out}.1");
    let text = std::fs::read_to_string(&dump).map_err(|e| format!("no callgrind dump at {dump}: {e}"))?;
    // `TETHER_BENCH_CALLGRIND_KEEP=DIR` keeps each window's dump there (as
    // `<pid>.out`, the server's PID being printed on stderr) for
    // `callgrind_annotate`: where the instructions of a message go.
    match std::env::var_os("TETHER_BENCH_CALLGRIND_KEEP") {
        Some(dir) => {
            let kept = std::path::Path::new(&dir).join(format!("{pid}.out"));
            std::fs::rename(&dump, &kept).map_err(|e| format!("cannot keep {dump} as {}: {e}", kept.display()))?;
            eprintln!("callgrind dump of server {pid} kept at {}", kept.display());
        }
        None => {
            let _ = std::fs::remove_file(&dump);
        }
    }
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no summary line in {dump}").into())
}

async fn strace_counts(pid: u32, window: Duration) -> Option<(u64, u64)> {
    let out = std::env::temp_dir().join(format!("tether-bench-strace-{pid}"));
    let mut child = Command::new("strace")
        .args(["-c", "-f", "-p", &pid.to_string(), "-o"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    tokio::time::sleep(window).await;
    let strace_pid = i32::try_from(child.id()?).ok()?;
    // SAFETY: a signal to our own child, not yet waited for.
    unsafe { libc::kill(strace_pid, libc::SIGINT) };
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let table = std::fs::read_to_string(&out).ok()?;
    let _ = std::fs::remove_file(&out);
    let (mut all, mut writes) = (0u64, 0u64);
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        if fields.len() < 5
            || fields[0].starts_with('%')
            || fields[0].starts_with('-')
            || fields.last() == Some(&"total")
        {
            continue;
        }
        let Ok(calls) = fields[3].parse::<u64>() else { continue };
        all += calls;
        if matches!(fields.last(), Some(&("write" | "writev" | "sendto" | "sendmsg"))) {
            writes += calls;
        }
    }
    Some((all, writes))
}

// ---------------------------------------------------------------------------
// The broadcast benchmark.

mod broadcast {
    use super::*;

    /// Messages per subscriber that may be published and not yet delivered.
    const WINDOW: usize = 16;

    pub(super) async fn suite(opts: &Opts) -> Result<(), Error> {
        let crates: Vec<String> = if opts.crates_given {
            opts.crates.clone()
        } else {
            ["tether", "tungstenite", "fastwebsockets"].map(str::to_owned).to_vec()
        };
        let server = if opts.server.ends_with("echo-server") {
            opts.server.replace("echo-server", "broadcast-server")
        } else {
            opts.server.clone()
        };
        println!(
            "Broadcast: one publisher, N subscribers (the publisher receives too), binary messages, at most \
             {WINDOW} per subscriber in flight; warmup {} s, measured {} s; server CPU from /proc/<pid>/stat; \
             system calls per delivery from `strace -c -f` over one more second (all calls, and writes).\n",
            opts.warmup, opts.secs
        );
        for &subs in &opts.subs {
            for &size in &opts.sizes {
                println!("### {subs} subscribers, {size} B\n");
                println!("| crate | deliveries/s | server CPU µs/delivery | vs best other | syscalls/delivery (writes) | server RSS MiB | errors |");
                println!("|---|---:|---:|---:|---:|---:|---:|");
                let mut rows = Vec::new();
                for krate in &crates {
                    eprintln!("broadcast: {krate}, {subs} subscribers, {size} B");
                    match run(opts, &server, krate, subs, size).await {
                        Ok(result) => rows.push((krate.clone(), result)),
                        Err(e) => eprintln!("  failed: {e}"),
                    }
                }
                let best_other = rows
                    .iter()
                    .filter(|(k, _)| !is_tether(k))
                    .map(|(_, r)| r.cpu_us_per_delivery())
                    .fold(f64::INFINITY, f64::min);
                for (krate, r) in &rows {
                    let ratio = if best_other.is_finite() && best_other > 0.0 {
                        format!("{:.2}", r.cpu_us_per_delivery() / best_other)
                    } else {
                        "-".to_owned()
                    };
                    let syscalls = match r.traced {
                        Some((deliveries, all, writes)) if deliveries > 0 => format!(
                            "{:.3} ({:.3})",
                            all as f64 / deliveries as f64,
                            writes as f64 / deliveries as f64
                        ),
                        _ => "-".to_owned(),
                    };
                    println!(
                        "| {} | {} | {:.3} | {} | {} | {:.1} | {} |",
                        display_name(krate),
                        thousands(r.deliveries as f64 / r.elapsed.as_secs_f64()),
                        r.cpu_us_per_delivery(),
                        ratio,
                        syscalls,
                        r.rss_kib as f64 / 1024.0,
                        r.errors,
                    );
                }
                println!();
            }
        }
        Ok(())
    }

    pub(super) struct Result_ {
        deliveries: u64,
        elapsed: Duration,
        cpu_ticks: u64,
        ticks_per_sec: u64,
        /// Over the strace window: deliveries, all system calls, writes.
        traced: Option<(u64, u64, u64)>,
        rss_kib: u64,
        errors: u64,
    }

    impl Result_ {
        fn cpu_us_per_delivery(&self) -> f64 {
            self.cpu_ticks as f64 / self.ticks_per_sec as f64 * 1e6 / self.deliveries.max(1) as f64
        }
    }

    async fn run(opts: &Opts, path: &str, krate: &str, subs: usize, size: usize) -> Result<Result_, Error> {
        let mut server = Server::start(path, krate).await?;
        let result = run_on(opts, &server, subs, size).await;
        server.stop().await;
        result
    }

    async fn run_on(opts: &Opts, server: &Server, subs: usize, size: usize) -> Result<Result_, Error> {
        let receivers = subs + 1;
        let mut conns = Vec::with_capacity(receivers);
        for _ in 0..receivers {
            conns.push(handshake(&server.addr).await?);
        }
        // Every connection subscribed before the first message.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let messages = Arc::new(Messages::new(size, WINDOW, false));
        let delivered = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let mut publisher = None;
        let mut tasks = Vec::with_capacity(receivers + 1);
        for (i, (tcp, leftover)) in conns.into_iter().enumerate() {
            let (mut rd, wr) = tcp.into_split();
            if i == 0 {
                publisher = Some(wr);
            } else {
                // Kept open (dropping it would send FIN).
                tasks.push(tokio::spawn(async move {
                    let _keep = wr;
                    std::future::pending::<()>().await;
                }));
            }
            let (messages, delivered, errors, progress) =
                (messages.clone(), delivered.clone(), errors.clone(), progress.clone());
            tasks.push(tokio::spawn(async move {
                let mut parser = Parser::new(&messages);
                let mut buf = vec![0u8; 64 * 1024];
                let mut filled = leftover.len();
                buf[..filled].copy_from_slice(&leftover);
                loop {
                    match parser.feed(&buf[..filled]) {
                        Ok((done, consumed)) => {
                            buf.copy_within(consumed..filled, 0);
                            filled -= consumed;
                            if done > 0 {
                                delivered.fetch_add(done as u64, Ordering::Relaxed);
                                progress.notify_one();
                            }
                        }
                        Err(e) => {
                            eprintln!("  subscriber {i}: {e}");
                            errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    match rd.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => filled += n,
                    }
                }
            }));
        }
        let mut publisher = publisher.ok_or("no publisher")?;
        let send = {
            let (messages, delivered, progress, stop) =
                (messages.clone(), delivered.clone(), progress.clone(), stop.clone());
            async move {
                let (mut sent, mut next) = (0u64, 0usize);
                let limit = (WINDOW * receivers) as u64;
                while !stop.load(Ordering::Relaxed) {
                    let outstanding =
                        sent * receivers as u64 - delivered.load(Ordering::Relaxed).min(sent * receivers as u64);
                    if outstanding + receivers as u64 > limit {
                        progress.notified().await;
                        continue;
                    }
                    let n = ((limit - outstanding) / receivers as u64).clamp(1, WINDOW as u64) as usize;
                    if publisher.write_all(messages.frames(next, n)).await.is_err() {
                        return;
                    }
                    sent += n as u64;
                    next = (next + n) % messages.count();
                }
            }
        };
        let publishing = tokio::spawn(send);
        tokio::time::sleep(Duration::from_secs_f64(opts.warmup)).await;
        let (d0, c0, t0) = (
            delivered.load(Ordering::Relaxed),
            cpu_ticks(server.pid)?,
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs_f64(opts.secs)).await;
        let (d1, c1, elapsed) = (delivered.load(Ordering::Relaxed), cpu_ticks(server.pid)?, t0.elapsed());
        let rss_kib = vm_rss_kib(server.pid)?;
        // Then a second window under strace, for the system calls.
        let before = delivered.load(Ordering::Relaxed);
        let traced = strace_counts(server.pid, Duration::from_secs(1))
            .await
            .map(|(all, writes)| (delivered.load(Ordering::Relaxed) - before, all, writes));
        stop.store(true, Ordering::Relaxed);
        progress.notify_one();
        publishing.abort();
        for task in tasks {
            task.abort();
        }
        Ok(Result_ {
            deliveries: d1 - d0,
            elapsed,
            cpu_ticks: c1 - c0,
            ticks_per_sec: clock_ticks(),
            traced,
            rss_kib,
            errors: errors.load(Ordering::Relaxed),
        })
    }
}

/// What a WebSocket of the load runs on: a TCP connection, or a stream of
/// an HTTP/2 connection (`tether-h2`).
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    type Read<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    type Write<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;
    /// A read half and a write half used by one task at once.
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>);
}

impl Transport for TcpStream {
    type Read<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Write<'a> = tokio::net::tcp::WriteHalf<'a>;

    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        self.split()
    }
}

impl Transport for h2io::Stream {
    type Read<'a> = &'a mut h2io::Reader;
    type Write<'a> = &'a mut h2io::Writer;

    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        (&mut self.reader, &mut self.writer)
    }
}

/// The HTTP/2 side of the load (`tether-h2`): the extended CONNECT of RFC
/// 8441 by hand with the `h2` crate, and the stream as a byte transport.
mod h2io {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;

    use super::Error;

    /// WebSockets per HTTP/2 connection.
    pub(super) const STREAMS_PER_CONNECTION: usize = 100;

    /// An HTTP/2 connection with prior knowledge; its driver runs in a task.
    pub(super) async fn connect(addr: &str) -> Result<h2::client::SendRequest<Bytes>, Error> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(tcp)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let client = client.ready().await?;
        Ok(client)
    }

    /// One WebSocket: an extended CONNECT stream.
    pub(super) async fn open(client: h2::client::SendRequest<Bytes>, addr: &str) -> Result<Stream, Error> {
        // (The server's SETTINGS may not be in yet: h2 sends the extended
        // CONNECT anyway, and a server without it answers with an error.)
        let mut client = client.ready().await?;
        let request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{addr}/"))
            .header("sec-websocket-version", "13")
            .extension(h2::ext::Protocol::from_static("websocket"))
            .body(())?;
        let (response, send) = client.send_request(request, false)?;
        let response = response.await?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("extended CONNECT answered {}", response.status()).into());
        }
        Ok(Stream {
            reader: Reader {
                recv: response.into_body(),
                pending: Bytes::new(),
            },
            writer: Writer { send },
        })
    }

    /// A WebSocket's stream as a byte transport.
    pub(super) struct Stream {
        pub(super) reader: Reader,
        pub(super) writer: Writer,
    }

    pub(super) struct Reader {
        recv: h2::RecvStream,
        pending: Bytes,
    }

    pub(super) struct Writer {
        send: h2::SendStream<Bytes>,
    }

    fn io_error(e: h2::Error) -> std::io::Error {
        std::io::Error::other(e)
    }

    impl AsyncRead for Reader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = &mut *self;
            while this.pending.is_empty() {
                match this.recv.poll_data(cx) {
                    Poll::Ready(Some(Ok(data))) => {
                        // The data is taken: give the window back.
                        let _ = this.recv.flow_control().release_capacity(data.len());
                        this.pending = data;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io_error(e))),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending.split_to(n));
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Writer {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            self.send.reserve_capacity(buf.len());
            loop {
                match self.send.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(0))) => continue,
                    Poll::Ready(Some(Ok(n))) => {
                        let n = n.min(buf.len());
                        self.send
                            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                            .map_err(io_error)?;
                        return Poll::Ready(Ok(n));
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io_error(e))),
                    Poll::Ready(None) => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(self.send.send_data(Bytes::new(), true).map_err(io_error))
        }
    }

    impl AsyncRead for Stream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.reader).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Stream {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.writer).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.writer).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.writer).poll_shutdown(cx)
        }
    }
}

// ---------------------------------------------------------------------------
// The wire: handshake, pre-encoded frames, a parser of the server's frames.

/// Connects and does the opening handshake; returns the bytes read past
/// the response.
async fn handshake(addr: &str) -> Result<(TcpStream, Vec<u8>), Error> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err("handshake response over 16 KiB".into());
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk)).await??;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..end])?;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("handshake refused: {:?}", head.lines().next().unwrap_or("")).into());
    }
    let accept = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim())
    });
    if accept != Some(ACCEPT) {
        return Err(format!("wrong Sec-WebSocket-Accept {accept:?}").into());
    }
    Ok((tcp, buf[end..].to_vec()))
}

/// The messages of a run: `count()` different payloads sent in turn, and
/// their masked frames laid out twice in a row so that any run of up to
/// `count()` consecutive messages is one slice (one write).
struct Messages {
    inflight: usize,
    opcode: u8,
    payloads: Vec<Vec<u8>>,
    frame_len: usize,
    wire: Vec<u8>,
}

impl Messages {
    fn new(size: usize, inflight: usize, text: bool) -> Self {
        // One more payload than can be in flight, so that an echo of the
        // wrong message (out of order, repeated) shows.
        let count = inflight + 1;
        let opcode = if text { OP_TEXT } else { OP_BINARY };
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ size as u64;
        let payloads: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                (0..size)
                    .map(|_| {
                        // xorshift64*
                        seed ^= seed >> 12;
                        seed ^= seed << 25;
                        seed ^= seed >> 27;
                        let r = (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
                        // Printable ASCII for text.
                        if text {
                            b' ' + r % 95
                        } else {
                            r
                        }
                    })
                    .collect()
            })
            .collect();
        let frames: Vec<Vec<u8>> = payloads.iter().map(|p| encode_masked(opcode, p, MASK)).collect();
        let frame_len = frames[0].len();
        let wire = frames.iter().chain(&frames).flatten().copied().collect();
        Self {
            inflight,
            opcode,
            payloads,
            frame_len,
            wire,
        }
    }

    fn count(&self) -> usize {
        self.payloads.len()
    }

    /// `n` frames starting with message `first`.
    fn frames(&self, first: usize, n: usize) -> &[u8] {
        let start = first * self.frame_len;
        &self.wire[start..start + n * self.frame_len]
    }

    /// Room per read: what the in-flight echoes take, within 64-512 KiB.
    fn read_size(&self) -> usize {
        (self.frame_len * self.inflight).clamp(64 * 1024, 512 * 1024)
    }
}

fn encode_masked(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let len = payload.len();
    let mut frame = Vec::with_capacity(len + 14);
    frame.push(0x80 | opcode);
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xffff {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Parses the server's frames (unmasked, any split) and checks that the
/// data messages are the payloads sent, in turn. A message may come in
/// several frames; pings are skipped; the last pong and the close code are
/// kept.
struct Parser<'a> {
    messages: &'a Messages,
    /// Index of the message expected next.
    next: usize,
    /// Bytes of the current message seen so far (in earlier frames).
    offset: usize,
    in_message: bool,
    /// Payload bytes left in the current frame, and what they are.
    remaining: u64,
    payload: PayloadKind,
    fin: bool,
    closed: bool,
    /// Opcode and payload of the control frame being read.
    control_op: u8,
    control: Vec<u8>,
    pong: Option<Vec<u8>>,
    close_code: Option<u16>,
}

#[derive(Clone, Copy, PartialEq)]
enum PayloadKind {
    None,
    Data,
    Control,
}

impl<'a> Parser<'a> {
    fn new(messages: &'a Messages) -> Self {
        Self {
            messages,
            next: 0,
            offset: 0,
            in_message: false,
            remaining: 0,
            payload: PayloadKind::None,
            fin: false,
            closed: false,
            control_op: 0,
            control: Vec::new(),
            pong: None,
            close_code: None,
        }
    }

    /// Parses what `data` holds; returns the number of whole messages
    /// checked and the bytes consumed (the rest is a partial header).
    fn feed(&mut self, data: &[u8]) -> Result<(usize, usize), String> {
        let mut pos = 0;
        let mut done = 0;
        loop {
            if self.payload != PayloadKind::None {
                let take = (data.len() - pos).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                if self.payload == PayloadKind::Data {
                    let expected = &self.messages.payloads[self.next];
                    let got = &data[pos..pos + take];
                    if expected.get(self.offset..self.offset + take) != Some(got) {
                        return Err(format!(
                            "echo of message #{} (payload {}) differs from what was sent around byte {}",
                            self.next, self.next, self.offset
                        ));
                    }
                    self.offset += take;
                } else {
                    self.control.extend_from_slice(&data[pos..pos + take]);
                }
                pos += take;
                self.remaining -= take as u64;
                if self.remaining > 0 {
                    return Ok((done, pos));
                }
                if self.payload == PayloadKind::Data && self.fin {
                    if self.offset != self.messages.payloads[self.next].len() {
                        return Err(format!("echo of message #{} is {} bytes long", self.next, self.offset));
                    }
                    done += 1;
                    self.next = (self.next + 1) % self.messages.count();
                    self.offset = 0;
                    self.in_message = false;
                }
                if self.payload == PayloadKind::Control {
                    let payload = std::mem::take(&mut self.control);
                    match self.control_op {
                        OP_PONG => self.pong = Some(payload),
                        OP_CLOSE => {
                            // 1005: no status code in the frame.
                            self.close_code = Some(payload.get(..2).map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])));
                        }
                        _ => {}
                    }
                }
                self.payload = PayloadKind::None;
            }
            // A header.
            let rest = &data[pos..];
            if rest.len() < 2 {
                return Ok((done, pos));
            }
            let (b0, b1) = (rest[0], rest[1]);
            let (len, header) = match b1 & 0x7f {
                126 if rest.len() >= 4 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
                127 if rest.len() >= 10 => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(&rest[2..10]);
                    (u64::from_be_bytes(be), 10)
                }
                126 | 127 => return Ok((done, pos)),
                n => (u64::from(n), 2),
            };
            if b1 & 0x80 != 0 {
                return Err("the server masked a frame".to_owned());
            }
            if b0 & 0x70 != 0 {
                return Err(format!("RSV bits set in a frame header ({b0:#04x})"));
            }
            if self.closed {
                return Err("a frame after the close frame".to_owned());
            }
            let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
            self.payload = match opcode {
                OP_TEXT | OP_BINARY => {
                    if self.in_message {
                        return Err("a new message inside a fragmented one".to_owned());
                    }
                    if opcode != self.messages.opcode {
                        return Err(format!("echo has opcode {opcode}, sent {}", self.messages.opcode));
                    }
                    self.in_message = true;
                    PayloadKind::Data
                }
                OP_CONT if self.in_message => PayloadKind::Data,
                OP_CLOSE => {
                    self.closed = true;
                    PayloadKind::Control
                }
                OP_PING | OP_PONG => PayloadKind::Control,
                _ => return Err(format!("unexpected opcode {opcode}")),
            };
            if self.payload == PayloadKind::Control && (!fin || len > 125) {
                return Err("a fragmented or long control frame".to_owned());
            }
            if self.payload == PayloadKind::Data && self.offset as u64 + len > self.messages.payloads[0].len() as u64 {
                return Err(format!("echo of message #{} is too long ({len}-byte frame)", self.next));
            }
            self.fin = fin;
            self.control_op = opcode;
            self.remaining = len;
            pos += header;
            if len == 0 {
                // Go through the payload step to finish the message.
                continue;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![7.0]), Some(7.0));
        assert_eq!(median(Vec::new()), None);
    }

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(len as u8);
        } else if len <= 0xffff {
            f.push(126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    fn check_any_split(messages: &Messages, stream: &[u8], expect: usize) {
        for chunk in [1, 2, 3, 7, 100, 4096, usize::MAX] {
            let mut parser = Parser::new(messages);
            let mut buf = Vec::new();
            let mut total = 0;
            for piece in stream.chunks(chunk.min(stream.len())) {
                buf.extend_from_slice(piece);
                let (done, consumed) = parser.feed(&buf).unwrap();
                buf.drain(..consumed);
                total += done;
            }
            assert_eq!(total, expect, "chunk {chunk}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn lengths_splits_fragments_and_control_frames() {
        for size in [0, 20, 125, 126, 1024, 65535, 65536, 70000] {
            let messages = Messages::new(size, 2, true);
            let mut stream = Vec::new();
            for i in 0..7 {
                let p = &messages.payloads[i % 3];
                if i == 3 && size >= 2 {
                    stream.extend(server_frame(OP_TEXT, false, &p[..size / 2]));
                    stream.extend(server_frame(OP_PING, true, b"hi"));
                    stream.extend(server_frame(OP_CONT, true, &p[size / 2..]));
                } else {
                    stream.extend(server_frame(OP_TEXT, true, p));
                }
            }
            check_any_split(&messages, &stream, 7);
        }
    }

    #[test]
    fn pong_and_close_code() {
        let messages = Messages::new(20, 1, false);
        let mut parser = Parser::new(&messages);
        let mut stream = server_frame(OP_PONG, true, PING_PAYLOAD);
        stream.extend(server_frame(OP_CLOSE, true, &1000u16.to_be_bytes()));
        let mut buf = Vec::new();
        for byte in stream {
            buf.push(byte);
            let (_, consumed) = parser.feed(&buf).unwrap();
            buf.drain(..consumed);
        }
        assert_eq!(parser.pong.as_deref(), Some(PING_PAYLOAD));
        assert_eq!(parser.close_code, Some(1000));
        assert!(parser.feed(&server_frame(OP_PING, true, b"")).is_err());
    }

    #[test]
    fn wrong_or_reordered_echo_fails() {
        let messages = Messages::new(20, 1, false);
        let mut parser = Parser::new(&messages);
        assert!(parser
            .feed(&server_frame(OP_BINARY, true, &messages.payloads[1]))
            .is_err());
        let mut parser = Parser::new(&messages);
        assert!(parser
            .feed(&server_frame(OP_TEXT, true, &messages.payloads[0]))
            .is_err());
    }

    #[test]
    fn frames_are_contiguous_runs() {
        let messages = Messages::new(20, 16, false);
        assert_eq!(messages.frames(16, 17).len(), 17 * messages.frame_len);
        assert_eq!(messages.frames(3, 2)[..messages.frame_len], messages.frames(3, 1)[..]);
    }

    #[test]
    fn stat_fields() {
        let stat = "123 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15";
        assert_eq!(parse_stat(stat).unwrap(), 11 + 12);
    }
}
