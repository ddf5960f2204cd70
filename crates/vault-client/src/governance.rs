//! Governance calls of `vault.v1.Admin`: break-glass grants (request, approve,
//! revoke, list) and tenant export. None needs a session: nothing secret crosses.

use std::time::Duration;

use vault_proto::v1;
use vault_proto::v1::admin_client::AdminClient;

use crate::client::Client;
use crate::endpoints::Retry;
use crate::error::Error;

/// What a break-glass request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassAsk {
    /// Admin permissions that act on one tenant, e.g. `secrets.read-metadata`.
    pub permissions: Vec<String>,
    /// Tenant ids or globs.
    pub tenants: Vec<String>,
    /// How long the grant lasts once approved.
    pub duration: Duration,
    /// Why; shown to approvers and recorded.
    pub reason: String,
}

impl Client {
    /// Asks for a break-glass grant; it is pending until approved.
    pub async fn request_break_glass(
        &self,
        ask: &BreakGlassAsk,
    ) -> Result<v1::BreakGlassGrant, Error> {
        let request = v1::RequestBreakGlassRequest {
            permissions: ask.permissions.clone(),
            tenants: ask.tenants.clone(),
            duration_seconds: ask.duration.as_secs(),
            reason: ask.reason.clone(),
        };
        self.inner
            .endpoints
            .call(Retry::Once, |a| {
                let request = request.clone();
                async move {
                    Ok(AdminClient::new(a.channel)
                        .request_break_glass(request)
                        .await?
                        .into_inner())
                }
            })
            .await
    }

    /// Approves grant `id` (needs `breakglass.approve`; never one's own).
    pub async fn approve_break_glass(&self, id: &str) -> Result<v1::BreakGlassGrant, Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                Ok(AdminClient::new(a.channel)
                    .approve_break_glass(v1::BreakGlassId { id: id.to_owned() })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Ends grant `id` now (an approver's, or one's own).
    pub async fn revoke_break_glass(&self, id: &str) -> Result<v1::BreakGlassGrant, Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                Ok(AdminClient::new(a.channel)
                    .revoke_break_glass(v1::BreakGlassId { id: id.to_owned() })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Break-glass grants, newest first: all for an approver, one's own otherwise.
    pub async fn list_break_glass(&self) -> Result<Vec<v1::BreakGlassGrant>, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(AdminClient::new(a.channel)
                    .list_break_glass(v1::ListBreakGlassRequest {})
                    .await?
                    .into_inner()
                    .grants)
            })
            .await
    }

    /// A tenant's export (JSON), as a stream of chunks to write out in order.
    pub async fn export_tenant(
        &self,
        tenant: &str,
    ) -> Result<tonic::Streaming<v1::ExportChunk>, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(AdminClient::new(a.channel)
                    .export_tenant(v1::ExportTenantRequest {
                        tenant: tenant.to_owned(),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }
}
