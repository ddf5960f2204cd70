//! The daemon library's error type.

use vault_crypto::CryptoError;

use crate::names::InvalidName;
use crate::records::CorruptRecord;
use crate::storage::StoreError;

/// Why a vault operation failed.
///
/// Domain failures are precise; cryptographic failures stay opaque (a wrong key and a
/// tampered record look the same).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The vault has not been initialised.
    #[error("vaultd is not initialised; run `vaultctl init`")]
    Uninitialised,
    /// The vault is already initialised.
    #[error("vaultd is already initialised")]
    AlreadyInitialised,
    /// The vault is sealed; only status and unseal are served.
    #[error("vaultd is sealed; custodians must unseal it")]
    Sealed,
    /// The vault is already unsealed.
    #[error("vaultd is already unsealed")]
    AlreadyUnsealed,
    /// A name failed validation.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// The secret does not exist.
    #[error("secret not found")]
    NotFound,
    /// A secret with this name already exists.
    #[error("secret already exists; rotate it to store a new version")]
    AlreadyExists,
    /// A transit envelope is malformed or belongs to another tenant or environment.
    #[error("the envelope is malformed or does not belong to this tenant and environment")]
    TransitEnvelope,
    /// No key of this version exists for the tenant (an envelope names a version the
    /// tenant never had, or one that was erased).
    #[error("key version {0} is unknown")]
    UnknownKeyVersion(u32),
    /// The requested version exists but is disabled, or never existed.
    #[error("version {0} is not available")]
    VersionUnavailable(u64),
    /// An unseal attempt is in progress and the caller did not present its nonce.
    #[error("another unseal attempt is in progress; present its nonce or reset it")]
    UnsealNonceMismatch,
    /// A ceremony was started while another is in progress.
    #[error(
        "a {0} ceremony is in progress; let it finish, or cancel it (`vaultctl ceremony cancel`)"
    )]
    CeremonyInProgress(&'static str),
    /// A share was submitted, or a ceremony cancelled, with none in progress.
    #[error(
        "no ceremony is in progress (it completed, expired or was cancelled); start one with `vaultctl ceremony start`"
    )]
    NoCeremony,
    /// A ceremony share was submitted with a nonce that does not name the ceremony in progress.
    #[error("the nonce does not name the ceremony in progress; check `vaultctl ceremony status`")]
    CeremonyNonceMismatch,
    /// A rekey ceremony's custodians are invalid.
    #[error("{0}")]
    Custodians(String),
    /// The PKCS#11 token could not be used.
    #[error("auto-unseal token: {0}")]
    Token(#[source] crate::hsm::HsmError),
    /// Auto-unseal was asked for but no `[seal.pkcs11]` token is configured.
    #[error("no PKCS#11 token is configured ([seal.pkcs11] in vaultd.toml)")]
    NoTokenConfigured,
    /// Auto-unseal is not enabled, so there is nothing to disable.
    #[error("auto-unseal is not enabled")]
    AutoUnsealNotEnabled,
    /// The token's copy of the unseal key is of another share-set generation.
    #[error(
        "the token's copy of the unseal key is of share-set generation {stored}, the vault is at \
         {current}; custodians unseal, then re-enable auto-unseal"
    )]
    StaleTokenSeal {
        /// The stored copy's generation.
        stored: u32,
        /// The vault's.
        current: u32,
    },
    /// The share belongs to an older or newer share set than the vault's.
    #[error("share is from share-set generation {share}, but the vault is at generation {current}")]
    StaleShare {
        /// The share's generation.
        share: u32,
        /// The vault's generation.
        current: u32,
    },
    /// VerifyRekey found no rekey waiting to be verified.
    #[error("no rekey is waiting to be verified; rekey first")]
    NoPendingRekey,
    /// The pending rekey was made against a share set or root keys that have changed
    /// since (another rekey was verified, or the root key rotated).
    #[error("the pending rekey was made before the share set or root key changed; rekey again")]
    StaleRekey,
    /// The share's index was already submitted in this attempt.
    #[error("share {0} was already submitted in this attempt")]
    DuplicateShare(u8),
    /// The reconstructed unseal key does not open the seal record: a share is wrong
    /// or corrupt. Progress has been discarded.
    #[error("the shares do not reconstruct the unseal key; progress was discarded")]
    WrongShares,
    /// Share parameters or share text were invalid.
    #[error(transparent)]
    Shares(#[from] vault_crypto::ShareError),
    /// A cryptographic operation failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record the vault cannot work without is missing from storage.
    #[error("the stored record {0} is missing: the store is damaged or was partly restored")]
    MissingRecord(String),
    /// A stored record does not decode.
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    /// A stored counter (share-set generation, root key version) cannot grow further.
    #[error("the {0} counter is exhausted")]
    CounterExhausted(&'static str),
    /// The tenant is being erased; its keys are no longer handed out.
    #[error("the tenant is being erased")]
    TenantErasing,
    /// The tenant has no key yet, and the request may not create one.
    #[error(
        "the tenant has no key yet; an admin creates it by storing a secret, or a grant \
         with create_tenant_keys = true lets transit create it"
    )]
    NoTenantKey,
    /// A rotation asked for a grace window longer than the configured maximum.
    #[error("a grace window of {requested:?} is longer than seal.max_grace ({max:?})")]
    GraceTooLong {
        /// What was asked for.
        requested: std::time::Duration,
        /// The maximum.
        max: std::time::Duration,
    },
    /// Retiring would destroy the current key version.
    #[error("cannot retire key versions below {below}: the current version is {current}")]
    RetireCurrent {
        /// The requested bound.
        below: u32,
        /// The current version.
        current: u32,
    },
    /// Retiring would make secret versions undecryptable.
    #[error(
        "{count} secret versions are still sealed under key versions below {below}; wait for \
         the rewrap pass (`vaultctl tenant keys` shows progress), then retire"
    )]
    KeysInUse {
        /// The requested bound.
        below: u32,
        /// Secret versions still under older keys.
        count: usize,
    },
    /// The tenant holds as many API keys as it may.
    #[error(
        "the tenant holds {0} API keys that are not revoked (apikeys.max_per_tenant); revoke one first"
    )]
    ApiKeyLimit(usize),
    /// No rate tier of this name is configured.
    #[error("no rate tier {0:?} is configured in [apikeys.tiers]")]
    UnknownTier(String),
    /// The API key was already rotated or revoked.
    #[error("the API key was already rotated or revoked")]
    ApiKeyNotActive,
    /// This node has not read the cluster's change log to its end within the bound,
    /// so a revocation made on another node might not be in force here yet.
    #[error(
        "this node has not caught up with the cluster's change log within {bound:?} (is the \
         database reachable?); it hands out no leases or plaintext until it has; retry on \
         another node"
    )]
    OutOfStep {
        /// The bound (`storage.postgres.catch_up`).
        bound: std::time::Duration,
    },
    /// Another node rotated the root key: this node holds only the old one, so it
    /// wraps nothing more and seals.
    #[error(
        "the root key was rotated on another node; this node seals: unseal it again \
         (custodians), or let it join again ([cluster.join])"
    )]
    RootMoved,
    /// A node offered root keys that are not those the seal record names.
    #[error(
        "the root keys handed over (versions {handed:?}) are not those the seal record \
         names ({named:?}): the answering node is before or after a root-key rotation"
    )]
    JoinMismatch {
        /// The versions handed over.
        handed: Vec<u32>,
        /// The versions the seal record names.
        named: Vec<u32>,
    },
    /// A caller allowed `node.join` is not one of this node's `[cluster] nodes`.
    #[error("{0} is not listed in this node's [cluster] nodes")]
    NotClusterNode(String),
    /// The store changed under a read-modify-write too many times in a row.
    #[error("too much contention on {0}; retry")]
    Contention(&'static str),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
