//! Mutual TLS on the sync link (rustls with the `ring` provider).
//!
//! Both directions check the same two things: the peer's certificate chains to the
//! configured CA, and it is valid for the configured `peer_name` (a DNS subject alternative
//! name). The server side does it during the handshake with [`PeerNameVerifier`] (rustls'
//! WebPKI client verifier plus the name check), so a peer without a certificate, with one
//! from another CA or for another name never reaches the gRPC services; the accept loop
//! logs the refusal with the remote address and rustls' reason.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls_pki_types::pem::PemObject;

use crate::config::TlsSection;

/// Why the TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{what} {path}: {message}")]
    Pem {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("{0}")]
    Rustls(String),
}

/// The loaded PEM files of `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The CA file's text.
    pub ca_pem: Vec<u8>,
    /// This director's certificate chain, text.
    pub cert_pem: Vec<u8>,
    /// This director's key, text.
    pub key_pem: Vec<u8>,
    /// The name the peer's certificate must be valid for.
    pub peer_name: String,
    roots: Arc<RootCertStore>,
    certs: Vec<CertificateDer<'static>>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn pem_err(what: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Pem {
        what,
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The certificates of a PEM text (at least one).
fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in the file".into());
    }
    Ok(certs)
}

/// A root store of the CA certificates of a PEM text (the sync link's `[tls] ca`, an https
/// check's `ca_file`).
pub(crate) fn pem_roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in pem_certs(pem)? {
        roots
            .add(c)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

fn certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem_certs(pem).map_err(|m| pem_err(what, path, m))
}

/// The crypto provider: ring (the build carries no other).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// Reads and checks the files of `[tls]`: PEM syntax, at least one certificate in each
    /// certificate file, a private key that matches nothing in particular yet (rustls checks
    /// the pair when the configs are built, which [`TlsMaterial::load`] does too).
    pub fn load(cfg: &TlsSection) -> Result<TlsMaterial, TlsError> {
        let ca_pem = read("tls.ca", &cfg.ca)?;
        let cert_pem = read("tls.cert", &cfg.cert)?;
        let key_pem = read("tls.key", &cfg.key)?;
        let roots = pem_roots(&ca_pem).map_err(|m| pem_err("tls.ca", &cfg.ca, m))?;
        let certs = certs("tls.cert", &cfg.cert, &cert_pem)?;
        PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_err("tls.key", &cfg.key, format!("no usable private key: {e}")))?;
        let m = TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            peer_name: cfg.peer_name.clone(),
            roots: Arc::new(roots),
            certs,
        };
        // Build both sides once, so that a key that does not match the certificate is a
        // startup (and `--check`) error, not a connection error.
        m.server_config()?;
        m.client_config()?;
        Ok(m)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| TlsError::Rustls(format!("tls.key: {e}")))
    }

    /// The server side: requires a client certificate chaining to the CA and valid for
    /// `peer_name`; ALPN h2 (gRPC).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Rustls(format!("tls.ca: {e}")))?;
        let name = ServerName::try_from(self.peer_name.clone())
            .map_err(|e| TlsError::Rustls(format!("tls.peer_name: {e}")))?;
        let verifier = Arc::new(PeerNameVerifier { inner, name });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key()?)
            .map_err(|e| TlsError::Rustls(format!("tls.cert/tls.key: {e}")))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The client side as rustls would build it (checked at load; the link itself uses
    /// tonic's [`TlsMaterial::tonic_client`] with the same material).
    fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.certs.clone(), self.key()?)
            .map_err(|e| TlsError::Rustls(format!("tls.cert/tls.key: {e}")))
    }

    /// tonic's client TLS: the CA as the only root, our certificate, and the peer's name.
    pub fn tonic_client(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .domain_name(self.peer_name.clone())
    }
}

/// rustls' WebPKI client-certificate verifier, plus: the certificate must be valid for the
/// configured peer name.
#[derive(Debug)]
pub struct PeerNameVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    name: ServerName<'static>,
}

impl ClientCertVerifier for PeerNameVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        cert.verify_is_valid_for_subject_name(&self.name)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
