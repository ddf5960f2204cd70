//! Policy glue: the only place an [`Authorized`] value is made. Every method of
//! [`Custody`](crate::custody::Custody), the only way request handlers reach the vault,
//! sessions and leases, takes the `Authorized` proof for exactly the operation and
//! target it performs, so a handler cannot act around the policy, nor reuse one
//! decision for another secret. Every request, even one any caller may make (opening a
//! session, revoking its own lease), obtains its proof here first: deny by default,
//! by construction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use vault_policy::{
    Decision, Operation, Permission, PermissionRequest, PolicyError, PolicySet, Request,
};

use crate::breakglass::BreakGlass;
use crate::identity::{Identity, IdentityError};
use crate::names::{Environment, SecretId, TenantId};

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

/// What the transport attaches to every request: who the peer is.
#[derive(Debug, Clone)]
pub(crate) struct Peer(pub(crate) Result<Caller, IdentityError>);

/// Permissions the local socket gives, whatever the policies say.
const LOCAL_PERMISSIONS: [Permission; 3] =
    [Permission::Status, Permission::Unseal, Permission::Seal];

/// An admin operation and its target.
pub(crate) trait AdminOp {
    const PERMISSION: Permission;
    fn tenant(&self) -> Option<&TenantId> {
        None
    }
    /// With no tenant: whether the operation is about some tenant not known yet (a
    /// lookup before the target's tenant is read), rather than about none.
    fn any_tenant(&self) -> bool {
        false
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
    SnapshotOp => SnapshotSave,
    AuditReadOp => AuditRead,
    ApproveBreakGlassOp => BreakglassApprove,
    JoinOp => NodeJoin,
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
/// Export a tenant's metadata and audit records.
pub(crate) struct ExportTenant(pub(crate) TenantId);

impl AdminOp for ExportTenant {
    const PERMISSION: Permission = Permission::TenantsExport;
    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.0)
    }
}

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

/// Issue or rotate a tenant's API keys (`None`: before the key's tenant is known).
pub(crate) struct IssueApiKeys(pub(crate) Option<TenantId>);
/// Revoke a tenant's API keys (`None`: before the key's tenant is known).
pub(crate) struct RevokeApiKeys(pub(crate) Option<TenantId>);

impl AdminOp for IssueApiKeys {
    const PERMISSION: Permission = Permission::ApiKeysIssue;
    fn tenant(&self) -> Option<&TenantId> {
        self.0.as_ref()
    }
    fn any_tenant(&self) -> bool {
        self.0.is_none()
    }
}
impl AdminOp for RevokeApiKeys {
    const PERMISSION: Permission = Permission::ApiKeysRevoke;
    fn tenant(&self) -> Option<&TenantId> {
        self.0.as_ref()
    }
    fn any_tenant(&self) -> bool {
        self.0.is_none()
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
/// Verify an API key of a tenant and environment.
pub(crate) struct VerifyApiKeyOp(pub(crate) TenantId, pub(crate) Environment);

impl BrokerOp for VerifyApiKeyOp {
    const OPERATION: Operation = Operation::ApiKeysVerify;
    fn tenant(&self) -> &TenantId {
        &self.0
    }
    fn environment(&self) -> Environment {
        self.1
    }
}

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

/// Open and use the caller's own lease sessions: any caller with an identity may.
pub(crate) struct SessionsOp;
/// Look up API keys to verify them: a caller some grant lets verify keys (of some
/// tenant) may; which tenant's keys it may verify is decided per key.
pub(crate) struct VerifierOp;
/// Use, renew, revoke or watch the caller's own leases: any remote caller may.
pub(crate) struct OwnLeasesOp;
/// Ask for a break-glass grant: any remote caller may (bounded per identity).
pub(crate) struct RequestBreakGlassOp;
/// See or end the caller's own break-glass grants: any remote caller may.
pub(crate) struct OwnBreakGlassOp;

/// Proof that the policies allowed the caller `op`. Only this module makes one.
pub(crate) struct Authorized<O> {
    op: O,
    /// Who was allowed.
    identity: Identity,
    /// Id of the grant or role that allowed it (`None` for the local socket).
    pub(crate) rule: Option<String>,
    /// The grant's `max_ttl`.
    pub(crate) max_ttl: Option<Duration>,
    /// The grant's `max_active_leases`.
    pub(crate) max_active_leases: Option<u32>,
    /// Whether the grant lets transit create a tenant's key on first use.
    pub(crate) create_tenant_keys: bool,
    /// The grant's request rates for its identity.
    pub(crate) rate: Option<vault_policy::Rate>,
    /// The break-glass grant that allowed it, when no policy did.
    pub(crate) breakglass: Option<String>,
    /// Whether the grant refuses requests at the highest anomaly level.
    pub(crate) throttle_anomalies: bool,
}

/// A refusal. Says which rule denied, never whether the target exists.
#[derive(Debug, Clone)]
pub(crate) struct Denied {
    pub(crate) action: &'static str,
    pub(crate) rule: Option<String>,
}

impl<O> Authorized<O> {
    /// What was allowed.
    pub(crate) fn op(&self) -> &O {
        &self.op
    }

    /// Who was allowed.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The proof of an operation the caller may make by being who it is.
    fn by_identity(op: O, identity: &Identity) -> Self {
        Self {
            op,
            identity: identity.clone(),
            rule: None,
            max_ttl: None,
            max_active_leases: None,
            create_tenant_keys: false,
            rate: None,
            breakglass: None,
            throttle_anomalies: false,
        }
    }
}

/// The loaded policy set; replaced whole on reload.
pub(crate) struct Policies {
    /// The directory: the configuration's `policy.dir`, which a reload may change.
    dir: RwLock<PathBuf>,
    set: RwLock<Arc<PolicySet>>,
    /// Active break-glass grants add permissions where the policies decide nothing.
    breakglass: Arc<BreakGlass>,
}

impl Policies {
    pub(crate) fn load(dir: &Path, breakglass: Arc<BreakGlass>) -> Result<Self, PolicyError> {
        Ok(Self {
            dir: RwLock::new(dir.to_path_buf()),
            set: RwLock::new(Arc::new(PolicySet::load_dir(dir)?)),
            breakglass,
        })
    }

    /// Loads the directory again, as a request allowed to: on any error the old set
    /// stays.
    pub(crate) fn reload(
        &self,
        _: &Authorized<PoliciesOp>,
    ) -> Result<(usize, usize, usize), PolicyError> {
        let dir = self.dir.read().unwrap_or_else(|p| p.into_inner()).clone();
        self.load_from(&dir)
    }

    /// Loads `dir` (the configuration's `policy.dir`, re-read) because the daemon
    /// reloads; from then on it is the directory. On any error nothing changes.
    pub(crate) fn reload_from(&self, dir: &Path) -> Result<(usize, usize, usize), PolicyError> {
        let counts = self.load_from(dir)?;
        *self.dir.write().unwrap_or_else(|p| p.into_inner()) = dir.to_path_buf();
        Ok(counts)
    }

    fn load_from(&self, dir: &Path) -> Result<(usize, usize, usize), PolicyError> {
        let set = PolicySet::load_dir(dir)?;
        let counts = set.counts();
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(counts)
    }

    /// The loaded set, for a caller allowed to inspect it (`CheckPolicy`).
    pub(crate) fn loaded(&self, _: &Authorized<PoliciesOp>) -> Arc<PolicySet> {
        self.current()
    }

    fn current(&self) -> Arc<PolicySet> {
        Arc::clone(&self.set.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn decide<O>(
        &self,
        op: O,
        identity: &Identity,
        decision: Decision,
        action: &'static str,
    ) -> Result<Authorized<O>, Denied> {
        let rule = decision.decided_by.map(|r| r.id);
        if !decision.allowed {
            return Err(Denied { action, rule });
        }
        Ok(Authorized {
            op,
            identity: identity.clone(),
            rule,
            max_ttl: decision.max_ttl,
            max_active_leases: decision.max_active_leases,
            create_tenant_keys: decision.create_tenant_keys,
            rate: decision.rate,
            breakglass: None,
            throttle_anomalies: decision.throttle_anomalies,
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
            Caller::Local(identity) => {
                if LOCAL_PERMISSIONS.contains(&O::PERMISSION) {
                    Ok(Authorized::by_identity(op, identity))
                } else {
                    Err(Denied { action, rule: None })
                }
            }
            Caller::Remote(identity) => {
                let decision = self.current().authorize(&PermissionRequest {
                    identity: identity.as_str(),
                    permission: O::PERMISSION,
                    tenant: op.tenant().map(TenantId::as_str),
                    any_tenant: op.any_tenant(),
                });
                // A break-glass grant fills in only where no rule decided: a deny
                // still wins.
                if !decision.allowed
                    && decision.decided_by.is_none()
                    && (op.tenant().is_some() || op.any_tenant())
                    && let Some(id) = self.breakglass.covering(
                        identity.as_str(),
                        O::PERMISSION,
                        op.tenant().map(TenantId::as_str),
                    )
                {
                    return Ok(Authorized {
                        rule: Some(format!("breakglass/{id}")),
                        breakglass: Some(id),
                        ..Authorized::by_identity(op, identity)
                    });
                }
                self.decide(op, identity, decision, action)
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
        self.decide(op, identity, decision, action)
    }

    /// The caller's own lease sessions: every caller with an identity may open and
    /// use them (sessions are bounded per identity and in total, and give nothing by
    /// themselves).
    pub(crate) fn sessions(&self, caller: &Caller) -> Authorized<SessionsOp> {
        Authorized::by_identity(SessionsOp, caller.identity())
    }

    /// A caller that some grant lets verify API keys: before a key's tenant is known,
    /// this tells such a caller (which may learn that a key id is unknown) from one
    /// that may learn nothing.
    pub(crate) fn verifier(&self, caller: &Caller) -> Result<Authorized<VerifierOp>, Denied> {
        let action = Operation::ApiKeysVerify.as_str();
        match caller {
            Caller::Remote(identity)
                if self
                    .current()
                    .grants_somewhere(identity.as_str(), Operation::ApiKeysVerify) =>
            {
                Ok(Authorized::by_identity(VerifierOp, identity))
            }
            _ => Err(Denied { action, rule: None }),
        }
    }

    /// Asking for a break-glass grant, and seeing or ending one's own: any remote
    /// caller (the local socket has no identity to grant to).
    pub(crate) fn breakglass_requester(
        &self,
        caller: &Caller,
    ) -> Result<(Authorized<RequestBreakGlassOp>, Authorized<OwnBreakGlassOp>), Denied> {
        match caller {
            Caller::Remote(identity) => Ok((
                Authorized::by_identity(RequestBreakGlassOp, identity),
                Authorized::by_identity(OwnBreakGlassOp, identity),
            )),
            Caller::Local(_) => Err(Denied {
                action: "breakglass",
                rule: None,
            }),
        }
    }

    /// The caller's own leases: a remote caller may renew, revoke and watch them. The
    /// local socket holds none.
    pub(crate) fn own_leases(&self, caller: &Caller) -> Result<Authorized<OwnLeasesOp>, Denied> {
        match caller {
            Caller::Remote(identity) => Ok(Authorized::by_identity(OwnLeasesOp, identity)),
            Caller::Local(_) => Err(Denied {
                action: "leases",
                rule: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every permission of the policy language guards some operation: none is inert.
    #[test]
    fn every_permission_guards_an_operation() {
        let guarded = [
            StatusOp::PERMISSION,
            UnsealOp::PERMISSION,
            SealOp::PERMISSION,
            RekeyOp::PERMISSION,
            RotateRootOp::PERMISSION,
            ReadLeasesOp::PERMISSION,
            RevokeLeasesOp::PERMISSION,
            PoliciesOp::PERMISSION,
            SnapshotOp::PERMISSION,
            AuditReadOp::PERMISSION,
            ApproveBreakGlassOp::PERMISSION,
            JoinOp::PERMISSION,
            WriteSecret::PERMISSION,
            ReadMetadata::PERMISSION,
            DeleteSecret::PERMISSION,
            EraseTenant::PERMISSION,
            TenantKeysOp::PERMISSION,
            ExportTenant::PERMISSION,
            IssueApiKeys::PERMISSION,
            RevokeApiKeys::PERMISSION,
        ];
        for name in Permission::names() {
            let permission = Permission::parse(name).unwrap();
            assert!(guarded.contains(&permission), "{name} guards no operation");
        }
    }
}
