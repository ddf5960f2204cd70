//! Administration, for `vaultctl` and operators' tools: every `vault.v1.Admin` call,
//! with shares and secret values sealed to the session. Answers are the API's own
//! messages; none carries a secret's plaintext.

use vault_crypto::SecretValue;
use vault_crypto::session::{Direction, SessionAad, op};
use vault_crypto::shamir::Share;
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

/// Where an unseal attempt stands.
pub type UnsealProgress = v1::UnsealResponse;

fn seal_shares(
    attempt: &SessionAttempt,
    operation: &str,
    shares: &[Share],
) -> Result<Vec<v1::SealedPayload>, Error> {
    let sealed = attempt
        .session
        .key
        .seal_shares(operation, Direction::ToDaemon, shares)
        .map_err(|source| Error::LocalCrypto {
            doing: "seal the shares to its session",
            source,
        })?;
    Ok(sealed
        .into_iter()
        .map(|envelope| v1::SealedPayload { envelope })
        .collect())
}

fn open_shares(
    attempt: &SessionAttempt,
    operation: &str,
    sealed: &[v1::SealedPayload],
) -> Result<Vec<Share>, Error> {
    let envelopes = sealed.iter().map(|p| p.envelope.as_slice());
    attempt
        .session
        .key
        .open_shares(operation, Direction::ToClient, envelopes)
        .map_err(|source| Error::SealedAnswer {
            what: "the shares",
            source,
        })
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

fn admin<S>(attempt: &Attempt<S>) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(attempt.channel.clone())
}

fn session_id(attempt: &SessionAttempt) -> String {
    attempt.session.id.clone()
}

impl Client {
    /// Seal state, share-set parameters, unseal progress and the audit public key.
    pub async fn status(&self) -> Result<v1::StatusResponse, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(admin(&a).status(v1::StatusRequest {}).await?.into_inner())
            })
            .await
    }

    /// Initialises an empty vault: `shares` shares, any `threshold` of which unseal it.
    /// The shares are returned once and never stored by vaultd.
    pub async fn init(&self, threshold: u32, shares: u32) -> Result<Vec<Share>, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                let answer = admin(&a)
                    .init(v1::InitRequest {
                        session_id: session_id(&a),
                        threshold,
                        share_count: shares,
                    })
                    .await?
                    .into_inner();
                Ok(open_shares(&a, op::INIT, &answer.shares)?)
            })
            .await
    }

    /// Submits one share. `nonce` is the attempt's nonce from the previous answer (or
    /// [`Client::status`]); `None` for the first share.
    pub async fn unseal(
        &self,
        share: &Share,
        nonce: Option<&str>,
    ) -> Result<UnsealProgress, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                let mut sealed = seal_shares(&a, op::UNSEAL, std::slice::from_ref(share))?;
                Ok(admin(&a)
                    .unseal(v1::UnsealRequest {
                        session_id: session_id(&a),
                        share: sealed.pop(),
                        nonce: nonce.unwrap_or_default().to_owned(),
                        reset: false,
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Discards the unseal attempt in progress.
    pub async fn unseal_reset(&self) -> Result<(), Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                admin(&a)
                    .unseal(v1::UnsealRequest {
                        reset: true,
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            })
            .await
    }

    /// Seals: vaultd wipes every key and session and revokes every lease.
    pub async fn seal(&self) -> Result<(), Error> {
        self.seal_with(false).await
    }

    /// Seals every node sharing the database of the node that answers: that node at
    /// once, the others as they read the cluster's change log (within a second).
    pub async fn seal_cluster(&self) -> Result<(), Error> {
        self.seal_with(true).await
    }

    async fn seal_with(&self, cluster: bool) -> Result<(), Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                admin(&a).seal(v1::SealRequest { cluster }).await?;
                Ok(())
            })
            .await
    }

    /// Makes a new share set, given a quorum of current shares, and returns it. The
    /// set is pending until [`Client::verify_rekey`] is given a quorum of it; until
    /// then the current shares keep working.
    pub async fn rekey(
        &self,
        current: &[Share],
        threshold: u32,
        shares: u32,
    ) -> Result<Vec<Share>, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                let answer = admin(&a)
                    .rekey(v1::RekeyRequest {
                        session_id: session_id(&a),
                        current_shares: seal_shares(&a, op::REKEY, current)?,
                        threshold,
                        share_count: shares,
                    })
                    .await?
                    .into_inner();
                Ok(open_shares(&a, op::REKEY_NEW, &answer.shares)?)
            })
            .await
    }

    /// Puts the pending share set in force, given a quorum of its shares; returns its
    /// generation. From then on the old shares are refused.
    pub async fn verify_rekey(&self, new: &[Share]) -> Result<v1::VerifyRekeyResponse, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .verify_rekey(v1::VerifyRekeyRequest {
                        session_id: session_id(&a),
                        new_shares: seal_shares(&a, op::VERIFY_REKEY, new)?,
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Rotates the root key, given a quorum of shares. Returns the new version.
    pub async fn rotate_root_key(&self, shares: &[Share]) -> Result<u32, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .rotate_root_key(v1::RotateRootKeyRequest {
                        session_id: session_id(&a),
                        shares: seal_shares(&a, op::ROTATE_ROOT_KEY, shares)?,
                    })
                    .await?
                    .into_inner()
                    .root_version)
            })
            .await
    }

    /// Starts a ceremony in which custodians submit their shares one at a time
    /// ([`Client::submit_ceremony_share`]). For a rekey, `custodians` are
    /// `(name, age1… key)` pairs, one new share each, and `threshold` the new set's.
    pub async fn start_ceremony(
        &self,
        kind: v1::CeremonyKind,
        threshold: u32,
        custodians: &[(String, String)],
    ) -> Result<v1::Ceremony, Error> {
        let custodians: Vec<v1::CustodianKey> = custodians
            .iter()
            .map(|(name, recipient)| v1::CustodianKey {
                name: name.clone(),
                recipient: recipient.clone(),
            })
            .collect();
        self.inner
            .endpoints
            .call(Retry::Once, |a| {
                let custodians = custodians.clone();
                async move {
                    Ok(admin(&a)
                        .start_ceremony(v1::StartCeremonyRequest {
                            kind: kind as i32,
                            threshold,
                            custodians,
                        })
                        .await?
                        .into_inner())
                }
            })
            .await
    }

    /// Submits one custodian's share to the ceremony named by `nonce` (from
    /// [`Client::ceremony`]). The share that reaches the threshold runs the ceremony,
    /// and the answer says what it did.
    pub async fn submit_ceremony_share(
        &self,
        share: &Share,
        nonce: &str,
    ) -> Result<v1::CeremonyProgress, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                let mut sealed = seal_shares(&a, op::CEREMONY_SHARE, std::slice::from_ref(share))?;
                Ok(admin(&a)
                    .submit_ceremony_share(v1::SubmitCeremonyShareRequest {
                        session_id: session_id(&a),
                        nonce: nonce.to_owned(),
                        share: sealed.pop(),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// The ceremony in progress, and a ceremony rekey's pending files (encrypted to
    /// their custodians) until the set is verified.
    pub async fn ceremony(&self) -> Result<v1::CeremonyProgress, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(admin(&a)
                    .get_ceremony(v1::GetCeremonyRequest {})
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Discards the ceremony in progress, wiping the shares submitted to it.
    pub async fn cancel_ceremony(&self) -> Result<v1::Ceremony, Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .cancel_ceremony(v1::CancelCeremonyRequest {})
                    .await?
                    .into_inner()
                    .cancelled
                    .unwrap_or_default())
            })
            .await
    }

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
