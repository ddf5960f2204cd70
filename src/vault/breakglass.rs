//! Break-glass grants in storage. A grant that is pending or active carries an HMAC
//! under the API-key pepper (a system key under the root key), over a domain of its
//! own: a record that gives permissions is believed only while the vault can check
//! it, so a forged or altered record in the data file grants nothing. Ended grants
//! need no MAC (forging one could only take permissions away).

use super::Vault;
use crate::cluster::Notice;
use crate::error::Result;
use crate::records::{
    self, BREAKGLASS_PREFIX, BreakGlassGrant, BreakGlassRecord, BreakGlassState, breakglass_key,
};
use crate::storage::{StoreError, Transaction};

/// Separates these MACs from API-key MACs under the same key: a key's text never
/// holds a NUL byte.
const DOMAIN: &[u8] = b"vaultd breakglass grant v1\0";

fn message(grant: &BreakGlassGrant) -> Vec<u8> {
    let mut message = DOMAIN.to_vec();
    // Encoding a plain struct into a Vec cannot fail.
    message.extend(postcard::to_stdvec(grant).unwrap_or_default());
    message
}

impl Vault {
    /// Stores `grant` (with its MAC unless it has ended) and deletes the grants
    /// `forget`, in one transaction, if the stored grant is still `was` (absent for a
    /// new grant): `Ok(false)` if another node changed it meanwhile, and nothing is
    /// written. Other nodes sharing the store are told to reload their grants. A
    /// pending or active grant needs the vault unsealed.
    pub(crate) fn store_grant(
        &self,
        grant: &BreakGlassGrant,
        was: Option<&BreakGlassGrant>,
        forget: &[String],
    ) -> Result<bool> {
        let mac = match grant.state {
            BreakGlassState::Ended { .. } => None,
            _ => Some(self.with_keyring(|k| Ok(k.system().api_key_pepper.sign(&message(grant))))?),
        };
        let record = BreakGlassRecord {
            grant: grant.clone(),
            mac,
        };
        let key = breakglass_key(&grant.id);
        let stored = self.store.get(&key)?;
        let mut txn = match (&stored, was) {
            (None, None) => Transaction::new().require_absent(key.clone()),
            (Some(value), Some(was)) => {
                let current: BreakGlassRecord = records::decode(&key, value)?;
                if current.grant != *was {
                    return Ok(false);
                }
                Transaction::new().require_eq(key.clone(), value.clone())
            }
            _ => return Ok(false),
        }
        .put(key, records::encode(&record))
        .announce(Notice::BreakGlass.encode());
        for id in forget {
            txn = txn.delete(breakglass_key(id));
        }
        match self.store.transact(txn) {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every stored grant, as stored (MACs unchecked).
    pub(crate) fn stored_grants(&self) -> Result<Vec<BreakGlassRecord>> {
        self.store
            .scan_prefix(BREAKGLASS_PREFIX)?
            .iter()
            .map(|(key, value)| Ok(records::decode(key, value)?))
            .collect()
    }

    /// Whether `record`'s MAC verifies; `Err` while sealed.
    pub(crate) fn grant_is_authentic(&self, record: &BreakGlassRecord) -> Result<bool> {
        let Some(mac) = &record.mac else {
            return Ok(false);
        };
        self.with_keyring(|k| {
            Ok(k.system()
                .api_key_pepper
                .verify(&message(&record.grant), mac))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::VaultOptions;
    use super::super::tests::unseal_with;
    use super::*;
    use crate::breakglass::{BreakGlass, BreakGlassConfig};
    use crate::storage::redb::RedbStore;
    use vault_policy::Permission;

    fn active(tenants: &[&str]) -> BreakGlassGrant {
        BreakGlassGrant {
            id: "bg-00000000000000000000000000000001".into(),
            requester: "spiffe://x/support".into(),
            permissions: vec!["secrets.read-metadata".into()],
            tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            duration_secs: 600,
            reason: "test".into(),
            requested_unix: 1,
            required: 2,
            approvals: vec![("a".into(), 1), ("b".into(), 1)],
            state: BreakGlassState::Active {
                since: 1,
                until: u64::MAX,
            },
        }
    }

    #[test]
    fn an_altered_or_unsigned_grant_is_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("vault.redb")).unwrap());
        let vault = Arc::new(Vault::open(store, VaultOptions::default()).unwrap());
        let shares = vault.init(2, 3).unwrap();
        unseal_with(&vault, &shares[..2]).unwrap();
        vault.store_grant(&active(&["acme"]), None, &[]).unwrap();
        let stored = vault.stored_grants().unwrap();
        assert!(vault.grant_is_authentic(&stored[0]).unwrap());

        let load = || {
            BreakGlass::load(
                Arc::clone(&vault),
                BreakGlassConfig::default(),
                vault_crypto::clock::system(),
            )
            .unwrap()
        };
        let grants = load();
        let covering = |g: &BreakGlass, tenant| {
            g.covering(
                "spiffe://x/support",
                Permission::SecretsReadMetadata,
                Some(tenant),
            )
        };
        assert!(covering(&grants, "acme").is_some());
        assert!(covering(&grants, "globex").is_none());

        // Widened in the data file, MAC kept: grants nothing.
        let mut forged = stored[0].clone();
        forged.grant.tenants = vec!["*".into()];
        assert!(!vault.grant_is_authentic(&forged).unwrap());
        vault
            .store
            .put(&breakglass_key(&forged.grant.id), records::encode(&forged))
            .unwrap();
        let grants = load();
        assert!(covering(&grants, "acme").is_none());
        assert!(covering(&grants, "globex").is_none());

        // Without a MAC: grants nothing either.
        let unsigned = BreakGlassRecord {
            mac: None,
            ..stored[0].clone()
        };
        assert!(!vault.grant_is_authentic(&unsigned).unwrap());

        // While sealed nothing is believed, and nothing new can be stored pending.
        vault.seal().unwrap();
        assert!(vault.grant_is_authentic(&stored[0]).is_err());
        assert!(vault.store_grant(&active(&["acme"]), None, &[]).is_err());
    }

    #[test]
    fn a_grant_changed_by_another_node_is_not_overwritten_and_a_reload_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("vault.redb")).unwrap());
        let vault = Arc::new(Vault::open(store, VaultOptions::default()).unwrap());
        let shares = vault.init(2, 3).unwrap();
        unseal_with(&vault, &shares[..2]).unwrap();
        let grant = active(&["acme"]);
        assert!(vault.store_grant(&grant, None, &[]).unwrap());
        // A new grant never replaces a stored one.
        assert!(!vault.store_grant(&grant, None, &[]).unwrap());
        let node_a = BreakGlass::load(
            Arc::clone(&vault),
            BreakGlassConfig::default(),
            vault_crypto::clock::system(),
        )
        .unwrap();
        let covering = |g: &BreakGlass| {
            g.covering(
                "spiffe://x/support",
                Permission::SecretsReadMetadata,
                Some("acme"),
            )
        };
        assert!(covering(&node_a).is_some());
        // Another node ends it.
        let ended = BreakGlassGrant {
            state: BreakGlassState::Ended {
                at: 2,
                why: "revoked".into(),
                by: "b".into(),
            },
            ..grant.clone()
        };
        assert!(vault.store_grant(&ended, Some(&grant), &[]).unwrap());
        // A change made from the copy before that is refused, not written over it.
        let widened = BreakGlassGrant {
            tenants: vec!["*".into()],
            ..grant.clone()
        };
        assert!(!vault.store_grant(&widened, Some(&grant), &[]).unwrap());
        // The copy grants until the node reads the grants again, which the change log
        // tells it to do.
        assert!(covering(&node_a).is_some());
        node_a.reload().unwrap();
        assert!(covering(&node_a).is_none());
    }
}
