//! Break-glass access: an identity asks for extra admin permissions on some tenants,
//! for a bounded time and with a reason; M distinct other identities holding
//! `breakglass.approve` approve; the grant then adds those permissions to its
//! requester alone until it expires, is revoked, or the vault is sealed.
//!
//! - Only permissions that act on one tenant can be granted, and none of them returns
//!   a secret's value: a grant can never do what no role can.
//! - A policy `deny` still wins over a grant: break-glass only fills in where the
//!   policies decided nothing (default deny).
//! - Grants are stored (a restart keeps them), each pending or active one under an
//!   HMAC the vault checks before believing it (see `vault::breakglass`).
//! - Open grants are bounded per requester and in all, ended ones kept up to a bound:
//!   a caller with a certificate and no permission cannot grow them without limit.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use vault_crypto::clock::{SharedClock, unix_seconds};
use vault_policy::Permission;
use vault_policy::pattern::Pattern;

use crate::authz::{ApproveBreakGlassOp, Authorized, OwnBreakGlassOp, RequestBreakGlassOp};
use crate::ids::BreakGlassId;
use crate::records::{BreakGlassGrant, BreakGlassRecord, BreakGlassState};
use crate::vault::Vault;

/// Permissions a grant may add: each acts on one tenant, none returns plaintext.
pub(crate) const GRANTABLE: [Permission; 8] = Permission::PER_TENANT;

/// Open (pending or active) grants one identity may have asked for.
const OPEN_PER_REQUESTER: usize = 4;
/// Open grants in all.
const OPEN_IN_ALL: usize = 64;
/// Ended grants kept for `ListBreakGlass`; the oldest beyond are forgotten.
const ENDED_KEPT: usize = 256;
/// Tenant patterns one grant may name.
const MAX_TENANTS: usize = 16;
/// The longest reason, in characters.
const MAX_REASON: usize = 512;

/// `[breakglass]` in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakGlassConfig {
    /// Distinct approvers a grant needs (never counting its requester).
    pub approvals: u32,
    /// The longest a grant may last once active.
    pub max_duration: Duration,
    /// How long a grant may wait for its approvals before it lapses.
    pub pending_for: Duration,
}

impl Default for BreakGlassConfig {
    fn default() -> Self {
        Self {
            approvals: 2,
            max_duration: Duration::from_secs(4 * 3600),
            pending_for: Duration::from_secs(3600),
        }
    }
}

/// What a requester asks for.
pub(crate) struct Ask {
    pub(crate) permissions: Vec<String>,
    pub(crate) tenants: Vec<String>,
    pub(crate) duration: Duration,
    pub(crate) reason: String,
}

/// Why a break-glass request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BreakGlassError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such break-glass grant")]
    NotFound,
    #[error("the grant is {0}, not pending")]
    NotPending(&'static str),
    #[error("the grant has already ended")]
    Ended,
    #[error("a requester cannot approve its own break-glass grant")]
    SelfApproval,
    #[error("this identity has already approved the grant")]
    AlreadyApproved,
    #[error("{0}")]
    TooMany(String),
    #[error("the stored grant fails its integrity check (see the daemon's log)")]
    Tampered,
    #[error("the grant was changed meanwhile (on another node); look at it again and retry")]
    Changed,
    #[error(transparent)]
    Vault(#[from] crate::Error),
}

/// A grant as held in memory: the stored record and whether its MAC verified
/// (unknown until the vault could check it).
struct Entry {
    record: BreakGlassRecord,
    authentic: AtomicU8,
}

const UNCHECKED: u8 = 0;
const AUTHENTIC: u8 = 1;
const FORGED: u8 = 2;

impl Entry {
    fn new(record: BreakGlassRecord, authentic: u8) -> Self {
        Self {
            record,
            authentic: AtomicU8::new(authentic),
        }
    }
}

/// Who ends a grant early.
pub(crate) enum Revoker<'a> {
    /// A holder of `breakglass.approve`: any grant.
    Approver(&'a Authorized<ApproveBreakGlassOp>),
    /// Anyone: its own grants.
    Requester(&'a Authorized<OwnBreakGlassOp>),
}

/// The node's break-glass grants, newest last.
pub(crate) struct BreakGlass {
    vault: Arc<Vault>,
    config: BreakGlassConfig,
    clock: SharedClock,
    grants: RwLock<Vec<Entry>>,
    /// One change at a time: stored first, then in memory.
    changing: Mutex<()>,
}

impl BreakGlass {
    /// The grants stored in `vault`'s store (their MACs checked once it is unsealed).
    pub(crate) fn load(
        vault: Arc<Vault>,
        config: BreakGlassConfig,
        clock: SharedClock,
    ) -> crate::Result<Self> {
        let mut stored = vault.stored_grants()?;
        stored.sort_by_key(|r| r.grant.requested_unix);
        Ok(Self {
            grants: RwLock::new(
                stored
                    .into_iter()
                    .map(|r| Entry::new(r, UNCHECKED))
                    .collect(),
            ),
            vault,
            config,
            clock,
            changing: Mutex::new(()),
        })
    }

    fn now(&self) -> u64 {
        unix_seconds(self.clock.now())
    }

    /// The grant as it stands at `now`: a pending grant past its approval window has
    /// lapsed, an active one past its end has expired.
    fn effective(&self, grant: &BreakGlassGrant, now: u64) -> BreakGlassState {
        match grant.state {
            BreakGlassState::Pending => {
                let lapses = grant
                    .requested_unix
                    .saturating_add(self.config.pending_for.as_secs());
                if now >= lapses {
                    ended(lapses, "lapsed", "")
                } else {
                    BreakGlassState::Pending
                }
            }
            BreakGlassState::Active { until, .. } if now >= until => ended(until, "expired", ""),
            ref state => state.clone(),
        }
    }

    fn is_open(&self, grant: &BreakGlassGrant, now: u64) -> bool {
        !matches!(self.effective(grant, now), BreakGlassState::Ended { .. })
    }

    /// Whether `entry`'s MAC verifies, checked once; `Err` while the vault is sealed
    /// and the entry was not checked yet.
    fn check(&self, entry: &Entry) -> crate::Result<bool> {
        match entry.authentic.load(Ordering::Acquire) {
            AUTHENTIC => Ok(true),
            FORGED => Ok(false),
            _ => {
                let authentic = self.vault.grant_is_authentic(&entry.record)?;
                entry.authentic.store(
                    if authentic { AUTHENTIC } else { FORGED },
                    Ordering::Release,
                );
                if !authentic {
                    tracing::error!(
                        grant = %entry.record.grant.id,
                        "a stored break-glass grant fails its integrity check; it grants nothing"
                    );
                }
                Ok(authentic)
            }
        }
    }

    /// As [`BreakGlass::check`]; while sealed, nothing it could grant is served anyway.
    fn authentic(&self, entry: &Entry) -> bool {
        self.check(entry).unwrap_or(false)
    }

    /// The id of an active grant of `identity` that adds `permission` on `tenant`
    /// (`None`: on some tenant, for a lookup before the target's tenant is known).
    pub(crate) fn covering(
        &self,
        identity: &str,
        permission: Permission,
        tenant: Option<&str>,
    ) -> Option<String> {
        let now = self.now();
        let grants = self.grants.read().unwrap_or_else(|p| p.into_inner());
        grants
            .iter()
            .rev()
            .find(|e| {
                let g = &e.record.grant;
                g.requester == identity
                    && matches!(self.effective(g, now), BreakGlassState::Active { .. })
                    && g.permissions.iter().any(|p| p == permission.as_str())
                    && tenant.is_none_or(|tenant| {
                        g.tenants
                            .iter()
                            .any(|t| Pattern::parse(t).is_ok_and(|p| p.matches(tenant).is_some()))
                    })
                    && self.authentic(e)
            })
            .map(|e| e.record.grant.id.clone())
    }

    /// Asks for a grant: validated, bounded, stored pending.
    pub(crate) fn request(
        &self,
        proof: &Authorized<RequestBreakGlassOp>,
        ask: Ask,
    ) -> Result<BreakGlassGrant, BreakGlassError> {
        let ask = self.validate(ask)?;
        let requester = proof.identity().as_str();
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now();
        let (mine, open, ended) = {
            let grants = self.grants.read().unwrap_or_else(|p| p.into_inner());
            let open: Vec<&Entry> = grants
                .iter()
                .filter(|e| self.is_open(&e.record.grant, now))
                .collect();
            let mine = open
                .iter()
                .filter(|e| e.record.grant.requester == requester)
                .count();
            let ended: Vec<String> = grants
                .iter()
                .filter(|e| !self.is_open(&e.record.grant, now))
                .map(|e| e.record.grant.id.clone())
                .collect();
            (mine, open.len(), ended)
        };
        if mine >= OPEN_PER_REQUESTER {
            return Err(BreakGlassError::TooMany(format!(
                "this identity has {OPEN_PER_REQUESTER} break-glass grants pending or active; \
                 revoke one first"
            )));
        }
        if open >= OPEN_IN_ALL {
            return Err(BreakGlassError::TooMany(format!(
                "{OPEN_IN_ALL} break-glass grants are pending or active; revoke some first"
            )));
        }
        let excess = ended.len().saturating_sub(ENDED_KEPT - 1);
        let forget: Vec<String> = ended.into_iter().take(excess).collect();
        let id = BreakGlassId::generate().map_err(crate::Error::Crypto)?;
        let grant = BreakGlassGrant {
            id: id.to_string(),
            requester: requester.to_owned(),
            permissions: ask.permissions,
            tenants: ask.tenants,
            duration_secs: ask.duration.as_secs(),
            reason: ask.reason,
            requested_unix: now,
            required: self.config.approvals,
            approvals: Vec::new(),
            state: BreakGlassState::Pending,
        };
        if !self.vault.store_grant(&grant, None, &forget)? {
            self.reload()?;
            return Err(BreakGlassError::Changed);
        }
        let mut grants = self.grants.write().unwrap_or_else(|p| p.into_inner());
        grants.retain(|e| !forget.contains(&e.record.grant.id));
        grants.push(Entry::new(
            BreakGlassRecord {
                grant: grant.clone(),
                mac: None,
            },
            AUTHENTIC,
        ));
        Ok(grant)
    }

    /// `ask` checked and put in canonical order (sorted, without repeats).
    pub(crate) fn validate(&self, mut ask: Ask) -> Result<Ask, BreakGlassError> {
        let invalid = |s: String| Err(BreakGlassError::Invalid(s));
        let grantable = || {
            GRANTABLE
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if ask.permissions.is_empty() {
            return invalid(format!("name the permissions to grant: {}", grantable()));
        }
        for p in &ask.permissions {
            if !GRANTABLE.iter().any(|g| g.as_str() == p) {
                return invalid(format!(
                    "{:?} cannot be granted by break-glass; it can grant: {}",
                    p.chars().take(64).collect::<String>(),
                    grantable()
                ));
            }
        }
        ask.permissions.sort();
        ask.permissions.dedup();
        if ask.tenants.is_empty() || ask.tenants.len() > MAX_TENANTS {
            return invalid(format!(
                "name 1 to {MAX_TENANTS} tenants (ids or globs such as acme-*)"
            ));
        }
        for t in &ask.tenants {
            let valid = (1..=63).contains(&t.len())
                && t.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'*')
                });
            if !valid || Pattern::parse(t).is_err() {
                return invalid(format!(
                    "tenant {:?}: use a tenant id or a glob of a-z, 0-9, '-', '_' and '*'",
                    t.chars().take(64).collect::<String>()
                ));
            }
        }
        ask.tenants.sort();
        ask.tenants.dedup();
        if ask.duration < Duration::from_secs(1) || ask.duration > self.config.max_duration {
            return invalid(format!(
                "the duration must be 1 s to {} ([breakglass] max_duration)",
                humantime::format_duration(self.config.max_duration)
            ));
        }
        let reason = ask.reason.trim();
        if reason.is_empty()
            || reason.chars().count() > MAX_REASON
            || reason.chars().any(char::is_control)
        {
            return invalid(format!(
                "give a reason: 1 to {MAX_REASON} characters on one line"
            ));
        }
        ask.reason = reason.to_owned();
        Ok(ask)
    }

    /// Applies `change` to grant `id` as it stands now, stores the result, and
    /// answers it.
    fn change(
        &self,
        id: &str,
        change: impl FnOnce(&mut BreakGlassGrant, &Entry, u64) -> Result<(), BreakGlassError>,
    ) -> Result<BreakGlassGrant, BreakGlassError> {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now();
        let (was, changed) = {
            let grants = self.grants.read().unwrap_or_else(|p| p.into_inner());
            let entry = grants
                .iter()
                .find(|e| e.record.grant.id == id)
                .ok_or(BreakGlassError::NotFound)?;
            let mut grant = entry.record.grant.clone();
            grant.state = self.effective(&grant, now);
            change(&mut grant, entry, now)?;
            (entry.record.grant.clone(), grant)
        };
        if !self.vault.store_grant(&changed, Some(&was), &[])? {
            self.reload_locked()?;
            return Err(BreakGlassError::Changed);
        }
        let mut grants = self.grants.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = grants.iter_mut().find(|e| e.record.grant.id == id) {
            *entry = Entry::new(
                BreakGlassRecord {
                    grant: changed.clone(),
                    mac: None,
                },
                AUTHENTIC,
            );
        }
        Ok(changed)
    }

    /// Approves grant `id`; the approval that reaches the quorum activates it.
    pub(crate) fn approve(
        &self,
        proof: &Authorized<ApproveBreakGlassOp>,
        id: &str,
    ) -> Result<BreakGlassGrant, BreakGlassError> {
        let approver = proof.identity().as_str();
        self.change(id, |grant, entry, now| {
            match grant.state {
                BreakGlassState::Pending => {}
                BreakGlassState::Active { .. } => {
                    return Err(BreakGlassError::NotPending("active"));
                }
                BreakGlassState::Ended { .. } => return Err(BreakGlassError::NotPending("ended")),
            }
            // Approvals count only on a record the vault vouches for.
            if !self.check(entry)? {
                return Err(BreakGlassError::Tampered);
            }
            if grant.requester == approver {
                return Err(BreakGlassError::SelfApproval);
            }
            if grant.approvals.iter().any(|(who, _)| who == approver) {
                return Err(BreakGlassError::AlreadyApproved);
            }
            grant.approvals.push((approver.to_owned(), now));
            if grant.approvals.len() >= grant.required as usize {
                grant.state = BreakGlassState::Active {
                    since: now,
                    until: now.saturating_add(grant.duration_secs),
                };
            }
            Ok(())
        })
    }

    /// Ends grant `id` now.
    pub(crate) fn revoke(
        &self,
        by: Revoker<'_>,
        id: &str,
    ) -> Result<BreakGlassGrant, BreakGlassError> {
        let (identity, any) = match by {
            Revoker::Approver(p) => (p.identity().as_str(), true),
            Revoker::Requester(p) => (p.identity().as_str(), false),
        };
        self.change(id, |grant, _, now| {
            // Someone else's grant is as unknown to a caller who may not end it.
            if !any && grant.requester != identity {
                return Err(BreakGlassError::NotFound);
            }
            if matches!(grant.state, BreakGlassState::Ended { .. }) {
                return Err(BreakGlassError::Ended);
            }
            grant.state = ended(now, "revoked", identity);
            Ok(())
        })
    }

    /// Every grant as it stands now, newest first: for a holder of
    /// `breakglass.approve`.
    pub(crate) fn list_all(&self, _: &Authorized<ApproveBreakGlassOp>) -> Vec<BreakGlassGrant> {
        self.list(None)
    }

    /// The caller's own grants as they stand now, newest first.
    pub(crate) fn list_own(&self, proof: &Authorized<OwnBreakGlassOp>) -> Vec<BreakGlassGrant> {
        self.list(Some(proof.identity().as_str()))
    }

    fn list(&self, own: Option<&str>) -> Vec<BreakGlassGrant> {
        let now = self.now();
        let grants = self.grants.read().unwrap_or_else(|p| p.into_inner());
        grants
            .iter()
            .rev()
            .filter(|e| own.is_none_or(|me| e.record.grant.requester == me))
            .map(|e| BreakGlassGrant {
                state: self.effective(&e.record.grant, now),
                ..e.record.grant.clone()
            })
            .collect()
    }

    /// Reads every grant again from the store: another node changed one.
    pub(crate) fn reload(&self) -> crate::Result<()> {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        self.reload_locked()
    }

    /// [`BreakGlass::reload`], with `changing` held. Each grant's MAC is checked again
    /// before it grants anything.
    fn reload_locked(&self) -> crate::Result<()> {
        let mut stored = self.vault.stored_grants()?;
        stored.sort_by_key(|r| r.grant.requested_unix);
        *self.grants.write().unwrap_or_else(|p| p.into_inner()) = stored
            .into_iter()
            .map(|r| Entry::new(r, UNCHECKED))
            .collect();
        Ok(())
    }

    /// Ends every open grant: the vault was sealed. Ended grants need no MAC, so this
    /// works after the keys are gone. Returns how many ended; a grant that could not
    /// be stored ended is still ended in memory (and logged).
    pub(crate) fn end_all(&self, why: &str) -> usize {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now();
        let mut grants = self.grants.write().unwrap_or_else(|p| p.into_inner());
        let mut count = 0;
        for entry in grants.iter_mut() {
            if !self.is_open(&entry.record.grant, now) {
                continue;
            }
            let grant = BreakGlassGrant {
                state: ended(now, why, ""),
                ..entry.record.grant.clone()
            };
            match self
                .vault
                .store_grant(&grant, Some(&entry.record.grant), &[])
            {
                Ok(true) => {}
                // Changed on another node: it ends here all the same, and the next
                // reload shows what the store holds.
                Ok(false) => {}
                Err(e) => tracing::error!(
                    grant = %grant.id,
                    "storing the end of a break-glass grant: {e}"
                ),
            }
            *entry = Entry::new(BreakGlassRecord { grant, mac: None }, AUTHENTIC);
            count += 1;
        }
        count
    }
}

fn ended(at: u64, why: &str, by: &str) -> BreakGlassState {
    BreakGlassState::Ended {
        at,
        why: why.to_owned(),
        by: by.to_owned(),
    }
}
