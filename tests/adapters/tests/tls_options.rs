//! TLS controls on every adapter's client, against TLS servers configured
//! in the test with certificates made by rcgen: a private CA trusted from
//! PEM, client certificates required (presented, missing, from another
//! CA), the loudly named opt-in that accepts any certificate, ALPN, and the
//! host name sent as SNI.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc};
use std::thread;

use tether_adapter_tests::{try_connect, Adapter, ClientSettings, STEP_TIMEOUT};
use tether_blocking::tls::{ServerConnection, StreamOwned};
use tether_driver::tls::rustls::ServerConfig;
use tether_driver::tls::{TlsClient, TlsServer};
use tether_driver::{CloseCode, ErrorKind, Message, Received};

/// A certificate authority, and certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (server) or for client authentication: chain PEM
    /// (leaf, then this CA) and key PEM.
    fn issue(&self, names: &[&str], client: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (format!("{}{}", cert.pem(), self.cert.pem()), key.serialize_pem())
    }
}

/// What the server saw of one connection: the client's certificate chain
/// length, the ALPN protocol agreed and the SNI name, or the TLS error.
type Seen = Result<(usize, Option<Vec<u8>>, Option<String>), String>;

fn localhost() -> Option<String> {
    Some("localhost".to_owned())
}

/// A TLS echo server (tether-blocking over rustls) with `config`: answers
/// one message per connection, then closes. Reports what it saw.
fn tls_echo_server(config: Arc<ServerConfig>) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { break };
            let (config, tx) = (config.clone(), tx.clone());
            thread::spawn(move || {
                let mut tls = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
                // Complete the TLS handshake first, to report its outcome.
                while tls.conn.is_handshaking() {
                    if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
                let certs = tls.conn.peer_certificates().map_or(0, <[_]>::len);
                let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
                let sni = tls.conn.server_name().map(str::to_owned);
                let _ = tx.send(Ok((certs, alpn, sni)));
                let Ok(mut ws) = tether_blocking::accept(tls) else {
                    return;
                };
                if let Some(Ok(message)) = ws.recv() {
                    let _ = ws.send(message);
                }
                let _ = ws.close(CloseCode::NORMAL, "");
            });
        }
    });
    (addr, rx)
}

fn url(addr: SocketAddr) -> String {
    format!("wss://localhost:{}/", addr.port())
}

fn settings(tls: TlsClient) -> ClientSettings {
    ClientSettings {
        tls: Some(tls),
        ..ClientSettings::default()
    }
}

/// Connects, echoes one message and closes.
fn echo_once(adapter: Adapter, url: &str, tls: TlsClient) {
    let mut ws = try_connect(adapter, url, settings(tls)).unwrap_or_else(|e| panic!("{adapter:?}: {e}"));
    ws.send(Message::Text("over TLS".into())).unwrap();
    match ws.recv_event() {
        Some(Ok(Received::Message(message))) => assert_eq!(message, Message::Text("over TLS".into())),
        other => panic!("{adapter:?}: {other:?}"),
    }
    let _ = ws.close(CloseCode::NORMAL, "");
}

fn private_ca_trusted_from_pem(adapter: Adapter) {
    let ca = Ca::new("tether test CA");
    let (chain, key) = ca.issue(&["localhost"], false);
    let server = TlsServer::from_pem(chain.as_bytes(), key.as_bytes()).unwrap();
    let (addr, seen) = tls_echo_server(server.server_config().unwrap());
    // Next to the public roots, and alone.
    echo_once(
        adapter,
        &url(addr),
        TlsClient::new().add_roots_pem(ca.pem().as_bytes()).unwrap(),
    );
    echo_once(
        adapter,
        &url(addr),
        TlsClient::new().only_roots_pem(ca.pem().as_bytes()).unwrap(),
    );
    assert_eq!(seen.recv_timeout(STEP_TIMEOUT).unwrap(), Ok((0, None, localhost())));
    // Without it: untrusted.
    let error = try_connect(adapter, &url(addr), settings(TlsClient::new()))
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::CertificateUntrusted, "{adapter:?}: {error}");
}

fn client_certificates_required(adapter: Adapter) {
    let ca = Ca::new("tether server CA");
    let clients = Ca::new("tether client CA");
    let (chain, key) = ca.issue(&["localhost"], false);
    let server = TlsServer::from_pem(chain.as_bytes(), key.as_bytes())
        .unwrap()
        .require_client_certificates(clients.pem().as_bytes())
        .unwrap();
    let (addr, seen) = tls_echo_server(server.server_config().unwrap());
    let trusting = || TlsClient::new().only_roots_pem(ca.pem().as_bytes()).unwrap();

    // Presented and signed by the CA the server trusts: in, and the server
    // saw the chain (leaf and CA).
    let (client_chain, client_key) = clients.issue(&["client"], true);
    let tls = trusting()
        .client_certificate_pem(client_chain.as_bytes(), client_key.as_bytes())
        .unwrap();
    echo_once(adapter, &url(addr), tls);
    assert_eq!(seen.recv_timeout(STEP_TIMEOUT).unwrap(), Ok((2, None, localhost())));

    // Missing: the server refuses the handshake.
    let error = try_connect(adapter, &url(addr), settings(trusting())).err().unwrap();
    assert_eq!(error.kind(), ErrorKind::CertificateInvalid, "{adapter:?}: {error}");
    let refused = seen.recv_timeout(STEP_TIMEOUT).unwrap().unwrap_err();
    assert!(refused.contains("no certificates"), "{refused}");

    // Signed by another CA: refused too.
    let (other_chain, other_key) = Ca::new("someone else").issue(&["client"], true);
    let tls = trusting()
        .client_certificate_pem(other_chain.as_bytes(), other_key.as_bytes())
        .unwrap();
    let error = try_connect(adapter, &url(addr), settings(tls)).err().unwrap();
    assert_eq!(error.kind(), ErrorKind::CertificateInvalid, "{adapter:?}: {error}");
    assert!(seen.recv_timeout(STEP_TIMEOUT).unwrap().is_err());
}

fn accept_any_certificate_is_an_explicit_opt_in(adapter: Adapter) {
    // Self-signed for another name: refused by default, accepted when asked.
    let certified = rcgen::generate_simple_self_signed(vec!["elsewhere.example".to_owned()]).unwrap();
    let server = TlsServer::from_pem(
        certified.cert.pem().as_bytes(),
        certified.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let (addr, _seen) = tls_echo_server(server.server_config().unwrap());
    let error = try_connect(adapter, &url(addr), settings(TlsClient::new()))
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::CertificateUntrusted, "{adapter:?}: {error}");
    echo_once(adapter, &url(addr), TlsClient::new().dangerous_accept_any_certificate());
}

fn alpn_is_offered_and_agreed(adapter: Adapter) {
    let ca = Ca::new("tether test CA");
    let (chain, key) = ca.issue(&["localhost"], false);
    let server = TlsServer::from_pem(chain.as_bytes(), key.as_bytes())
        .unwrap()
        .alpn(["http/1.1"]);
    let (addr, seen) = tls_echo_server(server.server_config().unwrap());
    let tls = TlsClient::new()
        .only_roots_pem(ca.pem().as_bytes())
        .unwrap()
        .alpn(["http/1.1"]);
    echo_once(adapter, &url(addr), tls);
    assert_eq!(
        seen.recv_timeout(STEP_TIMEOUT).unwrap(),
        Ok((0, Some(b"http/1.1".to_vec()), localhost()))
    );
}

#[test]
fn bad_pem_is_invalid_input() {
    let error = TlsClient::new().add_roots_pem(b"not a certificate").err().unwrap();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    let error = TlsServer::from_pem(b"", b"").err().unwrap();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
}

tether_adapter_tests::every_adapter!(
    private_ca_trusted_from_pem,
    client_certificates_required,
    accept_any_certificate_is_an_explicit_opt_in,
    alpn_is_offered_and_agreed,
);
