//! The test certificate, made once per process.

use std::sync::{Arc, OnceLock};

use tether_driver::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tether_driver::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};

struct Certificate {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn certificate() -> &'static Certificate {
    static CERT: OnceLock<Certificate> = OnceLock::new();
    CERT.get_or_init(|| {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        Certificate {
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()),
        }
    })
}

/// A server configuration with the test certificate.
pub fn server_config() -> Arc<ServerConfig> {
    let cert = certificate();
    tether_driver::tls::server_config(vec![cert.cert.clone()], PrivateKeyDer::Pkcs8(cert.key.clone_key())).unwrap()
}

/// A client configuration that trusts the test certificate only.
pub fn client_config() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(certificate().cert.clone()).unwrap();
    tether_driver::tls::client_config(roots).unwrap()
}

/// The test certificate and its key in PEM, for servers outside the test
/// (stunnel).
pub fn pem() -> (&'static str, &'static str) {
    let cert = certificate();
    (&cert.cert_pem, &cert.key_pem)
}
