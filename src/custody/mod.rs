//! Custody: the vault, the lease sessions, the leases and the revocation watches,
//! held together and reachable two ways only.
//!
//! - [`Custody`], what request handlers hold: every method takes the
//!   [`Authorized`] proof for exactly the operation and target it performs, so no
//!   handler can act around the policy. Each operation owns all of its effects: a
//!   seal also wipes the sessions and revokes every lease; deleting a secret or
//!   erasing a tenant also revokes the leases on it.
//! - [`Upkeep`], what only the daemon's own tasks hold (sweeps, gauges, the grace
//!   sweep, the rewrap pass, health): the services are never given one.
//!
//! The fields of both are private to this module.

mod apikeys;
mod join;
mod leases;
mod snapshot;
mod upkeep;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::authz::{
    Authorized, DecryptOp, DeleteSecret, EncryptOp, EraseTenant, ExportTenant, LeaseOp,
    OwnLeasesOp, ReadLeasesOp, ReadMetadata, RekeyOp, RevokeLeasesOp, RewrapOp, RotateRootOp,
    SealOp, SessionsOp, StatusOp, TenantKeysOp, UnsealOp, VerifierOp, WriteSecret,
};
use crate::breakglass::BreakGlass;
use crate::cluster::{InStep, Notice as ClusterNotice};
use crate::error::Result;
use crate::identity::Identity;
use crate::leases::{Lease, Leases, RevocationReason, Revoked, Selector};
use crate::limits::{Held as Slot, PerIdentity};
use crate::names::{Environment, SecretId, SecretKind};
use crate::sessions::{Opened, Session, SessionError, Sessions};
use crate::vault::{
    CeremonyKind, CeremonyOutcome, CeremonyView, ErasureReceipt, SealedShareSet, SecretMetadata,
    Status, TenantKeys, UnsealNonce, UnsealOutcome, Vault,
};
use vault_crypto::SecretValue;
use vault_crypto::clock::SharedClock;
use vault_crypto::envelope::Envelope;
use vault_crypto::shamir::Share;

pub(crate) use apikeys::{ApiKeySettings, KeyRequest, VerifyError};
pub(crate) use leases::LeaseError;
pub(crate) use snapshot::SnapshotJob;
pub(crate) use upkeep::{Disabled, Upkeep};

/// How leases and sessions are bounded and how long they live.
pub(crate) struct Terms {
    /// Lease lifetime when the caller asks for none (capped by the grant's `max_ttl`).
    pub(crate) default_ttl: Duration,
    /// Active leases of one identity when its grant sets no `max_active_leases`.
    pub(crate) max_per_identity: u32,
    /// Revocation watches one identity may hold open.
    pub(crate) watches_per_identity: usize,
    /// How far behind the change log of a store other nodes share this node may fall
    /// before it refuses leases and plaintext (`None`: the store is this node's alone).
    pub(crate) catch_up: Option<std::time::Duration>,
    /// The nodes that may join from this one (`[cluster] nodes`).
    pub(crate) cluster_nodes: Vec<Identity>,
    /// Whether this node joins from another when it starts sealed, or when another
    /// node rotated the root key (`[cluster.join]` is set).
    pub(crate) joins: bool,
}

struct Held {
    vault: Arc<Vault>,
    sessions: Sessions,
    leases: Leases,
    watches: Arc<PerIdentity>,
    terms: Terms,
    clock: SharedClock,
    /// Set when the daemon stops: every revocation watch ends, so no stream holds a
    /// connection open through the drain.
    stopping: tokio::sync::watch::Sender<bool>,
    apikeys: apikeys::KeyLimits,
    /// Snapshots under way on this node.
    snapshots: snapshot::SnapshotSlots,
    breakglass: Arc<BreakGlass>,
    /// Whether this node has caught up with the other nodes sharing its store.
    in_step: Arc<InStep>,
}

/// The custody the request handlers reach, one proof per operation.
pub(crate) struct Custody {
    held: Arc<Held>,
}

/// What a tenant export holds besides audit records.
pub(crate) struct TenantExport {
    pub(crate) tenant: crate::names::TenantId,
    pub(crate) secrets: Vec<SecretMetadata>,
    /// Key ids and records (the export leaves out their MACs).
    pub(crate) api_keys: Vec<(String, crate::records::ApiKeyRecord)>,
}

/// What a seal did.
pub(crate) struct Sealed {
    /// The vault's own outcome (the key hierarchy wiped, the state recorded).
    pub(crate) vault: Result<()>,
    /// Leases revoked with it.
    pub(crate) leases_revoked: usize,
    /// Break-glass grants ended with it.
    pub(crate) grants_ended: usize,
}

/// A caller's revocation watch: its slot among the identity's watches, and the
/// notices of its own leases.
pub(crate) struct Watch {
    _slot: Slot,
    identity: Identity,
    notices: broadcast::Receiver<Revoked>,
    /// Revoked API keys, for a watcher that may verify keys.
    api_keys: Option<broadcast::Receiver<String>>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// What a revocation watch tells.
pub(crate) enum Notice {
    /// One of the watcher's leases ended early.
    Lease(Revoked),
    /// An API key was revoked: drop any cached verification of it.
    ApiKey(String),
}

impl Watch {
    /// The next revocation of one of the watcher's leases; `Err` when notices were
    /// missed (the watcher must drop what it cached) or none can come any more (the
    /// daemon is stopping).
    pub(crate) async fn next(
        &mut self,
    ) -> std::result::Result<Notice, broadcast::error::RecvError> {
        loop {
            let api_key = async {
                match self.api_keys.as_mut() {
                    Some(keys) => keys.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                notice = self.notices.recv() => {
                    let notice = notice?;
                    if notice.identity == self.identity {
                        return Ok(Notice::Lease(notice));
                    }
                }
                key = api_key => return key.map(Notice::ApiKey),
                _ = self.stopping.wait_for(|stopping| *stopping) => {
                    return Err(broadcast::error::RecvError::Closed);
                }
            }
        }
    }
}

impl Held {
    /// Seals this node: the key hierarchy wiped, every session with it, every lease
    /// revoked (their holders told), every break-glass grant ended.
    fn seal(&self) -> Sealed {
        self.seal_and_rejoin(false)
    }

    /// [`Held::seal`]; with `rejoin`, a node that was unsealed asks another node for
    /// the root keys again.
    fn seal_and_rejoin(&self, rejoin: bool) -> Sealed {
        let vault = self.vault.seal_and_rejoin(rejoin);
        let grants_ended = self.breakglass.end_all("sealed");
        self.sessions.clear();
        let revoked = self.leases.revoke(&Selector::All, RevocationReason::Sealed);
        Sealed {
            vault,
            leases_revoked: revoked.len(),
            grants_ended,
        }
    }
}

/// Assembles custody over `vault`: the handle for requests and the one for upkeep.
pub(crate) fn assemble(
    vault: Arc<Vault>,
    sessions: Sessions,
    leases: Leases,
    terms: Terms,
    api_keys: ApiKeySettings,
    breakglass: Arc<BreakGlass>,
    clock: SharedClock,
) -> (Custody, Upkeep) {
    let in_step = Arc::new(match terms.catch_up {
        Some(bound) if vault.store().change_log().is_some() => InStep::shared(bound),
        _ => InStep::alone(),
    });
    if terms.joins {
        vault.want_join();
    }
    let held = Arc::new(Held {
        vault,
        sessions,
        leases,
        watches: PerIdentity::new(terms.watches_per_identity),
        stopping: tokio::sync::watch::channel(false).0,
        apikeys: apikeys::KeyLimits::new(api_keys, &clock),
        snapshots: snapshot::SnapshotSlots::default(),
        breakglass,
        in_step,
        terms,
        clock,
    });
    (
        Custody {
            held: Arc::clone(&held),
        },
        Upkeep::new(held),
    )
}

impl Custody {
    fn vault(&self) -> &Vault {
        &self.held.vault
    }

    /// Break-glass grants; each change takes its own proof.
    pub(crate) fn breakglass(&self) -> &BreakGlass {
        &self.held.breakglass
    }

    /// Unix seconds now, by the daemon's clock.
    pub(crate) fn now_unix(&self) -> u64 {
        vault_crypto::clock::unix_seconds(self.held.clock.now())
    }

    /// The vault's status and, while unsealed, the audit checkpoint public key.
    pub(crate) fn status(&self, _: &Authorized<StatusOp>) -> Result<(Status, Option<[u8; 32]>)> {
        Ok((self.vault().status()?, self.vault().audit_public_key()))
    }

    pub(crate) fn init(
        &self,
        _: &Authorized<UnsealOp>,
        threshold: usize,
        shares: usize,
    ) -> Result<Vec<Share>> {
        self.vault().init(threshold, shares)
    }

    pub(crate) fn unseal(
        &self,
        _: &Authorized<UnsealOp>,
        share: Share,
        nonce: Option<&UnsealNonce>,
    ) -> Result<UnsealOutcome> {
        self.vault().unseal(share, nonce)
    }

    pub(crate) fn reset_unseal(&self, _: &Authorized<UnsealOp>) -> Result<()> {
        self.vault().reset_unseal()
    }

    /// Seals: the key hierarchy wiped, every session with it, every lease revoked
    /// (their holders told), every break-glass grant ended. The sessions, leases and
    /// grants go even if the vault reports a failure: sealing is the safe direction.
    pub(crate) fn seal(&self, _: &Authorized<SealOp>) -> Sealed {
        self.held.seal()
    }

    /// Tells every other node sharing the store to seal, through its change log.
    pub(crate) fn seal_cluster(&self, _: &Authorized<SealOp>) -> Result<()> {
        self.vault().announce(&ClusterNotice::Seal)
    }

    pub(crate) fn rekey(
        &self,
        _: &Authorized<RekeyOp>,
        current: Vec<Share>,
        threshold: usize,
        shares: usize,
    ) -> Result<Vec<Share>> {
        self.vault().rekey(current, threshold, shares)
    }

    pub(crate) fn verify_rekey(
        &self,
        _: &Authorized<RekeyOp>,
        new: Vec<Share>,
    ) -> Result<(u32, u8, u8)> {
        self.vault().verify_rekey(new)
    }

    pub(crate) fn rotate_root_key(
        &self,
        _: &Authorized<RotateRootOp>,
        shares: Vec<Share>,
    ) -> Result<u32> {
        self.vault().rotate_root_key(shares)
    }

    /// Starts a rekey or verify-rekey ceremony (`kind` must be one of them).
    pub(crate) fn start_rekey_ceremony(
        &self,
        grant: &Authorized<RekeyOp>,
        kind: CeremonyKind,
    ) -> Result<CeremonyView> {
        debug_assert!(!matches!(kind, CeremonyKind::RotateRootKey));
        self.vault().start_ceremony(kind, grant.identity().as_str())
    }

    /// Starts a root-key rotation ceremony.
    pub(crate) fn start_rotation_ceremony(
        &self,
        grant: &Authorized<RotateRootOp>,
    ) -> Result<CeremonyView> {
        self.vault()
            .start_ceremony(CeremonyKind::RotateRootKey, grant.identity().as_str())
    }

    /// Submits one custodian's share to the ceremony named by `nonce`.
    pub(crate) fn submit_ceremony_share(
        &self,
        _: &Authorized<UnsealOp>,
        share: Share,
        nonce: &UnsealNonce,
    ) -> Result<CeremonyOutcome> {
        self.vault().submit_ceremony_share(share, nonce)
    }

    /// The ceremony in progress and a ceremony rekey's pending files.
    pub(crate) fn ceremony(
        &self,
        _: &Authorized<StatusOp>,
    ) -> Result<(Option<CeremonyView>, Option<SealedShareSet>)> {
        Ok((
            self.vault().ceremony(),
            self.vault().pending_custodian_shares()?,
        ))
    }

    /// Discards the ceremony in progress.
    pub(crate) fn cancel_ceremony(&self, _: &Authorized<UnsealOp>) -> Option<CeremonyView> {
        self.vault().cancel_ceremony()
    }

    pub(crate) fn put_secret(
        &self,
        grant: &Authorized<WriteSecret>,
        kind: SecretKind,
        value: &SecretValue,
    ) -> Result<SecretMetadata> {
        self.vault().put_secret(&grant.op().0, kind, value)
    }

    pub(crate) fn rotate_secret(
        &self,
        grant: &Authorized<WriteSecret>,
        value: &SecretValue,
        grace: Option<Duration>,
    ) -> Result<SecretMetadata> {
        self.vault().rotate_secret(&grant.op().0, value, grace)
    }

    /// Metadata of `id`, which must be of the tenant the grant names.
    pub(crate) fn describe_secret(
        &self,
        grant: &Authorized<ReadMetadata>,
        id: &SecretId,
    ) -> Result<SecretMetadata> {
        if id.tenant != grant.op().0 {
            return Err(crate::Error::NotFound);
        }
        self.vault().describe_secret(id)
    }

    pub(crate) fn list_secrets(
        &self,
        grant: &Authorized<ReadMetadata>,
        environment: Option<Environment>,
    ) -> Result<Vec<SecretMetadata>> {
        self.vault().list_secrets(&grant.op().0, environment)
    }

    /// What a tenant export holds besides audit records: the tenant, its secrets'
    /// metadata and its API keys' records (the caller leaves out hints,
    /// fingerprints and MACs).
    pub(crate) fn export_tenant(&self, grant: &Authorized<ExportTenant>) -> Result<TenantExport> {
        let tenant = &grant.op().0;
        Ok(TenantExport {
            tenant: tenant.clone(),
            secrets: self.held.vault.list_secrets(tenant, None)?,
            api_keys: self.held.vault.list_api_keys(tenant, None)?,
        })
    }

    /// Deletes a secret and revokes every lease on it.
    pub(crate) fn delete_secret(&self, grant: &Authorized<DeleteSecret>) -> Result<()> {
        let id = &grant.op().0;
        self.vault().delete_secret(id)?;
        self.held.leases.revoke(
            &Selector::Secret(id.clone()),
            RevocationReason::VersionDisabled,
        );
        Ok(())
    }

    /// Crypto-shreds a tenant and revokes every lease on its secrets.
    pub(crate) fn erase_tenant(&self, grant: &Authorized<EraseTenant>) -> Result<ErasureReceipt> {
        let tenant = &grant.op().0;
        let receipt = self.vault().erase_tenant(tenant)?;
        self.held.leases.revoke(
            &Selector::Tenant(tenant.clone()),
            RevocationReason::TenantErased,
        );
        // Its API keys stop verifying too, and verifiers drop what they cached.
        for (id, _) in self.vault().list_api_keys(tenant, None)? {
            self.vault().revoke_api_key(&id)?;
            self.held.apikeys.notify_revoked(&id);
        }
        Ok(receipt)
    }

    pub(crate) fn transit_encrypt(
        &self,
        grant: &Authorized<EncryptOp>,
        plaintext: &[u8],
    ) -> Result<Envelope> {
        let EncryptOp(tenant, env) = grant.op();
        self.vault()
            .transit_encrypt(tenant, *env, plaintext, grant.create_tenant_keys)
    }

    /// Opens each transit envelope under the grant's tenant and environment, handing
    /// `each` every outcome in order; keys are looked up once per batch.
    pub(crate) fn transit_decrypt_each<'a>(
        &self,
        grant: &Authorized<DecryptOp>,
        envelopes: impl IntoIterator<Item = &'a [u8]>,
        each: impl FnMut(Result<SecretValue>),
    ) -> Result<()> {
        let DecryptOp(tenant, env) = grant.op();
        self.held.in_step.check()?;
        self.vault()
            .transit_decrypt_each(tenant, *env, envelopes, each)
    }

    pub(crate) fn transit_rewrap(
        &self,
        grant: &Authorized<RewrapOp>,
        envelope: &[u8],
    ) -> Result<Envelope> {
        let RewrapOp(tenant, env) = grant.op();
        self.vault().transit_rewrap(tenant, *env, envelope)
    }

    pub(crate) fn rotate_tenant_key(&self, grant: &Authorized<TenantKeysOp>) -> Result<TenantKeys> {
        self.vault().rotate_tenant_key(&grant.op().0)
    }

    pub(crate) fn retire_tenant_keys(
        &self,
        grant: &Authorized<TenantKeysOp>,
        below: u32,
    ) -> Result<TenantKeys> {
        self.vault().retire_tenant_keys(&grant.op().0, below)
    }

    pub(crate) fn tenant_keys(&self, grant: &Authorized<ReadMetadata>) -> Result<TenantKeys> {
        self.vault().tenant_keys(&grant.op().0)
    }

    /// Opens a lease session for the caller the proof names.
    pub(crate) fn open_session(
        &self,
        grant: &Authorized<SessionsOp>,
        client_public: &[u8],
    ) -> std::result::Result<Opened, SessionError> {
        self.held.sessions.open(grant.identity(), client_public)
    }

    /// The caller's own live session `id`.
    pub(crate) fn session(
        &self,
        grant: &Authorized<SessionsOp>,
        id: &str,
    ) -> std::result::Result<Arc<Session>, SessionError> {
        self.held.sessions.get(grant.identity(), id)
    }

    /// Starts a revocation watch over the caller's own leases, and over revoked API
    /// keys if the caller may verify keys, if the identity holds fewer watches than
    /// its bound. Subscribed now: nothing revoked after this is missed.
    pub(crate) fn watch(
        &self,
        grant: &Authorized<OwnLeasesOp>,
        verifier: Option<&Authorized<VerifierOp>>,
    ) -> Option<Watch> {
        let slot = self.held.watches.acquire(grant.identity())?;
        Some(Watch {
            _slot: slot,
            identity: grant.identity().clone(),
            api_keys: verifier.map(|_| self.held.apikeys.subscribe()),
            notices: self.held.leases.subscribe(),
            stopping: self.held.stopping.subscribe(),
        })
    }

    /// Active leases `filter` keeps, soonest to expire first.
    pub(crate) fn list_leases(
        &self,
        _: &Authorized<ReadLeasesOp>,
        filter: impl Fn(&Lease) -> bool,
    ) -> Vec<Lease> {
        self.held.leases.list(filter)
    }

    /// Revokes every lease `selector` matches, telling their holders. Returns how many.
    /// The other nodes sharing the store are told through its change log; if they
    /// cannot be, the leases here are revoked all the same and the error says so.
    pub(crate) fn revoke_leases(
        &self,
        _: &Authorized<RevokeLeasesOp>,
        selector: &Selector,
    ) -> (usize, Result<()>) {
        let revoked = self
            .held
            .leases
            .revoke(selector, RevocationReason::Revoked)
            .len();
        let announced = self.vault().announce(&ClusterNotice::RevokeLeases(
            selector.clone(),
            RevocationReason::Revoked,
        ));
        (revoked, announced)
    }

    /// Whether `version` of the leased secret may still be leased (unsealed, not
    /// deleted, not past its grace window).
    pub(crate) fn check_leasable(&self, grant: &Authorized<LeaseOp>, version: u64) -> Result<()> {
        self.vault().check_leasable(&grant.op().0, version)
    }
}
