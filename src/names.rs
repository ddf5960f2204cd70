//! Validated names: tenants, environments, secret names and kinds.
//!
//! Every name that reaches the store or an AEAD's associated data has passed through
//! one of these types, so an invalid name is an error at the edge, never a panic or
//! a store key that collides with another.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct InvalidName {
    /// Which kind of name.
    pub field: &'static str,
    /// The rejected text, truncated to 80 characters (names are not secret).
    pub value: String,
    /// What would be accepted.
    pub reason: &'static str,
}

fn invalid(field: &'static str, value: &str, reason: &'static str) -> InvalidName {
    InvalidName {
        field,
        value: value.chars().take(80).collect(),
        reason,
    }
}

/// A tenant id (the platform's org id): 1–63 characters of `a-z 0-9 - _`, starting
/// with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TenantId(String);

impl TenantId {
    /// Validates `text` as a tenant id.
    pub fn new(text: &str) -> Result<Self, InvalidName> {
        const REASON: &str =
            "use 1-63 characters a-z, 0-9, '-' or '_', starting with a letter or digit";
        let valid = (1..=63).contains(&text.len())
            && text
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(invalid("tenant", text, REASON))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which environment a secret belongs to; live and test never share a ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Environment {
    /// Production traffic.
    Live,
    /// Test-mode traffic.
    Test,
}

impl Environment {
    /// Parses `live` or `test`.
    pub fn parse(text: &str) -> Result<Self, InvalidName> {
        match text {
            vault_proto::LIVE => Ok(Self::Live),
            vault_proto::TEST => Ok(Self::Test),
            _ => Err(invalid("environment", text, "use live or test")),
        }
    }

    /// `live` or `test` (`vault_proto::LIVE`, `vault_proto::TEST`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => vault_proto::LIVE,
            Self::Test => vault_proto::TEST,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret's name: 1–128 characters of `A-Z a-z 0-9 . _ -` in `/`-separated
/// segments, e.g. `byok/openai`. No empty, `.` or `..` segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretName(String);

impl SecretName {
    /// Validates `text` as a secret name.
    pub fn new(text: &str) -> Result<Self, InvalidName> {
        const REASON: &str = "use 1-128 characters A-Z, a-z, 0-9, '.', '_', '-' in '/'-separated \
                              segments, none empty, '.' or '..'";
        let chars_ok = text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        let segments_ok = text
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
        if (1..=128).contains(&text.len()) && chars_ok && segments_ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(invalid("secret name", text, REASON))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a secret lives: tenant, environment and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretId {
    /// Owning tenant.
    pub tenant: TenantId,
    /// Environment.
    pub environment: Environment,
    /// Name within the tenant and environment.
    pub name: SecretName,
}

impl SecretId {
    /// Validates all three parts.
    pub fn parse(tenant: &str, environment: &str, name: &str) -> Result<Self, InvalidName> {
        Ok(Self {
            tenant: TenantId::new(tenant)?,
            environment: Environment::parse(environment)?,
            name: SecretName::new(name)?,
        })
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.environment, self.name)
    }
}

/// Whose key a secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretKind {
    /// A customer's own upstream provider key.
    Byok,
    /// A platform system key.
    System,
}

impl SecretKind {
    /// Parses `byok` or `system`.
    pub fn parse(text: &str) -> Result<Self, InvalidName> {
        match text {
            "byok" => Ok(Self::Byok),
            "system" => Ok(Self::System),
            _ => Err(invalid("secret kind", text, "use byok or system")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants() {
        for ok in ["acme", "a", "org-42_x", &"a".repeat(63)] {
            assert!(TenantId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-acme",
            "Acme",
            "acme/x",
            "ac me",
            "acme\0",
            &"a".repeat(64),
            "é",
        ] {
            assert!(TenantId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secret_names() {
        for ok in ["byok/openai", "a", "x.y_z-1/B", &"a".repeat(128)] {
            assert!(SecretName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "../x",
            "a/./b",
            "a b",
            "a\nb",
            &"a".repeat(129),
        ] {
            assert!(SecretName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_name_the_field_and_truncate() {
        let e = SecretId::parse("acme", "prod", "x").unwrap_err();
        assert_eq!(e.field, "environment");
        assert!(e.to_string().contains("use live or test"));
        let long = "Z".repeat(500);
        assert_eq!(TenantId::new(&long).unwrap_err().value.len(), 80);
    }
}
