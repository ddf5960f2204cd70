//! Ceremonies: rekey, verify-rekey and root-key rotation with each custodian
//! submitting their own share, one at a time, from wherever they are, instead of one
//! person holding a quorum.
//!
//! One identity starts a ceremony (naming, for a rekey, the custodians' age keys);
//! it then collects shares like an unseal attempt does: under a nonce, until a
//! deadline, at most one ceremony at a time, the shares in the locked arena and
//! wiped when it completes, is cancelled, fails or expires. The share that reaches
//! the threshold runs the operation. A rekey's new shares are encrypted to their
//! custodians' keys inside vaultd and kept beside the pending set, so nobody — not
//! the starter, not the last submitter — ever holds them in the clear, and a lost
//! answer can be fetched again until the set is verified.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use vault_crypto::constant_time_eq;
use vault_crypto::shamir::Share;

use super::unseal::UnsealNonce;
use super::{State, Vault};
use crate::error::{Error, Result};
use crate::records::{self, CustodianShare, PENDING_SHARES_KEY, PendingShares};

/// The most custodians a rekey names (the most shares a set has).
pub const MAX_CUSTODIANS: usize = 255;

/// A custodian a rekey's share goes to: a name (for their file, `share-<name>.age`)
/// and their age X25519 public key. Nothing here is secret.
#[derive(Clone)]
pub struct Custodian {
    name: String,
    recipient: age::x25519::Recipient,
}

impl Custodian {
    /// Checks a name (1-32 characters a-z, 0-9, `-`, `_`) and an `age1…` key.
    pub fn parse(name: &str, recipient: &str) -> std::result::Result<Self, String> {
        if !(1..=32).contains(&name.len())
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err("custodian names are 1-32 characters a-z, 0-9, '-' and '_'".into());
        }
        let recipient = age::x25519::Recipient::from_str(recipient)
            .map_err(|_| format!("custodian {name}: the key is not an age X25519 recipient"))?;
        Ok(Self {
            name: name.to_owned(),
            recipient,
        })
    }

    /// The custodian's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The custodian's public key, `age1…`.
    pub fn recipient(&self) -> String {
        self.recipient.to_string()
    }

    /// `share` as an age file only this custodian's identity opens.
    fn seal(&self, share: &Share) -> Result<CustodianShare> {
        let text = share.encode();
        let sealed = age::encrypt(&self.recipient, text.as_bytes())
            .map_err(|_| Error::Custodians("a share could not be encrypted".into()))?;
        Ok(CustodianShare {
            name: self.name.clone(),
            recipient: self.recipient(),
            sealed,
        })
    }
}

impl fmt::Debug for Custodian {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Custodian({} {})", self.name, self.recipient)
    }
}

/// What a ceremony does once it has its shares.
#[derive(Debug, Clone)]
pub enum CeremonyKind {
    /// A new share set of `threshold` of `custodians.len()`, one share per custodian,
    /// pending until verified.
    Rekey {
        /// Shares the new set needs.
        threshold: u8,
        /// Who the new shares go to, in share order.
        custodians: Vec<Custodian>,
    },
    /// Puts the pending share set in force; collects shares of that set.
    VerifyRekey,
    /// Rotates the root key.
    RotateRootKey,
    /// Wraps the unseal key with the configured PKCS#11 token: the vault unseals
    /// itself at start from then on.
    EnableAutoUnseal,
    /// Deletes the token's copy of the unseal key: only custodians unseal.
    DisableAutoUnseal,
}

impl CeremonyKind {
    /// The kind's name in audit records and messages.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Rekey { .. } => "rekey",
            Self::VerifyRekey => "verify-rekey",
            Self::RotateRootKey => "rotate-root-key",
            Self::EnableAutoUnseal => "enable-auto-unseal",
            Self::DisableAutoUnseal => "disable-auto-unseal",
        }
    }
}

/// A ceremony in progress. The shares are in the locked arena.
pub(crate) struct Ceremony {
    kind: CeremonyKind,
    nonce: UnsealNonce,
    started_by: String,
    started: Instant,
    expires_unix: u64,
    /// The share-set generation collected, and how many shares it needs.
    generation: u32,
    needed: u8,
    shares: Vec<Share>,
}

/// What anyone may see of a ceremony in progress: nothing secret.
#[derive(Debug, Clone)]
pub struct CeremonyView {
    /// What it does.
    pub kind: CeremonyKind,
    /// Submissions must present it.
    pub nonce: UnsealNonce,
    /// The identity that started it.
    pub started_by: String,
    /// When it is discarded if not complete (Unix seconds).
    pub expires_unix: u64,
    /// The share-set generation whose shares it collects.
    pub generation: u32,
    /// Shares submitted so far.
    pub submitted: u8,
    /// Shares needed.
    pub needed: u8,
}

impl Ceremony {
    fn view(&self) -> CeremonyView {
        CeremonyView {
            kind: self.kind.clone(),
            nonce: self.nonce,
            started_by: self.started_by.clone(),
            expires_unix: self.expires_unix,
            generation: self.generation,
            submitted: u8::try_from(self.shares.len()).unwrap_or(u8::MAX),
            needed: self.needed,
        }
    }
}

/// A rekey's new share set, each share encrypted to its custodian. Not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedShareSet {
    /// The set's generation.
    pub generation: u32,
    /// Shares it needs.
    pub threshold: u8,
    /// One age file per custodian.
    pub shares: Vec<CustodianShare>,
}

/// The result of submitting one share to a ceremony.
#[derive(Debug, Clone)]
pub enum CeremonyOutcome {
    /// More shares are needed.
    InProgress(CeremonyView),
    /// A rekey completed: the pending set, encrypted to its custodians.
    Rekeyed(SealedShareSet),
    /// A verify-rekey completed: the generation, threshold and size now in force.
    Verified(u32, u8, u8),
    /// A root-key rotation completed: the new version.
    Rotated(u32),
    /// Auto-unseal was enabled or disabled.
    AutoUnseal(bool),
}

impl Vault {
    /// Starts a ceremony, by `started_by`. Refused while another one is in progress.
    pub fn start_ceremony(&self, kind: CeremonyKind, started_by: &str) -> Result<CeremonyView> {
        let mut ceremony = self.ceremony_slot();
        self.expire_ceremony(&mut ceremony);
        if let Some(running) = ceremony.as_ref() {
            return Err(Error::CeremonyInProgress(running.kind.label()));
        }
        let record = self.seal_record()?;
        let (generation, needed) = match &kind {
            CeremonyKind::Rekey {
                threshold,
                custodians,
            } => {
                check_custodians(custodians)?;
                if *threshold == 0 || usize::from(*threshold) > custodians.len() {
                    return Err(Error::Custodians(format!(
                        "the threshold must be 1 to {} (the number of custodians)",
                        custodians.len()
                    )));
                }
                (record.generation, record.threshold)
            }
            CeremonyKind::VerifyRekey => {
                let pending = self.pending_rekey()?.ok_or(Error::NoPendingRekey)?;
                (pending.generation, pending.threshold)
            }
            CeremonyKind::RotateRootKey => {
                if !matches!(*self.read_state(), State::Unsealed(_)) {
                    return Err(Error::Sealed);
                }
                (record.generation, record.threshold)
            }
            CeremonyKind::EnableAutoUnseal => {
                if self.options.token.is_none() {
                    return Err(Error::NoTokenConfigured);
                }
                (record.generation, record.threshold)
            }
            CeremonyKind::DisableAutoUnseal => (record.generation, record.threshold),
        };
        let timeout = self.options.unseal_timeout;
        let started = ceremony.insert(Ceremony {
            kind,
            nonce: UnsealNonce::generate()?,
            started_by: started_by.to_owned(),
            started: self.instant(),
            expires_unix: self.now_unix().saturating_add(timeout.as_secs()),
            generation,
            needed,
            shares: Vec::new(),
        });
        Ok(started.view())
    }

    /// Submits one custodian's share to the ceremony named by `nonce`. The share that
    /// reaches the threshold runs the ceremony's operation; whatever its result, the
    /// ceremony is then over and its shares wiped.
    pub fn submit_ceremony_share(
        &self,
        share: Share,
        nonce: &UnsealNonce,
    ) -> Result<CeremonyOutcome> {
        let (kind, shares) = {
            let mut slot = self.ceremony_slot();
            self.expire_ceremony(&mut slot);
            let ceremony = slot.as_mut().ok_or(Error::NoCeremony)?;
            if !constant_time_eq(ceremony.nonce.as_bytes(), nonce.as_bytes()) {
                return Err(Error::CeremonyNonceMismatch);
            }
            if share.generation() != ceremony.generation {
                return Err(Error::StaleShare {
                    share: share.generation(),
                    current: ceremony.generation,
                });
            }
            if ceremony.shares.iter().any(|s| s.index() == share.index()) {
                return Err(Error::DuplicateShare(share.index()));
            }
            ceremony.shares.push(share);
            if ceremony.shares.len() < usize::from(ceremony.needed) {
                return Ok(CeremonyOutcome::InProgress(ceremony.view()));
            }
            let done = slot
                .take()
                .expect("the ceremony was just found in the slot");
            (done.kind, done.shares)
        };
        // The slot is free again before the operation runs: a root-key rotation takes
        // a while, and status queries must not wait for it.
        match kind {
            CeremonyKind::Rekey {
                threshold,
                custodians,
            } => self
                .rekey_to_custodians(shares, threshold, &custodians)
                .map(CeremonyOutcome::Rekeyed),
            CeremonyKind::VerifyRekey => {
                let (generation, threshold, count) = self.verify_rekey(shares)?;
                Ok(CeremonyOutcome::Verified(generation, threshold, count))
            }
            CeremonyKind::RotateRootKey => {
                self.rotate_root_key(shares).map(CeremonyOutcome::Rotated)
            }
            CeremonyKind::EnableAutoUnseal => self
                .enable_auto_unseal(shares)
                .map(|()| CeremonyOutcome::AutoUnseal(true)),
            CeremonyKind::DisableAutoUnseal => self
                .disable_auto_unseal(shares)
                .map(|()| CeremonyOutcome::AutoUnseal(false)),
        }
    }

    /// Discards the ceremony in progress, wiping its shares; what it was, if any.
    pub fn cancel_ceremony(&self) -> Option<CeremonyView> {
        self.ceremony_slot().take().map(|c| c.view())
    }

    /// The ceremony in progress, if any.
    pub fn ceremony(&self) -> Option<CeremonyView> {
        let mut slot = self.ceremony_slot();
        self.expire_ceremony(&mut slot);
        slot.as_ref().map(Ceremony::view)
    }

    /// The pending share set's custodian files, if the pending rekey was made by a
    /// ceremony: a lost answer is fetched again from here until the set is verified.
    pub fn pending_custodian_shares(&self) -> Result<Option<SealedShareSet>> {
        let Some(pending) = self.pending_rekey()? else {
            return Ok(None);
        };
        let Some(value) = self.store.get(PENDING_SHARES_KEY)? else {
            return Ok(None);
        };
        let files: PendingShares = records::decode(PENDING_SHARES_KEY, &value)?;
        Ok(
            (files.generation == pending.generation).then_some(SealedShareSet {
                generation: pending.generation,
                threshold: pending.threshold,
                shares: files.shares,
            }),
        )
    }

    /// A rekey whose new shares are encrypted to `custodians` (share *n* to custodian
    /// *n*) and stored beside the pending set, in the same transaction.
    fn rekey_to_custodians(
        &self,
        current: Vec<Share>,
        threshold: u8,
        custodians: &[Custodian],
    ) -> Result<SealedShareSet> {
        let (split, files) =
            self.rekey_with(current, threshold.into(), custodians.len(), |split| {
                let shares = split
                    .iter()
                    .zip(custodians)
                    .map(|(share, custodian)| custodian.seal(share))
                    .collect::<Result<_>>()?;
                Ok(Some(PendingShares {
                    generation: split.first().map_or(0, Share::generation),
                    shares,
                }))
            })?;
        let files = files.expect("the closure above always makes files");
        Ok(SealedShareSet {
            generation: files.generation,
            threshold: split.first().map_or(0, Share::threshold),
            shares: files.shares,
        })
    }

    fn ceremony_slot(&self) -> std::sync::MutexGuard<'_, Option<Ceremony>> {
        // Ceremony changes are single assignments, so a poisoned slot is consistent.
        self.ceremony.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expire_ceremony(&self, slot: &mut Option<Ceremony>) {
        let timeout: Duration = self.options.unseal_timeout;
        if slot
            .as_ref()
            .is_some_and(|c| self.instant().saturating_duration_since(c.started) > timeout)
        {
            *slot = None;
        }
    }
}

/// At least one custodian, at most [`MAX_CUSTODIANS`], no name or key twice.
fn check_custodians(custodians: &[Custodian]) -> Result<()> {
    if custodians.is_empty() || custodians.len() > MAX_CUSTODIANS {
        return Err(Error::Custodians(format!(
            "a rekey ceremony names 1 to {MAX_CUSTODIANS} custodians, one per new share"
        )));
    }
    for (i, c) in custodians.iter().enumerate() {
        if let Some(twin) = custodians
            .iter()
            .skip(i + 1)
            .find(|o| o.name == c.name || o.recipient.to_string() == c.recipient.to_string())
        {
            return Err(Error::Custodians(format!(
                "custodians {} and {} share a name or a key: each share must go to a \
                 different custodian",
                c.name, twin.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vault_crypto::clock::ManualClock;

    use super::*;
    use crate::vault::VaultOptions;
    use crate::vault::tests::{copy, fresh, unseal_with};

    fn custodians(n: usize) -> (Vec<age::x25519::Identity>, Vec<Custodian>) {
        let ids: Vec<_> = (0..n).map(|_| age::x25519::Identity::generate()).collect();
        let named = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Custodian::parse(&format!("c{i}"), &id.to_public().to_string()).unwrap())
            .collect();
        (ids, named)
    }

    fn submit_all(vault: &Vault, shares: &[Share], nonce: &UnsealNonce) -> CeremonyOutcome {
        let mut last = None;
        for share in shares {
            last = Some(vault.submit_ceremony_share(copy(share), nonce).unwrap());
        }
        last.unwrap()
    }

    #[test]
    fn a_rekey_ceremony_collects_shares_one_by_one_and_seals_each_new_share_to_its_custodian() {
        let (f, shares) = fresh(VaultOptions::default());
        unseal_with(&f.vault, &shares[..3]).unwrap();
        let (ids, named) = custodians(4);
        let kind = CeremonyKind::Rekey {
            threshold: 2,
            custodians: named,
        };
        let started = f.vault.start_ceremony(kind.clone(), "alice").unwrap();
        assert_eq!((started.needed, started.submitted), (3, 0));
        // One ceremony at a time.
        assert!(matches!(
            f.vault.start_ceremony(CeremonyKind::RotateRootKey, "bob"),
            Err(Error::CeremonyInProgress("rekey"))
        ));
        let wrong = UnsealNonce::generate().unwrap();
        assert!(matches!(
            f.vault.submit_ceremony_share(copy(&shares[0]), &wrong),
            Err(Error::CeremonyNonceMismatch)
        ));
        f.vault
            .submit_ceremony_share(copy(&shares[0]), &started.nonce)
            .unwrap();
        assert!(matches!(
            f.vault
                .submit_ceremony_share(copy(&shares[0]), &started.nonce),
            Err(Error::DuplicateShare(_))
        ));
        let CeremonyOutcome::Rekeyed(set) = submit_all(&f.vault, &shares[1..3], &started.nonce)
        else {
            panic!("the third share completes the rekey")
        };
        assert!(f.vault.ceremony().is_none());
        assert_eq!((set.generation, set.threshold, set.shares.len()), (2, 2, 4));
        // Each file opens with its custodian's identity only.
        let new: Vec<Share> = set
            .shares
            .iter()
            .zip(&ids)
            .map(|(file, id)| {
                let other = age::x25519::Identity::generate();
                assert!(age::decrypt(&other, &file.sealed).is_err());
                let text = age::decrypt(id, &file.sealed).unwrap();
                Share::parse(std::str::from_utf8(&text).unwrap()).unwrap()
            })
            .collect();
        // A lost answer is fetched again until the set is verified.
        assert_eq!(f.vault.pending_custodian_shares().unwrap(), Some(set));
        // The old set still unseals until a verify-rekey ceremony collects the new.
        f.vault.seal().unwrap();
        unseal_with(&f.vault, &shares[2..5]).unwrap();
        let verify = f
            .vault
            .start_ceremony(CeremonyKind::VerifyRekey, "alice")
            .unwrap();
        assert_eq!((verify.generation, verify.needed), (2, 2));
        assert!(matches!(
            f.vault
                .submit_ceremony_share(copy(&shares[0]), &verify.nonce),
            Err(Error::StaleShare { .. })
        ));
        let outcome = submit_all(&f.vault, &new[2..], &verify.nonce);
        assert!(
            matches!(outcome, CeremonyOutcome::Verified(2, 2, 4)),
            "{outcome:?}"
        );
        assert_eq!(f.vault.pending_custodian_shares().unwrap(), None);
        f.vault.seal().unwrap();
        assert!(unseal_with(&f.vault, &shares[..3]).is_err());
        unseal_with(&f.vault, &new[..2]).unwrap();
        // And a rotation, collected the same way.
        let rotate = f
            .vault
            .start_ceremony(CeremonyKind::RotateRootKey, "alice")
            .unwrap();
        let outcome = submit_all(&f.vault, &new[1..3], &rotate.nonce);
        assert!(
            matches!(outcome, CeremonyOutcome::Rotated(2)),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_ceremony_expires_is_cancelled_and_refuses_bad_custodians() {
        let clock = ManualClock::new();
        let options = VaultOptions {
            clock: clock.clone(),
            ..VaultOptions::default()
        };
        let (f, shares) = fresh(options);
        // Rotation needs an unsealed vault; rekey does not.
        assert!(matches!(
            f.vault.start_ceremony(CeremonyKind::RotateRootKey, "alice"),
            Err(Error::Sealed)
        ));
        assert!(matches!(
            f.vault.start_ceremony(CeremonyKind::VerifyRekey, "alice"),
            Err(Error::NoPendingRekey)
        ));
        let (_, mut named) = custodians(2);
        let twice = CeremonyKind::Rekey {
            threshold: 1,
            custodians: vec![named[0].clone(), named[0].clone()],
        };
        assert!(matches!(
            f.vault.start_ceremony(twice, "alice"),
            Err(Error::Custodians(_))
        ));
        let too_many = CeremonyKind::Rekey {
            threshold: 3,
            custodians: named.clone(),
        };
        assert!(matches!(
            f.vault.start_ceremony(too_many, "alice"),
            Err(Error::Custodians(_))
        ));
        assert!(Custodian::parse("Bad Name", "age1x").is_err());
        assert!(Custodian::parse("ok", "not-a-key").is_err());
        let kind = CeremonyKind::Rekey {
            threshold: 1,
            custodians: named.split_off(1),
        };
        let started = f.vault.start_ceremony(kind.clone(), "alice").unwrap();
        f.vault
            .submit_ceremony_share(copy(&shares[0]), &started.nonce)
            .unwrap();
        clock.advance(Duration::from_secs(601));
        assert!(f.vault.ceremony().is_none());
        assert!(matches!(
            f.vault
                .submit_ceremony_share(copy(&shares[1]), &started.nonce),
            Err(Error::NoCeremony)
        ));
        let again = f.vault.start_ceremony(kind, "alice").unwrap();
        assert_ne!(again.nonce, started.nonce);
        assert_eq!(f.vault.cancel_ceremony().map(|c| c.submitted), Some(0));
        assert!(f.vault.cancel_ceremony().is_none());
        // Nothing was rekeyed.
        assert_eq!(f.vault.pending_custodian_shares().unwrap(), None);
    }
}
