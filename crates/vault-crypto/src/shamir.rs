//! Shamir secret sharing of the unseal key over GF(2^8).
//!
//! Arithmetic is constant time: multiplication is shift-and-add with masks and
//! inversion is exponentiation (a^254), with no lookup tables indexed by secret data.
//!
//! # Share format
//!
//! A share is 42 bytes, given to custodians as text `vs1-` followed by lower-case hex:
//!
//! ```text
//!  generation u32 BE ‖ threshold u8 ‖ index u8 (x, 1..=255) ‖ y (32 bytes) ‖ check (4 bytes)
//! ```
//!
//! `check` is the first four bytes of SHA-256 over the preceding 38 bytes; it catches
//! typos and truncation before a share reaches the unseal quorum. The generation and
//! threshold are public and let the daemon reject a stale share precisely.

use zeroize::{Zeroize, Zeroizing};

use crate::aead::{KEY_LEN, random_bytes};
use crate::arena::Locked;
use crate::error::ShareError;
use crate::keys::UnsealKey;
use crate::{CryptoError, hex};

const PREFIX: &str = "vs1-";
const BODY_LEN: usize = 4 + 1 + 1 + KEY_LEN;
const CHECK_LEN: usize = 4;
/// Bytes of a share in binary form.
pub const SHARE_LEN: usize = BODY_LEN + CHECK_LEN;

/// One custodian's share of the unseal key, in locked memory.
pub struct Share {
    inner: Locked<ShareBytes>,
}

struct ShareBytes {
    generation: u32,
    threshold: u8,
    index: u8,
    y: [u8; KEY_LEN],
}

impl Share {
    /// This share's index (its x coordinate), 1 to 255.
    pub fn index(&self) -> u8 {
        self.inner.index
    }

    /// The share-set generation this share belongs to.
    pub fn generation(&self) -> u32 {
        self.inner.generation
    }

    /// How many shares of this set reconstruct the unseal key.
    pub fn threshold(&self) -> u8 {
        self.inner.threshold
    }

    /// The binary form, in a zeroising buffer.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(SHARE_LEN));
        out.extend_from_slice(&self.inner.generation.to_be_bytes());
        out.push(self.inner.threshold);
        out.push(self.inner.index);
        out.extend_from_slice(&self.inner.y);
        let check = checksum(&out);
        out.extend_from_slice(&check);
        out
    }

    /// Parses the binary form. Never panics. A malformed share is
    /// [`CryptoError::Shares`]; locked memory that cannot be had for it is the
    /// arena's error, this host's problem and not the share's.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != SHARE_LEN {
            return Err(ShareError::Malformed("wrong length").into());
        }
        let (body, check) = bytes
            .split_last_chunk::<CHECK_LEN>()
            .ok_or(ShareError::Malformed("wrong length"))?;
        if !crate::constant_time_eq(&checksum(body), check) {
            return Err(ShareError::Malformed("checksum mismatch").into());
        }
        let (generation, rest) = body
            .split_first_chunk::<4>()
            .ok_or(ShareError::Malformed("wrong length"))?;
        let (&[threshold, index], y) = rest
            .split_first_chunk::<2>()
            .ok_or(ShareError::Malformed("wrong length"))?;
        if index == 0 || threshold == 0 {
            return Err(ShareError::Malformed("index and threshold must be non-zero").into());
        }
        let mut inner = Locked::new(ShareBytes {
            generation: u32::from_be_bytes(*generation),
            threshold,
            index,
            y: [0; KEY_LEN],
        })?;
        inner.y.copy_from_slice(y);
        Ok(Self { inner })
    }

    /// The text form given to a custodian: `vs1-` and hex.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(PREFIX.len() + SHARE_LEN * 2));
        text.push_str(PREFIX);
        text.push_str(&hex::encode(&self.to_bytes()));
        text
    }

    /// Parses the text form; surrounding whitespace is ignored. Errors as
    /// [`Share::from_bytes`].
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let hex_part = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(ShareError::Malformed("expected it to start with vs1-"))?;
        let bytes = hex::decode(hex_part).ok_or(ShareError::Malformed("not hexadecimal"))?;
        Self::from_bytes(&bytes)
    }
}

fn checksum(body: &[u8]) -> [u8; CHECK_LEN] {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(digest.as_ref().get(..CHECK_LEN).unwrap_or(&[0; CHECK_LEN]));
    out
}

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, in constant time.
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    for _ in 0..8 {
        product ^= a & (b & 1).wrapping_neg();
        let carry = (a >> 7).wrapping_neg();
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    product
}

/// Inverse in GF(2^8) as a^254 (and 0 for 0), in constant time.
fn gf_inv(a: u8) -> u8 {
    let a2 = gf_mul(a, a);
    let a4 = gf_mul(a2, a2);
    let a8 = gf_mul(a4, a4);
    let a16 = gf_mul(a8, a8);
    let a32 = gf_mul(a16, a16);
    let a64 = gf_mul(a32, a32);
    let a128 = gf_mul(a64, a64);
    // 254 = 128 + 64 + 32 + 16 + 8 + 4 + 2
    [a64, a32, a16, a8, a4, a2].into_iter().fold(a128, gf_mul)
}

/// Splits the unseal key into `shares` shares of which any `threshold` reconstruct it.
pub fn split(key: &UnsealKey, threshold: usize, shares: usize) -> Result<Vec<Share>, CryptoError> {
    let (Ok(t), Ok(n)) = (u8::try_from(threshold), u8::try_from(shares)) else {
        return Err(ShareError::InvalidParameters { threshold, shares }.into());
    };
    if t == 0 || t > n {
        return Err(ShareError::InvalidParameters { threshold, shares }.into());
    }
    let mut out = Vec::with_capacity(usize::from(n));
    for index in 1..=n {
        out.push(Share {
            inner: Locked::new(ShareBytes {
                generation: key.generation(),
                threshold: t,
                index,
                y: [0; KEY_LEN],
            })?,
        });
    }
    // coefficients[0] is the secret byte; the others are random, fresh per byte.
    let mut coefficients = Locked::new([0u8; 255])?;
    let degree = usize::from(t) - 1;
    for (byte, secret) in key.raw().iter().enumerate() {
        let (constant, random) = coefficients.split_at_mut(1);
        constant.fill(*secret);
        if let Some(random) = random.get_mut(..degree) {
            random_bytes(random)?;
        }
        for share in &mut out {
            // Horner's rule from the highest coefficient down.
            let x = share.inner.index;
            let y = coefficients
                .get(..=degree)
                .unwrap_or(&[])
                .iter()
                .rev()
                .fold(0u8, |acc, c| gf_mul(acc, x) ^ c);
            if let Some(slot) = share.inner.y.get_mut(byte) {
                *slot = y;
            }
        }
    }
    coefficients.zeroize();
    Ok(out)
}

/// Reconstructs the unseal key from at least `threshold` shares of one set.
///
/// Wrong shares of the right set cannot be detected here: they reconstruct a wrong
/// key, which then fails to open the seal record.
pub fn combine(shares: &[Share]) -> Result<UnsealKey, CryptoError> {
    let first = shares.first().ok_or(ShareError::NotEnough {
        got: 0,
        threshold: 1,
    })?;
    let (generation, threshold) = (first.generation(), first.threshold());
    if shares
        .iter()
        .any(|s| s.generation() != generation || s.threshold() != threshold)
    {
        return Err(ShareError::Mixed.into());
    }
    if shares.len() < usize::from(threshold) {
        return Err(ShareError::NotEnough {
            got: shares.len(),
            threshold: usize::from(threshold),
        }
        .into());
    }
    let mut seen = [false; 256];
    for share in shares {
        let seen = seen
            .get_mut(usize::from(share.index()))
            .ok_or(ShareError::Malformed("index out of range"))?;
        if *seen {
            return Err(ShareError::Duplicate(share.index()).into());
        }
        *seen = true;
    }
    let mut secret = Locked::new([0u8; KEY_LEN])?;
    for (i, share) in shares.iter().enumerate() {
        // Lagrange basis polynomial of share i, evaluated at x = 0.
        let basis =
            shares
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold(1u8, |acc, (_, other)| {
                    let xj = other.index();
                    gf_mul(acc, gf_mul(xj, gf_inv(xj ^ share.index())))
                });
        for (out, y) in secret.iter_mut().zip(share.inner.y.iter()) {
            *out ^= gf_mul(*y, basis);
        }
    }
    UnsealKey::from_raw(secret, generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_arithmetic_matches_known_values() {
        // FIPS-197 §4.2: {57} • {83} = {c1}; {57} • {13} = {fe}.
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
        assert_eq!(gf_mul(0x57, 0x13), 0xfe);
        assert_eq!(gf_inv(0), 0);
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1, "inverse of {a:#x}");
        }
    }

    #[test]
    fn text_form_round_trips_and_detects_typos() {
        let key = UnsealKey::generate(7).unwrap();
        let shares = split(&key, 2, 3).unwrap();
        let text = shares[1].encode();
        let back = Share::parse(&format!("  {}\n", &*text)).unwrap();
        assert_eq!(
            (back.index(), back.generation(), back.threshold()),
            (2, 7, 2)
        );
        assert_eq!(&back.to_bytes()[..], &shares[1].to_bytes()[..]);
        let mut typo = text.to_string();
        let last = typo.pop().unwrap();
        typo.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(
            Share::parse(&typo),
            Err(CryptoError::Shares(ShareError::Malformed(
                "checksum mismatch"
            )))
        ));
        assert!(Share::parse(&text[..text.len() - 2]).is_err());
        assert!(Share::parse("vs2-00").is_err());
        assert!(Share::parse("").is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let key = UnsealKey::generate(1).unwrap();
        for (t, n) in [(0, 1), (2, 1), (1, 256), (300, 300)] {
            assert!(split(&key, t, n).is_err(), "{t} of {n}");
        }
        let shares = split(&key, 3, 5).unwrap();
        assert!(matches!(
            combine(&shares[..2]),
            Err(CryptoError::Shares(ShareError::NotEnough {
                got: 2,
                threshold: 3
            }))
        ));
        let dup = [
            Share::from_bytes(&shares[0].to_bytes()).unwrap(),
            Share::from_bytes(&shares[0].to_bytes()).unwrap(),
            Share::from_bytes(&shares[1].to_bytes()).unwrap(),
        ];
        assert!(matches!(
            combine(&dup),
            Err(CryptoError::Shares(ShareError::Duplicate(1)))
        ));
        let other = split(&UnsealKey::generate(2).unwrap(), 3, 5).unwrap();
        let mixed = [
            Share::from_bytes(&shares[0].to_bytes()).unwrap(),
            Share::from_bytes(&shares[1].to_bytes()).unwrap(),
            Share::from_bytes(&other[2].to_bytes()).unwrap(),
        ];
        assert!(matches!(
            combine(&mixed),
            Err(CryptoError::Shares(ShareError::Mixed))
        ));
    }

    #[test]
    fn one_of_one_and_255_of_255() {
        for (t, n) in [(1, 1), (1, 5), (255, 255)] {
            let key = UnsealKey::generate(1).unwrap();
            let shares = split(&key, t, n).unwrap();
            let back = combine(&shares[..t]).unwrap();
            assert_eq!(back.raw(), key.raw(), "{t} of {n}");
        }
    }
}
