//! Nodes sharing one store, kept in step.
//!
//! What a node holds in memory alone (leases, unwrapped tenant keys, revocation
//! watches, break-glass grants) another node can make wrong: a revocation, a deletion,
//! an erasure, a key rotation, an API-key revocation, a break-glass change, a seal. So
//! each of those is announced as a [`Notice`] in the store's change log
//! ([`crate::storage::ChangeLog`]), in the same transaction as its write where it has
//! one, and every node follows the log and acts on what the others announced: a node
//! learns of a change as soon as it polls after the commit.
//!
//! **Fail closed.** A node that has not read the log to its end within its bound
//! (`storage.postgres.catch_up`: the database unreachable or slow, or the node stalled)
//! refuses to hand out leases and transit plaintext until it has: a revocation made
//! elsewhere is honoured within the bound, or nothing is served. A node that finds
//! notices missing (it fell behind what the log keeps) or one it cannot read (from a
//! newer vaultd) acts as if everything had changed: it revokes all its leases, forgets
//! every cached tenant key and reads the break-glass grants again.
//!
//! A store only one node uses keeps no log, and its node is always in step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::custody::Upkeep;
use crate::error::Error;
use crate::identity::Identity;
use crate::ids::LeaseId;
use crate::leases::{RevocationReason, Selector};
use crate::names::{SecretId, TenantId};
use crate::storage::{Change, Store};

pub(crate) mod join;

/// How often a node reads the change log.
const POLL: Duration = Duration::from_millis(100);
/// Notices read at once.
const PAGE: u32 = 256;
/// How long the log keeps a notice, and how often a node drops older ones.
const KEEP: Duration = Duration::from_secs(3600);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// End the leases `selector` matches, telling their holders `reason`.
    RevokeLeases(Selector, RevocationReason),
    /// The tenant's keys changed (rotated, retired, erased): forget every unwrapped key
    /// of it, so the next use reads the stored record.
    TenantKeys(TenantId),
    /// An API key was revoked: tell the verifiers watching.
    ApiKeyRevoked(String),
    /// A break-glass grant was asked for, approved or ended: read the grants again.
    BreakGlass,
    /// Seal (`vaultctl seal --cluster`).
    Seal,
    /// The root key was rotated: a node holding only the old one seals.
    RootRotated,
}

/// A notice as the log holds it: JSON, so an operator can read the log with `psql`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Wire {
    RevokeLeases {
        selector: WireSelector,
        reason: WireReason,
    },
    TenantKeys {
        tenant: String,
    },
    ApiKeyRevoked {
        id: String,
    },
    BreakGlass,
    Seal,
    RootRotated,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireSelector {
    LeaseId(String),
    Held(String, String),
    Tenant(String),
    Secret(String, String, String),
    Version(String, String, String, u64),
    Identity(String),
    All,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireReason {
    Revoked,
    Sealed,
    VersionDisabled,
    TenantErased,
}

/// The longest notice a node reads: the longest names fit many times over.
const MAX_NOTICE: usize = 4096;

impl Notice {
    /// The notice as the log holds it.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let secret = |s: &SecretId| {
            (
                s.tenant.as_str().to_owned(),
                s.environment.as_str().to_owned(),
                s.name.as_str().to_owned(),
            )
        };
        let wire = match self {
            Notice::RevokeLeases(selector, reason) => Wire::RevokeLeases {
                selector: match selector {
                    Selector::Id(id) => WireSelector::LeaseId(id.as_str().to_owned()),
                    Selector::Held(id, identity) => {
                        WireSelector::Held(id.as_str().to_owned(), identity.as_str().to_owned())
                    }
                    Selector::Tenant(t) => WireSelector::Tenant(t.as_str().to_owned()),
                    Selector::Secret(s) => {
                        let (t, e, n) = secret(s);
                        WireSelector::Secret(t, e, n)
                    }
                    Selector::Version(s, v) => {
                        let (t, e, n) = secret(s);
                        WireSelector::Version(t, e, n, *v)
                    }
                    Selector::Identity(i) => WireSelector::Identity(i.as_str().to_owned()),
                    Selector::All => WireSelector::All,
                },
                reason: match reason {
                    RevocationReason::Revoked => WireReason::Revoked,
                    RevocationReason::Sealed => WireReason::Sealed,
                    RevocationReason::VersionDisabled => WireReason::VersionDisabled,
                    RevocationReason::TenantErased => WireReason::TenantErased,
                },
            },
            Notice::TenantKeys(t) => Wire::TenantKeys {
                tenant: t.as_str().to_owned(),
            },
            Notice::ApiKeyRevoked(id) => Wire::ApiKeyRevoked { id: id.clone() },
            Notice::BreakGlass => Wire::BreakGlass,
            Notice::Seal => Wire::Seal,
            Notice::RootRotated => Wire::RootRotated,
        };
        // Strings, numbers and unit variants only: serialising cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// The notice in `bytes`, every name validated as a request's would be; `None` for
    /// anything else (damaged, or from a newer vaultd).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_NOTICE {
            return None;
        }
        let secret = |t: &str, e: &str, n: &str| SecretId::parse(t, e, n).ok();
        Some(match serde_json::from_slice(bytes).ok()? {
            Wire::RevokeLeases { selector, reason } => Notice::RevokeLeases(
                match selector {
                    WireSelector::LeaseId(id) => Selector::Id(LeaseId::parse(&id)?),
                    WireSelector::Held(id, identity) => {
                        Selector::Held(LeaseId::parse(&id)?, Identity::parse_remote(&identity)?)
                    }
                    WireSelector::Tenant(t) => Selector::Tenant(TenantId::new(&t).ok()?),
                    WireSelector::Secret(t, e, n) => Selector::Secret(secret(&t, &e, &n)?),
                    WireSelector::Version(t, e, n, v) => Selector::Version(secret(&t, &e, &n)?, v),
                    WireSelector::Identity(i) => Selector::Identity(Identity::parse_remote(&i)?),
                    WireSelector::All => Selector::All,
                },
                match reason {
                    WireReason::Revoked => RevocationReason::Revoked,
                    WireReason::Sealed => RevocationReason::Sealed,
                    WireReason::VersionDisabled => RevocationReason::VersionDisabled,
                    WireReason::TenantErased => RevocationReason::TenantErased,
                },
            ),
            Wire::TenantKeys { tenant } => Notice::TenantKeys(TenantId::new(&tenant).ok()?),
            Wire::ApiKeyRevoked { id } => {
                vault_proto::apikey::is_key_id(&id).then_some(Notice::ApiKeyRevoked(id))?
            }
            Wire::BreakGlass => Notice::BreakGlass,
            Wire::Seal => Notice::Seal,
            Wire::RootRotated => Notice::RootRotated,
        })
    }
}

/// Whether this node has read the change log to its end recently enough to serve.
pub(crate) struct InStep {
    /// `None` when the store keeps no log: always in step.
    bound: Option<Duration>,
    started: Instant,
    /// When the last read that reached the log's end began, in nanoseconds since
    /// `started`; 0 before the first.
    caught_up: AtomicU64,
}

impl InStep {
    /// A node alone on its store.
    pub(crate) fn alone() -> Self {
        Self {
            bound: None,
            started: Instant::now(),
            caught_up: AtomicU64::new(0),
        }
    }

    /// A node sharing its store, out of step until it first reads the log.
    pub(crate) fn shared(bound: Duration) -> Self {
        Self {
            bound: Some(bound),
            ..Self::alone()
        }
    }

    /// `Ok` if the node read the log to its end within the bound;
    /// [`Error::OutOfStep`] if not.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let (Some(bound), Some(behind)) = (self.bound, self.behind()) else {
            return Ok(());
        };
        let never = self.caught_up.load(Ordering::Acquire) == 0;
        if never || behind > bound {
            return Err(Error::OutOfStep { bound });
        }
        Ok(())
    }

    /// How long since the last read that reached the log's end began (since the node
    /// started, before the first); `None` when the store is this node's alone.
    pub(crate) fn behind(&self) -> Option<Duration> {
        self.bound?;
        let now = self.nanos(Instant::now());
        let caught_up = self.caught_up.load(Ordering::Acquire);
        Some(Duration::from_nanos(now.saturating_sub(caught_up)))
    }

    /// A read that began at `began` reached the log's end.
    fn caught_up(&self, began: Instant) {
        self.caught_up
            .fetch_max(self.nanos(began).max(1), Ordering::AcqRel);
    }

    fn nanos(&self, at: Instant) -> u64 {
        duration_nanos(at.saturating_duration_since(self.started))
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a node does with what it read from the log.
pub(crate) trait Apply: Send + Sync + 'static {
    /// Acts on another node's notice; on `Err` the node stays before it, and out of
    /// step, until a later read applies it.
    fn apply(&self, notice: &Notice) -> Result<(), Error>;
    /// Acts as if everything changed: notices were missed or cannot be read.
    fn reset(&self, why: &str) -> Result<(), Error>;
}

impl Apply for Upkeep {
    fn apply(&self, notice: &Notice) -> Result<(), Error> {
        self.apply_notice(notice)
    }

    fn reset(&self, why: &str) -> Result<(), Error> {
        tracing::warn!(
            "{why}: revoking every lease, forgetting every cached tenant key and reading the \
             break-glass grants again"
        );
        self.apply_notice(&Notice::RevokeLeases(
            Selector::All,
            RevocationReason::Revoked,
        ))?;
        self.forget_all_tenant_keys();
        self.apply_notice(&Notice::BreakGlass)
    }
}

/// Follows `store`'s change log until `stopped`, applying other nodes' notices and
/// keeping `in_step` true; a seal another node asked for is written to `audit`.
/// Returns at once if the store keeps no log.
pub(crate) async fn follow(
    store: Arc<dyn Store>,
    in_step: Arc<InStep>,
    apply: Arc<dyn Apply>,
    audit: vault_audit::AuditLog,
    mut stopped: watch::Receiver<bool>,
) {
    if store.change_log().is_none() {
        return;
    }
    let mut seen = None;
    let mut pruned = Instant::now();
    let mut failing = false;
    loop {
        let began = Instant::now();
        // Reading and acting both reach the store: off the async workers.
        let (store_, apply_) = (Arc::clone(&store), Arc::clone(&apply));
        let step = tokio::task::spawn_blocking(move || step(&*store_, &*apply_, seen))
            .await
            .unwrap_or_else(|_| Step {
                seen,
                failed: Some("reading it stopped with a panic".to_owned()),
                ..Step::default()
            });
        seen = step.seen;
        match step.failed {
            Some(why) if !failing => {
                tracing::warn!("following the change log: {why}");
                failing = true;
            }
            Some(_) => {}
            None => failing = false,
        }
        if step.caught_up {
            in_step.caught_up(began);
        }
        for notice in &step.applied {
            let why = match notice {
                Notice::Seal => {
                    "sealed: another node sealed every node on the database (seal --cluster)"
                }
                Notice::RootRotated => {
                    "sealed: another node rotated the root key, which this node does not hold; \
                     unseal it again"
                }
                _ => continue,
            };
            let event = vault_audit::Event {
                reason: why.to_owned(),
                ..vault_audit::Event::default()
            };
            if let Err(e) = crate::audit::system_event(&audit, "system.seal", event).await {
                tracing::error!("the seal another node asked for could not be audited: {e}");
            }
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = Instant::now();
            let store = Arc::clone(&store);
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(log) = store.change_log()
                    && let Err(error) = log.prune(KEEP)
                {
                    tracing::warn!("dropping old notices from the change log failed: {error}");
                }
            })
            .await;
        }
        if step.more {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// What one read of the log did.
#[derive(Default)]
struct Step {
    /// The last epoch applied (on a node's first read, the log's latest).
    seen: Option<u64>,
    /// The read reached the log's end and everything in it was applied.
    caught_up: bool,
    /// A full page was read: read again at once.
    more: bool,
    /// Why reading or acting failed.
    failed: Option<String>,
    /// The notices applied.
    applied: Vec<Notice>,
}

/// Reads the log after `seen` and applies what other nodes announced. A node's
/// first read (`seen` is `None`) takes the log's latest epoch: a node starts with
/// nothing in memory, and what came before is in the records it reads from then on.
fn step(store: &dyn Store, apply: &dyn Apply, seen: Option<u64>) -> Step {
    let failed = |why: String| Step {
        seen,
        failed: Some(why),
        ..Step::default()
    };
    let Some(log) = store.change_log() else {
        return Step {
            seen,
            caught_up: true,
            ..Step::default()
        };
    };
    let Some(after) = seen else {
        return match log.head() {
            Ok(head) => Step {
                seen: Some(head),
                caught_up: true,
                ..Step::default()
            },
            Err(e) => failed(format!("reading it failed: {e}")),
        };
    };
    let changes = match log.after(after, PAGE) {
        Ok(changes) => changes,
        Err(e) => return failed(format!("reading it failed: {e}")),
    };
    let full = changes.len() >= PAGE as usize;
    let mut applied = Vec::new();
    match take(after, changes, apply, &mut applied) {
        Ok(last) => Step {
            seen: Some(last),
            caught_up: !full,
            more: full,
            failed: None,
            applied,
        },
        Err((last, e)) => Step {
            seen: Some(last),
            failed: Some(format!("acting on it failed: {e}")),
            applied,
            ..Step::default()
        },
    }
}

/// Applies `changes` (read after epoch `seen`), adding what it applied to `applied`,
/// and returns the last epoch applied; on a failure, the last one applied before it
/// and the error.
fn take(
    mut seen: u64,
    changes: Vec<Change>,
    apply: &dyn Apply,
    applied: &mut Vec<Notice>,
) -> Result<u64, (u64, Error)> {
    for change in changes {
        if change.epoch != seen.saturating_add(1) {
            apply
                .reset(&format!(
                    "the change log no longer holds notices {} to {}",
                    seen.saturating_add(1),
                    change.epoch.saturating_sub(1)
                ))
                .map_err(|e| (seen, e))?;
        }
        if !change.own {
            match Notice::decode(&change.notice) {
                Some(notice) => {
                    apply.apply(&notice).map_err(|e| (seen, e))?;
                    applied.push(notice);
                }
                None => apply
                    .reset(&format!(
                        "notice {} of the change log cannot be read (written by a newer vaultd?)",
                        change.epoch
                    ))
                    .map_err(|e| (seen, e))?,
            }
        }
        seen = change.epoch;
    }
    Ok(seen)
}

#[cfg(test)]
mod tests;
