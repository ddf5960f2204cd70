//! Active leases: in memory only, indexed by id and by expiry, bounded per identity
//! (the grant's `max_active_leases`) and in total. A restart starts with none.
//! Revocations are broadcast so `WatchRevocations` streams reach the holder's clients.
//! Expiries are wall-clock times, so what clients are told (Unix ms) and what is
//! enforced here agree.
//!
//! A lease is issued in two steps (the value is decrypted, then the lease recorded),
//! and a revocation may land in between: a seal, an erasure, a deletion. So every
//! revocation bumps a generation and is kept in a short log; an insert names the
//! generation it started under, and is refused if a revocation since then covers it.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use vault_crypto::clock::SharedClock;

use crate::identity::Identity;
use crate::ids::LeaseId;
use crate::names::{SecretId, TenantId};

/// Why a lease ended early; mirrors `vault.v1.RevocationReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevocationReason {
    Revoked,
    Sealed,
    VersionDisabled,
    TenantErased,
}

/// A revocation notice for watchers.
#[derive(Debug, Clone)]
pub(crate) struct Revoked {
    pub(crate) identity: Identity,
    pub(crate) lease_id: LeaseId,
    pub(crate) reason: RevocationReason,
}

/// One active lease. Holds no value: the value went to the client sealed.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) id: LeaseId,
    pub(crate) identity: Identity,
    pub(crate) secret: SecretId,
    pub(crate) version: u64,
    /// When it was issued: renewals are capped at this plus the grant's current
    /// `max_ttl`, so tightening a policy shortens what renewal can reach.
    pub(crate) issued: SystemTime,
    pub(crate) expires: SystemTime,
    pub(crate) renewable_until: SystemTime,
}

/// Which leases to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    Id(LeaseId),
    /// Lease `id` if `identity` holds it: its holder's revocation, from any node.
    Held(LeaseId, Identity),
    Tenant(TenantId),
    Secret(SecretId),
    Version(SecretId, u64),
    Identity(Identity),
    All,
}

impl std::fmt::Display for Selector {
    /// For audit records: every part was validated when the selector was made.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Id(id) => write!(f, "lease {id}"),
            Selector::Held(id, identity) => write!(f, "lease {id} of {identity}"),
            Selector::Tenant(t) => write!(f, "tenant {t}"),
            Selector::Secret(s) => write!(f, "secret {s}"),
            Selector::Version(s, v) => write!(f, "secret {s} version {v}"),
            Selector::Identity(i) => write!(f, "identity {i}"),
            Selector::All => f.write_str("all"),
        }
    }
}

impl Selector {
    fn matches(&self, id: u128, identity: &Identity, secret: &SecretId, version: u64) -> bool {
        match self {
            Selector::Id(selected) => selected.bits() == id,
            Selector::Held(selected, holder) => selected.bits() == id && identity == holder,
            Selector::Tenant(t) => secret.tenant == *t,
            Selector::Secret(s) => secret == s,
            Selector::Version(s, v) => secret == s && version == *v,
            Selector::Identity(i) => identity == i,
            Selector::All => true,
        }
    }

    fn matches_lease(&self, lease: &Lease) -> bool {
        let id = lease.id.bits();
        self.matches(id, &lease.identity, &lease.secret, lease.version)
    }

    fn matches_entry(&self, id: u128, entry: &Entry) -> bool {
        self.matches(id, &entry.identity, &entry.secret, entry.version)
    }
}

/// Why a lease could not be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseLimit {
    /// The identity holds its grant's `max_active_leases`.
    Identity(u32),
    /// The daemon holds `leases.max_total`.
    Total(usize),
    /// A revocation covering it happened while it was being issued.
    Revoked,
}

/// Revocations remembered for leases being issued; an insert older than all of them
/// is refused outright.
const REVOCATION_LOG: usize = 1024;

/// A lease as the index keeps it. `leases.max_total` may allow millions, so each is
/// small: keyed by its id's 128 bits, sharing its identity and secret with every other
/// lease that names them, its times as nanoseconds since the Unix epoch (exact for
/// times from 1970 to 2554; earlier ones count as 1970, later ones as 2554).
struct Entry {
    identity: Arc<Identity>,
    secret: Arc<SecretId>,
    version: u64,
    issued: u64,
    expires: u64,
    renewable_until: u64,
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, duration_nanos)
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

impl Entry {
    fn lease(&self, id: u128) -> Lease {
        Lease {
            id: LeaseId::from_bits(id),
            identity: Identity::clone(&self.identity),
            secret: SecretId::clone(&self.secret),
            version: self.version,
            issued: time(self.issued),
            expires: time(self.expires),
            renewable_until: time(self.renewable_until),
        }
    }
}

/// How many leases name one identity or one secret.
type Uses = Cell<u32>;

/// The shared copy of `key` in `table`, counting one more use of it.
fn intern<K: Hash + Eq + Clone>(table: &mut HashMap<Arc<K>, Uses>, key: &K) -> Arc<K> {
    if let Some((shared, uses)) = table.get_key_value(key) {
        uses.set(uses.get().saturating_add(1));
        return Arc::clone(shared);
    }
    let shared = Arc::new(key.clone());
    table.insert(Arc::clone(&shared), Cell::new(1));
    shared
}

/// Counts one use of `key` in `table` less, dropping it at none.
fn release<K: Hash + Eq>(table: &mut HashMap<Arc<K>, Uses>, key: &K) {
    if let Some(uses) = table.get(key) {
        uses.set(uses.get().saturating_sub(1));
        if uses.get() == 0 {
            table.remove(key);
        }
    }
}

#[derive(Default)]
struct Index {
    by_id: HashMap<u128, Entry>,
    by_expiry: BTreeSet<(u64, u128)>,
    /// Every identity holding leases, with how many: the per-identity limit's count.
    per_identity: HashMap<Arc<Identity>, Uses>,
    /// Every secret leased, with how many leases.
    secrets: HashMap<Arc<SecretId>, Uses>,
    /// Bumped by every revocation.
    generation: u64,
    /// The latest revocations and the generation each made.
    recent: VecDeque<(u64, Selector)>,
}

impl Index {
    /// Whether a revocation after `since` covers `lease`.
    fn revoked_since(&self, since: u64, lease: &Lease) -> bool {
        if since == self.generation {
            return false;
        }
        let forgotten = self.recent.front().is_none_or(|(g, _)| *g > since + 1);
        forgotten
            || self
                .recent
                .iter()
                .any(|(g, selector)| *g > since && selector.matches_lease(lease))
    }

    fn add(&mut self, lease: &Lease) {
        let id = lease.id.bits();
        let entry = Entry {
            identity: intern(&mut self.per_identity, &lease.identity),
            secret: intern(&mut self.secrets, &lease.secret),
            version: lease.version,
            issued: nanos(lease.issued),
            expires: nanos(lease.expires),
            renewable_until: nanos(lease.renewable_until),
        };
        self.by_expiry.insert((entry.expires, id));
        if let Some(replaced) = self.by_id.insert(id, entry) {
            // Only a repeated id (128 random bits) gets here: keep the counts true.
            self.forget(id, &replaced);
        }
    }

    fn remove(&mut self, id: u128) -> Option<Entry> {
        let entry = self.by_id.remove(&id)?;
        self.forget(id, &entry);
        Some(entry)
    }

    /// Drops what the other indexes hold for `entry`, which left `by_id`.
    fn forget(&mut self, id: u128, entry: &Entry) {
        if self
            .by_id
            .get(&id)
            .is_none_or(|e| e.expires != entry.expires)
        {
            self.by_expiry.remove(&(entry.expires, id));
        }
        release(&mut self.per_identity, &*entry.identity);
        release(&mut self.secrets, &*entry.secret);
    }
}

/// The daemon's leases.
pub(crate) struct Leases {
    index: Mutex<Index>,
    max_total: usize,
    clock: SharedClock,
    revocations: broadcast::Sender<Revoked>,
}

impl Leases {
    pub(crate) fn new(max_total: usize, clock: SharedClock) -> Self {
        Self {
            index: Mutex::new(Index::default()),
            max_total,
            clock,
            revocations: broadcast::channel(4096).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every mutation keeps the three indexes in step before it can panic.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The revocation generation, to pass to [`Leases::insert`].
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Records a new lease if the identity and the daemon are under their limits and
    /// no revocation since `generation` covers it.
    pub(crate) fn insert(
        &self,
        lease: Lease,
        max_for_identity: u32,
        generation: u64,
    ) -> Result<(), LeaseLimit> {
        let mut index = self.lock();
        if index.revoked_since(generation, &lease) {
            return Err(LeaseLimit::Revoked);
        }
        let held = index.per_identity.get(&lease.identity).map_or(0, Cell::get);
        if held >= max_for_identity {
            return Err(LeaseLimit::Identity(max_for_identity));
        }
        if index.by_id.len() >= self.max_total {
            return Err(LeaseLimit::Total(self.max_total));
        }
        index.add(&lease);
        Ok(())
    }

    /// The caller's live lease `id`.
    pub(crate) fn get(&self, identity: &Identity, id: &LeaseId) -> Option<Lease> {
        self.with_live(identity, id, Entry::lease)
    }

    /// Whether the caller's lease `id` is live, without copying it.
    pub(crate) fn is_live(&self, identity: &Identity, id: &LeaseId) -> bool {
        self.with_live(identity, id, |_, _| ()).is_some()
    }

    fn with_live<T>(
        &self,
        identity: &Identity,
        id: &LeaseId,
        f: impl FnOnce(&Entry, u128) -> T,
    ) -> Option<T> {
        let index = self.lock();
        let now = nanos(self.clock.now());
        let key = id.bits();
        index
            .by_id
            .get(&key)
            .filter(|e| *e.identity == *identity && e.expires > now)
            .map(|e| f(e, key))
    }

    /// Moves a lease's expiry to `ttl` from now, capped at its renewable-until and at
    /// its issue time plus `max_ttl` (the grant's, as it is now; a tighter one also
    /// lowers the renewable-until). Never moves it earlier. Returns the new expiry.
    pub(crate) fn renew(
        &self,
        identity: &Identity,
        id: &LeaseId,
        ttl: Duration,
        max_ttl: Duration,
    ) -> Option<SystemTime> {
        let mut index = self.lock();
        let now = nanos(self.clock.now());
        let key = id.bits();
        let lease = index
            .by_id
            .get_mut(&key)
            .filter(|e| *e.identity == *identity && e.expires > now)?;
        let old = lease.expires;
        let cap = lease.issued.saturating_add(duration_nanos(max_ttl));
        lease.renewable_until = lease.renewable_until.min(cap);
        let wanted = now.saturating_add(duration_nanos(ttl));
        lease.expires = wanted.min(lease.renewable_until).max(old);
        let new = lease.expires;
        index.by_expiry.remove(&(old, key));
        index.by_expiry.insert((new, key));
        Some(time(new))
    }

    /// Removes a lease without a notice (the holder asked, or it is being undone).
    pub(crate) fn remove(&self, identity: &Identity, id: &LeaseId) -> bool {
        let mut index = self.lock();
        let key = id.bits();
        if index
            .by_id
            .get(&key)
            .is_some_and(|e| *e.identity == *identity)
        {
            index.remove(key);
            true
        } else {
            false
        }
    }

    /// Revokes every lease `selector` matches and tells watchers. Returns them.
    pub(crate) fn revoke(&self, selector: &Selector, reason: RevocationReason) -> Vec<Lease> {
        let revoked: Vec<Lease> = {
            let mut index = self.lock();
            index.generation += 1;
            let generation = index.generation;
            if index.recent.len() == REVOCATION_LOG {
                index.recent.pop_front();
            }
            index.recent.push_back((generation, selector.clone()));
            let ids: Vec<u128> = match selector {
                Selector::Id(id) => vec![id.bits()],
                Selector::Held(id, _) => index
                    .by_id
                    .get(&id.bits())
                    .filter(|e| selector.matches_entry(id.bits(), e))
                    .map(|_| id.bits())
                    .into_iter()
                    .collect(),
                _ => index
                    .by_id
                    .iter()
                    .filter(|(id, e)| selector.matches_entry(**id, e))
                    .map(|(id, _)| *id)
                    .collect(),
            };
            ids.into_iter()
                .filter_map(|id| Some(index.remove(id)?.lease(id)))
                .collect()
        };
        for lease in &revoked {
            // No watcher is not an error: the lease is gone either way.
            let _ = self.revocations.send(Revoked {
                identity: lease.identity.clone(),
                lease_id: lease.id.clone(),
                reason,
            });
        }
        revoked
    }

    /// Drops expired leases; their holders already know when they end.
    pub(crate) fn sweep(&self) -> usize {
        let mut index = self.lock();
        let now = nanos(self.clock.now());
        let expired: Vec<u128> = index
            .by_expiry
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in &expired {
            index.remove(*id);
        }
        expired.len()
    }

    /// Active leases matching `filter`.
    pub(crate) fn list(&self, filter: impl Fn(&Lease) -> bool) -> Vec<Lease> {
        let index = self.lock();
        let mut out: Vec<Lease> = index
            .by_id
            .iter()
            .map(|(id, e)| e.lease(*id))
            .filter(|l| filter(l))
            .collect();
        out.sort_by(|a, b| a.expires.cmp(&b.expires).then_with(|| a.id.cmp(&b.id)));
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Revoked> {
        self.revocations.subscribe()
    }
}

#[cfg(test)]
mod tests;
