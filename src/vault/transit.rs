//! Transit: the platform encrypts its own data under a tenant's key and stores the
//! envelope itself. Envelopes are bound to the tenant and environment; nothing is
//! stored here.

use vault_crypto::SecretValue;
use vault_crypto::envelope::{Aad, Envelope, Purpose};

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
        self.with_keyring(|keyring| self.open_transit(keyring, tenant, environment, envelope))
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
            let plaintext = self.open_transit(keyring, tenant, environment, envelope)?;
            if Envelope::from_bytes(envelope.to_vec())
                .is_ok_and(|e| e.key_version() == current.version())
            {
                return Envelope::from_bytes(envelope.to_vec()).map_err(|_| Error::TransitEnvelope);
            }
            let key = keyring.encryption_key(store, tenant, false)?;
            Ok(key.seal(&transit_aad(tenant, environment), plaintext.expose_secret())?)
        })
    }

    fn open_transit(
        &self,
        keyring: &Keyring,
        tenant: &TenantId,
        environment: Environment,
        envelope: &[u8],
    ) -> Result<SecretValue> {
        let envelope =
            Envelope::from_bytes(envelope.to_vec()).map_err(|_| Error::TransitEnvelope)?;
        let key = match keyring.tenant_key(self.store.as_ref(), tenant, envelope.key_version()) {
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
