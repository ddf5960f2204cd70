//! Tests of the data layer over a real redb file (secrets, versions, grace windows,
//! erasure, tampering), and the fixtures the vault's other tests share. The seal
//! lifecycle's tests are in `unseal_tests`.

use std::sync::Arc;
use std::time::Duration;

use vault_crypto::SecretValue;
use vault_crypto::shamir::Share;

use super::*;
use crate::names::{Environment, SecretId, SecretKind, TenantId};
use crate::records::VersionState;
use crate::storage::redb::RedbStore;
use crate::vault::SweepItem;

pub(crate) struct Fixture {
    pub(crate) vault: Vault,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) fn copy(share: &Share) -> Share {
    Share::from_bytes(&share.to_bytes()).unwrap()
}

pub(crate) fn fresh(options: VaultOptions) -> (Fixture, Vec<Share>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("vault.redb")).unwrap());
    let vault = Vault::open(store, options).unwrap();
    let shares = vault.init(3, 5).unwrap();
    (Fixture { vault, _dir: dir }, shares)
}

pub(crate) fn unseal_with(vault: &Vault, shares: &[Share]) -> Result<UnsealOutcome> {
    let mut nonce = None;
    let mut outcome = Err(Error::Sealed);
    for share in shares {
        outcome = vault.unseal(copy(share), nonce.as_ref());
        if let Ok(UnsealOutcome::InProgress { nonce: n, .. }) = &outcome {
            nonce = Some(*n);
        }
    }
    outcome
}

pub(crate) fn id(tenant: &str, name: &str) -> SecretId {
    SecretId::parse(tenant, "live", name).unwrap()
}

pub(crate) fn value(text: &str) -> SecretValue {
    SecretValue::from_vec(text.as_bytes().to_vec())
}

#[test]
fn leasability_follows_seal_rotation_and_deletion() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let s = id("acme", "byok/openai");
    f.vault
        .put_secret(&s, SecretKind::Byok, &value("v1"))
        .unwrap();
    f.vault.check_leasable(&s, 1).unwrap();
    assert!(matches!(
        f.vault.check_leasable(&s, 2),
        Err(Error::VersionUnavailable(2))
    ));
    f.vault
        .rotate_secret(&s, &value("v2"), Some(Duration::ZERO))
        .unwrap();
    assert!(matches!(
        f.vault.check_leasable(&s, 1),
        Err(Error::VersionUnavailable(1))
    ));
    f.vault.check_leasable(&s, 2).unwrap();
    f.vault.seal().unwrap();
    assert!(matches!(f.vault.check_leasable(&s, 2), Err(Error::Sealed)));
    unseal_with(&f.vault, &shares[..3]).unwrap();
    f.vault.delete_secret(&s).unwrap();
    assert!(f.vault.check_leasable(&s, 2).is_err());
}

#[test]
fn rotation_grace_and_sweep() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let s = id("acme", "byok/openai");
    f.vault
        .put_secret(&s, SecretKind::Byok, &value("sk-first-0000000000001111"))
        .unwrap();
    assert!(matches!(
        f.vault.put_secret(&s, SecretKind::Byok, &value("again")),
        Err(Error::AlreadyExists)
    ));
    let meta = f
        .vault
        .rotate_secret(
            &s,
            &value("sk-second-00000000000000000002222"),
            Some(Duration::from_secs(3600)),
        )
        .unwrap();
    assert_eq!(meta.current_version, 2);
    assert_eq!(meta.versions[1].hint, "sk-…2222");
    let VersionState::Grace { until_unix } = meta.versions[0].state else {
        panic!()
    };
    // Both versions lease during the grace window; the default is the new one.
    assert_eq!(
        f.vault.open_secret(&s, None).unwrap().0.expose_secret(),
        b"sk-second-00000000000000000002222"
    );
    assert_eq!(
        f.vault.open_secret(&s, Some(1)).unwrap().0.expose_secret(),
        b"sk-first-0000000000001111"
    );
    assert!(f.vault.sweep_candidates(until_unix - 1).unwrap().is_empty());
    let due = f.vault.sweep_candidates(until_unix).unwrap();
    assert!(
        matches!(&due[..], [SweepItem::Expired(x)] if *x == s),
        "{due:?}"
    );
    assert_eq!(f.vault.disable_expired(&s, until_unix).unwrap(), vec![1]);
    assert!(f.vault.disable_expired(&s, until_unix).unwrap().is_empty());
    assert!(matches!(
        f.vault.open_secret(&s, Some(1)),
        Err(Error::VersionUnavailable(1))
    ));
    let meta = f.vault.describe_secret(&s).unwrap();
    assert_eq!(meta.versions[0].state, VersionState::Disabled);

    // A zero grace disables the old version at once, even before any sweep.
    f.vault
        .rotate_secret(&s, &value("third"), Some(Duration::ZERO))
        .unwrap();
    assert!(matches!(
        f.vault.open_secret(&s, Some(2)),
        Err(Error::VersionUnavailable(2))
    ));
}

#[test]
fn list_delete_and_names() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    for (env, name) in [("live", "b"), ("live", "a"), ("test", "a")] {
        let sid = SecretId::parse("acme", env, name).unwrap();
        f.vault
            .put_secret(&sid, SecretKind::Byok, &value("v"))
            .unwrap();
    }
    f.vault
        .put_secret(&id("acme2", "z"), SecretKind::Byok, &value("v"))
        .unwrap();
    let acme = TenantId::new("acme").unwrap();
    let all: Vec<String> = f
        .vault
        .list_secrets(&acme, None)
        .unwrap()
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(all, ["acme/live/a", "acme/live/b", "acme/test/a"]);
    assert_eq!(
        f.vault
            .list_secrets(&acme, Some(Environment::Test))
            .unwrap()
            .len(),
        1
    );
    f.vault.delete_secret(&id("acme", "a")).unwrap();
    assert!(matches!(
        f.vault.delete_secret(&id("acme", "a")),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        f.vault.open_secret(&id("acme", "a"), None),
        Err(Error::NotFound)
    ));
    assert!(SecretId::parse("ACME", "live", "x").is_err());
}

#[test]
fn erase_tenant_shreds_its_keys() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let a = id("acme", "one");
    f.vault
        .put_secret(&a, SecretKind::Byok, &value("to-be-shredded"))
        .unwrap();
    f.vault
        .put_secret(&id("globex", "one"), SecretKind::Byok, &value("kept"))
        .unwrap();
    // Keep a copy of the ciphertext, as a backup would.
    let (key, backup) = f
        .vault
        .store
        .scan_prefix(b"secret/acme/")
        .unwrap()
        .remove(0);
    let acme = TenantId::new("acme").unwrap();
    let receipt = f.vault.erase_tenant(&acme).unwrap();
    assert_eq!((receipt.key_versions, receipt.secrets_erased), (vec![1], 1));
    assert!(f.vault.store.get(b"tenant/acme").unwrap().is_none());
    assert!(matches!(
        f.vault.open_secret(&a, None),
        Err(Error::NotFound)
    ));
    // Restoring the secret record alone does not bring the value back: its key is gone.
    f.vault.store.put(&key, backup).unwrap();
    assert!(f.vault.open_secret(&a, None).is_err());
    assert_eq!(
        f.vault
            .open_secret(&id("globex", "one"), None)
            .unwrap()
            .0
            .expose_secret(),
        b"kept"
    );
}

#[test]
fn tampered_records_fail_closed() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let a = id("acme", "one");
    let b = id("acme", "two");
    f.vault
        .put_secret(&a, SecretKind::Byok, &value("value-a"))
        .unwrap();
    f.vault
        .put_secret(&b, SecretKind::Byok, &value("value-b"))
        .unwrap();
    // Moving b's record under a's name must not decrypt (AAD binds the name).
    let b_value = f.vault.store.get(b"secret/acme/live/two").unwrap().unwrap();
    f.vault.store.put(b"secret/acme/live/one", b_value).unwrap();
    assert!(matches!(
        f.vault.open_secret(&a, None),
        Err(Error::Crypto(_))
    ));
    // Garbage in a record is an error, not a panic.
    f.vault
        .store
        .put(
            b"secret/acme/live/two",
            crate::storage::StoredValue::from_encoded_record(vec![1, 2, 3]),
        )
        .unwrap();
    assert!(matches!(
        f.vault.open_secret(&b, None),
        Err(Error::Corrupt(_))
    ));
}

#[test]
fn encryption_budget_survives_restarts() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let reserved = || {
        let value = f.vault.store.get(b"tenant/acme").unwrap().unwrap();
        let t = crate::records::decode_tenant(b"tenant/acme", &value).unwrap();
        t.keys[0].reserved_encryptions
    };
    f.vault
        .put_secret(&id("acme", "a"), SecretKind::Byok, &value("one"))
        .unwrap();
    f.vault
        .put_secret(&id("acme", "b"), SecretKind::Byok, &value("two"))
        .unwrap();
    assert_eq!(
        reserved(),
        keyring::RESERVATION,
        "the first block covers both writes"
    );
    // After a restart the key resumes at the reserved count, so its next encryption
    // needs, and persists, a new block.
    f.vault.seal().unwrap();
    unseal_with(&f.vault, &shares[..3]).unwrap();
    f.vault
        .put_secret(&id("acme", "c"), SecretKind::Byok, &value("three"))
        .unwrap();
    assert_eq!(reserved(), 2 * keyring::RESERVATION);
    let tenant = TenantId::new("acme").unwrap();
    f.vault
        .with_keyring(|k| {
            let key = k.current_tenant_key(f.vault.store.as_ref(), &tenant, false)?;
            assert_eq!(key.encryptions(), keyring::RESERVATION + 1);
            Ok(())
        })
        .unwrap();
}

#[test]
fn grace_sweeper_skips_a_corrupt_record_and_goes_on() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let (a, z) = (id("acme", "a"), id("acme", "z"));
    for s in [&a, &z] {
        f.vault
            .put_secret(s, SecretKind::Byok, &value("old"))
            .unwrap();
        f.vault
            .rotate_secret(s, &value("new"), Some(Duration::from_secs(60)))
            .unwrap();
    }
    // A damaged record sorts between the two.
    f.vault
        .store
        .put(
            b"secret/acme/live/m",
            crate::storage::StoredValue::from_encoded_record(vec![0xff; 3]),
        )
        .unwrap();
    let later = f.vault.now_unix() + 120;
    let items = f.vault.sweep_candidates(later).unwrap();
    let expired: Vec<&SecretId> = items
        .iter()
        .filter_map(|i| match i {
            SweepItem::Expired(id) => Some(id),
            SweepItem::Corrupt(_) => None,
        })
        .collect();
    assert_eq!(
        expired,
        [&a, &z],
        "the record after the damaged one is still swept"
    );
    assert!(
        items
            .iter()
            .any(|i| matches!(i, SweepItem::Corrupt(e) if e.key == "secret/acme/live/m"))
    );
    for s in [&a, &z] {
        assert_eq!(f.vault.disable_expired(s, later).unwrap(), vec![1]);
    }
}

#[test]
fn a_grace_window_is_capped() {
    let options = VaultOptions {
        max_grace: Duration::from_secs(3600),
        ..VaultOptions::default()
    };
    let (f, shares) = fresh(options);
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let s = id("acme", "x");
    f.vault
        .put_secret(&s, SecretKind::Byok, &value("v"))
        .unwrap();
    let refused = f
        .vault
        .rotate_secret(
            &s,
            &value("w"),
            Some(Duration::from_secs(1_000_000 * 86_400)),
        )
        .unwrap_err();
    assert!(matches!(refused, Error::GraceTooLong { .. }), "{refused:?}");
    assert!(refused.to_string().contains("seal.max_grace"));
    assert_eq!(f.vault.describe_secret(&s).unwrap().current_version, 1);
    f.vault
        .rotate_secret(&s, &value("w"), Some(Duration::from_secs(3600)))
        .unwrap();
}

#[test]
fn fingerprints_say_whether_a_secret_changed_and_nothing_across_secrets() {
    let (f, shares) = fresh(VaultOptions::default());
    unseal_with(&f.vault, &shares[..3]).unwrap();
    let (target, guess) = (id("acme", "target"), id("acme", "guess"));
    f.vault
        .put_secret(&target, SecretKind::Byok, &value("hunter2"))
        .unwrap();
    // An admin writes a guess to another secret: the fingerprints do not match.
    f.vault
        .put_secret(&guess, SecretKind::Byok, &value("hunter2"))
        .unwrap();
    let fp = |s: &SecretId| {
        f.vault.describe_secret(s).unwrap().versions[0]
            .fingerprint
            .clone()
    };
    assert_ne!(fp(&target), fp(&guess));
    // The same secret rotated to the same value: unchanged; to another: changed.
    let meta = f
        .vault
        .rotate_secret(&target, &value("hunter2"), None)
        .unwrap();
    assert_eq!(meta.versions[0].fingerprint, meta.versions[1].fingerprint);
    let meta = f
        .vault
        .rotate_secret(&target, &value("hunter3"), None)
        .unwrap();
    assert_ne!(meta.versions[1].fingerprint, meta.versions[2].fingerprint);
}
