//! vaultd: a hardened secrets vault and credential-broker daemon.
//!
//! This library holds the custody core: the [`vault`] (seal lifecycle, key hierarchy
//! in locked memory, secrets), its [`storage`], validated [`names`], and process
//! [`hardening`]. Cryptography lives in the `vault-crypto` crate.
#![forbid(unsafe_code)]

mod error;
pub mod hardening;
pub mod identity;
pub mod names;
pub mod records;
pub mod storage;
pub mod tls;
pub mod vault;

pub use error::{Error, Result};
pub use vault_crypto::SecretValue;
pub use vault_crypto::shamir::Share;
