//! What vaultd keeps in its store, and how each record is keyed and encoded.
//!
//! Every record holds only ciphertext ([`Envelope`]) and non-secret metadata. The
//! `Record` trait is sealed to the types in this module, and
//! [`StoredValue`] can only be built by `encode`, so no
//! other type — in particular no plaintext buffer — can reach a store.
//!
//! | key                               | record                |
//! |-----------------------------------|-----------------------|
//! | `seal`                            | `SealRecord`          |
//! | `seal-pending`                    | `PendingRekey`        |
//! | `seal-pending-shares`             | `PendingShares`       |
//! | `seal-token`                      | `TokenSealRecord`     |
//! | `system/<name>`                   | `SystemKeyRecord`     |
//! | `tenant/<tenant>`                 | `TenantRecord`        |
//! | `secret/<tenant>/<env>/<name>`    | `SecretRecord`        |
//! | `apikey/<key id>`                 | `ApiKeyRecord`        |
//! | `apikeys-of/<tenant>/<key id>`    | `ApiKeyIndex`         |
//! | `apikey-use/<key id>`             | `QuotaRecord`         |
//! | `breakglass/<grant id>`           | `BreakGlassRecord`    |
//!
//! Records are encoded with postcard. Tenant ids cannot contain `/`, so the prefix
//! `secret/<tenant>/` never matches another tenant.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use vault_crypto::envelope::Envelope;

use crate::names::{Environment, SecretId, SecretKind, TenantId};
use crate::storage::StoredValue;

/// Key of the seal record.
pub(crate) const SEAL_KEY: &[u8] = b"seal";
/// Key of a rekey's share set until a quorum of it is verified.
pub(crate) const PENDING_REKEY_KEY: &[u8] = b"seal-pending";
/// Key of a ceremony rekey's new shares, encrypted to their custodians, until the
/// set is verified.
pub(crate) const PENDING_SHARES_KEY: &[u8] = b"seal-pending-shares";
/// Key of the unseal key wrapped by a PKCS#11 token (auto-unseal), while enabled.
pub(crate) const TOKEN_SEAL_KEY: &[u8] = b"seal-token";

pub(crate) fn system_key(name: &str) -> Vec<u8> {
    format!("system/{name}").into_bytes()
}

pub(crate) fn tenant_key(tenant: &TenantId) -> Vec<u8> {
    format!("tenant/{tenant}").into_bytes()
}

pub(crate) fn secret_key(id: &SecretId) -> Vec<u8> {
    format!("secret/{}/{}/{}", id.tenant, id.environment, id.name).into_bytes()
}

pub(crate) fn secret_prefix(tenant: &TenantId, environment: Option<Environment>) -> Vec<u8> {
    match environment {
        Some(env) => format!("secret/{tenant}/{env}/").into_bytes(),
        None => format!("secret/{tenant}/").into_bytes(),
    }
}

pub(crate) const SECRET_PREFIX: &[u8] = b"secret/";

pub(crate) fn api_key_key(id: &str) -> Vec<u8> {
    format!("apikey/{id}").into_bytes()
}

pub(crate) fn api_key_index(tenant: &TenantId, id: &str) -> Vec<u8> {
    format!("apikeys-of/{tenant}/{id}").into_bytes()
}

pub(crate) fn api_key_index_prefix(tenant: &TenantId) -> Vec<u8> {
    format!("apikeys-of/{tenant}/").into_bytes()
}

pub(crate) fn quota_key(id: &str) -> Vec<u8> {
    format!("apikey-use/{id}").into_bytes()
}

pub(crate) const BREAKGLASS_PREFIX: &[u8] = b"breakglass/";

pub(crate) fn breakglass_key(id: &str) -> Vec<u8> {
    format!("breakglass/{id}").into_bytes()
}

/// A break-glass grant, and an HMAC of it under a system key while it is pending or
/// active: a grant that gives permissions is believed only if its MAC verifies, so
/// whoever can write the data file cannot forge one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BreakGlassRecord {
    pub grant: BreakGlassGrant,
    pub mac: Option<[u8; 32]>,
}

/// What was asked for, who approved, and where the grant stands. Names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BreakGlassGrant {
    pub id: String,
    pub requester: String,
    /// Permission names, each one that acts on one tenant.
    pub permissions: Vec<String>,
    /// Tenant ids or globs.
    pub tenants: Vec<String>,
    pub duration_secs: u64,
    pub reason: String,
    pub requested_unix: u64,
    /// Approvals needed (the configuration's, when it was asked for).
    pub required: u32,
    /// (identity, Unix seconds), in order.
    pub approvals: Vec<(String, u64)>,
    pub state: BreakGlassState,
}

/// Where a grant stands, as stored. An active grant past `until` has expired
/// whether or not the record says so yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum BreakGlassState {
    Pending,
    Active {
        since: u64,
        until: u64,
    },
    /// `why`: `revoked`, `sealed`, `expired` or `lapsed`; `by` the revoker, if any.
    Ended {
        at: u64,
        why: String,
        by: String,
    },
}

/// A platform API key: an HMAC of the key under the pepper (a system key under the
/// root key), and metadata. Never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApiKeyRecord {
    pub tenant: TenantId,
    pub environment: Environment,
    pub scopes: Vec<String>,
    /// The tier the limits came from; empty for explicit limits.
    pub tier: String,
    pub limits: RateWindows,
    /// Quota units per UTC day; 0 for none.
    pub daily_quota: u64,
    /// HMAC-SHA256 of the whole key under the pepper.
    pub mac: [u8; 32],
    pub created_unix: u64,
    pub expires_unix: Option<u64>,
    pub label: String,
    pub state: ApiKeyState,
}

/// Request rates in three windows; 0 leaves a window unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct RateWindows {
    pub burst: u32,
    pub per_minute: u32,
    pub per_day: u32,
}

/// Where an API key stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ApiKeyState {
    Active,
    /// Replaced by `successor`; verifies until `grace_until` (Unix seconds).
    Rotated {
        grace_until: u64,
        successor: String,
    },
    Revoked {
        at_unix: u64,
    },
}

/// Marks a key as one of a tenant's, for listing without a scan of every key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApiKeyIndex;

/// Quota units a key used on one UTC day (days since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QuotaRecord {
    pub day: u64,
    pub used: u64,
}

/// The root of the hierarchy: share-set parameters and the root key(s) wrapped under
/// the unseal key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SealRecord {
    /// Share-set generation; increases on every rekey.
    pub generation: u32,
    pub threshold: u8,
    pub shares: u8,
    /// Root key versions wrapped under the unseal key: one, or two during a rotation.
    pub roots: Vec<WrappedRoot>,
    /// Version that wraps new keys.
    pub current_root: u32,
    /// Set while a root-key rotation is rewrapping records; cleared when it completes.
    pub rotation: Option<RootRotation>,
    pub created_unix: u64,
}

/// A new share set made by a rekey, not yet in force: the root keys wrapped under
/// its unseal key. It replaces the seal record's set only once a quorum of its shares
/// has been shown to open it, so a rekey whose shares never reached the custodians
/// leaves the current set valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingRekey {
    /// The seal record's generation when the rekey was made: the set is stale once
    /// that changes.
    pub base_generation: u32,
    pub generation: u32,
    pub threshold: u8,
    pub shares: u8,
    /// The same root versions as the seal record's, wrapped under the new unseal key.
    pub roots: Vec<WrappedRoot>,
    pub created_unix: u64,
}

/// A ceremony rekey's new shares, each encrypted to its custodian's age key: not
/// secret, kept so an answer lost on its way can be fetched again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingShares {
    /// The pending set's generation these belong to.
    pub generation: u32,
    pub shares: Vec<CustodianShare>,
}

/// The unseal key of one share-set generation, wrapped by an AES-256-GCM key that
/// stays in a PKCS#11 token. Opens only in that token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenSealRecord {
    /// The share-set generation of the wrapped key: a rekey makes the record stale
    /// unless it is rewrapped.
    pub generation: u32,
    /// The token's label and the key's, as configured when it was made.
    pub token: String,
    pub key_label: String,
    pub iv: [u8; 12],
    /// Ciphertext and tag.
    pub wrapped: Vec<u8>,
    pub created_unix: u64,
}

/// One custodian's share as an age file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodianShare {
    /// The custodian's name, for the file name `share-<name>.age`.
    pub name: String,
    /// The custodian's age public key (`age1…`).
    pub recipient: String,
    /// The age file.
    pub sealed: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WrappedRoot {
    pub version: u32,
    pub wrapped: Envelope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootRotation {
    pub from: u32,
    pub to: u32,
}

/// A system key wrapped under the root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SystemKeyRecord {
    pub wrapped: Envelope,
}

/// A tenant's keys, each version wrapped under the root key. Versions below
/// `min_decrypt` were retired: their wrapped keys are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TenantRecord {
    pub keys: Vec<WrappedTenantKey>,
    pub current: u32,
    pub created_unix: u64,
    pub min_decrypt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WrappedTenantKey {
    pub version: u32,
    pub wrapped: Envelope,
    /// Encryptions this key may have performed: reserved in blocks before use, so a
    /// restart resumes the budget from here rather than from zero.
    pub reserved_encryptions: u64,
    pub created_unix: u64,
}

/// How tenant records were written before key versions could be retired; read, and
/// rewritten in the current form by the next change to the record.
#[derive(Deserialize)]
struct TenantRecordV1 {
    keys: Vec<WrappedTenantKeyV1>,
    current: u32,
    created_unix: u64,
}

#[derive(Deserialize)]
struct WrappedTenantKeyV1 {
    version: u32,
    wrapped: Envelope,
    reserved_encryptions: u64,
}

impl From<TenantRecordV1> for TenantRecord {
    fn from(v1: TenantRecordV1) -> Self {
        Self {
            min_decrypt: v1.keys.iter().map(|k| k.version).min().unwrap_or(1),
            keys: v1
                .keys
                .into_iter()
                .map(|k| WrappedTenantKey {
                    version: k.version,
                    wrapped: k.wrapped,
                    reserved_encryptions: k.reserved_encryptions,
                    created_unix: v1.created_unix,
                })
                .collect(),
            current: v1.current,
            created_unix: v1.created_unix,
        }
    }
}

/// Decodes a tenant record in its current form, or in the form written before key
/// versions could be retired.
pub(crate) fn decode_tenant(
    key: &[u8],
    value: &StoredValue,
) -> Result<TenantRecord, CorruptRecord> {
    decode::<TenantRecord>(key, value).or_else(|current| {
        strict::<TenantRecordV1>(value.as_bytes())
            .map(TenantRecord::from)
            .map_err(|_| current)
    })
}

/// A secret's versions. Values are envelopes under the tenant key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SecretRecord {
    pub kind: SecretKind,
    pub current: u64,
    pub versions: Vec<SecretVersionRecord>,
    pub created_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SecretVersionRecord {
    pub version: u64,
    pub state: VersionState,
    /// `None` once the version is disabled: its ciphertext is destroyed.
    pub value: Option<Envelope>,
    pub created_unix: u64,
    /// Masked hint such as `sk-…abcd`.
    pub hint: String,
    /// Keyed fingerprint (first 8 bytes of an HMAC under a tenant-key derivative).
    pub fingerprint: [u8; 8],
}

/// Lifecycle of one secret version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionState {
    /// The current version.
    Current,
    /// Replaced by a rotation; still leasable until the given time (Unix seconds).
    Grace {
        /// End of the grace window, Unix seconds.
        until_unix: u64,
    },
    /// No longer leasable; its ciphertext has been destroyed.
    Disabled,
}

mod sealed {
    pub(crate) trait Sealed {}
}

/// A type that may be stored. Sealed: implemented only for the records above.
pub(crate) trait Record: Serialize + DeserializeOwned + sealed::Sealed {}

macro_rules! records {
    ($($t:ty),*) => { $( impl sealed::Sealed for $t {} impl Record for $t {} )* };
}
records!(
    SealRecord,
    PendingRekey,
    PendingShares,
    TokenSealRecord,
    SystemKeyRecord,
    TenantRecord,
    SecretRecord,
    ApiKeyRecord,
    ApiKeyIndex,
    QuotaRecord,
    BreakGlassRecord
);

/// A stored record that does not decode, or a store key that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("stored record {key} is corrupt")]
pub struct CorruptRecord {
    /// The record's store key.
    pub key: String,
    /// The decoding error; `None` when the key itself is malformed.
    #[source]
    source: Option<postcard::Error>,
}

/// A store key under a known prefix that does not parse back into a name.
pub(crate) fn corrupt_key(key: &[u8]) -> CorruptRecord {
    CorruptRecord {
        key: String::from_utf8_lossy(key).into_owned(),
        source: None,
    }
}

pub(crate) fn encode<R: Record>(record: &R) -> StoredValue {
    // Serialising these plain structs into a Vec cannot fail: postcard errors only on
    // unsupported types (none here) or a full fixed-size buffer (not used).
    let bytes = postcard::to_stdvec(record).unwrap_or_default();
    StoredValue::from_encoded_record(bytes)
}

pub(crate) fn decode<R: Record>(key: &[u8], value: &StoredValue) -> Result<R, CorruptRecord> {
    strict(value.as_bytes()).map_err(|source| CorruptRecord {
        source: Some(source),
        ..corrupt_key(key)
    })
}

/// Decodes the whole of `bytes`: trailing bytes make a record corrupt, so no record
/// is ever mistaken for another form of itself.
fn strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_records_of_the_earlier_form_are_read() {
        #[derive(Serialize)]
        struct V1 {
            keys: Vec<(u32, Envelope, u64)>,
            current: u32,
            created_unix: u64,
        }
        let wrapped =
            Envelope::from_bytes(vec![1, 0, 0, 0, 1].into_iter().chain([0; 28]).collect()).unwrap();
        let v1 = V1 {
            keys: vec![(1, wrapped.clone(), 65536), (2, wrapped.clone(), 7)],
            current: 2,
            created_unix: 99,
        };
        let bytes = StoredValue::from_encoded_record(postcard::to_stdvec(&v1).unwrap());
        let record = decode_tenant(b"tenant/acme", &bytes).unwrap();
        assert_eq!(record.current, 2);
        assert_eq!(record.min_decrypt, 1);
        assert_eq!(record.keys[1].reserved_encryptions, 7);
        assert_eq!(record.keys[0].created_unix, 99);
        // The current form reads as itself, and never as the earlier one.
        let again = decode_tenant(b"tenant/acme", &encode(&record)).unwrap();
        assert_eq!(again, record);
        let mut trailing = encode(&record).into_bytes();
        trailing.push(0);
        assert!(decode_tenant(b"k", &StoredValue::from_encoded_record(trailing)).is_err());
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let record = TenantRecord {
            keys: vec![],
            current: 1,
            created_unix: 5,
            min_decrypt: 1,
        };
        let bytes = encode(&record).into_bytes();
        assert_eq!(
            decode::<TenantRecord>(b"k", &encode(&record)).unwrap(),
            record
        );
        for cut in 0..bytes.len() {
            let v = StoredValue::from_encoded_record(bytes[..cut].to_vec());
            assert!(decode::<TenantRecord>(b"k", &v).is_err());
        }
    }

    #[test]
    fn tenant_prefixes_do_not_overlap() {
        let a = TenantId::new("acme").unwrap();
        let id = SecretId::parse("acme2", "live", "x").unwrap();
        assert!(!secret_key(&id).starts_with(&secret_prefix(&a, None)));
    }
}
