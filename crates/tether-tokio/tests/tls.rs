//! `wss://` with a self-signed certificate generated in the test.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use std::sync::Arc;

use common::TEST_TIMEOUT;
use futures_util::StreamExt;
use tether_tokio::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tether_tokio::tls::rustls::RootCertStore;
use tether_tokio::tls::{self, TlsAcceptor};
use tether_tokio::{ClientBuilder, CloseCode, Error, Message};
use tokio::net::TcpListener;
use tokio::time::timeout;

fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    (certified.cert.der().clone(), key.into())
}

/// A TLS echo server for `connections` connections.
async fn tls_echo_server(connections: usize) -> (u16, CertificateDer<'static>, tokio::task::JoinHandle<()>) {
    let (cert, key) = certificate();
    let acceptor = TlsAcceptor::from(tls::server_config(vec![cert.clone()], key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        for _ in 0..connections {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(tls) = acceptor.accept(tcp).await else { continue };
            let mut ws = tether_tokio::accept(tls).await.unwrap();
            assert!(ws.peer_addr().unwrap().ip().is_loopback());
            while let Some(Ok(message)) = ws.next().await {
                ws.send(message).await.unwrap();
            }
        }
    });
    (port, cert, task)
}

#[tokio::test]
async fn wss_round_trip_with_own_roots() {
    timeout(TEST_TIMEOUT, async {
        let (port, cert, server) = tls_echo_server(1).await;
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let config = tls::client_config(roots).unwrap();
        let mut ws = ClientBuilder::new(&format!("wss://localhost:{port}/secure"))
            .tls_config(config)
            .connect()
            .await
            .unwrap();
        assert!(matches!(ws.get_ref(), tether_tokio::MaybeTlsStream::Tls(_)));
        ws.send("over TLS").await.unwrap();
        let big = vec![3u8; 300_000];
        ws.send(big.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("over TLS".into()));
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Binary(big.into()));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unknown_issuer_is_a_tls_error() {
    timeout(TEST_TIMEOUT, async {
        let (port, _cert, server) = tls_echo_server(1).await;
        // The default (webpki) roots do not know a self-signed certificate.
        let result = tether_tokio::connect(&format!("wss://localhost:{port}/")).await;
        assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
        server.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn name_mismatch_is_a_tls_error() {
    timeout(TEST_TIMEOUT, async {
        let (port, cert, server) = tls_echo_server(1).await;
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        // The certificate is for localhost, not 127.0.0.1.
        let result = ClientBuilder::new(&format!("wss://127.0.0.1:{port}/"))
            .tls_config(tls::client_config(roots).unwrap())
            .connect()
            .await;
        assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
        server.await.unwrap();
    })
    .await
    .unwrap();
}

/// One client configuration serves many builders: the builder holds a
/// reference, not a copy.
#[test]
fn client_config_can_be_shared() {
    let config = tls::client_config(RootCertStore::empty()).unwrap();
    let first = ClientBuilder::new("wss://localhost/").tls_config(Arc::clone(&config));
    let second = ClientBuilder::new("wss://localhost/").tls_config(Arc::clone(&config));
    assert_eq!(Arc::strong_count(&config), 3);
    drop((first, second));
    assert_eq!(Arc::strong_count(&config), 1);
}
