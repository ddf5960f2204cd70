//! Listeners: gRPC over mutual TLS (rustls through tokio-rustls into hyper's HTTP/2
//! server) and over the local Unix socket. Each connection's caller is fixed when it
//! is accepted — the verified leaf certificate's identity, or the socket peer's uid —
//! and attached to every request on it; nothing a client sends can change it.
//!
//! The TLS configuration sits behind a lock and is swapped whole on reload (SIGHUP):
//! new connections use the new certificates and CRLs; established ones stay open
//! unless their client certificate no longer verifies, and then are closed. A
//! connection is also closed when its client certificate expires, and when a periodic
//! re-check finds it no longer verifies (a CRL that went past its `nextUpdate`).
//!
//! Bounded for anyone who can reach the port ([`handshakes`]: the oldest stalled
//! handshake gives way, silent connections are dropped after a short deadline) and for
//! each identity (connections held at once; unary requests time out). Handshakes that
//! fail are counted by cause and logged in aggregate ([`refusals`]), never one line
//! per attempt.

mod authority;
mod handshakes;
mod hpack;
mod refusals;
mod unix;

pub(crate) use unix::{bind_socket, serve_unix};

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::body::Body;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::authz::Caller;
use crate::authz::Peer;
use crate::config::Limits;
use crate::identity::{Identity, IdentityError, IdentitySource, identity_of};
use crate::limits::PerIdentity;
use crate::metrics::RefusedHandshakes;
use crate::tls::{TlsError, TlsFiles, server_tls};
use handshakes::Handshakes;
use refusals::{LOG_INTERVAL, Refusal, RefusalLog};

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per listener; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 4096;
/// How often an established connection's client certificate is verified again.
const RECHECK: Duration = Duration::from_secs(60);

/// The server TLS configuration, reloadable.
pub(crate) struct ReloadableTls {
    current: RwLock<Current>,
    /// Bumped by every successful reload, for connections to re-check their client.
    reloads: watch::Sender<u64>,
}

struct Current {
    config: Arc<rustls::ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ReloadableTls {
    pub(crate) fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let (config, verifier) = server_tls(files)?;
        Ok(Self {
            current: RwLock::new(Current { config, verifier }),
            reloads: watch::channel(0).0,
        })
    }

    /// Reads `files` (the certificates, key, client CA and CRLs the configuration
    /// names now). On error the old configuration stays in force. Connections made
    /// before stay open unless their client certificate no longer verifies (revoked
    /// by a new CRL, say).
    pub(crate) fn reload(&self, files: &TlsFiles) -> Result<(), TlsError> {
        let (config, verifier) = server_tls(files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Current { config, verifier };
        self.reloads.send_modify(|n| *n += 1);
        Ok(())
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .config,
        )
    }

    fn verifies(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        let verifier = Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .verifier,
        );
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok()
    }

    /// Resolves once `chain` no longer verifies: after a reload (a new CRL, say), or
    /// at a periodic re-check (an expired CRL), or when its leaf expires.
    async fn until_refused(self: Arc<Self>, chain: Vec<CertificateDer<'static>>) {
        let expiry = chain.first().and_then(|leaf| not_after(leaf));
        let expires = async {
            match expiry.and_then(|t| t.duration_since(SystemTime::now()).ok()) {
                Some(left) => tokio::time::sleep(left).await,
                None if expiry.is_some() => {} // already expired
                None => std::future::pending().await,
            }
        };
        let mut reloads = self.reloads.subscribe();
        let rechecks = async {
            loop {
                tokio::select! {
                    changed = reloads.changed() => if changed.is_err() {
                        return std::future::pending().await;
                    },
                    () = tokio::time::sleep(RECHECK) => {}
                }
                if !self.verifies(&chain) {
                    return;
                }
            }
        };
        tokio::select! {
            () = expires => {}
            () = rechecks => {}
        }
    }
}

/// When a certificate stops being valid.
fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let seconds = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds + 1))
}

type GrpcService = BoxCloneSyncService<http::Request<Incoming>, http::Response<Body>, Infallible>;

/// Routes requests to services by the gRPC service name in the path.
#[derive(Clone)]
pub(crate) struct Router {
    routes: Arc<Vec<(&'static str, GrpcService)>>,
    /// How long a handler may take to answer; a stream's messages are not bounded.
    timeout: Duration,
}

impl Router {
    pub(crate) fn new(routes: Vec<(&'static str, GrpcService)>, timeout: Duration) -> Self {
        Self {
            routes: Arc::new(routes),
            timeout,
        }
    }

    async fn route(
        self,
        mut request: http::Request<Incoming>,
        peer: Peer,
    ) -> Result<http::Response<Body>, Infallible> {
        request.extensions_mut().insert(peer);
        let service = request.uri().path().split('/').nth(1).unwrap_or("");
        let Some((_, svc)) = self.routes.iter().find(|(name, _)| *name == service) else {
            return Ok(
                tonic::Status::unimplemented(format!("unknown service {service:?}")).into_http(),
            );
        };
        // A unary call's future resolves with its answer, a stream's once it starts.
        match tokio::time::timeout(self.timeout, svc.clone().oneshot(request)).await {
            Ok(answer) => answer,
            Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                "the request did not finish within the server's limit ({:?})",
                self.timeout
            ))
            .into_http()),
        }
    }
}

/// Boxes a generated gRPC server for the router.
pub(crate) fn route<S>(service: S) -> GrpcService
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service)
}

/// How long a stopping daemon lets a connection finish its requests in flight.
pub(crate) const DRAIN: Duration = Duration::from_secs(5);

/// Why a connection is closed before its client leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The daemon is stopping: requests in flight may finish.
    Drain,
    /// The client's certificate no longer verifies: nothing more is served.
    Now,
}

/// Serves HTTP/2 on `io` until the client leaves, or `close` resolves: the daemon
/// stops (requests in flight finish, for a bounded time) or the client's certificate
/// stops verifying (the connection is dropped at once).
async fn serve_connection<IO>(
    io: IO,
    router: Router,
    peer: Peer,
    close: impl Future<Output = Close>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = tower::service_fn(move |request| router.clone().route(request, peer.clone()));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .max_concurrent_streams(256)
        .max_header_list_size(16 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .timer(hyper_util::rt::TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    // A connection error concerns that client only, so results are dropped.
    tokio::select! {
        _ = connection.as_mut() => {}
        reason = close => if reason == Close::Drain {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, connection).await;
        } // Close::Now: dropping the connection closes it.
    }
}

/// Resolves when the daemon begins to stop.
async fn stopping(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A connection's whole life, from handshake to close.
pub(crate) type ConnectionTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Accepts connections with `accept` until the daemon stops, running each on its own
/// task (at most `limit` at once), then waits a bounded time for them to drain.
pub(crate) async fn accept_loop<A, F>(mut accept: A, limit: usize, stopped: watch::Receiver<bool>)
where
    A: FnMut(watch::Receiver<bool>) -> F,
    F: Future<Output = Option<ConnectionTask>>,
{
    let slots = Arc::new(Semaphore::new(limit));
    let mut connections = JoinSet::new();
    let mut stop = stopped.clone();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = async {
                let permit = Arc::clone(&slots).acquire_owned().await.ok()?;
                Some((permit, accept(stopped.clone()).await))
            } => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Some((permit, Some(task))) => {
                connections.spawn(async move {
                    let _permit = permit;
                    task.await;
                });
            }
            Some((_, None)) => {}
            None => break,
        }
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN, drained).await;
    connections.abort_all();
}

/// Waits after a failed accept (out of descriptors and the like) instead of spinning.
pub(crate) async fn backoff() -> Option<ConnectionTask> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    None
}

fn peer_of(conn: &rustls::ServerConnection, identities: IdentitySource) -> Peer {
    let identity = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(IdentityError::Missing)
        .and_then(|leaf| identity_of(leaf, identities));
    Peer(identity.map(Caller::Remote))
}

/// What bounds the mutual-TLS listener, and what it tells of the handshakes it refuses.
pub(crate) struct TlsLimits {
    handshakes: Arc<Handshakes>,
    first_byte: Duration,
    connections: Arc<PerIdentity>,
    refusals: Arc<RefusalLog>,
}

impl TlsLimits {
    /// The bounds `limits` sets; refused handshakes are counted in `refused`, and
    /// towards bursts per source in `anomalies`.
    pub(crate) fn new(
        limits: &Limits,
        refused: RefusedHandshakes,
        anomalies: Arc<crate::anomalies::Anomalies>,
    ) -> Self {
        Self {
            handshakes: Handshakes::new(limits.handshakes, limits.handshakes_per_source),
            first_byte: limits.first_byte_timeout,
            connections: PerIdentity::new(limits.connections_per_identity),
            refusals: RefusalLog::new(LOG_INTERVAL, refused, anomalies),
        }
    }
}

/// Serves mutual-TLS gRPC on `listener` until the daemon stops.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    identities: IdentitySource,
    limits: TlsLimits,
    router: Router,
    stopped: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let accept = |stopped| async {
        let Ok((tcp, source)) = listener.accept().await else {
            return backoff().await;
        };
        let mut slot = limits.handshakes.admit(source.ip());
        // Small request/response frames: Nagle with delayed ACKs would stall them ~40 ms.
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let (router, tls, limits) = (router.clone(), Arc::clone(&tls), Arc::clone(&limits));
        let task: ConnectionTask = Box::pin(async move {
            // Handshake failures (no certificate, wrong CA, revoked, expired, TLS 1.2)
            // end here: rustls has sent the alert that tells the client why, and the
            // cause is counted and logged in aggregate. So do connections that stay
            // silent, and handshakes a newer one evicted.
            let handshake = async {
                let mut first = [0u8; 1];
                match tokio::time::timeout(limits.first_byte, tcp.peek(&mut first)).await {
                    Err(_) => return Err(Some(Refusal::Timeout)),
                    Ok(Ok(n)) if n > 0 => {}
                    // Closed before saying anything: a port probe or a load balancer's
                    // health check, not a refusal.
                    Ok(_) => return Err(None),
                }
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Err(_) => Err(Some(Refusal::Timeout)),
                    Ok(Err(error)) => Err(Some(Refusal::of(&error))),
                    Ok(Ok(stream)) => Ok(stream),
                }
            };
            let stream = tokio::select! {
                stream = handshake => stream,
                _ = &mut slot.evicted => Err(Some(Refusal::Evicted)),
            };
            drop(slot);
            let stream = match stream {
                Ok(stream) => stream,
                Err(refusal) => {
                    if let Some(refusal) = refusal {
                        limits.refusals.record(refusal, source);
                    }
                    return;
                }
            };
            let connection = stream.get_ref().1;
            let peer = peer_of(connection, identities);
            // An identity holds a bounded number of connections; beyond it, closed.
            // Certificates that name no identity share one allowance.
            let unidentified = Identity::unidentified();
            let counted = peer.0.as_ref().map_or(&unidentified, Caller::identity);
            let Some(held) = limits.connections.acquire(counted) else {
                tracing::debug!(
                    identity = %counted,
                    "closed a connection over limits.connections_per_identity ({})",
                    limits.connections.max()
                );
                return;
            };
            let chain: Vec<CertificateDer<'static>> = connection
                .peer_certificates()
                .map(|c| c.iter().map(|cert| cert.clone().into_owned()).collect())
                .unwrap_or_default();
            let close = async move {
                tokio::select! {
                    () = stopping(stopped) => Close::Drain,
                    () = tls.until_refused(chain) => Close::Now,
                }
            };
            serve_connection(stream, router, peer, close).await;
            drop(held);
        });
        Some(task)
    };
    accept_loop(accept, MAX_CONNECTIONS, stopped).await;
}
