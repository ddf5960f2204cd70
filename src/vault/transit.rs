//! Transit: the platform encrypts its own data under a tenant's key and stores the
//! envelope itself. Envelopes are bound to the tenant and environment; nothing is
//! stored here.

use std::sync::Arc;

use vault_crypto::envelope::{Aad, Envelope, Purpose};
use vault_crypto::{SecretValue, TenantKey};

use super::Vault;
use super::keyring::Keyring;
use crate::error::{Error, Result};
use crate::names::{Environment, TenantId};

fn transit_aad(tenant: &TenantId, environment: Environment) -> Aad<'_> {
    Aad {
        tenant: tenant.as_str(),
        environment: environment.as_str(),
        ..Aad::purpose(Purpose::Transit)
    }
}

impl Vault {
    /// Encrypts `plaintext` under the tenant's current key. A tenant with no key yet
    /// gets one only if `create` (the caller's grant says so); otherwise
    /// [`Error::NoTenantKey`].
    pub fn transit_encrypt(
        &self,
        tenant: &TenantId,
        environment: Environment,
        plaintext: &[u8],
        create: bool,
    ) -> Result<Envelope> {
        self.with_keyring(|keyring| {
            let key = match keyring.encryption_key(self.store.as_ref(), tenant, create) {
                Err(Error::NotFound) => return Err(Error::NoTenantKey),
                other => other?,
            };
            Ok(key.seal(&transit_aad(tenant, environment), plaintext)?)
        })
    }

    /// Decrypts an envelope made by [`Vault::transit_encrypt`] for the same tenant and
    /// environment. Any mismatch, including a tenant with no key or a retired key
    /// version, is [`Error::TransitEnvelope`]: the caller learns nothing more.
    pub fn transit_decrypt(
        &self,
        tenant: &TenantId,
        environment: Environment,
        envelope: &[u8],
    ) -> Result<SecretValue> {
        self.with_keyring(|keyring| {
            self.open_transit(keyring, &mut Vec::new(), tenant, environment, envelope)
        })
    }

    /// [`Vault::transit_decrypt`] of each of `envelopes`, all for one tenant and
    /// environment, handing `each` every outcome in order. The vault's state and each
    /// key version are looked up once for the whole batch rather than once per item
    /// (the erasure check still runs for every item).
    pub fn transit_decrypt_each<'a>(
        &self,
        tenant: &TenantId,
        environment: Environment,
        envelopes: impl IntoIterator<Item = &'a [u8]>,
        mut each: impl FnMut(Result<SecretValue>),
    ) -> Result<()> {
        self.with_keyring(|keyring| {
            let mut keys = Vec::new();
            for envelope in envelopes {
                each(self.open_transit(keyring, &mut keys, tenant, environment, envelope));
            }
            Ok(())
        })
    }

    /// Reseals a transit envelope under the tenant's current key, without the
    /// plaintext leaving vaultd, so the platform can move what it stores off older key
    /// versions before they are retired. An envelope already under the current key
    /// comes back unchanged.
    pub fn transit_rewrap(
        &self,
        tenant: &TenantId,
        environment: Environment,
        envelope: &[u8],
    ) -> Result<Envelope> {
        self.with_keyring(|keyring| {
            let store = self.store.as_ref();
            let current = match keyring.current_tenant_key(store, tenant, false) {
                Err(Error::NotFound) => return Err(Error::TransitEnvelope),
                other => other?,
            };
            let plaintext =
                self.open_transit(keyring, &mut Vec::new(), tenant, environment, envelope)?;
            if Envelope::from_bytes(envelope.to_vec())
                .is_ok_and(|e| e.key_version() == current.version())
            {
                return Envelope::from_bytes(envelope.to_vec()).map_err(|_| Error::TransitEnvelope);
            }
            let key = keyring.encryption_key(store, tenant, false)?;
            Ok(key.seal(&transit_aad(tenant, environment), plaintext.expose_secret())?)
        })
    }

    /// Opens a transit envelope of `tenant`; `keys` holds the tenant's keys already
    /// looked up by the batch this envelope belongs to.
    fn open_transit(
        &self,
        keyring: &Keyring,
        keys: &mut Vec<(u32, Arc<TenantKey>)>,
        tenant: &TenantId,
        environment: Environment,
        envelope: &[u8],
    ) -> Result<SecretValue> {
        let envelope =
            Envelope::from_bytes(envelope.to_vec()).map_err(|_| Error::TransitEnvelope)?;
        let version = envelope.key_version();
        let looked_up = match keys.iter().find(|(v, _)| *v == version) {
            Some((_, key)) => keyring.check_not_erasing(tenant).map(|()| Arc::clone(key)),
            None => keyring
                .tenant_key(self.store.as_ref(), tenant, version)
                .inspect(|key| keys.push((version, Arc::clone(key)))),
        };
        let key = match looked_up {
            Ok(key) => key,
            // The caller's envelope names a tenant or key version that does not
            // exist; anything else (locked memory, a tampered wrapped key) is ours.
            Err(Error::NotFound | Error::UnknownKeyVersion(_)) => {
                return Err(Error::TransitEnvelope);
            }
            Err(e) => return Err(e),
        };
        key.open(&envelope, &transit_aad(tenant, environment))
            .map_err(|_| Error::TransitEnvelope)
    }
}

#[cfg(test)]
mod tests {
    use super::super::VaultOptions;
    use super::super::tests::{fresh, unseal_with};
    use super::*;

    #[test]
    fn a_batch_opens_each_item_under_its_own_key_version_in_order() {
        let (fixture, shares) = fresh(VaultOptions::default());
        let vault = &fixture.vault;
        unseal_with(vault, &shares[..3]).unwrap();
        let (acme, other) = (
            TenantId::new("acme").unwrap(),
            TenantId::new("other").unwrap(),
        );
        let seal = |tenant, text: &[u8]| {
            vault
                .transit_encrypt(tenant, Environment::Live, text, true)
                .unwrap()
                .into_bytes()
        };
        let v1 = seal(&acme, b"one");
        vault.rotate_tenant_key(&acme).unwrap();
        let v2 = seal(&acme, b"two");
        let foreign = seal(&other, b"not acme's");
        let batch: [&[u8]; 5] = [&v1, &v2, &foreign, b"garbage", &v1];
        let mut outcomes = Vec::new();
        vault
            .transit_decrypt_each(&acme, Environment::Live, batch, |outcome| {
                outcomes.push(outcome.map(|v| v.expose_secret().to_vec()));
            })
            .unwrap();
        assert_eq!(outcomes.len(), 5);
        assert_eq!(outcomes[0].as_ref().unwrap(), b"one");
        assert_eq!(outcomes[1].as_ref().unwrap(), b"two");
        assert!(matches!(outcomes[2], Err(Error::TransitEnvelope)));
        assert!(matches!(outcomes[3], Err(Error::TransitEnvelope)));
        assert_eq!(outcomes[4].as_ref().unwrap(), b"one");
        // Sealed: the batch as a whole is refused.
        vault.seal().unwrap();
        let refused = vault.transit_decrypt_each(&acme, Environment::Live, [&v1[..]], |_| {
            panic!("no item is opened while sealed")
        });
        assert!(refused.is_err());
    }

    #[test]
    fn transit_round_trip_is_bound_to_tenant_and_environment() {
        let (fixture, shares) = fresh(VaultOptions::default());
        let vault = &fixture.vault;
        unseal_with(vault, &shares[..3]).unwrap();
        let acme = TenantId::new("acme").unwrap();
        let other = TenantId::new("other").unwrap();
        let envelope = vault
            .transit_encrypt(&acme, Environment::Live, b"card 4242", true)
            .unwrap();
        let back = vault
            .transit_decrypt(&acme, Environment::Live, envelope.as_bytes())
            .unwrap();
        assert_eq!(back.expose_secret(), b"card 4242");
        vault
            .transit_encrypt(&other, Environment::Live, b"x", true)
            .unwrap();
        for (tenant, env) in [(&acme, Environment::Test), (&other, Environment::Live)] {
            assert!(matches!(
                vault.transit_decrypt(tenant, env, envelope.as_bytes()),
                Err(Error::TransitEnvelope)
            ));
        }
        let unknown = TenantId::new("nobody").unwrap();
        assert!(matches!(
            vault.transit_decrypt(&unknown, Environment::Live, envelope.as_bytes()),
            Err(Error::TransitEnvelope)
        ));
        assert!(matches!(
            vault.transit_decrypt(&acme, Environment::Live, b"garbage"),
            Err(Error::TransitEnvelope)
        ));
    }
}
