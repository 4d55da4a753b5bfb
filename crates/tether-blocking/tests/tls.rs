//! `wss://` with a self-signed certificate generated in the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use common::bounded;
use tether_blocking::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tether_blocking::tls::rustls::RootCertStore;
use tether_blocking::tls::{self, ServerConnection, StreamOwned};
use tether_blocking::{ClientBuilder, CloseCode, Error, MaybeTlsStream, Message};

fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    (certified.cert.der().clone(), key.into())
}

/// A TLS echo server for one connection.
fn tls_echo_server() -> (u16, CertificateDer<'static>, JoinHandle<()>) {
    let (cert, key) = certificate();
    let config = tls::server_config(vec![cert.clone()], key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let tls = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
        // A client that refuses the certificate ends here.
        let Ok(mut ws) = tether_blocking::accept(tls) else {
            return;
        };
        assert!(ws.peer_addr().unwrap().ip().is_loopback());
        while let Some(Ok(message)) = ws.recv() {
            ws.send(message).unwrap();
        }
    });
    (port, cert, handle)
}

fn client_config(cert: CertificateDer<'static>) -> Arc<tls::rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    tls::client_config(roots).unwrap()
}

#[test]
fn wss_round_trip_with_own_roots() {
    bounded(|| {
        let (port, cert, server) = tls_echo_server();
        let mut ws = ClientBuilder::new(&format!("wss://localhost:{port}/secure"))
            .tls_config(client_config(cert))
            .connect()
            .unwrap();
        assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
        ws.send("over TLS").unwrap();
        let big = vec![3u8; 300_000];
        ws.send(big.clone()).unwrap();
        assert_eq!(ws.recv().unwrap().unwrap(), Message::Text("over TLS".into()));
        assert_eq!(ws.recv().unwrap().unwrap(), Message::Binary(big.into()));
        ws.close(CloseCode::NORMAL, "").unwrap();
        server.join().unwrap();
    });
}

#[test]
fn wss_split_reader_and_writer() {
    bounded(|| {
        let (port, cert, server) = tls_echo_server();
        let ws = ClientBuilder::new(&format!("wss://localhost:{port}/"))
            .tls_config(client_config(cert))
            .connect()
            .unwrap();
        // The reader reads TLS records from the raw socket; the shared
        // session decrypts them under the lock.
        let (mut reader, writer) = ws.split().unwrap();
        let receiving = std::thread::spawn(move || reader.incoming().map(Result::unwrap).collect::<Vec<_>>());
        for i in 0..200 {
            writer.send(format!("secret {i}")).unwrap();
        }
        writer.send(vec![9u8; 200_000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        writer.close(CloseCode::NORMAL, "").unwrap();
        let received = receiving.join().unwrap();
        assert_eq!(received.len(), 201);
        assert_eq!(received[199], Message::Text("secret 199".into()));
        assert_eq!(received[200], Message::Binary(vec![9u8; 200_000].into()));
        server.join().unwrap();
    });
}

#[test]
fn unknown_issuer_is_a_tls_error() {
    bounded(|| {
        let (port, _cert, server) = tls_echo_server();
        // The default (webpki) roots do not know a self-signed certificate.
        let result = tether_blocking::connect(&format!("wss://localhost:{port}/"));
        assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
        server.join().unwrap();
    });
}
