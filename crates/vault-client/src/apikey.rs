//! Platform API keys as this client holds them: the key text (a secret), what a
//! verification says about a key (public) or why it refused it, and what an admin
//! asks for at issue.

use std::fmt;
use std::time::SystemTime;

use secrecy::ExposeSecret;
use tonic::Code;
use vault_proto::apikey::{self, FormatError, ParsedKey};
use zeroize::Zeroizing;

use crate::environment::Environment;

/// A platform API key (`vk_live_…` or `vk_test_…`), as a customer sends it or as
/// [`crate::Client::issue_api_key`] returns it once. Held in one zeroising buffer,
/// readable only through [`ExposeSecret`]. No `Clone` (a copy would be one more buffer
/// to wipe), and its `Debug` shows only the public hint `vk_live_<key id>_…`.
pub struct ApiKeyText(Zeroizing<String>);

impl ApiKeyText {
    /// Takes charge of `text` (not copied).
    pub fn new(text: Zeroizing<String>) -> Self {
        Self(text)
    }

    /// The key taken apart and its checksum checked, with no lookup.
    pub(crate) fn parse(&self) -> Result<ParsedKey<'_>, FormatError> {
        apikey::parse(&self.0)
    }

    /// The public key id inside the key (what lists, audit records and revocations
    /// name), if the key is well-formed.
    pub fn key_id(&self) -> Option<&str> {
        self.parse().ok().map(|p| p.id)
    }

    /// The environment the key belongs to, if it is well-formed.
    pub fn environment(&self) -> Option<Environment> {
        let parsed = self.parse().ok()?;
        Environment::from_proto(parsed.environment as i32)
    }
}

impl From<String> for ApiKeyText {
    /// Takes charge of `text` (moved, not copied): it is wiped when the key is dropped.
    fn from(text: String) -> Self {
        Self(Zeroizing::new(text))
    }
}

impl ExposeSecret<str> for ApiKeyText {
    fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parse() {
            Ok(parsed) => {
                let env = Environment::from_proto(parsed.environment as i32)
                    .map_or("?", Environment::as_str);
                write!(f, "ApiKeyText({})", apikey::hint(env, parsed.id))
            }
            Err(_) => f.write_str("ApiKeyText([not a well-formed key; redacted])"),
        }
    }
}

/// Why an API key was refused ([`crate::Error::ApiKeyRefused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiKeyRefusal {
    /// Malformed (a typo, a truncated copy: its checksum fails), unknown, or not the key
    /// its id names. `UNAUTHENTICATED`.
    Invalid,
    /// Revoked. `UNAUTHENTICATED`.
    Revoked,
    /// Past its expiry, or rotated and past its grace window. `UNAUTHENTICATED`.
    Expired,
    /// A key of the other environment than the request's. `PERMISSION_DENIED`.
    Environment,
    /// The key lacks the scope the request needs. `PERMISSION_DENIED`.
    Scope,
}

impl ApiKeyRefusal {
    /// The gRPC code vaultd answers this refusal with.
    pub fn code(self) -> Code {
        match self {
            ApiKeyRefusal::Invalid | ApiKeyRefusal::Revoked | ApiKeyRefusal::Expired => {
                Code::Unauthenticated
            }
            ApiKeyRefusal::Environment | ApiKeyRefusal::Scope => Code::PermissionDenied,
        }
    }
}

/// What vaultd said about a key that verified: whose it is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    /// The key's public id.
    pub key_id: String,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// The environment the key verifies in.
    pub environment: Environment,
    /// Every scope the key grants.
    pub scopes: Vec<String>,
    /// Quota units left today, if the key has a daily quota. (Verifications of such a
    /// key are never answered from the cache: each one is charged by vaultd.)
    pub quota_remaining: Option<u64>,
}

/// How a new key is rate-limited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ApiKeyRate {
    /// The default tier of vaultd's configuration.
    #[default]
    DefaultTier,
    /// A tier of vaultd's configuration, by name.
    Tier(String),
    /// Explicit limits; 0 leaves a window unlimited.
    Limits {
        /// Requests in any 10 seconds.
        burst: u32,
        /// Requests in any minute.
        per_minute: u32,
        /// Requests in any 24 hours.
        per_day: u32,
    },
}

/// What a new key is for ([`crate::Client::issue_api_key`]). Start from
/// [`ApiKeySpec::new`] and set the fields that differ.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiKeySpec {
    /// The tenant the key belongs to.
    pub tenant: String,
    /// The one environment the key verifies in.
    pub environment: Environment,
    /// Scopes the key grants: lower-case words, dots, dashes and colons (`usage:read`).
    pub scopes: Vec<String>,
    /// Its rate limits.
    pub rate: ApiKeyRate,
    /// Quota units per UTC day; 0 for none.
    pub daily_quota: u64,
    /// When the key stops verifying by itself; `None` for never.
    pub expires_at: Option<SystemTime>,
    /// A label for people, at most 64 characters.
    pub label: String,
}

impl ApiKeySpec {
    /// A key of `tenant` in `environment`: no scopes, the default tier, no quota, no
    /// expiry, no label.
    pub fn new(tenant: impl Into<String>, environment: Environment) -> Self {
        Self {
            tenant: tenant.into(),
            environment,
            scopes: Vec::new(),
            rate: ApiKeyRate::DefaultTier,
            daily_quota: 0,
            expires_at: None,
            label: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(env: &str) -> ApiKeyText {
        let mut text = String::with_capacity(apikey::MAX_LEN);
        apikey::compose(env, "4f9XbQ2mT0aZ", "hV3kP9sQ2wE5rT7yU1iO3pAs", &mut text);
        ApiKeyText::from(text)
    }

    #[test]
    fn debug_shows_the_public_hint_never_the_secret() {
        let live = key("live");
        let shown = format!("{live:?}");
        assert_eq!(shown, "ApiKeyText(vk_live_4f9XbQ2mT0aZ_…)");
        assert!(!shown.contains("hV3k"));
        assert_eq!(live.key_id(), Some("4f9XbQ2mT0aZ"));
        assert_eq!(live.environment(), Some(Environment::Live));
        assert_eq!(key("test").environment(), Some(Environment::Test));

        let typo = ApiKeyText::from(live.expose_secret().replace("hV3k", "hV3K"));
        let shown = format!("{typo:?}");
        assert!(
            !shown.contains("hV3K") && !shown.contains("4f9X"),
            "{shown}"
        );
        assert_eq!(typo.key_id(), None);
        assert_eq!(typo.environment(), None);
    }
}
