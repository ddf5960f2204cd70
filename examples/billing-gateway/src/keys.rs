//! Platform API keys: `vk_live_<id>_<secret>` or `vk_test_<id>_<secret>`.
//!
//! **Temporary.** Until vaultd verifies API keys (`VerifyApiKey`), the gateway reads
//! a table of keys from a file: for each key id, the SHA-256 of the whole key, its
//! tenant, environment and scopes. Keys are random and long, so a fast hash is
//! enough; the comparison is constant time. The file holds no usable key. When
//! vaultd serves `VerifyApiKey`, this module is replaced by one call to it.
//!
//! ```toml
//! [[key]]
//! id = "k7Qe2"
//! sha256 = "…64 hex digits…"
//! tenant = "acme"
//! environment = "live"
//! scopes = ["proxy:openai"]      # or "proxy:*"
//! ```

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use vault_client::Environment;

use crate::config::ConfigError;

/// Who a verified key belongs to and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    /// The key's public id.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The environment the key works in.
    pub environment: Environment,
    /// Granted scopes, e.g. `proxy:openai`.
    pub scopes: Vec<String>,
}

impl KeyOwner {
    /// Whether the key may call `provider` through the proxy.
    pub fn may_proxy(&self, provider: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s == "proxy:*" || s.strip_prefix("proxy:") == Some(provider))
    }
}

struct Entry {
    digest: [u8; 32],
    owner: KeyOwner,
}

/// The table of API keys.
pub struct ApiKeys {
    by_id: HashMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    key: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    sha256: String,
    tenant: String,
    environment: String,
    scopes: Vec<String>,
}

/// SHA-256 of a whole API key, as the table stores it (hex).
pub fn digest_hex(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    vault_crypto::hex::encode(digest.as_ref()).to_string()
}

impl ApiKeys {
    /// Reads the table.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let doc: Doc = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut by_id = HashMap::new();
        for (i, k) in doc.key.into_iter().enumerate() {
            let invalid = |reason: String| ConfigError::Invalid {
                key: format!("key[{i}]"),
                reason,
            };
            let digest: [u8; 32] = vault_crypto::hex::decode(&k.sha256)
                .and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok())
                .ok_or_else(|| invalid("sha256 must be 64 hex digits".into()))?;
            let environment = k
                .environment
                .parse()
                .map_err(|e: vault_client::UnknownEnvironment| invalid(e.to_string()))?;
            let owner = KeyOwner {
                id: k.id.clone(),
                tenant: k.tenant,
                environment,
                scopes: k.scopes,
            };
            if by_id
                .insert(k.id.clone(), Entry { digest, owner })
                .is_some()
            {
                return Err(invalid(format!("key id {:?} appears twice", k.id)));
            }
        }
        Ok(Self { by_id })
    }

    /// The owner of `key`, if it is a known, well-formed key of its environment.
    pub fn verify(&self, key: &str) -> Option<KeyOwner> {
        let (environment, rest) = match key.strip_prefix("vk_live_") {
            Some(rest) => (Environment::Live, rest),
            None => (Environment::Test, key.strip_prefix("vk_test_")?),
        };
        let (id, secret) = rest.split_once('_')?;
        if secret.is_empty() {
            return None;
        }
        let entry = self.by_id.get(id)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        // Every byte is compared, whatever the first difference.
        let difference = digest
            .as_ref()
            .iter()
            .zip(entry.digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        let matches = std::hint::black_box(difference) == 0;
        (matches && entry.owner.environment == environment).then(|| entry.owner.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_only_whole_and_in_their_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let live = "vk_live_k1_s3cr3t";
        std::fs::write(
            &path,
            format!(
                "[[key]]\nid = \"k1\"\nsha256 = \"{}\"\ntenant = \"acme\"\nenvironment = \"live\"\nscopes = [\"proxy:openai\"]\n",
                digest_hex(live)
            ),
        )
        .unwrap();
        let keys = ApiKeys::load(&path).unwrap();
        let owner = keys.verify(live).unwrap();
        assert_eq!(owner.tenant, "acme");
        assert!(owner.may_proxy("openai") && !owner.may_proxy("anthropic"));
        for bad in [
            "vk_live_k1_s3cr3",
            "vk_test_k1_s3cr3t",
            "vk_live_k2_s3cr3t",
            "vk_live_k1_",
            "k1_s3cr3t",
            "",
        ] {
            assert!(keys.verify(bad).is_none(), "{bad}");
        }
    }
}
