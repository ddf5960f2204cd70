//! The unwrapped key hierarchy of an unsealed vault: root keys, system keys, and a
//! bounded cache of tenant keys, with tenant-key versions that rotate.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use vault_crypto::clock::{SharedClock, unix_seconds};
use vault_crypto::{CryptoError, MacKey, RootKey, SigningKey, SystemKey, TenantKey};

use super::cache::{self, TenantKeyCache};
use crate::cluster::Notice;
use crate::error::{Error, Result};
use crate::names::TenantId;
use crate::records::{
    self, SEAL_KEY, SealRecord, SystemKeyRecord, TenantRecord, WrappedTenantKey, system_key,
    tenant_key,
};
use crate::storage::{Store, StoreError, StoredValue, Transaction};

/// Names of the system keys created at init.
pub(crate) const API_KEY_PEPPER: &str = "api-key-pepper";
pub(crate) const AUDIT_MAC: &str = "audit-mac";
pub(crate) const AUDIT_SIGNING: &str = "audit-signing";
pub(crate) const SYSTEM_KEYS: [&str; 3] = [API_KEY_PEPPER, AUDIT_MAC, AUDIT_SIGNING];

/// Encryptions reserved in the tenant record at a time. A crash loses at most one
/// block of the budget, well inside the margin `MAX_ENCRYPTIONS` leaves.
pub(crate) const RESERVATION: u64 = 1 << 16;

/// Attempts at a read-modify-write before reporting contention.
pub(crate) const CAS_ATTEMPTS: usize = 16;

/// Platform-wide keys, unwrapped at unseal.
pub(crate) struct SystemKeys {
    #[allow(dead_code)] // used by API-key verification
    pub(crate) api_key_pepper: MacKey,
    pub(crate) audit_mac: MacKey,
    pub(crate) audit_signing: SigningKey,
}

/// How tenant keys are kept.
#[derive(Debug, Clone)]
pub(crate) struct TenantKeyOptions {
    /// Unwrapped tenant keys kept at once.
    pub(crate) cache: usize,
    /// Encryptions after which a tenant key is rotated before its next use.
    pub(crate) rotate_after: u64,
    /// What key creation times are read from.
    pub(crate) clock: SharedClock,
}

fn find_root(roots: &[RootKey], version: u32) -> Result<&RootKey> {
    // A record naming a root version we do not hold is as undecryptable as a tampered one.
    roots
        .iter()
        .find(|r| r.version() == version)
        .ok_or(Error::Crypto(CryptoError::Decrypt))
}

/// Every key an unsealed vault holds, all in the locked arena. Dropping it wipes them.
pub(crate) struct Keyring {
    /// One root key, or two while a rotation rewraps records.
    roots: Vec<RootKey>,
    current_root: u32,
    tenants: TenantKeyCache,
    /// Held while reserving a block of encryptions in a tenant record.
    reserving: Mutex<()>,
    /// The seal record as this node last read it. A write that wraps a key under the
    /// current root holds only while it is unchanged (see
    /// [`Keyring::transact_under_root`]).
    seal: Mutex<StoredValue>,
    options: TenantKeyOptions,
    system: SystemKeys,
    /// Tenants being erased: none of their keys is handed out.
    erasing: Mutex<HashSet<TenantId>>,
    /// Tenants whose secrets may still be sealed under an older key version.
    rewrap: Mutex<BTreeSet<TenantId>>,
}

/// What a write of a tenant record changes.
#[derive(Clone, Copy)]
enum TenantWrite {
    /// Only the encryptions reserved.
    Reservation,
    /// Key versions destroyed.
    Retired,
    /// A key version wrapped under the current root added.
    Wrapped,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Sets of names: any state a panicking holder left is consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Keyring {
    pub(crate) fn load(
        store: &dyn Store,
        roots: Vec<RootKey>,
        seal: &SealRecord,
        options: TenantKeyOptions,
    ) -> Result<Self> {
        let current_root = seal.current_root;
        let load = |name: &str| -> Result<SystemKey> {
            let key = system_key(name);
            let value = store
                .get(&key)?
                .ok_or_else(|| Error::MissingRecord(String::from_utf8_lossy(&key).into_owned()))?;
            let record: SystemKeyRecord = records::decode(&key, &value)?;
            let root = find_root(&roots, record.wrapped.key_version())?;
            Ok(root.unwrap_system_key(name, &record.wrapped)?)
        };
        let system = SystemKeys {
            api_key_pepper: load(API_KEY_PEPPER)?.mac_key()?,
            audit_mac: load(AUDIT_MAC)?.mac_key()?,
            audit_signing: load(AUDIT_SIGNING)?.signing_key()?,
        };
        Ok(Self {
            roots,
            current_root,
            tenants: TenantKeyCache::new(options.cache),
            reserving: Mutex::new(()),
            seal: Mutex::new(records::encode(seal)),
            options,
            system,
            erasing: Mutex::new(HashSet::new()),
            rewrap: Mutex::new(BTreeSet::new()),
        })
    }

    pub(crate) fn system(&self) -> &SystemKeys {
        &self.system
    }

    pub(crate) fn current_root_version(&self) -> u32 {
        self.current_root
    }

    /// Every root key held: one, or two while a rotation rewraps records.
    pub(crate) fn roots(&self) -> &[RootKey] {
        &self.roots
    }

    pub(crate) fn root(&self, version: u32) -> Result<&RootKey> {
        find_root(&self.roots, version)
    }

    pub(crate) fn add_root(&mut self, root: RootKey) {
        self.current_root = root.version();
        self.roots.push(root);
    }

    pub(crate) fn drop_root(&mut self, version: u32) {
        self.roots.retain(|r| r.version() != version);
    }

    /// Unwrapped tenant keys held now.
    pub(crate) fn cached_tenant_keys(&self) -> usize {
        self.tenants.len()
    }

    pub(crate) fn read_tenant(
        store: &dyn Store,
        tenant: &TenantId,
    ) -> Result<Option<TenantRecord>> {
        Self::read_tenant_value(store, tenant).map(|found| found.map(|(record, _)| record))
    }

    fn read_tenant_value(
        store: &dyn Store,
        tenant: &TenantId,
    ) -> Result<Option<(TenantRecord, StoredValue)>> {
        let key = tenant_key(tenant);
        match store.get(&key)? {
            Some(value) => Ok(Some((records::decode_tenant(&key, &value)?, value))),
            None => Ok(None),
        }
    }

    pub(crate) fn check_not_erasing(&self, tenant: &TenantId) -> Result<()> {
        if locked(&self.erasing).contains(tenant) {
            return Err(Error::TenantErasing);
        }
        Ok(())
    }

    /// The tenant's current key; created (version 1) on first use if `create`.
    pub(crate) fn current_tenant_key(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        create: bool,
    ) -> Result<Arc<TenantKey>> {
        self.check_not_erasing(tenant)?;
        for _ in 0..CAS_ATTEMPTS {
            if let Some(record) = Self::read_tenant(store, tenant)? {
                return self.tenant_key_from(tenant, record.current, &record);
            }
            if !create {
                return Err(Error::NotFound);
            }
            let key = TenantKey::generate(1)?;
            let now = unix_seconds(self.options.clock.now());
            let wrapped = self
                .root(self.current_root)?
                .wrap_tenant_key(tenant.as_str(), &key)?;
            let origin = cache::origin(&wrapped);
            let record = TenantRecord {
                keys: vec![WrappedTenantKey {
                    version: 1,
                    reserved_encryptions: RESERVATION,
                    wrapped,
                    created_unix: now,
                }],
                current: 1,
                created_unix: now,
                min_decrypt: 1,
            };
            let txn = Transaction::new()
                .require_absent(tenant_key(tenant))
                .put(tenant_key(tenant), records::encode(&record));
            match self.transact_under_root(store, txn)? {
                Ok(()) => {
                    return Ok(self.tenants.insert(
                        (tenant.clone(), 1),
                        Arc::new(key),
                        origin,
                        RESERVATION,
                    ));
                }
                // Another request created it first: use theirs.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contention("tenant key"))
    }

    /// Version `version` of the tenant's key.
    pub(crate) fn tenant_key(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        version: u32,
    ) -> Result<Arc<TenantKey>> {
        self.check_not_erasing(tenant)?;
        if let Some(key) = self.tenants.get(&(tenant.clone(), version)) {
            return Ok(key);
        }
        let record = Self::read_tenant(store, tenant)?.ok_or(Error::NotFound)?;
        self.tenant_key_from(tenant, version, &record)
    }

    fn tenant_key_from(
        &self,
        tenant: &TenantId,
        version: u32,
        record: &TenantRecord,
    ) -> Result<Arc<TenantKey>> {
        let slot = (tenant.clone(), version);
        let wrapped = record
            .keys
            .iter()
            .find(|k| k.version == version)
            .ok_or(Error::UnknownKeyVersion(version))?;
        let origin = cache::origin(&wrapped.wrapped);
        if let Some(key) = self.tenants.get_from(&slot, &origin) {
            return Ok(key);
        }
        let root = self.root(wrapped.wrapped.key_version())?;
        let key = root.unwrap_tenant_key(tenant.as_str(), version, &wrapped.wrapped)?;
        // Assume every reserved encryption was used before the restart (or eviction).
        key.set_encryptions(wrapped.reserved_encryptions);
        Ok(self
            .tenants
            .insert(slot, Arc::new(key), origin, wrapped.reserved_encryptions))
    }

    /// The key to encrypt one value for `tenant` with: its current key (created on
    /// first use if `create`), rotated first if it has done `rotate_after`
    /// encryptions, with the encryption reserved in the tenant record.
    pub(crate) fn encryption_key(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        create: bool,
    ) -> Result<Arc<TenantKey>> {
        let mut key = self.current_tenant_key(store, tenant, create)?;
        if key.encryptions() >= self.options.rotate_after {
            self.rotate_from(store, tenant, key.version())?;
            key = self.current_tenant_key(store, tenant, false)?;
        }
        self.reserve_encryption(store, tenant, &key)?;
        Ok(key)
    }

    /// Makes sure the tenant record has reserved budget for one more encryption with
    /// `key`, reserving the next block first if not.
    fn reserve_encryption(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        key: &TenantKey,
    ) -> Result<()> {
        let slot = (tenant.clone(), key.version());
        let fits = || {
            let needed = key.encryptions() + 1;
            self.tenants.reserved(&slot).is_some_and(|r| needed <= r)
        };
        if fits() {
            return Ok(());
        }
        // One reservation at a time: requests that reach the end of the block together
        // take one new block, not one each.
        let _one = locked(&self.reserving);
        if fits() {
            return Ok(());
        }
        let needed = key.encryptions() + 1;
        // The record's reservation covers every block any node holding the key took,
        // so this node's next block starts there: blocks never overlap, and the key's
        // count, summed over nodes, never falls short of its encryptions.
        let (from, reserved) =
            self.update_tenant(store, tenant, TenantWrite::Reservation, |record| {
                let entry = record
                    .keys
                    .iter_mut()
                    .find(|k| k.version == key.version())
                    .ok_or(Error::NotFound)?;
                let from = entry.reserved_encryptions.max(needed - 1);
                entry.reserved_encryptions = from.saturating_add(RESERVATION);
                Ok((from, entry.reserved_encryptions))
            })?;
        key.set_encryptions(from);
        self.tenants.set_reserved(&slot, reserved);
        Ok(())
    }

    /// Runs `txn`, which wraps a key under this node's current root, only while the
    /// seal record still names that root: a root rotated on another node meanwhile
    /// fails it with [`Error::RootMoved`], rather than leave a key wrapped under a root
    /// about to be destroyed. Other changes of the seal record (a rekey) are read and
    /// the transaction runs again. The inner result is the transaction's own.
    fn transact_under_root(
        &self,
        store: &dyn Store,
        txn: Transaction,
    ) -> Result<std::result::Result<(), StoreError>> {
        for _ in 0..CAS_ATTEMPTS {
            let known = locked(&self.seal).clone();
            match store.transact(txn.clone().require_eq(SEAL_KEY, known)) {
                Err(StoreError::Conflict { key }) if key == SEAL_KEY => {
                    let current = store.get(SEAL_KEY)?.ok_or(Error::Uninitialised)?;
                    let record: SealRecord = records::decode(SEAL_KEY, &current)?;
                    if record.current_root != self.current_root {
                        return Err(Error::RootMoved);
                    }
                    *locked(&self.seal) = current;
                }
                other => return Ok(other),
            }
        }
        Err(Error::Contention("seal record"))
    }

    /// Reads, changes and writes back the tenant's record, retrying on contention.
    /// Other nodes sharing the store are told to forget the tenant's cached keys in the
    /// same write unless it only moves the reservation; a write that adds a wrapped key
    /// holds only under the current root.
    fn update_tenant<T>(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        write: TenantWrite,
        mut change: impl FnMut(&mut TenantRecord) -> Result<T>,
    ) -> Result<T> {
        let tkey = tenant_key(tenant);
        for _ in 0..CAS_ATTEMPTS {
            let (mut record, old) =
                Self::read_tenant_value(store, tenant)?.ok_or(Error::NotFound)?;
            let outcome = change(&mut record)?;
            let mut txn = Transaction::new()
                .require_eq(tkey.clone(), old)
                .put(tkey.clone(), records::encode(&record));
            if !matches!(write, TenantWrite::Reservation) {
                txn = txn.announce(Notice::TenantKeys(tenant.clone()).encode());
            }
            let written = match write {
                TenantWrite::Wrapped => self.transact_under_root(store, txn)?,
                _ => store.transact(txn),
            };
            match written {
                Ok(()) => return Ok(outcome),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contention("tenant key"))
    }

    /// Rotates the tenant's key: a new version becomes current; older versions keep
    /// decrypting. The tenant's secrets are queued to be rewrapped.
    pub(crate) fn rotate_tenant_key(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
    ) -> Result<TenantRecord> {
        self.check_not_erasing(tenant)?;
        let current = Self::read_tenant(store, tenant)?
            .ok_or(Error::NotFound)?
            .current;
        self.rotate_from(store, tenant, current)?;
        Self::read_tenant(store, tenant)?.ok_or(Error::NotFound)
    }

    /// Adds version `from + 1` and makes it current, unless another request already
    /// rotated past `from`.
    fn rotate_from(&self, store: &dyn Store, tenant: &TenantId, from: u32) -> Result<()> {
        let next = from
            .checked_add(1)
            .ok_or(Error::CounterExhausted("tenant key version"))?;
        let key = TenantKey::generate(next)?;
        let wrapped = self
            .root(self.current_root)?
            .wrap_tenant_key(tenant.as_str(), &key)?;
        let rotated = self.update_tenant(store, tenant, TenantWrite::Wrapped, |record| {
            if record.current != from {
                return Ok(false);
            }
            record.keys.push(WrappedTenantKey {
                version: next,
                wrapped: wrapped.clone(),
                reserved_encryptions: RESERVATION,
                created_unix: unix_seconds(self.options.clock.now()),
            });
            record.current = next;
            Ok(true)
        })?;
        if rotated {
            self.tenants.insert(
                (tenant.clone(), next),
                Arc::new(key),
                cache::origin(&wrapped),
                RESERVATION,
            );
        }
        self.queue_rewrap(tenant);
        Ok(())
    }

    /// Destroys the tenant's key versions below `below`: envelopes sealed under them
    /// no longer open anywhere. The caller has checked that no secret uses them.
    pub(crate) fn retire_tenant_keys(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        below: u32,
    ) -> Result<TenantRecord> {
        self.check_not_erasing(tenant)?;
        let record = self.update_tenant(store, tenant, TenantWrite::Retired, |record| {
            if below > record.current {
                return Err(Error::RetireCurrent {
                    below,
                    current: record.current,
                });
            }
            record.keys.retain(|k| k.version >= below);
            record.min_decrypt = record.min_decrypt.max(below);
            Ok(record.clone())
        })?;
        for version in 0..below {
            self.tenants.forget(&(tenant.clone(), version));
        }
        Ok(record)
    }

    /// Wipes every cached key of `tenant`.
    pub(crate) fn forget_tenant(&self, tenant: &TenantId) {
        self.tenants.forget_tenant(tenant);
    }

    /// Wipes every cached tenant key.
    pub(crate) fn forget_all_tenants(&self) {
        self.tenants.clear();
    }

    /// From now on, no key of `tenant` is handed out, and its cached keys are wiped.
    pub(crate) fn begin_erasing(&self, tenant: &TenantId) {
        locked(&self.erasing).insert(tenant.clone());
        locked(&self.rewrap).remove(tenant);
        self.forget_tenant(tenant);
    }

    /// The tenant's erasure is over; a new tenant of the same name may begin.
    pub(crate) fn end_erasing(&self, tenant: &TenantId) {
        locked(&self.erasing).remove(tenant);
    }

    /// Marks `tenant`'s secrets to be rewrapped under its current key.
    pub(crate) fn queue_rewrap(&self, tenant: &TenantId) {
        locked(&self.rewrap).insert(tenant.clone());
    }

    /// The next tenant whose secrets may need rewrapping.
    pub(crate) fn next_rewrap(&self) -> Option<TenantId> {
        locked(&self.rewrap).first().cloned()
    }

    /// `tenant`'s secrets are all under its current key.
    pub(crate) fn rewrapped(&self, tenant: &TenantId) {
        locked(&self.rewrap).remove(tenant);
    }

    /// Rewraps the tenant key versions and system keys stored under `keys` from root
    /// `from` to root `to`. Records already under `to` are left alone, so an
    /// interrupted rotation resumes by running it again. Each record is one
    /// compare-and-set, so requests may run meanwhile.
    pub(crate) fn rewrap_under_root(
        &self,
        store: &dyn Store,
        keys: &[Vec<u8>],
        from: u32,
        to: u32,
    ) -> Result<()> {
        let (old, new) = (self.root(from)?, self.root(to)?);
        for key in keys {
            for attempt in 0..=CAS_ATTEMPTS {
                if attempt == CAS_ATTEMPTS {
                    return Err(Error::Contention("root key rotation"));
                }
                let Some(value) = store.get(key)? else {
                    break; // erased meanwhile
                };
                let rewrapped = if let Some(name) = key.strip_prefix(b"system/") {
                    let name = std::str::from_utf8(name).map_err(|_| records::corrupt_key(key))?;
                    let record: SystemKeyRecord = records::decode(key, &value)?;
                    if record.wrapped.key_version() != from {
                        break;
                    }
                    let system = old.unwrap_system_key(name, &record.wrapped)?;
                    records::encode(&SystemKeyRecord {
                        wrapped: new.wrap_system_key(name, &system)?,
                    })
                } else {
                    let tenant = key
                        .strip_prefix(b"tenant/")
                        .and_then(|t| std::str::from_utf8(t).ok())
                        .ok_or_else(|| records::corrupt_key(key))?;
                    let mut record = records::decode_tenant(key, &value)?;
                    let mut changed = false;
                    for wrapped in record
                        .keys
                        .iter_mut()
                        .filter(|k| k.wrapped.key_version() == from)
                    {
                        let tk =
                            old.unwrap_tenant_key(tenant, wrapped.version, &wrapped.wrapped)?;
                        wrapped.wrapped = new.wrap_tenant_key(tenant, &tk)?;
                        changed = true;
                    }
                    if !changed {
                        break;
                    }
                    records::encode(&record)
                };
                let txn = Transaction::new()
                    .require_eq(key.clone(), value)
                    .put(key.clone(), rewrapped);
                match store.transact(txn) {
                    Ok(()) => break,
                    // A reservation or rotation changed the record: read it again.
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn root_raw_for_tests(&self) -> [u8; 32] {
        self.root(self.current_root)
            .map(RootKey::raw_for_tests)
            .unwrap_or_default()
    }
}
