//! The client: its builder, its endpoints (nodes), lease sessions per node, and the
//! one retry loop every call goes through.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tonic::transport::Channel;
use vault_crypto::session::{SessionKey, SessionOffer, Transcript};
use vault_proto::v1::OpenSessionRequest;
use vault_proto::v1::broker_client::BrokerClient;

use crate::error::{Disposition, Error, classify};
use crate::lease::Cache;
use crate::transport::{Target, TlsFiles, TlsSource, channel, local_identity};

/// Builds a [`Client`]. There is no option to skip certificate verification.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    connect_timeout: Duration,
    request_timeout: Duration,
    lease_ttl: Duration,
    max_attempts: u32,
    auto_renew: bool,
    reload_interval: Duration,
    watch: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            ca: None,
            cert: None,
            key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(60),
            max_attempts: 4,
            auto_renew: false,
            reload_interval: Duration::from_secs(5),
            watch: true,
        }
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
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for any one answer (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The lease lifetime to ask for (default 60 s; vaultd caps it at the grant's
    /// `max_ttl`). Cached values are used until shortly before it ends.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Attempts per call when vaultd is unavailable (default 4, with exponential
    /// backoff from 50 ms); never retried: refusals, and calls that change state.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Renews cached leases before they end, up to what their grant allows, instead
    /// of leasing again on the next use (default off).
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.auto_renew = on;
        self
    }

    /// Whether to follow `WatchRevocations` (default on). Without it nothing is ever
    /// served from the cache, since a revocation could not be noticed: for one-shot
    /// tools such as `vaultctl`, which would otherwise open a stream per run.
    pub fn revocation_watch(mut self, on: bool) -> Self {
        self.watch = on;
        self
    }

    /// How often the certificate files are checked for changes (default 5 s).
    pub fn reload_interval(mut self, every: Duration) -> Self {
        self.reload_interval = every;
        self
    }

    pub(crate) fn lease_ttl_seconds(&self) -> u32 {
        u32::try_from(self.lease_ttl.as_secs()).unwrap_or(u32::MAX)
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
        let nodes = targets
            .into_iter()
            .map(|target| {
                let channel = channel(
                    &target,
                    tls.as_ref(),
                    self.connect_timeout,
                    self.request_timeout,
                )?;
                Ok(Node {
                    target,
                    channel: RwLock::new(channel),
                    session: tokio::sync::Mutex::new(None),
                    watch_epoch: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let inner = Arc::new(Inner {
            nodes,
            current: AtomicUsize::new(0),
            tls,
            cache: Cache::default(),
            options: self,
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        inner.start_background();
        Ok(Client { inner })
    }
}

/// A connection to vaultd, shared by every task of a service: clone it freely (clones
/// share connections, sessions and the lease cache).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.options.endpoints)
            .field("identity", &self.inner.identity(0))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The identity vaultd sees for this client on its current endpoint.
    pub fn identity(&self) -> String {
        self.inner
            .identity(self.inner.current.load(Ordering::Relaxed))
    }
}

/// One endpoint and what the client holds for it.
pub(crate) struct Node {
    pub(crate) target: Target,
    channel: RwLock<Channel>,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// Non-zero while a revocation watch is connected; changes on every reconnect.
    pub(crate) watch_epoch: AtomicU64,
}

impl Node {
    pub(crate) fn channel(&self) -> Channel {
        self.channel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A lease session: the key secrets to and from this client are sealed with.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) key: SessionKey,
    expires: SystemTime,
}

/// Sessions are reopened this long before they expire.
const SESSION_MARGIN: Duration = Duration::from_secs(60);

/// What one attempt of a call has to work with.
pub(crate) struct Attempt {
    pub(crate) node: usize,
    pub(crate) channel: Channel,
    session: Option<Arc<Session>>,
}

impl Attempt {
    pub(crate) fn session(&self) -> Result<&Session, Failure> {
        self.session
            .as_deref()
            .ok_or(Failure::Local(Error::Protocol("no session was opened")))
    }
}

/// How an attempt failed: vaultd's answer, or something local that retrying won't fix.
pub(crate) enum Failure {
    Status(tonic::Status),
    Local(Error),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Failure::Status(status)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Local(error)
    }
}

/// Whether a call may be sent again after vaultd was unavailable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and leases: yes, on this endpoint or the next.
    Idempotent,
    /// Calls that change state: no (the first may have taken effect).
    Once,
}

pub(crate) struct Inner {
    pub(crate) nodes: Vec<Node>,
    current: AtomicUsize,
    tls: Option<Arc<TlsSource>>,
    pub(crate) cache: Cache,
    pub(crate) options: ClientBuilder,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            task.abort();
        }
    }
}

impl Inner {
    pub(crate) fn identity(&self, node: usize) -> String {
        match (self.nodes.get(node).map(|n| &n.target), &self.tls) {
            (Some(Target::Tls { .. }), Some(tls)) => tls.identity(),
            _ => local_identity(),
        }
    }

    pub(crate) fn options(&self) -> &ClientBuilder {
        &self.options
    }

    fn start_background(self: &Arc<Self>) {
        let mut tasks = Vec::new();
        if self.tls.is_some() {
            tasks.push(tokio::spawn(reload_certificates(Arc::downgrade(self))));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if self.options.watch && matches!(node.target, Target::Tls { .. }) {
                tasks.push(tokio::spawn(crate::lease::watch_revocations(
                    Arc::downgrade(self),
                    i,
                )));
            }
        }
        if self.options.auto_renew {
            tasks.push(tokio::spawn(crate::lease::auto_renew(Arc::downgrade(self))));
        }
        *self.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
    }

    /// The node's session, opened (or reopened near expiry) as needed.
    async fn session(&self, node: usize) -> Result<Arc<Session>, tonic::Status> {
        let n = self
            .nodes
            .get(node)
            .ok_or_else(|| tonic::Status::internal("no such endpoint"))?;
        let mut slot = n.session.lock().await;
        if let Some(session) = slot.as_ref()
            && session
                .expires
                .duration_since(SystemTime::now())
                .is_ok_and(|left| left > SESSION_MARGIN)
        {
            return Ok(Arc::clone(session));
        }
        let session = Arc::new(open_session(n.channel(), &self.identity(node)).await?);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    async fn forget_session(&self, node: usize) {
        if let Some(n) = self.nodes.get(node) {
            *n.session.lock().await = None;
        }
    }

    /// Runs `call` against the current endpoint, with a session if `with_session`,
    /// retrying and failing over as `retry` allows. Refusals are final at once.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        retry: Retry,
        with_session: bool,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.call_on(None, retry, with_session, call).await
    }

    /// As [`Inner::call`], on endpoint `pinned` only if given: a lease lives only in
    /// the memory of the node that issued it, so renewing or revoking it elsewhere
    /// would miss it.
    pub(crate) async fn call_on<T, F, Fut>(
        &self,
        pinned: Option<usize>,
        retry: Retry,
        with_session: bool,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut backoff = Duration::from_millis(50);
        let mut renewed_session = false;
        let mut last = Error::Config("no attempt was made");
        let nodes = if pinned.is_some() {
            1
        } else {
            self.nodes.len()
        };
        let attempts = self.options.max_attempts * u32::try_from(nodes).unwrap_or(1);
        for _ in 0..attempts {
            let node = pinned
                .unwrap_or_else(|| self.current.load(Ordering::Relaxed) % self.nodes.len().max(1));
            let channel = match self.nodes.get(node) {
                Some(n) => n.channel(),
                None => return Err(Error::Config("no endpoint")),
            };
            let outcome = match with_session {
                true => match self.session(node).await {
                    Ok(session) => {
                        call(Attempt {
                            node,
                            channel,
                            session: Some(session),
                        })
                        .await
                    }
                    Err(status) => Err(Failure::Status(status)),
                },
                false => {
                    call(Attempt {
                        node,
                        channel,
                        session: None,
                    })
                    .await
                }
            };
            let status = match outcome {
                Ok(value) => return Ok(value),
                Err(Failure::Local(error)) => return Err(error),
                Err(Failure::Status(status)) => status,
            };
            match classify(status) {
                Disposition::Final(error) => return Err(error),
                Disposition::NewSession(error) if !renewed_session => {
                    // The daemon restarted or sealed: its sessions are gone.
                    renewed_session = true;
                    self.forget_session(node).await;
                    last = error;
                }
                Disposition::NewSession(error) => return Err(error),
                Disposition::Sealed(error) => {
                    if nodes == 1 {
                        return Err(error);
                    }
                    self.fail_over(node);
                    last = error;
                }
                Disposition::Retry(error) => {
                    if retry == Retry::Once {
                        return Err(error);
                    }
                    self.fail_over(node);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    last = error;
                }
            }
        }
        Err(last)
    }

    /// Moves on from `node` to the next endpoint, if nobody already has.
    fn fail_over(&self, node: usize) {
        let next = (node + 1) % self.nodes.len().max(1);
        let _ = self
            .current
            .compare_exchange(node, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Opens a lease session on `channel` as `identity`.
async fn open_session(channel: Channel, identity: &str) -> Result<Session, tonic::Status> {
    let offer = SessionOffer::generate()
        .map_err(|_| tonic::Status::internal("cannot generate an ephemeral key"))?;
    let client_public = *offer.public_key();
    let response = BrokerClient::new(channel)
        .open_session(OpenSessionRequest {
            client_public_key: client_public.to_vec(),
        })
        .await?
        .into_inner();
    let server_public: [u8; 32] = response
        .server_public_key
        .as_slice()
        .try_into()
        .map_err(|_| tonic::Status::internal("vaultd sent a malformed session key"))?;
    let key = offer
        .agree(
            &server_public,
            &Transcript {
                client_public: &client_public,
                server_public: &server_public,
                identity,
                session_id: &response.session_id,
            },
        )
        .map_err(|_| tonic::Status::internal("the session key exchange failed"))?;
    Ok(Session {
        id: response.session_id,
        key,
        expires: unix_ms_to_time(response.expires_unix_ms),
    })
}

pub(crate) fn unix_ms_to_time(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Re-reads the certificate files when they change; new connections use the new
/// certificates, and each endpoint's connection is replaced so they take effect.
async fn reload_certificates(inner: Weak<Inner>) {
    loop {
        let every = match inner.upgrade() {
            Some(inner) => inner.options.reload_interval,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let Some(tls) = &inner.tls else { return };
        // A bad file keeps the previous certificates; the next check tries again.
        if !matches!(tls.refresh(), Ok(true)) {
            continue;
        }
        for node in &inner.nodes {
            let fresh = channel(
                &node.target,
                Some(tls),
                inner.options.connect_timeout,
                inner.options.request_timeout,
            );
            if let Ok(fresh) = fresh {
                *node.channel.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
            *node.session.lock().await = None;
        }
    }
}
