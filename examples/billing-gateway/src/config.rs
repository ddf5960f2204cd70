//! The gateway's configuration file.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! usage_log = "usage.jsonl"            # one JSON line per counted request
//!
//! [vault]
//! endpoints = ["https://vault-1.internal:8200", "https://vault-2.internal:8200"]
//! ca = "vault-ca.pem"
//! cert = "gateway.pem"                 # its SPIFFE ID must be granted `lease` of byok/*
//!                                      # and `apikeys.verify`, for every tenant
//! key = "gateway.key"
//! lease_ttl = "60s"
//! api_key_cache = 10000                # API-key verifications reused, see below
//!
//! [providers.openai]
//! upstream = "https://api.openai.com"  # http:// or https://
//! header = "authorization"             # where the BYOK key goes (default)
//! prefix = "Bearer "                   # before the key (default)
//! ca = "/etc/ssl/certs/ca-certificates.crt"   # trust for https upstreams
//! ```
//!
//! Platform API keys are issued, verified, limited and revoked by vaultd; the gateway
//! holds no key table. (The `api_keys` table of earlier versions is refused, by name.)
//!
//! `vault.api_key_cache` is how many verifications the vault client reuses, each for
//! as long as vaultd allows (its `[apikeys] cache`, 5 s by default), until a
//! revocation evicts it. A reused verification reaches no rate limit: with the cache,
//! a key's burst, minute and day limits count the verifications that reach vaultd,
//! not every request. Daily quotas count every request either way (a key with a quota
//! is never answered from the cache). `0` asks vaultd on every request, so every
//! request counts against the key's limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// API-key verifications reused by default.
const DEFAULT_API_KEY_CACHE: usize = 10_000;
/// The most API-key verifications reused (a few hundred bytes each).
const MAX_API_KEY_CACHE: usize = 1_000_000;
/// The longest provider name: `proxy:` and the name make a scope of at most 64.
const MAX_PROVIDER_NAME: usize = 58;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or a key is unknown or mistyped.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// What would be accepted.
        reason: String,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where customers connect.
    pub listen: SocketAddr,
    /// The usage ledger.
    pub usage_log: PathBuf,
    /// How to reach vaultd.
    pub vault: VaultConfig,
    /// Providers by name (the `{provider}` of `/v1/proxy/{provider}/…`).
    pub providers: BTreeMap<String, Provider>,
}

/// How to reach vaultd.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// vaultd endpoints, tried in order.
    pub endpoints: Vec<String>,
    /// The CA vaultd's certificate chains to.
    pub ca: PathBuf,
    /// The gateway's client certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Lease lifetime to ask for.
    pub lease_ttl: Duration,
    /// API-key verifications the client reuses (0: none).
    pub api_key_cache: usize,
}

/// One upstream provider.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Base URL; the rest of the request path is appended.
    pub upstream: http::Uri,
    /// Header that carries the BYOK key.
    pub header: http::HeaderName,
    /// Text before the key in that header.
    pub prefix: String,
    /// CA bundle trusted for an https upstream.
    pub ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    usage_log: PathBuf,
    /// Gone: read only to say so.
    api_keys: Option<toml::Value>,
    vault: RawVault,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    endpoints: Vec<String>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    lease_ttl: Option<String>,
    api_key_cache: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    upstream: String,
    header: Option<String>,
    prefix: Option<String>,
    ca: Option<PathBuf>,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

fn seconds(key: &str, text: &str) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(invalid(key, "must be at least 1s")),
        Err(_) => Err(invalid(
            key,
            format!("{text:?}: use a duration such as \"60s\" or \"5m\""),
        )),
    }
}

impl Config {
    /// Reads and validates `path`; relative paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: Raw = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if raw.api_keys.is_some() {
            return Err(invalid(
                "api_keys",
                "vaultd verifies platform API keys now: remove this key, issue keys from \
                 vaultd (IssueApiKey), and delete the table it names",
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let at = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen = listen
            .parse()
            .map_err(|_| invalid("listen", format!("{listen:?}: use ip:port")))?;
        if raw.vault.endpoints.is_empty() {
            return Err(invalid(
                "vault.endpoints",
                "name at least one vaultd endpoint",
            ));
        }
        let api_key_cache = raw.vault.api_key_cache.unwrap_or(DEFAULT_API_KEY_CACHE);
        if api_key_cache > MAX_API_KEY_CACHE {
            return Err(invalid(
                "vault.api_key_cache",
                format!("at most {MAX_API_KEY_CACHE} verifications; 0 turns the cache off"),
            ));
        }
        let mut providers = BTreeMap::new();
        for (name, p) in raw.providers {
            let key = |field: &str| format!("providers.{name}.{field}");
            // A key for this provider carries `proxy:{name}`: a scope vaultd can issue
            // has at most 64 characters.
            if !(1..=MAX_PROVIDER_NAME).contains(&name.len())
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(invalid(
                    format!("providers.{name}"),
                    "provider names are 1-58 characters a-z, 0-9 and -",
                ));
            }
            let upstream: http::Uri = p
                .upstream
                .parse()
                .map_err(|_| invalid(key("upstream"), format!("{:?} is not a URL", p.upstream)))?;
            match (upstream.scheme_str(), upstream.host(), &p.ca) {
                (Some("http"), Some(_), _) | (Some("https"), Some(_), Some(_)) => {}
                (Some("https"), Some(_), None) => {
                    return Err(invalid(
                        key("ca"),
                        "an https upstream needs the CA bundle to trust",
                    ));
                }
                _ => {
                    return Err(invalid(
                        key("upstream"),
                        "use http://host[:port] or https://host[:port]",
                    ));
                }
            }
            let header = p.header.as_deref().unwrap_or("authorization");
            let header = http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| invalid(key("header"), format!("{header:?} is not a header name")))?;
            providers.insert(
                name.clone(),
                Provider {
                    upstream,
                    header,
                    prefix: p.prefix.unwrap_or_else(|| "Bearer ".to_owned()),
                    ca: p.ca.map(at),
                },
            );
        }
        Ok(Self {
            listen,
            usage_log: at(raw.usage_log),
            vault: VaultConfig {
                endpoints: raw.vault.endpoints,
                ca: at(raw.vault.ca),
                cert: at(raw.vault.cert),
                key: at(raw.vault.key),
                lease_ttl: seconds(
                    "vault.lease_ttl",
                    raw.vault.lease_ttl.as_deref().unwrap_or("60s"),
                )?,
                api_key_cache,
            },
            providers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &str = "[vault]\nendpoints = [\"https://vault:8200\"]\nca = \"ca.pem\"\n\
                         cert = \"gw.pem\"\nkey = \"gw.key\"\n";

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn a_minimal_configuration_loads_with_its_defaults() {
        let config = load(&format!(
            "usage_log = \"usage.jsonl\"\n{VAULT}\n[providers.openai]\nupstream = \"http://127.0.0.1:9000\"\n"
        ))
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.vault.lease_ttl, Duration::from_secs(60));
        assert_eq!(config.vault.api_key_cache, DEFAULT_API_KEY_CACHE);
        let openai = &config.providers["openai"];
        assert_eq!(openai.header, "authorization");
        assert_eq!(openai.prefix, "Bearer ");
        assert!(config.usage_log.is_absolute());
    }

    #[test]
    fn the_old_key_table_is_refused_by_name() {
        let refused = load(&format!(
            "usage_log = \"usage.jsonl\"\napi_keys = \"api-keys.toml\"\n{VAULT}"
        ))
        .unwrap_err();
        let ConfigError::Invalid { key, reason } = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(key, "api_keys");
        assert!(reason.contains("vaultd verifies"), "{reason}");
    }

    #[test]
    fn a_provider_name_must_make_a_scope_vaultd_can_issue() {
        let longest = "a".repeat(MAX_PROVIDER_NAME);
        let provider = |name: &str| {
            load(&format!(
                "usage_log = \"u.jsonl\"\n{VAULT}\n[providers.{name}]\nupstream = \"http://127.0.0.1:9000\"\n"
            ))
        };
        assert!(provider(&longest).is_ok());
        assert_eq!(format!("proxy:{longest}").len(), 64);
        for bad in [
            format!("{longest}a"),
            "Open_AI".to_owned(),
            "\"\"".to_owned(),
        ] {
            assert!(
                matches!(provider(&bad), Err(ConfigError::Invalid { .. })),
                "{bad}"
            );
        }
    }
}
