//! The mutual-TLS server configuration: TLS 1.3 only, rustls with the ring provider,
//! ALPN h2, and a client-certificate verifier that requires a certificate chaining to
//! the configured client CA and honours CRLs (refusing, by default, what an expired CRL
//! covers). No session resumption: every connection presents its certificate. There is no configuration without a
//! client CA: building one without it is an error, never a fallback.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

/// Paths of the files a TLS listener needs.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Server private key, PEM.
    pub key: PathBuf,
    /// CA that client certificates must chain to, PEM. Required.
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists, PEM or DER.
    pub crls: Vec<PathBuf>,
    /// Whether a CRL past its `nextUpdate` refuses every certificate it covers.
    pub crl_expiry: CrlExpiry,
}

/// What a CRL past its `nextUpdate` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrlExpiry {
    /// An expired CRL is an error: certificates it covers are refused until a fresh
    /// CRL is loaded (the default; a stale CRL may be missing revocations).
    #[default]
    Enforce,
    /// An expired CRL is still used as it is.
    Ignore,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .field("key", &"[redacted]")
            .field("client_ca", &self.client_ca)
            .field("crls", &self.crls)
            .field("crl_expiry", &self.crl_expiry)
            .finish()
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// No client CA is configured; vaultd refuses to serve without client certificates.
    #[error(
        "no client CA configured (tls.client_ca): vaultd requires client certificates and will not start without one"
    )]
    MissingClientCa,
    /// A file could not be read or parsed.
    #[error("cannot read {what} from {}: {source}", path.display())]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A file held no usable item.
    #[error("{} does not hold {what}", path.display())]
    Empty {
        /// What was expected.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The client CA or a CRL was rejected.
    #[error("the client CA or a CRL was rejected: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// A client CA certificate was rejected.
    #[error("the client CA certificate in {} was rejected: {source}", path.display())]
    ClientCa {
        /// The client CA file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The server certificate and key were rejected (a key that is not the
    /// certificate's, say).
    #[error(
        "the server certificate {} and key {} were rejected: {}",
        cert.display(),
        key.display(),
        match source {
            rustls::Error::InconsistentKeys(_) => "the key is not the certificate's key; \
                check that tls.key is the key tls.cert was issued for".to_owned(),
            other => other.to_string(),
        }
    )]
    ServerCert {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the protocol settings.
    #[error("the TLS protocol settings were rejected: {0}")]
    Config(#[source] rustls::Error),
}

/// The certificates of a PEM file; a file with none is an error naming `what`.
pub(crate) fn certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn crl(path: &Path) -> Result<CertificateRevocationListDer<'static>, TlsError> {
    match CertificateRevocationListDer::from_pem_file(path) {
        Ok(crl) => Ok(crl),
        // Not PEM: accept DER as is; rustls parses and checks it when building.
        Err(rustls::pki_types::pem::Error::NoItemsFound) => std::fs::read(path)
            .map(CertificateRevocationListDer::from)
            .map_err(|e| TlsError::Read {
                what: "a CRL",
                path: path.to_path_buf(),
                source: rustls::pki_types::pem::Error::Io(e),
            }),
        Err(source) => Err(TlsError::Read {
            what: "a CRL",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Builds the server configuration from `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_tls(files).map(|(config, _)| config)
}

/// The server configuration and its client-certificate verifier, which can re-check
/// the certificates of connections made before a reload.
pub(crate) fn server_tls(
    files: &TlsFiles,
) -> Result<(Arc<rustls::ServerConfig>, Arc<dyn ClientCertVerifier>), TlsError> {
    let client_ca = files
        .client_ca
        .as_deref()
        .ok_or(TlsError::MissingClientCa)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(client_ca, "a client CA certificate")? {
        roots.add(ca).map_err(|source| TlsError::ClientCa {
            path: client_ca.to_path_buf(),
            source,
        })?;
    }
    let crls = files
        .crls
        .iter()
        .map(|p| crl(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls);
    if files.crl_expiry == CrlExpiry::Enforce {
        verifier = verifier.enforce_revocation_expiration();
    }
    let verifier = verifier.build().map_err(TlsError::Verifier)?;
    let chain = certs(&files.cert, "a server certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        what: "a private key",
        path: files.key.clone(),
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::clone(&verifier))
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::ServerCert {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: a resumed session skips the client certificate, so it could
    // outlive the certificate's expiry or revocation. Every connection does a full
    // handshake and presents its certificate.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok((Arc::new(config), verifier))
}

#[cfg(test)]
mod tests;
