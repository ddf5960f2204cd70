//! Shares protected by a passphrase (Argon2id + AES-256-GCM), for custodians who keep
//! their share in a file.
//!
//! # Format
//!
//! Text `vsf1-` followed by lower-case hex of:
//!
//! ```text
//!  memory KiB u32 BE ‖ passes u32 BE ‖ lanes u32 BE ‖ salt (16 bytes) ‖ envelope
//! ```
//!
//! The envelope (see [`crate::envelope`]) has purpose "share file" and binds the
//! Argon2id parameters and salt as its binding, so editing them makes the file fail to
//! open rather than derive a weaker key.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::aead::{AeadKey, KEY_LEN, random_bytes};
use crate::arena::{Locked, Pool};
use crate::envelope::{Aad, Envelope, Purpose};
use crate::error::ShareFileError;
use crate::secret::Passphrase;
use crate::shamir::Share;
use crate::{CryptoError, hex};

const PREFIX: &str = "vsf1-";
const SALT_LEN: usize = 16;
const PARAMS_LEN: usize = 12;

/// Argon2id memory cost written into new files: 64 MiB.
pub const MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes written into new files.
pub const PASSES: u32 = 3;
/// Argon2id lanes written into new files.
pub const LANES: u32 = 1;
/// The most memory a file may ask for (1 GiB); more is refused as a denial of service.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_PASSES: u32 = 16;
const MAX_LANES: u32 = 16;

/// Encrypts `share` under `passphrase`; returns the file's text.
pub fn protect(share: &Share, passphrase: &Passphrase) -> Result<String, CryptoError> {
    let mut salt = [0u8; SALT_LEN];
    random_bytes(&mut salt)?;
    let header = encode_params(MEMORY_KIB, PASSES, LANES, &salt);
    let key = derive(passphrase, MEMORY_KIB, PASSES, LANES, &salt)?;
    let envelope = key.seal(&aad(&header), &share.to_bytes())?;
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(envelope.as_bytes());
    Ok(format!("{PREFIX}{}\n", &*hex::encode(&bytes)))
}

/// Opens a share file's text with `passphrase`.
pub fn open(text: &str, passphrase: &Passphrase) -> Result<Share, CryptoError> {
    let bytes = text
        .trim()
        .strip_prefix(PREFIX)
        .and_then(hex::decode)
        .ok_or(ShareFileError::Malformed("expected vsf1- and hexadecimal"))?;
    let (header, envelope) = bytes
        .split_first_chunk::<{ PARAMS_LEN + SALT_LEN }>()
        .ok_or(ShareFileError::Malformed("too short"))?;
    let (params, salt) = header
        .split_first_chunk::<PARAMS_LEN>()
        .ok_or(ShareFileError::Malformed("too short"))?;
    let [m0, m1, m2, m3, t0, t1, t2, t3, p0, p1, p2, p3] = *params;
    let memory_kib = u32::from_be_bytes([m0, m1, m2, m3]);
    let passes = u32::from_be_bytes([t0, t1, t2, t3]);
    let lanes = u32::from_be_bytes([p0, p1, p2, p3]);
    let in_range = (MEMORY_KIB..=MAX_MEMORY_KIB).contains(&memory_kib)
        && (PASSES..=MAX_PASSES).contains(&passes)
        && (1..=MAX_LANES).contains(&lanes);
    if !in_range {
        return Err(ShareFileError::Parameters {
            memory_kib,
            passes,
            lanes,
        }
        .into());
    }
    let envelope = Envelope::from_bytes(envelope.to_vec())
        .map_err(|_| ShareFileError::Malformed("truncated ciphertext"))?;
    let salt: &[u8; SALT_LEN] = salt
        .try_into()
        .map_err(|_| ShareFileError::Malformed("too short"))?;
    let key = derive(passphrase, memory_kib, passes, lanes, salt)?;
    let mut plain = Zeroizing::new(vec![0u8; envelope.plaintext_len()]);
    key.open_into(&envelope, &aad(header), &mut plain)
        .map_err(|_| ShareFileError::Passphrase)?;
    Share::from_bytes(&plain)
}

fn aad(header: &[u8]) -> Aad<'_> {
    Aad {
        binding: header,
        ..Aad::purpose(Purpose::ShareFile)
    }
}

fn encode_params(m: u32, t: u32, p: u32, salt: &[u8; SALT_LEN]) -> [u8; PARAMS_LEN + SALT_LEN] {
    let mut out = [0u8; PARAMS_LEN + SALT_LEN];
    for (dst, src) in out.iter_mut().zip(
        m.to_be_bytes()
            .into_iter()
            .chain(t.to_be_bytes())
            .chain(p.to_be_bytes())
            .chain(salt.iter().copied()),
    ) {
        *dst = src;
    }
    out
}

fn derive(
    passphrase: &Passphrase,
    memory_kib: u32,
    passes: u32,
    lanes: u32,
    salt: &[u8; SALT_LEN],
) -> Result<AeadKey, CryptoError> {
    let params = Params::new(memory_kib, passes, lanes, Some(KEY_LEN)).map_err(|_| {
        ShareFileError::Parameters {
            memory_kib,
            passes,
            lanes,
        }
    })?;
    let mut raw = Locked::new([0u8; KEY_LEN])?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.expose_secret().as_bytes(), salt, &mut raw[..])
        .map_err(|_| ShareFileError::Passphrase)?;
    AeadKey::from_raw(raw, 0, Pool::Vault)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::UnsealKey;
    use crate::shamir::split;

    #[test]
    fn round_trip_wrong_passphrase_and_tampered_parameters() {
        let shares = split(&UnsealKey::generate(3).unwrap(), 2, 2).unwrap();
        let pass = Passphrase::new("correct horse battery staple".into());
        let file = protect(&shares[0], &pass).unwrap();
        assert!(file.starts_with("vsf1-"));
        let back = open(&file, &pass).unwrap();
        assert_eq!(&back.to_bytes()[..], &shares[0].to_bytes()[..]);

        let wrong = Passphrase::new("Correct horse battery staple".into());
        assert!(matches!(
            open(&file, &wrong),
            Err(CryptoError::ShareFile(ShareFileError::Passphrase))
        ));

        // Raising the pass count (byte 4..8 of the body) keeps parameters in range
        // but breaks the binding: the file must not open.
        let mut bytes = hex::decode(file.trim().strip_prefix(PREFIX).unwrap()).unwrap();
        bytes[7] = 4;
        let edited = format!("{PREFIX}{}", &*hex::encode(&bytes));
        assert!(open(&edited, &pass).is_err());
        // Lowering the memory cost is refused before any derivation.
        bytes[7] = 3;
        bytes[1] = 0;
        let weak = format!("{PREFIX}{}", &*hex::encode(&bytes));
        assert!(matches!(
            open(&weak, &pass),
            Err(CryptoError::ShareFile(ShareFileError::Parameters { .. }))
        ));
        assert!(open("vsf1-00", &pass).is_err());
        assert!(open("garbage", &pass).is_err());
    }
}
