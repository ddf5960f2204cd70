//! Reloading a serving daemon (`SIGHUP`): the configuration file is read again and
//! what can change live is put in force — the TLS files and CRL list, the policy
//! directory, `[apikeys]` limits and `log_level` — and the audit log is reopened (for
//! rotation: the chain continues in the new file). Settings that take a restart
//! (listeners, storage, the audit log's path and policy, lease and session bounds,
//! …) are named in the report and the log rather than silently ignored, and stay
//! reported on every reload until the daemon restarts.
//!
//! Each part succeeds or fails on its own; a part that fails keeps what was in force.
//! A configuration file that no longer parses changes nothing, but the files the
//! configuration in force names are still read again (a renewed certificate, a new
//! CRL at the same path) and the audit log is still reopened.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vault_audit::{Decision, Event, Reopened};
use vault_proto::v1;

use super::{Running, api_key_settings};
use crate::api::Shared;
use crate::audit::system_event;
use crate::config::{ApiKeysConfig, Config, ConfigError, LogLevel};
use crate::custody::Upkeep;
use crate::transport::ReloadableTls;

/// Puts a new log level in force (the daemon's log subscriber).
pub type LogLevelHook = Box<dyn Fn(LogLevel) -> Result<(), String> + Send + Sync>;

/// Where a reload reads from, and what is in force.
pub(super) struct Source {
    /// The configuration file, if the daemon was started from one.
    pub(super) path: Option<PathBuf>,
    pub(super) log_level: Option<LogLevelHook>,
    /// The configuration in force: the file's live settings as last applied, and
    /// the rest as the daemon started. Held across a whole reload: one at a time.
    in_force: Mutex<Config>,
}

impl Source {
    pub(super) fn new(config: Config) -> Self {
        Self {
            path: None,
            log_level: None,
            in_force: Mutex::new(config),
        }
    }
}

/// A setting that changed in the configuration file but takes effect only when the
/// daemon restarts: its key, e.g. `listen.grpc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart(pub &'static str);

/// What a reload did; each part succeeds or fails on its own.
#[derive(Debug)]
pub struct ReloadReport {
    /// Reading the configuration file again (`Ok` too when there is none).
    pub config: Result<(), ConfigError>,
    /// The TLS certificates, key, client CA and CRLs.
    pub tls: Result<(), crate::tls::TlsError>,
    /// The policies: grants, denies and roles loaded.
    pub policies: Result<(usize, usize, usize), vault_policy::PolicyError>,
    /// Reopening the audit log.
    pub audit: Result<Reopened, vault_audit::AuditError>,
    /// Live settings that changed and are now in force (`log_level`, `apikeys`).
    pub applied: Vec<&'static str>,
    /// Settings that changed but wait for a restart.
    pub needs_restart: Vec<Restart>,
}

impl ReloadReport {
    /// Each part's outcome in words: config (if read from a file), tls, policies,
    /// audit, and what was applied.
    fn parts(&self, from_file: bool) -> Vec<(&'static str, Result<String, String>)> {
        let mut parts = Vec::new();
        if from_file {
            parts.push((
                "config",
                self.config
                    .as_ref()
                    .map(|()| "read again".to_owned())
                    .map_err(|e| format!("nothing in it was applied: {e}")),
            ));
        }
        parts.push((
            "tls",
            self.tls
                .as_ref()
                .map(|()| "certificates, key, client CA and CRLs read again".to_owned())
                .map_err(|e| format!("the previous files stay in force: {e}")),
        ));
        parts.push((
            "policies",
            self.policies
                .as_ref()
                .map(|(g, d, r)| format!("{g} grants, {d} denies, {r} roles"))
                .map_err(|e| format!("the previous policies stay in force: {e}")),
        ));
        parts.push((
            "audit",
            self.audit
                .as_ref()
                .map(ToString::to_string)
                .map_err(|e| format!("the log was not reopened: {e}")),
        ));
        if !self.applied.is_empty() {
            parts.push(("applied", Ok(self.applied.join(", "))));
        }
        parts
    }

    /// The report as `Admin.Reload` answers it.
    fn to_proto(&self) -> v1::ReloadResponse {
        v1::ReloadResponse {
            complete: self.is_complete(),
            parts: self
                .parts(true)
                .into_iter()
                .map(|(part, outcome)| v1::ReloadPart {
                    part: part.to_owned(),
                    ok: outcome.is_ok(),
                    outcome: outcome.unwrap_or_else(|e| e),
                })
                .collect(),
            needs_restart: self.needs_restart.iter().map(|r| r.0.to_owned()).collect(),
        }
    }

    /// Everything reloaded, and nothing waits for a restart.
    pub fn is_complete(&self) -> bool {
        self.config.is_ok()
            && self.tls.is_ok()
            && self.policies.is_ok()
            && self.audit.is_ok()
            && self.needs_restart.is_empty()
    }
}

impl Running {
    /// Reloads (SIGHUP, and `Admin.Reload`): see the module documentation. New
    /// connections get the new certificates; established ones stay, unless their
    /// client certificate no longer verifies (then they are closed). Logged and
    /// audited.
    pub async fn reload(&self) -> ReloadReport {
        self.reloader.reload().await
    }
}

/// What a reload works on: shared by the daemon's signal handling and `Admin.Reload`.
pub(super) struct Reloader {
    pub(super) source: Source,
    pub(super) tls: Arc<ReloadableTls>,
    pub(super) shared: Arc<Shared>,
    pub(super) upkeep: Arc<Upkeep>,
}

impl crate::api::Reload for Reloader {
    fn reload(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = v1::ReloadResponse> + Send + '_>> {
        Box::pin(async move { Reloader::reload(self).await.to_proto() })
    }
}

impl Reloader {
    async fn reload(&self) -> ReloadReport {
        let audit = self.shared.audit.reopen().await;
        let report = self.apply_file(audit);
        self.record(&report).await;
        report
    }

    /// Reads the configuration file and puts its live settings in force; `audit` is
    /// how reopening the audit log went.
    fn apply_file(&self, audit: Result<Reopened, vault_audit::AuditError>) -> ReloadReport {
        let source = &self.source;
        let mut in_force = source.in_force.lock().unwrap_or_else(|p| p.into_inner());
        let (config, file) = match &source.path {
            None => (Ok(()), in_force.clone()),
            Some(path) => match Config::load(path) {
                Ok(file) => (Ok(()), file),
                Err(e) => (Err(e), in_force.clone()),
            },
        };
        let needs_restart = restart_needed(&in_force, &file);
        let tls = self.tls.reload(&file.tls);
        if tls.is_ok() {
            in_force.tls = file.tls.clone();
        }
        let policies = self.shared.policies.reload_from(&file.policy_dir);
        if policies.is_ok() {
            in_force.policy_dir = file.policy_dir.clone();
        }
        let mut applied = Vec::new();
        if file.log_level != in_force.log_level {
            match source.log_level.as_ref().map(|apply| apply(file.log_level)) {
                Some(Ok(())) => {
                    in_force.log_level = file.log_level;
                    applied.push("log_level");
                }
                Some(Err(e)) => tracing::warn!("log_level: the new level was not applied: {e}"),
                None => {}
            }
        }
        let apikeys = ApiKeysConfig {
            // The limiter is sized once.
            limiter_entries: in_force.apikeys.limiter_entries,
            ..file.apikeys.clone()
        };
        if apikeys != in_force.apikeys {
            self.upkeep
                .replace_api_key_settings(api_key_settings(&apikeys));
            in_force.apikeys = apikeys;
            applied.push("apikeys");
        }
        ReloadReport {
            config,
            tls,
            policies,
            audit,
            applied,
            needs_restart,
        }
    }

    /// Logs the report, part by part, and audits it.
    async fn record(&self, report: &ReloadReport) {
        let mut event = Event {
            decision: if report.is_complete() {
                Decision::Allow
            } else {
                Decision::Error
            },
            ..Event::default()
        };
        let mut parts = report.parts(self.source.path.is_some());
        if !report.needs_restart.is_empty() {
            let keys: Vec<_> = report.needs_restart.iter().map(|r| r.0).collect();
            parts.push((
                "needs_restart",
                Err(format!(
                    "changed but in force only after a restart: {}",
                    keys.join(", ")
                )),
            ));
        }
        for (part, outcome) in parts {
            match &outcome {
                Ok(done) => tracing::info!("reload: {part}: {done}"),
                Err(e) => tracing::warn!("reload: {part}: {e}"),
            }
            event
                .detail
                .insert(part.to_owned(), outcome.unwrap_or_else(|e| e));
        }
        if let Err(e) = system_event(&self.shared.audit, "system.reload", event).await {
            tracing::error!("the reload could not be audited: {e}");
        }
    }
}

/// The settings that differ between `running` and `file` and take a restart.
fn restart_needed(running: &Config, file: &Config) -> Vec<Restart> {
    let differs = [
        ("node", running.node != file.node),
        ("listen.grpc", running.listen.grpc != file.listen.grpc),
        ("listen.http", running.listen.http != file.listen.http),
        ("listen.socket", running.listen.socket != file.listen.socket),
        ("tls.identities", running.identities != file.identities),
        ("storage", running.storage != file.storage),
        ("cluster", running.cluster != file.cluster),
        ("audit", running.audit != file.audit),
        ("leases", running.leases != file.leases),
        ("limits", running.limits != file.limits),
        ("keys", running.keys != file.keys),
        ("seal", running.seal != file.seal),
        ("breakglass", running.breakglass != file.breakglass),
        ("anomalies", running.anomalies != file.anomalies),
        (
            "apikeys.limiter_entries",
            running.apikeys.limiter_entries != file.apikeys.limiter_entries,
        ),
    ];
    differs
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(Restart(key)))
        .collect()
}
