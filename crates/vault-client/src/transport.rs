//! Connections to vaultd: mutual TLS 1.3 (rustls, ring) with certificates read from
//! files and re-read when they change, or the daemon's local Unix socket. There is no
//! way to turn certificate verification off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};
use vault_proto::identity::{IdentitySource, identity_of};
use x509_parser::error::X509Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, FileError};

/// Where a daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `https://host:port`, verified as `host`.
    Tls { host: String, port: u16 },
    /// `unix:/path`: the local socket (status, unseal and seal only).
    Unix(PathBuf),
}

impl Target {
    pub(crate) fn parse(text: &str) -> Result<Self, Error> {
        let bad = || Error::Endpoint(text.to_owned());
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let rest = text.strip_prefix("https://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() || ServerName::try_from(host.to_owned()).is_err() {
            return Err(bad());
        }
        Ok(Target::Tls {
            host: host.to_owned(),
            port,
        })
    }
}

/// The client's certificate files and the TLS configuration built from them.
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

struct Loaded {
    config: Arc<rustls::ClientConfig>,
    identity: String,
    stamps: [Option<SystemTime>; 3],
}

/// A TLS configuration that follows its files.
pub(crate) struct TlsSource {
    files: TlsFiles,
    loaded: Mutex<Loaded>,
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn bad(path: &Path, what: &'static str, reason: FileError) -> Error {
    Error::BadFile {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

fn stamp(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl TlsFiles {
    fn stamps(&self) -> [Option<SystemTime>; 3] {
        [stamp(&self.ca), stamp(&self.cert), stamp(&self.key)]
    }

    fn load(&self) -> Result<Loaded, Error> {
        const CA: &str = "the CA certificate";
        const CERT: &str = "the client certificate";
        const KEY: &str = "the client key";
        let stamps = self.stamps();
        let ca_pem = read(&self.ca, CA)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
            let cert = cert.map_err(|e| bad(&self.ca, CA, FileError::Pem(e)))?;
            roots
                .add(cert)
                .map_err(|e| bad(&self.ca, CA, FileError::Rejected(e)))?;
        }
        if roots.is_empty() {
            return Err(bad(&self.ca, CA, FileError::NoCertificate));
        }
        let cert_pem = read(&self.cert, CERT)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&self.cert, CERT, FileError::Pem(e)))?;
        let leaf = chain
            .first()
            .ok_or_else(|| bad(&self.cert, CERT, FileError::NoCertificate))?;
        check_validity(leaf).map_err(|reason| bad(&self.cert, CERT, reason))?;
        // The daemon's own rules; which SANs it accepts is its configuration, so a
        // DNS identity is allowed here and refused there if it is not configured to.
        let identity = identity_of(leaf, IdentitySource::SpiffeOrDns)
            .map_err(|e| bad(&self.cert, CERT, FileError::Identity(e)))?;
        let key_pem = zeroize::Zeroizing::new(read(&self.key, KEY)?);
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| bad(&self.key, KEY, FileError::Pem(e)))?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&self.cert, CERT, FileError::Rejected(e)))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(&self.key, KEY, FileError::KeyMismatch(e)))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Loaded {
            config: Arc::new(config),
            identity,
            stamps,
        })
    }
}

/// Says so early when the certificate is expired or not yet valid, instead of the
/// handshake failing with a bare alert. Read on the system clock, not the client's
/// [`vault_crypto::clock::Clock`]: this forecasts what vaultd's verification will
/// decide, and vaultd verifies on real time.
fn check_validity(leaf: &CertificateDer<'_>) -> Result<(), FileError> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| {
        FileError::Unparsable(match e {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
            x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
        })
    })?;
    let now = SystemTime::now();
    let validity = cert.validity();
    let not_after = time_of(validity.not_after.timestamp());
    if now > not_after {
        return Err(FileError::Expired { not_after });
    }
    let not_before = time_of(validity.not_before.timestamp());
    if now < not_before {
        return Err(FileError::NotYetValid { not_before });
    }
    Ok(())
}

/// Unix seconds as a time (times before 1970 included).
fn time_of(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    match unix_seconds >= 0 {
        true => SystemTime::UNIX_EPOCH.checked_add(magnitude),
        false => SystemTime::UNIX_EPOCH.checked_sub(magnitude),
    }
    .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl TlsSource {
    pub(crate) fn load(files: TlsFiles) -> Result<Self, Error> {
        let loaded = files.load()?;
        Ok(Self {
            files,
            loaded: Mutex::new(loaded),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration for a new connection.
    pub(crate) fn config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.lock().config)
    }

    pub(crate) fn identity(&self) -> String {
        self.lock().identity.clone()
    }

    /// Re-reads the files if any changed. `Ok(true)` if the configuration changed; on
    /// error the previous configuration stays.
    pub(crate) fn refresh(&self) -> Result<bool, Error> {
        let stamps = self.files.stamps();
        if stamps == self.lock().stamps {
            return Ok(false);
        }
        let loaded = self.files.load()?;
        *self.lock() = loaded;
        Ok(true)
    }
}

/// A lazily connected channel to `target`.
pub(crate) fn channel(
    target: &Target,
    tls: Option<&Arc<TlsSource>>,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<Channel, Error> {
    let endpoint = Endpoint::from_static("http://vaultd")
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .tcp_nodelay(true);
    match target {
        Target::Tls { host, port } => {
            let tls = Arc::clone(tls.ok_or(Error::Config(
                "an https endpoint needs the CA, client certificate and key",
            ))?);
            let (host, port) = (host.clone(), *port);
            Ok(
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                    let (tls, host) = (Arc::clone(&tls), host.clone());
                    async move {
                        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                        tcp.set_nodelay(true)?;
                        let name = ServerName::try_from(host).map_err(std::io::Error::other)?;
                        let connector = tokio_rustls::TlsConnector::from(tls.config());
                        let stream = connector.connect(name, tcp).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                })),
            )
        }
        Target::Unix(path) => {
            let path = path.clone();
            Ok(
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                })),
            )
        }
    }
}

/// The identity vaultd gives a caller on its local socket.
pub(crate) fn local_identity() -> String {
    vault_proto::identity::local(rustix::process::getuid().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_or_say_what_is_accepted() {
        assert_eq!(
            Target::parse("https://127.0.0.1:8200").unwrap(),
            Target::Tls {
                host: "127.0.0.1".into(),
                port: 8200
            }
        );
        assert_eq!(
            Target::parse("https://vault.internal:8200/").unwrap(),
            Target::Tls {
                host: "vault.internal".into(),
                port: 8200
            }
        );
        assert_eq!(
            Target::parse("unix:/run/vaultd.sock").unwrap(),
            Target::Unix("/run/vaultd.sock".into())
        );
        for bad in [
            "http://x:1",
            "https://x",
            "https://:1",
            "https://x:port",
            "unix:",
            "x",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(Error::Endpoint(_))),
                "{bad}"
            );
        }
    }
}
