//! Assembling and running the daemon: load and check everything a [`Config`] names
//! ([`Daemon::open`]), then bind the listeners and serve ([`Daemon::serve`]).
//!
//! Opening fails closed, naming what is missing: no TLS files or client CA, no
//! policies, no writable audit log, or a store that does not open each stop the
//! daemon before it listens anywhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vault_audit::{AuditLog, AuditOptions, Event};
use vault_crypto::arena::Pool;
use vault_crypto::clock::SharedClock;
use vault_proto::v1::admin_server::AdminServer;
use vault_proto::v1::broker_server::BrokerServer;

use crate::api::admin::AdminService;
use crate::api::broker::BrokerService;
use crate::api::{MAX_MESSAGE, Shared};
use crate::audit::{RefusalBudget, VaultChainKeys, system_event};
use crate::authz::Policies;
use crate::breakglass::BreakGlass;
use crate::config::Config;
use crate::custody::{ApiKeySettings, Terms, Upkeep};
use crate::leases::Leases;
use crate::metrics::Metrics;
use crate::records::RateWindows;
use crate::sessions::Sessions;
use crate::transport::{
    DRAIN, ReloadableTls, Router, TlsLimits, bind_socket, route, serve_tls, serve_unix,
};
use crate::vault::{AutoUnseal, Vault, VaultOptions};

mod check;
mod reload;

pub use check::{Problem, check};

pub use reload::{LogLevelHook, ReloadReport, Restart};

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
    #[error("storage {store}: {source}")]
    Store {
        /// The store: a redb file, or a PostgreSQL database.
        store: String,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// The audit log could not be opened; vaultd answers nothing it cannot audit.
    #[error("audit: {0}")]
    Audit(#[from] vault_audit::AuditError),
    /// An alert sink (`[alerts]`) could not start.
    #[error("alerts: {0}")]
    Alerts(#[from] crate::alerts::AlertsError),
    /// `RLIMIT_MEMLOCK` cannot hold the sessions and tenant keys the configuration allows.
    #[error(
        "leases.max_sessions = {sessions} and keys.tenant_key_cache = {tenant_keys} need \
         {needed_kib} KiB of locked memory with the vault's own keys, but RLIMIT_MEMLOCK is \
         {limit_kib} KiB: raise it (LimitMEMLOCK= in the systemd unit, ulimit -l) or lower them"
    )]
    LockedMemory {
        /// The configured maximum of sessions.
        sessions: usize,
        /// The configured tenant-key cache.
        tenant_keys: usize,
        /// What it needs, in KiB.
        needed_kib: u64,
        /// The limit, in KiB.
        limit_kib: u64,
    },
    /// The client this node joins its cluster through could not be set up.
    #[error("cluster.join: {0}")]
    Join(#[source] vault_client::Error),
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
    upkeep: Arc<Upkeep>,
    tls: Arc<ReloadableTls>,
    reload: reload::Source,
}

/// Locked memory one lease session holds: its key and ring's expanded key, a 1 KiB
/// arena slot each.
const SESSION_LOCKED_BYTES: usize = 2 * 1024;
/// Locked memory one cached tenant key holds, likewise.
const TENANT_KEY_LOCKED_BYTES: usize = 2 * 1024;
/// Tenant keys in use by requests beyond those cached (evicted while in use, or
/// derived for a fingerprint), allowed for on top of the cache.
const TENANT_KEYS_IN_FLIGHT: usize = 512;
/// Locked memory kept for the vault's own keys: root and system keys, unseal progress.
const VAULT_LOCKED_BYTES: usize = 1024 * 1024;

/// The locked-memory budget of each pool, from the configuration.
struct LockedMemory {
    sessions: usize,
    tenants: usize,
}

impl LockedMemory {
    fn of(config: &Config) -> Self {
        Self {
            sessions: config
                .leases
                .max_sessions
                .saturating_mul(SESSION_LOCKED_BYTES),
            tenants: config
                .keys
                .tenant_key_cache
                .saturating_add(TENANT_KEYS_IN_FLIGHT)
                .saturating_mul(TENANT_KEY_LOCKED_BYTES),
        }
    }

    fn total(&self) -> usize {
        self.sessions
            .saturating_add(self.tenants)
            .saturating_add(VAULT_LOCKED_BYTES)
    }

    /// Whether the pools can all be locked under `RLIMIT_MEMLOCK`.
    fn fits(&self, config: &Config) -> Result<(), StartError> {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock).current;
        let needed = self.total() as u64;
        match limit {
            Some(limit) if limit < needed => Err(StartError::LockedMemory {
                sessions: config.leases.max_sessions,
                tenant_keys: config.keys.tenant_key_cache,
                needed_kib: needed / 1024,
                limit_kib: limit / 1024,
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a configuration whose pools could not all be locked under
    /// `RLIMIT_MEMLOCK`, then gives each pool its budget, so that no pool can take
    /// what another needs: sessions need no permission, and a wildcard transit grant
    /// can touch any number of tenants.
    fn apply(&self, config: &Config) -> Result<(), StartError> {
        self.fits(config)?;
        vault_crypto::arena::set_budget(Pool::Sessions, self.sessions);
        vault_crypto::arena::set_budget(Pool::Tenants, self.tenants);
        vault_crypto::arena::set_budget(Pool::Vault, VAULT_LOCKED_BYTES);
        Ok(())
    }
}

impl Daemon {
    /// Opens everything `config` names. The vault starts sealed (or uninitialised).
    pub fn open(config: Config) -> Result<Self, StartError> {
        Self::open_with_clock(config, vault_crypto::clock::system())
    }

    /// As [`Daemon::open`], reading every expiry, grace window, unseal timeout and
    /// budget refill from `clock` (tests move a
    /// [`ManualClock`](vault_crypto::clock::ManualClock) instead of sleeping).
    pub fn open_with_clock(config: Config, clock: SharedClock) -> Result<Self, StartError> {
        LockedMemory::of(&config).apply(&config)?;
        let tls = Arc::new(ReloadableTls::load(&config.tls)?);
        let store_error = |source| StartError::Store {
            store: config.storage.describe(),
            source,
        };
        let store = config.storage.open().map_err(|e| store_error(e.into()))?;
        let vault = Arc::new(
            Vault::open(
                store,
                VaultOptions {
                    unseal_timeout: config.seal.unseal_timeout,
                    default_grace: config.seal.default_grace,
                    max_grace: config.seal.max_grace,
                    tenant_key_cache: config.keys.tenant_key_cache,
                    tenant_rotate_after: config.keys.tenant_rotate_after,
                    clock: Arc::clone(&clock),
                    token: config.seal.pkcs11.clone(),
                },
            )
            .map_err(store_error)?,
        );
        let breakglass = Arc::new(
            BreakGlass::load(
                Arc::clone(&vault),
                config.breakglass.clone(),
                Arc::clone(&clock),
            )
            .map_err(store_error)?,
        );
        let policies = Policies::load(&config.policy_dir, Arc::clone(&breakglass))?;
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
        let (custody, upkeep) = crate::custody::assemble(
            Arc::clone(&vault),
            Sessions::new(
                config.leases.session_ttl,
                config.leases.max_sessions,
                config.leases.sessions_per_identity,
                Arc::clone(&clock),
            ),
            Leases::new(config.leases.max_total, Arc::clone(&clock)),
            Terms {
                default_ttl: config.leases.default_ttl,
                max_per_identity: config.leases.max_per_identity,
                watches_per_identity: config.limits.watches_per_identity,
                catch_up: config.storage.catch_up(),
                cluster_nodes: config.cluster.nodes.clone(),
                joins: config.cluster.join.is_some(),
            },
            api_key_settings(&config.apikeys),
            breakglass,
            Arc::clone(&clock),
        );
        let alerts = crate::alerts::Alerts::start(config.alerts.clone(), config.node.clone())?;
        let metrics = Arc::new(Metrics::new());
        let _ = metrics.alerts.set(alerts.clone());
        let anomalies = Arc::new(crate::anomalies::Anomalies::new(
            config.anomalies.clone(),
            Arc::clone(&clock),
            alerts.clone(),
            audit.clone(),
        ));
        let shared = Arc::new(Shared {
            policies,
            custody,
            audit,
            alerts,
            anomalies,
            refusals: RefusalBudget::new(config.audit.refusals_per_second, clock),
            metrics,
            reloader: std::sync::OnceLock::new(),
        });
        Ok(Self {
            reload: reload::Source::new(config.clone()),
            config,
            vault,
            shared,
            upkeep: Arc::new(upkeep),
            tls,
        })
    }

    /// Re-reads `path` on every reload (SIGHUP): the file this configuration came
    /// from. Without it a reload re-reads the files the configuration names.
    pub fn reload_from(mut self, path: PathBuf) -> Self {
        self.reload.path = Some(path);
        self
    }

    /// Applies a changed `log_level` on reload through `apply`.
    pub fn on_log_level(mut self, apply: reload::LogLevelHook) -> Self {
        self.reload.log_level = Some(apply);
        self
    }

    /// The vault, for the console bootstrap of `vaultd dev` (before serving).
    pub(crate) fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The state the services share, the daemon's own custody handle and the vault:
    /// what the fuzz harness drives.
    pub(crate) fn parts(&self) -> (&Arc<Shared>, &Arc<Upkeep>, &Arc<Vault>) {
        (&self.shared, &self.upkeep, &self.vault)
    }

    /// Audits an action the daemon takes on its own (not a request).
    pub(crate) async fn audit_system(
        &self,
        operation: &str,
        event: Event,
    ) -> Result<(), vault_audit::AuditError> {
        system_event(&self.shared.audit, operation, event).await
    }

    /// Unseals through the PKCS#11 token if custodians enabled auto-unseal; if it is
    /// not enabled, or the token fails, the vault stays sealed for custodians' shares.
    async fn auto_unseal(&self) {
        let vault = Arc::clone(&self.vault);
        let reason = match tokio::task::spawn_blocking(move || vault.auto_unseal()).await {
            Ok(Ok(AutoUnseal::Unsealed)) => {
                tracing::info!("unsealed through the PKCS#11 token (auto-unseal)");
                "unsealed through the PKCS#11 token".to_owned()
            }
            Ok(Ok(AutoUnseal::NotEnabled)) => {
                tracing::info!(
                    "a PKCS#11 token is configured but auto-unseal is not enabled: custodians \
                     enable it with an enable-auto-unseal ceremony"
                );
                return;
            }
            Ok(Ok(AutoUnseal::NotConfigured | AutoUnseal::NotSealed)) => return,
            Ok(Err(e)) => {
                tracing::warn!("auto-unseal failed; custodians unseal with their shares: {e}");
                format!("auto-unseal failed: {e}")
            }
            Err(e) => {
                tracing::error!("auto-unseal panicked; custodians unseal with their shares: {e}");
                "auto-unseal panicked".to_owned()
            }
        };
        let event = Event {
            reason: reason.clone(),
            ..Event::default()
        };
        match self.audit_system("system.auto_unseal", event).await {
            Ok(()) => self.shared.alerts.raise(
                crate::alerts::Alert::new("system.auto_unseal", crate::alerts::Severity::Critical)
                    .with_detail("outcome", reason),
            ),
            Err(e) => tracing::error!("auto-unseal could not be audited: {e}"),
        }
    }

    /// Unseals through the token if enabled, binds the listeners and starts serving.
    pub async fn serve(self) -> Result<Running, StartError> {
        self.auto_unseal().await;
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
        let (broker, admin) = services(&self.shared);
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
                TlsLimits::new(
                    &self.config.limits,
                    self.shared.metrics.handshakes_refused.clone(),
                    Arc::clone(&self.shared.anomalies),
                ),
                Router::new(tls_routes, self.config.limits.request_timeout),
                stopped.clone(),
            )),
            tokio::spawn(crate::http::serve(
                http,
                crate::http::Observed {
                    upkeep: Arc::clone(&self.upkeep),
                    audit: self.shared.audit.clone(),
                    metrics: Arc::clone(&self.shared.metrics),
                },
                stopped.clone(),
            )),
        ];
        tasks.extend(crate::housekeeping::spawn(
            &self.shared,
            &self.upkeep,
            health,
            &stopped,
        ));
        if let Some(join) = &self.config.cluster.join {
            let client = crate::cluster::join::client(join).map_err(StartError::Join)?;
            tasks.push(tokio::spawn(crate::cluster::join::join(
                join.retry,
                client,
                Arc::clone(&self.upkeep),
                self.shared.audit.clone(),
                stopped.clone(),
            )));
        }
        if let Some(socket) = socket {
            tasks.push(tokio::spawn(serve_unix(
                socket,
                Router::new(api_routes(), self.config.limits.request_timeout),
                stopped,
            )));
        }
        let reloader = Arc::new(reload::Reloader {
            source: self.reload,
            tls: Arc::clone(&self.tls),
            shared: Arc::clone(&self.shared),
            upkeep: Arc::clone(&self.upkeep),
        });
        let installed: Arc<dyn crate::api::Reload> = reloader.clone();
        let _ = self.shared.reloader.set(Arc::downgrade(&installed));
        Ok(Running {
            grpc_addr: addrs.0,
            http_addr: addrs.1,
            socket: listen.socket.clone(),
            shared: self.shared,
            upkeep: self.upkeep,
            stop,
            tasks,
            reloader,
        })
    }
}

/// The gRPC services over `shared`, each bounding decoded messages to [`MAX_MESSAGE`].
pub(crate) fn services(
    shared: &Arc<Shared>,
) -> (BrokerServer<BrokerService>, AdminServer<AdminService>) {
    (
        BrokerServer::new(BrokerService::new(Arc::clone(shared)))
            .max_decoding_message_size(MAX_MESSAGE),
        AdminServer::new(AdminService::new(Arc::clone(shared)))
            .max_decoding_message_size(MAX_MESSAGE),
    )
}

/// A serving daemon.
pub struct Running {
    /// Where gRPC over mutual TLS is served.
    pub grpc_addr: SocketAddr,
    /// Where health and metrics are served.
    pub http_addr: SocketAddr,
    socket: Option<PathBuf>,
    shared: Arc<Shared>,
    upkeep: Arc<Upkeep>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    reloader: Arc<reload::Reloader>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish (for a bounded time), writes
    /// a final signed checkpoint if unsealed, and releases the store and audit log.
    /// Says whether the audit log had stopped the daemon serving.
    pub async fn shutdown(self) -> Stopped {
        let _ = self.stop.send(true);
        self.upkeep.end_watches();
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
        // What was counted of today's quotas survives the restart.
        if let Err(e) = self.upkeep.flush_quotas() {
            tracing::warn!("quota usage of the last second could not be written: {e}");
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

/// The `[apikeys]` settings as custody keeps them.
pub(crate) fn api_key_settings(config: &crate::config::ApiKeysConfig) -> ApiKeySettings {
    let windows = |[burst, per_minute, per_day]: [u32; 3]| RateWindows {
        burst,
        per_minute,
        per_day,
    };
    ApiKeySettings {
        tiers: config
            .tiers
            .iter()
            .map(|(name, rates)| (name.clone(), windows(*rates)))
            .collect(),
        default_tier: config.default_tier.clone(),
        tenant: windows(config.tenant),
        max_per_tenant: config.max_per_tenant,
        default_grace: config.default_grace,
        cache: config.cache,
        limiter_entries: config.limiter_entries,
    }
}
