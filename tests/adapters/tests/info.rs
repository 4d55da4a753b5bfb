//! Information about a connection on every pair of adapters (the Windows
//! runtime's Information classes): the core's statistics agree end to end
//! (what one sent, the other received: wire bytes, payload bytes,
//! messages), the addresses match, `wss://` shows the server's certificate
//! and TLS 1.3, and the agreed permessage-deflate parameters are the same
//! at both ends. Also on split halves.
#![allow(clippy::unwrap_used)]

use tether_adapter_tests::{connect, start_server, Adapter, Options};
use tether_driver::tls::rustls::ProtocolVersion;
use tether_driver::{CloseCode, DeflateParams, Message, Received};

fn pair(client: Adapter, server_adapter: Adapter, options: Options) {
    let server = start_server(server_adapter, options);
    let mut ws = connect(client, &server, options);
    let messages = [
        Message::Text("hello".into()),
        Message::Binary(vec![7; 3000].into()),
        Message::Text("é".repeat(500).into()),
    ];
    let payload: u64 = messages.iter().map(|m| m.len() as u64).sum();
    for message in &messages {
        ws.send(message.clone()).unwrap();
        match ws.recv_event() {
            Some(Ok(Received::Message(echo))) => assert_eq!(&echo, message),
            other => panic!("{other:?}"),
        }
    }
    let opened = ws.facts();
    let who = format!("{client:?} client, {server_adapter:?} server, {options:?}");
    // Addresses.
    assert_eq!(opened.peer_addr, Some(server.addr), "{who}");
    let local = opened.local_addr.unwrap();
    assert!(local.ip().is_loopback() && local.port() != server.addr.port(), "{who}");
    // TLS.
    match &opened.tls {
        Some(tls) => {
            assert!(options.tls, "{who}");
            assert_eq!(tls.protocol_version, Some(ProtocolVersion::TLSv1_3), "{who}");
            assert_eq!(tls.peer_certificates.len(), 1, "the test certificate: {who}");
            assert_eq!(tls.alpn_protocol, None, "{who}");
        }
        None => assert!(!options.tls, "{who}"),
    }
    // permessage-deflate, with the default settings at both ends.
    let expected = options.deflate.then_some((false, false, 15, 15));
    let params = |p: Option<DeflateParams>| {
        p.map(|p| {
            (
                p.server_no_context_takeover,
                p.client_no_context_takeover,
                p.server_max_window_bits,
                p.client_max_window_bits,
            )
        })
    };
    assert_eq!(params(opened.deflate), expected, "{who}");

    ws.close(CloseCode::NORMAL, "done").unwrap();
    let client_stats = ws.facts().stats;
    let end = server.next_end();
    let server_stats = end.facts.stats;
    assert_eq!(
        (client_stats.messages_sent, client_stats.payload_bytes_sent),
        (3, payload),
        "{who}"
    );
    assert_eq!(
        (server_stats.messages_received, server_stats.payload_bytes_received),
        (3, payload),
        "{who}"
    );
    assert_eq!(
        (server_stats.messages_sent, server_stats.payload_bytes_sent),
        (3, payload),
        "{who}"
    );
    assert_eq!(
        (client_stats.messages_received, client_stats.payload_bytes_received),
        (3, payload),
        "{who}"
    );
    // Every byte one end wrote, the other read (the close handshake
    // included); TLS records are below this count.
    assert_eq!(client_stats.wire_bytes_sent, server_stats.wire_bytes_received, "{who}");
    assert_eq!(server_stats.wire_bytes_sent, client_stats.wire_bytes_received, "{who}");
    if options.deflate {
        // The 3000 equal bytes shrink.
        assert!(client_stats.wire_bytes_sent < payload, "{who}: {client_stats:?}");
    } else {
        assert!(client_stats.wire_bytes_sent > payload, "{who}: {client_stats:?}");
    }
    // The server saw the same connection from its side.
    assert_eq!(end.facts.local_addr, Some(server.addr), "{who}");
    assert_eq!(end.facts.peer_addr, Some(local), "{who}");
    assert_eq!(params(end.facts.deflate), expected, "{who}");
    if options.tls {
        let tls = end.facts.tls.unwrap();
        assert_eq!(tls.protocol_version, Some(ProtocolVersion::TLSv1_3), "{who}");
        assert!(tls.peer_certificates.is_empty(), "no client certificate: {who}");
        if server_adapter != Adapter::Blocking {
            assert_eq!(tls.server_name.as_deref(), Some("localhost"), "{who}");
        }
    } else {
        assert!(end.facts.tls.is_none(), "{who}");
    }
}

#[test]
fn every_pair_plain_and_tls_with_and_without_deflate() {
    for &client in Adapter::ALL {
        for &server in Adapter::ALL {
            for tls in [false, true] {
                for deflate in [false, true] {
                    let options = Options {
                        tls,
                        deflate,
                        ..Options::default()
                    };
                    pair(client, server, options);
                }
            }
        }
    }
}

/// The halves of a split connection tell the same (tokio's and the
/// blocking adapter's halves).
#[test]
fn split_halves_tell_the_same() {
    let server = start_server(Adapter::Tokio, Options::default());
    let url = format!("ws://{}/echo", server.addr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut ws = tether_tokio::connect(&url).await.unwrap();
        ws.send(Message::Text("one".into())).await.unwrap();
        ws.recv().await.unwrap().unwrap();
        let (local, peer, stats) = (ws.local_addr().unwrap(), ws.peer_addr().unwrap(), ws.stats());
        let (read, write) = ws.split();
        for (l, p, s) in [
            (read.local_addr(), read.peer_addr(), read.stats()),
            (write.local_addr(), write.peer_addr(), write.stats()),
        ] {
            assert_eq!((l.unwrap(), p.unwrap(), s), (local, peer, stats));
        }
        assert_eq!(write.subprotocol(), None);
        assert!(write.tls_info().is_none());
    });
    let mut ws = tether_blocking::connect(&url).unwrap();
    ws.send(Message::Text("two".into())).unwrap();
    ws.recv().unwrap().unwrap();
    let (local, peer, stats) = (ws.local_addr().unwrap(), ws.peer_addr().unwrap(), ws.stats());
    let (reader, writer) = ws.split().unwrap();
    assert_eq!(
        (reader.local_addr().unwrap(), reader.peer_addr().unwrap()),
        (local, peer)
    );
    assert_eq!(
        (writer.local_addr().unwrap(), writer.peer_addr().unwrap()),
        (local, peer)
    );
    assert_eq!(reader.stats(), stats);
    assert_eq!(writer.stats(), stats);
}
