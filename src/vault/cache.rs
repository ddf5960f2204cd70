//! Unwrapped tenant keys, bounded: a least-recently-used cache over the locked arena's
//! tenant pool. A tenant not used for a while loses its unwrapped key and unwraps it
//! again (microseconds) when next used, so a million tenants cost re-unwraps, never
//! failures, and never the memory that sessions or the vault's own keys need.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ring::digest::{SHA256, digest};
use vault_crypto::TenantKey;
use vault_crypto::envelope::Envelope;

use crate::names::TenantId;

/// A tenant key version.
pub(crate) type Slot = (TenantId, u32);

/// What a cached key was unwrapped from: a digest of its wrapped form in the tenant
/// record. A key is used for a record only if the two agree, so a tenant erased and
/// created again under the same name (on another node, say) never meets a key cached
/// before.
pub(crate) type Origin = [u8; 32];

/// The origin of a key wrapped as `wrapped`.
pub(crate) fn origin(wrapped: &Envelope) -> Origin {
    let mut origin = [0; 32];
    origin.copy_from_slice(digest(&SHA256, wrapped.as_bytes()).as_ref());
    origin
}

/// An unwrapped tenant key and the encryption count reserved for it in its record.
struct Cached {
    key: Arc<TenantKey>,
    origin: Origin,
    reserved: u64,
    used: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<Slot, Cached>,
    /// Entries by last use, oldest first.
    by_use: BTreeMap<u64, Slot>,
    clock: u64,
}

impl Lru {
    fn touch(&mut self, slot: &Slot) -> Option<&mut Cached> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.get_mut(slot)?;
        self.by_use.remove(&entry.used);
        entry.used = clock;
        self.by_use.insert(clock, slot.clone());
        Some(entry)
    }

    fn remove(&mut self, slot: &Slot) {
        if let Some(entry) = self.entries.remove(slot) {
            self.by_use.remove(&entry.used);
        }
    }
}

/// The cache. Keys in use by a request stay alive (they are `Arc`s) after eviction,
/// until the request ends.
pub(crate) struct TenantKeyCache {
    lru: Mutex<Lru>,
    capacity: usize,
}

impl TenantKeyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            lru: Mutex::new(Lru::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // Each update leaves both maps consistent before anything can panic.
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached key of `slot`, marked as just used.
    pub(crate) fn get(&self, slot: &Slot) -> Option<Arc<TenantKey>> {
        self.lock().touch(slot).map(|e| Arc::clone(&e.key))
    }

    /// The cached key of `slot` if it was unwrapped from `origin`, marked as just used.
    pub(crate) fn get_from(&self, slot: &Slot, origin: &Origin) -> Option<Arc<TenantKey>> {
        self.lock()
            .touch(slot)
            .filter(|e| e.origin == *origin)
            .map(|e| Arc::clone(&e.key))
    }

    /// Caches `key`, unwrapped from `origin`, with `reserved` encryptions reserved,
    /// evicting the least recently used entries beyond the capacity. A key of the same
    /// origin already cached is kept (another request unwrapped it first) and returned
    /// instead, so one version has one counter; one of another origin is replaced.
    pub(crate) fn insert(
        &self,
        slot: Slot,
        key: Arc<TenantKey>,
        origin: Origin,
        reserved: u64,
    ) -> Arc<TenantKey> {
        let mut lru = self.lock();
        match lru.touch(&slot) {
            Some(existing) if existing.origin == origin => return Arc::clone(&existing.key),
            Some(_) => lru.remove(&slot),
            None => {}
        }
        while lru.entries.len() >= self.capacity {
            let Some((_, oldest)) = lru.by_use.pop_first() else {
                break;
            };
            lru.entries.remove(&oldest);
        }
        lru.clock += 1;
        let used = lru.clock;
        lru.by_use.insert(used, slot.clone());
        lru.entries.insert(
            slot,
            Cached {
                key: Arc::clone(&key),
                origin,
                reserved,
                used,
            },
        );
        key
    }

    /// Encryptions reserved in the record for the cached `slot`.
    pub(crate) fn reserved(&self, slot: &Slot) -> Option<u64> {
        self.lock().entries.get(slot).map(|e| e.reserved)
    }

    /// Records that the record now reserves `reserved` encryptions for `slot`.
    pub(crate) fn set_reserved(&self, slot: &Slot, reserved: u64) {
        if let Some(entry) = self.lock().entries.get_mut(slot) {
            entry.reserved = entry.reserved.max(reserved);
        }
    }

    /// Drops `slot`.
    pub(crate) fn forget(&self, slot: &Slot) {
        self.lock().remove(slot);
    }

    /// Drops every version of `tenant`'s key.
    pub(crate) fn forget_tenant(&self, tenant: &TenantId) {
        let mut lru = self.lock();
        let slots: Vec<Slot> = lru
            .entries
            .keys()
            .filter(|(t, _)| t == tenant)
            .cloned()
            .collect();
        for slot in &slots {
            lru.remove(slot);
        }
    }

    /// Drops every key.
    pub(crate) fn clear(&self) {
        let mut lru = self.lock();
        lru.entries.clear();
        lru.by_use.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(tenant: &str, version: u32) -> Slot {
        (TenantId::new(tenant).unwrap(), version)
    }

    fn key() -> Arc<TenantKey> {
        Arc::new(TenantKey::generate(1).unwrap())
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let cache = TenantKeyCache::new(2);
        cache.insert(slot("a", 1), key(), [0; 32], 1);
        cache.insert(slot("b", 1), key(), [0; 32], 1);
        assert!(cache.get(&slot("a", 1)).is_some()); // `a` used: `b` is now the oldest
        cache.insert(slot("c", 1), key(), [0; 32], 1);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&slot("a", 1)).is_some());
        assert!(cache.get(&slot("b", 1)).is_none());
        assert!(cache.get(&slot("c", 1)).is_some());
    }

    #[test]
    fn one_version_has_one_key_and_counter() {
        let cache = TenantKeyCache::new(4);
        let first = cache.insert(slot("a", 1), key(), [0; 32], 5);
        let second = cache.insert(slot("a", 1), key(), [0; 32], 9);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(cache.reserved(&slot("a", 1)), Some(5));
        cache.set_reserved(&slot("a", 1), 70);
        cache.set_reserved(&slot("a", 1), 60);
        assert_eq!(cache.reserved(&slot("a", 1)), Some(70));
        cache.insert(slot("a", 2), key(), [0; 32], 0);
        cache.insert(slot("b", 1), key(), [0; 32], 0);
        cache.forget_tenant(&TenantId::new("a").unwrap());
        assert_eq!(cache.len(), 1);
        cache.forget(&slot("b", 1));
        assert_eq!(cache.len(), 0);
    }
}
