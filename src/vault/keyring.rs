//! The unwrapped key hierarchy of an unsealed vault.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vault_crypto::{CryptoError, MacKey, RootKey, SigningKey, SystemKey, TenantKey};

use crate::error::{Error, Result};
use crate::names::TenantId;
use crate::records::{
    self, SystemKeyRecord, TenantRecord, WrappedTenantKey, system_key, tenant_key,
};
use crate::storage::{Store, StoreError, Transaction};

/// Names of the system keys created at init.
pub(crate) const API_KEY_PEPPER: &str = "api-key-pepper";
pub(crate) const AUDIT_MAC: &str = "audit-mac";
pub(crate) const AUDIT_SIGNING: &str = "audit-signing";
pub(crate) const SYSTEM_KEYS: [&str; 3] = [API_KEY_PEPPER, AUDIT_MAC, AUDIT_SIGNING];

/// Encryptions reserved in the tenant record at a time. A crash loses at most one
/// block of the budget, well inside the margin `MAX_ENCRYPTIONS` leaves.
pub(crate) const RESERVATION: u64 = 1 << 16;

/// An unwrapped tenant key and the encryption count reserved for it in its record.
struct CachedKey {
    key: Arc<TenantKey>,
    reserved: u64,
}

/// Attempts at a read-modify-write before reporting contention.
pub(crate) const CAS_ATTEMPTS: usize = 16;

/// Platform-wide keys, unwrapped at unseal.
pub(crate) struct SystemKeys {
    #[allow(dead_code)] // used by API-key verification
    pub(crate) api_key_pepper: MacKey,
    pub(crate) audit_mac: MacKey,
    pub(crate) audit_signing: SigningKey,
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
    tenants: Mutex<HashMap<(TenantId, u32), CachedKey>>,
    system: SystemKeys,
}

impl Keyring {
    pub(crate) fn load(store: &dyn Store, roots: Vec<RootKey>, current_root: u32) -> Result<Self> {
        let load = |name: &str| -> Result<SystemKey> {
            let key = system_key(name);
            let value = store
                .get(&key)?
                .ok_or(Error::Crypto(CryptoError::Decrypt))?;
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
            tenants: Mutex::new(HashMap::new()),
            system,
        })
    }

    pub(crate) fn system(&self) -> &SystemKeys {
        &self.system
    }

    pub(crate) fn current_root_version(&self) -> u32 {
        self.current_root
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

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, u32), CachedKey>> {
        // The map is only inserted into or removed from; either leaves it consistent.
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_tenant(store: &dyn Store, tenant: &TenantId) -> Result<Option<TenantRecord>> {
        let key = tenant_key(tenant);
        match store.get(&key)? {
            Some(value) => Ok(Some(records::decode(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// The tenant's current key; created (version 1) on first use if `create`.
    pub(crate) fn current_tenant_key(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        create: bool,
    ) -> Result<Arc<TenantKey>> {
        for _ in 0..CAS_ATTEMPTS {
            if let Some(record) = Self::read_tenant(store, tenant)? {
                return self.tenant_key_from(tenant, record.current, &record);
            }
            if !create {
                return Err(Error::NotFound);
            }
            let key = TenantKey::generate(1)?;
            let record = TenantRecord {
                keys: vec![WrappedTenantKey {
                    version: 1,
                    reserved_encryptions: RESERVATION,
                    wrapped: self
                        .root(self.current_root)?
                        .wrap_tenant_key(tenant.as_str(), &key)?,
                }],
                current: 1,
                created_unix: super::now_unix(),
            };
            let txn = Transaction::new()
                .require_absent(tenant_key(tenant))
                .put(tenant_key(tenant), records::encode(&record));
            match store.transact(txn) {
                Ok(()) => {
                    let key = Arc::new(key);
                    let cached = CachedKey {
                        key: Arc::clone(&key),
                        reserved: RESERVATION,
                    };
                    self.cache().insert((tenant.clone(), 1), cached);
                    return Ok(key);
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
        if let Some(cached) = self.cache().get(&(tenant.clone(), version)) {
            return Ok(Arc::clone(&cached.key));
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
        if let Some(cached) = self.cache().get(&(tenant.clone(), version)) {
            return Ok(Arc::clone(&cached.key));
        }
        let wrapped = record
            .keys
            .iter()
            .find(|k| k.version == version)
            .ok_or(Error::UnknownKeyVersion(version))?;
        let root = self.root(wrapped.wrapped.key_version())?;
        let key = Arc::new(root.unwrap_tenant_key(tenant.as_str(), version, &wrapped.wrapped)?);
        // Assume every reserved encryption was used before the restart.
        key.set_encryptions(wrapped.reserved_encryptions);
        let cached = CachedKey {
            key: Arc::clone(&key),
            reserved: wrapped.reserved_encryptions,
        };
        self.cache().insert((tenant.clone(), version), cached);
        Ok(key)
    }

    /// Makes sure the tenant record has reserved budget for one more encryption with
    /// `key`, reserving the next block first if not. Call before every encryption.
    pub(crate) fn reserve_encryption(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
        key: &TenantKey,
    ) -> Result<()> {
        let slot = (tenant.clone(), key.version());
        let needed = key.encryptions() + 1;
        if self
            .cache()
            .get(&slot)
            .is_some_and(|c| needed <= c.reserved)
        {
            return Ok(());
        }
        let tkey = tenant_key(tenant);
        for _ in 0..CAS_ATTEMPTS {
            let old = store.get(&tkey)?.ok_or(Error::NotFound)?;
            let mut record: TenantRecord = records::decode(&tkey, &old)?;
            let entry = record
                .keys
                .iter_mut()
                .find(|k| k.version == key.version())
                .ok_or(Error::NotFound)?;
            entry.reserved_encryptions = entry.reserved_encryptions.max(needed - 1 + RESERVATION);
            let reserved = entry.reserved_encryptions;
            let txn = Transaction::new()
                .require_eq(tkey.clone(), old)
                .put(tkey.clone(), records::encode(&record));
            match store.transact(txn) {
                Ok(()) => {
                    if let Some(cached) = self.cache().get_mut(&slot) {
                        cached.reserved = cached.reserved.max(reserved);
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contention("tenant key budget"))
    }

    /// Wipes every cached key of `tenant`.
    pub(crate) fn forget_tenant(&self, tenant: &TenantId) {
        self.cache().retain(|(t, _), _| t != tenant);
    }

    /// Rewraps every tenant and system key wrapped under root `from` under root `to`.
    /// Idempotent: records already under `to` are left alone, so an interrupted
    /// rotation resumes by running it again.
    pub(crate) fn rewrap(&self, store: &dyn Store, from: u32, to: u32) -> Result<()> {
        let (old, new) = (self.root(from)?, self.root(to)?);
        for (key, value) in store.scan_prefix(b"tenant/")? {
            let mut record: TenantRecord = records::decode(&key, &value)?;
            let tenant =
                String::from_utf8_lossy(key.strip_prefix(b"tenant/").unwrap_or(&[])).into_owned();
            let mut changed = false;
            for wrapped in record
                .keys
                .iter_mut()
                .filter(|k| k.wrapped.key_version() == from)
            {
                let key = old.unwrap_tenant_key(&tenant, wrapped.version, &wrapped.wrapped)?;
                wrapped.wrapped = new.wrap_tenant_key(&tenant, &key)?;
                changed = true;
            }
            if changed {
                Self::replace(store, key, value, records::encode(&record))?;
            }
        }
        for name in SYSTEM_KEYS {
            let key = system_key(name);
            let Some(value) = store.get(&key)? else {
                continue;
            };
            let record: SystemKeyRecord = records::decode(&key, &value)?;
            if record.wrapped.key_version() == from {
                let system = old.unwrap_system_key(name, &record.wrapped)?;
                let record = SystemKeyRecord {
                    wrapped: new.wrap_system_key(name, &system)?,
                };
                Self::replace(store, key, value, records::encode(&record))?;
            }
        }
        Ok(())
    }

    fn replace(
        store: &dyn Store,
        key: Vec<u8>,
        old: crate::storage::StoredValue,
        new: crate::storage::StoredValue,
    ) -> Result<()> {
        // The caller holds the vault's write lock, so nothing else changes key records
        // now; a conflict means the store was changed from outside this process.
        store.transact(
            Transaction::new()
                .require_eq(key.clone(), old)
                .put(key, new),
        )?;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn root_raw_for_tests(&self) -> [u8; 32] {
        self.root(self.current_root)
            .map(RootKey::raw_for_tests)
            .unwrap_or_default()
    }
}
