//! Frozen "golden" vectors that catch drift in the envelope, associated-data, share
//! and share-file formats.
//!
//! Keys cannot be imported through the public API, but two public paths derive keys
//! deterministically from public bytes: Shamir shares (`Share::parse` + `combine`
//! give an unseal key) and share files (Argon2id of a passphrase). From a frozen set
//! of shares the whole hierarchy follows: the unseal key opens a frozen seal record
//! (the root key), which opens a frozen wrapped tenant key and system key, which open
//! frozen secret and transit envelopes and give frozen MACs and signatures.
//!
//! The vectors were produced by `regenerate_golden_vectors` below: an independent
//! encoder written from the format documentation in `envelope`, `shamir` and
//! `sharefile`, using ring and argon2 directly with fixed nonces. A failing vector
//! means stored data would no longer open: change the format version instead of
//! regenerating.

use vault_crypto::envelope::{
    Aad, Envelope, FORMAT_V1, HEADER_LEN, NONCE_LEN, OVERHEAD, Purpose, TAG_LEN,
};
use vault_crypto::shamir::{self, SHARE_LEN, Share};
use vault_crypto::{Passphrase, RootKey, TenantKey, UnsealKey, sharefile, verify_ed25519};

const GENERATION: u32 = 7;
const ROOT_VERSION: u32 = 1;
const TENANT: &str = "acme-corp";
const TENANT_KEY_VERSION: u32 = 3;
const SYSTEM_KEY_NAME: &str = "audit-mac";
const SECRET: &[u8] = b"sk-golden-0123456789";
const TRANSIT: &[u8] = b"transit plaintext";
const MAC_MESSAGE: &[u8] = b"audit record 1";
const SIGNED_MESSAGE: &[u8] = b"checkpoint 1";
const PASSPHRASE: &str = "correct horse battery staple";

fn secret_aad() -> Aad<'static> {
    Aad {
        purpose: Purpose::Secret,
        tenant: TENANT,
        environment: "live",
        name: "byok/openai",
        version: 3,
        binding: &[],
    }
}

fn transit_aad() -> Aad<'static> {
    Aad {
        purpose: Purpose::Transit,
        tenant: TENANT,
        environment: "",
        name: "transit/payments",
        version: 1,
        binding: b"lease-42",
    }
}

// --- frozen vectors (from `regenerate_golden_vectors`) ---------------------------

/// Shares 1, 2 and 3 of a 2-of-3 split, generation 7.
const SHARES: [&str; 3] = [
    "vs1-000000070201a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0d078c574",
    "vs1-0000000702025b585d5e57545152434045464f4c494a6b686d6e67646162737075767f7c797ab5457c6f",
    "vs1-000000070203fbf9fffdf3f1f7f5ebe9efede3e1e7e5dbd9dfddd3d1d7d5cbc9cfcdc3c1c7c562d7c92d",
];
/// The root key wrapped under the unseal key the shares reconstruct.
const SEAL_RECORD: &str = "010000000701010101010101010101010157e2c7164ca04e41fc7d4d33344a7cf7fb5fbde8a5b620ebcbe23dd7a134c00e3d01995d7deef3dbec02463daefcd2cb";
/// Tenant key version 3 of `acme-corp`, wrapped under root key version 1.
const WRAPPED_TENANT_KEY: &str = "01000000010202020202020202020202022d4f77f86849add9ac06e840368a03cbbb0529fef74da1be20cee3885fb0cdf36f0e61a8ba699795b5c1e3a32d1a8f25";
/// System key `audit-mac`, wrapped under root key version 1.
const WRAPPED_SYSTEM_KEY: &str = "010000000103030303030303030303030355b325358da551bbfecb850fd15385b8b020d8bd59e61490f4db2dc7a6bfcb3ddd8161a8a4a3e74e2078599b946f34e7";
/// `SECRET` sealed under the tenant key with `secret_aad()`.
const SECRET_ENVELOPE: &str = "0100000003040404040404040404040404dd313a42240b0a7e1273d7d017838f1600bb90855dd90b1032fefa5f75efdd37bb9ee072";
/// `TRANSIT` sealed under the tenant key with `transit_aad()` (non-empty binding).
const TRANSIT_ENVELOPE: &str = "01000000030505050505050505050505059aae9900893f78b754646efd1f6a46ba4bc23c0a90ec5216ef929527f54fd5d591";
/// The tenant key's fingerprint of `SECRET` as the value of `acme-corp/live/byok/openai`.
const FINGERPRINT: &str = "e6b306357f00343d";
/// HMAC-SHA256 of `MAC_MESSAGE` under the system key.
const MAC_TAG: &str = "a5d3c329672b50ebc3e04274c31a1587e0156273a5352a9085f1aa6926250135";
/// Ed25519 public key whose seed is the system key, and its signature of `SIGNED_MESSAGE`.
const PUBLIC_KEY: &str = "174553b456dddfc6908ecab1c101fe6ab21e2baa0617795b7d43a63482993fd5";
const SIGNATURE: &str = "e4c4487af12a237b634e7ae4c447868f0edbd715d16bab91f7d327da8ba39341756c70b327cf86cfa4d8efd5efa35c9bdb34701e11fa2b978e5b52666f21e703";
/// Share 1 protected by `PASSPHRASE` (Argon2id 64 MiB, 3 passes, 1 lane).
const SHARE_FILE: &str = "vsf1-0001000000000003000000015a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a01000000000606060606060606060606067bf0a57cbae40726b15eb5cffa2f2a3a0c8cc6dd33a67a90238d39655be1c85c731868e284ecffe2451ed128aeef2afec6b5246c81806c587c4c";

// -----------------------------------------------------------------------------------

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd-length hex");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("golden hex"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn envelope(text: &str) -> Envelope {
    Envelope::from_bytes(unhex(text)).expect("golden envelope parses")
}

fn shares(indices: &[usize]) -> Vec<Share> {
    indices
        .iter()
        .map(|&i| {
            Share::parse(SHARES.get(i).expect("a golden share index")).expect("golden share parses")
        })
        .collect()
}

fn golden_root_key() -> RootKey {
    let unseal = shamir::combine(&shares(&[0, 1])).expect("golden shares combine");
    unseal
        .unwrap_root_key(&envelope(SEAL_RECORD), ROOT_VERSION)
        .expect("golden seal record opens")
}

fn golden_tenant_key() -> TenantKey {
    golden_root_key()
        .unwrap_tenant_key(TENANT, TENANT_KEY_VERSION, &envelope(WRAPPED_TENANT_KEY))
        .expect("golden tenant key unwraps")
}

#[test]
fn format_constants_are_frozen() {
    assert_eq!(
        (FORMAT_V1, HEADER_LEN, NONCE_LEN, TAG_LEN, OVERHEAD),
        (0x01, 5, 12, 16, 33)
    );
    assert_eq!(SHARE_LEN, 42);
    let purposes = [
        Purpose::Seal,
        Purpose::TenantKey,
        Purpose::Secret,
        Purpose::Transit,
        Purpose::SystemKey,
        Purpose::ShareFile,
        Purpose::Session,
    ];
    assert_eq!(purposes.map(|p| p as u8), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        (sharefile::MEMORY_KIB, sharefile::PASSES, sharefile::LANES),
        (65536, 3, 1)
    );
}

#[test]
fn golden_shares_parse_and_re_encode_identically() {
    for (i, text) in SHARES.iter().enumerate() {
        let share = Share::parse(text).unwrap();
        let index = u8::try_from(i + 1).unwrap();
        assert_eq!(
            (share.generation(), share.threshold(), share.index()),
            (GENERATION, 2, index)
        );
        assert_eq!(&share.encode()[..], *text);
        assert_eq!(&share.to_bytes()[..4], &GENERATION.to_be_bytes());
        assert_eq!(&share.to_bytes()[4..6], &[2, index]);
    }
}

#[test]
fn every_golden_quorum_opens_the_golden_seal_record() {
    for quorum in [&[0, 1][..], &[1, 0], &[0, 2], &[2, 1], &[2, 0, 1]] {
        let unseal = shamir::combine(&shares(quorum)).unwrap();
        assert_eq!(unseal.generation(), GENERATION);
        assert!(
            unseal
                .unwrap_root_key(&envelope(SEAL_RECORD), ROOT_VERSION)
                .is_ok(),
            "quorum {quorum:?}"
        );
    }
    // One share is below the threshold.
    assert!(shamir::combine(&shares(&[1])).is_err());
}

#[test]
fn golden_secret_and_transit_envelopes_open() {
    let tenant_key = golden_tenant_key();
    assert_eq!(tenant_key.version(), TENANT_KEY_VERSION);
    let secret = tenant_key
        .open(&envelope(SECRET_ENVELOPE), &secret_aad())
        .unwrap();
    assert_eq!(secret.expose_secret(), SECRET);
    let transit = tenant_key
        .open(&envelope(TRANSIT_ENVELOPE), &transit_aad())
        .unwrap();
    assert_eq!(transit.expose_secret(), TRANSIT);
    assert_eq!(
        hex(&tenant_key
            .fingerprint(TENANT, "live", "byok/openai", SECRET)
            .unwrap()),
        FINGERPRINT
    );
}

#[test]
fn golden_system_key_gives_frozen_mac_and_signature() {
    let system = golden_root_key()
        .unwrap_system_key(SYSTEM_KEY_NAME, &envelope(WRAPPED_SYSTEM_KEY))
        .unwrap();
    let mac = system.mac_key().unwrap();
    assert_eq!(hex(&mac.sign(MAC_MESSAGE)), MAC_TAG);
    assert!(mac.verify(MAC_MESSAGE, &unhex(MAC_TAG)));
    let signer = system.signing_key().unwrap();
    assert_eq!(hex(&signer.public_key()), PUBLIC_KEY);
    assert_eq!(hex(&signer.sign(SIGNED_MESSAGE)), SIGNATURE);
    let public: [u8; 32] = unhex(PUBLIC_KEY).try_into().unwrap();
    assert!(verify_ed25519(&public, SIGNED_MESSAGE, &unhex(SIGNATURE)));
}

#[test]
fn golden_share_file_opens() {
    let share = sharefile::open(SHARE_FILE, &Passphrase::new(PASSPHRASE.into())).unwrap();
    assert_eq!(&share.encode()[..], SHARES[0]);
}

/// What sealing writes, byte by byte (the nonce is random, so this is a layout check;
/// the frozen vectors above pin the cryptographic content).
#[test]
fn sealed_envelopes_have_the_documented_layout() {
    let tenant_key = TenantKey::generate(0x0102_0304).unwrap();
    for len in [0usize, 1, 16, 64, 1000] {
        let plaintext = vec![0xa5u8; len];
        let first = tenant_key.seal(&secret_aad(), &plaintext).unwrap();
        let second = tenant_key.seal(&secret_aad(), &plaintext).unwrap();
        for sealed in [&first, &second] {
            let bytes = sealed.as_bytes();
            assert_eq!(bytes.len(), len + 33, "header 5 + nonce 12 + tag 16");
            assert_eq!(bytes[0], 0x01, "format byte");
            assert_eq!(&bytes[1..5], &[0x01, 0x02, 0x03, 0x04], "key version BE");
            assert_eq!(sealed.key_version(), 0x0102_0304);
            assert_eq!(sealed.plaintext_len(), len);
        }
        assert_eq!(first.as_bytes()[..5], second.as_bytes()[..5]);
        assert_ne!(
            first.as_bytes()[5..17],
            second.as_bytes()[5..17],
            "fresh random nonce per seal"
        );
        if len >= 16 {
            assert_ne!(&first.as_bytes()[17..17 + len], &plaintext[..]);
        }
    }

    // Wrapped keys: 32-byte plaintext, header names the wrapping key's version.
    let unseal = UnsealKey::generate(GENERATION).unwrap();
    let root = RootKey::generate(9).unwrap();
    let record = unseal.wrap_root_key(&root).unwrap();
    assert_eq!(record.as_bytes().len(), 65);
    assert_eq!(&record.as_bytes()[..5], &[1, 0, 0, 0, 7]);
    let wrapped = root.wrap_tenant_key(TENANT, &tenant_key).unwrap();
    assert_eq!(&wrapped.as_bytes()[..5], &[1, 0, 0, 0, 9]);
}

/// Re-sealing under the golden keys round-trips and keeps the golden header.
#[test]
fn golden_keys_reseal_with_the_same_header() {
    let root = golden_root_key();
    let tenant_key = golden_tenant_key();
    let rewrapped = root.wrap_tenant_key(TENANT, &tenant_key).unwrap();
    assert_eq!(
        rewrapped.as_bytes()[..5],
        unhex(WRAPPED_TENANT_KEY)[..5],
        "wrapped tenant key header"
    );
    let resealed = tenant_key.seal(&secret_aad(), SECRET).unwrap();
    assert_eq!(
        resealed.as_bytes()[..5],
        unhex(SECRET_ENVELOPE)[..5],
        "secret envelope header"
    );
    assert_eq!(resealed.as_bytes().len(), unhex(SECRET_ENVELOPE).len());
    assert_eq!(
        tenant_key
            .open(&resealed, &secret_aad())
            .unwrap()
            .expose_secret(),
        SECRET
    );
}

/// An encoder written from the format documentation alone, independent of the crate's
/// code: prints the frozen constants above. Run after a deliberate format change with
/// `cargo test -p vault-crypto --test golden -- --ignored --nocapture`.
#[test]
#[ignore = "generator for the frozen vectors; the constants are not to be regenerated to make a test pass"]
fn regenerate_golden_vectors() {
    use ring::aead::{AES_256_GCM, LessSafeKey, Nonce, UnboundKey};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn aad_bytes(
        header: &[u8; 5],
        purpose: u8,
        fields: [&[u8]; 3],
        version: u64,
        binding: &[u8],
    ) -> Vec<u8> {
        let mut out = b"vaultd.aad".to_vec();
        out.extend_from_slice(header);
        out.push(purpose);
        for field in fields {
            out.extend_from_slice(&u32::try_from(field.len()).unwrap().to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&u32::try_from(binding.len()).unwrap().to_be_bytes());
        out.extend_from_slice(binding);
        out
    }

    #[allow(clippy::too_many_arguments)] // mirrors the documented fields one to one
    fn seal(
        key: &[u8; 32],
        key_version: u32,
        nonce: u8,
        purpose: u8,
        fields: [&str; 3],
        version: u64,
        binding: &[u8],
        plaintext: &[u8],
    ) -> String {
        let mut header = [FORMAT_V1, 0, 0, 0, 0];
        header[1..].copy_from_slice(&key_version.to_be_bytes());
        let aad = aad_bytes(
            &header,
            purpose,
            fields.map(str::as_bytes),
            version,
            binding,
        );
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let nonce = [nonce; 12];
        let mut buf = plaintext.to_vec();
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&aad),
                &mut buf,
            )
            .unwrap();
        hex(&[&header[..], &nonce, &buf, tag.as_ref()].concat())
    }

    fn gf_mul(mut a: u8, mut b: u8) -> u8 {
        let mut p = 0;
        while b != 0 {
            if b & 1 == 1 {
                p ^= a;
            }
            a = (a << 1) ^ if a & 0x80 != 0 { 0x1b } else { 0 };
            b >>= 1;
        }
        p
    }

    fn share_bytes(unseal: &[u8; 32], slope: &[u8; 32], index: u8) -> Vec<u8> {
        let mut body = GENERATION.to_be_bytes().to_vec();
        body.extend_from_slice(&[2, index]);
        body.extend(unseal.iter().zip(slope).map(|(c, a)| c ^ gf_mul(*a, index)));
        let check = ring::digest::digest(&ring::digest::SHA256, &body);
        body.extend_from_slice(&check.as_ref()[..4]);
        body
    }

    let key = |first: u8| -> [u8; 32] { std::array::from_fn(|i| first + u8::try_from(i).unwrap()) };
    let (unseal, slope, root, tenant, system) =
        (key(0x00), key(0xa0), key(0x20), key(0x40), key(0x60));

    for index in 1..=3 {
        println!(
            "SHARE{index} vs1-{}",
            hex(&share_bytes(&unseal, &slope, index))
        );
    }
    println!(
        "SEAL_RECORD {}",
        seal(
            &unseal,
            GENERATION,
            1,
            1,
            ["", "", "root-key"],
            ROOT_VERSION.into(),
            b"",
            &root
        )
    );
    println!(
        "WRAPPED_TENANT_KEY {}",
        seal(
            &root,
            ROOT_VERSION,
            2,
            2,
            [TENANT, "", ""],
            TENANT_KEY_VERSION.into(),
            b"",
            &tenant
        )
    );
    println!(
        "WRAPPED_SYSTEM_KEY {}",
        seal(
            &root,
            ROOT_VERSION,
            3,
            5,
            ["", "", SYSTEM_KEY_NAME],
            0,
            b"",
            &system
        )
    );
    println!(
        "SECRET_ENVELOPE {}",
        seal(
            &tenant,
            TENANT_KEY_VERSION,
            4,
            3,
            [TENANT, "live", "byok/openai"],
            3,
            b"",
            SECRET
        )
    );
    println!(
        "TRANSIT_ENVELOPE {}",
        seal(
            &tenant,
            TENANT_KEY_VERSION,
            5,
            4,
            [TENANT, "", "transit/payments"],
            1,
            b"lease-42",
            TRANSIT
        )
    );

    let mut mac_key = [0u8; 32];
    let mut place = Vec::new();
    for part in [TENANT, "live", "byok/openai"] {
        place.extend_from_slice(&(part.len() as u32).to_be_bytes());
        place.extend_from_slice(part.as_bytes());
    }
    ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[])
        .extract(&tenant)
        .expand(&[b"vaultd fingerprint v2", &place], ring::hkdf::HKDF_SHA256)
        .unwrap()
        .fill(&mut mac_key)
        .unwrap();
    let fingerprint = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &mac_key),
        SECRET,
    );
    println!("FINGERPRINT {}", hex(&fingerprint.as_ref()[..8]));
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &system),
        MAC_MESSAGE,
    );
    println!("MAC_TAG {}", hex(tag.as_ref()));
    let pair = Ed25519KeyPair::from_seed_unchecked(&system).unwrap();
    println!("PUBLIC_KEY {}", hex(pair.public_key().as_ref()));
    println!("SIGNATURE {}", hex(pair.sign(SIGNED_MESSAGE).as_ref()));

    let salt = [0x5au8; 16];
    let params = [
        &65536u32.to_be_bytes()[..],
        &3u32.to_be_bytes(),
        &1u32.to_be_bytes(),
        &salt,
    ]
    .concat();
    let mut file_key = [0u8; 32];
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(65536, 3, 1, Some(32)).unwrap(),
    )
    .hash_password_into(PASSPHRASE.as_bytes(), &salt, &mut file_key)
    .unwrap();
    let sealed = seal(
        &file_key,
        0,
        6,
        6,
        ["", "", ""],
        0,
        &params,
        &share_bytes(&unseal, &slope, 1),
    );
    println!("SHARE_FILE vsf1-{}{sealed}", hex(&params));
}
