//! The vault's identity: 16 random bytes, drawn when its data file is created and kept
//! in that file, so a snapshot can say which vault it belongs to and a restore can
//! refuse to put one vault's records over another's.

use std::fmt;

use super::StoreError;

/// Identifies one vault (one data file and every snapshot and restore of it). Not
/// secret; printed as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VaultId([u8; 16]);

impl VaultId {
    /// A new, random identity.
    pub(crate) fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; 16];
        vault_crypto::aead::random_bytes(&mut bytes).map_err(|_| StoreError::Random)?;
        Ok(Self(bytes))
    }

    /// The identity stored as `bytes`; `None` unless they are exactly 16.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&vault_crypto::hex::encode(&self.0))
    }
}

impl fmt::Debug for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_sixteen_bytes_shown_in_hex() {
        let a = VaultId::generate().unwrap();
        let b = VaultId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 32);
        assert_eq!(VaultId::from_bytes(a.as_bytes()), Some(a));
        assert_eq!(VaultId::from_bytes(&[0; 15]), None);
        assert_eq!(VaultId::from_bytes(&[0; 17]), None);
        assert_eq!(
            VaultId::from_bytes(&[0xab; 16]).unwrap().to_string(),
            "ab".repeat(16)
        );
    }
}
