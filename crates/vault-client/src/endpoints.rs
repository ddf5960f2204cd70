//! The endpoints a client talks to: a connection and a lease session per endpoint,
//! failover between them, and the one retry loop every call goes through.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::transport::Channel;

use crate::error::{Disposition, Error, Failure, classify, handshake_failure};
use crate::options::Options;
use crate::session::{self, Session};
use crate::transport::{Target, TlsSource, channel, local_identity};

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

/// What one attempt of a call has to work with: the endpoint, its connection, and
/// (for calls that seal or open secrets) its lease session.
pub(crate) struct Attempt<S = ()> {
    pub(crate) node: usize,
    pub(crate) channel: Channel,
    pub(crate) session: S,
}

/// An attempt of a call that seals or opens secrets: its session is always there.
pub(crate) type SessionAttempt = Attempt<Arc<Session>>;

/// Whether a call may be sent again after vaultd was unavailable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and leases: yes, on this endpoint or the next.
    Idempotent,
    /// Calls that change state: no (the first may have taken effect).
    Once,
}

/// Every endpoint of a client, the one in use, and the certificates they share.
pub(crate) struct Endpoints {
    /// As configured, for `Debug`.
    pub(crate) names: Vec<String>,
    pub(crate) nodes: Vec<Node>,
    current: AtomicUsize,
    tls: Option<Arc<TlsSource>>,
    pub(crate) options: Options,
}

impl Endpoints {
    /// Lazily connected channels to `targets`.
    pub(crate) fn new(
        names: Vec<String>,
        targets: Vec<Target>,
        tls: Option<Arc<TlsSource>>,
        options: Options,
    ) -> Result<Self, Error> {
        let nodes = targets
            .into_iter()
            .map(|target| {
                let channel = channel(
                    &target,
                    tls.as_ref(),
                    options.connect_timeout,
                    options.request_timeout,
                )?;
                Ok(Node {
                    target,
                    channel: RwLock::new(channel),
                    session: tokio::sync::Mutex::new(None),
                    watch_epoch: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            names,
            nodes,
            current: AtomicUsize::new(0),
            tls,
            options,
        })
    }

    /// Whether any endpoint uses mutual TLS (so there are certificates to reload).
    pub(crate) fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The identity vaultd sees for this client on endpoint `node`.
    pub(crate) fn identity(&self, node: usize) -> String {
        match (self.nodes.get(node).map(|n| &n.target), &self.tls) {
            (Some(Target::Tls { .. }), Some(tls)) => tls.identity(),
            _ => local_identity(),
        }
    }

    /// The identity vaultd sees for this client on the endpoint in use.
    pub(crate) fn current_identity(&self) -> String {
        self.identity(self.current.load(Ordering::Relaxed))
    }

    /// The epoch of endpoint `node`'s revocation watch (0: not connected).
    pub(crate) fn watch_epoch(&self, node: usize) -> u64 {
        self.nodes
            .get(node)
            .map_or(0, |n| n.watch_epoch.load(Ordering::Acquire))
    }

    /// The node's session, opened (or reopened near expiry, on the client's clock) as
    /// needed.
    async fn session(&self, node: usize) -> Result<Arc<Session>, Failure> {
        let n = self
            .nodes
            .get(node)
            .ok_or(Failure::Local(Error::Config("no such endpoint")))?;
        let mut slot = n.session.lock().await;
        if let Some(session) = slot.as_ref()
            && session.usable_at(self.options.clock.now())
        {
            return Ok(Arc::clone(session));
        }
        let session = Arc::new(session::open(n.channel(), &self.identity(node)).await?);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    async fn forget_session(&self, node: usize) {
        if let Some(n) = self.nodes.get(node) {
            *n.session.lock().await = None;
        }
    }

    /// Runs `call` against the current endpoint, retrying and failing over as `retry`
    /// allows. Refusals are final at once.
    pub(crate) async fn call<T, F, Fut>(&self, retry: Retry, call: F) -> Result<T, Error>
    where
        F: Fn(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.run(None, retry, no_session, call).await
    }

    /// As [`Endpoints::call`], on endpoint `pinned` only if given: a lease lives only
    /// in the memory of the node that issued it, so renewing or revoking it elsewhere
    /// would miss it.
    pub(crate) async fn call_on<T, F, Fut>(
        &self,
        pinned: Option<usize>,
        retry: Retry,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.run(pinned, retry, no_session, call).await
    }

    /// As [`Endpoints::call`], with the endpoint's lease session (opened first if need
    /// be, and reopened once if vaultd no longer knows it).
    pub(crate) async fn call_with_session<T, F, Fut>(
        &self,
        retry: Retry,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(SessionAttempt) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.run(None, retry, |node| self.session(node), call).await
    }

    /// The retry loop: `prepare` gets what an attempt on a node needs beyond its
    /// channel (a session, or nothing), then `call` makes the attempt.
    async fn run<S, P, PFut, T, F, Fut>(
        &self,
        pinned: Option<usize>,
        retry: Retry,
        prepare: P,
        call: F,
    ) -> Result<T, Error>
    where
        P: Fn(usize) -> PFut,
        PFut: Future<Output = Result<S, Failure>>,
        F: Fn(Attempt<S>) -> Fut,
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
            let outcome = match prepare(node).await {
                Ok(session) => {
                    call(Attempt {
                        node,
                        channel,
                        session,
                    })
                    .await
                }
                Err(failure) => Err(failure),
            };
            let status = match outcome {
                Ok(value) => return Ok(value),
                Err(Failure::Local(error)) => return Err(error),
                Err(Failure::Status(status)) => status,
            };
            if let Some(refused) = self.diagnose(node, &status).await {
                return Err(refused);
            }
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

    /// Why a call on `node` broke below gRPC, if it was a TLS refusal.
    ///
    /// vaultd refuses a client certificate with a TLS alert that, in TLS 1.3, arrives
    /// after this side considers the handshake done. The HTTP/2 connection then fails
    /// with a bare "connection closed" or "broken pipe", and the alert is lost. So when
    /// a call on a TLS endpoint fails that way, one more handshake, which only reads,
    /// learns what vaultd says. It costs a connection only when a call has already
    /// failed; a refusal it finds is final (retrying would be refused again).
    async fn diagnose(&self, node: usize, status: &tonic::Status) -> Option<Error> {
        if !crate::error::broke_below_grpc(status) {
            return None;
        }
        let (Some(Target::Tls { host, port }), Some(tls)) =
            (self.nodes.get(node).map(|n| &n.target), &self.tls)
        else {
            return None;
        };
        let probe = probe_handshake(host, *port, tls.config());
        tokio::time::timeout(self.options.connect_timeout, probe)
            .await
            .ok()
            .flatten()
    }

    /// Moves on from `node` to the next endpoint, if nobody already has.
    fn fail_over(&self, node: usize) {
        let next = (node + 1) % self.nodes.len().max(1);
        let _ = self
            .current
            .compare_exchange(node, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Re-reads the certificate files if they changed; if they did, replaces every
    /// endpoint's connection and drops its session (bound to the old identity), and
    /// says so. A bad file keeps the previous certificates.
    pub(crate) async fn reload_certificates(&self) -> bool {
        let Some(tls) = &self.tls else { return false };
        if !matches!(tls.refresh(), Ok(true)) {
            return false;
        }
        for node in &self.nodes {
            let fresh = channel(
                &node.target,
                Some(tls),
                self.options.connect_timeout,
                self.options.request_timeout,
            );
            if let Ok(fresh) = fresh {
                *node.channel.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
            *node.session.lock().await = None;
        }
        true
    }
}

/// Handshakes with `host:port` and reads once: vaultd either speaks first (its HTTP/2
/// settings: the certificate was accepted) or sends the alert that refuses it.
async fn probe_handshake(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> Option<Error> {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncRead, ReadBuf};
    let tcp = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    let name = ServerName::try_from(host.to_owned()).ok()?;
    let mut stream = match tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    {
        Ok(stream) => stream,
        Err(error) => return handshake_failure(&error, true),
    };
    let mut byte = [0u8; 1];
    let read = std::future::poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut byte);
        std::pin::Pin::new(&mut stream).poll_read(cx, &mut buf)
    })
    .await;
    read.err()
        .and_then(|error| handshake_failure(&error, false))
}

/// What an attempt without a session needs beyond its channel: nothing.
async fn no_session(_node: usize) -> Result<(), Failure> {
    Ok(())
}
