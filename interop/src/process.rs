//! Child processes (the peers, the echo app, the browser script): started in
//! a process group of their own, read line by line, every wait bounded, and
//! killed by process-group id when dropped.

use std::fmt::Write as _;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// What to do when a tool is missing.
pub const HINT: &str = "run `scripts/test`: it sets up the Python venv (interop/python/.venv) and the Node modules \
                        (interop/node/node_modules), checks /usr/bin/chromium (installed by .ci/run), then runs the tests";

/// A child process and its output.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    pgid: Option<u32>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    transcript: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `command` with stdout and stderr piped, in a new process group.
    ///
    /// # Panics
    ///
    /// When it cannot be started (with [`HINT`]).
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}; {HINT}"));
        let transcript = Arc::new(Mutex::new(String::new()));
        let stdout = forward(child.stdout.take(), "out", transcript.clone());
        let stderr = forward(child.stderr.take(), "err", transcript.clone());
        Self {
            name: name.to_owned(),
            pgid: child.id(),
            child,
            stdout,
            stderr,
            transcript,
        }
    }

    /// The next line on stdout that starts with `prefix`, without the prefix.
    pub async fn stdout_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let found = next_line(&mut self.stdout, timeout, |line| {
            line.strip_prefix(prefix).map(str::to_owned)
        })
        .await;
        self.found(found, &format!("{prefix:?}"), timeout)
    }

    /// The next line on stdout that contains `needle`.
    pub async fn stdout_line_containing(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let found = next_line(&mut self.stdout, timeout, |line| {
            line.contains(needle).then(|| line.to_owned())
        })
        .await;
        self.found(found, &format!("{needle:?}"), timeout)
    }

    /// Stops it now (its whole process group, by id), as a crash would.
    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// The next line on stderr that contains `needle`.
    pub async fn stderr_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let found = next_line(&mut self.stderr, timeout, |line| {
            line.contains(needle).then(|| line.to_owned())
        })
        .await;
        self.found(found, &format!("{needle:?} on stderr"), timeout)
    }

    /// What [`next_line`] found, or an error naming what was awaited.
    fn found(&self, found: Option<Option<String>>, what: &str, timeout: Duration) -> Result<String, String> {
        match found {
            Some(Some(line)) => Ok(line),
            Some(None) => Err(self.failure(&format!("exited before printing {what}"))),
            None => Err(self.failure(&format!("printed no {what} within {timeout:?}"))),
        }
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(self.failure(&format!("wait failed: {e}"))),
            Err(_) => Err(self.failure(&format!("did not exit within {timeout:?}"))),
        }
    }

    /// Everything it printed so far, each line marked `out|` or `err|`.
    pub fn transcript(&self) -> String {
        self.transcript.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// An error message about this process, with its output.
    pub fn failure(&self, what: &str) -> String {
        let mut message = format!("{} {what}", self.name);
        let transcript = self.transcript();
        if !transcript.is_empty() {
            let _ = write!(message, "; its output:\n{transcript}");
        }
        if transcript.contains("ModuleNotFoundError") || transcript.contains("ERR_MODULE_NOT_FOUND") {
            let _ = write!(message, "\n{HINT}");
        }
        message
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The whole group, by its id: the browser script's Chromium too.
        if let Some(pgid) = self.pgid {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
    }
}

/// Reads `stream` line by line into a channel and the transcript.
fn forward<R>(stream: Option<R>, tag: &'static str, transcript: Arc<Mutex<String>>) -> mpsc::UnboundedReceiver<String>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(stream) = stream {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut t) = transcript.lock() {
                    // Keep failure messages readable: long lines are cut.
                    let shown: String = line.chars().take(400).collect();
                    let _ = writeln!(t, "{tag}| {shown}");
                }
                let _ = tx.send(line);
            }
        });
    }
    rx
}

/// The first line of `lines` that `pick` maps to a value, within `timeout`:
/// `None` on timeout, `Some(None)` when the output ended first.
async fn next_line(
    lines: &mut mpsc::UnboundedReceiver<String>,
    timeout: Duration,
    pick: impl Fn(&str) -> Option<String>,
) -> Option<Option<String>> {
    tokio::time::timeout(timeout, async {
        while let Some(line) = lines.recv().await {
            if let Some(found) = pick(&line) {
                return Some(found);
            }
        }
        None
    })
    .await
    .ok()
}
