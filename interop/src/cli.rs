//! The `tether` command (crates/tether-cli) for the tests that run it as a
//! user does: built by cargo into the test's own target directory, started
//! on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use crate::peer::interop_dir;
use crate::process::Process;

/// Building the command, when the test run did not already.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Waiting for `tether serve` to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `cargo` command run from the repository, without the variables cargo
/// set for the running test: build scripts that watch them (ring's watches
/// `CARGO_MANIFEST_DIR`) would rerun, and the next `cargo test` would
/// rebuild them again.
pub fn cargo(program: &str) -> Command {
    let mut command = Command::new(program);
    command.current_dir(repository()).kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_crates = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"].contains(&name.as_ref());
        if set_for_crates {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// The repository's root.
pub fn repository() -> PathBuf {
    interop_dir().parent().map(PathBuf::from).unwrap_or_default()
}

/// Builds `tether` with this test's profile and target directory and
/// returns its path.
///
/// # Panics
///
/// When the build fails or takes over 15 minutes.
pub async fn build_tether() -> PathBuf {
    build(&["-p", "tether-cli", "--bin", "tether"], "tether").await
}

/// Builds an example of tether-tokio (`broadcast-server`, `chat-node`) with
/// this test's profile and target directory and returns its path.
///
/// # Panics
///
/// When the build fails or takes over 15 minutes.
pub async fn build_example(name: &str) -> PathBuf {
    build(&["-p", "tether-tokio", "--example", name], &format!("examples/{name}")).await
}

/// `cargo build ARGS` into this test's target directory and profile; the
/// built file's path, `output` under the profile's directory.
async fn build(args: &[&str], output: &str) -> PathBuf {
    // target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let target_dir = profile_dir.parent().map(PathBuf::from).unwrap_or_default();
    let mut command = cargo(env!("CARGO"));
    command
        .args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
        .arg(&target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    let status = tokio::time::timeout(BUILD_TIMEOUT, command.status())
        .await
        .unwrap_or_else(|_| panic!("cargo build {args:?} timed out"))
        .unwrap_or_else(|e| panic!("cargo does not run: {e}"));
    assert!(status.success(), "cargo build {args:?} failed: {status}");
    profile_dir.join(output)
}

/// Waits for the line `tether serve` prints when it listens ("echo app on
/// http://ADDR/ ...") and returns the address.
///
/// # Panics
///
/// When no such line comes within 30 seconds (or `timeout`).
pub async fn listening_on(server: &mut Process, timeout: Duration) -> SocketAddr {
    let line = server
        .stderr_line("echo app on ", timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    line.split_whitespace()
        .nth(3)
        .and_then(|url| url.split("://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected address in {line:?}"))
}

/// Starts `tether serve --bind 127.0.0.1:0 ARGS` (logging at `info`) and
/// returns it with its address.
pub async fn start_serve(args: &[&str]) -> (Process, SocketAddr) {
    let tether = build_tether().await;
    let mut command = Command::new(&tether);
    command
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info");
    let mut server = Process::spawn("tether serve", command);
    let addr = listening_on(&mut server, START_TIMEOUT).await;
    (server, addr)
}
