//! vaultd's cryptographic core: the key hierarchy, locked key memory, AES-256-GCM
//! envelopes with canonical associated data, Shamir sharing of the unseal key,
//! HKDF-SHA256, HMAC-SHA256, Ed25519 and passphrase-protected share files.
//!
//! This crate does no I/O and no async. Every key lives in the [locked arena](arena):
//! private, `mlock`ed, dump- and fork-excluded pages with guard pages, wiped on free.
//! The envelope byte format is documented once, in [`envelope`].
#![deny(missing_docs)]
#![deny(unsafe_code)] // allowed in `arena` alone

pub mod aead;
pub mod arena;
pub mod clock;
pub mod envelope;
mod error;
// For the fuzz targets in fuzz/ and the corpus replay tests only; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod hex;
pub mod kdf;
mod keys;
mod secret;
pub mod session;
pub mod shamir;
pub mod sharefile;

pub use error::{CryptoError, EnvelopeError, ShareError, ShareFileError};
pub use keys::{
    MacKey, RootKey, SigningKey, SystemKey, TenantKey, UnsealKey, constant_time_eq, verify_ed25519,
};
pub use secret::{Passphrase, SecretValue};
