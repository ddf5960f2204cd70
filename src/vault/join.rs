//! Joining a cluster: an unsealed node hands the root keys it holds, each sealed to a
//! lease session, to a sealed node on the same store, which unseals with them without
//! custodians. Neither side ever holds a root key outside locked memory.

use std::sync::atomic::Ordering;

use vault_crypto::RootKey;
use vault_crypto::session::SessionKey;

use super::{State, Vault};
use crate::error::{Error, Result};

/// Root keys sealed for a joining node.
pub(crate) struct SealedRoots {
    /// Each root key's version and envelope.
    pub(crate) roots: Vec<(u32, Vec<u8>)>,
    /// The version new keys are wrapped under.
    pub(crate) current: u32,
}

impl Vault {
    /// Every root key this node holds (two during a root-key rotation), each sealed to
    /// `session`.
    pub(crate) fn seal_roots_to(&self, session: &SessionKey) -> Result<SealedRoots> {
        self.with_keyring(|keyring| {
            let roots = keyring
                .roots()
                .iter()
                .map(|root| Ok((root.version(), session.seal_root_key(root)?)))
                .collect::<Result<_>>()?;
            Ok(SealedRoots {
                roots,
                current: keyring.current_root_version(),
            })
        })
    }

    /// Unseals with the root keys another node handed over. They must be exactly the
    /// versions the seal record names now ([`Error::JoinMismatch`] otherwise: the
    /// other node was before or after a root-key rotation), and the current one must
    /// open the system keys, as after a custodian unseal. [`Error::Sealed`] if the
    /// node no longer wants to join: it was sealed on purpose since it asked.
    pub fn join(&self, roots: Vec<RootKey>) -> Result<()> {
        let state = self.write_lifecycle()?;
        match &*state {
            State::Sealed(_) if !self.join_wanted.load(Ordering::SeqCst) => {
                return Err(Error::Sealed);
            }
            State::Sealed(_) => {}
            State::Unsealed(_) => return Err(Error::AlreadyUnsealed),
            State::Uninitialised => return Err(Error::Uninitialised),
        }
        let record = self.seal_record()?;
        let mut handed: Vec<u32> = roots.iter().map(RootKey::version).collect();
        let mut named: Vec<u32> = record.roots.iter().map(|r| r.version).collect();
        handed.sort_unstable();
        named.sort_unstable();
        if handed != named {
            return Err(Error::JoinMismatch { handed, named });
        }
        // The wish to join stays while unsealed, where it means nothing: the next
        // seal sets it anew.
        self.finish_unseal(state, &record, roots)
    }

    /// Makes this node, while sealed, want to join (at start). Every seal but one
    /// because another node rotated the root key clears it, under the same lock as a
    /// join, so a node sealed on purpose stays sealed.
    pub(crate) fn want_join(&self) {
        let state = self.write_state();
        if !matches!(*state, State::Unsealed(_)) {
            self.join_wanted.store(true, Ordering::SeqCst);
        }
    }

    /// Whether this node is sealed and wants to join (a node started before another
    /// initialised the vault finds it sealed now).
    pub(crate) fn wants_join(&self) -> Result<bool> {
        if !self.join_wanted.load(Ordering::SeqCst) {
            return Ok(false);
        }
        Ok(matches!(*self.write_lifecycle()?, State::Sealed(_)))
    }
}
