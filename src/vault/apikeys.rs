//! Platform API keys in storage: issued once, kept as an HMAC under the pepper (a
//! system key under the root key), rotated with a grace window, revoked at once.
//!
//! Verification here is the part that needs the store and the pepper: the record by
//! key id, the MAC compared in constant time, and the record's own verdict (state,
//! expiry, environment, scope). Rate limits and quotas are the daemon's, above.

use std::time::Duration;

use vault_crypto::SecretValue;
use vault_proto::apikey;
use zeroize::Zeroizing;

use super::Vault;
use super::keyring::CAS_ATTEMPTS;
use crate::cluster::Notice;
use crate::error::{Error, Result};
use crate::limits::quota::QuotaDelta;
use crate::names::{Environment, TenantId};
use crate::records::{
    self, ApiKeyIndex, ApiKeyRecord, ApiKeyState, QuotaRecord, RateWindows, api_key_index,
    api_key_index_prefix, api_key_key, quota_key,
};
use crate::storage::{StoreError, Transaction};

/// What a new key is for.
#[derive(Debug, Clone)]
pub(crate) struct ApiKeySpec {
    pub(crate) tenant: TenantId,
    pub(crate) environment: Environment,
    pub(crate) scopes: Vec<String>,
    pub(crate) tier: String,
    pub(crate) limits: RateWindows,
    pub(crate) daily_quota: u64,
    pub(crate) expires_unix: Option<u64>,
    pub(crate) label: String,
}

/// A key just issued: the only time its text exists outside the caller.
pub(crate) struct IssuedKey {
    pub(crate) id: String,
    pub(crate) record: ApiKeyRecord,
    /// The whole key, zeroised when dropped.
    pub(crate) key: SecretValue,
}

/// Why a key that was found and whose MAC matched does not verify now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRefusal {
    /// Revoked.
    Revoked,
    /// Past its expiry, or rotated and past its grace window.
    Expired,
    /// A key of the other environment.
    Environment,
    /// The key lacks the scope the request needs.
    Scope,
}

impl ApiKeyRecord {
    /// Whether the key verifies at `now_unix` for `environment` and `scope`.
    pub(crate) fn judge(
        &self,
        now_unix: u64,
        environment: Environment,
        scope: Option<&str>,
    ) -> std::result::Result<(), KeyRefusal> {
        match &self.state {
            ApiKeyState::Revoked { .. } => return Err(KeyRefusal::Revoked),
            ApiKeyState::Rotated { grace_until, .. } if now_unix >= *grace_until => {
                return Err(KeyRefusal::Expired);
            }
            ApiKeyState::Active | ApiKeyState::Rotated { .. } => {}
        }
        if self.expires_unix.is_some_and(|at| now_unix >= at) {
            return Err(KeyRefusal::Expired);
        }
        if self.environment != environment {
            return Err(KeyRefusal::Environment);
        }
        if scope.is_some_and(|s| !self.scopes.iter().any(|granted| granted == s)) {
            return Err(KeyRefusal::Scope);
        }
        Ok(())
    }

    /// Until when (Unix seconds) the key verifies, if it stops by itself.
    pub(crate) fn valid_until(&self) -> Option<u64> {
        let grace = match &self.state {
            ApiKeyState::Rotated { grace_until, .. } => Some(*grace_until),
            _ => None,
        };
        match (grace, self.expires_unix) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `len` random base62 characters into a zeroising buffer: bytes of 248 and above
/// are drawn again, so every character is equally likely.
fn random_base62(len: usize) -> Result<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(len));
    let mut bytes = Zeroizing::new([0u8; 64]);
    while out.len() < len {
        vault_crypto::aead::random_bytes(&mut bytes[..])?;
        for &b in bytes.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(apikey::base62_digit(b));
        }
    }
    Ok(out)
}

/// Days since the Unix epoch: the UTC day a quota counts.
pub(crate) fn utc_day(now_unix: u64) -> u64 {
    now_unix / 86_400
}

impl Vault {
    /// Issues a key for `spec`, refused when the tenant already holds `max_per_tenant`
    /// keys that have not been revoked.
    pub(crate) fn issue_api_key(
        &self,
        spec: &ApiKeySpec,
        max_per_tenant: usize,
    ) -> Result<IssuedKey> {
        self.with_keyring(|keyring| {
            let held = self.count_api_keys(&spec.tenant)?;
            if held >= max_per_tenant {
                return Err(Error::ApiKeyLimit(max_per_tenant));
            }
            for _ in 0..CAS_ATTEMPTS {
                let id = random_base62(apikey::ID_LEN)?;
                let secret = random_base62(apikey::SECRET_LEN)?;
                let mut text = Zeroizing::new(String::with_capacity(apikey::MAX_LEN));
                apikey::compose(spec.environment.as_str(), &id, &secret, &mut text);
                let record = ApiKeyRecord {
                    tenant: spec.tenant.clone(),
                    environment: spec.environment,
                    scopes: spec.scopes.clone(),
                    tier: spec.tier.clone(),
                    limits: spec.limits,
                    daily_quota: spec.daily_quota,
                    mac: keyring.system().api_key_pepper.sign(text.as_bytes()),
                    created_unix: self.now_unix(),
                    expires_unix: spec.expires_unix,
                    label: spec.label.clone(),
                    state: ApiKeyState::Active,
                };
                let key = api_key_key(&id);
                let txn = Transaction::new()
                    .require_absent(key.clone())
                    .put(key, records::encode(&record))
                    .put(
                        api_key_index(&spec.tenant, &id),
                        records::encode(&ApiKeyIndex),
                    );
                match self.store.transact(txn) {
                    Ok(()) => {
                        return Ok(IssuedKey {
                            id: id.to_string(),
                            record,
                            key: SecretValue::from_vec(std::mem::take(&mut *text).into_bytes()),
                        });
                    }
                    // An id drawn twice (about 2^-71 per pair): draw again.
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Error::Contention("api key ids"))
        })
    }

    /// The record of key `id`.
    pub(crate) fn api_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let key = api_key_key(id);
        let value = self.store.get(&key)?.ok_or(Error::NotFound)?;
        Ok(records::decode(&key, &value)?)
    }

    /// Whether `text` is the key whose record this is: its HMAC under the pepper,
    /// compared in constant time. Needs the vault unsealed.
    pub(crate) fn api_key_matches(&self, text: &[u8], record: &ApiKeyRecord) -> Result<bool> {
        self.with_keyring(|keyring| Ok(keyring.system().api_key_pepper.verify(text, &record.mac)))
    }

    /// Replaces key `id` with a successor of the same tenant, environment, scopes,
    /// limits and quota; the old key verifies for `grace` more.
    pub(crate) fn rotate_api_key(
        &self,
        id: &str,
        grace: Duration,
        max_per_tenant: usize,
    ) -> Result<(IssuedKey, ApiKeyRecord)> {
        let old = self.api_key(id)?;
        if !matches!(old.state, ApiKeyState::Active) {
            return Err(Error::ApiKeyNotActive);
        }
        let issued = self.issue_api_key(
            &ApiKeySpec {
                tenant: old.tenant.clone(),
                environment: old.environment,
                scopes: old.scopes.clone(),
                tier: old.tier.clone(),
                limits: old.limits,
                daily_quota: old.daily_quota,
                expires_unix: old.expires_unix,
                label: old.label.clone(),
            },
            max_per_tenant.saturating_add(1),
        )?;
        let grace_until = self.now_unix().saturating_add(grace.as_secs());
        let updated = self.update_api_key(id, None, |record| match record.state {
            ApiKeyState::Active => {
                record.state = ApiKeyState::Rotated {
                    grace_until,
                    successor: issued.id.clone(),
                };
                Ok(())
            }
            _ => Err(Error::ApiKeyNotActive),
        });
        match updated {
            Ok(old) => Ok((issued, old)),
            Err(e) => {
                // Rotated or revoked meanwhile: the successor must not outlive that.
                let _ = self.revoke_api_key(&issued.id);
                Err(e)
            }
        }
    }

    /// Revokes key `id` at once. Revoking a revoked key changes nothing.
    pub(crate) fn revoke_api_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let at_unix = self.now_unix();
        let revoked = Notice::ApiKeyRevoked(id.to_owned());
        self.update_api_key(id, Some(&revoked), |record| {
            if !matches!(record.state, ApiKeyState::Revoked { .. }) {
                record.state = ApiKeyState::Revoked { at_unix };
            }
            Ok(())
        })
    }

    /// Reads, changes and writes back key `id`'s record, retrying on contention, and
    /// tells other nodes sharing the store `notice` in the same write.
    fn update_api_key(
        &self,
        id: &str,
        notice: Option<&Notice>,
        mut change: impl FnMut(&mut ApiKeyRecord) -> Result<()>,
    ) -> Result<ApiKeyRecord> {
        let key = api_key_key(id);
        for _ in 0..CAS_ATTEMPTS {
            let value = self.store.get(&key)?.ok_or(Error::NotFound)?;
            let mut record: ApiKeyRecord = records::decode(&key, &value)?;
            change(&mut record)?;
            let mut txn = Transaction::new()
                .require_eq(key.clone(), value)
                .put(key.clone(), records::encode(&record));
            if let Some(notice) = notice {
                txn = txn.announce(notice.encode());
            }
            match self.store.transact(txn) {
                Ok(()) => return Ok(record),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contention("api key"))
    }

    /// A tenant's keys, by key id, optionally of one environment.
    pub(crate) fn list_api_keys(
        &self,
        tenant: &TenantId,
        environment: Option<Environment>,
    ) -> Result<Vec<(String, ApiKeyRecord)>> {
        let prefix = api_key_index_prefix(tenant);
        let mut keys = Vec::new();
        for (index, _) in self.store.scan_prefix(&prefix)? {
            let id =
                String::from_utf8_lossy(index.get(prefix.len()..).unwrap_or_default()).into_owned();
            match self.api_key(&id) {
                Ok(record) if environment.is_none_or(|e| e == record.environment) => {
                    keys.push((id, record));
                }
                Ok(_) | Err(Error::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(keys)
    }

    /// Keys of `tenant` not revoked.
    fn count_api_keys(&self, tenant: &TenantId) -> Result<usize> {
        Ok(self
            .list_api_keys(tenant, None)?
            .iter()
            .filter(|(_, r)| !matches!(r.state, ApiKeyState::Revoked { .. }))
            .count())
    }

    /// The quota units key `id` used on its last counted day.
    pub(crate) fn read_quota(&self, id: &str) -> Result<Option<QuotaRecord>> {
        let key = quota_key(id);
        match self.store.get(&key)? {
            Some(value) => Ok(Some(records::decode(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// Adds each node's units to the stored daily counts, all in one durable commit
    /// that holds only if no count changed since it was read (re-read and retried if
    /// one did). Returns each key's stored total after it; `None` where the stored count
    /// is already of a later day, which a delta of an earlier one does not touch.
    pub(crate) fn add_quota_usage(&self, deltas: &[QuotaDelta]) -> Result<Vec<Option<u64>>> {
        if deltas.is_empty() {
            return Ok(Vec::new());
        }
        for _ in 0..CAS_ATTEMPTS {
            let mut txn = Transaction::new();
            let mut totals = Vec::with_capacity(deltas.len());
            for delta in deltas {
                let key = quota_key(&delta.id);
                let stored = self.store.get(&key)?;
                let current: Option<QuotaRecord> = match &stored {
                    Some(value) => Some(records::decode(&key, value)?),
                    None => None,
                };
                let base = match current {
                    Some(r) if r.day > delta.day => {
                        totals.push(None);
                        continue;
                    }
                    Some(r) if r.day == delta.day => r.used,
                    _ => 0,
                };
                let record = QuotaRecord {
                    day: delta.day,
                    used: base.saturating_add_signed(delta.units),
                };
                totals.push(Some(record.used));
                txn = match stored {
                    Some(value) => txn.require_eq(key.clone(), value),
                    None => txn.require_absent(key.clone()),
                }
                .put(key, records::encode(&record));
            }
            match self.store.transact(txn) {
                Ok(()) => return Ok(totals),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contention("quota"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: ApiKeyState) -> ApiKeyRecord {
        ApiKeyRecord {
            tenant: TenantId::new("acme").unwrap(),
            environment: Environment::Live,
            scopes: vec!["usage:read".into()],
            tier: String::new(),
            limits: RateWindows::default(),
            daily_quota: 0,
            mac: [0; 32],
            created_unix: 100,
            expires_unix: Some(1_000),
            label: String::new(),
            state,
        }
    }

    #[test]
    fn a_record_judges_state_expiry_environment_and_scope() {
        let active = record(ApiKeyState::Active);
        assert_eq!(
            active.judge(999, Environment::Live, Some("usage:read")),
            Ok(())
        );
        assert_eq!(active.judge(999, Environment::Live, None), Ok(()));
        assert_eq!(
            active.judge(1_000, Environment::Live, None),
            Err(KeyRefusal::Expired)
        );
        assert_eq!(
            active.judge(999, Environment::Test, None),
            Err(KeyRefusal::Environment)
        );
        assert_eq!(
            active.judge(999, Environment::Live, Some("usage:write")),
            Err(KeyRefusal::Scope)
        );
        let rotated = record(ApiKeyState::Rotated {
            grace_until: 500,
            successor: "x".into(),
        });
        assert_eq!(rotated.judge(499, Environment::Live, None), Ok(()));
        assert_eq!(
            rotated.judge(500, Environment::Live, None),
            Err(KeyRefusal::Expired)
        );
        assert_eq!(rotated.valid_until(), Some(500));
        let revoked = record(ApiKeyState::Revoked { at_unix: 1 });
        assert_eq!(
            revoked.judge(2, Environment::Live, None),
            Err(KeyRefusal::Revoked)
        );
    }

    #[test]
    fn random_base62_is_of_the_length_asked_and_varies() {
        let a = random_base62(apikey::SECRET_LEN).unwrap();
        let b = random_base62(apikey::SECRET_LEN).unwrap();
        assert_eq!(a.len(), apikey::SECRET_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(*a, *b);
    }
}
