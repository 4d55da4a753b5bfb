//! tether against real peers: Python `websockets` and Node `ws`, as servers
//! and as clients of tether-tokio, and headless Chromium on the echo app.
//!
//! Run everything with `scripts/test` (it installs the peers: the Python
//! venv from `python/requirements.txt`, the Node modules from
//! `node/package-lock.json`, and checks `/usr/bin/chromium`). The tests fail,
//! with a message saying so, when a peer is missing.
//!
//! # How a case runs
//!
//! ```text
//!  tests/python.rs, tests/node.rs          interop/python/peer.py, interop/node/peer.mjs
//!  tether client --ws://127.0.0.1:P/interop?id=3&scenario=ping[&deflate=..]--> peer server
//!  tether server <--------------- same URL, from a list on argv ------------- peer client
//!        |  both sides run the scenario named in the query,                       |
//!        |  each checking what it receives                                        |
//!        +--- tether's verdict + the peer's "RESULT id=3&ok=1&..." line on stdout <+
//! ```
//!
//! tether-mio, a server with callbacks and no stream, runs the same
//! scenarios as tether server (module `mio` of `tests/python.rs` and
//! `tests/node.rs`): each connection follows its scenario as a script of
//! callbacks (`src/mio_server.rs`). It sends no fragments, so tether's
//! fragmented messages go whole there (the peer is told, `tether_frames=1`,
//! and checks it), and in the `deflate` scenario a relay counts the peer's
//! bytes on the wire.
//!
//! Every case is bounded in time ([`run::CASE_TIMEOUT`]), every peer picks
//! its port itself (port 0) and traffic stays on 127.0.0.1; every process
//! is killed by process-group id when its test ends.
#![allow(clippy::missing_panics_doc)]

pub mod cli;
pub mod data;
pub mod deflate;
mod mio_server;
pub mod peer;
pub mod process;
pub mod query;
pub mod run;
pub mod scenario;
pub mod wire;

pub use peer::PeerKind;
pub use run::{Case, Shell};
pub use scenario::Scenario;

/// The tests of one peer (`Python` or `Node`) for each shell (modules
/// `tokio`, `smol`, `async_std`, `blocking`, `compio`): each scenario with tether as
/// client and as server, without and with permessage-deflate (modules named
/// after the scenarios), and the permessage-deflate matrices (module
/// `deflate`). For tether-mio, a server only (module `mio`), the same with
/// tether as server.
#[macro_export]
macro_rules! peer_tests {
    ($kind:ident) => {
        $crate::peer_tests!(@shells $kind [client, server];
            tokio => Tokio, smol => Smol, async_std => AsyncStd, blocking => Blocking, compio => Compio);
        $crate::peer_tests!(@shells $kind [server]; mio => Mio);
    };
    (@shells $kind:ident $roles:tt; $($shell_mod:ident => $shell:ident),*) => {
        $(
            mod $shell_mod {
                $crate::peer_tests!(@scenarios $kind $shell $roles;
                    text => Text, binary => Binary, fragmented => Fragmented, large => Large, ping => Ping,
                    close_tether => CloseTether, close_peer => ClosePeer, subprotocol => Subprotocol);

                mod deflate {
                    use $crate::{Case, PeerKind, Shell};

                    $crate::peer_tests!(@matrices $kind $shell $roles);
                }
            }
        )*
    };
    (@scenarios $kind:ident $shell:ident $roles:tt; $($module:ident => $scenario:ident),*) => {
        $(
            mod $module {
                use $crate::{Case, PeerKind, Scenario, Shell};

                $crate::peer_tests!(@scenario $kind $shell $scenario $roles);
            }
        )*
    };
    (@scenario $kind:ident $shell:ident $scenario:ident [$($role:ident),*]) => {
        $($crate::peer_tests!(@scenario_role $role $kind $shell $scenario);)*
    };
    (@scenario_role client $kind:ident $shell:ident $scenario:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn tether_client() {
            $crate::run::tether_client(Shell::$shell, PeerKind::$kind, &[Case::plain(Scenario::$scenario)]).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn tether_client_deflate() {
            $crate::run::tether_client(Shell::$shell, PeerKind::$kind, &[Case::deflate(Scenario::$scenario)]).await;
        }
    };
    (@scenario_role server $kind:ident $shell:ident $scenario:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn tether_server() {
            $crate::run::tether_server(Shell::$shell, PeerKind::$kind, &[Case::plain(Scenario::$scenario)]).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn tether_server_deflate() {
            $crate::run::tether_server(Shell::$shell, PeerKind::$kind, &[Case::deflate(Scenario::$scenario)]).await;
        }
    };
    (@matrices $kind:ident $shell:ident [$($role:ident),*]) => {
        $($crate::peer_tests!(@matrix_role $role $kind $shell);)*
    };
    (@matrix_role client $kind:ident $shell:ident) => {
        /// The peer's settings over the matrix, tether at its defaults.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn tether_client_peer_matrix() {
            $crate::run::tether_client(Shell::$shell, PeerKind::$kind, &Case::peer_matrix()).await;
        }

        /// tether's settings over the matrix, the peer at its defaults.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn tether_client_tether_matrix() {
            $crate::run::tether_client(Shell::$shell, PeerKind::$kind, &Case::tether_matrix()).await;
        }
    };
    (@matrix_role server $kind:ident $shell:ident) => {
        /// The peer's settings over the matrix, tether at its defaults.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn tether_server_peer_matrix() {
            $crate::run::tether_server(Shell::$shell, PeerKind::$kind, &Case::peer_matrix()).await;
        }

        /// tether's settings over the matrix, the peer at its defaults.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn tether_server_tether_matrix() {
            $crate::run::tether_server(Shell::$shell, PeerKind::$kind, &Case::tether_matrix()).await;
        }
    };
}
