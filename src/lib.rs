//! vaultd: a hardened secrets vault and credential-broker daemon.
//!
//! This library holds the custody core: the [`vault`] (seal lifecycle, key hierarchy
//! in locked memory, secrets), its [`storage`], validated [`names`], and process
//! [`hardening`]. Cryptography lives in the `vault-crypto` crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alerts;
pub mod anomalies;
mod api;
mod audit;
mod authz;
pub mod breakglass;
mod cluster;
pub mod config;
mod custody;
pub mod daemon;
pub mod dev;
mod error;
// For the fuzz targets in fuzz/ and the corpus replay tests only; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod hardening;
mod housekeeping;
pub mod hsm;
mod http;
pub mod identity;
mod ids;
mod leases;
mod limits;
mod metrics;
pub mod names;
pub mod records;
mod retry;
mod secret_file;
mod sessions;
pub mod storage;
pub mod tls;
mod transport;
pub mod vault;

pub use error::{Error, Result};
pub use vault_crypto::SecretValue;
pub use vault_crypto::shamir::Share;
