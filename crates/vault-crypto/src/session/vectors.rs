//! PROTOCOL.md's test vectors, checked against this crate: the transcript, the session
//! key from the shared secret, and each vector's binding, associated data and
//! envelope. (The X25519 step from the RFC 7748 keys is checked by the Python tests:
//! `ring` takes no fixed private key.)

use std::collections::HashMap;

use super::{SALT, SessionAad, SessionKey, Transcript, envelope_aad};
use crate::aead::AeadKey;
use crate::arena::{Locked, Pool};
use crate::envelope::header;
use crate::hex;
use crate::kdf::hkdf_sha256;
use crate::session::Direction;

const PROTOCOL: &str = include_str!("../../../../PROTOCOL.md");

/// The `name = value` lines of PROTOCOL.md's vectors block.
fn vectors() -> HashMap<&'static str, &'static str> {
    let block = PROTOCOL
        .split("```text vectors\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("PROTOCOL.md has a ```text vectors block");
    block
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .collect()
}

fn bytes(vectors: &HashMap<&str, &str>, name: &str) -> Vec<u8> {
    let text = vectors
        .get(name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    hex::decode(text)
        .unwrap_or_else(|| panic!("{name} is not hex"))
        .to_vec()
}

#[test]
fn the_protocol_documents_this_crates_bytes() {
    let v = vectors();
    let client: [u8; 32] = bytes(&v, "client_public").try_into().unwrap();
    let server: [u8; 32] = bytes(&v, "server_public").try_into().unwrap();
    let transcript = Transcript {
        client_public: &client,
        server_public: &server,
        identity: v["identity"],
        session_id: v["session_id"],
    };
    assert_eq!(transcript.encode(), bytes(&v, "transcript"));
    let mut raw = Locked::new_in(Pool::Sessions, [0u8; 32]).unwrap();
    hkdf_sha256(
        SALT,
        &bytes(&v, "shared_secret"),
        &[&transcript.encode()],
        &mut raw[..],
    )
    .unwrap();
    assert_eq!(&raw[..], &bytes(&v, "session_key")[..]);
    let key = SessionKey {
        key: AeadKey::from_raw(raw, 0, Pool::Sessions).unwrap(),
        session_id: v["session_id"].as_bytes().to_vec(),
    };

    let cases = [
        (
            "lease",
            SessionAad::lease("acme", "live", "byok/openai", 3, "l-7c2e9b4d1a6f3e08"),
        ),
        (
            "transit_encrypt",
            SessionAad::transit(Direction::ToDaemon, "acme", "test", 2),
        ),
        ("verify_api_key", SessionAad::api_key_to_verify("live")),
    ];
    for (name, aad) in cases {
        let at = |field: &str| bytes(&v, &format!("{name}.{field}"));
        let binding = key.binding(&aad);
        assert_eq!(binding, at("binding"), "{name}");
        assert_eq!(
            envelope_aad(&aad, &binding).encode(&header(0)),
            at("aad"),
            "{name}"
        );
        let envelope = at("envelope");
        assert_eq!(envelope[5..17], at("nonce")[..], "{name}");
        let opened = key.open(&aad, &envelope).unwrap();
        assert_eq!(opened.expose_secret(), &at("plaintext")[..], "{name}");
        // Moved to another item or version, it does not open.
        let moved = SessionAad {
            version: aad.version + 1,
            ..aad
        };
        assert!(key.open(&moved, &envelope).is_err(), "{name}");
    }
}
