//! Leases through custody: issuing one (the value opened, the lease recorded, the
//! value sealed to the caller's session under the lease's own associated data),
//! withdrawing one whose answer could not be given, renewing and revoking one's own
//! (revoking it through any node that shares the store).

use std::time::{Duration, SystemTime};

use vault_crypto::session::SessionAad;

use super::Custody;
use crate::authz::{Authorized, LeaseOp, OwnLeasesOp};
use crate::cluster::Notice;
use crate::error::Error;
use crate::ids::LeaseId;
use crate::leases::{Lease, LeaseLimit, RevocationReason, Selector};
use crate::sessions::Session;

/// The latest lease end representable everywhere (year 2262 in Unix nanoseconds).
const MAX_TIME: Duration = Duration::from_secs(i64::MAX as u64 / 1_000_000_000);

/// A lease just issued.
pub(crate) struct Issued {
    /// The lease as recorded.
    pub(crate) lease: Lease,
    /// The value, sealed to the caller's session.
    pub(crate) envelope: Vec<u8>,
}

/// Why a lease was not issued.
#[derive(Debug)]
pub(crate) enum LeaseError {
    /// The vault refused or failed (sealed, unknown version, ...).
    Vault(Error),
    /// A lease bound was reached, or a revocation covered the lease as it was made.
    Limit {
        /// Which.
        limit: LeaseLimit,
        /// The version that was opened.
        version: u64,
    },
}

impl From<Error> for LeaseError {
    fn from(e: Error) -> Self {
        LeaseError::Vault(e)
    }
}

impl Custody {
    /// Issues a lease on the granted secret to the caller, for `ttl_seconds` (0: the
    /// default), capped by the grant's `max_ttl`; its value sealed to `session`.
    pub(crate) fn lease(
        &self,
        grant: &Authorized<LeaseOp>,
        session: &Session,
        ttl_seconds: u32,
        version: Option<u64>,
    ) -> Result<Issued, LeaseError> {
        // Revocations made on other nodes up to the bound ago are in force here.
        self.held.in_step.check()?;
        let terms = &self.held.terms;
        let leases = &self.held.leases;
        let id = &grant.op().0;
        let max_ttl = grant.max_ttl.unwrap_or(terms.default_ttl);
        let ttl = match ttl_seconds {
            0 => terms.default_ttl,
            n => Duration::from_secs(u64::from(n)),
        }
        .min(max_ttl);
        // Bounded by the policy (at most 30 days); a clock near the end of time saturates.
        let now = self.held.clock.now();
        let after = |d: Duration| {
            now.checked_add(d)
                .unwrap_or(SystemTime::UNIX_EPOCH + MAX_TIME)
        };
        // Revocations from here on (a seal, an erasure) must cover this lease too.
        let generation = leases.generation();
        let (value, version) = self.held.vault.open_secret(id, version)?;
        let lease_id = LeaseId::generate().map_err(|e| LeaseError::Vault(e.into()))?;
        let lease = Lease {
            id: lease_id.clone(),
            identity: grant.identity().clone(),
            secret: id.clone(),
            version,
            issued: now,
            expires: after(ttl),
            renewable_until: after(max_ttl),
        };
        let per_identity = grant.max_active_leases.unwrap_or(terms.max_per_identity);
        leases
            .insert(lease.clone(), per_identity, generation)
            .map_err(|limit| LeaseError::Limit { limit, version })?;
        let aad = SessionAad::lease(
            id.tenant.as_str(),
            id.environment.as_str(),
            id.name.as_str(),
            version,
            lease_id.as_str(),
        );
        let envelope = session.key.seal(&aad, value.expose_secret()).map_err(|e| {
            leases.remove(grant.identity(), &lease_id);
            LeaseError::Vault(e.into())
        })?;
        Ok(Issued { lease, envelope })
    }

    /// Takes back, without a notice, a lease whose answer could not be given.
    pub(crate) fn withdraw_lease(&self, grant: &Authorized<LeaseOp>, id: &LeaseId) {
        self.held.leases.remove(grant.identity(), id);
    }

    /// Whether the caller's lease `id` is still live (not revoked since issued).
    pub(crate) fn lease_is_live(&self, grant: &Authorized<LeaseOp>, id: &LeaseId) -> bool {
        self.held.leases.is_live(grant.identity(), id)
    }

    /// The caller's own live lease `id`.
    pub(crate) fn own_lease(&self, grant: &Authorized<OwnLeasesOp>, id: &LeaseId) -> Option<Lease> {
        self.held.leases.get(grant.identity(), id)
    }

    /// Revokes the caller's own lease `id`, telling its watchers why. Says whether
    /// there was one.
    pub(crate) fn revoke_own(
        &self,
        grant: &Authorized<OwnLeasesOp>,
        id: &LeaseId,
        reason: RevocationReason,
    ) -> bool {
        if self.held.leases.get(grant.identity(), id).is_none() {
            return false;
        }
        !self
            .held
            .leases
            .revoke(&Selector::Id(id.clone()), reason)
            .is_empty()
    }

    /// Revokes the caller's own lease `id` wherever it was issued, when this node shares
    /// its store with others: the revocation goes through the change log, and the node
    /// holding the lease ends it if this caller holds it. `false` on a store this node
    /// has alone, where a lease it does not hold exists nowhere.
    pub(crate) fn revoke_own_elsewhere(
        &self,
        grant: &Authorized<OwnLeasesOp>,
        id: &LeaseId,
    ) -> Result<bool, Error> {
        if self.held.vault.store().change_log().is_none() {
            return Ok(false);
        }
        let held = Selector::Held(id.clone(), grant.identity().clone());
        self.held
            .vault
            .announce(&Notice::RevokeLeases(held, RevocationReason::Revoked))?;
        Ok(true)
    }

    /// Renews the caller's lease `id` on the granted secret for `ttl_seconds` (0: the
    /// default), capped by the grant's current `max_ttl` from its issue. Returns the
    /// new expiry, or `None` if the caller holds no such live lease.
    pub(crate) fn renew(
        &self,
        grant: &Authorized<LeaseOp>,
        id: &LeaseId,
        ttl_seconds: u32,
    ) -> Option<SystemTime> {
        let terms = &self.held.terms;
        let leases = &self.held.leases;
        leases
            .get(grant.identity(), id)
            .filter(|lease| lease.secret == grant.op().0)?;
        let ttl = match ttl_seconds {
            0 => terms.default_ttl,
            n => Duration::from_secs(u64::from(n)),
        };
        let max_ttl = grant.max_ttl.unwrap_or(terms.default_ttl);
        leases.renew(grant.identity(), id, ttl, max_ttl)
    }
}
