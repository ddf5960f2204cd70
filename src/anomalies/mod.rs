//! Anomaly detection: what a compromised or misbehaving caller looks like from here.
//!
//! - **Rates.** Per (identity, tenant, operation) — leases, transit decryptions, API-key
//!   verifications — a baseline of requests per minute, exponentially weighted (half-life
//!   `half_life`) and bias-corrected, so a steady rate is its own baseline from the
//!   first minute on. Once `warmup` minutes are known, a minute whose count reaches a
//!   level (3×, 5×, 10× by default) of the baseline, and at least `min_per_minute`,
//!   raises one event per level per minute. At the highest level a grant with
//!   `throttle_anomalies = true` refuses the rest of that minute.
//! - **First access.** An identity's first lease of a tenant's secret since the daemon
//!   started (`first_access`).
//! - **Failed-authentication bursts.** Refused TLS handshakes per source address,
//!   denied requests and bad API keys per identity: `failures` of them within
//!   `failure_window` raise one event, not one per failure, and at most one per window.
//! - **An API key presented in the other environment** (a live key sent as test, or
//!   the reverse): one event per key per `failure_window`.
//!
//! Every event is raised as an alert (a warn line, `vaultd_alerts_total{kind}`, the
//! sinks of `[alerts]`) and written to the audit log as `system.anomaly`. Nothing here
//! waits: events are appended to the log by a task of their own.
//!
//! State is bounded: at most `max_tracked` rate baselines, first-access pairs and
//! failure counters each. Rates and first accesses are counted only for requests the
//! policy allowed, so a caller without grants cannot grow them; failure counters it
//! can, and when they are full the oldest window is dropped for the new one.

mod state;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use vault_audit::{AuditLog, Event};
use vault_crypto::clock::{SharedClock, unix_seconds};

use crate::alerts::{Alert, Alerts, Severity};
use state::{Baselines, Bursts, Seen};

/// `[anomalies]` in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyConfig {
    /// Whether anything is detected at all.
    pub enabled: bool,
    /// Multiples of the baseline that raise an event, ascending (default 3, 5, 10).
    pub levels: Vec<f64>,
    /// Minutes of history a baseline needs before it alarms.
    pub warmup_minutes: u32,
    /// The fewest requests in a minute that can alarm, whatever the baseline.
    pub min_per_minute: u32,
    /// The baseline's half-life.
    pub half_life: Duration,
    /// Whether an identity's first lease of a tenant's secret raises an event.
    pub first_access: bool,
    /// Failed authentications from one source or identity that make a burst.
    pub failures: u32,
    /// The window they are counted in.
    pub failure_window: Duration,
    /// Baselines, first-access pairs and failure counters kept, each.
    pub max_tracked: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            levels: vec![3.0, 5.0, 10.0],
            warmup_minutes: 10,
            min_per_minute: 20,
            half_life: Duration::from_secs(3600),
            first_access: true,
            failures: 20,
            failure_window: Duration::from_secs(60),
            max_tracked: 100_000,
        }
    }
}

/// The operations whose rates are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Watched {
    Lease,
    TransitDecrypt,
    ApiKeyVerify,
}

impl Watched {
    fn as_str(self) -> &'static str {
        match self {
            Watched::Lease => "lease",
            Watched::TransitDecrypt => "transit.decrypt",
            Watched::ApiKeyVerify => "apikeys.verify",
        }
    }
}

/// Who failed to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Failing {
    /// A source address whose TLS handshakes were refused.
    Source(IpAddr),
    /// An identity whose requests were denied.
    Denied(String),
    /// An identity that presented API keys that did not verify.
    BadApiKeys(String),
    /// An API key presented in the other environment.
    KeyEnvironment(String),
}

/// What an observed request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on.
    Pass,
    /// At the highest level, under a grant that throttles: refuse until the minute ends.
    Throttle,
}

/// The detector. Cheap to share; every method is quick and never waits on I/O.
pub(crate) struct Anomalies {
    config: AnomalyConfig,
    clock: SharedClock,
    alerts: Alerts,
    audit: AuditLog,
    baselines: Mutex<Baselines>,
    seen: Mutex<Seen>,
    bursts: Mutex<Bursts>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each update leaves the tables consistent before anything can panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Anomalies {
    pub(crate) fn new(
        config: AnomalyConfig,
        clock: SharedClock,
        alerts: Alerts,
        audit: AuditLog,
    ) -> Self {
        let alpha = state::alpha(config.half_life);
        Self {
            baselines: Mutex::new(Baselines::new(config.max_tracked, alpha)),
            seen: Mutex::new(Seen::new(config.max_tracked)),
            bursts: Mutex::new(Bursts::new(config.max_tracked)),
            config,
            clock,
            alerts,
            audit,
        }
    }

    fn now_secs(&self) -> u64 {
        unix_seconds(self.clock.now())
    }

    /// Counts `count` allowed requests of `identity` on `tenant`; raises what they
    /// reveal. `throttle`: the grant refuses requests at the highest level.
    pub(crate) fn observe(
        &self,
        operation: Watched,
        identity: &str,
        tenant: &str,
        count: u32,
        throttle: bool,
    ) -> Verdict {
        if !self.config.enabled {
            return Verdict::Pass;
        }
        let now = self.now_secs();
        if operation == Watched::Lease
            && self.config.first_access
            && lock(&self.seen).first(identity, tenant)
        {
            self.report(
                Alert::new("anomaly.first_access", Severity::Warning),
                identity,
                Some(tenant),
                &[("operation", operation.as_str().to_owned())],
            );
        }
        let crossed = lock(&self.baselines).count(
            (identity, tenant, operation),
            now / 60,
            count,
            &self.config,
        );
        let Some(crossed) = crossed else {
            return Verdict::Pass;
        };
        if let Some(level) = crossed.raised {
            self.report(
                Alert::new("anomaly.rate", Severity::Warning),
                identity,
                Some(tenant),
                &[
                    ("operation", operation.as_str().to_owned()),
                    ("level", format!("{level}x")),
                    ("per_minute", crossed.count.to_string()),
                    ("baseline", format!("{:.1}", crossed.baseline)),
                ],
            );
        }
        if crossed.top && throttle {
            Verdict::Throttle
        } else {
            Verdict::Pass
        }
    }

    /// Counts one failed authentication; the one that makes a burst raises it.
    pub(crate) fn failure(&self, who: Failing) {
        if !self.config.enabled {
            return;
        }
        let threshold = match who {
            Failing::KeyEnvironment(_) => 1,
            _ => self.config.failures,
        };
        let now = self.now_secs();
        let window = self.config.failure_window.as_secs().max(1);
        let Some(count) = lock(&self.bursts).count(who.clone(), now, window, threshold) else {
            return;
        };
        let per = [
            ("failures", count.to_string()),
            ("window_s", window.to_string()),
        ];
        match who {
            Failing::Source(address) => self.report(
                Alert::new("anomaly.tls_failures", Severity::Warning),
                "-",
                None,
                &[
                    per[0].clone(),
                    per[1].clone(),
                    ("source", address.to_string()),
                ],
            ),
            Failing::Denied(identity) => self.report(
                Alert::new("anomaly.denied_requests", Severity::Warning),
                &identity,
                None,
                &per,
            ),
            Failing::BadApiKeys(identity) => self.report(
                Alert::new("anomaly.bad_api_keys", Severity::Warning),
                &identity,
                None,
                &per,
            ),
            Failing::KeyEnvironment(key_id) => self.report(
                Alert::new("anomaly.api_key_environment", Severity::Warning),
                "-",
                None,
                &[("key_id", key_id)],
            ),
        }
    }

    /// Raises `alert` and records it in the audit log (by a task of its own).
    fn report(
        &self,
        mut alert: Alert,
        identity: &str,
        tenant: Option<&str>,
        detail: &[(&str, String)],
    ) {
        if identity != "-" {
            alert = alert.with_identity(identity.to_owned());
        }
        if let Some(tenant) = tenant {
            alert = alert.with_tenant(tenant.to_owned());
        }
        for (key, value) in detail {
            alert.detail.insert((*key).to_owned(), value.clone());
        }
        let mut event = Event {
            tenant: tenant.map(str::to_owned),
            reason: alert.kind.clone(),
            detail: alert.detail.clone(),
            ..Event::default()
        };
        event.detail.insert("subject".into(), identity.to_owned());
        self.alerts.raise(alert);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let audit = self.audit.clone();
            runtime.spawn(async move {
                if let Err(e) = crate::audit::system_event(&audit, "system.anomaly", event).await {
                    tracing::error!("an anomaly could not be audited: {e}");
                }
            });
        }
    }
}
