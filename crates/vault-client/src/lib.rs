//! The thin client every platform service links to use vaultd.
//!
//! - **Connections**: mutual TLS 1.3 to one or more endpoints (failing over when one
//!   is unreachable or sealed), with the CA, certificate and key re-read when their
//!   files change. There is no option to skip verification.
//! - **Lease sessions** (X25519 + HKDF-SHA256, as the daemon expects) are opened and
//!   renewed transparently; every secret to or from vaultd travels sealed to one.
//! - **Leases**: [`Client::lease`] returns a [`Lease`] whose value is reachable only
//!   through [`ExposeSecret`]. Values are cached until shortly before their lease ends,
//!   concurrent requests for one secret are coalesced into one RPC, a revocation from
//!   `WatchRevocations` evicts the value at once, optional auto-renew, and values are
//!   wiped when the last handle and the cache let go.
//! - **Transit** ([`Client::encrypt`], [`Client::decrypt`] and batch forms), and every
//!   admin call (for `vaultctl`).
//! - **Retries** with backoff on `UNAVAILABLE`, never on `PERMISSION_DENIED` or any
//!   other refusal, and never for calls that change state.
//!
//! ```no_run
//! use secrecy::ExposeSecret;
//! use vault_client::{Client, Environment};
//!
//! # async fn run() -> Result<(), vault_client::Error> {
//! let vault = Client::builder()
//!     .endpoint("https://vault-1.internal:8200")
//!     .endpoint("https://vault-2.internal:8200")
//!     .ca_cert("/etc/gateway/vault-ca.pem")
//!     .client_cert("/etc/gateway/gateway.pem", "/etc/gateway/gateway.key")
//!     .build()?;
//! let key = vault.lease("acme", Environment::Live, "byok/openai").await?;
//! let header = key.expose_secret(); // use it, don't keep it
//! # let _ = header;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod admin;
mod client;
mod error;
mod lease;
mod transit;
mod transport;

use std::fmt;
use std::str::FromStr;

pub use admin::{SecretPath, UnsealProgress};
pub use client::{Client, ClientBuilder};
pub use error::Error;
pub use lease::Lease;
pub use secrecy::ExposeSecret;
pub use transit::Plaintext;
pub use vault_crypto::SecretValue;
pub use vault_crypto::shamir::Share;
/// The API's messages, for admin answers and selectors.
pub use vault_proto::v1 as proto;

/// Which environment a secret or key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    /// Production traffic.
    Live,
    /// Test-mode traffic.
    Test,
}

impl Environment {
    /// `live` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    pub(crate) fn to_proto(self) -> i32 {
        match self {
            Environment::Live => proto::Environment::Live as i32,
            Environment::Test => proto::Environment::Test as i32,
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
#[error("{0:?} is not an environment: use live or test")]
pub struct UnknownEnvironment(pub String);

impl FromStr for Environment {
    type Err = UnknownEnvironment;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "live" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            other => Err(UnknownEnvironment(other.to_owned())),
        }
    }
}
