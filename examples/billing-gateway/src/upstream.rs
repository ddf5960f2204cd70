//! Sending a request to a provider: one HTTP/1.1 connection per request, TLS for
//! https upstreams (rustls, ring, the configured CA bundle).

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::Provider;

/// Largest upstream answer relayed.
const MAX_RESPONSE: usize = 16 << 20;
/// Longest wait for a connection (and TLS handshake) to a provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for an upstream answer.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why the upstream could not be reached or answered badly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// Connecting or the TLS handshake failed (or no trust is configured): nothing
    /// was sent.
    #[error("upstream unreachable: {0}")]
    Connect(std::io::Error),
    /// The connection failed after the request may have been sent.
    #[error("upstream connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP exchange failed.
    #[error("upstream error: {0}")]
    Http(#[from] hyper::Error),
    /// The answer was too large or did not arrive in time.
    #[error("upstream answer too large or too slow")]
    Answer,
}

/// A TLS client trusting the provider's CA bundle, for https upstreams.
pub(crate) fn tls_for(
    provider: &Provider,
) -> Result<Option<Arc<rustls::ClientConfig>>, rustls::pki_types::pem::Error> {
    let Some(ca) = &provider.ca else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        let cert = cert?;
        // Bundles carry certificates rustls cannot use; skipping them is what a
        // system trust store does too.
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| rustls::pki_types::pem::Error::Io(std::io::Error::other(e)))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
) -> Result<Response<Bytes>, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE)
        .collect()
        .await
        .map_err(|_| UpstreamError::Answer)?
        .to_bytes();
    driver.abort();
    Ok(Response::from_parts(parts, body))
}

/// An open connection to a provider, on which nothing has been sent yet.
pub(crate) enum Connection {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects (and for https, handshakes) to the upstream `uri` names. Nothing is sent.
pub(crate) async fn connect(
    uri: &Uri,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Connection, UpstreamError> {
    let host = uri
        .host()
        .ok_or_else(|| {
            UpstreamError::Connect(std::io::Error::other("no host in the upstream URL"))
        })?
        .to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let work = async {
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        match (https, tls) {
            (true, Some(config)) => {
                let name = ServerName::try_from(host.clone()).map_err(std::io::Error::other)?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await?;
                Ok(Connection::Tls(Box::new(stream)))
            }
            (true, None) => Err(std::io::Error::other("no CA for an https upstream")),
            (false, _) => Ok(Connection::Plain(tcp)),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, work).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(UpstreamError::Connect(e)),
        Err(_) => Err(UpstreamError::Connect(std::io::ErrorKind::TimedOut.into())),
    }
}

impl Connection {
    /// Sends `request` (whose URI is the full upstream URL) and reads the whole answer.
    pub(crate) async fn send(
        self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Bytes>, UpstreamError> {
        let work = async {
            match self {
                Connection::Plain(tcp) => exchange(tcp, request).await,
                Connection::Tls(stream) => exchange(*stream, request).await,
            }
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| UpstreamError::Answer)?
    }
}
