//! Tenant-key versions: rotation on demand, the background pass that rewraps a
//! tenant's secrets under its current key, retiring old versions, and what an
//! operator sees of it all.
//!
//! A rotation (on demand, or automatic once a key has done `keys.tenant_rotate_after`
//! encryptions) adds a version and makes it current; older versions keep decrypting.
//! The tenant is then queued for the rewrap pass, which reseals every secret version
//! still under an older key. Once none is left, the operator may retire the old
//! versions: their wrapped keys are destroyed, so anything still sealed under them
//! (a transit envelope the platform did not rewrap) is unreadable for good.

use std::collections::BTreeMap;

use super::Vault;
use super::keyring::{CAS_ATTEMPTS, Keyring};
use super::secrets::parse_secret_key;
use crate::error::{Error, Result};
use crate::names::{SecretId, TenantId};
use crate::records::{self, SecretRecord, secret_key, secret_prefix};
use crate::storage::{StoreError, Transaction};

/// What an operator sees of a tenant's keys. Nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeys {
    /// The tenant.
    pub tenant: TenantId,
    /// The version new values are sealed under.
    pub current: u32,
    /// Versions below this were retired (destroyed).
    pub min_decrypt: u32,
    /// Every version still held, oldest first.
    pub versions: Vec<TenantKeyVersion>,
}

/// One tenant-key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeyVersion {
    /// The version.
    pub version: u32,
    /// When it was made (Unix seconds).
    pub created_unix: u64,
    /// Encryptions reserved for it so far: an upper bound of what it has sealed.
    pub encryptions: u64,
    /// Secret versions sealed under it now.
    pub secret_versions: usize,
}

impl Vault {
    /// Rotates `tenant`'s key: a new current version; its secrets are queued for the
    /// rewrap pass.
    pub fn rotate_tenant_key(&self, tenant: &TenantId) -> Result<TenantKeys> {
        self.with_keyring(|keyring| keyring.rotate_tenant_key(self.store.as_ref(), tenant))?;
        self.tenant_keys(tenant)
    }

    /// `tenant`'s key versions and how many secret versions each seals.
    pub fn tenant_keys(&self, tenant: &TenantId) -> Result<TenantKeys> {
        self.with_keyring(|_| {
            let record =
                Keyring::read_tenant(self.store.as_ref(), tenant)?.ok_or(Error::NotFound)?;
            let sealed = self.secret_versions_by_key(tenant)?;
            Ok(TenantKeys {
                tenant: tenant.clone(),
                current: record.current,
                min_decrypt: record.min_decrypt,
                versions: record
                    .keys
                    .iter()
                    .map(|k| TenantKeyVersion {
                        version: k.version,
                        created_unix: k.created_unix,
                        encryptions: k.reserved_encryptions,
                        secret_versions: sealed.get(&k.version).copied().unwrap_or(0),
                    })
                    .collect(),
            })
        })
    }

    /// Destroys `tenant`'s key versions below `below`. Refused while any secret
    /// version is still sealed under one of them (the rewrap pass has not finished),
    /// and for the current version.
    pub fn retire_tenant_keys(&self, tenant: &TenantId, below: u32) -> Result<TenantKeys> {
        let current = Keyring::read_tenant(self.store.as_ref(), tenant)?
            .ok_or(Error::NotFound)?
            .current;
        if below > current {
            return Err(Error::RetireCurrent { below, current });
        }
        let in_use: usize = self
            .secret_versions_by_key(tenant)?
            .range(..below)
            .map(|(_, count)| count)
            .sum();
        if in_use > 0 {
            return Err(Error::KeysInUse {
                below,
                count: in_use,
            });
        }
        self.with_keyring(|keyring| {
            keyring.retire_tenant_keys(self.store.as_ref(), tenant, below)
        })?;
        self.tenant_keys(tenant)
    }

    /// Secret versions of `tenant` that hold a value, by the key version sealing it.
    fn secret_versions_by_key(&self, tenant: &TenantId) -> Result<BTreeMap<u32, usize>> {
        let mut counts = BTreeMap::new();
        for (key, value) in self.store.scan_prefix(&secret_prefix(tenant, None))? {
            let record: SecretRecord = records::decode(&key, &value)?;
            for envelope in record.versions.iter().filter_map(|v| v.value.as_ref()) {
                *counts.entry(envelope.key_version()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Queues every tenant that holds more than one key version for the rewrap pass
    /// (after an unseal: a pass may have been cut short). Returns how many.
    pub fn queue_stale_tenants(&self) -> Result<usize> {
        let mut queued = 0;
        for (key, value) in self.store.scan_prefix(b"tenant/")? {
            let Ok(record) = records::decode_tenant(&key, &value) else {
                continue; // reported where it is used
            };
            let tenant = key
                .strip_prefix(b"tenant/")
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| TenantId::new(t).ok());
            if let Some(tenant) = tenant
                && record.keys.len() > 1
            {
                self.with_keyring(|keyring| {
                    keyring.queue_rewrap(&tenant);
                    Ok(())
                })?;
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Rewraps the secrets of the next queued tenant that are sealed under an older
    /// key version. Returns the tenant and how many secrets were rewritten, or `None`
    /// when no tenant is queued. Each secret is one compare-and-set under the shared
    /// lock, so requests are served throughout and a seal stops the pass between two.
    pub fn rewrap_step(&self) -> Result<Option<(TenantId, usize)>> {
        let Some(tenant) = self.with_keyring(|keyring| Ok(keyring.next_rewrap()))? else {
            return Ok(None);
        };
        let Some(current) = Keyring::read_tenant(self.store.as_ref(), &tenant)?.map(|r| r.current)
        else {
            self.with_keyring(|keyring| {
                keyring.rewrapped(&tenant);
                Ok(())
            })?;
            return Ok(Some((tenant, 0)));
        };
        let stale: Vec<SecretId> = self
            .store
            .scan_prefix(&secret_prefix(&tenant, None))?
            .into_iter()
            .filter(|(key, value)| {
                records::decode::<SecretRecord>(key, value).is_ok_and(|record| {
                    record
                        .versions
                        .iter()
                        .filter_map(|v| v.value.as_ref())
                        .any(|e| e.key_version() != current)
                })
            })
            .filter_map(|(key, _)| parse_secret_key(&key))
            .collect();
        let mut rewritten = 0;
        for id in &stale {
            if self.rewrap_secret(id)? {
                rewritten += 1;
            }
        }
        self.with_keyring(|keyring| {
            keyring.rewrapped(&tenant);
            Ok(())
        })?;
        Ok(Some((tenant, rewritten)))
    }

    /// Reseals every version of `id` that is not under the tenant's current key, with
    /// a fresh fingerprint. Returns whether anything was rewritten.
    fn rewrap_secret(&self, id: &SecretId) -> Result<bool> {
        self.with_keyring(|keyring| {
            let store = self.store.as_ref();
            for _ in 0..CAS_ATTEMPTS {
                let (mut record, old) = match self.read_secret(id) {
                    Ok(found) => found,
                    Err(Error::NotFound) => return Ok(false),
                    Err(e) => return Err(e),
                };
                let current = keyring.current_tenant_key(store, &id.tenant, false)?;
                let mut changed = false;
                for version in &mut record.versions {
                    let Some(envelope) = &version.value else {
                        continue;
                    };
                    if envelope.key_version() == current.version() {
                        continue;
                    }
                    let aad = super::secrets::secret_aad(id, version.version);
                    let value = keyring
                        .tenant_key(store, &id.tenant, envelope.key_version())?
                        .open(envelope, &aad)?;
                    let (envelope, fingerprint) =
                        self.seal_value(keyring, id, version.version, &value)?;
                    version.value = Some(envelope);
                    version.fingerprint = fingerprint;
                    changed = true;
                }
                if !changed {
                    return Ok(false);
                }
                let key = secret_key(id);
                let txn = Transaction::new()
                    .require_eq(key.clone(), old)
                    .put(key, records::encode(&record));
                match store.transact(txn) {
                    Ok(()) => return Ok(true),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Error::Contention("secret"))
        })
    }
}

#[cfg(test)]
mod tests {
    use vault_crypto::SecretValue;

    use super::super::tests::{fresh, unseal_with};
    use super::super::{Vault, VaultOptions};
    use super::*;
    use crate::names::{Environment, SecretKind};

    fn value(text: &str) -> SecretValue {
        SecretValue::from_vec(text.as_bytes().to_vec())
    }

    fn drain_rewraps(vault: &Vault) -> usize {
        let mut rewritten = 0;
        while let Some((_, n)) = vault.rewrap_step().unwrap() {
            rewritten += n;
        }
        rewritten
    }

    #[test]
    fn tenant_keys_rotate_rewrap_and_retire() {
        let (f, shares) = fresh(VaultOptions::default());
        unseal_with(&f.vault, &shares[..3]).unwrap();
        let vault = &f.vault;
        let acme = TenantId::new("acme").unwrap();
        let secret = SecretId::parse("acme", "live", "byok/openai").unwrap();
        vault
            .put_secret(&secret, SecretKind::Byok, &value("sk-one"))
            .unwrap();
        let old = vault
            .transit_encrypt(&acme, Environment::Live, b"card", false)
            .unwrap();
        assert_eq!(old.key_version(), 1);

        let keys = vault.rotate_tenant_key(&acme).unwrap();
        assert_eq!(keys.current, 2);
        assert_eq!(keys.versions.len(), 2);
        assert_eq!(keys.versions[0].secret_versions, 1, "not rewrapped yet");
        // Old versions keep decrypting; new values go under the new version.
        assert_eq!(
            vault.open_secret(&secret, None).unwrap().0.expose_secret(),
            b"sk-one"
        );
        let opened = vault
            .transit_decrypt(&acme, Environment::Live, old.as_bytes())
            .unwrap();
        assert_eq!(opened.expose_secret(), b"card");
        let fresh_envelope = vault
            .transit_encrypt(&acme, Environment::Live, b"card2", false)
            .unwrap();
        assert_eq!(fresh_envelope.key_version(), 2);
        // Retiring is refused while a secret still uses version 1.
        assert!(matches!(
            vault.retire_tenant_keys(&acme, 2),
            Err(Error::KeysInUse { below: 2, count: 1 })
        ));
        // The background pass rewraps it; the platform rewraps its envelopes.
        assert_eq!(drain_rewraps(vault), 1);
        assert_eq!(drain_rewraps(vault), 0, "nothing left, nothing queued");
        let keys = vault.tenant_keys(&acme).unwrap();
        assert_eq!(
            (
                keys.versions[0].secret_versions,
                keys.versions[1].secret_versions
            ),
            (0, 1)
        );
        let rewrapped = vault
            .transit_rewrap(&acme, Environment::Live, old.as_bytes())
            .unwrap();
        assert_eq!(rewrapped.key_version(), 2);
        let again = vault
            .transit_rewrap(&acme, Environment::Live, rewrapped.as_bytes())
            .unwrap();
        assert_eq!(
            again.as_bytes(),
            rewrapped.as_bytes(),
            "already current: unchanged"
        );
        // Version 1 retired: destroyed; what still named it no longer opens.
        assert!(matches!(
            vault.retire_tenant_keys(&acme, 3),
            Err(Error::RetireCurrent {
                below: 3,
                current: 2
            })
        ));
        let keys = vault.retire_tenant_keys(&acme, 2).unwrap();
        assert_eq!((keys.min_decrypt, keys.versions.len()), (2, 1));
        assert!(matches!(
            vault.transit_decrypt(&acme, Environment::Live, old.as_bytes()),
            Err(Error::TransitEnvelope)
        ));
        for envelope in [&rewrapped, &fresh_envelope] {
            vault
                .transit_decrypt(&acme, Environment::Live, envelope.as_bytes())
                .unwrap();
        }
        assert_eq!(
            vault.open_secret(&secret, None).unwrap().0.expose_secret(),
            b"sk-one"
        );
        // After a restart the vault still knows what it holds.
        vault.seal().unwrap();
        unseal_with(vault, &shares[..3]).unwrap();
        assert_eq!(
            vault.open_secret(&secret, None).unwrap().0.expose_secret(),
            b"sk-one"
        );
    }

    #[test]
    fn tenant_keys_rotate_by_themselves_before_their_budget() {
        let (f, shares) = fresh(VaultOptions {
            tenant_rotate_after: 3,
            ..VaultOptions::default()
        });
        unseal_with(&f.vault, &shares[..3]).unwrap();
        let acme = TenantId::new("acme").unwrap();
        let envelopes: Vec<_> = (0..10)
            .map(|i| {
                f.vault
                    .transit_encrypt(&acme, Environment::Test, format!("v{i}").as_bytes(), true)
                    .unwrap()
            })
            .collect();
        let versions: Vec<u32> = envelopes.iter().map(|e| e.key_version()).collect();
        assert_eq!(versions, [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]);
        for (i, envelope) in envelopes.iter().enumerate() {
            let opened = f
                .vault
                .transit_decrypt(&acme, Environment::Test, envelope.as_bytes())
                .unwrap();
            assert_eq!(opened.expose_secret(), format!("v{i}").as_bytes());
        }
    }

    #[test]
    fn transit_creates_a_tenant_key_only_when_allowed() {
        let (f, shares) = fresh(VaultOptions::default());
        unseal_with(&f.vault, &shares[..3]).unwrap();
        let nobody = TenantId::new("nobody-yet").unwrap();
        assert!(matches!(
            f.vault
                .transit_encrypt(&nobody, Environment::Live, b"x", false),
            Err(Error::NoTenantKey)
        ));
        assert!(f.vault.store.get(b"tenant/nobody-yet").unwrap().is_none());
        f.vault
            .transit_encrypt(&nobody, Environment::Live, b"x", true)
            .unwrap();
    }

    #[test]
    fn unwrapped_tenant_keys_stay_within_the_cache() {
        let (f, shares) = fresh(VaultOptions {
            tenant_key_cache: 8,
            ..VaultOptions::default()
        });
        unseal_with(&f.vault, &shares[..3]).unwrap();
        let tenants: Vec<TenantId> = (0..100)
            .map(|i| TenantId::new(&format!("t{i}")).unwrap())
            .collect();
        let envelopes: Vec<_> = tenants
            .iter()
            .map(|t| {
                f.vault
                    .transit_encrypt(t, Environment::Live, b"x", true)
                    .unwrap()
            })
            .collect();
        assert!(f.vault.cached_tenant_keys() <= 8);
        // Evicted keys are unwrapped again when used: nothing fails.
        for (t, e) in tenants.iter().zip(&envelopes).rev() {
            f.vault
                .transit_decrypt(t, Environment::Live, e.as_bytes())
                .unwrap();
        }
        assert!(f.vault.cached_tenant_keys() <= 8);
    }

    #[test]
    fn erasure_refuses_the_tenants_keys_while_it_runs_and_finishes_when_repeated() {
        let (f, shares) = fresh(VaultOptions::default());
        unseal_with(&f.vault, &shares[..3]).unwrap();
        let acme = TenantId::new("acme").unwrap();
        for i in 0..2500 {
            let id = SecretId::parse("acme", "live", &format!("s{i}")).unwrap();
            f.vault
                .put_secret(&id, SecretKind::Byok, &value("v"))
                .unwrap();
        }
        let receipt = f.vault.erase_tenant(&acme).unwrap();
        assert_eq!(
            (receipt.key_versions, receipt.secrets_erased),
            (vec![1], 2500)
        );
        assert!(
            f.vault
                .store
                .scan_prefix(b"secret/acme/")
                .unwrap()
                .is_empty()
        );
        // Interrupted after the keys went: secrets left behind are removed by erasing again.
        let orphan = SecretId::parse("acme", "live", "orphan").unwrap();
        f.vault
            .put_secret(&orphan, SecretKind::Byok, &value("v"))
            .unwrap();
        f.vault.store.delete(b"tenant/acme").unwrap();
        let receipt = f.vault.erase_tenant(&acme).unwrap();
        assert_eq!((receipt.key_versions.len(), receipt.secrets_erased), (0, 1));
        // A new tenant of the same name starts afresh.
        f.vault
            .put_secret(&orphan, SecretKind::Byok, &value("new"))
            .unwrap();
        assert_eq!(
            f.vault
                .open_secret(&orphan, None)
                .unwrap()
                .0
                .expose_secret(),
            b"new"
        );
    }
}
