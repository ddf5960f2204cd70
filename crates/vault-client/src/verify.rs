//! Verifying platform API keys: [`Client::verify_api_key`], the hot path of every
//! customer request, through the cache of `apikey_cache`.

use secrecy::ExposeSecret;
use vault_crypto::clock::from_unix_ms;
use vault_crypto::session::SessionAad;
use vault_proto::v1;
use vault_proto::v1::broker_client::BrokerClient;

use crate::apikey::{ApiKeyRefusal, ApiKeyText, VerifiedKey};
use crate::apikey_cache::Answered;
use crate::client::Client;
use crate::endpoints::{Retry, SessionAttempt};
use crate::environment::Environment;
use crate::error::Error;

impl Client {
    /// Verifies `key` for a customer request in `environment` that needs `scope` (if
    /// any) and costs `cost` quota units (0 counts as 1), and says whose key it is.
    ///
    /// - A malformed key (a typo, a truncated copy: its checksum fails) is refused here,
    ///   with [`ApiKeyRefusal::Invalid`], and never sent.
    /// - Otherwise the key travels sealed to this client's session. vaultd's refusals
    ///   come back as [`Error::ApiKeyRefused`] (invalid, revoked, expired, environment,
    ///   scope) and [`Error::Limited`] (a rate limit or the daily quota, with how long to
    ///   wait); neither is retried. [`Error::PermissionDenied`] means this client's
    ///   identity may not verify keys at all.
    /// - **Cache**: an answer is reused, without asking vaultd, for as long as vaultd
    ///   allows (`[apikeys] cache`, 5 s by default, never past the key's expiry), while
    ///   this client's revocation watch is connected; a revocation evicts it at once.
    ///   Only calls with `cost` 0 or 1 are answered from the cache, and never for a key
    ///   with a daily quota: **a verification that charges quota units always reaches
    ///   vaultd**, which does the charging. A cached answer is still judged against
    ///   `environment` and `scope`. Cached verifications count against no rate limit:
    ///   vaultd's limits see the calls that reach it. Turn the cache off with
    ///   [`crate::ClientBuilder::api_key_cache`]`(0)`.
    /// - When an endpoint is unavailable the call goes to the next; vaultd may have
    ///   counted the first attempt against the key's limits.
    pub async fn verify_api_key(
        &self,
        key: &ApiKeyText,
        environment: Environment,
        scope: Option<&str>,
        cost: u32,
    ) -> Result<VerifiedKey, Error> {
        let parsed = key.parse().map_err(|e| Error::ApiKeyRefused {
            refusal: ApiKeyRefusal::Invalid,
            message: format!("the API key is not valid: {e}"),
        })?;
        let cache = &self.inner.api_keys;
        let endpoints = &self.inner.endpoints;
        let watch_epoch = |node| endpoints.watch_epoch(node);
        let tag = match cost {
            0 | 1 => cache.tag(key),
            _ => None,
        };
        if let Some(tag) = &tag
            && let Some(verdict) = cache.lookup(tag, environment, scope, watch_epoch)
        {
            return verdict;
        }
        let (verified, answered) = endpoints
            .call_with_session(Retry::Idempotent, |attempt: SessionAttempt| async move {
                // The epoch before asking: a revocation after this is seen by the watch.
                let epoch = endpoints.watch_epoch(attempt.node);
                let aad = SessionAad::api_key_to_verify(environment.as_str());
                let envelope = attempt
                    .session
                    .key
                    .seal(&aad, key.expose_secret().as_bytes())
                    .map_err(|source| Error::LocalCrypto {
                        doing: "seal the API key to its session",
                        source,
                    })?;
                let answer = BrokerClient::new(attempt.channel.clone())
                    .verify_api_key(v1::VerifyApiKeyRequest {
                        session_id: attempt.session.id.clone(),
                        api_key: Some(v1::SealedPayload { envelope }),
                        environment: environment.to_proto(),
                        scope: scope.unwrap_or_default().to_owned(),
                        cost,
                    })
                    .await?
                    .into_inner();
                let answered = Answered {
                    node: attempt.node,
                    epoch,
                    cache_until: from_unix_ms(answer.cache_until_unix_ms),
                };
                Ok((verified_key(answer, parsed.id)?, answered))
            })
            .await?;
        if let Some(tag) = tag {
            cache.insert(tag, &verified, &answered, watch_epoch);
        }
        Ok(verified)
    }

    /// API-key verifications in the cache, fresh or not.
    pub fn cached_api_keys(&self) -> usize {
        self.inner.api_keys.len()
    }
}

/// vaultd's answer for the key whose id is `key_id`, checked.
fn verified_key(answer: v1::VerifyApiKeyResponse, key_id: &str) -> Result<VerifiedKey, Error> {
    if answer.key_id != key_id {
        return Err(Error::Protocol("vaultd answered for another API key"));
    }
    let environment = Environment::from_proto(answer.environment)
        .ok_or(Error::Protocol("the verified API key names no environment"))?;
    Ok(VerifiedKey {
        key_id: answer.key_id,
        tenant: answer.tenant,
        environment,
        scopes: answer.scopes,
        quota_remaining: answer.quota_remaining,
    })
}
