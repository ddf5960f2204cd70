//! Secrets: write-only values with versions, rotation with a grace window, and
//! tenant erasure by crypto-shredding.
//!
//! No function here returns plaintext except [`Vault::open_secret`], which the lease
//! path uses to seal a value to a client session; admin operations see metadata only.

use std::time::Duration;

use vault_crypto::SecretValue;
use vault_crypto::envelope::{Aad, Envelope, Purpose};

use super::Vault;
use super::keyring::CAS_ATTEMPTS;
use crate::cluster::Notice;
use crate::error::{Error, Result};
use crate::leases::{RevocationReason, Selector};
use crate::names::{Environment, SecretId, SecretKind, SecretName, TenantId};
use crate::records::{
    self, SECRET_PREFIX, SecretRecord, SecretVersionRecord, VersionState, secret_key,
    secret_prefix, tenant_key,
};
use crate::storage::{StoreError, StoredValue, Transaction};

/// What an admin may see of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMetadata {
    /// Where the secret lives.
    pub id: SecretId,
    /// Whose key it is.
    pub kind: SecretKind,
    /// The version leased by default.
    pub current_version: u64,
    /// Every version, oldest first.
    pub versions: Vec<VersionMetadata>,
    /// When the secret was first stored (Unix seconds).
    pub created_unix: u64,
}

/// Metadata of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMetadata {
    /// Version number, from 1.
    pub version: u64,
    /// Current, in grace, or disabled.
    pub state: VersionState,
    /// When this version was stored (Unix seconds).
    pub created_unix: u64,
    /// A masked hint such as `sk-…abcd`.
    pub hint: String,
    /// Keyed fingerprint, hex: equal values of one tenant have equal fingerprints.
    pub fingerprint: String,
}

/// Proof of a tenant's erasure, for the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureReceipt {
    /// The erased tenant.
    pub tenant: TenantId,
    /// Versions of the tenant key that were destroyed.
    pub key_versions: Vec<u32>,
    /// Secrets whose records were deleted.
    pub secrets_erased: usize,
    /// When (Unix seconds).
    pub erased_unix: u64,
}

pub(super) fn secret_aad<'a>(id: &'a SecretId, version: u64) -> Aad<'a> {
    Aad {
        tenant: id.tenant.as_str(),
        environment: id.environment.as_str(),
        name: id.name.as_str(),
        version,
        ..Aad::purpose(Purpose::Secret)
    }
}

/// Characters of a value a hint never shows.
const HIDDEN: usize = 24;

/// A hint that identifies a key to a person without revealing it: the prefix up to
/// the first `-` (if short, as in `sk-`) and up to the last four characters, but
/// never so much that fewer than 24 characters stay hidden. Shorter values show no
/// characters at all; values that are not text show their length only.
fn hint(value: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(value) else {
        return format!("({} bytes)", value.len());
    };
    // Counted and sliced in place: collecting the characters would copy the whole
    // secret into a buffer that is freed without being wiped.
    let chars = text.chars().count();
    let prefix = match text.find('-') {
        Some(i) if i <= 4 => text.get(..=i).unwrap_or(""),
        _ => "",
    };
    let Some(shown) = chars.checked_sub(HIDDEN + prefix.chars().count()) else {
        return "…".to_owned();
    };
    let suffix = match shown.min(4) {
        0 => "",
        n => text
            .char_indices()
            .rev()
            .nth(n - 1)
            .and_then(|(i, _)| text.get(i..))
            .unwrap_or(""),
    };
    format!("{prefix}…{suffix}")
}

impl SecretRecord {
    fn metadata(&self, id: SecretId) -> SecretMetadata {
        SecretMetadata {
            id,
            kind: self.kind,
            current_version: self.current,
            versions: self
                .versions
                .iter()
                .map(|v| VersionMetadata {
                    version: v.version,
                    state: v.state,
                    created_unix: v.created_unix,
                    hint: v.hint.clone(),
                    fingerprint: vault_crypto::hex::encode(&v.fingerprint).to_string(),
                })
                .collect(),
            created_unix: self.created_unix,
        }
    }
}

impl Vault {
    pub(super) fn read_secret(&self, id: &SecretId) -> Result<(SecretRecord, StoredValue)> {
        let key = secret_key(id);
        let value = self.store.get(&key)?.ok_or(Error::NotFound)?;
        Ok((records::decode(&key, &value)?, value))
    }

    /// Seals `value` as `version` of `id` under the tenant's current key.
    fn seal_version(
        &self,
        keyring: &super::keyring::Keyring,
        id: &SecretId,
        version: u64,
        value: &SecretValue,
    ) -> Result<SecretVersionRecord> {
        let (envelope, fingerprint) = self.seal_value(keyring, id, version, value)?;
        Ok(SecretVersionRecord {
            version,
            state: VersionState::Current,
            value: Some(envelope),
            created_unix: self.now_unix(),
            hint: hint(value.expose_secret()),
            fingerprint,
        })
    }

    /// `value` sealed as `version` of `id` under the tenant's current key, and its
    /// fingerprint under that key.
    pub(super) fn seal_value(
        &self,
        keyring: &super::keyring::Keyring,
        id: &SecretId,
        version: u64,
        value: &SecretValue,
    ) -> Result<(Envelope, [u8; 8])> {
        let key = keyring.encryption_key(self.store.as_ref(), &id.tenant, true)?;
        let envelope = key.seal(&secret_aad(id, version), value.expose_secret())?;
        let fingerprint = key.fingerprint(
            id.tenant.as_str(),
            id.environment.as_str(),
            id.name.as_str(),
            value.expose_secret(),
        )?;
        Ok((envelope, fingerprint))
    }

    /// Stores a new secret as version 1. Fails with [`Error::AlreadyExists`] if the
    /// name is taken (use [`Vault::rotate_secret`]).
    pub fn put_secret(
        &self,
        id: &SecretId,
        kind: SecretKind,
        value: &SecretValue,
    ) -> Result<SecretMetadata> {
        self.with_keyring(|keyring| {
            let record = SecretRecord {
                kind,
                current: 1,
                versions: vec![self.seal_version(keyring, id, 1, value)?],
                created_unix: self.now_unix(),
            };
            let key = secret_key(id);
            let txn = Transaction::new()
                .require_absent(key.clone())
                .put(key, records::encode(&record));
            match self.store.transact(txn) {
                Ok(()) => Ok(record.metadata(id.clone())),
                Err(StoreError::Conflict { .. }) => Err(Error::AlreadyExists),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Stores `value` as the new current version. The previous current version stays
    /// leasable for `grace` (the vault's default if `None`), then is disabled.
    pub fn rotate_secret(
        &self,
        id: &SecretId,
        value: &SecretValue,
        grace: Option<Duration>,
    ) -> Result<SecretMetadata> {
        let grace = grace.unwrap_or(self.options.default_grace);
        if grace > self.options.max_grace {
            return Err(Error::GraceTooLong {
                requested: grace,
                max: self.options.max_grace,
            });
        }
        self.with_keyring(|keyring| {
            for _ in 0..CAS_ATTEMPTS {
                let (mut record, old) = self.read_secret(id)?;
                let version = record
                    .versions
                    .iter()
                    .map(|v| v.version)
                    .max()
                    .unwrap_or(0)
                    .saturating_add(1);
                let until_unix = self.now_unix().saturating_add(grace.as_secs());
                for v in &mut record.versions {
                    if v.state == VersionState::Current {
                        v.state = VersionState::Grace { until_unix };
                    }
                }
                record
                    .versions
                    .push(self.seal_version(keyring, id, version, value)?);
                record.current = version;
                let key = secret_key(id);
                let txn = Transaction::new()
                    .require_eq(key.clone(), old)
                    .put(key, records::encode(&record));
                match self.store.transact(txn) {
                    Ok(()) => return Ok(record.metadata(id.clone())),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Error::Contention("secret"))
        })
    }

    /// A secret's metadata.
    pub fn describe_secret(&self, id: &SecretId) -> Result<SecretMetadata> {
        self.with_keyring(|_| Ok(self.read_secret(id)?.0.metadata(id.clone())))
    }

    /// Every secret of `tenant`, optionally in one environment, ordered by name.
    pub fn list_secrets(
        &self,
        tenant: &TenantId,
        environment: Option<Environment>,
    ) -> Result<Vec<SecretMetadata>> {
        self.with_keyring(|_| {
            self.store
                .scan_prefix(&secret_prefix(tenant, environment))?
                .into_iter()
                .map(|(key, value)| {
                    let record: SecretRecord = records::decode(&key, &value)?;
                    Ok(record.metadata(
                        parse_secret_key(&key).ok_or_else(|| records::corrupt_key(&key))?,
                    ))
                })
                .collect()
        })
    }

    /// Deletes a secret and all its versions.
    pub fn delete_secret(&self, id: &SecretId) -> Result<()> {
        self.with_keyring(|_| {
            let key = secret_key(id);
            let gone = Notice::RevokeLeases(
                Selector::Secret(id.clone()),
                RevocationReason::VersionDisabled,
            );
            let txn = Transaction::new()
                .require_present(key.clone())
                .delete(key)
                .announce(gone.encode());
            match self.store.transact(txn) {
                Ok(()) => Ok(()),
                Err(StoreError::Conflict { .. }) => Err(Error::NotFound),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Decrypts `version` of a secret (the current version if `None`) into a
    /// zeroising buffer. Only the lease path calls this, to seal the value to a
    /// client's session. A version past its grace window is refused even before the
    /// sweeper disables it.
    pub fn open_secret(&self, id: &SecretId, version: Option<u64>) -> Result<(SecretValue, u64)> {
        self.with_keyring(|keyring| {
            let (record, _) = self.read_secret(id)?;
            let wanted = version.unwrap_or(record.current);
            let entry = record
                .versions
                .iter()
                .find(|v| v.version == wanted)
                .ok_or(Error::VersionUnavailable(wanted))?;
            let now = self.now_unix();
            let envelope: &Envelope = match (&entry.state, &entry.value) {
                (VersionState::Current, Some(e)) => e,
                (VersionState::Grace { until_unix }, Some(e)) if now < *until_unix => e,
                _ => return Err(Error::VersionUnavailable(wanted)),
            };
            let key =
                keyring.tenant_key(self.store.as_ref(), &id.tenant, envelope.key_version())?;
            let value = key.open(envelope, &secret_aad(id, wanted))?;
            Ok((value, wanted))
        })
    }

    /// Whether `version` of a secret could be leased now: the vault is unsealed, the
    /// secret exists, and the version is current or within its grace window. Renewals
    /// check this, so a lease does not outlive a seal, deletion or disabled version.
    pub fn check_leasable(&self, id: &SecretId, version: u64) -> Result<()> {
        self.with_keyring(|_| {
            let (record, _) = self.read_secret(id)?;
            let leasable = record.versions.iter().any(|v| {
                v.version == version
                    && v.value.is_some()
                    && match v.state {
                        VersionState::Current => true,
                        VersionState::Grace { until_unix } => self.now_unix() < until_unix,
                        VersionState::Disabled => false,
                    }
            });
            leasable
                .then_some(())
                .ok_or(Error::VersionUnavailable(version))
        })
    }

    /// The secrets with a version whose grace window ended at or before `now_unix`,
    /// and the records that do not decode (each is reported, not a reason to stop).
    pub fn sweep_candidates(&self, now_unix: u64) -> Result<Vec<SweepItem>> {
        self.with_keyring(|_| Ok(()))?;
        let mut items = Vec::new();
        for (key, value) in self.store.scan_prefix(SECRET_PREFIX)? {
            let record: SecretRecord = match records::decode(&key, &value) {
                Ok(record) => record,
                Err(error) => {
                    items.push(SweepItem::Corrupt(error));
                    continue;
                }
            };
            if !record.versions.iter().any(|v| grace_ended(v, now_unix)) {
                continue;
            }
            match parse_secret_key(&key) {
                Some(id) => items.push(SweepItem::Expired(id)),
                None => items.push(SweepItem::Corrupt(records::corrupt_key(&key))),
            }
        }
        Ok(items)
    }

    /// Disables `id`'s versions whose grace window ended at or before `now_unix`,
    /// destroying their ciphertext, in one write. Returns the versions disabled (none
    /// if the secret changed meanwhile so that none is due).
    pub fn disable_expired(&self, id: &SecretId, now_unix: u64) -> Result<Vec<u64>> {
        self.with_keyring(|_| {
            for _ in 0..CAS_ATTEMPTS {
                let (mut record, old) = match self.read_secret(id) {
                    Ok(found) => found,
                    Err(Error::NotFound) => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                let mut expired = Vec::new();
                for v in &mut record.versions {
                    if grace_ended(v, now_unix) {
                        v.state = VersionState::Disabled;
                        v.value = None;
                        expired.push(v.version);
                    }
                }
                if expired.is_empty() {
                    return Ok(expired);
                }
                let key = secret_key(id);
                let txn = expired.iter().fold(
                    Transaction::new()
                        .require_eq(key.clone(), old)
                        .put(key, records::encode(&record)),
                    |txn, version| {
                        txn.announce(
                            Notice::RevokeLeases(
                                Selector::Version(id.clone(), *version),
                                RevocationReason::VersionDisabled,
                            )
                            .encode(),
                        )
                    },
                );
                match self.store.transact(txn) {
                    Ok(()) => return Ok(expired),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Error::Contention("secret"))
        })
    }

    /// Erases a tenant: destroys every version of its key (one write: from then on
    /// every ciphertext of the tenant, wherever it was copied, is unreadable; see
    /// SECURITY.md for backups taken before), wipes its unwrapped keys from memory,
    /// then deletes its secrets in batches. While it runs, none of the tenant's keys
    /// is handed out; other tenants are served throughout. If it is interrupted,
    /// erasing again finishes the deletion.
    pub fn erase_tenant(&self, tenant: &TenantId) -> Result<ErasureReceipt> {
        // Exclusive for a moment: requests that hold the tenant's key finish first,
        // and none gets it afterwards.
        self.with_keyring_exclusive(|keyring| {
            keyring.begin_erasing(tenant);
            Ok(())
        })?;
        let erased = self.erase_records(tenant);
        // Sealed meanwhile: the keyring, and its mark, are gone already.
        let _ = self.with_keyring(|keyring| {
            keyring.end_erasing(tenant);
            Ok(())
        });
        erased
    }

    fn erase_records(&self, tenant: &TenantId) -> Result<ErasureReceipt> {
        let tkey = tenant_key(tenant);
        let mut key_versions = Vec::new();
        for attempt in 0..=CAS_ATTEMPTS {
            if attempt == CAS_ATTEMPTS {
                return Err(Error::Contention("tenant"));
            }
            let Some(value) = self.store.get(&tkey)? else {
                break;
            };
            let record = records::decode_tenant(&tkey, &value)?;
            // Other nodes forget the keys and end the leases with this very write.
            let txn = Transaction::new()
                .require_eq(tkey.clone(), value)
                .delete(tkey.clone())
                .announce(Notice::TenantKeys(tenant.clone()).encode())
                .announce(
                    Notice::RevokeLeases(
                        Selector::Tenant(tenant.clone()),
                        RevocationReason::TenantErased,
                    )
                    .encode(),
                );
            match self.store.transact(txn) {
                Ok(()) => {
                    key_versions = record.keys.iter().map(|k| k.version).collect();
                    break;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let secrets: Vec<Vec<u8>> = self
            .store
            .scan_prefix(&secret_prefix(tenant, None))?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        for batch in secrets.chunks(ERASE_BATCH) {
            let txn = batch
                .iter()
                .fold(Transaction::new(), |txn, key| txn.delete(key.clone()));
            self.store.transact(txn)?;
        }
        Ok(ErasureReceipt {
            tenant: tenant.clone(),
            key_versions,
            secrets_erased: secrets.len(),
            erased_unix: self.now_unix(),
        })
    }
}

/// Secret records deleted in one write during an erasure.
const ERASE_BATCH: usize = 1000;

/// Whether `version` is in a grace window that ended at or before `now_unix`.
fn grace_ended(version: &SecretVersionRecord, now_unix: u64) -> bool {
    matches!(version.state, VersionState::Grace { until_unix } if until_unix <= now_unix)
}

/// One secret the grace sweep looked at.
#[derive(Debug)]
pub enum SweepItem {
    /// A version of this secret is past its grace window.
    Expired(SecretId),
    /// This record does not decode; it is skipped.
    Corrupt(records::CorruptRecord),
}

/// Parses `secret/<tenant>/<env>/<name>` back into an id.
pub(super) fn parse_secret_key(key: &[u8]) -> Option<SecretId> {
    let text = std::str::from_utf8(key).ok()?.strip_prefix("secret/")?;
    let (tenant, rest) = text.split_once('/')?;
    let (env, name) = rest.split_once('/')?;
    Some(SecretId {
        tenant: TenantId::new(tenant).ok()?,
        environment: Environment::parse(env).ok()?,
        name: SecretName::new(name).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_reveal_at_most_a_prefix_and_four_characters() {
        // A typical provider key: its public prefix and the last four.
        assert_eq!(
            hint(b"sk-proj-0123456789abcdef0123456789abcdefXYZW"),
            "sk-…XYZW"
        );
        // Shorter values show less, so at least 24 characters always stay hidden.
        assert_eq!(hint(b"sk-proj-0123456789abcdefXY"), "…"); // 26 characters
        assert_eq!(hint(b"sk-proj-0123456789abcdefXYZ"), "sk-…"); // 27: 3 + 24
        assert_eq!(hint(b"sk-proj-0123456789abcdefXYZW"), "sk-…W"); // 28
        assert_eq!(hint(b"0123456789abcdefghijklmnXYZW"), "…XYZW"); // 28, no prefix
        assert_eq!(hint(b"0123456789abcdefXYZW"), "…");
        assert_eq!(hint(b"short-secret"), "…");
        assert_eq!(hint(&[0xff, 0xfe, 0, 1]), "(4 bytes)");
        for len in 0..64 {
            let value = "é".repeat(len);
            let shown = hint(value.as_bytes()).replace('…', "");
            assert!(len - shown.chars().count() >= HIDDEN.min(len), "{len}");
        }
    }

    #[test]
    fn secret_keys_parse_back() {
        let id = SecretId::parse("acme", "test", "byok/openai").unwrap();
        assert_eq!(parse_secret_key(&secret_key(&id)), Some(id));
        assert_eq!(parse_secret_key(b"secret/acme/prod/x"), None);
        assert_eq!(parse_secret_key(b"tenant/acme"), None);
    }
}
