//! Policy glue: the only place an [`Authorized`] value is made, and [`Custody`], the
//! only way request handlers reach the vault. Every `Custody` method takes the
//! `Authorized` proof for exactly the operation and target it performs, so a handler
//! cannot touch storage around the policy, nor reuse one decision for another secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use vault_crypto::SecretValue;
use vault_crypto::envelope::Envelope;
use vault_crypto::shamir::Share;
use vault_policy::{
    Decision, Operation, Permission, PermissionRequest, PolicyError, PolicySet, Request,
};

use crate::error::Result;
use crate::identity::Identity;
use crate::names::{Environment, SecretId, SecretKind, TenantId};
use crate::vault::{
    ErasureReceipt, SealState, SecretMetadata, Status, SweepItem, TenantKeys, UnsealNonce,
    UnsealOutcome, Vault,
};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A verified client certificate's identity, over mutual TLS.
    Remote(Identity),
    /// A user of the local Unix socket; its file permissions decided access.
    Local(Identity),
}

impl Caller {
    pub(crate) fn identity(&self) -> &Identity {
        match self {
            Caller::Remote(i) | Caller::Local(i) => i,
        }
    }
}

/// Permissions the local socket gives, whatever the policies say.
const LOCAL_PERMISSIONS: [Permission; 3] =
    [Permission::Status, Permission::Unseal, Permission::Seal];

/// An admin operation and its target.
pub(crate) trait AdminOp {
    const PERMISSION: Permission;
    fn tenant(&self) -> Option<&TenantId> {
        None
    }
}

/// A broker operation and its target.
pub(crate) trait BrokerOp {
    const OPERATION: Operation;
    fn tenant(&self) -> &TenantId;
    fn environment(&self) -> Environment;
    fn secret(&self) -> Option<&str> {
        None
    }
}

macro_rules! lifecycle_ops {
    ($($name:ident => $perm:ident),* $(,)?) => {$(
        #[doc = concat!("The `", stringify!($perm), "` permission.")]
        pub(crate) struct $name;
        impl AdminOp for $name {
            const PERMISSION: Permission = Permission::$perm;
        }
    )*};
}

lifecycle_ops! {
    StatusOp => Status,
    UnsealOp => Unseal,
    SealOp => Seal,
    RekeyOp => Rekey,
    RotateRootOp => KeysRotate,
    ReadLeasesOp => LeasesRead,
    RevokeLeasesOp => LeasesRevoke,
    PoliciesOp => PolicyReload,
}

/// Store or rotate a secret's value.
pub(crate) struct WriteSecret(pub(crate) SecretId);
/// Read a tenant's secrets' metadata.
pub(crate) struct ReadMetadata(pub(crate) TenantId);
/// Delete a secret.
pub(crate) struct DeleteSecret(pub(crate) SecretId);
/// Crypto-shred a tenant.
pub(crate) struct EraseTenant(pub(crate) TenantId);
/// Rotate or retire a tenant's key versions.
pub(crate) struct TenantKeysOp(pub(crate) TenantId);

impl AdminOp for WriteSecret {
    const PERMISSION: Permission = Permission::SecretsWrite;
    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.0.tenant)
    }
}
impl AdminOp for ReadMetadata {
    const PERMISSION: Permission = Permission::SecretsReadMetadata;
    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.0)
    }
}
impl AdminOp for DeleteSecret {
    const PERMISSION: Permission = Permission::SecretsDelete;
    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.0.tenant)
    }
}
impl AdminOp for EraseTenant {
    const PERMISSION: Permission = Permission::TenantsErase;
    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.0)
    }
}
impl AdminOp for TenantKeysOp {
    const PERMISSION: Permission = Permission::KeysRotate;
    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.0)
    }
}

/// Lease a secret.
pub(crate) struct LeaseOp(pub(crate) SecretId);
/// Encrypt under a tenant's transit key.
pub(crate) struct EncryptOp(pub(crate) TenantId, pub(crate) Environment);
/// Decrypt a tenant's transit envelope.
pub(crate) struct DecryptOp(pub(crate) TenantId, pub(crate) Environment);
/// Reseal a tenant's transit envelope under its current key.
pub(crate) struct RewrapOp(pub(crate) TenantId, pub(crate) Environment);

impl BrokerOp for LeaseOp {
    const OPERATION: Operation = Operation::Lease;
    fn tenant(&self) -> &TenantId {
        &self.0.tenant
    }
    fn environment(&self) -> Environment {
        self.0.environment
    }
    fn secret(&self) -> Option<&str> {
        Some(self.0.name.as_str())
    }
}
impl BrokerOp for EncryptOp {
    const OPERATION: Operation = Operation::TransitEncrypt;
    fn tenant(&self) -> &TenantId {
        &self.0
    }
    fn environment(&self) -> Environment {
        self.1
    }
}
impl BrokerOp for DecryptOp {
    const OPERATION: Operation = Operation::TransitDecrypt;
    fn tenant(&self) -> &TenantId {
        &self.0
    }
    fn environment(&self) -> Environment {
        self.1
    }
}
impl BrokerOp for RewrapOp {
    const OPERATION: Operation = Operation::TransitRewrap;
    fn tenant(&self) -> &TenantId {
        &self.0
    }
    fn environment(&self) -> Environment {
        self.1
    }
}

/// Proof that the policies allowed the caller `op`. Only this module makes one.
pub(crate) struct Authorized<O> {
    op: O,
    /// Id of the grant or role that allowed it (`None` for the local socket).
    pub(crate) rule: Option<String>,
    /// The grant's `max_ttl`.
    pub(crate) max_ttl: Option<Duration>,
    /// The grant's `max_active_leases`.
    pub(crate) max_active_leases: Option<u32>,
    /// Whether the grant lets transit create a tenant's key on first use.
    pub(crate) create_tenant_keys: bool,
}

/// A refusal. Says which rule denied, never whether the target exists.
#[derive(Debug, Clone)]
pub(crate) struct Denied {
    pub(crate) action: &'static str,
    pub(crate) rule: Option<String>,
}

/// The loaded policy set; replaced whole on reload.
pub(crate) struct Policies {
    dir: PathBuf,
    set: RwLock<Arc<PolicySet>>,
}

impl Policies {
    pub(crate) fn load(dir: &Path) -> Result<Self, PolicyError> {
        Ok(Self {
            dir: dir.to_path_buf(),
            set: RwLock::new(Arc::new(PolicySet::load_dir(dir)?)),
        })
    }

    /// Loads the directory again; on any error the old set stays.
    pub(crate) fn reload(&self) -> Result<(usize, usize, usize), PolicyError> {
        let set = PolicySet::load_dir(&self.dir)?;
        let counts = set.counts();
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(counts)
    }

    pub(crate) fn current(&self) -> Arc<PolicySet> {
        Arc::clone(&self.set.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn decide<O>(
        &self,
        op: O,
        decision: Decision,
        action: &'static str,
    ) -> Result<Authorized<O>, Denied> {
        let rule = decision.decided_by.map(|r| r.id);
        if !decision.allowed {
            return Err(Denied { action, rule });
        }
        Ok(Authorized {
            op,
            rule,
            max_ttl: decision.max_ttl,
            max_active_leases: decision.max_active_leases,
            create_tenant_keys: decision.create_tenant_keys,
        })
    }

    /// Decides an admin operation.
    pub(crate) fn permit<O: AdminOp>(
        &self,
        caller: &Caller,
        op: O,
    ) -> Result<Authorized<O>, Denied> {
        let action = O::PERMISSION.as_str();
        match caller {
            Caller::Local(_) => {
                if LOCAL_PERMISSIONS.contains(&O::PERMISSION) {
                    Ok(Authorized {
                        op,
                        rule: None,
                        max_ttl: None,
                        max_active_leases: None,
                        create_tenant_keys: false,
                    })
                } else {
                    Err(Denied { action, rule: None })
                }
            }
            Caller::Remote(identity) => {
                let decision = self.current().authorize(&PermissionRequest {
                    identity: identity.as_str(),
                    permission: O::PERMISSION,
                    tenant: op.tenant().map(TenantId::as_str),
                });
                self.decide(op, decision, action)
            }
        }
    }

    /// Decides a broker operation. The local socket has none.
    pub(crate) fn grant<O: BrokerOp>(
        &self,
        caller: &Caller,
        op: O,
    ) -> Result<Authorized<O>, Denied> {
        let action = O::OPERATION.as_str();
        let Caller::Remote(identity) = caller else {
            return Err(Denied { action, rule: None });
        };
        let decision = self.current().evaluate(&Request {
            identity: identity.as_str(),
            operation: O::OPERATION,
            tenant: op.tenant().as_str(),
            environment: op.environment().as_str(),
            secret: op.secret(),
        });
        self.decide(op, decision, action)
    }
}

/// The vault, reachable only with an [`Authorized`] proof for each operation.
pub(crate) struct Custody {
    vault: Arc<Vault>,
}

impl Custody {
    pub(crate) fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }

    /// Status is also served unauthenticated on the health endpoint; it holds nothing secret.
    /// The lifecycle state alone, without reading storage (health, gauges).
    pub(crate) fn seal_state(&self) -> SealState {
        self.vault.seal_state()
    }

    /// Unwrapped tenant keys held now, for a gauge.
    pub(crate) fn cached_tenant_keys(&self) -> usize {
        self.vault.cached_tenant_keys()
    }

    /// Lifecycle changes as they happen, for health reporting.
    pub(crate) fn watch_seal_state(&self) -> tokio::sync::watch::Receiver<SealState> {
        self.vault.watch_seal_state()
    }

    pub(crate) fn status(&self) -> Result<Status> {
        self.vault.status()
    }

    /// The audit checkpoint public key while unsealed; public, like the status.
    pub(crate) fn audit_public_key(&self) -> Option<[u8; 32]> {
        self.vault.audit_public_key()
    }

    pub(crate) fn init(
        &self,
        _: &Authorized<UnsealOp>,
        threshold: usize,
        shares: usize,
    ) -> Result<Vec<Share>> {
        self.vault.init(threshold, shares)
    }

    pub(crate) fn unseal(
        &self,
        _: &Authorized<UnsealOp>,
        share: Share,
        nonce: Option<&UnsealNonce>,
    ) -> Result<UnsealOutcome> {
        self.vault.unseal(share, nonce)
    }

    pub(crate) fn reset_unseal(&self, _: &Authorized<UnsealOp>) -> Result<()> {
        self.vault.reset_unseal()
    }

    pub(crate) fn seal(&self, _: &Authorized<SealOp>) -> Result<()> {
        self.vault.seal()
    }

    pub(crate) fn rekey(
        &self,
        _: &Authorized<RekeyOp>,
        current: Vec<Share>,
        threshold: usize,
        shares: usize,
    ) -> Result<Vec<Share>> {
        self.vault.rekey(current, threshold, shares)
    }

    pub(crate) fn rotate_root_key(
        &self,
        _: &Authorized<RotateRootOp>,
        shares: Vec<Share>,
    ) -> Result<u32> {
        self.vault.rotate_root_key(shares)
    }

    pub(crate) fn put_secret(
        &self,
        grant: &Authorized<WriteSecret>,
        kind: SecretKind,
        value: &SecretValue,
    ) -> Result<SecretMetadata> {
        self.vault.put_secret(&grant.op.0, kind, value)
    }

    pub(crate) fn rotate_secret(
        &self,
        grant: &Authorized<WriteSecret>,
        value: &SecretValue,
        grace: Option<Duration>,
    ) -> Result<SecretMetadata> {
        self.vault.rotate_secret(&grant.op.0, value, grace)
    }

    pub(crate) fn describe_secret(
        &self,
        grant: &Authorized<ReadMetadata>,
        id: &SecretId,
    ) -> Result<SecretMetadata> {
        if id.tenant != grant.op.0 {
            return Err(crate::Error::NotFound);
        }
        self.vault.describe_secret(id)
    }

    pub(crate) fn list_secrets(
        &self,
        grant: &Authorized<ReadMetadata>,
        environment: Option<Environment>,
    ) -> Result<Vec<SecretMetadata>> {
        self.vault.list_secrets(&grant.op.0, environment)
    }

    pub(crate) fn delete_secret(&self, grant: &Authorized<DeleteSecret>) -> Result<()> {
        self.vault.delete_secret(&grant.op.0)
    }

    pub(crate) fn erase_tenant(&self, grant: &Authorized<EraseTenant>) -> Result<ErasureReceipt> {
        self.vault.erase_tenant(&grant.op.0)
    }

    pub(crate) fn open_secret(
        &self,
        grant: &Authorized<LeaseOp>,
        version: Option<u64>,
    ) -> Result<(SecretValue, u64)> {
        self.vault.open_secret(&grant.op.0, version)
    }

    pub(crate) fn check_leasable(&self, grant: &Authorized<LeaseOp>, version: u64) -> Result<()> {
        self.vault.check_leasable(&grant.op.0, version)
    }

    pub(crate) fn transit_encrypt(
        &self,
        grant: &Authorized<EncryptOp>,
        plaintext: &[u8],
    ) -> Result<Envelope> {
        self.vault
            .transit_encrypt(&grant.op.0, grant.op.1, plaintext, grant.create_tenant_keys)
    }

    pub(crate) fn transit_decrypt(
        &self,
        grant: &Authorized<DecryptOp>,
        envelope: &[u8],
    ) -> Result<SecretValue> {
        self.vault
            .transit_decrypt(&grant.op.0, grant.op.1, envelope)
    }

    pub(crate) fn transit_rewrap(
        &self,
        grant: &Authorized<RewrapOp>,
        envelope: &[u8],
    ) -> Result<Envelope> {
        self.vault.transit_rewrap(&grant.op.0, grant.op.1, envelope)
    }

    pub(crate) fn rotate_tenant_key(&self, grant: &Authorized<TenantKeysOp>) -> Result<TenantKeys> {
        self.vault.rotate_tenant_key(&grant.op.0)
    }

    pub(crate) fn retire_tenant_keys(
        &self,
        grant: &Authorized<TenantKeysOp>,
        below: u32,
    ) -> Result<TenantKeys> {
        self.vault.retire_tenant_keys(&grant.op.0, below)
    }

    pub(crate) fn tenant_keys(&self, grant: &Authorized<ReadMetadata>) -> Result<TenantKeys> {
        self.vault.tenant_keys(&grant.op.0)
    }

    /// The daemon's own grace sweep, not a request: no caller to authorise.
    pub(crate) fn sweep_candidates(&self) -> Result<Vec<SweepItem>> {
        self.vault.sweep_candidates(crate::vault::now_unix())
    }

    /// The sweep's disabling of one secret's expired versions.
    pub(crate) fn disable_expired(&self, id: &SecretId) -> Result<Vec<u64>> {
        self.vault.disable_expired(id, crate::vault::now_unix())
    }

    /// The daemon's own rewrap pass: tenants queued after an unseal.
    pub(crate) fn queue_stale_tenants(&self) -> Result<usize> {
        self.vault.queue_stale_tenants()
    }

    /// The daemon's own rewrap pass: the next queued tenant.
    pub(crate) fn rewrap_step(&self) -> Result<Option<(TenantId, usize)>> {
        self.vault.rewrap_step()
    }
}
