//! The webhook sink: each alert POSTed as signed JSON over its own HTTP/1.1
//! connection (TLS 1.3 for https), retried with jittered exponential backoff, then
//! dropped and counted. The signature scheme is in the [module documentation](super).

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ring::hmac;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::config::{bare_host, is_https, url_problem};
use super::{Alert, AlertsError, SinkCounts, WebhookConfig};

/// The first retry waits up to this long; each further one up to twice the last.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// The shortest key accepted: HMAC-SHA256 keys shorter than its output are weaker.
const MIN_KEY: usize = 32;
/// The longest key file read: anything longer is not a key.
const MAX_KEY_FILE: u64 = 4096;

/// Why a webhook's `secret_file` was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileProblem {
    /// It could not be opened or read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// It is not a regular file.
    #[error("not a regular file")]
    NotAFile,
    /// Its group or others have permissions on it.
    #[error("mode {0:o} lets others read it; chmod 600")]
    OpenToOthers(u32),
    /// It holds nothing but whitespace.
    #[error("empty; put at least {MIN_KEY} random bytes in it, e.g. `openssl rand -hex 32`")]
    Empty,
    /// It holds fewer bytes than a safe key.
    #[error("holds {0} bytes; a key needs at least {MIN_KEY}, e.g. from `openssl rand -hex 32`")]
    TooShort(usize),
    /// It is larger than any key.
    #[error("larger than {MAX_KEY_FILE} bytes: not a key")]
    TooLong,
}

/// The HMAC key of one webhook. Not `Debug` or `Clone`: the bytes live in this one
/// zeroising buffer.
struct SigningKey(Zeroizing<Vec<u8>>);

impl SigningKey {
    /// Reads the key: the file's bytes without trailing whitespace. The file must be
    /// owner-only, like every key file vaultd reads.
    fn read(path: &Path) -> Result<Self, SecretFileProblem> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(path).map_err(SecretFileProblem::Read)?;
        // The checks are on the open file, so they hold for the bytes read.
        let meta = file.metadata().map_err(SecretFileProblem::Read)?;
        if !meta.is_file() {
            return Err(SecretFileProblem::NotAFile);
        }
        if meta.mode() & 0o077 != 0 {
            return Err(SecretFileProblem::OpenToOthers(meta.mode() & 0o777));
        }
        // Sized up front, so reading never reallocates and leaves a copy behind.
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 1));
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(SecretFileProblem::Read)?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            return Err(SecretFileProblem::TooLong);
        }
        let len = bytes.trim_ascii_end().len();
        bytes.truncate(len);
        match len {
            0 => Err(SecretFileProblem::Empty),
            short if short < MIN_KEY => Err(SecretFileProblem::TooShort(short)),
            _ => Ok(Self(bytes)),
        }
    }

    /// `sha256=<hex of HMAC-SHA256(key, "<timestamp>.<body>")>`.
    fn sign(&self, timestamp: u64, body: &[u8]) -> String {
        // ring does not wipe its key schedule, so it is built per signature, on this
        // frame: the only lasting copy of the key stays in the zeroising buffer.
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut context = hmac::Context::with_key(&key);
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        let tag = context.sign();
        let mut signature = String::from("sha256=");
        for byte in tag.as_ref() {
            // Writing to a String cannot fail.
            let _ = write!(signature, "{byte:02x}");
        }
        signature
    }
}

/// TLS towards an https webhook: its CA only, TLS 1.3.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// An opened webhook sink: its key read, its TLS built, ready to run.
pub(super) struct Webhook {
    name: String,
    /// Where to connect: the URL's host (an IPv6 literal without brackets) and port.
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    authority: HeaderValue,
    /// The request target, in origin form.
    target: PathAndQuery,
    tls: Option<Tls>,
    key: SigningKey,
    timeout: Duration,
    retries: u32,
}

impl Webhook {
    /// Checks the URL again, reads the key and the CA file and builds the TLS client.
    pub(super) fn open(config: &WebhookConfig) -> Result<Self, AlertsError> {
        let bad_url = |reason| AlertsError::Url {
            sink: config.name.clone(),
            reason,
        };
        if let Some(reason) = url_problem(&config.url) {
            return Err(bad_url(reason));
        }
        let Some(authority) = config.url.authority() else {
            return Err(bad_url("the URL names no host"));
        };
        let https = is_https(&config.url);
        let host = bare_host(authority.host()).to_owned();
        let tls = match (https, &config.ca_file) {
            (false, _) => None,
            (true, None) => {
                return Err(AlertsError::NoTrust {
                    sink: config.name.clone(),
                });
            }
            (true, Some(ca_file)) => Some(tls(&config.name, ca_file, &host)?),
        };
        let key =
            SigningKey::read(&config.secret_file).map_err(|problem| AlertsError::SecretFile {
                sink: config.name.clone(),
                path: config.secret_file.clone(),
                problem,
            })?;
        Ok(Self {
            name: config.name.clone(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|_| bad_url("the host cannot be sent in a Host header"))?,
            target: config
                .url
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            tls,
            key,
            timeout: config.timeout,
            retries: config.retries,
        })
    }

    /// Delivers queued alerts, one at a time, until every sender is gone.
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Arc<Alert>>, counts: Arc<SinkCounts>) {
        while let Some(alert) = queue.recv().await {
            let body = match serde_json::to_vec(&*alert) {
                Ok(body) => Bytes::from(body),
                Err(e) => {
                    counts.count_dropped();
                    tracing::warn!(sink = %self.name, kind = %alert.kind, "alert dropped: {e}");
                    continue;
                }
            };
            match self.deliver(&body).await {
                Ok(()) => counts.count_delivered(),
                Err(failure) => {
                    counts.count_dropped();
                    tracing::warn!(
                        sink = %self.name,
                        kind = %alert.kind,
                        attempts = u64::from(self.retries) + 1,
                        "alert dropped; the last attempt: {failure}"
                    );
                }
            }
        }
    }

    /// Posts `body` until an attempt succeeds or the retries are spent.
    async fn deliver(&self, body: &Bytes) -> Result<(), Failure> {
        let mut retry = 0;
        loop {
            let failure = match tokio::time::timeout(self.timeout, self.attempt(body)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(failure)) => failure,
                Err(_) => Failure::TimedOut(self.timeout),
            };
            if retry >= self.retries {
                return Err(failure);
            }
            tracing::debug!(sink = %self.name, retry, "alert delivery failed, will retry: {failure}");
            tokio::time::sleep(backoff(retry)).await;
            retry += 1;
        }
    }

    /// One attempt on a new connection, signed now.
    async fn attempt(&self, body: &Bytes) -> Result<(), Failure> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let request = Request::post(http::Uri::from(self.target.clone()))
            .header(HOST, self.authority.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, "vaultd")
            .header("x-vaultd-timestamp", timestamp)
            .header("x-vaultd-signature", self.key.sign(timestamp, body))
            .body(Full::new(body.clone()))
            // Every part was validated when the sink opened.
            .expect("a request from a checked URL and fixed headers is valid");
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(Failure::Connect)?;
        tcp.set_nodelay(true).map_err(Failure::Connect)?;
        let status = match &self.tls {
            None => exchange(tcp, request).await?,
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(Failure::Tls)?;
                exchange(stream, request).await?
            }
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status))
        }
    }
}

/// Sends `request` and returns the answer's status; the body is never read. The
/// connection is driven here, not in a task of its own, so an attempt dropped by its
/// timeout takes its connection with it.
async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<StatusCode, Failure>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Failure::Http)?;
    let answer = sender.send_request(request);
    tokio::pin!(answer, connection);
    tokio::select! {
        biased;
        answer = &mut answer => return answer.map(|a| a.status()).map_err(Failure::Http),
        _ = &mut connection => {}
    }
    // The connection ended first; it handed over the answer before, or there is none.
    answer.await.map(|a| a.status()).map_err(Failure::Http)
}

/// A TLS client trusting `ca_file` alone, for `host`.
fn tls(sink: &str, ca_file: &Path, host: &str) -> Result<Tls, AlertsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        crate::tls::certs(ca_file, "a CA certificate").map_err(|source| AlertsError::CaFile {
            sink: sink.to_owned(),
            source: Box::new(source),
        })?;
    for cert in certs {
        roots.add(cert).map_err(|source| AlertsError::CaRejected {
            sink: sink.to_owned(),
            path: ca_file.to_path_buf(),
            source,
        })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("the ring provider supports TLS 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = ServerName::try_from(host.to_owned()).map_err(|_| AlertsError::Url {
        sink: sink.to_owned(),
        reason: "the host is neither a DNS name nor an IP address, so TLS cannot check it",
    })?;
    Ok(Tls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// How long to wait before retry number `retry` (from 0): see [`crate::retry::jittered`].
pub(super) fn backoff(retry: u32) -> Duration {
    crate::retry::jittered(retry, BACKOFF_BASE, BACKOFF_CAP)
}
