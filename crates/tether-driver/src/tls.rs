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
    /// Built from [`TlsClient`] settings at each connect.
    Settings(Box<TlsClient>),
}

/// The TLS settings of a `wss://` client, built into a rustls
/// configuration when it connects: whose certificates it trusts (the
/// compiled-in Mozilla roots by default, plus or instead of roots from
/// PEM), its own certificate for servers that ask for one, and ALPN.
///
/// ```
/// use tether_driver::tls::TlsClient;
///
/// // A private CA next to the public roots, and a client certificate.
/// fn settings(ca: &[u8], chain: &[u8], key: &[u8]) -> Result<TlsClient, tether_driver::Error> {
///     TlsClient::new().add_roots_pem(ca)?.client_certificate_pem(chain, key)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct TlsClient {
    base: TlsBase,
    extra_roots: Vec<CertificateDer<'static>>,
    identity: Option<Arc<Identity>>,
    alpn: Vec<Vec<u8>>,
    accept_any_certificate: bool,
}

#[derive(Debug, Clone)]
enum TlsBase {
    Webpki,
    #[cfg(feature = "native-roots")]
    Native,
    None,
}

/// A certificate chain and its private key.
#[derive(Debug)]
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Default for TlsClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsClient {
    /// Trusts the compiled-in Mozilla roots (`webpki-roots`), no client
    /// certificate, no ALPN.
    pub fn new() -> Self {
        Self {
            base: TlsBase::Webpki,
            extra_roots: Vec::new(),
            identity: None,
            alpn: Vec::new(),
            accept_any_certificate: false,
        }
    }

    /// Trusts the operating system's trust store instead of the compiled-in
    /// roots (read at each connect).
    #[cfg(feature = "native-roots")]
    pub fn native_roots(mut self) -> Self {
        self.base = TlsBase::Native;
        self
    }

    /// Also trusts the certificates of `pem` (one or more `CERTIFICATE`
    /// blocks): a private CA, or a server's own certificate.
    pub fn add_roots_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        self.extra_roots.extend(certificates_from_pem(pem)?);
        Ok(self)
    }

    /// Trusts only the certificates of `pem`, none of the public roots.
    pub fn only_roots_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        self.base = TlsBase::None;
        self.extra_roots = certificates_from_pem(pem)?;
        Ok(self)
    }

    /// Presents this certificate chain (PEM, leaf first) and private key
    /// (PEM: PKCS#8, PKCS#1 or SEC1) to servers that ask for a client
    /// certificate.
    pub fn client_certificate_pem(mut self, chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let chain = certificates_from_pem(chain_pem)?;
        let key = private_key_from_pem(key_pem)?;
        self.identity = Some(Arc::new(Identity { chain, key }));
        Ok(self)
    }

    /// The ALPN protocols to offer, in order of preference (none by
    /// default). A WebSocket over HTTP/1.1 offers `http/1.1` at most.
    pub fn alpn<P: Into<Vec<u8>>>(mut self, protocols: impl IntoIterator<Item = P>) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// **Dangerous: for development only.** Accepts any server certificate:
    /// untrusted, expired, made for another name, self-signed. The
    /// connection is still encrypted, but anyone between the client and the
    /// server can read and change everything, since nothing proves who the
    /// server is. The Windows runtime's "ignorable server certificate
    /// errors", off unless asked for; use [`add_roots_pem`](Self::add_roots_pem)
    /// with the development server's certificate instead whenever you can.
    pub fn dangerous_accept_any_certificate(mut self) -> Self {
        self.accept_any_certificate = true;
        self
    }

    /// The rustls configuration these settings make.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?;
        let builder = if self.accept_any_certificate {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
        } else {
            let mut roots = match self.base {
                TlsBase::Webpki => webpki_roots_store(),
                #[cfg(feature = "native-roots")]
                TlsBase::Native => native_roots_store()?,
                TlsBase::None => RootCertStore::empty(),
            };
            for cert in &self.extra_roots {
                roots.add(cert.clone()).map_err(Error::Tls)?;
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                .map_err(Error::Tls)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

/// The TLS settings of a server: its certificate and key, and whether it
/// asks clients for certificates (and which it trusts), ALPN.
#[derive(Debug)]
pub struct TlsServer {
    identity: Identity,
    client_roots: Option<(RootCertStore, bool)>,
    alpn: Vec<Vec<u8>>,
}

impl TlsServer {
    /// A certificate chain (leaf first) and its private key.
    pub fn new(cert_chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self {
            identity: Identity { chain: cert_chain, key },
            client_roots: None,
            alpn: Vec::new(),
        }
    }

    /// A certificate chain and its private key, from PEM.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        Ok(Self::new(
            certificates_from_pem(chain_pem)?,
            private_key_from_pem(key_pem)?,
        ))
    }

    /// Requires every client to present a certificate signed by one of
    /// `roots_pem`; a client without one fails the TLS handshake (the
    /// client sees [`ErrorKind::CertificateInvalid`](crate::ErrorKind::CertificateInvalid)).
    pub fn require_client_certificates(mut self, roots_pem: &[u8]) -> Result<Self, Error> {
        self.client_roots = Some((roots_from_pem(roots_pem)?, true));
        Ok(self)
    }

    /// Asks clients for a certificate signed by one of `roots_pem`, and
    /// lets those without one in (the application can tell them apart by
    /// the peer certificates of the connection).
    pub fn accept_client_certificates(mut self, roots_pem: &[u8]) -> Result<Self, Error> {
        self.client_roots = Some((roots_from_pem(roots_pem)?, false));
        Ok(self)
    }

    /// The ALPN protocols this server speaks, in order of preference.
    pub fn alpn<P: Into<Vec<u8>>>(mut self, protocols: impl IntoIterator<Item = P>) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// The rustls configuration: wrap it in the shell's TLS acceptor.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?;
        let builder = match &self.client_roots {
            None => builder.with_no_client_auth(),
            Some((roots, required)) => {
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider());
                let verifier = if *required {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| Error::TlsConfig(format!("client certificate roots: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(self.identity.chain.clone(), self.identity.key.clone_key())
            .map_err(Error::Tls)?;
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::TlsConfig(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::TlsConfig("no CERTIFICATE block in the PEM".to_owned()));
    }
    Ok(certs)
}

fn private_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| Error::TlsConfig(format!("private key PEM: {e}")))
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certificates_from_pem(pem)? {
        roots.add(cert).map_err(Error::Tls)?;
    }
    Ok(roots)
}

fn webpki_roots_store() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

#[cfg(feature = "native-roots")]
fn native_roots_store() -> Result<RootCertStore, Error> {
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
    Ok(roots)
}

/// Accepts any server certificate, but still checks that the server holds
/// the certificate's key (the handshake signatures), so the session is
/// encrypted to whoever presented it. See
/// [`TlsClient::dangerous_accept_any_certificate`].
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
            Self::Webpki => client_config(webpki_roots_store()),
            #[cfg(feature = "native-roots")]
            Self::Native => client_config(native_roots_store()?),
            Self::Custom(config) => Ok(config.clone()),
            Self::Settings(settings) => settings.client_config(),
        }
    }
}

/// What a TLS session agreed: the peer's certificate chain (a client's, on
/// a server that asked for one), the protocol version, the ALPN protocol,
/// and on a server the name the client asked for (SNI).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The peer's certificates, leaf first (empty when it presented none).
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// The TLS version.
    pub protocol_version: Option<rustls::ProtocolVersion>,
    /// The ALPN protocol agreed.
    pub alpn_protocol: Option<Vec<u8>>,
    /// The server name the client sent (SNI), on a server.
    pub server_name: Option<String>,
}

impl TlsInfo {
    /// From a client session.
    pub fn from_client(conn: &rustls::ClientConnection) -> Self {
        Self::from_state(conn, None)
    }

    /// From a server session.
    pub fn from_server(conn: &rustls::ServerConnection) -> Self {
        Self::from_state(conn, conn.server_name().map(str::to_owned))
    }

    /// From the state either side of a session shares, with the SNI name
    /// where the caller knows it.
    pub fn from_state(state: &rustls::CommonState, server_name: Option<String>) -> Self {
        Self {
            peer_certificates: state
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
            protocol_version: state.protocol_version(),
            alpn_protocol: state.alpn_protocol().map(<[u8]>::to_vec),
            server_name,
        }
    }
}
