//! The daemon's configuration: one TOML file. Every option but the TLS files, the
//! storage path, the policy directory and the audit path has a safe default; the
//! required ones have none, so a forgotten one stops the daemon with its key named.
//!
//! ```toml
//! node = "vault-1"               # written into every audit record; default: the host name
//!
//! [listen]
//! grpc = "0.0.0.0:8200"          # mutual TLS: vault.v1.Broker, vault.v1.Admin
//! http = "127.0.0.1:8201"        # plain HTTP: /v1/health, /metrics
//! socket = "/run/vaultd/vaultd.sock"   # local status/unseal/seal; its permissions decide access
//!
//! [tls]
//! cert = "/etc/vaultd/server.pem"
//! key = "/etc/vaultd/server.key"
//! client_ca = "/etc/vaultd/client-ca.pem"
//! crls = ["/etc/vaultd/clients.crl"]
//! identities = "spiffe"          # or "spiffe-or-dns"
//! crl_expiry = "enforce"         # or "ignore": use a CRL past its nextUpdate anyway
//!
//! [storage]
//! path = "/var/lib/vaultd/vault.redb"
//! # or, for several nodes sharing one PostgreSQL database:
//! # engine = "postgres"
//! # [storage.postgres]
//! # connect = "host=db.internal port=5432 user=vaultd dbname=vaultd"   # no sslmode, no password
//! # ca = "/etc/vaultd/postgres-ca.pem"     # TLS 1.3 only; the server's name is checked
//! # client_cert = "/etc/vaultd/postgres-client.pem"
//! # client_key = "/etc/vaultd/postgres-client.key"
//! # password_file = "/etc/vaultd/postgres.password"   # for SCRAM instead of a certificate
//! # pool_size = 8
//! # connect_timeout = "5s"
//! # timeout = "5s"                 # one store operation, retries included
//! # catch_up = "1s"                # behind the change log longer: no leases, no plaintext
//! #
//! # [cluster]                        # postgres only
//! # nodes = ["spiffe://billing.example/vaultd/vault-2"]   # may join from this node (node.join)
//! # [cluster.join]                   # where this node joins from when it starts sealed
//! # endpoints = ["https://vault-2:8200"]
//! # ca = "/etc/vaultd/server-ca.pem"
//! # cert = "/etc/vaultd/node.pem"    # names this node's identity, listed on the others
//! # key = "/etc/vaultd/node.key"
//! # retry = "1s"
//!
//! [policy]
//! dir = "/etc/vaultd/policies"
//!
//! [audit]
//! path = "/var/log/vaultd/audit.jsonl"
//! fsync = "always"               # or "group"
//! group_commit = "10ms"
//! write_deadline = "2s"
//! checkpoint_every = 1000
//! min_free = "64MiB"            # below this, requests are refused before anything is written
//! refusals_per_second = 20      # per caller; more refusals are summarised, not recorded singly
//!
//! [leases]
//! default_ttl = "60s"
//! max_total = 100000
//! max_per_identity = 10000      # when the grant sets no max_active_leases
//! session_ttl = "1h"
//! max_sessions = 1024           # each holds 2 KiB of locked memory
//! sessions_per_identity = 64   # opening another evicts that identity's least recently used
//!
//! [limits]
//! connections_per_identity = 256  # TLS connections one identity may hold
//! watches_per_identity = 64      # WatchRevocations streams one identity may hold
//! request_timeout = "30s"        # a unary request still running then fails DEADLINE_EXCEEDED
//! handshakes = 256               # TLS handshakes in progress; a new one evicts the oldest
//! handshakes_per_source = 64     # ... from one source address
//! first_byte_timeout = "3s"      # a connection silent this long after connecting is dropped
//!
//! [keys]
//! tenant_key_cache = 1024        # unwrapped tenant keys in locked memory (2 KiB each)
//! tenant_rotate_after = 1073741824   # encryptions before a tenant key rotates itself
//!
//! [seal]
//! unseal_timeout = "10m"
//! default_grace = "24h"
//! max_grace = "30d"              # the longest grace window a rotation may ask for
//!
//! [seal.pkcs11]                   # optional: auto-unseal through a PKCS#11 token
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token = "vaultd"               # the token's label
//! key_label = "vaultd-unseal"    # the AES key's label; created in the token if missing
//! pin_file = "/etc/vaultd/hsm.pin"   # the user PIN, mode 0600
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::identity::IdentitySource;
use crate::tls::{CrlExpiry, TlsFiles};

mod cluster;
mod raw;
mod storage;

use raw::{DAY, RawConfig, address, anomalies, apikeys, breakglass, node_name, seal, size};
// Shared with the sections that parse themselves, such as `[alerts]`.
pub use cluster::{ClusterConfig, JoinConfig};
pub(crate) use raw::{SECOND, count, duration, required};
pub use storage::StorageConfig;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This node's name in audit records.
    pub node: String,
    /// The least severe log lines written.
    pub log_level: LogLevel,
    /// Listener addresses.
    pub listen: Listen,
    /// The mutual-TLS listener's files.
    pub tls: TlsFiles,
    /// Which SANs name a caller.
    pub identities: IdentitySource,
    /// Where the records are kept.
    pub storage: StorageConfig,
    /// Which nodes may join from this one, and where this one joins from.
    pub cluster: ClusterConfig,
    /// The policy directory.
    pub policy_dir: PathBuf,
    /// The audit sink.
    pub audit: AuditConfig,
    /// Lease and session limits.
    pub leases: LeaseConfig,
    /// Bounds per caller and per connection.
    pub limits: Limits,
    /// How tenant keys are kept and rotated.
    pub keys: KeysConfig,
    /// Seal lifecycle tunables.
    pub seal: SealConfig,
    /// Platform API keys: rate tiers, per-tenant limits, bounds.
    pub apikeys: ApiKeysConfig,
    /// Where security alerts go (webhooks, syslog); none by default.
    pub alerts: crate::alerts::AlertsConfig,
    /// Break-glass grants: approvals needed, longest duration, approval window.
    pub breakglass: crate::breakglass::BreakGlassConfig,
    /// Anomaly detection: rate levels, warm-up, failure bursts, bounds.
    pub anomalies: crate::anomalies::AnomalyConfig,
}

/// Platform API keys: rate tiers, per-tenant limits, bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeysConfig {
    /// Rate tiers by name: requests per 10 s, minute and day (0: unlimited).
    pub tiers: std::collections::BTreeMap<String, [u32; 3]>,
    /// The tier a key gets when issued with neither a tier nor limits.
    pub default_tier: String,
    /// Limits on every key of one tenant together (0: unlimited).
    pub tenant: [u32; 3],
    /// Keys one tenant may hold that are not revoked.
    pub max_per_tenant: usize,
    /// How long a rotated key keeps verifying by default.
    pub default_grace: Duration,
    /// How long a client may reuse a verification (revocations are pushed sooner).
    pub cache: Duration,
    /// Limiter scopes (keys, tenants, identities) kept in memory at once.
    pub limiter_entries: usize,
}

/// The least severe log lines written. vaultd never logs a secret at any level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// And what the daemon does (the default).
    Info,
    /// And detail for debugging.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }

    /// The level as `tracing` filters it.
    pub fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            Self::Error => LevelFilter::ERROR,
            Self::Warn => LevelFilter::WARN,
            Self::Info => LevelFilter::INFO,
            Self::Debug => LevelFilter::DEBUG,
            Self::Trace => LevelFilter::TRACE,
        }
    }
}

/// How tenant keys are kept and rotated.
#[derive(Debug, Clone, PartialEq)]
pub struct KeysConfig {
    /// Unwrapped tenant keys kept in locked memory at once; the least recently used
    /// go (and are unwrapped again when next used).
    pub tenant_key_cache: usize,
    /// Encryptions after which a tenant key is rotated before its next use.
    pub tenant_rotate_after: u64,
}

/// Bounds per caller and per connection, so that one certificate holder (or anyone
/// who can reach the port) cannot exhaust what everyone needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// TLS connections one identity may hold at once; more are closed at once.
    pub connections_per_identity: usize,
    /// `WatchRevocations` streams one identity may hold at once.
    pub watches_per_identity: usize,
    /// A unary request still running after this fails `DEADLINE_EXCEEDED`.
    pub request_timeout: Duration,
    /// TLS handshakes in progress at once; a new one takes the slot of the oldest.
    pub handshakes: usize,
    /// TLS handshakes in progress from one source address.
    pub handshakes_per_source: usize,
    /// A connection that sends nothing for this long after connecting is dropped.
    pub first_byte_timeout: Duration,
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    /// gRPC over mutual TLS.
    pub grpc: SocketAddr,
    /// Plain HTTP health and metrics.
    pub http: SocketAddr,
    /// The local Unix socket, if any.
    pub socket: Option<PathBuf>,
}

/// The audit sink.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// The JSON-lines file (or FIFO).
    pub path: PathBuf,
    /// `always` (fsync before answering) or group commit.
    pub fsync: vault_audit::FsyncPolicy,
    /// How long a request waits for its record before failing `UNAVAILABLE`.
    pub write_deadline: Duration,
    /// Records between signed checkpoints.
    pub checkpoint_every: u64,
    /// Free bytes the log's filesystem must keep; below it requests are refused
    /// before anything is written (0: no check).
    pub min_free: u64,
    /// Refused requests of one caller recorded one by one per second (bursts of five
    /// times that); the rest are counted in a summary record.
    pub refusals_per_second: u32,
}

/// Lease and session limits.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseConfig {
    /// Lease lifetime when the caller asks for none (capped by the grant's `max_ttl`).
    pub default_ttl: Duration,
    /// Active leases across all identities.
    pub max_total: usize,
    /// Active leases of one identity when its grant sets no `max_active_leases`.
    pub max_per_identity: u32,
    /// How long a session lives.
    pub session_ttl: Duration,
    /// Sessions across all identities; each holds 2 KiB of locked memory.
    pub max_sessions: usize,
    /// Sessions one identity may hold; opening another evicts its least recently used.
    pub sessions_per_identity: usize,
}

/// Seal lifecycle tunables.
#[derive(Debug, Clone, PartialEq)]
pub struct SealConfig {
    /// How long unseal progress survives.
    pub unseal_timeout: Duration,
    /// Default grace window of a rotated-out secret version.
    pub default_grace: Duration,
    /// The longest grace window a rotation may ask for.
    pub max_grace: Duration,
    /// The PKCS#11 token for auto-unseal, if any.
    pub pkcs11: Option<std::sync::Arc<crate::hsm::Pkcs11Config>>,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse, or a key has the wrong type or is unknown.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A required key is missing.
    #[error("{key} is required: {why}")]
    Missing {
        /// The key, e.g. `tls.client_ca`.
        key: &'static str,
        /// What it is for.
        why: &'static str,
    },
    /// A value is out of range or malformed.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What would be accepted.
        reason: String,
    },
    /// A value in one table of an array of tables, such as `[[alerts.webhook]]`, is
    /// missing or invalid. Shown as one key: `alerts.webhook[0].url: …`.
    #[error("{array}[{index}].{source}")]
    InTable {
        /// The array, e.g. `alerts.webhook`.
        array: &'static str,
        /// The table's position in the file, from 0.
        index: usize,
        /// What is wrong, its key relative to the table (e.g. `url`).
        #[source]
        source: Box<ConfigError>,
    },
}

impl Config {
    /// Reads and validates `path`. Relative paths inside are taken relative to the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(path, &text, base)
    }

    /// Validates configuration text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: file.to_path_buf(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let at = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let identities = match raw.tls.identities.as_deref() {
            None | Some("spiffe") => IdentitySource::SpiffeOnly,
            Some("spiffe-or-dns") => IdentitySource::SpiffeOrDns,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "tls.identities",
                    reason: format!("{other:?}: use \"spiffe\" or \"spiffe-or-dns\""),
                });
            }
        };
        let tls = TlsFiles {
            cert: at(required(
                raw.tls.cert,
                "tls.cert",
                "the server certificate chain (PEM)",
            )?),
            key: at(required(
                raw.tls.key,
                "tls.key",
                "the server private key (PEM)",
            )?),
            client_ca: Some(at(required(
                raw.tls.client_ca,
                "tls.client_ca",
                "vaultd requires client certificates and will not start without a client CA",
            )?)),
            crls: raw.tls.crls.into_iter().map(at).collect(),
            crl_expiry: match raw.tls.crl_expiry.as_deref() {
                None | Some("enforce") => CrlExpiry::Enforce,
                Some("ignore") => CrlExpiry::Ignore,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        key: "tls.crl_expiry",
                        reason: format!("{other:?}: use \"enforce\" or \"ignore\""),
                    });
                }
            },
        };
        let fsync = match raw.audit.fsync.as_deref() {
            None | Some("always") => vault_audit::FsyncPolicy::Always,
            Some("group") => vault_audit::FsyncPolicy::Group(duration(
                "audit.group_commit",
                raw.audit.group_commit.as_deref(),
                Duration::from_millis(10),
                (Duration::from_millis(1), SECOND),
            )?),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "audit.fsync",
                    reason: format!("{other:?}: use \"always\" or \"group\""),
                });
            }
        };
        let storage = storage::storage(raw.storage, &at)?;
        let cluster = cluster::cluster(raw.cluster, &storage, &at)?;
        Ok(Self {
            node: node_name(raw.node)?,
            log_level: match raw.log_level.as_deref() {
                None => LogLevel::Info,
                Some(text) => LogLevel::parse(text).ok_or_else(|| ConfigError::Invalid {
                    key: "log_level",
                    reason: format!("{text:?}: use error, warn, info, debug or trace"),
                })?,
            },
            listen: Listen {
                grpc: address("listen.grpc", raw.listen.grpc.as_deref(), "127.0.0.1:8200")?,
                http: address("listen.http", raw.listen.http.as_deref(), "127.0.0.1:8201")?,
                socket: raw.listen.socket.map(at),
            },
            tls,
            identities,
            storage,
            cluster,
            policy_dir: at(required(
                raw.policy.dir,
                "policy.dir",
                "the directory of policy documents (default deny without them)",
            )?),
            audit: AuditConfig {
                path: at(required(
                    raw.audit.path,
                    "audit.path",
                    "vaultd answers no request it cannot audit",
                )?),
                fsync,
                write_deadline: duration(
                    "audit.write_deadline",
                    raw.audit.write_deadline.as_deref(),
                    Duration::from_secs(2),
                    (Duration::from_millis(10), Duration::from_secs(60)),
                )?,
                checkpoint_every: count(
                    "audit.checkpoint_every",
                    raw.audit.checkpoint_every,
                    1000,
                    (1, 1_000_000),
                )?,
                min_free: size("audit.min_free", raw.audit.min_free.as_deref(), 64 << 20)?,
                refusals_per_second: count(
                    "audit.refusals_per_second",
                    raw.audit.refusals_per_second,
                    20,
                    (1, 100_000),
                )?,
            },
            leases: LeaseConfig {
                default_ttl: duration(
                    "leases.default_ttl",
                    raw.leases.default_ttl.as_deref(),
                    Duration::from_secs(60),
                    (SECOND, DAY),
                )?,
                max_total: count(
                    "leases.max_total",
                    raw.leases.max_total,
                    100_000,
                    (1, 10_000_000),
                )?,
                max_per_identity: count(
                    "leases.max_per_identity",
                    raw.leases.max_per_identity,
                    10_000,
                    (1, 10_000_000),
                )?,
                session_ttl: duration(
                    "leases.session_ttl",
                    raw.leases.session_ttl.as_deref(),
                    Duration::from_secs(3600),
                    (SECOND, DAY),
                )?,
                max_sessions: count(
                    "leases.max_sessions",
                    raw.leases.max_sessions,
                    1024,
                    (1, 1_000_000),
                )?,
                sessions_per_identity: count(
                    "leases.sessions_per_identity",
                    raw.leases.sessions_per_identity,
                    64,
                    (1, 10_000),
                )?,
            },
            limits: Limits {
                connections_per_identity: count(
                    "limits.connections_per_identity",
                    raw.limits.connections_per_identity,
                    256,
                    (1, 100_000),
                )?,
                watches_per_identity: count(
                    "limits.watches_per_identity",
                    raw.limits.watches_per_identity,
                    64,
                    (1, 100_000),
                )?,
                request_timeout: duration(
                    "limits.request_timeout",
                    raw.limits.request_timeout.as_deref(),
                    Duration::from_secs(30),
                    (Duration::from_millis(100), Duration::from_secs(600)),
                )?,
                handshakes: count(
                    "limits.handshakes",
                    raw.limits.handshakes,
                    256,
                    (1, 100_000),
                )?,
                handshakes_per_source: count(
                    "limits.handshakes_per_source",
                    raw.limits.handshakes_per_source,
                    64,
                    (1, 100_000),
                )?,
                first_byte_timeout: duration(
                    "limits.first_byte_timeout",
                    raw.limits.first_byte_timeout.as_deref(),
                    Duration::from_secs(3),
                    (Duration::from_millis(100), Duration::from_secs(60)),
                )?,
            },
            keys: KeysConfig {
                tenant_key_cache: count(
                    "keys.tenant_key_cache",
                    raw.keys.tenant_key_cache,
                    1024,
                    (1, 1_000_000),
                )?,
                tenant_rotate_after: count(
                    "keys.tenant_rotate_after",
                    raw.keys.tenant_rotate_after,
                    vault_crypto::aead::ROTATE_AFTER,
                    (1, vault_crypto::aead::ROTATE_AFTER),
                )?,
            },
            seal: seal(raw.seal, &at)?,
            apikeys: apikeys(&raw.apikeys)?,
            alerts: crate::alerts::AlertsConfig::parse(raw.alerts, &at)?,
            breakglass: breakglass(&raw.breakglass)?,
            anomalies: anomalies(&raw.anomalies)?,
        })
    }
}

#[cfg(test)]
mod tests;
