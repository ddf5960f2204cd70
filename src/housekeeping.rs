//! What the daemon does on its own while it serves: follows the change log of a store
//! other nodes share (see `cluster`), sweeps expired sessions and leases, keeps gauges and `grpc.health.v1` true, disables versions past their grace
//! window (revoking their leases), rewraps tenants' secrets after key rotations, and
//! tells the operator when the audit log fails or runs short of space.
//!
//! Anything that touches storage runs on the blocking pool, and every unit of work
//! stands alone: a failure or a corrupt record is logged, counted and skipped, never
//! a reason to stop or to drop work already done.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use vault_audit::{AuditLog, Event};

use crate::api::Shared;
use crate::audit::system_event;
use crate::custody::{Disabled, Upkeep};
use crate::vault::{SealState, SweepItem};

/// How often expired sessions and leases are swept and gauges refreshed.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often rotated-out versions past their grace window are disabled.
const GRACE_SWEEP: Duration = Duration::from_secs(5);
/// Corrupt records remembered, so each is logged once.
const REPORTED_CORRUPT: usize = 1024;

/// Starts every background task of a serving daemon.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    upkeep: &Arc<Upkeep>,
    health: tonic_health::server::HealthReporter,
    stopped: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let tasks = Tasks {
        shared: Arc::clone(shared),
        upkeep: Arc::clone(upkeep),
    };
    let (store, in_step) = upkeep.change_log();
    let apply: Arc<dyn crate::cluster::Apply> = Arc::clone(upkeep) as _;
    vec![
        tokio::spawn(crate::cluster::follow(
            store,
            in_step,
            apply,
            shared.audit.clone(),
            stopped.clone(),
        )),
        tokio::spawn(housekeeping(tasks.clone(), stopped.clone())),
        tokio::spawn(report_health(tasks.clone(), health, stopped.clone())),
        tokio::spawn(rewrap_pass(tasks, stopped.clone())),
    ]
}

/// What the background tasks work with: the audit log, refusal budget and metrics
/// the services share, and custody's upkeep handle.
#[derive(Clone)]
struct Tasks {
    shared: Arc<Shared>,
    upkeep: Arc<Upkeep>,
}

/// Keeps `grpc.health.v1` true: the overall status (`""`) and `vault.v1.Broker` are
/// `SERVING` only while unsealed with a working audit log, and change the moment the
/// vault seals or unseals (the audit log is looked at every second). `vault.v1.Admin`
/// stays `SERVING`: it serves status and unseal while sealed.
async fn report_health(
    tasks: Tasks,
    health: tonic_health::server::HealthReporter,
    mut stopped: watch::Receiver<bool>,
) {
    let shared = &tasks.shared;
    let mut changes = tasks.upkeep.watch_seal_state();
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
async fn housekeeping(tasks: Tasks, mut stopped: watch::Receiver<bool>) {
    let (shared, upkeep) = (&tasks.shared, &tasks.upkeep);
    let mut reported = HashSet::new();
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_grace_sweep = upkeep.instant();
    let mut audit_state = AuditState::Healthy;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
        upkeep.sweep();
        audit_state = audit_state.report(&shared.audit, &shared.alerts);
        shared.metrics.audit_state.set(audit_state as i64);
        for summary in shared
            .refusals
            .drain()
            .into_iter()
            .chain(upkeep.limit_summaries())
        {
            if let Err(e) = shared.audit.append(summary).await {
                tracing::error!("a summary of refused requests could not be audited: {e}");
            }
        }
        flush_quotas(upkeep).await;
        // Paced by the daemon's clock, checked every tick.
        let now = upkeep.instant();
        if now.saturating_duration_since(last_grace_sweep) >= GRACE_SWEEP {
            last_grace_sweep = now;
            sweep_grace(&tasks, &mut reported).await;
            upkeep.sweep_limiters();
        }
        let sealed = match upkeep.seal_state() {
            SealState::Unsealed => 0,
            SealState::Sealed => 1,
            SealState::Uninitialised => 2,
        };
        let m = &shared.metrics;
        let (leases, sessions, cached) = upkeep.counts();
        m.sealed.set(sealed);
        m.leases.set(i64::try_from(leases).unwrap_or(i64::MAX));
        m.sessions.set(i64::try_from(sessions).unwrap_or(i64::MAX));
        m.audit_records
            .set(i64::try_from(shared.audit.appended()).unwrap_or(i64::MAX));
        m.tenant_keys_cached
            .set(i64::try_from(cached).unwrap_or(i64::MAX));
        m.change_log_behind
            .set(upkeep.change_log_behind().map_or(-1, |behind| {
                i64::try_from(behind.as_millis()).unwrap_or(i64::MAX)
            }));
        m.observe_locked_memory();
        m.audit_free_bytes.set(
            shared
                .audit
                .free_bytes()
                .map_or(-1, |free| i64::try_from(free).unwrap_or(i64::MAX)),
        );
    }
}

/// Writes the quota usage counted since the last tick, on the blocking pool.
async fn flush_quotas(upkeep: &Arc<Upkeep>) {
    let upkeep = Arc::clone(upkeep);
    match tokio::task::spawn_blocking(move || upkeep.flush_quotas()).await {
        Ok(Ok(_)) | Err(_) => {}
        // Sealed: usage stays counted in memory until it can be written.
        Ok(Err(crate::Error::Sealed | crate::Error::Uninitialised)) => {}
        Ok(Err(e)) => tracing::warn!("quota usage could not be written yet: {e}"),
    }
}

/// What the operator was last told about the audit log; its number is the
/// `vaultd_audit_state` gauge.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AuditState {
    Healthy = 0,
    LowSpace = 1,
    Failed = 2,
}

impl AuditState {
    /// Logs a change of the audit log's state, once, and raises an alert when it
    /// fails or runs short of space (the log itself cannot tell of that).
    fn report(self, audit: &AuditLog, alerts: &crate::alerts::Alerts) -> Self {
        let now = if audit.failure().is_some() {
            AuditState::Failed
        } else if audit.low_space() {
            AuditState::LowSpace
        } else {
            AuditState::Healthy
        };
        let alert = |kind: &str| {
            alerts.raise(crate::alerts::Alert::new(
                kind,
                crate::alerts::Severity::Critical,
            ))
        };
        match (self, now) {
            (before, after) if before == after => {}
            (_, AuditState::Failed) => {
                tracing::error!(
                    "the audit log failed ({}); every request that must be audited is refused \
                     until the log can be written again: a FIFO is opened again every second \
                     until it has a reader; a file must be moved aside, then reload (SIGHUP) \
                     continues the chain in a new one",
                    audit.failure().unwrap_or_default()
                );
                alert("audit.failed");
            }
            (AuditState::Failed, AuditState::Healthy) => {
                tracing::info!("the audit log can be written again; requests are served")
            }
            (_, AuditState::LowSpace) => {
                tracing::warn!(
                    "the audit log's disk is short of space ({} bytes free); requests are \
                     refused until space is freed (audit.min_free)",
                    audit
                        .free_bytes()
                        .map_or_else(|| "unknown".to_owned(), |b| b.to_string())
                );
                alert("audit.low_space");
            }
            (_, AuditState::Healthy) => {
                tracing::info!("the audit log has space again; requests are served")
            }
        }
        now
    }
}

/// Disables every version past its grace window. Each secret is one unit, in order:
/// its versions disabled in storage, their leases revoked, and a record of it; a
/// failure is logged and the sweep goes on with the next. Corrupt records are
/// logged (once each), counted and skipped.
async fn sweep_grace(tasks: &Tasks, reported: &mut HashSet<String>) {
    let shared = &tasks.shared;
    let now = tasks.upkeep.now_unix();
    let candidates = {
        let upkeep = Arc::clone(&tasks.upkeep);
        tokio::task::spawn_blocking(move || upkeep.sweep_candidates(now)).await
    };
    // Sealed or uninitialised: nothing can be swept, and nothing needs to be.
    let Ok(Ok(items)) = candidates else {
        return;
    };
    let mut corrupt = 0i64;
    for item in items {
        let id = match item {
            SweepItem::Expired(id) => id,
            SweepItem::Corrupt(error) => {
                corrupt += 1;
                if reported.len() < REPORTED_CORRUPT && reported.insert(error.key.clone()) {
                    tracing::warn!("the grace sweep skips a corrupt record: {error}");
                }
                continue;
            }
        };
        let disabled = {
            let (upkeep, id) = (Arc::clone(&tasks.upkeep), id.clone());
            tokio::task::spawn_blocking(move || upkeep.disable_expired(&id, now)).await
        };
        let versions = match disabled {
            Ok(Ok(versions)) => versions,
            Ok(Err(e)) => {
                shared.metrics.sweep_failures.inc();
                tracing::error!("the grace sweep could not disable versions of {id}: {e}");
                continue;
            }
            Err(_) => {
                shared.metrics.sweep_failures.inc();
                continue;
            }
        };
        for Disabled {
            version,
            leases_revoked,
        } in versions
        {
            let mut event = Event {
                tenant: Some(id.tenant.to_string()),
                environment: Some(id.environment.to_string()),
                secret: Some(id.name.to_string()),
                version: Some(version),
                reason: "grace window ended: version disabled".to_owned(),
                ..Event::default()
            };
            event
                .detail
                .insert("leases_revoked".into(), leases_revoked.to_string());
            if let Err(e) = system_event(&shared.audit, "system.disable_version", event).await {
                tracing::error!(
                    "disabling version {version} of {id} past its grace window could not be audited: {e}"
                );
            }
        }
    }
    shared.metrics.corrupt_records.set(corrupt);
}

/// After every unseal, queues the tenants that hold more than one key version; then
/// rewraps their secrets under their current keys, a tenant at a time, while the
/// vault serves. Each tenant's pass is audited.
async fn rewrap_pass(tasks: Tasks, mut stopped: watch::Receiver<bool>) {
    let shared = &tasks.shared;
    let mut changes = tasks.upkeep.watch_seal_state();
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queued_since_unseal = false;
    loop {
        let unsealed = *changes.borrow_and_update() == SealState::Unsealed;
        if !unsealed {
            queued_since_unseal = false;
        } else if !queued_since_unseal {
            let upkeep = Arc::clone(&tasks.upkeep);
            match tokio::task::spawn_blocking(move || upkeep.queue_stale_tenants()).await {
                Ok(Ok(_)) => queued_since_unseal = true,
                Ok(Err(e)) => tracing::error!("cannot look for tenants to rewrap: {e}"),
                Err(_) => {}
            }
        }
        while unsealed && !*stopped.borrow() {
            let upkeep = Arc::clone(&tasks.upkeep);
            match tokio::task::spawn_blocking(move || upkeep.rewrap_step()).await {
                Ok(Ok(Some((tenant, rewritten)))) => {
                    if rewritten > 0 {
                        tracing::info!(
                            "rewrapped {rewritten} secrets of tenant {tenant} under its current key"
                        );
                    }
                    let mut event = Event {
                        tenant: Some(tenant.to_string()),
                        reason: "secrets rewrapped under the current tenant key".to_owned(),
                        ..Event::default()
                    };
                    event
                        .detail
                        .insert("secrets_rewrapped".into(), rewritten.to_string());
                    if let Err(e) = system_event(&shared.audit, "system.rewrap", event).await {
                        tracing::error!("a rewrap of tenant {tenant} could not be audited: {e}");
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::error!("the rewrap pass stopped for now: {e}");
                    break;
                }
                Err(_) => break,
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
    }
}
