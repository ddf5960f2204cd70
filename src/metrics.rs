//! Prometheus metrics: requests by RPC and code, latency histograms, lease and
//! session counts, seal state, refused TLS handshakes by cause. Labels carry RPC
//! names, codes and causes only, never tenants, identities, addresses or secret names.

use std::sync::Mutex;
use std::time::Instant;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

// Labels borrow the RPC's static name and keep the code as is: counting a request
// allocates nothing; names are written only when metrics are rendered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCode {
    rpc: &'static str,
    code: CodeName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Refused TLS handshakes by cause: the mutual-TLS listener's handle on them.
#[derive(Clone, Default)]
pub(crate) struct RefusedHandshakes(Family<ReasonLabel, Counter>);

impl RefusedHandshakes {
    /// Counts one refused TLS handshake; `reason` is one of a fixed set of causes.
    pub(crate) fn count(&self, reason: &'static str) {
        self.0.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Shows `reason` at 0 before any handshake is refused for it, so rates over it
    /// work from the start.
    pub(crate) fn declare(&self, reason: &'static str) {
        let _zero = self.0.get_or_create(&ReasonLabel { reason });
    }
}

/// A gRPC code, rendered by its name (`Ok`, `PermissionDenied`, …).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct CodeName(tonic::Code);

impl EncodeLabelValue for CodeName {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        write!(encoder, "{:?}", self.0)
    }
}

/// The daemon's metrics.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    /// The alert sinks' counters, appended to the exposition once the daemon has them.
    pub(crate) alerts: std::sync::OnceLock<crate::alerts::Alerts>,
    requests: Family<RpcCode, Counter>,
    latency: Family<Rpc, Histogram>,
    pub(crate) leases: Gauge,
    pub(crate) sessions: Gauge,
    pub(crate) sealed: Gauge,
    pub(crate) audit_records: Gauge,
    pub(crate) audit_free_bytes: Gauge,
    pub(crate) audit_state: Gauge,
    pub(crate) refusals_suppressed: Counter,
    pub(crate) sweep_failures: Counter,
    pub(crate) corrupt_records: Gauge,
    pub(crate) tenant_keys_cached: Gauge,
    pub(crate) change_log_behind: Gauge,
    pub(crate) handshakes_refused: RefusedHandshakes,
    locked_bytes: Family<PoolLabel, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("vaultd");
        let requests = Family::<RpcCode, Counter>::default();
        let latency = Family::<Rpc, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~1.6 s
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        let (leases, sessions, sealed, audit_records) = (
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
        );
        registry.register(
            "requests",
            "gRPC requests by RPC and status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "gRPC request latency",
            latency.clone(),
        );
        registry.register("leases_active", "Active leases", leases.clone());
        registry.register("sessions_active", "Open lease sessions", sessions.clone());
        registry.register(
            "sealed",
            "Seal state: 0 unsealed, 1 sealed, 2 uninitialised",
            sealed.clone(),
        );
        registry.register(
            "audit_records",
            "Audit records appended since start",
            audit_records.clone(),
        );
        let audit_free_bytes = Gauge::default();
        registry.register(
            "audit_free_bytes",
            "Free bytes on the audit log's filesystem when the writer last looked (-1: unknown)",
            audit_free_bytes.clone(),
        );
        let audit_state = Gauge::default();
        registry.register(
            "audit_state",
            "Audit log health: 0 writable, 1 short of space (requests refused until freed), 2 failed",
            audit_state.clone(),
        );
        let sweep_failures = Counter::default();
        registry.register(
            "grace_sweep_failures",
            "Secrets the grace sweep could not disable (retried on the next pass)",
            sweep_failures.clone(),
        );
        let corrupt_records = Gauge::default();
        registry.register(
            "corrupt_records",
            "Stored secret records that do not decode, found by the last grace sweep",
            corrupt_records.clone(),
        );
        let tenant_keys_cached = Gauge::default();
        registry.register(
            "tenant_keys_cached",
            "Unwrapped tenant keys held in locked memory",
            tenant_keys_cached.clone(),
        );
        let change_log_behind = Gauge::default();
        registry.register(
            "change_log_behind_milliseconds",
            "Since this node last read the change log of the database it shares to its end \
             (-1: the store is this node's alone); past storage.postgres.catch_up it refuses \
             leases and plaintext",
            change_log_behind.clone(),
        );
        let locked_bytes = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "locked_memory_bytes",
            "Locked key memory mapped, by pool (vault, sessions, tenants)",
            locked_bytes.clone(),
        );
        let handshakes_refused = RefusedHandshakes::default();
        registry.register(
            "tls_handshakes_refused",
            "TLS handshakes on the gRPC port that did not complete, by cause (no_certificate, unknown_ca, revoked, expired, crl_expired, revocation_unknown, wrong_usage, bad_certificate, server_certificate_refused, protocol, timeout, evicted, other)",
            handshakes_refused.0.clone(),
        );
        let refusals_suppressed = Counter::default();
        registry.register(
            "audit_refusals_suppressed",
            "Refused requests counted in summary records instead of recorded one by one",
            refusals_suppressed.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            alerts: std::sync::OnceLock::new(),
            requests,
            latency,
            leases,
            sessions,
            sealed,
            audit_records,
            audit_free_bytes,
            audit_state,
            refusals_suppressed,
            sweep_failures,
            corrupt_records,
            tenant_keys_cached,
            change_log_behind,
            handshakes_refused,
            locked_bytes,
        }
    }

    /// Refreshes the locked-memory gauges from the arena.
    pub(crate) fn observe_locked_memory(&self) {
        use vault_crypto::arena::{Pool, pool_stats};
        for (pool, name) in [
            (Pool::Vault, "vault"),
            (Pool::Sessions, "sessions"),
            (Pool::Tenants, "tenants"),
        ] {
            let bytes = i64::try_from(pool_stats(pool).locked_bytes).unwrap_or(i64::MAX);
            self.locked_bytes
                .get_or_create(&PoolLabel { pool: name })
                .set(bytes);
        }
    }

    /// Counts one finished request.
    pub(crate) fn observe(&self, rpc: &'static str, code: tonic::Code, started: Instant) {
        self.requests
            .get_or_create(&RpcCode {
                rpc,
                code: CodeName(code),
            })
            .inc();
        self.latency
            .get_or_create(&Rpc { rpc })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        if let Some(alerts) = self.alerts.get() {
            // Before the closing `# EOF`. Kinds are RPC and event names and sink names
            // are validated at start: neither needs escaping.
            let body_end = out.rfind("# EOF").unwrap_or(out.len());
            out.truncate(body_end);
            out.push_str("# HELP vaultd_alerts Security alerts raised, by kind.\n");
            out.push_str("# TYPE vaultd_alerts counter\n");
            for (kind, count) in alerts.raised_total() {
                out.push_str(&format!("vaultd_alerts_total{{kind=\"{kind}\"}} {count}\n"));
            }
            let sinks: Vec<String> = alerts.sinks().map(str::to_owned).collect();
            for (name, help, read) in [
                (
                    "vaultd_alert_drops",
                    "Alerts a sink dropped (queue full or delivery failed).",
                    crate::alerts::Alerts::dropped as fn(&crate::alerts::Alerts, &str) -> u64,
                ),
                (
                    "vaultd_alert_deliveries",
                    "Alerts a sink delivered.",
                    crate::alerts::Alerts::delivered,
                ),
            ] {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
                for sink in &sinks {
                    let count = read(alerts, sink);
                    out.push_str(&format!("{name}_total{{sink=\"{sink}\"}} {count}\n"));
                }
            }
            out.push_str("# EOF\n");
        }
        out
    }
}
