//! The lease cache behind `Client::lease`, and the [`Lease`] handle it hands out.
//!
//! A cached value is served only while it is fresh (until shortly before its lease
//! ends, on the client's clock) *and* the revocation watch of the endpoint it came
//! from has been connected without a break since before it was leased: a revocation
//! can then not have been missed. A revocation notice evicts the entry at once; a
//! broken watch evicts every entry from that endpoint. Concurrent requests for one
//! secret share one RPC (one gate per key).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use vault_crypto::SecretValue;
use vault_crypto::clock::{Clock, SharedClock};

use crate::environment::Environment;

/// A leased secret value. The bytes are reachable only through [`ExposeSecret`];
/// they live in one zeroising buffer shared by the handle's clones (cloning copies no
/// secret) and the cache, and are wiped when the last of them lets go.
#[derive(Clone)]
pub struct Lease {
    inner: Arc<Leased>,
}

/// A lease as vaultd issued it, shared by its handles and the cache.
pub(crate) struct Leased {
    pub(crate) lease_id: String,
    version: u64,
    value: SecretValue,
    /// The endpoint that issued it: the only one that can renew or revoke it.
    pub(crate) node: usize,
    /// The watch epoch the lease was asked for under (0: the watch was down).
    epoch: u64,
    revoked: AtomicBool,
    times: Mutex<Times>,
}

#[derive(Clone, Copy)]
struct Times {
    /// The lease's end, as vaultd said.
    expires: SystemTime,
    /// How far Renew can extend it.
    renewable_until: SystemTime,
    /// The cache serves it until then.
    fresh_until: Instant,
}

/// What vaultd said about a lease it issued.
pub(crate) struct Issued {
    pub(crate) lease_id: String,
    pub(crate) version: u64,
    pub(crate) value: SecretValue,
    pub(crate) node: usize,
    pub(crate) epoch: u64,
    pub(crate) expires: SystemTime,
    pub(crate) renewable_until: SystemTime,
}

impl Leased {
    fn times(&self) -> Times {
        *self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a renewal: the lease now ends at `expires`.
    pub(crate) fn renewed(&self, expires: SystemTime, clock: &dyn Clock) {
        let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        times.expires = expires;
        times.fresh_until = fresh_until(expires, clock);
    }
}

impl Lease {
    /// The lease's id, for [`crate::Client::revoke`] and logs (not a secret).
    pub fn lease_id(&self) -> &str {
        &self.inner.lease_id
    }

    /// The secret version leased.
    pub fn version(&self) -> u64 {
        self.inner.version
    }

    /// When the lease ends, unless renewed (vaultd's time).
    pub fn expires_at(&self) -> SystemTime {
        self.inner.times().expires
    }

    /// Whether a revocation for this lease has been received. A revoked lease's value
    /// must no longer be used; the cache has already dropped it.
    pub fn is_revoked(&self) -> bool {
        self.inner.revoked.load(Ordering::Acquire)
    }

    /// The endpoint that issued it.
    pub(crate) fn node(&self) -> usize {
        self.inner.node
    }
}

impl ExposeSecret<[u8]> for Lease {
    fn expose_secret(&self) -> &[u8] {
        self.inner.value.expose_secret()
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("lease_id", &self.inner.lease_id)
            .field("version", &self.inner.version)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// What a lease is for.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) tenant: String,
    pub(crate) environment: Environment,
    pub(crate) name: String,
    pub(crate) version: Option<u64>,
}

/// The lease cache.
pub(crate) struct Cache {
    /// What freshness is read on.
    clock: SharedClock,
    entries: RwLock<HashMap<Key, Arc<Leased>>>,
    /// One gate per key being leased, so concurrent misses make one RPC.
    gates: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Recently revoked lease ids. A revocation notice can overtake the answer that
    /// issued the lease (they travel on different streams); such a lease must not be
    /// cached after its notice was handled.
    tombstones: Mutex<Tombstones>,
}

/// Ids remembered as revoked.
const TOMBSTONES: usize = 4096;

/// The most recently revoked ids (leases here; API keys in `apikey_cache`), the
/// oldest forgotten first.
#[derive(Default)]
pub(crate) struct Tombstones {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Tombstones {
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    pub(crate) fn add(&mut self, id: &str) {
        if self.ids.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
        }
        while self.order.len() > TOMBSTONES {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

impl Cache {
    /// An empty cache whose freshness is read on `clock`.
    pub(crate) fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            entries: RwLock::default(),
            gates: Mutex::default(),
            tombstones: Mutex::default(),
        }
    }

    /// The clock freshness is read on.
    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// A lease handle for what vaultd issued, its freshness reckoned from now.
    pub(crate) fn leased(&self, issued: Issued) -> Arc<Leased> {
        Arc::new(Leased {
            lease_id: issued.lease_id,
            version: issued.version,
            value: issued.value,
            node: issued.node,
            epoch: issued.epoch,
            revoked: AtomicBool::new(false),
            times: Mutex::new(Times {
                expires: issued.expires,
                renewable_until: issued.renewable_until,
                fresh_until: fresh_until(issued.expires, &*self.clock),
            }),
        })
    }

    /// A fresh entry, if there is one the watch vouches for: `watch_epoch` says what
    /// epoch an endpoint's revocation watch is in now.
    pub(crate) fn fresh(&self, key: &Key, watch_epoch: impl Fn(usize) -> u64) -> Option<Lease> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let leased = entries.get(key)?;
        let watched = leased.epoch != 0 && watch_epoch(leased.node) == leased.epoch;
        let usable = watched
            && !leased.revoked.load(Ordering::Acquire)
            && self.clock.instant() < leased.times().fresh_until;
        usable.then(|| Lease {
            inner: Arc::clone(leased),
        })
    }

    pub(crate) fn gate(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(gates.entry(key.clone()).or_default())
    }

    pub(crate) fn release_gate(&self, key: &Key, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else is waiting on it.
        if Arc::strong_count(&gate) <= 2 {
            gates.remove(key);
        }
    }

    /// Caches `leased` unless its revocation was already seen; returns its handle if
    /// it was cached.
    pub(crate) fn insert(&self, key: Key, leased: Arc<Leased>) -> Option<Lease> {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let tombstones = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
        if tombstones.ids.contains(&leased.lease_id) {
            leased.revoked.store(true, Ordering::Release);
            return None;
        }
        entries.insert(key, Arc::clone(&leased));
        Some(Lease { inner: leased })
    }

    /// Drops (and marks revoked) the entries `drop` selects. Their values are wiped
    /// once no handle holds them.
    fn evict(&self, drop: impl Fn(&Leased) -> bool) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let before = entries.len();
        entries.retain(|_, leased| {
            let gone = drop(leased);
            if gone {
                leased.revoked.store(true, Ordering::Release);
            }
            !gone
        });
        before - entries.len()
    }

    /// Handles a revocation notice: evicts the lease and remembers it, in case its
    /// issuing answer is still on its way.
    pub(crate) fn evict_lease(&self, lease_id: &str) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(lease_id);
        let before = entries.len();
        entries.retain(|_, leased| {
            let gone = leased.lease_id == lease_id;
            if gone {
                leased.revoked.store(true, Ordering::Release);
            }
            !gone
        });
        before - entries.len()
    }

    /// Drops every entry endpoint `node` issued (its watch broke).
    pub(crate) fn evict_node(&self, node: usize) -> usize {
        self.evict(|l| l.node == node)
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) -> usize {
        self.evict(|_| true)
    }

    /// Entries that stop being fresh within `within` and that vaultd would still
    /// extend: what auto-renewal renews.
    pub(crate) fn due_for_renewal(&self, within: Duration) -> Vec<Arc<Leased>> {
        let horizon = self.clock.instant() + within;
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .filter(|l| {
                let t = l.times();
                t.fresh_until <= horizon && t.renewable_until > t.expires
            })
            .cloned()
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// How long before its end a lease stops being served from the cache: a tenth of its
/// lifetime, at least 1 s, at most half of it.
fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_secs(1)).min(ttl / 2)
}

/// Until when a lease that ends at `expires` is served, on `clock`.
fn fresh_until(expires: SystemTime, clock: &dyn Clock) -> Instant {
    let left = expires.duration_since(clock.now()).unwrap_or_default();
    clock.instant() + left.saturating_sub(margin(left))
}

#[cfg(test)]
mod tests {
    use vault_crypto::clock::ManualClock;

    use super::*;

    fn issued(id: &str, ttl: Duration, clock: &dyn Clock) -> Issued {
        Issued {
            lease_id: id.into(),
            version: 1,
            value: SecretValue::from_vec(b"v".to_vec()),
            node: 0,
            epoch: 1,
            expires: clock.now() + ttl,
            renewable_until: clock.now() + ttl * 10,
        }
    }

    fn key() -> Key {
        Key {
            tenant: "t".into(),
            environment: Environment::Live,
            name: "n".into(),
            version: None,
        }
    }

    #[test]
    fn a_notice_that_overtakes_its_lease_keeps_it_out_of_the_cache() {
        let clock = ManualClock::new();
        let cache = Cache::new(clock.clone());
        assert_eq!(cache.evict_lease("l-early"), 0);
        let early = cache.leased(issued("l-early", Duration::ZERO, &*clock));
        assert!(cache.insert(key(), Arc::clone(&early)).is_none());
        assert!(early.revoked.load(Ordering::Acquire));
        assert_eq!(cache.len(), 0);
        let other = cache.leased(issued("l-other", Duration::ZERO, &*clock));
        assert!(cache.insert(key(), other).is_some());
        assert_eq!(cache.len(), 1);
        for i in 0..=TOMBSTONES {
            cache.evict_lease(&format!("l-{i}"));
        }
        assert!(!cache.tombstones.lock().unwrap().ids.contains("l-early"));
    }

    #[test]
    fn margins_leave_time_to_use_a_value() {
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_secs(6));
        assert_eq!(margin(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(500));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn freshness_and_renewal_follow_the_clock_not_the_wall() {
        let clock = ManualClock::new();
        let cache = Cache::new(clock.clone());
        let watching = |_| 1;
        let leased = cache.leased(issued("l-1", Duration::from_secs(60), &*clock));
        cache.insert(key(), leased).unwrap();
        assert!(cache.fresh(&key(), watching).is_some());
        // A broken watch vouches for nothing.
        assert!(cache.fresh(&key(), |_| 0).is_none());
        // 60 s lease, 6 s margin: served up to 54 s, due for renewal 2 s before that.
        clock.advance(Duration::from_secs(51));
        assert!(cache.due_for_renewal(Duration::from_secs(2)).is_empty());
        clock.advance(Duration::from_secs(2));
        assert!(cache.fresh(&key(), watching).is_some());
        let due = cache.due_for_renewal(Duration::from_secs(2));
        assert_eq!(due.len(), 1);
        clock.advance(Duration::from_secs(1));
        assert!(
            cache.fresh(&key(), watching).is_none(),
            "served into its margin"
        );
        // Renewed for another 60 s from now: served again.
        due[0].renewed(clock.now() + Duration::from_secs(60), &*clock);
        assert!(cache.fresh(&key(), watching).is_some());
        assert_eq!(cache.clear(), 1);
        assert!(cache.fresh(&key(), watching).is_none());
    }
}
