//! Listeners: gRPC over mutual TLS (rustls through tokio-rustls into hyper's HTTP/2
//! server) and over the local Unix socket. Each connection's caller is fixed when it
//! is accepted — the verified leaf certificate's identity, or the socket peer's uid —
//! and attached to every request on it; nothing a client sends can change it.
//!
//! The TLS configuration sits behind a lock and is swapped whole on reload (SIGHUP):
//! new connections use the new certificates and CRLs; established ones stay open
//! unless their client certificate no longer verifies, and then are closed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::body::Body;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::api::Peer;
use crate::authz::Caller;
use crate::identity::{Identity, IdentityError, IdentitySource, identity_of};
use crate::tls::{TlsError, TlsFiles, server_tls};

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per listener; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 4096;
/// TLS handshakes in progress at once; a connection beyond that is closed at once, so
/// peers that stall handshakes cannot hold the connection slots.
const MAX_HANDSHAKES: usize = 256;

/// The server TLS configuration, reloadable.
pub(crate) struct ReloadableTls {
    files: TlsFiles,
    current: RwLock<Current>,
    /// Bumped by every successful reload, for connections to re-check their client.
    reloads: watch::Sender<u64>,
}

struct Current {
    config: Arc<rustls::ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ReloadableTls {
    pub(crate) fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let (config, verifier) = server_tls(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(Current { config, verifier }),
            reloads: watch::channel(0).0,
        })
    }

    /// Re-reads the certificates, key, client CA and CRLs. On error the old
    /// configuration stays in force. Connections made before stay open unless their
    /// client certificate no longer verifies (revoked by a new CRL, say).
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let (config, verifier) = server_tls(&self.files)?;
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

    /// Resolves once a reload makes `chain` fail verification.
    async fn until_refused(self: Arc<Self>, chain: Vec<CertificateDer<'static>>) {
        let mut reloads = self.reloads.subscribe();
        while reloads.changed().await.is_ok() {
            if !self.verifies(&chain) {
                return;
            }
        }
        std::future::pending().await
    }
}

type GrpcService = BoxCloneSyncService<http::Request<Incoming>, http::Response<Body>, Infallible>;

/// Routes requests to services by the gRPC service name in the path.
#[derive(Clone)]
pub(crate) struct Router {
    routes: Arc<Vec<(&'static str, GrpcService)>>,
}

impl Router {
    pub(crate) fn new(routes: Vec<(&'static str, GrpcService)>) -> Self {
        Self {
            routes: Arc::new(routes),
        }
    }

    async fn route(
        self,
        mut request: http::Request<Incoming>,
        peer: Peer,
    ) -> Result<http::Response<Body>, Infallible> {
        request.extensions_mut().insert(peer);
        let service = request.uri().path().split('/').nth(1).unwrap_or("");
        match self.routes.iter().find(|(name, _)| *name == service) {
            Some((_, svc)) => svc.clone().oneshot(request).await,
            None => Ok(
                tonic::Status::unimplemented(format!("unknown service {service:?}")).into_http(),
            ),
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

/// Serves HTTP/2 on `io` until the client leaves, or `close` resolves (the daemon
/// stops, or the client's certificate stops verifying), then drains gracefully.
async fn serve_connection<IO>(io: IO, router: Router, peer: Peer, close: impl Future<Output = ()>)
where
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
        _ = connection.as_mut() => return,
        () = close => connection.as_mut().graceful_shutdown(),
    }
    let _ = tokio::time::timeout(DRAIN, connection).await;
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

/// Serves mutual-TLS gRPC on `listener` until the daemon stops.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    identities: IdentitySource,
    router: Router,
    stopped: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let accept = |stopped| async {
        let Ok((tcp, _)) = listener.accept().await else {
            return backoff().await;
        };
        let Ok(handshake) = Arc::clone(&handshakes).try_acquire_owned() else {
            return None; // dropped: too many handshakes in flight
        };
        // Small request/response frames: Nagle with delayed ACKs would stall them ~40 ms.
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let (router, tls) = (router.clone(), Arc::clone(&tls));
        let task: ConnectionTask = Box::pin(async move {
            // Handshake failures (no certificate, wrong CA, revoked, expired, TLS 1.2)
            // end here: rustls has sent the alert that tells the client why.
            let handshaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(handshake);
            let Ok(Ok(stream)) = handshaken else {
                return;
            };
            let connection = stream.get_ref().1;
            let peer = peer_of(connection, identities);
            let chain: Vec<CertificateDer<'static>> = connection
                .peer_certificates()
                .map(|c| c.iter().map(|cert| cert.clone().into_owned()).collect())
                .unwrap_or_default();
            let close = async move {
                tokio::select! {
                    () = stopping(stopped) => {}
                    () = tls.until_refused(chain) => {}
                }
            };
            serve_connection(stream, router, peer, close).await;
        });
        Some(task)
    };
    accept_loop(accept, MAX_CONNECTIONS, stopped).await;
}

/// Serves gRPC on the local Unix socket until the daemon stops. Callers are named by
/// uid and get only the status, unseal and seal permissions.
pub(crate) async fn serve_unix(
    listener: UnixListener,
    router: Router,
    stopped: watch::Receiver<bool>,
) {
    let accept = |stopped| async {
        let Ok((stream, _)) = listener.accept().await else {
            return backoff().await;
        };
        let cred = stream.peer_cred().ok()?;
        let peer = Peer(Ok(Caller::Local(Identity::local(cred.uid()))));
        let router = router.clone();
        let task: ConnectionTask =
            Box::pin(serve_connection(stream, router, peer, stopping(stopped)));
        Some(task)
    };
    accept_loop(accept, 64, stopped).await;
}
