//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay tests: not
//! an API. Each function takes the fuzzer's bytes, runs every parser of this crate
//! that stored or received bytes can reach, and panics only when an invariant the
//! crate promises is broken (a round trip that does not round-trip, a forged envelope
//! that opens). Errors are expected; panics are bugs.
//!
//! They live in the crate, like rustls's `internal` fuzzing hooks, so they can reach
//! what the public API hides (a key made from fixed bytes, an envelope's parts)
//! without widening that API.

use zeroize::Zeroizing;

use crate::aead::{AeadKey, KEY_LEN};
use crate::arena::{Locked, Pool};
use crate::envelope::{Aad, Envelope, HEADER_LEN, NONCE_LEN, OVERHEAD, Purpose, TAG_LEN};
use crate::secret::Passphrase;
use crate::shamir::{self, SHARE_LEN, Share};
use crate::{CryptoError, ShareError, ShareFileError, hex, sharefile};

/// The fixed key every envelope is tried against. No corpus file may be sealed under
/// it: an envelope the fuzzer did not forge would then open and fail the target.
const FIXED_KEY: [u8; KEY_LEN] = [0x5a; KEY_LEN];

/// The fixed associated data envelopes are opened under.
const FIXED_AAD: Aad<'static> = Aad {
    purpose: Purpose::Secret,
    tenant: "fuzz",
    environment: "live",
    name: "byok/fuzz",
    version: 1,
    binding: b"",
};

/// Shares combined at most per input: enough for every branch of `combine`.
const MAX_SHARES: usize = 8;

fn fixed_key(version: u32) -> AeadKey {
    let raw = Locked::new(FIXED_KEY).expect("the arena has a free slot for one key");
    AeadKey::from_raw(raw, version, Pool::Vault).expect("a fixed 32-byte key expands")
}

/// `envelope`: parses `data` as an envelope; if it parses, checks what can be read from
/// it and that it does not open under a fixed key it was not sealed with, and that a
/// round trip of its ciphertext through that key does.
pub fn envelope(data: &[u8]) {
    let Ok(envelope) = Envelope::from_bytes(data.to_vec()) else {
        assert!(data.len() < OVERHEAD || data.first() != Some(&crate::envelope::FORMAT_V1));
        return;
    };
    assert_eq!(envelope.as_bytes(), data);
    assert_eq!(envelope.plaintext_len() + OVERHEAD, data.len());
    let parts = envelope.parts();
    assert_eq!(
        HEADER_LEN + NONCE_LEN + parts.ciphertext.len() + TAG_LEN,
        data.len(),
        "the parts cover the envelope exactly"
    );
    assert_eq!(
        u64::from(envelope.key_version()),
        u64::from(u32::from_be_bytes(
            data.get(1..5)
                .and_then(|b| b.try_into().ok())
                .expect("an envelope has a header")
        ))
    );
    let _ = format!("{envelope:?}");

    // The right version, so the AEAD itself runs (and must refuse), then a wrong one.
    let version = envelope.key_version();
    let key = fixed_key(version);
    let opened = key.open(&envelope, &FIXED_AAD);
    assert!(
        matches!(opened, Err(CryptoError::Decrypt)),
        "an envelope the fuzzer made opened under the fixed key"
    );
    let other = fixed_key(version.wrapping_add(1));
    assert!(matches!(
        other.open(&envelope, &FIXED_AAD),
        Err(CryptoError::Decrypt)
    ));

    // Sealing the same bytes and opening them again gives them back, at this length.
    let sealed = key
        .seal(&FIXED_AAD, parts.ciphertext)
        .expect("the fixed key has budget left");
    assert_eq!(sealed.key_version(), version);
    let back = key
        .open(&sealed, &FIXED_AAD)
        .expect("an envelope sealed under the fixed key opens under it");
    assert_eq!(back.expose_secret(), parts.ciphertext);
    assert!(
        key.open(
            &sealed,
            &Aad {
                version: 2,
                ..FIXED_AAD
            }
        )
        .is_err()
    );
}

/// `share`: parses `data` as one share in binary and in text form, as lines of text
/// shares, and as 38-byte share bodies (given their checksum, so the fuzzer reaches
/// `combine` with any generation, threshold, index and value), then combines what
/// parsed.
pub fn share(data: &[u8]) {
    if let Ok(share) = Share::from_bytes(data) {
        check_share(&share, Some(data));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(share) = Share::parse(text) {
            check_share(&share, None);
        }
        let lines: Vec<Share> = text
            .lines()
            .filter_map(|line| Share::parse(line).ok())
            .take(MAX_SHARES)
            .collect();
        combine(&lines);
    }
    let bodies: Vec<Share> = data
        .chunks(SHARE_LEN - 4)
        .take(MAX_SHARES)
        .filter_map(|body| {
            let mut bytes = Zeroizing::new(body.to_vec());
            bytes.extend_from_slice(&checksum(body));
            Share::from_bytes(&bytes).ok()
        })
        .collect();
    combine(&bodies);
}

/// The share format's checksum: the first four bytes of SHA-256 over the body.
fn checksum(body: &[u8]) -> [u8; 4] {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let mut out = [0u8; 4];
    out.copy_from_slice(digest.as_ref().get(..4).unwrap_or(&[0; 4]));
    out
}

fn check_share(share: &Share, binary: Option<&[u8]>) {
    let bytes = share.to_bytes();
    assert_eq!(bytes.len(), SHARE_LEN);
    if let Some(binary) = binary {
        assert_eq!(&bytes[..], binary, "a share's binary form round-trips");
    }
    assert!(share.index() != 0 && share.threshold() != 0);
    let text = share.encode();
    let again = Share::parse(&text).expect("an encoded share parses");
    assert_eq!(&again.to_bytes()[..], &bytes[..], "text form round-trips");
}

fn combine(shares: &[Share]) {
    let Some(first) = shares.first() else {
        assert!(matches!(
            shamir::combine(shares),
            Err(CryptoError::Shares(ShareError::NotEnough { got: 0, .. }))
        ));
        return;
    };
    match shamir::combine(shares) {
        Ok(key) => {
            assert_eq!(key.generation(), first.generation());
            assert!(shares.len() >= usize::from(first.threshold()));
            // Reconstruction is deterministic: the same shares, the same key.
            let again = shamir::combine(shares).expect("the same shares combine again");
            assert_eq!(again.raw(), key.raw());
        }
        Err(error) => assert!(
            matches!(error, CryptoError::Shares(_)),
            "combining parsed shares failed outside sharing: {error}"
        ),
    }
}

/// `sharefile`: parses `data` as a passphrase-protected share file. Files that stop
/// before key derivation (malformed, or asking for parameters outside the accepted
/// range) go through [`sharefile::open`] itself. Files that would run Argon2id with
/// real parameters (at least 64 MiB per attempt, far too slow per input) stop there:
/// their envelope is opened with a fixed stand-in key instead, which must fail.
pub fn sharefile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let passphrase = Passphrase::new("fuzzing passphrase".to_owned());
    match parse_sharefile(text) {
        Parsed::Refused => {
            let refused = sharefile::open(text, &passphrase).err();
            assert!(
                matches!(
                    refused,
                    Some(CryptoError::ShareFile(
                        ShareFileError::Malformed(_) | ShareFileError::Parameters { .. }
                    ))
                ),
                "a share file refused before derivation came out as {refused:?}"
            );
        }
        Parsed::WouldDerive { header, envelope } => {
            let aad = Aad {
                binding: &header,
                ..Aad::purpose(Purpose::ShareFile)
            };
            let key = fixed_key(0);
            let mut plain = Zeroizing::new(vec![0u8; envelope.plaintext_len()]);
            assert!(key.open_into(&envelope, &aad, &mut plain).is_err());
            assert!(plain.iter().all(|b| *b == 0), "a failed open leaves zeros");
        }
    }
}

/// Bytes of a share file's parameters and salt.
const SHAREFILE_HEADER_LEN: usize = 12 + 16;

enum Parsed {
    /// `open` refuses this before deriving a key.
    Refused,
    /// `open` would derive a key with these (accepted) parameters and try the envelope.
    WouldDerive {
        header: [u8; SHAREFILE_HEADER_LEN],
        envelope: Envelope,
    },
}

/// Follows [`sharefile::open`] up to the key derivation, to know whether calling it is
/// cheap. Kept to the format documented in `sharefile`; if the two disagree, the
/// `Refused` branch above fails loudly.
fn parse_sharefile(text: &str) -> Parsed {
    let Some(bytes) = text.trim().strip_prefix("vsf1-").and_then(hex::decode) else {
        return Parsed::Refused;
    };
    let Some((header, envelope)) = bytes.split_first_chunk::<SHAREFILE_HEADER_LEN>() else {
        return Parsed::Refused;
    };
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_be_bytes)
    };
    let (memory_kib, passes, lanes) = (word(0), word(4), word(8));
    let in_range = (sharefile::MEMORY_KIB..=1024 * 1024).contains(&memory_kib)
        && (sharefile::PASSES..=16).contains(&passes)
        && (1..=16).contains(&lanes);
    match (in_range, Envelope::from_bytes(envelope.to_vec())) {
        (true, Ok(envelope)) => Parsed::WouldDerive {
            header: *header,
            envelope,
        },
        _ => Parsed::Refused,
    }
}
