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
//! - **Platform API keys**: [`Client::verify_api_key`] refuses a malformed key without
//!   a call, sends the rest sealed, types vaultd's refusals ([`Error::ApiKeyRefused`],
//!   [`Error::Limited`]), and reuses a verification for as long as vaultd allows
//!   (seconds) until a revocation evicts it. Keys are [`ApiKeyText`], zeroised, with no
//!   `Debug` of their secret.
//! - **Transit** ([`Client::encrypt`], [`Client::decrypt`] and batch forms), and every
//!   admin call (for `vaultctl`), API keys' included ([`Client::issue_api_key`], …), and
//!   backups ([`Client::save_snapshot`]: a verified snapshot in a new 0600 file).
//! - **Retries** with backoff on `UNAVAILABLE`, never on `PERMISSION_DENIED` or any
//!   other refusal, and never for calls that change state.
//! - **Errors** ([`Error`]) say which side failed: vaultd's answer (its code, and its
//!   `vault-error` reason where that decides what to do), this client's own failure
//!   (files, configuration, its half of the session cryptography), or an answer from
//!   vaultd this client could not use. Causes are kept as typed sources.
//! - **Time**: lease, cache and session expiries are read on a clock that tests and
//!   simulations can replace ([`ClientBuilder::clock`]).
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

// Modules depend on one another one way only (checked by listing each module's
// `crate::` paths): environment and options on nothing here; apikey on environment;
// error on apikey; transport and session on error; endpoints on error, options, session
// and transport; cache on environment; apikey_cache on apikey, cache, environment and
// error; client on cache, apikey_cache and endpoints; lease, transit, admin, verify,
// apikey_admin and snapshot on client and what is below it; lifecycle on admin too;
// builder on all but transit, admin, lifecycle, verify, apikey_admin and snapshot, as it
// starts the background tasks. This root
// only declares and re-exports.
mod admin;
mod apikey;
mod apikey_admin;
mod apikey_cache;
mod builder;
mod cache;
mod client;
mod endpoints;
mod environment;
mod error;
mod governance;
mod lease;
mod lifecycle;
mod options;
mod session;
mod snapshot;
mod transit;
mod transport;
mod verify;

pub use admin::SecretPath;
pub use apikey::{ApiKeyRate, ApiKeyRefusal, ApiKeySpec, ApiKeyText, VerifiedKey};
pub use builder::ClientBuilder;
pub use cache::Lease;
pub use client::Client;
pub use environment::{Environment, UnknownEnvironment};
pub use error::{CertificateRefusal, Error, FileError};
pub use governance::BreakGlassAsk;
pub use lifecycle::{JoinedCluster, UnsealProgress};
pub use secrecy::ExposeSecret;
pub use snapshot::{SavedSnapshot, SnapshotError};
pub use transit::Plaintext;
/// Why this client's half of the session cryptography failed ([`Error::LocalCrypto`]),
/// or why what vaultd sealed did not open ([`Error::SealedAnswer`]).
pub use vault_crypto::CryptoError;
pub use vault_crypto::SecretValue;
/// The injectable clock ([`ClientBuilder::clock`]): `ManualClock` for tests and
/// simulations.
pub use vault_crypto::clock;
pub use vault_crypto::shamir::Share;
/// Why a client certificate names no identity vaultd accepts ([`FileError::Identity`]).
pub use vault_proto::identity::IdentityError;
/// The API's messages, for admin answers and selectors.
pub use vault_proto::v1 as proto;
