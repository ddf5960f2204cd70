//! The vault: seal lifecycle and the key hierarchy held in memory while unsealed.
//!
//! ```text
//!   Uninitialised ──init──▶ Sealed ──unseal (T shares)──▶ Unsealed
//!                             ▲                              │
//!                             └──────────── seal ────────────┘
//! ```
//!
//! Sealed and unsealed are different types: only the unsealed state holds a
//! keyring, and every data operation reaches keys through it. Sealing drops the
//! keyring, which wipes every unwrapped key from the locked arena. Data operations hold
//! the state's read lock for their duration, so sealing waits for in-flight operations
//! and no key outlives a seal.

pub(crate) mod apikeys;
mod breakglass;
mod cache;
mod ceremony;
mod join;
mod keyring;
mod secrets;
mod snapshot;
mod tenants;
mod token_seal;
mod transit;
mod unseal;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use vault_crypto::arena::scrub_stack;
use vault_crypto::clock::{SharedClock, unix_seconds};

pub use ceremony::{
    CeremonyKind, CeremonyOutcome, CeremonyView, Custodian, MAX_CUSTODIANS, SealedShareSet,
};
pub(crate) use join::SealedRoots;
pub use secrets::{ErasureReceipt, SecretMetadata, SweepItem, VersionMetadata};
pub use tenants::{TenantKeyVersion, TenantKeys};
pub use token_seal::AutoUnseal;
pub use unseal::{UnsealNonce, UnsealOutcome};

use crate::cluster::Notice;
use crate::error::{Error, Result};
use crate::names::TenantId;
use crate::records::{self, SEAL_KEY, SealRecord};
use crate::storage::{Store, Transaction};
use keyring::Keyring;
use unseal::UnsealProgress;

/// Tunables of the vault's lifecycle.
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// How long unseal progress survives without reaching the threshold.
    pub unseal_timeout: Duration,
    /// How long a rotated-out secret version stays leasable by default.
    pub default_grace: Duration,
    /// The longest grace window a rotation may ask for.
    pub max_grace: Duration,
    /// Unwrapped tenant keys kept in locked memory at once (least recently used go).
    pub tenant_key_cache: usize,
    /// Encryptions after which a tenant key is rotated before its next use.
    pub tenant_rotate_after: u64,
    /// What grace windows, unseal timeouts and record times are read from.
    pub clock: SharedClock,
    /// The PKCS#11 token for auto-unseal (`[seal.pkcs11]`), if configured.
    pub token: Option<Arc<crate::hsm::Pkcs11Config>>,
}

impl Default for VaultOptions {
    fn default() -> Self {
        Self {
            unseal_timeout: Duration::from_secs(10 * 60),
            default_grace: Duration::from_secs(24 * 60 * 60),
            max_grace: Duration::from_secs(30 * 24 * 60 * 60),
            tenant_key_cache: 1024,
            tenant_rotate_after: vault_crypto::aead::ROTATE_AFTER,
            clock: vault_crypto::clock::system(),
            token: None,
        }
    }
}

impl VaultOptions {
    fn tenant_keys(&self) -> keyring::TenantKeyOptions {
        keyring::TenantKeyOptions {
            cache: self.tenant_key_cache,
            rotate_after: self.tenant_rotate_after,
            clock: Arc::clone(&self.clock),
        }
    }
}

enum State {
    Uninitialised,
    Sealed(Option<UnsealProgress>),
    Unsealed(Box<Keyring>),
}

impl State {
    /// The keyring, or why there is none.
    fn keyring(&self) -> Result<&Keyring> {
        match self {
            State::Unsealed(keyring) => Ok(keyring),
            State::Sealed(_) => Err(Error::Sealed),
            State::Uninitialised => Err(Error::Uninitialised),
        }
    }

    fn keyring_mut(&mut self) -> Result<&mut Keyring> {
        match self {
            State::Unsealed(keyring) => Ok(keyring),
            State::Sealed(_) => Err(Error::Sealed),
            State::Uninitialised => Err(Error::Uninitialised),
        }
    }
}

/// The lifecycle state alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealState {
    /// No seal record exists yet.
    Uninitialised,
    /// Initialised and sealed.
    Sealed,
    /// Unsealed and serving.
    Unsealed,
}

/// What the vault reports about itself. Contains nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// No seal record exists yet.
    Uninitialised,
    /// Initialised and sealed.
    Sealed {
        /// Shares needed.
        threshold: u8,
        /// Shares in the current set.
        shares: u8,
        /// Share-set generation.
        generation: u32,
        /// Shares submitted in the current attempt, and its nonce.
        progress: Option<(u8, UnsealNonce)>,
    },
    /// Unsealed and serving.
    Unsealed {
        /// Shares needed.
        threshold: u8,
        /// Shares in the current set.
        shares: u8,
        /// Share-set generation.
        generation: u32,
        /// Current root key version.
        root_version: u32,
    },
}

/// The vault: a store plus the in-memory state of the key hierarchy.
pub struct Vault {
    store: Arc<dyn Store>,
    state: RwLock<State>,
    /// The custodian ceremony in progress, if any (its own lock: a status query never
    /// waits for a rotation it runs).
    ceremony: std::sync::Mutex<Option<ceremony::Ceremony>>,
    options: VaultOptions,
    /// Tells watchers (health reporting) of every lifecycle change as it happens.
    changes: tokio::sync::watch::Sender<SealState>,
    /// Whether this node, while sealed, asks another for the root keys (see
    /// [`Vault::want_join`]). Changed only under the state's write lock.
    join_wanted: std::sync::atomic::AtomicBool,
}

impl Vault {
    /// Unix seconds now, by the vault's clock.
    pub(crate) fn now_unix(&self) -> u64 {
        unix_seconds(self.options.clock.now())
    }

    /// Monotonic time now, by the vault's clock.
    fn instant(&self) -> Instant {
        self.options.clock.instant()
    }

    /// Opens the vault over `store`. It always starts sealed (or uninitialised).
    pub fn open(store: Arc<dyn Store>, options: VaultOptions) -> Result<Self> {
        let (state, seal_state) = match store.get(SEAL_KEY)? {
            Some(_) => (State::Sealed(None), SealState::Sealed),
            None => (State::Uninitialised, SealState::Uninitialised),
        };
        Ok(Self {
            store,
            state: RwLock::new(state),
            ceremony: std::sync::Mutex::new(None),
            options,
            changes: tokio::sync::watch::channel(seal_state).0,
            join_wanted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The store, for following its change log.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Tells the other nodes sharing the store `notice`, through its change log (a
    /// store only this node uses keeps none, and nothing is written).
    pub(crate) fn announce(&self, notice: &Notice) -> Result<()> {
        Ok(self
            .store
            .transact(Transaction::new().announce(notice.encode()))?)
    }

    /// Wipes the unwrapped keys of `tenant` (of every tenant if `None`) from memory: the
    /// next use reads the stored record.
    pub(crate) fn forget_tenant_keys(&self, tenant: Option<&TenantId>) {
        if let Ok(keyring) = self.read_state().keyring() {
            match tenant {
                Some(tenant) => keyring.forget_tenant(tenant),
                None => keyring.forget_all_tenants(),
            }
        }
    }

    /// Which lifecycle state the vault is in: cheap (a read lock, no storage read),
    /// for health checks and gauges.
    pub fn seal_state(&self) -> SealState {
        match &*self.read_state() {
            State::Uninitialised => SealState::Uninitialised,
            State::Sealed(_) => SealState::Sealed,
            State::Unsealed(_) => SealState::Unsealed,
        }
    }

    /// Lifecycle changes as they happen (the current state first).
    pub fn watch_seal_state(&self) -> tokio::sync::watch::Receiver<SealState> {
        self.changes.subscribe()
    }

    /// Records a lifecycle change for watchers; the caller holds the write lock.
    fn changed(&self, now: SealState) {
        self.changes.send_replace(now);
    }

    /// The vault's status.
    pub fn status(&self) -> Result<Status> {
        let mut state = self.write_lifecycle()?;
        let record = match &*state {
            State::Uninitialised => return Ok(Status::Uninitialised),
            _ => self.seal_record()?,
        };
        Ok(match &mut *state {
            State::Uninitialised => Status::Uninitialised,
            State::Sealed(progress) => {
                unseal::expire(progress, self.options.unseal_timeout, self.instant());
                Status::Sealed {
                    threshold: record.threshold,
                    shares: record.shares,
                    generation: record.generation,
                    progress: progress.as_ref().map(UnsealProgress::summary),
                }
            }
            State::Unsealed(keyring) => Status::Unsealed {
                threshold: record.threshold,
                shares: record.shares,
                generation: record.generation,
                root_version: keyring.current_root_version(),
            },
        })
    }

    /// Seals the vault: wipes the root key, every unwrapped tenant and system key and
    /// any unseal progress. Waits for in-flight operations to finish first.
    pub fn seal(&self) -> Result<()> {
        self.seal_and_rejoin(false)
    }

    /// Seals; with `rejoin`, a node that was unsealed then wants to join again (see
    /// [`Vault::want_join`]), and one sealed already stays as it was.
    pub(crate) fn seal_and_rejoin(&self, rejoin: bool) -> Result<()> {
        let mut state = self.write_state();
        let was_unsealed = match &*state {
            State::Uninitialised => return Err(Error::Uninitialised),
            State::Sealed(_) => false,
            State::Unsealed(_) => true,
        };
        self.join_wanted
            .store(rejoin && was_unsealed, std::sync::atomic::Ordering::SeqCst);
        // Dropping the old state wipes its keys or shares from the arena.
        drop(std::mem::replace(&mut *state, State::Sealed(None)));
        self.changed(SealState::Sealed);
        scrub_stack();
        Ok(())
    }

    /// HMAC-SHA256 of an audit chain value with the audit MAC key; `None` while sealed.
    pub fn audit_mac(&self, message: &[u8]) -> Option<[u8; 32]> {
        let state = self.read_state();
        Some(state.keyring().ok()?.system().audit_mac.sign(message))
    }

    /// Ed25519 signature of an audit checkpoint; `None` while sealed.
    pub fn audit_sign(&self, message: &[u8]) -> Option<[u8; 64]> {
        let state = self.read_state();
        Some(state.keyring().ok()?.system().audit_signing.sign(message))
    }

    /// Unwrapped tenant keys held in locked memory now (0 while sealed).
    pub fn cached_tenant_keys(&self) -> usize {
        self.read_state()
            .keyring()
            .map_or(0, |k| k.cached_tenant_keys())
    }

    /// The audit checkpoint public key; `None` while sealed.
    pub fn audit_public_key(&self) -> Option<[u8; 32]> {
        let state = self.read_state();
        Some(state.keyring().ok()?.system().audit_signing.public_key())
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves the state as it was before the
        // panicking operation changed it (state changes are single assignments).
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The lifecycle state, to act on: a node that started before another node sharing
    /// its store initialised the vault finds the seal record there now, and is sealed
    /// rather than uninitialised.
    fn write_lifecycle(&self) -> Result<RwLockWriteGuard<'_, State>> {
        let mut state = self.write_state();
        if matches!(*state, State::Uninitialised) && self.store.get(SEAL_KEY)?.is_some() {
            *state = State::Sealed(None);
            self.changed(SealState::Sealed);
        }
        Ok(state)
    }

    /// Runs `f` with the keyring, or fails with `Sealed` / `Uninitialised`.
    fn with_keyring<T>(&self, f: impl FnOnce(&Keyring) -> Result<T>) -> Result<T> {
        f(self.read_state().keyring()?)
    }

    /// Runs `f` with the keyring while holding the write lock: no other operation runs.
    fn with_keyring_exclusive<T>(&self, f: impl FnOnce(&Keyring) -> Result<T>) -> Result<T> {
        f(self.write_state().keyring()?)
    }

    fn seal_record(&self) -> Result<SealRecord> {
        let value = self.store.get(SEAL_KEY)?.ok_or(Error::Uninitialised)?;
        Ok(records::decode(SEAL_KEY, &value)?)
    }

    #[cfg(test)]
    pub(crate) fn key_material_for_tests(
        &self,
        tenant: &crate::names::TenantId,
        root: &mut [u8; 32],
        tenant_key: &mut [u8; 32],
    ) -> Result<()> {
        self.with_keyring(|k| {
            *root = k.root_raw_for_tests();
            *tenant_key = k
                .current_tenant_key(self.store.as_ref(), tenant, false)?
                .raw_for_tests();
            Ok(())
        })
    }
}

#[cfg(test)]
mod shared_store_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod unseal_tests;

#[cfg(test)]
mod memory_tests;
