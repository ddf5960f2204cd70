//! What the daemon does with custody on its own, not on a request: sweeps, gauges,
//! the grace sweep, the rewrap pass and the seal state for health reporting. Only
//! the daemon's own tasks hold an [`Upkeep`].

use std::sync::Arc;

use tokio::sync::watch;

use super::Held;
use crate::cluster::{InStep, Notice};
use crate::error::{Error, Result};
use crate::leases::{RevocationReason, Selector};
use crate::names::{SecretId, TenantId};
use crate::storage::Store;
use crate::vault::{SealState, SweepItem};

/// Custody for the daemon's own tasks.
pub(crate) struct Upkeep {
    pub(super) held: Arc<Held>,
}

/// Versions of one secret disabled by the grace sweep.
pub(crate) struct Disabled {
    /// The version.
    pub(crate) version: u64,
    /// Leases on it revoked.
    pub(crate) leases_revoked: usize,
}

impl Upkeep {
    pub(super) fn new(held: Arc<Held>) -> Self {
        Self { held }
    }

    /// Unix seconds now, by the daemon's clock: what grace windows end by.
    pub(crate) fn now_unix(&self) -> u64 {
        vault_crypto::clock::unix_seconds(self.held.clock.now())
    }

    /// Monotonic time now, by the daemon's clock: what the grace sweep is paced by.
    pub(crate) fn instant(&self) -> std::time::Instant {
        self.held.clock.instant()
    }

    /// The lifecycle state alone, without reading storage (health, gauges).
    pub(crate) fn seal_state(&self) -> SealState {
        self.held.vault.seal_state()
    }

    /// Lifecycle changes as they happen, for health reporting.
    pub(crate) fn watch_seal_state(&self) -> watch::Receiver<SealState> {
        self.held.vault.watch_seal_state()
    }

    /// Puts reloaded `[apikeys]` settings in force (tiers, the tenant limit, the
    /// default tier and grace, the cache, the per-tenant maximum).
    pub(crate) fn replace_api_key_settings(&self, settings: super::ApiKeySettings) {
        self.held.apikeys.replace_settings(settings);
    }

    /// Ends every revocation watch: the daemon is stopping, and a stream left open
    /// would hold its connection through the whole drain.
    pub(crate) fn end_watches(&self) {
        self.held.stopping.send_replace(true);
    }

    /// Drops expired sessions and leases.
    pub(crate) fn sweep(&self) {
        self.held.sessions.sweep();
        self.held.leases.sweep();
    }

    /// Active leases, sessions and unwrapped tenant keys held now, for gauges.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (
            self.held.leases.len(),
            self.held.sessions.len(),
            self.held.vault.cached_tenant_keys(),
        )
    }

    /// Secrets with a version past its grace window at `now_unix`.
    pub(crate) fn sweep_candidates(&self, now_unix: u64) -> Result<Vec<SweepItem>> {
        self.held.vault.sweep_candidates(now_unix)
    }

    /// Disables the versions of `id` past their grace window at `now_unix` and
    /// revokes the leases on them.
    pub(crate) fn disable_expired(&self, id: &SecretId, now_unix: u64) -> Result<Vec<Disabled>> {
        let versions = self.held.vault.disable_expired(id, now_unix)?;
        Ok(versions
            .into_iter()
            .map(|version| Disabled {
                version,
                leases_revoked: self
                    .held
                    .leases
                    .revoke(
                        &Selector::Version(id.clone(), version),
                        RevocationReason::VersionDisabled,
                    )
                    .len(),
            })
            .collect())
    }

    /// Queues, after an unseal, the tenants whose secrets are under older keys.
    pub(crate) fn queue_stale_tenants(&self) -> Result<usize> {
        self.held.vault.queue_stale_tenants()
    }

    /// Rewraps the next queued tenant's secrets under its current key.
    pub(crate) fn rewrap_step(&self) -> Result<Option<(TenantId, usize)>> {
        self.held.vault.rewrap_step()
    }

    /// What following the store's change log needs: the store, and where to record
    /// that this node is in step.
    pub(crate) fn change_log(&self) -> (Arc<dyn Store>, Arc<InStep>) {
        (
            Arc::clone(self.held.vault.store()),
            Arc::clone(&self.held.in_step),
        )
    }

    /// How long since this node last read the change log to its end; `None` when its
    /// store is its alone.
    pub(crate) fn change_log_behind(&self) -> Option<std::time::Duration> {
        self.held.in_step.behind()
    }

    /// Acts on another node's notice: ends the leases it names (telling their
    /// holders), forgets a tenant's cached keys, tells verifiers of a revoked API key,
    /// or reads the break-glass grants again (which can fail: the store).
    pub(crate) fn apply_notice(&self, notice: &Notice) -> Result<()> {
        match notice {
            Notice::RevokeLeases(selector, reason) => {
                self.held.leases.revoke(selector, *reason);
            }
            Notice::TenantKeys(tenant) => self.held.vault.forget_tenant_keys(Some(tenant)),
            Notice::ApiKeyRevoked(id) => self.held.apikeys.notify_revoked(id),
            Notice::BreakGlass => self.held.breakglass.reload()?,
            Notice::Seal | Notice::RootRotated => {
                // Sealing is the safe direction: a node already sealed stays so. After
                // a rotation, a node that joins asks the others for the new root.
                let rejoin = matches!(notice, Notice::RootRotated) && self.held.terms.joins;
                let sealed = self.held.seal_and_rejoin(rejoin);
                if let Err(e) = sealed.vault
                    && !matches!(e, Error::Sealed | Error::Uninitialised)
                {
                    tracing::error!("sealing for the cluster: {e}");
                }
            }
        }
        Ok(())
    }

    /// Forgets every cached tenant key.
    pub(crate) fn forget_all_tenant_keys(&self) {
        self.held.vault.forget_tenant_keys(None);
    }

    /// Revokes every lease: the fuzz harness keeps the lease table small this way.
    pub(crate) fn revoke_all_leases(&self) -> usize {
        self.held
            .leases
            .revoke(&Selector::All, RevocationReason::Revoked)
            .len()
    }
}
