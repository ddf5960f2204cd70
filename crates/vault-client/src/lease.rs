//! Leasing: [`Client::lease`] and its kin, through the cache; and the background work
//! that keeps the cache honest (the revocation watch) and alive (auto-renewal).

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_stream::StreamExt;
use vault_crypto::session::SessionAad;
use vault_proto::v1;
use vault_proto::v1::broker_client::BrokerClient;

use crate::cache::{Issued, Key, Lease, Leased};
use crate::client::{Client, Inner};
use crate::endpoints::Retry;
use crate::environment::Environment;
use crate::error::{Error, Failure};
use vault_crypto::clock::from_unix_ms;

/// How far ahead of a lease leaving the cache auto-renewal renews it.
const RENEW_AHEAD: Duration = Duration::from_secs(2);

impl Client {
    /// The current version of secret `name` of `tenant` in `environment`: from the
    /// cache while fresh, else leased (concurrent callers share one request).
    pub async fn lease(
        &self,
        tenant: &str,
        environment: Environment,
        name: &str,
    ) -> Result<Lease, Error> {
        self.lease_version(tenant, environment, name, None).await
    }

    /// As [`Client::lease`], for a specific version (or the current one if `None`).
    pub async fn lease_version(
        &self,
        tenant: &str,
        environment: Environment,
        name: &str,
        version: Option<u64>,
    ) -> Result<Lease, Error> {
        let key = Key {
            tenant: tenant.to_owned(),
            environment,
            name: name.to_owned(),
            version,
        };
        let cache = &self.inner.cache;
        let watch_epoch = |node| self.inner.endpoints.watch_epoch(node);
        if let Some(hit) = cache.fresh(&key, watch_epoch) {
            return Ok(hit);
        }
        let gate = cache.gate(&key);
        let result = {
            let _turn = gate.lock().await;
            match cache.fresh(&key, watch_epoch) {
                Some(hit) => Ok(hit),
                None => self.lease_uncached(&key).await,
            }
        };
        cache.release_gate(&key, gate);
        result
    }

    /// Leases anew; a lease whose revocation arrived before it is leased again.
    async fn lease_uncached(&self, key: &Key) -> Result<Lease, Error> {
        for _ in 0..3 {
            let leased = self.lease_once(key).await?;
            if let Some(lease) = self.inner.cache.insert(key.clone(), leased) {
                return Ok(lease);
            }
        }
        Err(Error::RevokedOnIssue)
    }

    async fn lease_once(&self, key: &Key) -> Result<Arc<Leased>, Error> {
        let endpoints = &self.inner.endpoints;
        let ttl = endpoints.options.lease_ttl_seconds();
        endpoints
            .call_with_session(Retry::Idempotent, |attempt| async move {
                // The epoch before asking: a revocation after this is seen by the watch.
                let epoch = endpoints.watch_epoch(attempt.node);
                let session = &attempt.session;
                let response = BrokerClient::new(attempt.channel.clone())
                    .lease(v1::LeaseRequest {
                        session_id: session.id.clone(),
                        secret: Some(secret_ref(key)),
                        version: key.version,
                        ttl_seconds: ttl,
                    })
                    .await?
                    .into_inner();
                let aad = SessionAad::lease(
                    &key.tenant,
                    key.environment.as_str(),
                    &key.name,
                    response.version,
                    &response.lease_id,
                );
                let sealed = response
                    .value
                    .as_ref()
                    .ok_or(Error::Protocol("the lease carries no value"))?;
                let value = session.key.open(&aad, &sealed.envelope).map_err(|source| {
                    Error::SealedAnswer {
                        what: "the leased value",
                        source,
                    }
                })?;
                Ok(self.inner.cache.leased(Issued {
                    lease_id: response.lease_id,
                    version: response.version,
                    value,
                    node: attempt.node,
                    epoch,
                    expires: from_unix_ms(response.expires_unix_ms),
                    renewable_until: from_unix_ms(response.renewable_until_unix_ms),
                }))
            })
            .await
    }

    /// Ends a lease now (on the endpoint that issued it) and drops it from the cache.
    pub async fn revoke(&self, lease: &Lease) -> Result<(), Error> {
        self.inner.cache.evict_lease(lease.lease_id());
        let id = lease.lease_id().to_owned();
        self.inner
            .endpoints
            .call_on(Some(lease.node()), Retry::Idempotent, |attempt| {
                let id = id.clone();
                async move {
                    BrokerClient::new(attempt.channel)
                        .revoke(v1::RevokeRequest { lease_id: id })
                        .await?;
                    Ok(())
                }
            })
            .await
    }

    /// Drops every cached value (they are wiped once no handle holds them) and every
    /// cached API-key verification; returns how many entries went.
    pub fn clear_cache(&self) -> usize {
        self.inner.cache.clear() + self.inner.api_keys.clear()
    }

    /// Values in the cache, fresh or not.
    pub fn cached(&self) -> usize {
        self.inner.cache.len()
    }
}

fn secret_ref(key: &Key) -> v1::SecretRef {
    v1::SecretRef {
        tenant: key.tenant.clone(),
        environment: key.environment.to_proto(),
        name: key.name.clone(),
    }
}

/// Follows `WatchRevocations` on endpoint `node` for as long as the client lives,
/// reconnecting with backoff. Every break evicts that endpoint's entries.
pub(crate) async fn watch_revocations(inner: Weak<Inner>, node: usize) {
    static EPOCHS: AtomicU64 = AtomicU64::new(1);
    let mut backoff = Duration::from_millis(100);
    loop {
        let channel = match inner.upgrade() {
            Some(inner) => match inner.endpoints.nodes.get(node) {
                Some(n) => n.channel(),
                None => return,
            },
            None => return,
        };
        let stream = BrokerClient::new(channel)
            .watch_revocations(v1::WatchRevocationsRequest {})
            .await;
        if let Ok(stream) = stream {
            let mut stream = stream.into_inner();
            backoff = Duration::from_millis(100);
            if let Some(inner) = inner.upgrade()
                && let Some(n) = inner.endpoints.nodes.get(node)
            {
                n.watch_epoch
                    .store(EPOCHS.fetch_add(1, Ordering::Relaxed), Ordering::Release);
            }
            while let Some(Ok(revocation)) = stream.next().await {
                let Some(inner) = inner.upgrade() else { return };
                handle(&inner, &revocation);
            }
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if let Some(n) = strong.endpoints.nodes.get(node) {
            n.watch_epoch.store(0, Ordering::Release);
        }
        // Revocations may have been missed while the watch was down (or vaultd said
        // it missed some). An API key's revocation is not bound to an endpoint: every
        // cached verification goes.
        strong.cache.evict_node(node);
        strong.api_keys.clear();
        drop(strong);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Acts on one revocation notice: a lease's evicts the lease; an API key's evicts
/// the key's cached verifications. A seal also drops every cached verification: the
/// vault stopped answering, and a cache should not answer for it.
fn handle(inner: &Inner, revocation: &v1::Revocation) {
    if !revocation.api_key_id.is_empty() {
        inner.api_keys.evict_key(&revocation.api_key_id);
    }
    if !revocation.lease_id.is_empty() {
        inner.cache.evict_lease(&revocation.lease_id);
    }
    if revocation.reason == v1::RevocationReason::Sealed as i32 {
        inner.api_keys.clear();
    }
}

/// Renews cached leases as they approach their end (on the client's clock, checked
/// every second); evicts those that cannot be.
pub(crate) async fn auto_renew(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let due = inner.cache.due_for_renewal(RENEW_AHEAD);
        let ttl = inner.endpoints.options.lease_ttl_seconds();
        for leased in due {
            let renewed = inner
                .endpoints
                .call_on(Some(leased.node), Retry::Idempotent, |attempt| {
                    let id = leased.lease_id.clone();
                    async move {
                        Ok::<_, Failure>(
                            BrokerClient::new(attempt.channel)
                                .renew(v1::RenewRequest {
                                    lease_id: id,
                                    ttl_seconds: ttl,
                                })
                                .await?
                                .into_inner(),
                        )
                    }
                })
                .await;
            match renewed {
                Ok(answer) => {
                    leased.renewed(from_unix_ms(answer.expires_unix_ms), inner.cache.clock());
                }
                Err(_) => {
                    inner.cache.evict_lease(&leased.lease_id);
                }
            }
        }
    }
}
