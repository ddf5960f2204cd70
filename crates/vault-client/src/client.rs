//! The [`Client`] handle and what its clones share. Its calls are in `lease`, `transit`
//! and `admin`; it is built by `builder`.

use std::sync::{Arc, Weak};

use tokio::task::JoinHandle;

use crate::apikey_cache::KeyCache;
use crate::cache::Cache;
use crate::endpoints::Endpoints;

/// A connection to vaultd, shared by every task of a service: clone it freely (clones
/// share connections, sessions, the lease cache and the API-key cache).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// What a client's clones share.
pub(crate) struct Inner {
    pub(crate) endpoints: Endpoints,
    pub(crate) cache: Cache,
    pub(crate) api_keys: KeyCache,
    /// Background work (revocation watches, certificate reloads, renewals), stopped
    /// when the last clone goes.
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    pub(crate) fn new(endpoints: Endpoints, cache: Cache, api_keys: KeyCache) -> Self {
        Self {
            endpoints,
            cache,
            api_keys,
            tasks: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Takes charge of background tasks: they are aborted when the client goes.
    pub(crate) fn adopt(&self, tasks: Vec<JoinHandle<()>>) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints.names)
            .field("identity", &self.inner.endpoints.identity(0))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The identity vaultd sees for this client on its current endpoint.
    pub fn identity(&self) -> String {
        self.inner.endpoints.current_identity()
    }
}

/// Re-reads the certificate files when they change; new connections use the new
/// certificates, and each endpoint's connection is replaced so they take effect.
pub(crate) async fn reload_certificates(inner: Weak<Inner>) {
    loop {
        let every = match inner.upgrade() {
            Some(inner) => inner.endpoints.options.reload_interval,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.endpoints.has_tls() {
            return;
        }
        // A bad file keeps the previous certificates; the next check tries again.
        inner.endpoints.reload_certificates().await;
    }
}
