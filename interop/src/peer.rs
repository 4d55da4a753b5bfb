//! The peers: where their tools are, and starting them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::process::{Process, HINT};

/// How long a peer may take to start and print its port.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A WebSocket implementation to test against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Python `websockets` (asyncio API), `interop/python/peer.py`.
    Python,
    /// Node `ws`, `interop/node/peer.mjs`.
    Node,
}

impl PeerKind {
    /// For messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Python => "Python websockets",
            Self::Node => "Node ws",
        }
    }

    fn command(self) -> Command {
        match self {
            Self::Python => {
                let mut command = Command::new(python());
                command.arg(interop_dir().join("python/peer.py"));
                command
            }
            Self::Node => {
                let mut command = Command::new(node());
                command.arg(interop_dir().join("node/peer.mjs"));
                command
            }
        }
    }

    /// Starts the peer as a server on 127.0.0.1 and returns it with its port.
    pub async fn server(self) -> (Process, u16) {
        let mut command = self.command();
        command.arg("server");
        let mut process = Process::spawn(&format!("{} server", self.name()), command);
        let line = process
            .stdout_line("READY ", READY_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}", process.failure(&format!("printed a bad port {line:?}"))));
        (process, port)
    }

    /// Starts the peer as a client of each URL in turn.
    pub fn client(self, urls: &[String]) -> Process {
        let mut command = self.command();
        command.arg("client").args(urls);
        Process::spawn(&format!("{} client", self.name()), command)
    }
}

/// This crate's folder.
pub fn interop_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python: `$TETHER_INTEROP_PYTHON`, else
/// `interop/python/.venv/bin/python`.
///
/// # Panics
///
/// When it is missing, with [`HINT`].
pub fn python() -> PathBuf {
    let path = std::env::var_os("TETHER_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| interop_dir().join("python/.venv/bin/python"));
    assert!(path.exists(), "no Python venv at {}; {HINT}", path.display());
    path
}

/// Node: `$TETHER_INTEROP_NODE`, else `node` on the `PATH`; its modules
/// must be in `interop/node/node_modules` (ES modules resolve from the
/// script's folder, `NODE_PATH` does not apply to them).
///
/// # Panics
///
/// When Node or the modules are missing, with [`HINT`].
pub fn node() -> PathBuf {
    let node = std::env::var_os("TETHER_INTEROP_NODE")
        .map(PathBuf::from)
        .or_else(|| find_in_path("node"))
        .unwrap_or_else(|| panic!("no `node` on the PATH; {HINT}"));
    for module in ["ws", "playwright-core"] {
        let manifest = interop_dir()
            .join("node/node_modules")
            .join(module)
            .join("package.json");
        assert!(
            manifest.exists(),
            "the Node module {module} is not installed ({} is missing); {HINT}",
            manifest.display()
        );
    }
    node
}

/// Chromium: `$TETHER_INTEROP_CHROMIUM`, else `/usr/bin/chromium`.
///
/// # Panics
///
/// When it is missing, with [`HINT`].
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("TETHER_INTEROP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(path.exists(), "no Chromium at {}; {HINT}", path.display());
    path
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
