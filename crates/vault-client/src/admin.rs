//! Administration of what the vault holds, for `vaultctl` and operators' tools:
//! secrets (values sealed to the session), tenants' keys, leases, policies, reload and
//! the audit search. Answers are the API's own messages; none carries a secret's
//! plaintext. The seal lifecycle is in `lifecycle`.

use vault_crypto::SecretValue;
use vault_crypto::session::{SessionAad, op};
use vault_proto::v1;
use vault_proto::v1::admin_client::AdminClient;

use crate::client::Client;
use crate::endpoints::{Attempt, Retry, SessionAttempt};
use crate::environment::Environment;
use crate::error::Error;

/// Names one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPath {
    /// The tenant.
    pub tenant: String,
    /// The environment.
    pub environment: Environment,
    /// The secret's name, e.g. `byok/openai`.
    pub name: String,
}

impl SecretPath {
    fn to_proto(&self) -> v1::SecretRef {
        v1::SecretRef {
            tenant: self.tenant.clone(),
            environment: self.environment.to_proto(),
            name: self.name.clone(),
        }
    }
}

fn seal_value(
    attempt: &SessionAttempt,
    operation: &str,
    secret: &SecretPath,
    value: &SecretValue,
) -> Result<v1::SealedPayload, Error> {
    let aad = SessionAad::secret_value(
        operation,
        &secret.tenant,
        secret.environment.as_str(),
        &secret.name,
    );
    let envelope = attempt
        .session
        .key
        .seal(&aad, value.expose_secret())
        .map_err(|source| Error::LocalCrypto {
            doing: "seal the value to its session",
            source,
        })?;
    Ok(v1::SealedPayload { envelope })
}

pub(crate) fn admin<S>(attempt: &Attempt<S>) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(attempt.channel.clone())
}

pub(crate) fn session_id(attempt: &SessionAttempt) -> String {
    attempt.session.id.clone()
}

impl Client {
    /// The node's audit records matching `filters`, oldest first, each line as written;
    /// with `filters.follow`, then new ones as they are written until the stream is
    /// dropped. Needs `audit.read`.
    pub async fn search_audit(
        &self,
        filters: v1::SearchAuditRequest,
    ) -> Result<tonic::Streaming<v1::AuditEntry>, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| {
                let filters = filters.clone();
                async move { Ok(admin(&a).search_audit(filters).await?.into_inner()) }
            })
            .await
    }

    /// Stores a new secret (version 1).
    pub async fn put_secret(
        &self,
        secret: &SecretPath,
        kind: v1::SecretKind,
        value: &SecretValue,
    ) -> Result<v1::SecretMetadata, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .put_secret(v1::PutSecretRequest {
                        session_id: session_id(&a),
                        secret: Some(secret.to_proto()),
                        kind: kind as i32,
                        value: Some(seal_value(&a, op::PUT_SECRET, secret, value)?),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Stores a new current version; the previous one stays leasable for `grace`
    /// (vaultd's default, 24 h, if `None`).
    pub async fn rotate_secret(
        &self,
        secret: &SecretPath,
        value: &SecretValue,
        grace: Option<std::time::Duration>,
    ) -> Result<v1::SecretMetadata, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .rotate_secret(v1::RotateSecretRequest {
                        session_id: session_id(&a),
                        secret: Some(secret.to_proto()),
                        value: Some(seal_value(&a, op::ROTATE_SECRET, secret, value)?),
                        grace_seconds: grace.map(|g| g.as_secs()),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// A secret's metadata: versions, states, hints, fingerprints. Never its value.
    pub async fn describe_secret(&self, secret: &SecretPath) -> Result<v1::SecretMetadata, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(admin(&a)
                    .describe_secret(v1::DescribeSecretRequest {
                        secret: Some(secret.to_proto()),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// A tenant's secrets' metadata, in one environment or both.
    pub async fn list_secrets(
        &self,
        tenant: &str,
        environment: Option<Environment>,
    ) -> Result<Vec<v1::SecretMetadata>, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(admin(&a)
                    .list_secrets(v1::ListSecretsRequest {
                        tenant: tenant.to_owned(),
                        environment: environment.map_or(0, Environment::to_proto),
                    })
                    .await?
                    .into_inner()
                    .secrets)
            })
            .await
    }

    /// Deletes a secret and its versions; its leases are revoked.
    pub async fn delete_secret(&self, secret: &SecretPath) -> Result<(), Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                admin(&a)
                    .delete_secret(v1::DeleteSecretRequest {
                        secret: Some(secret.to_proto()),
                    })
                    .await?;
                Ok(())
            })
            .await
    }

    /// Crypto-shreds a tenant; `confirm` must repeat the tenant id.
    pub async fn erase_tenant(
        &self,
        tenant: &str,
        confirm: &str,
    ) -> Result<v1::EraseTenantResponse, Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .erase_tenant(v1::EraseTenantRequest {
                        tenant: tenant.to_owned(),
                        confirm: confirm.to_owned(),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Rotates a tenant's key: a new current version; older versions keep decrypting
    /// and the tenant's secrets are rewrapped in the background.
    pub async fn rotate_tenant_key(&self, tenant: &str) -> Result<v1::TenantKeys, Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .rotate_tenant_key(v1::RotateTenantKeyRequest {
                        tenant: tenant.to_owned(),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// A tenant's key versions and how many secret versions each still seals.
    pub async fn describe_tenant_keys(&self, tenant: &str) -> Result<v1::TenantKeys, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(admin(&a)
                    .describe_tenant_keys(v1::DescribeTenantKeysRequest {
                        tenant: tenant.to_owned(),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Destroys a tenant's key versions below `below_version` (refused while a secret
    /// still uses one); transit envelopes under them become unreadable.
    pub async fn retire_tenant_keys(
        &self,
        tenant: &str,
        below_version: u32,
    ) -> Result<v1::TenantKeys, Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .retire_tenant_keys(v1::RetireTenantKeysRequest {
                        tenant: tenant.to_owned(),
                        below_version,
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Active leases, optionally of one tenant and/or one identity.
    pub async fn list_leases(
        &self,
        tenant: Option<&str>,
        identity: Option<&str>,
    ) -> Result<Vec<v1::LeaseInfo>, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(admin(&a)
                    .list_leases(v1::ListLeasesRequest {
                        tenant: tenant.map(str::to_owned),
                        identity: identity.map(str::to_owned),
                    })
                    .await?
                    .into_inner()
                    .leases)
            })
            .await
    }

    /// Revokes the leases `selector` names; returns how many ended.
    pub async fn revoke_leases(
        &self,
        selector: v1::revoke_leases_request::Selector,
    ) -> Result<u64, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| {
                let selector = selector.clone();
                async move {
                    Ok(admin(&a)
                        .revoke_leases(v1::RevokeLeasesRequest {
                            selector: Some(selector),
                        })
                        .await?
                        .into_inner()
                        .revoked)
                }
            })
            .await
    }

    /// Reloads the daemon's policy directory; a bad file keeps the previous set.
    pub async fn reload_policies(&self) -> Result<v1::ReloadPoliciesResponse, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(admin(&a)
                    .reload_policies(v1::ReloadPoliciesRequest {})
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Reloads the daemon as SIGHUP does, and says what each part did. Not retried:
    /// a reload that reached vaultd has taken effect.
    pub async fn reload(&self) -> Result<v1::ReloadResponse, Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                Ok(admin(&a).reload(v1::ReloadRequest {}).await?.into_inner())
            })
            .await
    }

    /// Explains how the daemon's loaded policies decide a request.
    pub async fn check_policy(
        &self,
        request: v1::CheckPolicyRequest,
    ) -> Result<v1::CheckPolicyResponse, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| {
                let request = request.clone();
                async move { Ok(admin(&a).check_policy(request).await?.into_inner()) }
            })
            .await
    }
}
