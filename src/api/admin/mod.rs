//! `vault.v1.Admin`: lifecycle, write-only secrets, tenants, leases and policy.
//! No handler returns a secret's plaintext; shares and values travel sealed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tonic::{Request, Response, Status};
use vault_crypto::session::op;
use vault_proto::v1::{self, admin_server::Admin};

mod leases;
mod payload;
mod policy;
mod snapshot;

use payload::{metadata, open_value, status_response, tenant_keys};

use super::{ApiError, Call, Shared, Unrecorded, environment, secret_id};
use crate::authz::{
    DeleteSecret, EraseTenant, PoliciesOp, ReadLeasesOp, ReadMetadata, RevokeLeasesOp, StatusOp,
    TenantKeysOp, WriteSecret,
};
use crate::names::{SecretKind, TenantId};

/// The admin service.
pub(crate) struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// The request's tenant, validated and named in its record.
fn tenant(call: &mut Call, text: &str) -> Result<TenantId, ApiError> {
    let tenant = TenantId::new(text)?;
    call.event.tenant = Some(tenant.to_string());
    Ok(tenant)
}

macro_rules! permit {
    ($self:ident, $call:ident, $op:expr) => {
        match $self.shared.policies.permit(&$call.caller, $op) {
            Ok(grant) => {
                $call.allowed_by(&grant);
                Ok(grant)
            }
            Err(denied) => Err(ApiError::Denied(denied)),
        }
    };
}

// After the macro, which they use.
mod apikeys;
mod audit_search;
mod breakglass;
mod ceremony;
mod export;
mod seal;

pub(crate) use breakglass::status as breakglass_status;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let mut call = self.shared.call("admin.status", &request)?;
        let result = permit!(self, call, StatusOp).and_then(|grant| {
            let (status, audit_key) = self.shared.custody.status(&grant)?;
            let mut status = status_response(&status);
            if let Some(key) = audit_key {
                status.audit_public_key = vault_crypto::hex::encode(&key).to_string();
            }
            payload::alerts_into(&mut status, &self.shared.alerts);
            Ok(status)
        });
        self.shared.finish(call, result).await
    }

    async fn init(
        &self,
        request: Request<v1::InitRequest>,
    ) -> Result<Response<v1::InitResponse>, Status> {
        seal::init(self, request).await
    }

    async fn unseal(
        &self,
        request: Request<v1::UnsealRequest>,
    ) -> Result<Response<v1::UnsealResponse>, Status> {
        seal::unseal(self, request).await
    }

    async fn seal(
        &self,
        request: Request<v1::SealRequest>,
    ) -> Result<Response<v1::SealResponse>, Status> {
        seal::seal(self, request).await
    }

    async fn rekey(
        &self,
        request: Request<v1::RekeyRequest>,
    ) -> Result<Response<v1::RekeyResponse>, Status> {
        seal::rekey(self, request).await
    }

    async fn verify_rekey(
        &self,
        request: Request<v1::VerifyRekeyRequest>,
    ) -> Result<Response<v1::VerifyRekeyResponse>, Status> {
        seal::verify_rekey(self, request).await
    }

    async fn rotate_root_key(
        &self,
        request: Request<v1::RotateRootKeyRequest>,
    ) -> Result<Response<v1::RotateRootKeyResponse>, Status> {
        seal::rotate_root_key(self, request).await
    }

    async fn join_cluster(
        &self,
        request: Request<v1::JoinClusterRequest>,
    ) -> Result<Response<v1::JoinClusterResponse>, Status> {
        seal::join_cluster(self, request).await
    }

    async fn start_ceremony(
        &self,
        request: Request<v1::StartCeremonyRequest>,
    ) -> Result<Response<v1::Ceremony>, Status> {
        ceremony::start(self, request).await
    }

    async fn submit_ceremony_share(
        &self,
        request: Request<v1::SubmitCeremonyShareRequest>,
    ) -> Result<Response<v1::CeremonyProgress>, Status> {
        ceremony::submit(self, request).await
    }

    async fn get_ceremony(
        &self,
        request: Request<v1::GetCeremonyRequest>,
    ) -> Result<Response<v1::CeremonyProgress>, Status> {
        ceremony::get(self, request).await
    }

    async fn cancel_ceremony(
        &self,
        request: Request<v1::CancelCeremonyRequest>,
    ) -> Result<Response<v1::CancelCeremonyResponse>, Status> {
        ceremony::cancel(self, request).await
    }

    async fn put_secret(
        &self,
        request: Request<v1::PutSecretRequest>,
    ) -> Result<Response<v1::SecretMetadata>, Status> {
        let mut call = self.shared.call("admin.put_secret", &request)?;
        let r = request.get_ref();
        let prepared = secret_id(r.secret.as_ref()).and_then(|id| {
            call.secret(&id);
            let kind = match v1::SecretKind::try_from(r.kind) {
                Ok(v1::SecretKind::Byok) => SecretKind::Byok,
                Ok(v1::SecretKind::System) => SecretKind::System,
                _ => {
                    return Err(ApiError::Invalid(
                        "kind must be SECRET_KIND_BYOK or SECRET_KIND_SYSTEM",
                    ));
                }
            };
            let grant = permit!(self, call, WriteSecret(id.clone()))?;
            let session = self.shared.session(&call, &r.session_id)?;
            let value = open_value(&session, op::PUT_SECRET, &id, r.value.as_ref())?;
            Ok((grant, kind, value))
        });
        self.shared
            .apply(
                Unrecorded::Refuse,
                call,
                prepared,
                |shared, (grant, kind, value), event| {
                    let stored = shared.custody.put_secret(&grant, kind, &value)?;
                    event.version = Some(stored.current_version);
                    Ok(metadata(&stored))
                },
            )
            .await
    }

    async fn rotate_secret(
        &self,
        request: Request<v1::RotateSecretRequest>,
    ) -> Result<Response<v1::SecretMetadata>, Status> {
        let mut call = self.shared.call("admin.rotate_secret", &request)?;
        let r = request.get_ref();
        let prepared = secret_id(r.secret.as_ref()).and_then(|id| {
            call.secret(&id);
            let grant = permit!(self, call, WriteSecret(id.clone()))?;
            let session = self.shared.session(&call, &r.session_id)?;
            let value = open_value(&session, op::ROTATE_SECRET, &id, r.value.as_ref())?;
            Ok((grant, value))
        });
        let grace = r.grace_seconds.map(Duration::from_secs);
        self.shared
            .apply(
                Unrecorded::Refuse,
                call,
                prepared,
                move |shared, (grant, value), event| {
                    let stored = shared.custody.rotate_secret(&grant, &value, grace)?;
                    event.version = Some(stored.current_version);
                    Ok(metadata(&stored))
                },
            )
            .await
    }

    async fn describe_secret(
        &self,
        request: Request<v1::DescribeSecretRequest>,
    ) -> Result<Response<v1::SecretMetadata>, Status> {
        let mut call = self.shared.call("admin.describe_secret", &request)?;
        let result = secret_id(request.get_ref().secret.as_ref()).and_then(|id| {
            call.secret(&id);
            let grant = permit!(self, call, ReadMetadata(id.tenant.clone()))?;
            Ok(metadata(&self.shared.custody.describe_secret(&grant, &id)?))
        });
        self.shared.finish(call, result).await
    }

    async fn list_secrets(
        &self,
        request: Request<v1::ListSecretsRequest>,
    ) -> Result<Response<v1::ListSecretsResponse>, Status> {
        let mut call = self.shared.call("admin.list_secrets", &request)?;
        let r = request.get_ref();
        let result = TenantId::new(&r.tenant)
            .map_err(ApiError::from)
            .and_then(|tenant| {
                call.event.tenant = Some(tenant.to_string());
                let env = match r.environment {
                    0 => None,
                    e => Some(environment(e)?),
                };
                let grant = permit!(self, call, ReadMetadata(tenant))?;
                let secrets = self.shared.custody.list_secrets(&grant, env)?;
                Ok(v1::ListSecretsResponse {
                    secrets: secrets.iter().map(metadata).collect(),
                })
            });
        self.shared.finish(call, result).await
    }

    async fn delete_secret(
        &self,
        request: Request<v1::DeleteSecretRequest>,
    ) -> Result<Response<v1::DeleteSecretResponse>, Status> {
        let mut call = self.shared.call("admin.delete_secret", &request)?;
        let prepared = secret_id(request.get_ref().secret.as_ref()).and_then(|id| {
            call.secret(&id);
            permit!(self, call, DeleteSecret(id))
        });
        self.shared
            .apply(Unrecorded::Refuse, call, prepared, |shared, grant, _| {
                shared.custody.delete_secret(&grant)?;
                Ok(v1::DeleteSecretResponse {})
            })
            .await
    }

    async fn erase_tenant(
        &self,
        request: Request<v1::EraseTenantRequest>,
    ) -> Result<Response<v1::EraseTenantResponse>, Status> {
        let mut call = self.shared.call("admin.erase_tenant", &request)?;
        let r = request.get_ref();
        let prepared = TenantId::new(&r.tenant)
            .map_err(ApiError::from)
            .and_then(|tenant| {
                call.event.tenant = Some(tenant.to_string());
                if r.confirm != r.tenant {
                    return Err(ApiError::Invalid(
                        "confirm must repeat the tenant id exactly",
                    ));
                }
                permit!(self, call, EraseTenant(tenant))
            });
        self.shared
            .apply(
                Unrecorded::Refuse,
                call,
                prepared,
                |shared, grant, event| {
                    let receipt = shared.custody.erase_tenant(&grant)?;
                    let versions: Vec<String> =
                        receipt.key_versions.iter().map(u32::to_string).collect();
                    event
                        .detail
                        .insert("key_versions".into(), versions.join(","));
                    event
                        .detail
                        .insert("secrets_erased".into(), receipt.secrets_erased.to_string());
                    Ok(v1::EraseTenantResponse {
                        tenant: receipt.tenant.to_string(),
                        key_versions: receipt.key_versions,
                        secrets_erased: receipt.secrets_erased as u64,
                        erased_unix: receipt.erased_unix,
                    })
                },
            )
            .await
    }

    async fn rotate_tenant_key(
        &self,
        request: Request<v1::RotateTenantKeyRequest>,
    ) -> Result<Response<v1::TenantKeys>, Status> {
        let mut call = self.shared.call("admin.rotate_tenant_key", &request)?;
        let prepared = tenant(&mut call, &request.get_ref().tenant)
            .and_then(|tenant| permit!(self, call, TenantKeysOp(tenant)));
        self.shared
            .apply(
                Unrecorded::Refuse,
                call,
                prepared,
                |shared, grant, event| {
                    let keys = shared.custody.rotate_tenant_key(&grant)?;
                    event
                        .detail
                        .insert("key_version".into(), keys.current.to_string());
                    Ok(tenant_keys(&keys))
                },
            )
            .await
    }

    async fn describe_tenant_keys(
        &self,
        request: Request<v1::DescribeTenantKeysRequest>,
    ) -> Result<Response<v1::TenantKeys>, Status> {
        let mut call = self.shared.call("admin.describe_tenant_keys", &request)?;
        let result = match tenant(&mut call, &request.get_ref().tenant)
            .and_then(|tenant| permit!(self, call, ReadMetadata(tenant)))
        {
            Ok(grant) => {
                self.shared
                    .blocking(&mut call, move |shared, _| {
                        Ok(tenant_keys(&shared.custody.tenant_keys(&grant)?))
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        self.shared.finish(call, result).await
    }

    async fn retire_tenant_keys(
        &self,
        request: Request<v1::RetireTenantKeysRequest>,
    ) -> Result<Response<v1::TenantKeys>, Status> {
        let mut call = self.shared.call("admin.retire_tenant_keys", &request)?;
        let r = request.get_ref();
        let below = r.below_version;
        let prepared = tenant(&mut call, &r.tenant).and_then(|tenant| {
            call.event
                .detail
                .insert("below_version".into(), below.to_string());
            permit!(self, call, TenantKeysOp(tenant))
        });
        self.shared
            .apply(
                Unrecorded::Refuse,
                call,
                prepared,
                move |shared, grant, _| {
                    Ok(tenant_keys(
                        &shared.custody.retire_tenant_keys(&grant, below)?,
                    ))
                },
            )
            .await
    }

    async fn list_leases(
        &self,
        request: Request<v1::ListLeasesRequest>,
    ) -> Result<Response<v1::ListLeasesResponse>, Status> {
        let mut call = self.shared.call("admin.list_leases", &request)?;
        let r = request.get_ref();
        let result = permit!(self, call, ReadLeasesOp).map(|grant| v1::ListLeasesResponse {
            leases: self
                .shared
                .custody
                .list_leases(&grant, |l| {
                    r.tenant
                        .as_deref()
                        .is_none_or(|t| l.secret.tenant.as_str() == t)
                        && r.identity
                            .as_deref()
                            .is_none_or(|i| l.identity.as_str() == i)
                })
                .iter()
                .map(leases::info)
                .collect(),
        });
        self.shared.finish(call, result).await
    }

    async fn revoke_leases(
        &self,
        request: Request<v1::RevokeLeasesRequest>,
    ) -> Result<Response<v1::RevokeLeasesResponse>, Status> {
        let mut call = self.shared.call("admin.revoke_leases", &request)?;
        // Validated before anything of it enters the record.
        let selector = leases::selector(request.get_ref().selector.as_ref());
        let permitted = selector.and_then(|selector| {
            call.event
                .detail
                .insert("selector".into(), selector.to_string());
            Ok((permit!(self, call, RevokeLeasesOp)?, selector))
        });
        // Revoking is the safe direction, like sealing: it takes effect without an
        // intent record, so a failing audit log cannot keep leases alive. Telling the
        // other nodes writes to the store, so it runs on the blocking pool.
        let result = match permitted {
            Ok((grant, selector)) => {
                self.shared
                    .blocking(&mut call, move |shared, call| {
                        let (revoked, announced) = shared.custody.revoke_leases(&grant, &selector);
                        call.event
                            .detail
                            .insert("leases_revoked".into(), revoked.to_string());
                        announced?;
                        Ok(v1::RevokeLeasesResponse {
                            revoked: revoked as u64,
                        })
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        self.shared.finish_committed(call, result).await
    }

    async fn reload_policies(
        &self,
        request: Request<v1::ReloadPoliciesRequest>,
    ) -> Result<Response<v1::ReloadPoliciesResponse>, Status> {
        let mut call = self.shared.call("admin.reload_policies", &request)?;
        let prepared = permit!(self, call, PoliciesOp);
        self.shared
            .apply(Unrecorded::Refuse, call, prepared, |shared, grant, _| {
                let (grants, denies, roles) =
                    shared.policies.reload(&grant).map_err(ApiError::Policy)?;
                Ok(v1::ReloadPoliciesResponse {
                    grants: grants as u32,
                    denies: denies as u32,
                    roles: roles as u32,
                })
            })
            .await
    }

    async fn reload(
        &self,
        request: Request<v1::ReloadRequest>,
    ) -> Result<Response<v1::ReloadResponse>, Status> {
        let mut call = self.shared.call("admin.reload", &request)?;
        let result = match permit!(self, call, PoliciesOp) {
            Ok(_) => match self.shared.reloader.get().and_then(Weak::upgrade) {
                Some(reloader) => {
                    self.shared.intent(&call).await?;
                    Ok(reloader.reload().await)
                }
                None => Err(ApiError::NotServing),
            },
            Err(e) => Err(e),
        };
        self.shared.finish(call, result).await
    }

    async fn issue_api_key(
        &self,
        request: Request<v1::IssueApiKeyRequest>,
    ) -> Result<Response<v1::IssueApiKeyResponse>, Status> {
        apikeys::issue(self, request).await
    }

    async fn rotate_api_key(
        &self,
        request: Request<v1::RotateApiKeyRequest>,
    ) -> Result<Response<v1::IssueApiKeyResponse>, Status> {
        apikeys::rotate(self, request).await
    }

    async fn revoke_api_key(
        &self,
        request: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<v1::ApiKeyInfo>, Status> {
        apikeys::revoke(self, request).await
    }

    async fn list_api_keys(
        &self,
        request: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        apikeys::list(self, request).await
    }

    async fn check_policy(
        &self,
        request: Request<v1::CheckPolicyRequest>,
    ) -> Result<Response<v1::CheckPolicyResponse>, Status> {
        let mut call = self.shared.call("admin.check_policy", &request)?;
        let result = permit!(self, call, PoliciesOp)
            .and_then(|grant| policy::check(&self.shared.policies, &grant, request.get_ref()));
        self.shared.finish(call, result).await
    }

    type SnapshotStream = snapshot::SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<v1::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        snapshot::serve(&self.shared, request).await
    }

    async fn request_break_glass(
        &self,
        request: Request<v1::RequestBreakGlassRequest>,
    ) -> Result<Response<v1::BreakGlassGrant>, Status> {
        breakglass::request(self, request).await
    }

    async fn approve_break_glass(
        &self,
        request: Request<v1::BreakGlassId>,
    ) -> Result<Response<v1::BreakGlassGrant>, Status> {
        breakglass::approve(self, request).await
    }

    async fn revoke_break_glass(
        &self,
        request: Request<v1::BreakGlassId>,
    ) -> Result<Response<v1::BreakGlassGrant>, Status> {
        breakglass::revoke(self, request).await
    }

    async fn list_break_glass(
        &self,
        request: Request<v1::ListBreakGlassRequest>,
    ) -> Result<Response<v1::ListBreakGlassResponse>, Status> {
        breakglass::list(self, request).await
    }

    type ExportTenantStream = export::ExportStream;

    async fn export_tenant(
        &self,
        request: Request<v1::ExportTenantRequest>,
    ) -> Result<Response<Self::ExportTenantStream>, Status> {
        export::serve(&self.shared, request).await
    }

    type SearchAuditStream = audit_search::AuditStream;

    async fn search_audit(
        &self,
        request: Request<v1::SearchAuditRequest>,
    ) -> Result<Response<Self::SearchAuditStream>, Status> {
        audit_search::serve(&self.shared, request).await
    }
}
