//! Assembling and running the daemon: load and check everything a [`Config`] names
//! ([`Daemon::open`]), then bind the listeners and serve ([`Daemon::serve`]).
//!
//! Opening fails closed, naming what is missing: no TLS files or client CA, no
//! policies, no writable audit log, or a store that does not open each stop the
//! daemon before it listens anywhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use vault_audit::{AuditLog, AuditOptions, Decision, Event};
use vault_proto::v1::admin_server::AdminServer;
use vault_proto::v1::broker_server::BrokerServer;

use crate::api::admin::AdminService;
use crate::api::broker::BrokerService;
use crate::api::{MAX_MESSAGE, Shared};
use crate::audit::{RefusalBudget, VaultChainKeys, system_event};
use crate::authz::{Custody, Policies};
use crate::config::Config;
use crate::leases::{Leases, RevocationReason, Selector};
use crate::limits::PerIdentity;
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::storage::redb::RedbStore;
use crate::transport::{DRAIN, ReloadableTls, Router, TlsLimits, route, serve_tls, serve_unix};
use crate::vault::{SealState, Vault, VaultOptions};

/// How often expired sessions and leases are swept and gauges refreshed.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often rotated-out versions past their grace window are disabled.
const GRACE_SWEEP: Duration = Duration::from_secs(5);

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The TLS files are missing, unreadable or rejected.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The policy directory is missing, empty or invalid.
    #[error("policies: {0}")]
    Policy(#[from] vault_policy::PolicyError),
    /// The store did not open.
    #[error("storage {}: {source}", path.display())]
    Store {
        /// The redb file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// The audit log could not be opened; vaultd answers nothing it cannot audit.
    #[error("audit: {0}")]
    Audit(#[from] vault_audit::AuditError),
    /// `RLIMIT_MEMLOCK` cannot hold the sessions the configuration allows.
    #[error(
        "leases.max_sessions = {sessions} needs {needed_kib} KiB of locked memory with the vault's own keys, \
         but RLIMIT_MEMLOCK is {limit_kib} KiB: raise it (LimitMEMLOCK= in the systemd unit, ulimit -l) \
         or lower leases.max_sessions"
    )]
    LockedMemory {
        /// The configured maximum.
        sessions: usize,
        /// What it needs, in KiB.
        needed_kib: u64,
        /// The limit, in KiB.
        limit_kib: u64,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// Which listener (`listen.grpc`, `listen.http`, `listen.socket`).
        what: &'static str,
        /// The address or path.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A daemon whose configuration, files, store, policies and audit log all checked
/// out, not yet listening.
pub struct Daemon {
    config: Config,
    vault: Arc<Vault>,
    shared: Arc<Shared>,
    tls: Arc<ReloadableTls>,
}

/// Locked memory one lease session holds: its key and ring's expanded key, a 1 KiB
/// arena slot each.
const SESSION_LOCKED_BYTES: u64 = 2 * 1024;
/// Locked memory kept for the vault's own keys (root, system, unseal progress and a
/// working set of tenant keys at 2 KiB each).
const VAULT_LOCKED_BYTES: u64 = 2 * 1024 * 1024;

/// Refuses a configuration whose sessions could exhaust `RLIMIT_MEMLOCK`: sessions
/// need no permission, so unchecked they could starve the vault's own keys.
fn check_locked_memory(max_sessions: usize) -> Result<(), StartError> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock).current;
    let needed = (max_sessions as u64)
        .saturating_mul(SESSION_LOCKED_BYTES)
        .saturating_add(VAULT_LOCKED_BYTES);
    match limit {
        Some(limit) if limit < needed => Err(StartError::LockedMemory {
            sessions: max_sessions,
            needed_kib: needed / 1024,
            limit_kib: limit / 1024,
        }),
        _ => Ok(()),
    }
}

impl Daemon {
    /// Opens everything `config` names. The vault starts sealed (or uninitialised).
    pub fn open(config: Config) -> Result<Self, StartError> {
        check_locked_memory(config.leases.max_sessions)?;
        let tls = Arc::new(ReloadableTls::load(config.tls.clone())?);
        let policies = Policies::load(&config.policy_dir)?;
        let store_error = |source| StartError::Store {
            path: config.storage_path.clone(),
            source,
        };
        let store = RedbStore::open(&config.storage_path).map_err(|e| store_error(e.into()))?;
        let vault = Arc::new(
            Vault::open(
                Arc::new(store),
                VaultOptions {
                    unseal_timeout: config.seal.unseal_timeout,
                    default_grace: config.seal.default_grace,
                },
            )
            .map_err(store_error)?,
        );
        let audit = AuditLog::open(
            &config.audit.path,
            AuditOptions {
                node: config.node.clone(),
                fsync: config.audit.fsync,
                write_deadline: config.audit.write_deadline,
                checkpoint_every: config.audit.checkpoint_every,
                min_free: config.audit.min_free,
                ..AuditOptions::default()
            },
            Arc::new(VaultChainKeys(Arc::clone(&vault))),
        )?;
        let shared = Arc::new(Shared {
            policies,
            custody: Custody::new(Arc::clone(&vault)),
            sessions: Sessions::new(
                config.leases.session_ttl,
                config.leases.max_sessions,
                config.leases.sessions_per_identity,
            ),
            leases: Leases::new(config.leases.max_total),
            audit,
            refusals: RefusalBudget::new(config.audit.refusals_per_second),
            watches: PerIdentity::new(config.limits.watches_per_identity),
            metrics: Metrics::new(),
            limits: config.leases.clone(),
        });
        Ok(Self {
            config,
            vault,
            shared,
            tls,
        })
    }

    /// The vault, for the console bootstrap of `vaultd dev` (before serving).
    pub(crate) fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Audits an action the daemon takes on its own (not a request).
    pub(crate) async fn audit_system(
        &self,
        operation: &str,
        event: Event,
    ) -> Result<(), vault_audit::AuditError> {
        system_event(&self.shared.audit, operation, event).await
    }

    /// Binds the listeners and starts serving.
    pub async fn serve(self) -> Result<Running, StartError> {
        let bind_error = |what: &'static str, addr: String| {
            move |source| StartError::Bind { what, addr, source }
        };
        let listen = &self.config.listen;
        let grpc = TcpListener::bind(listen.grpc)
            .await
            .map_err(bind_error("listen.grpc", listen.grpc.to_string()))?;
        let http = TcpListener::bind(listen.http)
            .await
            .map_err(bind_error("listen.http", listen.http.to_string()))?;
        let socket = match &listen.socket {
            Some(path) => Some(
                bind_socket(path)
                    .map_err(bind_error("listen.socket", path.display().to_string()))?,
            ),
            None => None,
        };
        let addrs = (
            grpc.local_addr()
                .map_err(bind_error("listen.grpc", listen.grpc.to_string()))?,
            http.local_addr()
                .map_err(bind_error("listen.http", listen.http.to_string()))?,
        );

        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(vault_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| StartError::Bind {
                what: "listen.grpc",
                addr: "server reflection".to_owned(),
                source: std::io::Error::other(e),
            })?;
        let broker = BrokerServer::new(BrokerService::new(Arc::clone(&self.shared)))
            .max_decoding_message_size(MAX_MESSAGE);
        let admin = AdminServer::new(AdminService::new(Arc::clone(&self.shared)))
            .max_decoding_message_size(MAX_MESSAGE);
        let api_routes = || {
            vec![
                ("vault.v1.Broker", route(broker.clone())),
                ("vault.v1.Admin", route(admin.clone())),
            ]
        };
        let mut tls_routes = api_routes();
        tls_routes.push(("grpc.health.v1.Health", route(health_service)));
        tls_routes.push(("grpc.reflection.v1.ServerReflection", route(reflection)));

        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(serve_tls(
                grpc,
                Arc::clone(&self.tls),
                self.config.identities,
                TlsLimits::new(&self.config.limits),
                Router::new(tls_routes, self.config.limits.request_timeout),
                stopped.clone(),
            )),
            tokio::spawn(crate::http::serve(
                http,
                Arc::clone(&self.shared),
                stopped.clone(),
            )),
            tokio::spawn(housekeeping(Arc::clone(&self.shared), stopped.clone())),
            tokio::spawn(report_health(
                Arc::clone(&self.shared),
                health,
                stopped.clone(),
            )),
        ];
        if let Some(socket) = socket {
            tasks.push(tokio::spawn(serve_unix(
                socket,
                Router::new(api_routes(), self.config.limits.request_timeout),
                stopped,
            )));
        }
        Ok(Running {
            grpc_addr: addrs.0,
            http_addr: addrs.1,
            socket: listen.socket.clone(),
            shared: self.shared,
            tls: self.tls,
            stop,
            tasks,
        })
    }
}

/// Binds the local socket, replacing a stale one, readable and writable by the
/// daemon's user only. It is bound inside a fresh 0700 directory, made 0600, and only
/// then moved into place, so no other user can connect while its mode is wider.
fn bind_socket(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(
                "the path exists and is not a socket; vaultd will not replace it",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process is serving this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut suffix = [0u8; 8];
    vault_crypto::aead::random_bytes(&mut suffix).map_err(std::io::Error::other)?;
    let private = parent.join(format!(
        ".vaultd-socket-{}",
        vault_crypto::hex::encode(&suffix).as_str()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// A serving daemon.
pub struct Running {
    /// Where gRPC over mutual TLS is served.
    pub grpc_addr: SocketAddr,
    /// Where health and metrics are served.
    pub http_addr: SocketAddr,
    socket: Option<PathBuf>,
    shared: Arc<Shared>,
    tls: Arc<ReloadableTls>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a reload changed; each part fails on its own and keeps the old state.
#[derive(Debug)]
pub struct ReloadReport {
    /// The TLS certificates, key, client CA and CRLs.
    pub tls: Result<(), crate::tls::TlsError>,
    /// The policies: grants, denies and roles loaded.
    pub policies: Result<(usize, usize, usize), vault_policy::PolicyError>,
}

impl Running {
    /// Reloads the TLS files and the policies (SIGHUP). New connections get the new
    /// certificates; established ones stay, unless their client certificate no longer
    /// verifies (then they are closed). Audited.
    pub async fn reload(&self) -> ReloadReport {
        let report = ReloadReport {
            tls: self.tls.reload(),
            policies: self.shared.policies.reload(),
        };
        let mut event = Event {
            decision: match (&report.tls, &report.policies) {
                (Ok(()), Ok(_)) => Decision::Allow,
                _ => Decision::Error,
            },
            ..Event::default()
        };
        event
            .detail
            .insert("tls".into(), outcome_text(report.tls.as_ref().map(|_| ())));
        event.detail.insert(
            "policies".into(),
            outcome_text(report.policies.as_ref().map(|_| ())),
        );
        match &report.tls {
            Ok(()) => tracing::info!("reloaded TLS certificates, key, client CA and CRLs"),
            Err(e) => {
                tracing::warn!("TLS reload failed, the previous files stay in force: {e}")
            }
        }
        match &report.policies {
            Ok((grants, denies, roles)) => {
                tracing::info!("reloaded policies: {grants} grants, {denies} denies, {roles} roles")
            }
            Err(e) => {
                tracing::warn!("policy reload failed, the previous policies stay in force: {e}")
            }
        }
        if let Err(e) = system_event(&self.shared.audit, "system.reload", event).await {
            tracing::error!("the reload could not be audited: {e}");
        }
        report
    }

    /// Stops accepting, lets requests in flight finish (for a bounded time), writes
    /// a final signed checkpoint if unsealed, and releases the store and audit log.
    /// Says whether the audit log had stopped the daemon serving.
    pub async fn shutdown(self) -> Stopped {
        let _ = self.stop.send(true);
        for task in self.tasks {
            // A task that ignores the signal is cut off after the drain period.
            let abort = task.abort_handle();
            if tokio::time::timeout(DRAIN + Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let _ = self.shared.audit.checkpoint().await;
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
        let audit = &self.shared.audit;
        Stopped {
            audit_failure: audit.failure().or_else(|| {
                audit
                    .low_space()
                    .then(|| "the audit log's disk was short of space".to_owned())
            }),
        }
    }
}

/// How a daemon stopped.
#[derive(Debug)]
#[must_use]
pub struct Stopped {
    /// Why the audit log had stopped the daemon serving requests, if it had: it
    /// failed for good, or its disk was short of space when the daemon stopped.
    pub audit_failure: Option<String>,
}

fn outcome_text(result: Result<(), &impl std::fmt::Display>) -> String {
    match result {
        Ok(()) => "reloaded".to_owned(),
        Err(e) => format!("kept the previous set: {e}"),
    }
}

/// Keeps `grpc.health.v1` true: the overall status (`""`) and `vault.v1.Broker` are
/// `SERVING` only while unsealed with a working audit log, and change the moment the
/// vault seals or unseals (the audit log is looked at every second). `vault.v1.Admin`
/// stays `SERVING`: it serves status and unseal while sealed.
async fn report_health(
    shared: Arc<Shared>,
    health: tonic_health::server::HealthReporter,
    mut stopped: watch::Receiver<bool>,
) {
    let mut changes = shared.custody.watch_seal_state();
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    health
        .set_service_status("vault.v1.Admin", ServingStatus::Serving)
        .await;
    loop {
        let serving =
            *changes.borrow_and_update() == SealState::Unsealed && shared.audit.is_healthy();
        if last != Some(serving) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health.set_service_status("vault.v1.Broker", status).await;
            last = Some(serving);
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Sweeps expired sessions and leases, disables versions past their grace window
/// (revoking their leases), and refreshes gauges.
async fn housekeeping(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_grace_sweep = tokio::time::Instant::now();
    let mut audit_state = AuditState::Healthy;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
        shared.sessions.sweep();
        shared.leases.sweep();
        audit_state = audit_state.report(&shared.audit);
        for summary in shared.refusals.drain() {
            if let Err(e) = shared.audit.append(summary).await {
                tracing::error!("a summary of refused requests could not be audited: {e}");
            }
        }
        if last_grace_sweep.elapsed() >= GRACE_SWEEP {
            last_grace_sweep = tokio::time::Instant::now();
            sweep_grace(&shared).await;
        }
        let sealed = match shared.custody.seal_state() {
            SealState::Unsealed => 0,
            SealState::Sealed => 1,
            SealState::Uninitialised => 2,
        };
        let m = &shared.metrics;
        m.sealed.set(sealed);
        m.leases
            .set(i64::try_from(shared.leases.len()).unwrap_or(i64::MAX));
        m.sessions
            .set(i64::try_from(shared.sessions.len()).unwrap_or(i64::MAX));
        m.audit_records
            .set(i64::try_from(shared.audit.appended()).unwrap_or(i64::MAX));
        m.audit_free_bytes.set(
            shared
                .audit
                .free_bytes()
                .map_or(-1, |free| i64::try_from(free).unwrap_or(i64::MAX)),
        );
    }
}

/// What the operator was last told about the audit log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AuditState {
    Healthy,
    LowSpace,
    Failed,
}

impl AuditState {
    /// Logs a change of the audit log's state, once.
    fn report(self, audit: &AuditLog) -> Self {
        let now = if audit.failure().is_some() {
            AuditState::Failed
        } else if audit.low_space() {
            AuditState::LowSpace
        } else {
            AuditState::Healthy
        };
        match (self, now) {
            (before, after) if before == after => {}
            (_, AuditState::Failed) => tracing::error!(
                "the audit log failed ({}); every request that must be audited is refused \
                 until vaultd is restarted with a writable log",
                audit.failure().unwrap_or_default()
            ),
            (_, AuditState::LowSpace) => tracing::warn!(
                "the audit log's disk is short of space ({} bytes free); requests are refused \
                 until space is freed (audit.min_free)",
                audit
                    .free_bytes()
                    .map_or_else(|| "unknown".to_owned(), |b| b.to_string())
            ),
            (_, AuditState::Healthy) => {
                tracing::info!("the audit log has space again; requests are served")
            }
        }
        now
    }
}

async fn sweep_grace(shared: &Shared) {
    // Sealed or uninitialised: nothing can be swept, and nothing needs to be.
    let Ok(disabled) = shared.custody.sweep_grace() else {
        return;
    };
    for version in disabled {
        let revoked = shared.leases.revoke(
            &Selector::Version(version.id.clone(), version.version),
            RevocationReason::VersionDisabled,
        );
        let mut event = Event {
            tenant: Some(version.id.tenant.to_string()),
            environment: Some(version.id.environment.to_string()),
            secret: Some(version.id.name.to_string()),
            version: Some(version.version),
            reason: "grace window ended: version disabled".to_owned(),
            ..Event::default()
        };
        event
            .detail
            .insert("leases_revoked".into(), revoked.len().to_string());
        if let Err(e) = system_event(&shared.audit, "system.disable_version", event).await {
            tracing::error!("disabling a version past its grace window could not be audited: {e}");
        }
    }
}
