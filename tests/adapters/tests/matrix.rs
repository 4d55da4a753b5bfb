//! Each adapter's client against each adapter's server, plain and over TLS,
//! with and without permessage-deflate: the same scenario, the same results.
#![allow(clippy::unwrap_used)]

use tether_adapter_tests::{scenario, Adapter, Options};

/// The four option sets for one client/server pair, and small reads.
fn all_options(client: Adapter, server: Adapter) {
    options(client, server, &[false, true]);
}

/// Plain and permessage-deflate, over TLS too where `tls` says so, then
/// both builders' `read_buffer_size` at its smallest (4 KiB): several MiB
/// each way still arrive whole.
fn options(client: Adapter, server: Adapter, tls: &[bool]) {
    for &tls in tls {
        for deflate in [false, true] {
            eprintln!("{client:?} client -> {server:?} server, tls {tls}, deflate {deflate}");
            scenario::run(
                client,
                server,
                Options {
                    deflate,
                    tls,
                    ..Options::default()
                },
            );
        }
    }
    eprintln!("{client:?} client -> {server:?} server, read_buffer_size 4 KiB");
    scenario::run(
        client,
        server,
        Options {
            read_buffer_size: Some(4 * 1024),
            ..Options::default()
        },
    );
}

macro_rules! matrix {
    ($($name:ident: $client:ident -> $server:ident;)*) => {
        $(
            #[test]
            fn $name() {
                all_options(Adapter::$client, Adapter::$server);
            }
        )*

        /// The pairs listed.
        const PAIRS: &[(Adapter, Adapter)] = &[$((Adapter::$client, Adapter::$server)),*];
    };
}

matrix! {
    tokio_client_tokio_server: Tokio -> Tokio;
    tokio_client_smol_server: Tokio -> Smol;
    tokio_client_async_std_server: Tokio -> AsyncStd;
    smol_client_tokio_server: Smol -> Tokio;
    smol_client_smol_server: Smol -> Smol;
    smol_client_async_std_server: Smol -> AsyncStd;
    async_std_client_tokio_server: AsyncStd -> Tokio;
    async_std_client_smol_server: AsyncStd -> Smol;
    async_std_client_async_std_server: AsyncStd -> AsyncStd;
    tokio_client_blocking_server: Tokio -> Blocking;
    smol_client_blocking_server: Smol -> Blocking;
    async_std_client_blocking_server: AsyncStd -> Blocking;
    blocking_client_tokio_server: Blocking -> Tokio;
    blocking_client_smol_server: Blocking -> Smol;
    blocking_client_async_std_server: Blocking -> AsyncStd;
    blocking_client_blocking_server: Blocking -> Blocking;
}

#[test]
fn every_pair_of_adapters_is_listed() {
    for &client in Adapter::ALL {
        for &server in Adapter::ALL {
            assert!(PAIRS.contains(&(client, server)), "{client:?} -> {server:?} is missing");
        }
    }
}

/// The completion-based shell (tether-compio, io_uring) against every
/// adapter both ways and against itself: plain TCP (it has no TLS yet),
/// with and without permessage-deflate, and small reads.
fn plain_options(client: Adapter, server: Adapter) {
    options(client, server, &[false]);
}

#[test]
fn compio_client_every_server() {
    for &server in Adapter::ALL.iter().chain([&Adapter::Compio]) {
        plain_options(Adapter::Compio, server);
    }
}

#[test]
fn every_client_compio_server() {
    for &client in Adapter::ALL {
        plain_options(client, Adapter::Compio);
    }
}

/// WebSockets over HTTP/2 (RFC 8441): the same scenario, every message kind,
/// fragments, several MiB each way, pings, and the close from either end,
/// on a stream of an HTTP/2 connection, plain (prior knowledge) and TLS
/// (ALPN h2), with and without permessage-deflate.
#[test]
fn http2_client_http2_server() {
    all_options(Adapter::TokioHttp2, Adapter::TokioHttp2);
}
