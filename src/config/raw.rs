//! The configuration file as written (every key optional, unknown keys refused), and
//! the checks that turn one value into a validated setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, SealConfig};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) node: Option<String>,
    pub(super) log_level: Option<String>,
    #[serde(default)]
    pub(super) listen: RawListen,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) storage: super::storage::RawStorage,
    #[serde(default)]
    pub(super) cluster: super::cluster::RawCluster,
    #[serde(default)]
    pub(super) policy: RawPolicy,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) leases: RawLeases,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) keys: RawKeys,
    #[serde(default)]
    pub(super) seal: RawSeal,
    #[serde(default)]
    pub(super) apikeys: RawApiKeys,
    #[serde(default)]
    pub(super) alerts: crate::alerts::config::RawAlerts,
    #[serde(default)]
    pub(super) breakglass: RawBreakGlass,
    #[serde(default)]
    pub(super) anomalies: RawAnomalies,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnomalies {
    pub(super) enabled: Option<bool>,
    pub(super) levels: Option<Vec<f64>>,
    pub(super) warmup_minutes: Option<u32>,
    pub(super) min_per_minute: Option<u32>,
    pub(super) half_life: Option<String>,
    pub(super) first_access: Option<bool>,
    pub(super) failures: Option<u32>,
    pub(super) failure_window: Option<String>,
    pub(super) max_tracked: Option<usize>,
}

/// The `[anomalies]` section.
pub(super) fn anomalies(
    raw: &RawAnomalies,
) -> Result<crate::anomalies::AnomalyConfig, ConfigError> {
    let default = crate::anomalies::AnomalyConfig::default();
    let levels = raw.levels.clone().unwrap_or(default.levels);
    let ascending = levels.windows(2).all(|w| matches!(w, [a, b] if a < b));
    if levels.is_empty()
        || levels.len() > 5
        || !ascending
        || levels.iter().any(|l| !(1.5..=1000.0).contains(l))
    {
        return Err(ConfigError::Invalid {
            key: "anomalies.levels",
            reason: "give 1 to 5 ascending multiples of the baseline, each 1.5 to 1000 (e.g. [3.0, 5.0, 10.0])".into(),
        });
    }
    Ok(crate::anomalies::AnomalyConfig {
        enabled: raw.enabled.unwrap_or(default.enabled),
        levels,
        warmup_minutes: count(
            "anomalies.warmup_minutes",
            raw.warmup_minutes,
            default.warmup_minutes,
            (1, 10_080),
        )?,
        min_per_minute: count(
            "anomalies.min_per_minute",
            raw.min_per_minute,
            default.min_per_minute,
            (1, 1_000_000),
        )?,
        half_life: duration(
            "anomalies.half_life",
            raw.half_life.as_deref(),
            default.half_life,
            (Duration::from_secs(60), 30 * DAY),
        )?,
        first_access: raw.first_access.unwrap_or(default.first_access),
        failures: count(
            "anomalies.failures",
            raw.failures,
            default.failures,
            (1, 1_000_000),
        )?,
        failure_window: duration(
            "anomalies.failure_window",
            raw.failure_window.as_deref(),
            default.failure_window,
            (SECOND, DAY),
        )?,
        max_tracked: count(
            "anomalies.max_tracked",
            raw.max_tracked,
            default.max_tracked,
            (16, 10_000_000),
        )?,
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreakGlass {
    pub(super) approvals: Option<u32>,
    pub(super) max_duration: Option<String>,
    pub(super) pending_for: Option<String>,
}

/// The `[breakglass]` section.
pub(super) fn breakglass(
    raw: &RawBreakGlass,
) -> Result<crate::breakglass::BreakGlassConfig, ConfigError> {
    let default = crate::breakglass::BreakGlassConfig::default();
    Ok(crate::breakglass::BreakGlassConfig {
        approvals: count(
            "breakglass.approvals",
            raw.approvals,
            default.approvals,
            (1, 16),
        )?,
        max_duration: duration(
            "breakglass.max_duration",
            raw.max_duration.as_deref(),
            default.max_duration,
            (SECOND, 7 * DAY),
        )?,
        pending_for: duration(
            "breakglass.pending_for",
            raw.pending_for.as_deref(),
            default.pending_for,
            (SECOND, 7 * DAY),
        )?,
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiKeys {
    pub(super) default_tier: Option<String>,
    #[serde(default)]
    pub(super) tiers: std::collections::BTreeMap<String, RawRate>,
    pub(super) tenant: Option<RawRate>,
    pub(super) max_per_tenant: Option<usize>,
    pub(super) default_grace: Option<String>,
    pub(super) cache: Option<String>,
    pub(super) limiter_entries: Option<usize>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRate {
    #[serde(default)]
    pub(super) burst: u32,
    #[serde(default)]
    pub(super) per_minute: u32,
    #[serde(default)]
    pub(super) per_day: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    pub(super) tenant_key_cache: Option<usize>,
    pub(super) tenant_rotate_after: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) connections_per_identity: Option<usize>,
    pub(super) watches_per_identity: Option<usize>,
    pub(super) request_timeout: Option<String>,
    pub(super) handshakes: Option<usize>,
    pub(super) handshakes_per_source: Option<usize>,
    pub(super) first_byte_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) grpc: Option<String>,
    pub(super) http: Option<String>,
    pub(super) socket: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) client_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) crls: Vec<PathBuf>,
    pub(super) identities: Option<String>,
    pub(super) crl_expiry: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) path: Option<PathBuf>,
    pub(super) fsync: Option<String>,
    pub(super) group_commit: Option<String>,
    pub(super) write_deadline: Option<String>,
    pub(super) checkpoint_every: Option<u64>,
    pub(super) min_free: Option<String>,
    pub(super) refusals_per_second: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeases {
    pub(super) default_ttl: Option<String>,
    pub(super) max_total: Option<usize>,
    pub(super) max_per_identity: Option<u32>,
    pub(super) session_ttl: Option<String>,
    pub(super) max_sessions: Option<usize>,
    pub(super) sessions_per_identity: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSeal {
    pub(super) unseal_timeout: Option<String>,
    pub(super) default_grace: Option<String>,
    pub(super) max_grace: Option<String>,
    pub(super) pkcs11: Option<RawPkcs11>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPkcs11 {
    pub(super) module: Option<PathBuf>,
    pub(super) token: Option<String>,
    pub(super) key_label: Option<String>,
    pub(super) pin_file: Option<PathBuf>,
}

pub(crate) fn duration(
    key: &'static str,
    value: Option<&str>,
    default: Duration,
    range: (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let invalid = |reason: String| ConfigError::Invalid { key, reason };
    let d = humantime::parse_duration(text).map_err(|_| {
        invalid(format!(
            "{text:?} is not a duration; use a number with ms, s, m, h or d (e.g. \"30s\")"
        ))
    })?;
    if d < range.0 || d > range.1 {
        return Err(invalid(format!(
            "{text} is out of range {:?}..={:?}",
            range.0, range.1
        )));
    }
    Ok(d)
}

/// A size such as `64MiB`, `512KiB`, `1GiB`, `100MB` or a plain number of bytes.
pub(super) fn size(
    key: &'static str,
    value: Option<&str>,
    default: u64,
) -> Result<u64, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let invalid = || ConfigError::Invalid {
        key,
        reason: format!(
            "{text:?} is not a size; use a number of bytes or one with KiB, MiB, GiB, KB, MB or GB (e.g. \"64MiB\")"
        ),
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit_bytes: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(invalid()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_bytes))
        .ok_or_else(invalid)
}

pub(crate) fn count<T: PartialOrd + Copy + fmt::Display>(
    key: &'static str,
    value: Option<T>,
    default: T,
    range: (T, T),
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    if v < range.0 || v > range.1 {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("{v} is out of range {}..={}", range.0, range.1),
        });
    }
    Ok(v)
}

pub(super) fn address(
    key: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or(default);
    text.parse().map_err(|_| ConfigError::Invalid {
        key,
        reason: format!("{text:?} is not an address; use ip:port such as \"127.0.0.1:8200\""),
    })
}

/// `key` holds a value that is not accepted; `reason` says what would be.
pub(super) fn invalid(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_owned(),
    }
}

pub(crate) fn required<T>(
    value: Option<T>,
    key: &'static str,
    why: &'static str,
) -> Result<T, ConfigError> {
    value.ok_or(ConfigError::Missing { key, why })
}

pub(super) fn node_name(value: Option<String>) -> Result<String, ConfigError> {
    let name = match value {
        Some(name) => name,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| valid_node(h))
            .unwrap_or_else(|| "vaultd".to_owned()),
    };
    if !valid_node(&name) {
        return Err(ConfigError::Invalid {
            key: "node",
            reason: format!("{name:?}: use 1-64 characters a-z, A-Z, 0-9, '.', '-', '_'"),
        });
    }
    Ok(name)
}

pub(super) fn valid_node(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub(crate) const SECOND: Duration = Duration::from_secs(1);
pub(super) const DAY: Duration = Duration::from_secs(86_400);

/// The `[seal]` section; `at` resolves paths against the configuration's directory.
pub(super) fn seal(
    raw: RawSeal,
    at: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<SealConfig, ConfigError> {
    let max_grace = duration(
        "seal.max_grace",
        raw.max_grace.as_deref(),
        30 * DAY,
        (Duration::ZERO, 365 * DAY),
    )?;
    let default_grace = duration(
        "seal.default_grace",
        raw.default_grace.as_deref(),
        DAY.min(max_grace),
        (Duration::ZERO, max_grace),
    )?;
    Ok(SealConfig {
        unseal_timeout: duration(
            "seal.unseal_timeout",
            raw.unseal_timeout.as_deref(),
            Duration::from_secs(600),
            (SECOND, DAY),
        )?,
        default_grace,
        max_grace,
        pkcs11: raw.pkcs11.map(|p| pkcs11(p, at)).transpose()?.map(Arc::new),
    })
}

/// `[seal.pkcs11]`: every key but `key_label` is required once the table is there.
fn pkcs11(
    raw: RawPkcs11,
    at: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<crate::hsm::Pkcs11Config, ConfigError> {
    let label = |key: &'static str, text: String| {
        if text.is_empty() || text.len() > 32 {
            return Err(ConfigError::Invalid {
                key,
                reason: "a PKCS#11 label is 1 to 32 bytes".into(),
            });
        }
        Ok(text)
    };
    Ok(crate::hsm::Pkcs11Config {
        module: at(required(
            raw.module,
            "seal.pkcs11.module",
            "the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so",
        )?),
        token: label(
            "seal.pkcs11.token",
            required(raw.token, "seal.pkcs11.token", "the token's label")?,
        )?,
        key_label: label(
            "seal.pkcs11.key_label",
            raw.key_label.unwrap_or_else(|| "vaultd-unseal".to_owned()),
        )?,
        pin_file: at(required(
            raw.pin_file,
            "seal.pkcs11.pin_file",
            "a file (mode 0600) holding the token's user PIN",
        )?),
    })
}

/// The `[apikeys]` section: tiers (a `standard` one unless others are named), the
/// default tier (which must exist), per-tenant limits, bounds.
pub(super) fn apikeys(raw: &RawApiKeys) -> Result<super::ApiKeysConfig, ConfigError> {
    let rate = |r: &RawRate| [r.burst, r.per_minute, r.per_day];
    let mut tiers: std::collections::BTreeMap<String, [u32; 3]> = raw
        .tiers
        .iter()
        .map(|(name, r)| (name.clone(), rate(r)))
        .collect();
    if tiers.is_empty() {
        tiers.insert("standard".to_owned(), [100, 1_000, 0]);
    }
    if let Some(bad) = tiers.keys().find(|name| {
        name.is_empty()
            || name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) {
        return Err(ConfigError::Invalid {
            key: "apikeys.tiers",
            reason: format!("{bad:?}: a tier name is 1-32 characters a-z, 0-9 or '-'"),
        });
    }
    let default_tier = raw
        .default_tier
        .clone()
        .unwrap_or_else(|| "standard".to_owned());
    if !tiers.contains_key(&default_tier) {
        return Err(ConfigError::Invalid {
            key: "apikeys.default_tier",
            reason: format!("{default_tier:?} is not one of the tiers in [apikeys.tiers]"),
        });
    }
    Ok(super::ApiKeysConfig {
        tiers,
        default_tier,
        tenant: raw.tenant.as_ref().map_or([0; 3], rate),
        max_per_tenant: count(
            "apikeys.max_per_tenant",
            raw.max_per_tenant,
            1_000,
            (1, 1_000_000),
        )?,
        default_grace: duration(
            "apikeys.default_grace",
            raw.default_grace.as_deref(),
            DAY,
            (Duration::ZERO, 30 * DAY),
        )?,
        cache: duration(
            "apikeys.cache",
            raw.cache.as_deref(),
            5 * SECOND,
            (Duration::ZERO, 60 * SECOND),
        )?,
        limiter_entries: count(
            "apikeys.limiter_entries",
            raw.limiter_entries,
            200_000,
            (1, 10_000_000),
        )?,
    })
}
