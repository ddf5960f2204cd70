//! Property tests of the envelope and Shamir layers: round trips, tamper detection,
//! the seal-record check, and parsers that never panic on arbitrary input.
//!
//! Case counts are modest so the binary runs in seconds in a debug build; raise them
//! locally with `PROPTEST_CASES=…` when changing the crate.

use proptest::prelude::*;
use proptest::sample::Index;
use vault_crypto::envelope::{Aad, Envelope, OVERHEAD, Purpose};
use vault_crypto::shamir::{self, SHARE_LEN, Share};
use vault_crypto::{CryptoError, Passphrase, RootKey, ShareError, TenantKey, UnsealKey, sharefile};

const ALL_PURPOSES: [Purpose; 7] = [
    Purpose::Seal,
    Purpose::TenantKey,
    Purpose::Secret,
    Purpose::Transit,
    Purpose::SystemKey,
    Purpose::ShareFile,
    Purpose::Session,
];

/// Owned associated data, so strategies can generate it; `aad()` borrows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedAad {
    purpose: Purpose,
    tenant: String,
    environment: String,
    name: String,
    version: u64,
    binding: Vec<u8>,
}

impl OwnedAad {
    fn aad(&self) -> Aad<'_> {
        Aad {
            purpose: self.purpose,
            tenant: &self.tenant,
            environment: &self.environment,
            name: &self.name,
            version: self.version,
            binding: &self.binding,
        }
    }
}

/// Associated data a tenant key may seal under: purpose secret or transit.
fn sealable_aad() -> impl Strategy<Value = OwnedAad> {
    (
        prop_oneof![Just(Purpose::Secret), Just(Purpose::Transit)],
        "\\PC{0,24}",
        prop_oneof![Just(String::new()), Just("live".to_owned()), "\\PC{0,8}"],
        "\\PC{0,40}",
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(
            |(purpose, tenant, environment, name, version, binding)| OwnedAad {
                purpose,
                tenant,
                environment,
                name,
                version,
                binding,
            },
        )
}

fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2048)
}

/// A string guaranteed to differ from `old`: the candidate, or `old` with a suffix.
fn different(old: &str, candidate: String) -> String {
    if candidate == old {
        format!("{old}\u{0}")
    } else {
        candidate
    }
}

/// Opening must fail: either the bytes are no longer an envelope, or they do not open.
fn assert_does_not_open(key: &TenantKey, bytes: Vec<u8>, aad: &Aad<'_>) {
    if let Ok(envelope) = Envelope::from_bytes(bytes) {
        assert!(
            matches!(key.open(&envelope, aad), Err(CryptoError::Decrypt)),
            "a modified envelope opened"
        );
    }
}

/// An independent copy of a share, through its binary form.
fn copy(share: &Share) -> Share {
    Share::from_bytes(&share.to_bytes()).expect("a share's own bytes parse")
}

/// Share-set shape and choice: threshold `t` of `n`, the order in which shares are
/// picked, and how many of them (`k`) are given to `combine`.
#[derive(Debug, Clone)]
struct Quorum {
    t: usize,
    n: usize,
    order: Vec<usize>,
    k: usize,
}

/// Mostly small sets (at most 12 shares), occasionally larger ones.
fn share_count() -> impl Strategy<Value = usize> {
    prop_oneof![9 => 1..=12usize, 1 => 13..=40usize]
}

/// A quorum of at least the threshold: exactly `t` shares most of the time.
fn quorum() -> impl Strategy<Value = Quorum> {
    share_count()
        .prop_flat_map(|n| (1..=n, Just(n)))
        .prop_flat_map(|(t, n)| {
            let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            let k = prop_oneof![3 => Just(t), 1 => t..=n];
            (Just(t), Just(n), order, k)
        })
        .prop_map(|(t, n, order, k)| Quorum { t, n, order, k })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn open_inverts_seal(
        key_version in any::<u32>(),
        aad in sealable_aad(),
        plaintext in plaintext(),
    ) {
        let key = TenantKey::generate(key_version).unwrap();
        let envelope = key.seal(&aad.aad(), &plaintext).unwrap();
        prop_assert_eq!(envelope.as_bytes().len(), plaintext.len() + OVERHEAD);
        prop_assert_eq!(envelope.key_version(), key_version);
        let reparsed = Envelope::from_bytes(envelope.into_bytes()).unwrap();
        let opened = key.open(&reparsed, &aad.aad()).unwrap();
        prop_assert_eq!(opened.expose_secret(), &plaintext[..]);
    }

    #[test]
    fn any_single_bit_flip_is_detected(
        aad in sealable_aad(),
        plaintext in prop::collection::vec(any::<u8>(), 0..256),
        position in any::<Index>(),
        bit in 0..8u8,
    ) {
        let key = TenantKey::generate(1).unwrap();
        let mut bytes = key.seal(&aad.aad(), &plaintext).unwrap().into_bytes();
        let byte = position.get_mut(&mut bytes);
        *byte ^= 1 << bit;
        assert_does_not_open(&key, bytes, &aad.aad());
    }

    #[test]
    fn moving_an_envelope_to_other_associated_data_is_detected(
        aad in sealable_aad(),
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
        field in 0..7usize,
        other_text in "\\PC{0,24}",
        other_number in any::<u64>(),
        other_binding in prop::collection::vec(any::<u8>(), 0..32),
        other_purpose in any::<Index>(),
    ) {
        let key = TenantKey::generate(7).unwrap();
        let envelope = key.seal(&aad.aad(), &plaintext).unwrap();
        let mut moved = aad.clone();
        let mut bytes = envelope.into_bytes();
        match field {
            0 => moved.tenant = different(&aad.tenant, other_text),
            1 => moved.environment = different(&aad.environment, other_text),
            2 => moved.name = different(&aad.name, other_text),
            3 => moved.version = if other_number == aad.version { !other_number } else { other_number },
            4 => {
                moved.binding = if other_binding == aad.binding {
                    [&aad.binding[..], &[0]].concat()
                } else {
                    other_binding
                };
            }
            5 => {
                let others: Vec<Purpose> =
                    ALL_PURPOSES.into_iter().filter(|p| *p != aad.purpose).collect();
                moved.purpose = *other_purpose.get(&others);
            }
            _ => {
                // Claim another key version in the header (bytes 1..5).
                let claimed = u32::try_from(other_number >> 32).unwrap();
                let claimed = if claimed == 7 { 8 } else { claimed };
                bytes[1..5].copy_from_slice(&claimed.to_be_bytes());
            }
        }
        assert_does_not_open(&key, bytes, &moved.aad());
    }

    #[test]
    fn truncated_or_extended_envelopes_are_rejected(
        aad in sealable_aad(),
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
        cut in any::<Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..48),
    ) {
        let key = TenantKey::generate(2).unwrap();
        let bytes = key.seal(&aad.aad(), &plaintext).unwrap().into_bytes();
        // Keep 0..len-1 bytes: every proper prefix.
        let keep = cut.index(bytes.len());
        assert_does_not_open(&key, bytes[..keep].to_vec(), &aad.aad());
        assert_does_not_open(&key, [&bytes[..], &extra[..]].concat(), &aad.aad());
    }

    #[test]
    fn another_key_of_the_same_version_cannot_open(
        aad in sealable_aad(),
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let key = TenantKey::generate(4).unwrap();
        let other = TenantKey::generate(4).unwrap();
        let envelope = key.seal(&aad.aad(), &plaintext).unwrap();
        prop_assert!(matches!(other.open(&envelope, &aad.aad()), Err(CryptoError::Decrypt)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_quorum_reconstructs_the_key_that_opens_the_seal_record(
        q in quorum(),
        generation in any::<u32>(),
        root_version in any::<u32>(),
    ) {
        let unseal = UnsealKey::generate(generation).unwrap();
        let root = RootKey::generate(root_version).unwrap();
        let record = unseal.wrap_root_key(&root).unwrap();
        let shares = shamir::split(&unseal, q.t, q.n).unwrap();
        prop_assert_eq!(shares.len(), q.n);

        let picked: Vec<Share> = q.order[..q.k].iter().map(|&i| copy(&shares[i])).collect();
        let rebuilt = shamir::combine(&picked).unwrap();
        prop_assert_eq!(rebuilt.generation(), generation);
        let opened = rebuilt.unwrap_root_key(&record, root_version).unwrap();

        // The opened root key is the original: it unwraps what the original wrapped.
        let tenant_key = TenantKey::generate(1).unwrap();
        let wrapped = root.wrap_tenant_key("acme", &tenant_key).unwrap();
        prop_assert!(opened.unwrap_tenant_key("acme", 1, &wrapped).is_ok());
    }

    #[test]
    fn mixing_in_shares_of_another_key_fails_the_seal_record_check(
        q in quorum(),
        generation in any::<u32>(),
        replace in prop::collection::vec(any::<bool>(), 40),
        forced in any::<Index>(),
    ) {
        let unseal = UnsealKey::generate(generation).unwrap();
        let record = unseal.wrap_root_key(&RootKey::generate(1).unwrap()).unwrap();
        let impostor = UnsealKey::generate(generation).unwrap();
        let ours = shamir::split(&unseal, q.t, q.n).unwrap();
        let theirs = shamir::split(&impostor, q.t, q.n).unwrap();

        // Exactly T shares: with more than T, a mixed-in share's Lagrange coefficient
        // can be zero in GF(2^8), and the original key is then rebuilt correctly.
        // Swap some picked shares (at least one) for the other set's share of the same
        // index, so indices stay distinct and `combine` itself succeeds.
        let forced = forced.index(q.t);
        let picked: Vec<Share> = q.order[..q.t]
            .iter()
            .enumerate()
            .map(|(pos, &i)| if pos == forced || replace[pos] { copy(&theirs[i]) } else { copy(&ours[i]) })
            .collect();
        let rebuilt = shamir::combine(&picked).unwrap();
        prop_assert!(matches!(rebuilt.unwrap_root_key(&record, 1), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn fewer_shares_than_the_threshold_are_refused(
        (t, n, order, k) in share_count()
            .prop_filter("threshold above one", |n| *n >= 2)
            .prop_flat_map(|n| (2..=n, Just(n)))
            .prop_flat_map(|(t, n)| {
                (Just(t), Just(n), Just((0..n).collect::<Vec<_>>()).prop_shuffle(), 0..t)
            }),
    ) {
        let unseal = UnsealKey::generate(3).unwrap();
        let shares = shamir::split(&unseal, t, n).unwrap();
        let picked: Vec<Share> = order[..k].iter().map(|&i| copy(&shares[i])).collect();
        let refused = shamir::combine(&picked);
        if k == 0 {
            let refused_empty =
                matches!(refused, Err(CryptoError::Shares(ShareError::NotEnough { got: 0, .. })));
            prop_assert!(refused_empty);
        } else {
            let expected = ShareError::NotEnough { got: k, threshold: t };
            prop_assert!(matches!(refused, Err(CryptoError::Shares(e)) if e == expected));
        }
    }
}

/// `vs1-` hex of `body` with a correct checksum, so parsing reaches past the check.
fn checksummed(body: &[u8]) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let (check, _) = digest
        .as_ref()
        .split_first_chunk::<4>()
        .expect("SHA-256 is 32 bytes");
    [body, check].concat()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn envelope_parsing_never_panics(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..96),
            // Mostly well-formatted, so opening is reached too.
            prop::collection::vec(any::<u8>(), 0..96).prop_map(|mut v| {
                if let Some(format) = v.first_mut() {
                    *format = vault_crypto::envelope::FORMAT_V1;
                }
                v
            }),
        ],
    ) {
        let len = bytes.len();
        if let Ok(envelope) = Envelope::from_bytes(bytes) {
            prop_assert!(len >= OVERHEAD);
            prop_assert_eq!(envelope.plaintext_len(), len - OVERHEAD);
            let _ = envelope.key_version();
            let key = TenantKey::generate(envelope.key_version()).unwrap();
            prop_assert!(key.open(&envelope, &Aad::purpose(Purpose::Secret)).is_err());
        }
    }

    #[test]
    fn share_parsing_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        body in prop::collection::vec(any::<u8>(), SHARE_LEN - 4),
        text in "\\PC{0,100}",
    ) {
        let _ = Share::from_bytes(&bytes);
        let _ = Share::parse(&text);
        let _ = Share::parse(&format!("vs1-{text}"));
        let _ = Share::parse(&format!("vs1-{}", hex(&bytes)));
        // Well-checksummed garbage parses unless index or threshold is zero, and then
        // round-trips and combines without panicking.
        match Share::from_bytes(&checksummed(&body)) {
            Ok(share) => {
                prop_assert!(share.index() != 0 && share.threshold() != 0);
                prop_assert_eq!(&share.to_bytes()[..], &checksummed(&body)[..]);
                let _ = shamir::combine(&[share]);
            }
            Err(e) => prop_assert!(
                matches!(
                    e,
                    vault_crypto::CryptoError::Shares(ShareError::Malformed(
                        "index and threshold must be non-zero"
                    ))
                ),
                "{e:?}"
            ),
        }
    }

    /// Only inputs rejected before key derivation: Argon2id here costs 64 MiB.
    #[test]
    fn share_file_parsing_never_panics(
        text in "\\PC{0,120}",
        bytes in prop::collection::vec(any::<u8>(), 0..120),
        short_tail in prop::collection::vec(any::<u8>(), 0..OVERHEAD),
        memory_kib in prop_oneof![0..sharefile::MEMORY_KIB, (1024 * 1024 + 1)..=u32::MAX],
        passes in any::<u32>(),
        lanes in any::<u32>(),
        salt in any::<[u8; 16]>(),
    ) {
        let pass = Passphrase::new("p".into());
        prop_assert!(sharefile::open(&text, &pass).is_err());
        let prefixed = format!("vsf1-{text}");
        prop_assert!(sharefile::open(&prefixed, &pass).is_err());
        // Arbitrary bytes are cheap only while the parameters they spell are refused.
        if bytes.len() < 12 + 16 + OVERHEAD
            || !(sharefile::MEMORY_KIB..=1024 * 1024)
                .contains(&u32::from_be_bytes(bytes[..4].try_into().unwrap()))
        {
            let file = format!("vsf1-{}", hex(&bytes));
            prop_assert!(sharefile::open(&file, &pass).is_err());
        }
        // Parameters out of range are refused before any derivation.
        let params = [
            &memory_kib.to_be_bytes()[..],
            &passes.to_be_bytes(),
            &lanes.to_be_bytes(),
            &salt,
        ]
        .concat();
        let file = format!("vsf1-{}{}", hex(&params), hex(&bytes));
        prop_assert!(sharefile::open(&file, &pass).is_err());
        // Parameters in range but a ciphertext too short to be an envelope.
        let params = [
            &sharefile::MEMORY_KIB.to_be_bytes()[..],
            &sharefile::PASSES.to_be_bytes(),
            &sharefile::LANES.to_be_bytes(),
            &salt,
        ]
        .concat();
        let file = format!("vsf1-{}{}", hex(&params), hex(&short_tail));
        prop_assert!(sharefile::open(&file, &pass).is_err());
    }
}
