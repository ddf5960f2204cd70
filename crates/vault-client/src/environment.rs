//! Which environment a secret or key belongs to. The names (`live`, `test`) and the
//! API's values are vault-proto's, so the client, the daemon and the CLI spell them
//! one way.

use std::fmt;
use std::str::FromStr;

use vault_proto::v1;

/// Which environment a secret or key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    /// Production traffic.
    Live,
    /// Test-mode traffic.
    Test,
}

impl Environment {
    /// Both environments, in the order the API numbers them.
    pub const ALL: [Environment; 2] = [Environment::Live, Environment::Test];

    /// `live` or `test` ([`vault_proto::LIVE`], [`vault_proto::TEST`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => vault_proto::LIVE,
            Environment::Test => vault_proto::TEST,
        }
    }

    /// The value of an API message's `environment` field.
    pub fn to_proto(self) -> i32 {
        v1::Environment::from(self) as i32
    }

    /// The environment an API message's `environment` field names; `None` for the
    /// unspecified value or one this version does not know.
    pub fn from_proto(value: i32) -> Option<Self> {
        match v1::Environment::try_from(value).ok()? {
            v1::Environment::Live => Some(Environment::Live),
            v1::Environment::Test => Some(Environment::Test),
            v1::Environment::Unspecified => None,
        }
    }
}

impl From<Environment> for v1::Environment {
    fn from(environment: Environment) -> Self {
        match environment {
            Environment::Live => v1::Environment::Live,
            Environment::Test => v1::Environment::Test,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an environment: use {live} or {test}", live = vault_proto::LIVE, test = vault_proto::TEST)]
pub struct UnknownEnvironment(pub String);

impl FromStr for Environment {
    type Err = UnknownEnvironment;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        v1::Environment::from_name(text)
            .and_then(|e| Environment::from_proto(e as i32))
            .ok_or_else(|| UnknownEnvironment(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_api_values_round_trip() {
        for environment in Environment::ALL {
            assert_eq!(environment.as_str().parse(), Ok(environment));
            assert_eq!(
                Environment::from_proto(environment.to_proto()),
                Some(environment)
            );
            assert_eq!(
                v1::Environment::from(environment).name(),
                Some(environment.as_str())
            );
        }
        assert_eq!(
            Environment::from_proto(v1::Environment::Unspecified as i32),
            None
        );
        assert_eq!(
            "prod".parse::<Environment>().unwrap_err().to_string(),
            "\"prod\" is not an environment: use live or test"
        );
    }
}
