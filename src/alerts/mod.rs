//! Security alerts: anomalies and critical events (seal, unseal, rekey, rotations,
//! erasure, break-glass, policy reload, audit failure, API-key revocation) sent to the
//! sinks in `[alerts]` — signed HTTP webhooks and the local syslog.
//!
//! [`Alerts::raise`] never blocks or waits: it logs one line, counts the alert by kind
//! and offers it to each sink's bounded queue. A full queue drops the alert for that
//! sink and counts the drop; one task per sink delivers what is queued, in order. The
//! counters ([`Alerts::raised_total`], [`Alerts::dropped`], [`Alerts::delivered`]) are
//! for `vaultd_alerts_total{kind}`, `vaultd_alert_drops_total{sink}` and
//! `vaultd_alert_deliveries_total{sink}`.
//!
//! # What an alert may hold
//!
//! An [`Alert`] names things — the event's kind, an identity, a tenant, a request id,
//! and short details such as a rate or a grant id. **Callers must never put a secret in
//! one**: no secret value, key, share, token, API key, PIN or plaintext, not even
//! masked. Alerts leave the process (to a SIEM, to syslog files) with far weaker
//! protection than the audit log.
//!
//! # Trust boundaries
//!
//! - *Callers* are vaultd's own code; they decide what an alert says.
//! - *A webhook receiver* learns the alerts and nothing else. It cannot slow vaultd
//!   down: its answers are awaited by the sink's task only, each attempt is bounded by
//!   `timeout`, and the response body is never read. Redirects are not followed; any
//!   answer but 2xx is a failure.
//! - *The network to a webhook*: an `https` URL is checked against `ca_file` and
//!   nothing else (TLS 1.3, rustls with ring), and there is no fallback to the system
//!   roots or to plain http. Over `http`, alerts can be read on the way, but not
//!   forged or replayed past the receiver's window: every delivery is signed.
//! - *The syslog socket* is local; whoever can read the syslog files reads the alerts.
//!
//! # Verifying a webhook delivery
//!
//! Each delivery is `POST <url>` with the alert as a JSON body and these headers:
//!
//! ```text
//! content-type: application/json
//! x-vaultd-timestamp: 1767225600
//! x-vaultd-signature: sha256=<64 lowercase hex digits>
//! ```
//!
//! The signature is HMAC-SHA256, keyed with the contents of `secret_file` (trailing
//! whitespace removed), over the timestamp, a `.`, and the body exactly as sent. A
//! receiver:
//!
//! 1. takes the raw body bytes, before any JSON parsing;
//! 2. refuses the delivery unless `x-vaultd-timestamp` is a decimal number of Unix
//!    seconds within 5 minutes of its own clock — this bounds replays;
//! 3. computes HMAC-SHA256(key, `<timestamp>.<body>`) and compares it with the hex
//!    after `sha256=` in constant time;
//! 4. to refuse replays inside the window too, remembers the signatures it accepted in
//!    the last 5 minutes and refuses one seen again.
//!
//! ```python
//! import hashlib, hmac, time
//!
//! def verify(key: bytes, headers, body: bytes) -> bool:
//!     ts = headers["x-vaultd-timestamp"]
//!     if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
//!         return False
//!     mac = hmac.new(key, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
//!     return hmac.compare_digest("sha256=" + mac, headers["x-vaultd-signature"])
//! ```
//!
//! Every retry is signed afresh, with a new timestamp. An attempt that timed out after
//! the receiver took it is retried, so the same alert can arrive twice; its body
//! (`at_unix_ms`, `node`, `kind`, `request_id`) tells the copies apart from new alerts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::mpsc;

pub(crate) mod config;
mod syslog;
mod webhook;

#[cfg(test)]
mod tests;

pub use config::{AlertsConfig, Facility, SyslogConfig, WebhookConfig};
pub use webhook::SecretFileProblem;

/// Distinct kinds counted one by one; alerts of further kinds are counted as `other`,
/// so a caller that put something unbounded in `kind` cannot grow the counters.
const MAX_KINDS: usize = 64;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look: an anomaly, a rotation, a reload.
    Warning,
    /// Act now: a seal, an erasure, break-glass, an audit failure.
    Critical,
}

/// One security alert, serialised as JSON for the sinks.
///
/// It holds names and identifiers only; callers must never put a secret in any field
/// (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// What happened, dotted, e.g. `anomaly.rate`, `seal`, `breakglass.approve`.
    pub kind: String,
    /// How urgent it is.
    pub severity: Severity,
    /// When it happened, in Unix milliseconds.
    pub at_unix_ms: i64,
    /// The node that raised it; [`Alerts::raise`] sets it.
    pub node: String,
    /// The identity that caused it, if one did.
    pub identity: Option<String>,
    /// The tenant concerned, if one is.
    pub tenant: Option<String>,
    /// The request that caused it, to find its audit record.
    pub request_id: Option<String>,
    /// Short, non-secret details, e.g. `rate` = `12.5`, `baseline` = `1.1`.
    pub detail: BTreeMap<String, String>,
}

impl Alert {
    /// An alert of `kind` happening now.
    pub fn new(kind: impl Into<String>, severity: Severity) -> Self {
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            kind: kind.into(),
            severity,
            at_unix_ms,
            node: String::new(),
            identity: None,
            tenant: None,
            request_id: None,
            detail: BTreeMap::new(),
        }
    }

    /// Names the identity that caused it.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// Names the tenant concerned.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Names the request that caused it.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Adds a detail. Never a secret.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.detail.insert(key.into(), value.into());
        self
    }
}

/// Why the alert sinks could not start. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertsError {
    /// Sinks are tasks, so they start inside a tokio runtime.
    #[error("alert sinks must be started inside a tokio runtime")]
    NoRuntime,
    /// A webhook's URL is not one it can use (a [`WebhookConfig`] built in code).
    #[error("alerts.webhook {sink:?}: url: {reason}")]
    Url {
        /// The sink.
        sink: String,
        /// Why.
        reason: &'static str,
    },
    /// A webhook's key file was refused.
    #[error("alerts.webhook {sink:?}: secret_file {}: {problem}", path.display())]
    SecretFile {
        /// The sink.
        sink: String,
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        problem: SecretFileProblem,
    },
    /// An https webhook has no CA to check its server against.
    #[error(
        "alerts.webhook {sink:?}: an https url needs ca_file; vaultd never falls back to \
         the system roots or to plain http"
    )]
    NoTrust {
        /// The sink.
        sink: String,
    },
    /// A webhook's CA file could not be read or holds no certificate.
    #[error("alerts.webhook {sink:?}: ca_file: {source}")]
    CaFile {
        /// The sink.
        sink: String,
        /// Why.
        #[source]
        source: Box<crate::tls::TlsError>,
    },
    /// A certificate in a webhook's CA file is not a usable trust anchor.
    #[error("alerts.webhook {sink:?}: ca_file {}: {source}", path.display())]
    CaRejected {
        /// The sink.
        sink: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The syslog socket is missing or not a socket, or no socket could be made to
    /// reach it.
    #[error("alerts.syslog.socket {}: {source}", path.display())]
    Syslog {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The alert sinks: cheap to clone, and every clone raises into the same sinks. The
/// sinks' tasks end once the last clone is dropped and their queues are empty.
#[derive(Clone)]
pub struct Alerts {
    shared: Arc<Shared>,
}

struct Shared {
    node: String,
    sinks: Vec<Sink>,
    raised: Mutex<BTreeMap<String, u64>>,
    /// The latest alerts, oldest first.
    recent: Mutex<std::collections::VecDeque<Arc<Alert>>>,
}

/// Alerts kept for [`Alerts::recent`].
const RECENT: usize = 10;

/// A running sink as [`Alerts::raise`] sees it.
struct Sink {
    name: String,
    queue: mpsc::Sender<Arc<Alert>>,
    counts: Arc<SinkCounts>,
}

/// What became of the alerts offered to one sink.
#[derive(Default)]
struct SinkCounts {
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl SinkCounts {
    fn count_delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A sink opened (its files read, its socket made) but not yet running.
enum Opened {
    Webhook(webhook::Webhook),
    Syslog(syslog::Syslog),
}

impl Alerts {
    /// Opens every sink in `config` — reading key and CA files, checking the syslog
    /// socket — and then starts one task per sink. Nothing runs unless every sink
    /// opened. `node` is written into every alert.
    ///
    /// With no sink configured, this needs no runtime and alerts are logged and counted.
    pub fn start(config: AlertsConfig, node: String) -> Result<Self, AlertsError> {
        let mut opened = Vec::new();
        for webhook in &config.webhooks {
            opened.push((
                webhook.name.clone(),
                Opened::Webhook(webhook::Webhook::open(webhook)?),
            ));
        }
        if let Some(syslog) = &config.syslog {
            opened.push((
                config::SYSLOG_SINK.to_owned(),
                Opened::Syslog(syslog::Syslog::open(syslog, &node)?),
            ));
        }
        let mut sinks = Vec::with_capacity(opened.len());
        if !opened.is_empty() {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| AlertsError::NoRuntime)?;
            for (name, sink) in opened {
                let (queue, receiver) = mpsc::channel(config.queue.max(1));
                let counts = Arc::new(SinkCounts::default());
                match sink {
                    Opened::Webhook(sink) => runtime.spawn(sink.run(receiver, Arc::clone(&counts))),
                    Opened::Syslog(sink) => runtime.spawn(sink.run(receiver, Arc::clone(&counts))),
                };
                sinks.push(Sink {
                    name,
                    queue,
                    counts,
                });
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                node,
                sinks,
                raised: Mutex::new(BTreeMap::new()),
                recent: Mutex::new(std::collections::VecDeque::with_capacity(RECENT)),
            }),
        })
    }

    /// Raises `alert`: logs it, counts it, and offers it to every sink without waiting.
    /// A sink whose queue is full (or whose task has ended) drops it and counts the
    /// drop. The alert's `node` is set to this daemon's.
    pub fn raise(&self, mut alert: Alert) {
        alert.node.clone_from(&self.shared.node);
        // Debug formatting quotes and escapes what callers passed in, so a crafted
        // identity or tenant cannot forge log lines.
        tracing::warn!(
            kind = %alert.kind,
            severity = ?alert.severity,
            identity = ?alert.identity.as_deref().unwrap_or("-"),
            tenant = ?alert.tenant.as_deref().unwrap_or("-"),
            "security alert"
        );
        self.count_raised(&alert.kind);
        let alert = Arc::new(alert);
        {
            let mut recent = self
                .shared
                .recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Arc::clone(&alert));
        }
        for sink in &self.shared.sinks {
            if sink.queue.try_send(Arc::clone(&alert)).is_err() {
                sink.counts.count_dropped();
            }
        }
    }

    fn count_raised(&self, kind: &str) {
        let mut raised = self
            .shared
            .raised
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // One slot stays free for `other`.
        let kind = if raised.contains_key(kind) || raised.len() < MAX_KINDS - 1 {
            kind
        } else {
            "other"
        };
        match raised.get_mut(kind) {
            Some(n) => *n = n.saturating_add(1),
            None => {
                raised.insert(kind.to_owned(), 1);
            }
        }
    }

    /// Alerts raised so far, by kind, in kind order (for `vaultd_alerts_total{kind}`).
    /// Past 64 distinct kinds, further kinds are counted as `other`.
    pub fn raised_total(&self) -> Vec<(String, u64)> {
        let raised = self
            .shared
            .raised
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        raised.iter().map(|(kind, n)| (kind.clone(), *n)).collect()
    }

    /// The latest alerts raised (at most 10), newest first.
    pub fn recent(&self) -> Vec<Arc<Alert>> {
        let recent = self
            .shared
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        recent.iter().rev().cloned().collect()
    }

    /// The names of the running sinks: each webhook's, and `syslog`.
    pub fn sinks(&self) -> impl Iterator<Item = &str> {
        self.shared.sinks.iter().map(|s| s.name.as_str())
    }

    /// Alerts `sink` dropped: its queue was full, or every attempt to deliver failed
    /// (for `vaultd_alert_drops_total{sink}`). 0 for a sink that is not running.
    pub fn dropped(&self, sink: &str) -> u64 {
        self.counts(sink)
            .map_or(0, |c| c.dropped.load(Ordering::Relaxed))
    }

    /// Alerts `sink` delivered (for `vaultd_alert_deliveries_total{sink}`). 0 for a
    /// sink that is not running.
    pub fn delivered(&self, sink: &str) -> u64 {
        self.counts(sink)
            .map_or(0, |c| c.delivered.load(Ordering::Relaxed))
    }

    fn counts(&self, sink: &str) -> Option<&SinkCounts> {
        self.shared
            .sinks
            .iter()
            .find(|s| s.name == sink)
            .map(|s| &*s.counts)
    }
}

/// The requests that are critical events whenever they are allowed: the seal
/// lifecycle, a node taking the root keys to join, custodian ceremonies, rotations,
/// erasure and export, reloads, API-key rotation and revocation, snapshots,
/// break-glass requests, approvals and revocations. A request allowed by a break-glass grant is one too
/// (`breakglass.use`).
const CRITICAL: [&str; 22] = [
    "admin.init",
    "admin.unseal",
    "admin.seal",
    "admin.join_cluster",
    "admin.rekey",
    "admin.verify_rekey",
    "admin.rotate_root_key",
    "admin.start_ceremony",
    "admin.submit_ceremony_share",
    "admin.cancel_ceremony",
    "admin.erase_tenant",
    "admin.rotate_tenant_key",
    "admin.retire_tenant_keys",
    "admin.reload",
    "admin.reload_policies",
    "admin.rotate_api_key",
    "admin.revoke_api_key",
    "admin.snapshot",
    "admin.export_tenant",
    "admin.request_break_glass",
    "admin.approve_break_glass",
    "admin.revoke_break_glass",
];

/// The alert a finished request `rpc` raises, if it is a critical event that was
/// allowed: named by the RPC, with the audit event's identity, tenant, request id and
/// its non-secret details (the audit record holds no secret either).
pub(crate) fn critical(rpc: &str, event: &vault_audit::Event) -> Option<Alert> {
    // Break-glass use is the news, whatever the request was.
    let under_grant = event
        .grant
        .as_deref()
        .is_some_and(|g| g.starts_with("breakglass/"));
    let kind = match (under_grant, CRITICAL.contains(&rpc)) {
        (true, _) => "breakglass.use",
        (false, true) => rpc,
        (false, false) => return None,
    };
    if event.decision != vault_audit::Decision::Allow {
        return None;
    }
    let mut alert = Alert::new(kind, Severity::Critical)
        .with_identity(event.identity.clone())
        .with_request_id(event.request_id.clone());
    if let Some(tenant) = &event.tenant {
        alert = alert.with_tenant(tenant.clone());
    }
    alert.detail = event.detail.clone();
    if under_grant {
        alert.detail.insert("operation".into(), rpc.to_owned());
    }
    Some(alert)
}
