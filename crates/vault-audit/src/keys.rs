//! The keys that authenticate the chain, borrowed from the daemon's key hierarchy.

/// Keys the chain is authenticated with; the daemon implements this over its key
/// hierarchy. Every method returns `None` while the vault is sealed (keys
/// unavailable): records are then written without a MAC and checkpoints are skipped.
pub trait ChainKeys: Send + Sync + 'static {
    /// HMAC-SHA256 of `message` under the audit MAC key.
    fn mac(&self, message: &[u8]) -> Option<[u8; 32]>;
    /// Ed25519 signature of `message` under the audit signing key.
    fn sign(&self, message: &[u8]) -> Option<[u8; 64]>;
    /// The Ed25519 public key that verifies [`ChainKeys::sign`]'s signatures.
    fn public_key(&self) -> Option<[u8; 32]>;
}
