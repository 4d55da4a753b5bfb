//! TLS through rustls (ring provider): the configurations every shell
//! uses for `wss://` clients and TLS servers. The shells add the runtime's
//! TLS stream (tokio-rustls, futures-rustls, rustls `StreamOwned`).

use std::sync::Arc;

pub use rustls;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::Error;

/// Which certificates a `wss://` client trusts.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The Mozilla root program, compiled in (`webpki-roots`). The default:
    /// the same on every machine.
    #[default]
    Webpki,
    /// The operating system's trust store (`rustls-native-certs`), read at
    /// each connect.
    #[cfg(feature = "native-roots")]
    Native,
    /// A configuration of the caller's (own roots, client certificates,
    /// ALPN...). Its ALPN list should be empty or `http/1.1`.
    Custom(Arc<ClientConfig>),
}

/// The crypto provider of this crate: ring, which needs only a C compiler
/// (aws-lc-rs needs cmake and, on some targets, nasm).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts `roots`, with this crate's provider.
pub fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, Error> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server configuration for a certificate chain and its private key, with
/// this crate's provider; wrap it in the shell's TLS acceptor and pass the
/// accepted streams to its `accept`.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, Error> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(Error::Tls)?;
    Ok(Arc::new(config))
}

impl TlsRoots {
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        match self {
            Self::Webpki => {
                let roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                client_config(roots)
            }
            #[cfg(feature = "native-roots")]
            Self::Native => {
                let loaded = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                for cert in loaded.certs {
                    // Skip certificates the store holds but rustls cannot use.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    let detail = loaded.errors.first().map(ToString::to_string).unwrap_or_default();
                    return Err(Error::Io(std::io::Error::other(format!(
                        "no usable certificate in the operating system's trust store {detail}"
                    ))));
                }
                client_config(roots)
            }
            Self::Custom(config) => Ok(config.clone()),
        }
    }
}
