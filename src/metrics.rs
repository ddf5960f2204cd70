//! Prometheus metrics: requests by RPC and code, latency histograms, lease and
//! session counts, seal state. Labels carry RPC names and codes only, never
//! tenants, identities or secret names.

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCode {
    rpc: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    rpc: String,
}

/// The daemon's metrics.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RpcCode, Counter>,
    latency: Family<Rpc, Histogram>,
    pub(crate) leases: Gauge,
    pub(crate) sessions: Gauge,
    pub(crate) sealed: Gauge,
    pub(crate) audit_records: Gauge,
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
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            leases,
            sessions,
            sealed,
            audit_records,
        }
    }

    /// Counts one finished request.
    pub(crate) fn observe(&self, rpc: &str, code: tonic::Code, started: Instant) {
        self.requests
            .get_or_create(&RpcCode {
                rpc: rpc.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
        self.latency
            .get_or_create(&Rpc {
                rpc: rpc.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
