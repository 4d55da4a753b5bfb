//! `tether`: the echo server with its page, a WebSocket client for people
//! and scripts, and a load generator, on tether-tokio.
//!
//! ```sh
//! tether serve [--bind 127.0.0.1:8080] [--tls-self-signed] [--compression]
//! tether connect ws://127.0.0.1:8080/ws
//! tether bench ws://127.0.0.1:8080/ws --connections 100 --size 20 --duration 10s
//! ```

mod bench;
mod connect;
mod exit;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::Failure;

/// WebSocket echo server, client and load generator (tether).
#[derive(Debug, Parser)]
#[command(name = "tether", version, propagate_version = true, after_help = exit::exit_table!())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(serve::Args),
    Connect(connect::Args),
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr, filtered by RUST_LOG; the server logs its
    // connections at `info`, the client and the load tool only warnings.
    let default = match cli.command {
        Command::Serve(_) => "info",
        Command::Connect(_) | Command::Bench(_) => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tether: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    // Tasks still reading stdin or connections do not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(status) => ExitCode::from(status),
        Err(Failure { status, message }) => {
            eprintln!("tether: {message}");
            ExitCode::from(status)
        }
    }
}
