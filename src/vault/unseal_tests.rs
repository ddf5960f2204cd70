//! Tests of the seal lifecycle over a real redb file: init, unseal and its progress,
//! seal, rekey, root-key rotation (interrupted, and with leases flowing).

use std::time::Duration;

use vault_crypto::shamir::Share;

use super::tests::{copy, fresh, id, unseal_with, value};
use super::*;
use crate::names::{Environment, SecretKind, TenantId};

#[test]
fn lifecycle_init_unseal_seal() {
    let (f, shares) = fresh(VaultOptions::default());
    assert!(matches!(
        f.vault.status().unwrap(),
        Status::Sealed {
            threshold: 3,
            shares: 5,
            generation: 1,
            progress: None
        }
    ));
    assert!(matches!(f.vault.init(1, 1), Err(Error::AlreadyInitialised)));
    assert!(matches!(
        f.vault.describe_secret(&id("acme", "x")),
        Err(Error::Sealed)
    ));

    let first = f.vault.unseal(copy(&shares[4]), None).unwrap();
    let UnsealOutcome::InProgress {
        nonce,
        submitted: 1,
        threshold: 3,
    } = first
    else {
        panic!("{first:?}")
    };
    assert!(matches!(
        f.vault.unseal(copy(&shares[0]), None),
        Err(Error::UnsealNonceMismatch)
    ));
    assert!(matches!(
        f.vault.unseal(copy(&shares[4]), Some(&nonce)),
        Err(Error::DuplicateShare(5))
    ));
    f.vault.unseal(copy(&shares[1]), Some(&nonce)).unwrap();
    assert_eq!(
        f.vault.unseal(copy(&shares[2]), Some(&nonce)).unwrap(),
        UnsealOutcome::Unsealed
    );
    assert!(matches!(
        f.vault.status().unwrap(),
        Status::Unsealed {
            root_version: 1,
            ..
        }
    ));

    let secret = id("acme", "byok/openai");
    f.vault
        .put_secret(
            &secret,
            SecretKind::Byok,
            &value("sk-abcdefghijklmnopqrstuvwxyz"),
        )
        .unwrap();
    f.vault.seal().unwrap();
    // Every key was wiped: each operation now fails as sealed.
    assert!(matches!(
        f.vault.open_secret(&secret, None),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        f.vault.describe_secret(&secret),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        f.vault.put_secret(&secret, SecretKind::Byok, &value("x")),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        f.vault.status().unwrap(),
        Status::Sealed { progress: None, .. }
    ));

    unseal_with(&f.vault, &shares[2..5]).unwrap();
    let (plain, version) = f.vault.open_secret(&secret, None).unwrap();
    assert_eq!(
        (plain.expose_secret(), version),
        (&b"sk-abcdefghijklmnopqrstuvwxyz"[..], 1)
    );
}

#[test]
fn wrong_share_is_detected_and_progress_discarded() {
    let (f, shares) = fresh(VaultOptions::default());
    // A share of the right set with a corrupted y value (valid checksum recomputed).
    let mut bytes = shares[0].to_bytes().to_vec();
    bytes[10] ^= 0x01;
    bytes.truncate(38);
    let check = ring_checksum(&bytes);
    bytes.extend_from_slice(&check);
    let corrupt = Share::from_bytes(&bytes).unwrap();
    let mut with_bad = vec![corrupt];
    with_bad.extend(shares[1..3].iter().map(copy));
    assert!(matches!(
        unseal_with(&f.vault, &with_bad),
        Err(Error::WrongShares)
    ));
    assert!(matches!(
        f.vault.status().unwrap(),
        Status::Sealed { progress: None, .. }
    ));
    // A fresh attempt with good shares works: nothing of the bad attempt lingers.
    assert_eq!(
        unseal_with(&f.vault, &shares[..3]).unwrap(),
        UnsealOutcome::Unsealed
    );
}

fn ring_checksum(body: &[u8]) -> [u8; 4] {
    // Mirrors the share format's check bytes so a test can forge a well-formed share.
    use ring::digest::{SHA256, digest};
    digest(&SHA256, body).as_ref()[..4].try_into().unwrap()
}

#[test]
fn unseal_progress_expires_and_resets() {
    let clock = vault_crypto::clock::ManualClock::new();
    let options = VaultOptions {
        unseal_timeout: Duration::from_secs(600),
        clock: clock.clone(),
        ..VaultOptions::default()
    };
    let (f, shares) = fresh(options);
    let UnsealOutcome::InProgress { nonce, .. } = f.vault.unseal(copy(&shares[0]), None).unwrap()
    else {
        panic!()
    };
    // At the timeout the attempt still stands; just past it, it is gone.
    clock.advance(Duration::from_secs(600));
    assert!(matches!(
        f.vault.status().unwrap(),
        Status::Sealed {
            progress: Some(_),
            ..
        }
    ));
    clock.advance(Duration::from_millis(1));
    assert!(matches!(
        f.vault.status().unwrap(),
        Status::Sealed { progress: None, .. }
    ));
    assert!(matches!(
        f.vault.unseal(copy(&shares[1]), Some(&nonce)),
        Err(Error::UnsealNonceMismatch)
    ));
    f.vault.unseal(copy(&shares[1]), None).unwrap();
    f.vault.reset_unseal().unwrap();
    assert!(matches!(
        f.vault.status().unwrap(),
        Status::Sealed { progress: None, .. }
    ));
}

#[test]
fn rekey_replaces_the_share_set() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let secret = id("acme", "k");
    f.vault
        .put_secret(&secret, SecretKind::System, &value("rekey-survives"))
        .unwrap();
    assert!(matches!(
        f.vault.rekey(shares[..2].iter().map(copy).collect(), 2, 3),
        Err(Error::Shares(_))
    ));
    let new = f
        .vault
        .rekey(shares[1..4].iter().map(copy).collect(), 2, 3)
        .unwrap();
    assert_eq!(
        (new.len(), new[0].threshold(), new[0].generation()),
        (3, 2, 2)
    );
    // Pending: the current shares still unseal, as if the new ones had been lost.
    f.vault.seal().unwrap();
    unseal_with(&f.vault, &shares[2..5]).unwrap();
    assert!(matches!(
        f.vault.verify_rekey(shares[..3].iter().map(copy).collect()),
        Err(Error::StaleShare { .. })
    ));
    assert_eq!(
        f.vault
            .verify_rekey(new[..2].iter().map(copy).collect())
            .unwrap(),
        (2, 2, 3)
    );
    assert!(matches!(
        f.vault.verify_rekey(new[..2].iter().map(copy).collect()),
        Err(Error::NoPendingRekey)
    ));
    f.vault.seal().unwrap();
    assert!(matches!(
        f.vault.unseal(copy(&shares[0]), None),
        Err(Error::StaleShare {
            share: 1,
            current: 2
        })
    ));
    unseal_with(&f.vault, &new[1..]).unwrap();
    assert_eq!(
        f.vault
            .open_secret(&secret, None)
            .unwrap()
            .0
            .expose_secret(),
        b"rekey-survives"
    );
}

#[test]
fn a_pending_rekey_is_replaced_by_the_next_and_made_stale_by_a_root_rotation() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let quorum = || shares[..3].iter().map(copy).collect::<Vec<_>>();
    let first = f.vault.rekey(quorum(), 2, 3).unwrap();
    let second = f.vault.rekey(quorum(), 2, 3).unwrap();
    assert!(second[0].generation() > first[0].generation());
    // Only the latest pending set verifies.
    assert!(
        f.vault
            .verify_rekey(first[..2].iter().map(copy).collect())
            .is_err()
    );
    f.vault.rotate_root_key(quorum()).unwrap();
    assert!(matches!(
        f.vault.verify_rekey(second[..2].iter().map(copy).collect()),
        Err(Error::StaleRekey)
    ));
    // The current set still works.
    f.vault.seal().unwrap();
    unseal_with(&f.vault, &shares[..3]).unwrap();
}

#[test]
fn root_key_rotation_rewraps_everything() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let a = id("acme", "one");
    let b = id("globex", "two");
    f.vault
        .put_secret(&a, SecretKind::Byok, &value("value-of-acme"))
        .unwrap();
    f.vault
        .put_secret(&b, SecretKind::Byok, &value("value-of-globex"))
        .unwrap();
    assert!(matches!(
        f.vault
            .rotate_root_key(shares[..2].iter().map(copy).collect()),
        Err(Error::Shares(_))
    ));
    assert_eq!(
        f.vault
            .rotate_root_key(shares[2..].iter().map(copy).collect())
            .unwrap(),
        2
    );
    let record = f.vault.seal_record().unwrap();
    assert_eq!(
        (record.current_root, record.roots.len(), record.rotation),
        (2, 1, None)
    );
    for (key, value) in f.vault.store.scan_prefix(b"tenant/").unwrap() {
        let t = crate::records::decode_tenant(&key, &value).unwrap();
        assert!(t.keys.iter().all(|k| k.wrapped.key_version() == 2));
    }
    f.vault.seal().unwrap();
    unseal_with(&f.vault, &shares[..3]).unwrap();
    assert_eq!(
        f.vault.open_secret(&a, None).unwrap().0.expose_secret(),
        b"value-of-acme"
    );
    assert_eq!(
        f.vault.open_secret(&b, None).unwrap().0.expose_secret(),
        b"value-of-globex"
    );
}

#[test]
fn interrupted_rotation_resumes_at_unseal() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let a = id("acme", "one");
    f.vault
        .put_secret(&a, SecretKind::Byok, &value("survives-a-crash"))
        .unwrap();
    // Simulate a crash right after the rotation's first step: the seal record names
    // both roots and the rotation, but no record has been rewrapped yet.
    let record = f.vault.seal_record().unwrap();
    let uk = vault_crypto::shamir::combine(&shares[..3]).unwrap();
    let root2 = vault_crypto::RootKey::generate(2).unwrap();
    let mut next = record.clone();
    next.roots.push(crate::records::WrappedRoot {
        version: 2,
        wrapped: uk.wrap_root_key(&root2).unwrap(),
    });
    next.current_root = 2;
    next.rotation = Some(crate::records::RootRotation { from: 1, to: 2 });
    f.vault.replace_seal_record(&record, &next, None).unwrap();
    f.vault.seal().unwrap();

    unseal_with(&f.vault, &shares[..3]).unwrap();
    let record = f.vault.seal_record().unwrap();
    assert_eq!(
        (record.current_root, record.roots.len(), record.rotation),
        (2, 1, None)
    );
    assert_eq!(
        f.vault.open_secret(&a, None).unwrap().0.expose_secret(),
        b"survives-a-crash"
    );
}

#[test]
fn leases_keep_flowing_during_a_root_key_rotation() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    for i in 0..150 {
        f.vault
            .transit_encrypt(
                &TenantId::new(&format!("t{i}")).unwrap(),
                Environment::Live,
                b"x",
                true,
            )
            .unwrap();
    }
    let s = id("acme", "byok/openai");
    f.vault
        .put_secret(&s, SecretKind::Byok, &value("sk"))
        .unwrap();
    let rotating = std::sync::atomic::AtomicBool::new(true);
    let (served, started, ended) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut served = Vec::new();
            while rotating.load(std::sync::atomic::Ordering::SeqCst) {
                f.vault.open_secret(&s, None).unwrap();
                served.push(std::time::Instant::now());
            }
            served
        });
        let started = std::time::Instant::now();
        let rotated = f
            .vault
            .rotate_root_key(shares[..3].iter().map(copy).collect());
        let ended = std::time::Instant::now();
        rotating.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(rotated.unwrap(), 2);
        (reader.join().unwrap(), started, ended)
    });
    // Under one exclusive lock for the whole rewrap, no lease would be served between
    // the rotation's first moment and its last; in batches, they are served throughout.
    let during = served
        .iter()
        .filter(|t| **t > started + Duration::from_millis(20) && **t < ended)
        .count();
    assert!(
        during > 10,
        "{during} leases while the rotation ran ({:?})",
        ended - started
    );
    let record = f.vault.seal_record().unwrap();
    assert_eq!((record.current_root, record.roots.len()), (2, 1));
    for (key, value) in f.vault.store.scan_prefix(b"tenant/").unwrap() {
        let t = crate::records::decode_tenant(&key, &value).unwrap();
        assert!(
            t.keys.iter().all(|k| k.wrapped.key_version() == 2),
            "{key:?}"
        );
    }
}
