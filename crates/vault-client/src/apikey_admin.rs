//! Administering platform API keys: issue, rotate, revoke, list (`vault.v1.Admin`).
//! A new key comes back sealed to the session and is opened into an [`ApiKeyText`];
//! it exists nowhere else, since vaultd keeps only a MAC of it.

use std::time::Duration;

use vault_crypto::clock::unix_seconds;
use vault_crypto::session::SessionAad;
use vault_proto::apikey;
use vault_proto::v1;
use vault_proto::v1::admin_client::AdminClient;
use zeroize::Zeroizing;

use crate::apikey::{ApiKeyRate, ApiKeySpec, ApiKeyText};
use crate::client::Client;
use crate::endpoints::{Retry, SessionAttempt};
use crate::environment::Environment;
use crate::error::Error;

fn admin(attempt: &SessionAttempt) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(attempt.channel.clone())
}

/// Opens the key of an Issue or Rotate answer, and checks that it is the key its
/// metadata names.
fn open_issued(
    attempt: &SessionAttempt,
    answer: v1::IssueApiKeyResponse,
) -> Result<(ApiKeyText, v1::ApiKeyInfo), Error> {
    let info = answer.info.ok_or(Error::Protocol(
        "the issued API key comes without its metadata",
    ))?;
    let sealed = answer
        .api_key
        .ok_or(Error::Protocol("the answer carries no API key"))?;
    let environment = Environment::from_proto(info.environment)
        .ok_or(Error::Protocol("the issued API key names no environment"))?;
    let aad = SessionAad::issued_api_key(&info.tenant, environment.as_str(), &info.key_id);
    let opened = attempt
        .session
        .key
        .open(&aad, &sealed.envelope)
        .map_err(|source| Error::SealedAnswer {
            what: "the issued API key",
            source,
        })?;
    let text = std::str::from_utf8(opened.expose_secret())
        .ok()
        .filter(|text| {
            apikey::parse(text).is_ok_and(|parsed| {
                parsed.id == info.key_id && parsed.environment as i32 == info.environment
            })
        })
        .ok_or(Error::Protocol(
            "the issued API key is not the key its metadata names",
        ))?;
    // Sized up front (a key is at most MAX_LEN, as it parsed): copied once, into the
    // buffer that wipes it.
    let mut key = Zeroizing::new(String::with_capacity(apikey::MAX_LEN));
    key.push_str(text);
    Ok((ApiKeyText::new(key), info))
}

fn limits(spec: &ApiKeySpec) -> (String, Option<v1::RateLimits>) {
    match &spec.rate {
        ApiKeyRate::DefaultTier => (String::new(), None),
        ApiKeyRate::Tier(name) => (name.clone(), None),
        ApiKeyRate::Limits {
            burst,
            per_minute,
            per_day,
        } => (
            String::new(),
            Some(v1::RateLimits {
                burst: *burst,
                per_minute: *per_minute,
                per_day: *per_day,
            }),
        ),
    }
}

impl Client {
    /// Issues a key as `spec` says. The key is returned this once: vaultd keeps only a
    /// MAC of it, and the metadata and hint it answers with hold nothing of its secret.
    pub async fn issue_api_key(
        &self,
        spec: &ApiKeySpec,
    ) -> Result<(ApiKeyText, v1::ApiKeyInfo), Error> {
        let (tier, limits) = limits(spec);
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| {
                let request = v1::IssueApiKeyRequest {
                    session_id: a.session.id.clone(),
                    tenant: spec.tenant.clone(),
                    environment: spec.environment.to_proto(),
                    scopes: spec.scopes.clone(),
                    tier: tier.clone(),
                    limits,
                    daily_quota: spec.daily_quota,
                    expires_unix: spec
                        .expires_at
                        .map(|at| i64::try_from(unix_seconds(at)).unwrap_or(i64::MAX)),
                    label: spec.label.clone(),
                };
                async move {
                    let answer = admin(&a).issue_api_key(request).await?.into_inner();
                    Ok(open_issued(&a, answer)?)
                }
            })
            .await
    }

    /// Issues a successor to key `key_id`, with the same tenant, environment, scopes,
    /// limits and quota; the old key keeps verifying for `grace` (vaultd's default,
    /// 24 h, if `None`). The new key is returned this once.
    pub async fn rotate_api_key(
        &self,
        key_id: &str,
        grace: Option<Duration>,
    ) -> Result<(ApiKeyText, v1::ApiKeyInfo), Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                let answer = admin(&a)
                    .rotate_api_key(v1::RotateApiKeyRequest {
                        session_id: a.session.id.clone(),
                        key_id: key_id.to_owned(),
                        grace_seconds: grace.map(|g| g.as_secs()),
                    })
                    .await?
                    .into_inner();
                Ok(open_issued(&a, answer)?)
            })
            .await
    }

    /// Revokes key `key_id` at once: vaultd refuses it from now on and tells every
    /// verifier's revocation watch. This client's own cached verifications of it go
    /// first.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<v1::ApiKeyInfo, Error> {
        self.inner.api_keys.evict_key(key_id);
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                Ok(AdminClient::new(a.channel)
                    .revoke_api_key(v1::RevokeApiKeyRequest {
                        key_id: key_id.to_owned(),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// A tenant's keys, in one environment or both: metadata and hints, never a key.
    pub async fn list_api_keys(
        &self,
        tenant: &str,
        environment: Option<Environment>,
    ) -> Result<Vec<v1::ApiKeyInfo>, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(AdminClient::new(a.channel)
                    .list_api_keys(v1::ListApiKeysRequest {
                        tenant: tenant.to_owned(),
                        environment: environment.map_or(0, Environment::to_proto),
                    })
                    .await?
                    .into_inner()
                    .keys)
            })
            .await
    }
}
