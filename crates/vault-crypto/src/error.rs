//! The crate's one error type.

/// Why a cryptographic operation failed.
///
/// Decryption failures are deliberately opaque: a wrong key, a wrong associated
/// datum and a modified ciphertext all yield [`CryptoError::Decrypt`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The ciphertext, its associated data or the key did not match.
    #[error("decryption failed")]
    Decrypt,
    /// The bytes are not an envelope this version understands.
    #[error("malformed envelope: {0}")]
    Envelope(EnvelopeError),
    /// A key reached its encryption budget and must be rotated before further use.
    #[error("key version {key_version} has reached its encryption limit; rotate it")]
    KeyExhausted {
        /// Version of the exhausted key.
        key_version: u32,
    },
    /// The peer's X25519 public key is malformed or of low order: no shared secret.
    #[error("the peer's public key is malformed or of low order")]
    PublicKey,
    /// A key could not be set up from its bytes (a bug, never the input's fault).
    #[error("cannot set up the {0}")]
    KeySetup(&'static str),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Locked key memory could not be set up.
    #[error(
        "cannot set up locked key memory ({operation} failed); if this is mlock, raise \
         RLIMIT_MEMLOCK (ulimit -l, or LimitMEMLOCK= in the systemd unit)"
    )]
    LockedMemory {
        /// The system call that failed.
        operation: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A pool of locked memory reached its budget; other pools are unaffected.
    #[error(
        "the locked-memory budget for {} ({} KiB) is used up; retry later, or raise it",
        pool.as_str(),
        budget_bytes / 1024
    )]
    PoolExhausted {
        /// The pool.
        pool: crate::arena::Pool,
        /// Its budget.
        budget_bytes: usize,
    },
    /// Shamir sharing parameters or shares were invalid.
    #[error("{0}")]
    Shares(#[from] ShareError),
    /// A passphrase-protected share file could not be used.
    #[error("{0}")]
    ShareFile(#[from] ShareFileError),
    /// A requested derivation length is out of range.
    #[error("cannot derive {0} bytes")]
    DerivationLength(usize),
}

/// Why bytes are not a valid envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than the fixed header, nonce and tag.
    #[error("{0} bytes is too short")]
    TooShort(usize),
    /// The format byte names a format this version does not know.
    #[error("unknown format {0:#04x}")]
    UnknownFormat(u8),
}

/// Why shares cannot be made or combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// The threshold or share count is out of range.
    #[error(
        "invalid sharing: threshold {threshold} of {shares} shares (need 1 <= threshold <= shares <= 255)"
    )]
    InvalidParameters {
        /// Requested threshold.
        threshold: usize,
        /// Requested number of shares.
        shares: usize,
    },
    /// Fewer shares than the threshold were supplied.
    #[error("{got} shares supplied but {threshold} are needed")]
    NotEnough {
        /// Shares supplied.
        got: usize,
        /// Shares needed.
        threshold: usize,
    },
    /// Two shares carry the same index.
    #[error("share {0} was supplied twice")]
    Duplicate(u8),
    /// Shares from different share sets were mixed.
    #[error("shares belong to different share sets (generation or threshold differ)")]
    Mixed,
    /// The text is not a share: wrong prefix, length, characters or checksum.
    #[error("not a valid share ({0}); check for a typo or a truncated copy")]
    Malformed(&'static str),
}

/// Why a passphrase-protected share file cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareFileError {
    /// The file does not have the share-file layout.
    #[error("not a vaultd share file ({0})")]
    Malformed(&'static str),
    /// The file asks for key-derivation costs outside the accepted range.
    #[error(
        "share file key derivation parameters are outside the accepted range \
         (memory {memory_kib} KiB, {passes} passes, {lanes} lanes)"
    )]
    Parameters {
        /// Argon2id memory cost in KiB.
        memory_kib: u32,
        /// Argon2id passes.
        passes: u32,
        /// Argon2id lanes.
        lanes: u32,
    },
    /// Wrong passphrase or a modified file.
    #[error("wrong passphrase, or the share file was modified")]
    Passphrase,
}
