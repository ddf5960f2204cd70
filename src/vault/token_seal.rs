//! Auto-unseal through a PKCS#11 token: the unseal key wrapped by a key that never
//! leaves the token, stored as the `seal-token` record. A quorum of shares enables
//! and disables it (ceremonies); the shares keep working whatever the token does.

use std::sync::Arc;

use vault_crypto::UnsealKey;
use vault_crypto::arena::scrub_stack;
use vault_crypto::shamir::Share;

use super::unseal::open_quorum;
use super::{State, Vault};
use crate::error::{Error, Result};
use crate::hsm::{Pkcs11Config, Wrapped};
use crate::records::{self, SEAL_KEY, TOKEN_SEAL_KEY, TokenSealRecord};
use crate::storage::Transaction;

/// What an auto-unseal attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoUnseal {
    /// No token is configured.
    NotConfigured,
    /// A token is configured, but custodians have not enabled auto-unseal.
    NotEnabled,
    /// The vault was not sealed (uninitialised or already unsealed).
    NotSealed,
    /// The token unwrapped the unseal key and the vault is unsealed.
    Unsealed,
}

impl Vault {
    /// Unseals with the configured token, if custodians enabled it. Errors leave the
    /// vault sealed, for custodians' shares.
    pub fn auto_unseal(&self) -> Result<AutoUnseal> {
        let Some(token) = self.options.token.clone() else {
            return Ok(AutoUnseal::NotConfigured);
        };
        let state = self.write_state();
        if !matches!(*state, State::Sealed(_)) {
            return Ok(AutoUnseal::NotSealed);
        }
        let Some(stored) = self.token_seal_record()? else {
            return Ok(AutoUnseal::NotEnabled);
        };
        let record = self.seal_record()?;
        if stored.generation != record.generation {
            return Err(Error::StaleTokenSeal {
                stored: stored.generation,
                current: record.generation,
            });
        }
        let wrapped = Wrapped {
            iv: stored.iv,
            ciphertext: stored.wrapped,
        };
        let bytes = token
            .unwrap(&wrapped, &aad(record.generation))
            .map_err(Error::Token)?;
        let unseal_key = UnsealKey::from_token(&bytes, record.generation);
        drop(bytes);
        let roots = super::unseal::open_roots(&unseal_key?, &record);
        scrub_stack();
        self.finish_unseal(state, &record, roots?)?;
        Ok(AutoUnseal::Unsealed)
    }

    /// Wraps the unseal key (reconstructed from a quorum of `shares`) with the token,
    /// so the vault unseals itself from now on.
    pub(super) fn enable_auto_unseal(&self, shares: Vec<Share>) -> Result<()> {
        let token = self.token()?;
        // No lock held while the token works: the transaction's condition on the seal
        // record refuses the write if a rekey or rotation changed it meanwhile.
        let record = self.seal_record()?;
        let (unseal_key, roots) = open_quorum(&shares, &record)?;
        drop((roots, shares));
        let stored = self.wrap_with_token(&token, &unseal_key)?;
        drop(unseal_key);
        scrub_stack();
        let txn = Transaction::new()
            .require_eq(SEAL_KEY, records::encode(&record))
            .put(TOKEN_SEAL_KEY, records::encode(&stored));
        self.store.transact(txn)?;
        Ok(())
    }

    /// Deletes the token's copy of the unseal key, given a quorum of `shares`: from
    /// then on only custodians unseal.
    pub(super) fn disable_auto_unseal(&self, shares: Vec<Share>) -> Result<()> {
        let record = self.seal_record()?;
        let (unseal_key, roots) = open_quorum(&shares, &record)?;
        drop((unseal_key, roots, shares));
        scrub_stack();
        if self.token_seal_record()?.is_none() {
            return Err(Error::AutoUnsealNotEnabled);
        }
        let txn = Transaction::new()
            .require_eq(SEAL_KEY, records::encode(&record))
            .delete(TOKEN_SEAL_KEY);
        self.store.transact(txn)?;
        Ok(())
    }

    /// Whether auto-unseal is enabled, and for which share-set generation.
    pub fn auto_unseal_generation(&self) -> Result<Option<u32>> {
        Ok(self.token_seal_record()?.map(|r| r.generation))
    }

    /// What a rekey being verified does to auto-unseal: `new_key` rewrapped by the
    /// token into `txn`, or, if the token cannot, the record deleted (it would be
    /// stale) and the reason returned for the log.
    pub(super) fn rekey_token_seal(
        &self,
        new_key: &UnsealKey,
        txn: Transaction,
    ) -> Result<(Transaction, Option<String>)> {
        if self.token_seal_record()?.is_none() {
            return Ok((txn, None));
        }
        let rewrapped = self
            .token()
            .and_then(|token| self.wrap_with_token(&token, new_key));
        Ok(match rewrapped {
            Ok(stored) => (txn.put(TOKEN_SEAL_KEY, records::encode(&stored)), None),
            Err(e) => (txn.delete(TOKEN_SEAL_KEY), Some(e.to_string())),
        })
    }

    fn wrap_with_token(&self, token: &Pkcs11Config, key: &UnsealKey) -> Result<TokenSealRecord> {
        let wrapped = token
            .wrap(key.bytes_for_token(), &aad(key.generation()))
            .map_err(Error::Token)?;
        Ok(TokenSealRecord {
            generation: key.generation(),
            token: token.token.clone(),
            key_label: token.key_label.clone(),
            iv: wrapped.iv,
            wrapped: wrapped.ciphertext,
            created_unix: self.now_unix(),
        })
    }

    fn token(&self) -> Result<Arc<Pkcs11Config>> {
        self.options.token.clone().ok_or(Error::NoTokenConfigured)
    }

    fn token_seal_record(&self) -> Result<Option<TokenSealRecord>> {
        match self.store.get(TOKEN_SEAL_KEY)? {
            Some(value) => Ok(Some(records::decode(TOKEN_SEAL_KEY, &value)?)),
            None => Ok(None),
        }
    }
}

/// Binds a wrapped unseal key to its purpose and share-set generation.
fn aad(generation: u32) -> Vec<u8> {
    format!("vaultd/v1/token-seal/unseal-key/generation/{generation}").into_bytes()
}
