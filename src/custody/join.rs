//! Joining a cluster: handing this node's root keys to another node on the same
//! store, and unsealing with root keys another node handed over.

use vault_crypto::RootKey;

use super::{Custody, Upkeep};
use crate::authz::{Authorized, JoinOp};
use crate::error::{Error, Result};
use crate::sessions::Session;
use crate::vault::SealedRoots;

impl Custody {
    /// Every root key this node holds, sealed to the caller's `session`, for a node
    /// listed in `[cluster] nodes` (the policy gave `node.join`; the list is the
    /// second, local condition).
    pub(crate) fn join_cluster(
        &self,
        grant: &Authorized<JoinOp>,
        session: &Session,
    ) -> Result<SealedRoots> {
        if !self.held.terms.cluster_nodes.contains(grant.identity()) {
            return Err(Error::NotClusterNode(grant.identity().to_string()));
        }
        self.vault().seal_roots_to(&session.key)
    }
}

impl Upkeep {
    /// Whether this node should ask another for the root keys now: it wants to join
    /// (see [`Vault::want_join`](crate::vault::Vault::want_join)) and has read the
    /// change log to its end, so a seal of every node announced before it joins
    /// reaches it after.
    pub(crate) fn should_join(&self) -> bool {
        self.held.vault.wants_join().unwrap_or(false) && self.held.in_step.check().is_ok()
    }

    /// Unseals with the root keys another node handed over, unless this node was
    /// sealed on purpose since it asked.
    pub(crate) fn join(&self, roots: Vec<RootKey>) -> Result<()> {
        self.held.vault.join(roots)
    }
}
