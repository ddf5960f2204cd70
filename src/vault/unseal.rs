//! Init, unseal, rekey and root-key rotation: everything that needs the unseal key.

use std::fmt;
use std::time::{Duration, Instant};

use vault_crypto::arena::scrub_stack;
use vault_crypto::shamir::{self, Share};
use vault_crypto::{RootKey, SystemKey, UnsealKey, constant_time_eq};

use super::keyring::{Keyring, SYSTEM_KEYS};
use super::{SealState, State, Vault};
use crate::cluster::Notice;
use crate::error::{Error, Result};
use crate::records::{
    self, PENDING_REKEY_KEY, PENDING_SHARES_KEY, PendingRekey, PendingShares, RootRotation,
    SEAL_KEY, SealRecord, SystemKeyRecord, WrappedRoot, system_key,
};
use crate::storage::{StoreError, Transaction};

/// Identifies one unseal attempt, so shares meant for an attempt that was reset or
/// expired are not silently counted towards a new one. Not secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UnsealNonce([u8; 16]);

impl UnsealNonce {
    pub(super) fn generate() -> Result<Self> {
        let mut bytes = [0u8; 16];
        vault_crypto::aead::random_bytes(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses the 32-hex-digit form.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = vault_crypto::hex::decode(text)?;
        Some(Self(bytes.as_slice().try_into().ok()?))
    }
}

impl fmt::Display for UnsealNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&vault_crypto::hex::encode(&self.0))
    }
}

impl fmt::Debug for UnsealNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnsealNonce({self})")
    }
}

/// Shares submitted so far in one unseal attempt. The shares live in the locked
/// arena and are wiped when the attempt completes, is reset, fails or expires.
pub(crate) struct UnsealProgress {
    nonce: UnsealNonce,
    shares: Vec<Share>,
    started: Instant,
}

impl UnsealProgress {
    pub(crate) fn summary(&self) -> (u8, UnsealNonce) {
        (
            u8::try_from(self.shares.len()).unwrap_or(u8::MAX),
            self.nonce,
        )
    }
}

/// Drops `progress` if it has outlived `timeout`.
pub(crate) fn expire(progress: &mut Option<UnsealProgress>, timeout: Duration, now: Instant) {
    if progress
        .as_ref()
        .is_some_and(|p| now.saturating_duration_since(p.started) > timeout)
    {
        *progress = None;
    }
}

/// The result of submitting one unseal share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsealOutcome {
    /// More shares are needed.
    InProgress {
        /// The attempt's nonce: later shares must present it.
        nonce: UnsealNonce,
        /// Shares submitted so far.
        submitted: u8,
        /// Shares needed.
        threshold: u8,
    },
    /// The threshold was reached and the vault is unsealed.
    Unsealed,
}

impl Vault {
    /// Initialises the vault: generates the unseal key and root key, the system keys,
    /// and writes the seal record. Returns the shares, once; they are never stored.
    /// The vault is left sealed.
    pub fn init(&self, threshold: usize, shares: usize) -> Result<Vec<Share>> {
        let mut state = self.write_lifecycle()?;
        if !matches!(*state, State::Uninitialised) {
            return Err(Error::AlreadyInitialised);
        }
        let unseal_key = UnsealKey::generate(1)?;
        let split = shamir::split(&unseal_key, threshold, shares).map_err(sharing)?;
        let root = RootKey::generate(1)?;
        let record = SealRecord {
            generation: 1,
            threshold: split.first().map_or(0, Share::threshold),
            shares: u8::try_from(split.len()).unwrap_or(u8::MAX),
            roots: vec![WrappedRoot {
                version: 1,
                wrapped: unseal_key.wrap_root_key(&root)?,
            }],
            current_root: 1,
            rotation: None,
            created_unix: self.now_unix(),
        };
        let mut txn = Transaction::new()
            .require_absent(SEAL_KEY)
            .put(SEAL_KEY, records::encode(&record));
        for name in SYSTEM_KEYS {
            let wrapped = root.wrap_system_key(name, &SystemKey::generate()?)?;
            txn = txn.put(
                system_key(name),
                records::encode(&SystemKeyRecord { wrapped }),
            );
        }
        match self.store.transact(txn) {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => return Err(Error::AlreadyInitialised),
            Err(e) => return Err(e.into()),
        }
        drop((unseal_key, root));
        scrub_stack();
        *state = State::Sealed(None);
        self.changed(SealState::Sealed);
        Ok(split)
    }

    /// Submits one custodian share. `nonce` must name the attempt in progress, if
    /// any. At the threshold the vault unseals, or, if the shares do not open the
    /// seal record, the attempt is discarded and [`Error::WrongShares`] returned.
    pub fn unseal(&self, share: Share, nonce: Option<&UnsealNonce>) -> Result<UnsealOutcome> {
        let mut state = self.write_lifecycle()?;
        let progress = match &mut *state {
            State::Uninitialised => return Err(Error::Uninitialised),
            State::Unsealed(_) => return Err(Error::AlreadyUnsealed),
            State::Sealed(progress) => progress,
        };
        let record = self.seal_record()?;
        if share.generation() != record.generation {
            return Err(Error::StaleShare {
                share: share.generation(),
                current: record.generation,
            });
        }
        expire(progress, self.options.unseal_timeout, self.instant());
        match (progress.as_ref(), nonce) {
            (Some(p), Some(n)) if constant_time_eq(&p.nonce.0, &n.0) => {}
            (None, None) => {}
            _ => return Err(Error::UnsealNonceMismatch),
        }
        let attempt = match progress {
            Some(attempt) => attempt,
            None => progress.insert(UnsealProgress {
                nonce: UnsealNonce::generate()?,
                shares: Vec::new(),
                started: self.instant(),
            }),
        };
        if attempt.shares.iter().any(|s| s.index() == share.index()) {
            return Err(Error::DuplicateShare(share.index()));
        }
        attempt.shares.push(share);
        let submitted = u8::try_from(attempt.shares.len()).unwrap_or(u8::MAX);
        if submitted < record.threshold {
            return Ok(UnsealOutcome::InProgress {
                nonce: attempt.nonce,
                submitted,
                threshold: record.threshold,
            });
        }
        // Threshold reached: whatever happens next, this attempt is over.
        let shares = std::mem::take(&mut attempt.shares);
        *progress = None;
        let quorum = open_quorum(&shares, &record);
        drop(shares);
        let (unseal_key, roots) = quorum?;
        drop(unseal_key);
        scrub_stack();
        self.finish_unseal(state, &record, roots)?;
        Ok(UnsealOutcome::Unsealed)
    }

    /// Loads the keyring under `roots` (opened from `record`) and serves; an
    /// interrupted root-key rotation then resumes, in batches, with the vault serving.
    pub(super) fn finish_unseal(
        &self,
        mut state: std::sync::RwLockWriteGuard<'_, State>,
        record: &SealRecord,
        roots: Vec<RootKey>,
    ) -> Result<()> {
        let keyring = Keyring::load(
            self.store.as_ref(),
            roots,
            record,
            self.options.tenant_keys(),
        )?;
        *state = State::Unsealed(Box::new(keyring));
        self.changed(SealState::Unsealed);
        drop(state);
        if let Some(rotation) = record.rotation {
            self.finish_rotation(rotation)?;
        }
        Ok(())
    }

    /// Discards unseal progress, wiping the shares submitted so far.
    pub fn reset_unseal(&self) -> Result<()> {
        match &mut *self.write_state() {
            State::Sealed(progress) => {
                *progress = None;
                Ok(())
            }
            State::Unsealed(_) => Err(Error::AlreadyUnsealed),
            State::Uninitialised => Err(Error::Uninitialised),
        }
    }

    /// Makes a new share set (new threshold and count) given a quorum of current
    /// shares, and returns it. The set is **pending**: the current shares keep
    /// working until [`Vault::verify_rekey`] is given a quorum of the new ones, so new
    /// shares lost on their way to the custodians strand nothing. A rekey replaces an
    /// earlier pending set. The root key is unchanged.
    pub fn rekey(
        &self,
        current: Vec<Share>,
        threshold: usize,
        shares: usize,
    ) -> Result<Vec<Share>> {
        Ok(self.rekey_with(current, threshold, shares, |_| Ok(None))?.0)
    }

    /// [`Vault::rekey`], storing beside the pending set what `files` makes of the new
    /// shares (the custodians' encrypted copies), in the same transaction; without
    /// files, an earlier set's are deleted.
    pub(super) fn rekey_with(
        &self,
        current: Vec<Share>,
        threshold: usize,
        shares: usize,
        files: impl FnOnce(&[Share]) -> Result<Option<PendingShares>>,
    ) -> Result<(Vec<Share>, Option<PendingShares>)> {
        let state = self.write_state();
        if matches!(*state, State::Uninitialised) {
            return Err(Error::Uninitialised);
        }
        let record = self.seal_record()?;
        let (old_key, roots) = open_quorum(&current, &record)?;
        drop((old_key, current));
        // Past any earlier pending set too, so shares of two pending sets never mix.
        let earlier = self.pending_rekey()?.map_or(0, |p| p.generation);
        let generation = record
            .generation
            .max(earlier)
            .checked_add(1)
            .ok_or(Error::CounterExhausted("share-set generation"))?;
        let new_key = UnsealKey::generate(generation)?;
        let split = shamir::split(&new_key, threshold, shares).map_err(sharing)?;
        let pending = PendingRekey {
            base_generation: record.generation,
            generation,
            threshold: split.first().map_or(0, Share::threshold),
            shares: u8::try_from(split.len()).unwrap_or(u8::MAX),
            roots: roots
                .iter()
                .map(|root| {
                    Ok(WrappedRoot {
                        version: root.version(),
                        wrapped: new_key.wrap_root_key(root)?,
                    })
                })
                .collect::<Result<_>>()?,
            created_unix: self.now_unix(),
        };
        drop((roots, new_key));
        scrub_stack();
        let files = files(&split)?;
        let txn = Transaction::new()
            .require_eq(SEAL_KEY, records::encode(&record))
            .put(PENDING_REKEY_KEY, records::encode(&pending));
        let txn = match &files {
            Some(files) => txn.put(PENDING_SHARES_KEY, records::encode(files)),
            None => txn.delete(PENDING_SHARES_KEY),
        };
        self.store.transact(txn)?;
        drop(state);
        Ok((split, files))
    }

    /// Puts the pending share set in force, given a quorum of its shares: they are
    /// shown to open its wrapped root keys first. From then on the old shares are
    /// refused. Returns the set's generation, threshold and size.
    pub fn verify_rekey(&self, new: Vec<Share>) -> Result<(u32, u8, u8)> {
        let mut state = self.write_state();
        if matches!(*state, State::Uninitialised) {
            return Err(Error::Uninitialised);
        }
        let record = self.seal_record()?;
        let pending = self.pending_rekey()?.ok_or(Error::NoPendingRekey)?;
        let versions = |roots: &[WrappedRoot]| roots.iter().map(|r| r.version).collect::<Vec<_>>();
        if pending.base_generation != record.generation
            || versions(&pending.roots) != versions(&record.roots)
        {
            return Err(Error::StaleRekey);
        }
        let next = SealRecord {
            generation: pending.generation,
            threshold: pending.threshold,
            shares: pending.shares,
            roots: pending.roots.clone(),
            ..record.clone()
        };
        let (new_key, roots) = open_quorum(&new, &next)?;
        drop((roots, new));
        let txn = Transaction::new()
            .require_eq(SEAL_KEY, records::encode(&record))
            .require_eq(PENDING_REKEY_KEY, records::encode(&pending))
            .put(SEAL_KEY, records::encode(&next))
            .delete(PENDING_REKEY_KEY)
            .delete(PENDING_SHARES_KEY);
        // Auto-unseal follows the new set, or is switched off if the token cannot.
        let (txn, token_failure) = self.rekey_token_seal(&new_key, txn)?;
        drop(new_key);
        scrub_stack();
        self.store.transact(txn)?;
        if let Some(reason) = token_failure {
            tracing::warn!(
                "auto-unseal is disabled: the new share set's unseal key could not be wrapped \
                 by the token ({reason}); custodians re-enable it with an enable-auto-unseal \
                 ceremony"
            );
        }
        // Progress towards unsealing with the old share set is now meaningless.
        if let State::Sealed(progress) = &mut *state {
            *progress = None;
        }
        Ok((next.generation, next.threshold, next.shares))
    }

    /// The rekey waiting to be verified, if any.
    pub(super) fn pending_rekey(&self) -> Result<Option<PendingRekey>> {
        match self.store.get(PENDING_REKEY_KEY)? {
            Some(value) => Ok(Some(records::decode(PENDING_REKEY_KEY, &value)?)),
            None => Ok(None),
        }
    }

    /// Rotates the root key: creates version n+1, rewraps every tenant and system key
    /// under it and destroys version n. Needs a quorum of shares, because the new root
    /// key must be wrapped under the unseal key, which is not kept after unseal. An
    /// interrupted rotation resumes at the next unseal or rotation.
    ///
    /// Only adding the new root and dropping the old one hold the vault exclusively;
    /// the rewrap runs in batches of records, each under the shared lock, so requests
    /// are served throughout.
    pub fn rotate_root_key(&self, shares: Vec<Share>) -> Result<u32> {
        let rotation = {
            let mut state = self.write_state();
            let keyring = state.keyring_mut()?;
            let record = self.seal_record()?;
            let (unseal_key, roots) = open_quorum(&shares, &record)?;
            drop(shares);
            // If an earlier attempt wrote the seal record but failed before updating
            // memory, the keyring lacks the new root; take it from the record.
            for root in roots {
                if keyring.root(root.version()).is_err() {
                    keyring.add_root(root);
                }
            }
            match record.rotation {
                Some(rotation) => rotation,
                None => {
                    let from = record.current_root;
                    let to = from
                        .checked_add(1)
                        .ok_or(Error::CounterExhausted("root key version"))?;
                    let root = RootKey::generate(to)?;
                    let mut next = record.clone();
                    next.roots.push(WrappedRoot {
                        version: to,
                        wrapped: unseal_key.wrap_root_key(&root)?,
                    });
                    next.current_root = to;
                    next.rotation = Some(RootRotation { from, to });
                    drop(unseal_key);
                    // Other nodes sharing the store hold only the old root: they seal.
                    self.replace_seal_record(&record, &next, Some(&Notice::RootRotated))?;
                    keyring.add_root(root);
                    RootRotation { from, to }
                }
            }
        };
        scrub_stack();
        self.finish_rotation(rotation)?;
        Ok(rotation.to)
    }

    /// Rewraps everything under `rotation.to`, batch by batch, then removes
    /// `rotation.from` from the seal record and from memory.
    fn finish_rotation(&self, rotation: RootRotation) -> Result<()> {
        let mut keys: Vec<Vec<u8>> = SYSTEM_KEYS.iter().map(|name| system_key(name)).collect();
        keys.extend(
            self.store
                .scan_prefix(b"tenant/")?
                .into_iter()
                .map(|(key, _)| key),
        );
        for batch in keys.chunks(ROTATION_BATCH) {
            self.with_keyring(|keyring| {
                keyring.rewrap_under_root(self.store.as_ref(), batch, rotation.from, rotation.to)
            })?;
        }
        let mut state = self.write_state();
        let keyring = state.keyring_mut()?;
        let record = self.seal_record()?;
        if record.rotation != Some(rotation) {
            return Ok(()); // finished by another call meanwhile
        }
        let mut next = record.clone();
        next.roots.retain(|r| r.version != rotation.from);
        next.current_root = rotation.to;
        next.rotation = None;
        self.replace_seal_record(&record, &next, None)?;
        keyring.drop_root(rotation.from);
        scrub_stack();
        Ok(())
    }

    /// Replaces the seal record `old` with `new`, telling other nodes `notice` in the
    /// same write.
    pub(super) fn replace_seal_record(
        &self,
        old: &SealRecord,
        new: &SealRecord,
        notice: Option<&Notice>,
    ) -> Result<()> {
        let mut txn = Transaction::new()
            .require_eq(SEAL_KEY, records::encode(old))
            .put(SEAL_KEY, records::encode(new));
        if let Some(notice) = notice {
            txn = txn.announce(notice.encode());
        }
        self.store.transact(txn)?;
        Ok(())
    }
}

/// Records rewrapped under one hold of the shared lock during a root-key rotation.
const ROTATION_BATCH: usize = 256;

/// Reconstructs the unseal key from a quorum of `shares` and proves it by opening
/// every root key in the seal record.
pub(super) fn open_quorum(
    shares: &[Share],
    record: &SealRecord,
) -> Result<(UnsealKey, Vec<RootKey>)> {
    if let Some(stale) = shares.iter().find(|s| s.generation() != record.generation) {
        return Err(Error::StaleShare {
            share: stale.generation(),
            current: record.generation,
        });
    }
    let unseal_key = shamir::combine(shares).map_err(sharing)?;
    let roots = open_roots(&unseal_key, record);
    scrub_stack();
    Ok((unseal_key, roots?))
}

/// Every root key in the seal record, opened with `unseal_key`.
pub(super) fn open_roots(unseal_key: &UnsealKey, record: &SealRecord) -> Result<Vec<RootKey>> {
    record
        .roots
        .iter()
        .map(|r| {
            unseal_key
                .unwrap_root_key(&r.wrapped, r.version)
                .map_err(|_| Error::WrongShares)
        })
        .collect()
}

/// Keeps share errors precise instead of folding them into opaque crypto errors.
fn sharing(error: vault_crypto::CryptoError) -> Error {
    match error {
        vault_crypto::CryptoError::Shares(e) => Error::Shares(e),
        other => Error::Crypto(other),
    }
}
