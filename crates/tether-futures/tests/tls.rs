//! `wss://` with a self-signed certificate made by the test, on smol and on
//! async-std.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use common::Exec;
use tether_futures::tls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tether_futures::tls::rustls::RootCertStore;
use tether_futures::tls::{self, TlsAcceptor};
use tether_futures::{ClientBuilder, CloseCode, Error, MaybeTlsStream, Message};

on_both_executors!(wss_echo_with_own_roots, self_signed_without_roots_is_a_tls_error);

/// A TLS echo server for one connection on `localhost`, and the roots that
/// trust it.
async fn tls_echo_server(exec: Exec) -> (u16, RootCertStore, common::Task<()>) {
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der()).into();
    let acceptor = TlsAcceptor::from(tls::server_config(vec![der.clone()], key).unwrap());
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let listener = exec.listen().await;
    let port = listener.addr().port();
    let task = exec.spawn(async move {
        let tcp = listener.accept().await;
        // A client that refuses the certificate ends the TLS handshake.
        let Ok(stream) = acceptor.accept(tcp).await else { return };
        let mut ws = tether_futures::accept(stream).await.unwrap();
        while let Some(Ok(message)) = ws.recv().await {
            ws.send(message).await.unwrap();
        }
    });
    (port, roots, task)
}

async fn wss_echo_with_own_roots(exec: Exec) {
    let (port, roots, server) = tls_echo_server(exec).await;
    let mut ws = ClientBuilder::new(&format!("wss://localhost:{port}/secure"))
        .tls_config(tls::client_config(roots).unwrap())
        .connect()
        .await
        .unwrap();
    assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
    assert_eq!(ws.peer_addr().unwrap().port(), port);
    let big = vec![5u8; 1 << 20];
    ws.send("over TLS").await.unwrap();
    ws.send(big.clone()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Text("over TLS".into()));
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::Binary(big.into()));
    ws.close(CloseCode::NORMAL, "bye").await.unwrap();
    server.await;
}

async fn self_signed_without_roots_is_a_tls_error(exec: Exec) {
    let (port, _roots, server) = tls_echo_server(exec).await;
    // The compiled-in webpki roots do not know the test's certificate.
    let result = tether_futures::connect(&format!("wss://localhost:{port}/")).await;
    assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
    server.await;
}
