//! Leases: the handle a service holds, and the cache behind `Client::lease`.
//!
//! A cached value is served only while it is fresh (until shortly before its lease
//! ends) *and* the revocation watch of the endpoint it came from has been connected
//! without a break since before it was leased: a revocation can then not have been
//! missed. A revocation notice evicts the entry at once; a broken watch evicts every
//! entry from that endpoint. Concurrent requests for one secret share one RPC.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use tokio_stream::StreamExt;
use vault_crypto::SecretValue;
use vault_crypto::session::SessionAad;
use vault_proto::v1;
use vault_proto::v1::broker_client::BrokerClient;

use crate::Environment;
use crate::client::{Client, Failure, Inner, Retry, unix_ms_to_time};
use crate::error::Error;

/// A leased secret value. The bytes are reachable only through [`ExposeSecret`];
/// they live in one zeroising buffer shared by the handle's clones (cloning copies no
/// secret) and the cache, and are wiped when the last of them lets go.
#[derive(Clone)]
pub struct Lease {
    inner: Arc<Leased>,
}

struct Leased {
    lease_id: String,
    version: u64,
    value: SecretValue,
    node: usize,
    /// The watch epoch the lease was asked for under (0: the watch was down).
    epoch: u64,
    revoked: AtomicBool,
    times: Mutex<Times>,
}

#[derive(Clone, Copy)]
struct Times {
    /// The lease's end, as vaultd said.
    expires: SystemTime,
    /// How far Renew can extend it.
    renewable_until: SystemTime,
    /// The cache serves it until then.
    fresh_until: Instant,
}

impl Leased {
    fn times(&self) -> Times {
        *self.times.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Lease {
    /// The lease's id, for [`Client::revoke`] and logs (not a secret).
    pub fn lease_id(&self) -> &str {
        &self.inner.lease_id
    }

    /// The secret version leased.
    pub fn version(&self) -> u64 {
        self.inner.version
    }

    /// When the lease ends, unless renewed.
    pub fn expires_at(&self) -> SystemTime {
        self.inner.times().expires
    }

    /// Whether a revocation for this lease has been received. A revoked lease's value
    /// must no longer be used; the cache has already dropped it.
    pub fn is_revoked(&self) -> bool {
        self.inner.revoked.load(Ordering::Acquire)
    }
}

impl ExposeSecret<[u8]> for Lease {
    fn expose_secret(&self) -> &[u8] {
        self.inner.value.expose_secret()
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("lease_id", &self.inner.lease_id)
            .field("version", &self.inner.version)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// What a lease is for.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: String,
    environment: Environment,
    name: String,
    version: Option<u64>,
}

/// The lease cache.
#[derive(Default)]
pub(crate) struct Cache {
    entries: RwLock<HashMap<Key, Arc<Leased>>>,
    /// One gate per key being leased, so concurrent misses make one RPC.
    gates: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Recently revoked lease ids. A revocation notice can overtake the answer that
    /// issued the lease (they travel on different streams); such a lease must not be
    /// cached after its notice was handled.
    tombstones: Mutex<Tombstones>,
}

/// Lease ids remembered as revoked.
const TOMBSTONES: usize = 4096;

#[derive(Default)]
struct Tombstones {
    order: std::collections::VecDeque<String>,
    ids: std::collections::HashSet<String>,
}

impl Tombstones {
    fn add(&mut self, id: &str) {
        if self.ids.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
        }
        while self.order.len() > TOMBSTONES {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

impl Cache {
    /// A fresh entry, if there is one the watch vouches for.
    fn fresh(&self, key: &Key, inner: &Inner) -> Option<Lease> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let leased = entries.get(key)?;
        let watched = inner.nodes.get(leased.node).is_some_and(|n| {
            leased.epoch != 0 && n.watch_epoch.load(Ordering::Acquire) == leased.epoch
        });
        let usable = watched
            && !leased.revoked.load(Ordering::Acquire)
            && Instant::now() < leased.times().fresh_until;
        usable.then(|| Lease {
            inner: Arc::clone(leased),
        })
    }

    fn gate(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(gates.entry(key.clone()).or_default())
    }

    fn release_gate(&self, key: &Key, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else is waiting on it.
        if Arc::strong_count(&gate) <= 2 {
            gates.remove(key);
        }
    }

    /// Caches `leased` unless its revocation was already seen; says which.
    fn insert(&self, key: Key, leased: &Arc<Leased>) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let tombstones = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
        if tombstones.ids.contains(&leased.lease_id) {
            leased.revoked.store(true, Ordering::Release);
            return false;
        }
        entries.insert(key, Arc::clone(leased));
        true
    }

    /// Drops (and marks revoked) the entries `drop` selects. Their values are wiped
    /// once no handle holds them.
    fn evict(&self, drop: impl Fn(&Leased) -> bool) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let before = entries.len();
        entries.retain(|_, leased| {
            let gone = drop(leased);
            if gone {
                leased.revoked.store(true, Ordering::Release);
            }
            !gone
        });
        before - entries.len()
    }

    /// Handles a revocation notice: evicts the lease and remembers it, in case its
    /// issuing answer is still on its way.
    pub(crate) fn evict_lease(&self, lease_id: &str) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(lease_id);
        let before = entries.len();
        entries.retain(|_, leased| {
            let gone = leased.lease_id == lease_id;
            if gone {
                leased.revoked.store(true, Ordering::Release);
            }
            !gone
        });
        before - entries.len()
    }

    pub(crate) fn evict_node(&self, node: usize) -> usize {
        self.evict(|l| l.node == node)
    }

    fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// How long before its end a lease stops being served from the cache: a tenth of its
/// lifetime, at least 1 s, at most half of it.
fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_secs(1)).min(ttl / 2)
}

fn fresh_until(expires: SystemTime) -> Instant {
    let left = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left.saturating_sub(margin(left))
}

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
        if let Some(hit) = cache.fresh(&key, &self.inner) {
            return Ok(hit);
        }
        let gate = cache.gate(&key);
        let result = {
            let _turn = gate.lock().await;
            match cache.fresh(&key, &self.inner) {
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
            if self.inner.cache.insert(key.clone(), &leased) {
                return Ok(Lease { inner: leased });
            }
        }
        Err(Error::Other {
            code: tonic::Code::Aborted,
            message: "every lease was revoked as soon as it was issued; try again later".into(),
        })
    }

    async fn lease_once(&self, key: &Key) -> Result<Arc<Leased>, Error> {
        let ttl = self.inner.options().lease_ttl_seconds();
        self.inner
            .call(Retry::Idempotent, true, |attempt| async move {
                let node = self
                    .inner
                    .nodes
                    .get(attempt.node)
                    .ok_or(Failure::Local(Error::Config("no endpoint")))?;
                // The epoch before asking: a revocation after this is seen by the watch.
                let epoch = node.watch_epoch.load(Ordering::Acquire);
                let session = attempt.session()?;
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
                let value = session.key.open(&aad, &sealed.envelope).map_err(|_| {
                    Error::Protocol("the leased value did not open with the session key")
                })?;
                let expires = unix_ms_to_time(response.expires_unix_ms);
                Ok(Arc::new(Leased {
                    lease_id: response.lease_id,
                    version: response.version,
                    value,
                    node: attempt.node,
                    epoch,
                    revoked: AtomicBool::new(false),
                    times: Mutex::new(Times {
                        expires,
                        renewable_until: unix_ms_to_time(response.renewable_until_unix_ms),
                        fresh_until: fresh_until(expires),
                    }),
                }))
            })
            .await
    }

    /// Ends a lease now (on the endpoint that issued it) and drops it from the cache.
    pub async fn revoke(&self, lease: &Lease) -> Result<(), Error> {
        self.inner.cache.evict_lease(lease.lease_id());
        let id = lease.lease_id().to_owned();
        self.inner
            .call_on(
                Some(lease.inner.node),
                Retry::Idempotent,
                false,
                |attempt| {
                    let id = id.clone();
                    async move {
                        BrokerClient::new(attempt.channel)
                            .revoke(v1::RevokeRequest { lease_id: id })
                            .await?;
                        Ok(())
                    }
                },
            )
            .await
    }

    /// Drops every cached value (they are wiped once no handle holds them).
    pub fn clear_cache(&self) -> usize {
        self.inner.cache.evict(|_| true)
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
            Some(inner) => match inner.nodes.get(node) {
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
                && let Some(n) = inner.nodes.get(node)
            {
                n.watch_epoch
                    .store(EPOCHS.fetch_add(1, Ordering::Relaxed), Ordering::Release);
            }
            while let Some(Ok(revocation)) = stream.next().await {
                let Some(inner) = inner.upgrade() else { return };
                inner.cache.evict_lease(&revocation.lease_id);
            }
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if let Some(n) = strong.nodes.get(node) {
            n.watch_epoch.store(0, Ordering::Release);
        }
        // Revocations may have been missed while the watch was down.
        strong.cache.evict_node(node);
        drop(strong);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Renews cached leases as they approach their end; evicts those that cannot be.
pub(crate) async fn auto_renew(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let due: Vec<Arc<Leased>> = {
            let entries = inner
                .cache
                .entries
                .read()
                .unwrap_or_else(|p| p.into_inner());
            entries
                .values()
                .filter(|l| {
                    let t = l.times();
                    t.fresh_until <= Instant::now() + Duration::from_secs(2)
                        && t.renewable_until > t.expires
                })
                .cloned()
                .collect()
        };
        let client = Client {
            inner: Arc::clone(&inner),
        };
        for leased in due {
            let ttl = client.inner.options().lease_ttl_seconds();
            let renewed = client
                .inner
                .call_on(Some(leased.node), Retry::Idempotent, false, |attempt| {
                    let id = leased.lease_id.clone();
                    async move {
                        Ok(BrokerClient::new(attempt.channel)
                            .renew(v1::RenewRequest {
                                lease_id: id,
                                ttl_seconds: ttl,
                            })
                            .await?
                            .into_inner())
                    }
                })
                .await;
            match renewed {
                Ok(answer) => {
                    let expires = unix_ms_to_time(answer.expires_unix_ms);
                    let mut times = leased.times.lock().unwrap_or_else(|p| p.into_inner());
                    times.expires = expires;
                    times.fresh_until = fresh_until(expires);
                }
                Err(_) => {
                    inner.cache.evict_lease(&leased.lease_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased(id: &str) -> Arc<Leased> {
        Arc::new(Leased {
            lease_id: id.into(),
            version: 1,
            value: SecretValue::from_vec(b"v".to_vec()),
            node: 0,
            epoch: 1,
            revoked: AtomicBool::new(false),
            times: Mutex::new(Times {
                expires: SystemTime::now(),
                renewable_until: SystemTime::now(),
                fresh_until: Instant::now(),
            }),
        })
    }

    #[test]
    fn a_notice_that_overtakes_its_lease_keeps_it_out_of_the_cache() {
        let cache = Cache::default();
        let key = Key {
            tenant: "t".into(),
            environment: Environment::Live,
            name: "n".into(),
            version: None,
        };
        assert_eq!(cache.evict_lease("l-early"), 0);
        let early = leased("l-early");
        assert!(!cache.insert(key.clone(), &early));
        assert!(early.revoked.load(Ordering::Acquire));
        assert_eq!(cache.len(), 0);
        assert!(cache.insert(key, &leased("l-other")));
        assert_eq!(cache.len(), 1);
        for i in 0..=TOMBSTONES {
            cache.evict_lease(&format!("l-{i}"));
        }
        assert!(!cache.tombstones.lock().unwrap().ids.contains("l-early"));
    }

    #[test]
    fn margins_leave_time_to_use_a_value() {
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_secs(6));
        assert_eq!(margin(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(500));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }
}
