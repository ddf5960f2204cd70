//! Building a [`Client`]: endpoints, certificate files and settings, checked and
//! loaded at once; the background tasks a client runs are started here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vault_crypto::clock::SharedClock;

use crate::apikey_cache::KeyCache;
use crate::cache::Cache;
use crate::client::{self, Client, Inner};
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::lease;
use crate::options::Options;
use crate::transport::{Target, TlsFiles, TlsSource};

/// Builds a [`Client`]. There is no option to skip certificate verification.
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    options: Options,
}

impl Client {
    /// Starts a builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}

impl ClientBuilder {
    /// Adds an endpoint: `https://host:port`, or `unix:/path/to/vaultd.sock` for the
    /// daemon's local socket (status, unseal and seal only). With several, the client
    /// uses the first and fails over to the next when one is unreachable or sealed.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// The CA certificate (PEM) that vaultd's server certificate must chain to.
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// The client certificate (PEM) and its key (PEM). Both, and the CA, are re-read
    /// when the files change, so rotated certificates are picked up without a restart.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// How long to wait for a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// How long to wait for any one answer (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.options.request_timeout = timeout;
        self
    }

    /// The lease lifetime to ask for (default 60 s; vaultd caps it at the grant's
    /// `max_ttl`). Cached values are used until shortly before it ends.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.options.lease_ttl = ttl;
        self
    }

    /// Attempts per call when vaultd is unavailable (default 4, with exponential
    /// backoff from 50 ms); never retried: refusals, and calls that change state.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.options.max_attempts = attempts.max(1);
        self
    }

    /// Renews cached leases before they end, up to what their grant allows, instead
    /// of leasing again on the next use (default off).
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.options.auto_renew = on;
        self
    }

    /// Whether to follow `WatchRevocations` (default on). Without it nothing is ever
    /// served from the cache, since a revocation could not be noticed: for one-shot
    /// tools such as `vaultctl`, which would otherwise open a stream per run.
    pub fn revocation_watch(mut self, on: bool) -> Self {
        self.options.watch = on;
        self
    }

    /// The most API-key verifications [`Client::verify_api_key`] keeps for reuse
    /// (default 10,000; 0 turns the cache off). Nothing is cached without the
    /// revocation watch.
    pub fn api_key_cache(mut self, capacity: usize) -> Self {
        self.options.api_key_cache = capacity;
        self
    }

    /// How often the certificate files are checked for changes (default 5 s).
    pub fn reload_interval(mut self, every: Duration) -> Self {
        self.options.reload_interval = every;
        self
    }

    /// The clock lease expiries, cache freshness, renewals and session expiries are
    /// read on (default: the system's). For tests and simulations: with a
    /// [`vault_crypto::clock::ManualClock`], moving it forward makes cached values go
    /// stale and leases fall due for renewal without waiting. Only this client's
    /// reckoning moves: vaultd keeps its own time, and connection timeouts, retry
    /// backoff and certificate validity stay on real time.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.options.clock = clock;
        self
    }

    /// Reads the certificates and builds the client. Connections are made on first
    /// use. Must be called within a Tokio runtime (the client runs background tasks:
    /// revocation watches, certificate reloads, renewals).
    pub fn build(self) -> Result<Client, Error> {
        let targets = self
            .endpoints
            .iter()
            .map(|e| Target::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(Error::Config("no endpoint: add one with .endpoint(...)"));
        }
        let needs_tls = targets.iter().any(|t| matches!(t, Target::Tls { .. }));
        let tls = match (
            needs_tls,
            self.ca.clone(),
            self.cert.clone(),
            self.key.clone(),
        ) {
            (false, ..) => None,
            (true, Some(ca), Some(cert), Some(key)) => {
                Some(Arc::new(TlsSource::load(TlsFiles { ca, cert, key })?))
            }
            (true, None, ..) => {
                return Err(Error::Config(
                    "an https endpoint needs the CA certificate: .ca_cert(path)",
                ));
            }
            (true, ..) => {
                return Err(Error::Config(
                    "an https endpoint needs a client certificate and key: .client_cert(cert, key)",
                ));
            }
        };
        let clock = Arc::clone(&self.options.clock);
        // Without a watch a revocation could not be noticed: nothing is cached, so no
        // key is generated for the cache either.
        let capacity = match self.options.watch {
            true => self.options.api_key_cache,
            false => 0,
        };
        let api_keys =
            KeyCache::new(Arc::clone(&clock), capacity).map_err(|source| Error::LocalCrypto {
                doing: "generate the key that names its cached API-key verifications",
                source,
            })?;
        let endpoints = Endpoints::new(self.endpoints, targets, tls, self.options)?;
        let inner = Arc::new(Inner::new(endpoints, Cache::new(clock), api_keys));
        start_background(&inner);
        Ok(Client { inner })
    }
}

/// Starts what a client runs besides its calls: certificate reloads, a revocation
/// watch per TLS endpoint, renewals. Each holds the client weakly and ends with it.
fn start_background(inner: &Arc<Inner>) {
    let options = &inner.endpoints.options;
    let mut tasks = Vec::new();
    if inner.endpoints.has_tls() {
        tasks.push(tokio::spawn(client::reload_certificates(Arc::downgrade(
            inner,
        ))));
    }
    for (i, node) in inner.endpoints.nodes.iter().enumerate() {
        if options.watch && matches!(node.target, Target::Tls { .. }) {
            tasks.push(tokio::spawn(lease::watch_revocations(
                Arc::downgrade(inner),
                i,
            )));
        }
    }
    if options.auto_renew {
        tasks.push(tokio::spawn(lease::auto_renew(Arc::downgrade(inner))));
    }
    inner.adopt(tasks);
}
