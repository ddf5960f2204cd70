//! What a snapshot is read from: one consistent view of the store, and the facts of
//! the seal record in that same view. Needs no key, so it works sealed too.

use super::Vault;
use crate::error::{Error, Result};
use crate::records::{self, SEAL_KEY, SealRecord};
use crate::storage::snapshot::{SealFacts, Snapshot};

impl Vault {
    /// A snapshot of every table as it stands now (one read transaction), headed by the
    /// vault's identity and the root-key version and share set its seal record needs.
    /// An uninitialised vault has nothing to snapshot.
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        let view = self.store.view()?;
        let value = view.get(SEAL_KEY)?.ok_or(Error::Uninitialised)?;
        let seal: SealRecord = records::decode(SEAL_KEY, &value)?;
        let facts = SealFacts {
            root_version: seal.current_root,
            generation: seal.generation,
            threshold: seal.threshold,
            shares: seal.shares,
        };
        Ok(Snapshot::new(view, self.now_unix(), facts)?)
    }
}
