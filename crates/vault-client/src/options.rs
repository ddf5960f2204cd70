//! The settings a built client runs with (what the builder's setters set, other than
//! endpoints and certificate files), and the clock its expiries are read on.

use std::fmt;
use std::time::Duration;

use vault_crypto::clock::{self, SharedClock};

/// How a client behaves once built.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) auto_renew: bool,
    pub(crate) reload_interval: Duration,
    pub(crate) watch: bool,
    /// The most API-key verifications cached (0: none).
    pub(crate) api_key_cache: usize,
    /// What lease, cache and session expiries are read on: the system's clock but in
    /// tests and simulations.
    pub(crate) clock: SharedClock,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(60),
            max_attempts: 4,
            auto_renew: false,
            reload_interval: Duration::from_secs(5),
            watch: true,
            api_key_cache: 10_000,
            clock: clock::system(),
        }
    }
}

impl Options {
    /// The lease lifetime to ask for, in the API's unit.
    pub(crate) fn lease_ttl_seconds(&self) -> u32 {
        u32::try_from(self.lease_ttl.as_secs()).unwrap_or(u32::MAX)
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The clock is a trait object without Debug; which one it is says nothing useful.
        f.debug_struct("Options")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("max_attempts", &self.max_attempts)
            .field("auto_renew", &self.auto_renew)
            .field("reload_interval", &self.reload_interval)
            .field("watch", &self.watch)
            .field("api_key_cache", &self.api_key_cache)
            .finish_non_exhaustive()
    }
}
