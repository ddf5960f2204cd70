//! Two vaults on one store, as two nodes on one database: what each keeps in memory
//! must not let them step on each other.

use std::sync::Arc;

use vault_crypto::RootKey;
use vault_crypto::session::{SessionKey, SessionOffer, Transcript};
use vault_crypto::shamir::Share;

use super::tests::{copy, unseal_with};
use super::{Vault, VaultOptions, keyring};
use crate::names::{Environment, TenantId};
use crate::storage::redb::RedbStore;

/// Two unsealed vaults on one store, the custodians' shares, and the store's directory.
fn two_nodes() -> (Vault, Vault, Vec<Share>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("vault.redb")).unwrap());
    let a = Vault::open(store.clone(), VaultOptions::default()).unwrap();
    let shares = a.init(2, 3).unwrap();
    let b = Vault::open(store, VaultOptions::default()).unwrap();
    unseal_with(&a, &shares[..2]).unwrap();
    unseal_with(&b, &[copy(&shares[1]), copy(&shares[2])]).unwrap();
    (a, b, shares, dir)
}

/// `x` encrypted by `vault` under `tenant`'s live transit key (created if missing).
fn encrypt(vault: &Vault, tenant: &str) -> crate::Result<vault_crypto::envelope::Envelope> {
    vault.transit_encrypt(
        &TenantId::new(tenant).unwrap(),
        Environment::Live,
        b"x",
        true,
    )
}

#[test]
fn nodes_sharing_a_tenant_key_count_its_encryptions_in_disjoint_blocks() {
    let (a, b, _, _dir) = two_nodes();
    let tenant = TenantId::new("acme").unwrap();
    let encrypt = |vault: &Vault| {
        encrypt(vault, "acme").unwrap();
    };
    let count = |vault: &Vault| {
        vault
            .with_keyring(|k| {
                Ok(k.current_tenant_key(vault.store.as_ref(), &tenant, false)?
                    .encryptions())
            })
            .unwrap()
    };
    let reserved = || {
        let value = a.store.get(b"tenant/acme").unwrap().unwrap();
        crate::records::decode_tenant(b"tenant/acme", &value)
            .unwrap()
            .keys[0]
            .reserved_encryptions
    };
    const BLOCK: u64 = keyring::RESERVATION;
    // A creates the key and holds the first block; B, loading it, takes the second.
    encrypt(&a);
    encrypt(&b);
    assert_eq!(
        (count(&a), count(&b), reserved()),
        (1, BLOCK + 1, 2 * BLOCK)
    );
    // A uses its block to the end; its next block starts after B's, not inside it.
    a.with_keyring(|k| {
        k.current_tenant_key(a.store.as_ref(), &tenant, false)?
            .set_encryptions(BLOCK - 1);
        Ok(())
    })
    .unwrap();
    encrypt(&a);
    assert_eq!(count(&a), BLOCK);
    encrypt(&a);
    assert_eq!((count(&a), reserved()), (2 * BLOCK + 1, 3 * BLOCK));
    // B goes on in its own block.
    encrypt(&b);
    assert_eq!((count(&b), reserved()), (BLOCK + 2, 3 * BLOCK));
}

#[test]
fn nodes_add_their_quota_units_to_one_count() {
    let (a, b, _, _dir) = two_nodes();
    let delta = |day, units| crate::limits::quota::QuotaDelta {
        id: "k1b2c3d4e5f6".into(),
        day,
        units,
    };
    assert_eq!(a.add_quota_usage(&[delta(100, 3)]).unwrap(), [Some(3)]);
    assert_eq!(b.add_quota_usage(&[delta(100, 5)]).unwrap(), [Some(8)]);
    // A refund is a negative delta; a new day starts from nothing.
    assert_eq!(a.add_quota_usage(&[delta(100, -1)]).unwrap(), [Some(7)]);
    assert_eq!(b.add_quota_usage(&[delta(101, 2)]).unwrap(), [Some(2)]);
    // A late delta of the day before does not touch the new day's count.
    assert_eq!(a.add_quota_usage(&[delta(100, 4)]).unwrap(), [None]);
    let stored = a.read_quota("k1b2c3d4e5f6").unwrap().unwrap();
    assert_eq!((stored.day, stored.used), (101, 2));
}

#[test]
fn a_node_wraps_no_key_under_a_root_another_node_rotated_away() {
    let (a, b, shares, _dir) = two_nodes();
    // A rekey on A changes the seal record but not the root: B goes on creating keys.
    let new_shares = a
        .rekey(shares[..2].iter().map(copy).collect(), 2, 3)
        .unwrap();
    a.verify_rekey(new_shares[..2].iter().map(copy).collect())
        .unwrap();
    encrypt(&b, "acme").unwrap();
    // A rotates the root: B, holding only the old one, wraps nothing more under it.
    a.rotate_root_key(new_shares[..2].iter().map(copy).collect())
        .unwrap();
    assert!(matches!(
        encrypt(&b, "globex"),
        Err(crate::Error::RootMoved)
    ));
    assert!(a.store.get(b"tenant/globex").unwrap().is_none());
    // A, holding the new root, does.
    encrypt(&a, "globex").unwrap();
}

#[test]
fn a_tenant_erased_and_created_again_elsewhere_never_meets_a_stale_cached_key() {
    let (a, b, _, _dir) = two_nodes();
    let acme = TenantId::new("acme").unwrap();
    let encrypt = |vault: &Vault| encrypt(vault, "acme").unwrap();
    encrypt(&a);
    encrypt(&b); // B caches version 1 of acme's key
    // A erases acme and a new acme starts (B is not told: no change log here).
    a.erase_tenant(&acme).unwrap();
    encrypt(&a);
    // B reads the new record, sees a key it did not unwrap, and uses that one: what it
    // seals opens on A.
    let sealed = encrypt(&b);
    let opened = a
        .transit_decrypt(&acme, Environment::Live, sealed.as_bytes())
        .unwrap();
    assert_eq!(opened.expose_secret(), b"x");
}

#[test]
fn a_node_started_before_another_initialised_the_vault_can_be_unsealed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("vault.redb")).unwrap());
    let a = Vault::open(store.clone(), VaultOptions::default()).unwrap();
    let b = Vault::open(store, VaultOptions::default()).unwrap();
    let shares = a.init(2, 3).unwrap();
    assert!(matches!(b.status(), Ok(super::Status::Sealed { .. })));
    assert!(matches!(
        b.init(2, 3),
        Err(crate::Error::AlreadyInitialised)
    ));
    unseal_with(&b, &shares[..2]).unwrap();
    assert_eq!(b.seal_state(), super::SealState::Unsealed);
}

/// A session key pair, as a joining node (client) and the answering node (daemon)
/// derive it.
fn session_pair() -> (SessionKey, SessionKey) {
    let (client, daemon) = (
        SessionOffer::generate().unwrap(),
        SessionOffer::generate().unwrap(),
    );
    let (cp, dp) = (*client.public_key(), *daemon.public_key());
    let transcript = Transcript {
        client_public: &cp,
        server_public: &dp,
        identity: "spiffe://test/vaultd/node-b",
        session_id: "s1",
    };
    let daemon_key = daemon.agree(&cp, &transcript).unwrap();
    (client.agree(&dp, &transcript).unwrap(), daemon_key)
}

/// What B opens of the root keys A sealed to their session.
fn handed_over(a: &Vault) -> Vec<RootKey> {
    let (client, daemon) = session_pair();
    let sealed = a.seal_roots_to(&daemon).unwrap();
    sealed
        .roots
        .iter()
        .map(|(version, envelope)| client.open_root_key(envelope, *version).unwrap())
        .collect()
}

#[test]
fn a_sealed_node_joins_with_the_root_keys_another_hands_over() {
    let (a, b, shares, _dir) = two_nodes();
    let acme = TenantId::new("acme").unwrap();
    let sealed = encrypt(&a, "acme").unwrap();
    b.seal().unwrap();
    // Sealed on purpose, B does not join.
    assert!(!b.wants_join().unwrap());
    assert!(matches!(b.join(handed_over(&a)), Err(crate::Error::Sealed)));
    b.want_join();
    assert!(b.wants_join().unwrap());
    // A key of the right version that is not the root does not open the system keys.
    assert!(b.join(vec![RootKey::generate(1).unwrap()]).is_err());
    assert_eq!(b.seal_state(), super::SealState::Sealed);
    // Versions other than the seal record's are refused before anything is opened.
    assert!(matches!(
        b.join(vec![RootKey::generate(2).unwrap()]),
        Err(crate::Error::JoinMismatch { handed, named }) if handed == [2] && named == [1]
    ));
    b.join(handed_over(&a)).unwrap();
    assert_eq!(b.seal_state(), super::SealState::Unsealed);
    assert!(!b.wants_join().unwrap());
    let opened = b
        .transit_decrypt(&acme, Environment::Live, sealed.as_bytes())
        .unwrap();
    assert_eq!(opened.expose_secret(), b"x");
    // After A rotates the root, B (sealed, wanting to join) adopts both versions A
    // holds, or the new one alone once A has finished.
    a.rotate_root_key(shares[..2].iter().map(copy).collect())
        .unwrap();
    b.seal_and_rejoin(true).unwrap();
    assert!(b.wants_join().unwrap());
    b.join(handed_over(&a)).unwrap();
    assert!(matches!(
        b.status(),
        Ok(super::Status::Unsealed {
            root_version: 2,
            ..
        })
    ));
    encrypt(&b, "globex").unwrap();
    // An unsealed node does not join again; one sealed already stays sealed on
    // purpose when it hears of a rotation.
    assert!(matches!(
        b.join(handed_over(&a)),
        Err(crate::Error::AlreadyUnsealed)
    ));
    b.seal().unwrap();
    b.seal_and_rejoin(true).unwrap();
    assert!(!b.wants_join().unwrap());
}
