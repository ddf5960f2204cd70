//! Zeroising holders for plaintext secrets that are not keys.

use zeroize::Zeroizing;

/// A plaintext secret value (a provider key, a transit plaintext), wiped on drop.
///
/// Values are not keys: they live on the heap in a buffer that is zeroed when
/// dropped, for as long as one request needs them.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Takes ownership of `bytes`. The caller should not keep other copies.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub(crate) fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// Declassifies the value for the one use that needs it.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not secret: it is visible in the ciphertext's length).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A passphrase protecting a share file, wiped on drop.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Takes ownership of the passphrase text.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// Declassifies the passphrase for key derivation.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}
