use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::storage::redb::RedbStore;
use crate::storage::{Store, StoredValue};

fn value(bytes: &[u8]) -> StoredValue {
    StoredValue::from_encoded_record(bytes.to_vec())
}

const FACTS: SealFacts = SealFacts {
    root_version: 3,
    generation: 2,
    threshold: 2,
    shares: 3,
};

/// A store in `dir` holding a seal record and a few others.
fn store(dir: &Path, name: &str) -> (PathBuf, RedbStore) {
    let path = dir.join(name);
    let store = RedbStore::open(&path).unwrap();
    store.put(b"seal", value(b"the seal record")).unwrap();
    store
        .put(b"tenant/acme", value(b"wrapped tenant key"))
        .unwrap();
    store
        .put(b"secret/acme/live/byok/openai", value(&[7; 300]))
        .unwrap();
    // An empty value (an index record) is a valid entry.
    store.put(b"apikeys-of/acme/k1", value(b"")).unwrap();
    (path, store)
}

fn snapshot_bytes(store: &RedbStore) -> (Vec<u8>, Written) {
    let snapshot = Snapshot::new(store.view().unwrap(), 1_700_000_000, FACTS).unwrap();
    let mut out = Vec::new();
    let written = snapshot.write_all(&mut out).unwrap();
    (out, written)
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Every file in `dir`, by name.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_snapshot_reads_back_as_every_entry_of_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = store(dir.path(), "a.redb");
    let (bytes, written) = snapshot_bytes(&store);
    assert_eq!(written.bytes, bytes.len() as u64);
    assert_eq!(written.records, 5, "four records and the vault id");
    assert!(bytes.starts_with(MAGIC));
    assert_eq!(bytes[bytes.len() - TRAILER_LEN..], written.trailer());

    let mut reader = Reader::open(bytes.as_slice()).unwrap();
    assert_eq!(reader.header().vault_id, store.vault_id());
    assert_eq!(reader.header().seal, FACTS);
    assert_eq!(reader.header().created_unix, 1_700_000_000);
    let mut items = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        items.push(item);
    }
    let verified = reader.finish().unwrap();
    assert_eq!(verified.digest, written.digest);
    assert_eq!(verified.bytes, written.bytes);
    let entry = |key: &[u8], value: &[u8]| Item::Entry {
        key: key.to_vec(),
        value: value.to_vec(),
    };
    assert_eq!(
        items,
        vec![
            Item::Table {
                name: META_TABLE,
                entries: 1
            },
            entry(b"vault-id", store.vault_id().as_bytes()),
            Item::Table {
                name: RECORDS_TABLE,
                entries: 4
            },
            entry(b"apikeys-of/acme/k1", b""),
            entry(b"seal", b"the seal record"),
            entry(b"secret/acme/live/byok/openai", &[7; 300]),
            entry(b"tenant/acme", b"wrapped tenant key"),
        ]
    );
}

#[test]
fn the_view_is_the_store_as_it_was_when_the_view_was_taken() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = store(dir.path(), "a.redb");
    let snapshot = Snapshot::new(store.view().unwrap(), 1, FACTS).unwrap();
    // Writes acknowledged after the view are not in it, and do not wait for it.
    store.put(b"secret/acme/live/later", value(b"x")).unwrap();
    store.delete(b"tenant/acme").unwrap();
    let mut bytes = Vec::new();
    snapshot.write_all(&mut bytes).unwrap();
    let mut reader = Reader::open(bytes.as_slice()).unwrap();
    let mut keys = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        if let Item::Entry { key, .. } = item {
            keys.push(String::from_utf8(key).unwrap());
        }
    }
    reader.finish().unwrap();
    assert!(keys.contains(&"tenant/acme".to_owned()));
    assert!(!keys.contains(&"secret/acme/live/later".to_owned()));
}

#[test]
fn every_flipped_byte_and_every_truncation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = store(dir.path(), "a.redb");
    let (bytes, _) = snapshot_bytes(&store);
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        assert!(verify(damaged.as_slice()).is_err(), "a flip at {at} passed");
        assert!(verify(&bytes[..at]).is_err(), "a cut at {at} passed");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        verify(longer.as_slice()),
        Err(SnapshotError::Malformed("bytes follow the trailer"))
    ));
    // A flip inside a value is caught by the checksum alone.
    let mut damaged = bytes.clone();
    let at = bytes.windows(3).position(|w| w == [7, 7, 7]).unwrap();
    damaged[at + 1] ^= 0x80;
    assert!(matches!(
        verify(damaged.as_slice()),
        Err(SnapshotError::Checksum)
    ));
    assert!(matches!(
        verify(&b"not a snapshot at all"[..]),
        Err(SnapshotError::NotASnapshot)
    ));
    assert!(matches!(verify(&[][..]), Err(SnapshotError::NotASnapshot)));
    let mut newer = bytes;
    newer[9] = 2;
    assert!(matches!(
        verify(newer.as_slice()),
        Err(SnapshotError::Version(2))
    ));
}

/// A header and one table whose lengths are out of bounds or lie.
fn hostile(tail: &[u8]) -> Vec<u8> {
    let header = Header {
        vault_id: VaultId::from_bytes(&[1; 16]).unwrap(),
        created_unix: 0,
        seal: FACTS,
        tables: 1,
        records: 1,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(&[TABLE_TAG, RECORDS_TABLE.len() as u8]);
    bytes.extend_from_slice(RECORDS_TABLE.as_bytes());
    bytes.extend_from_slice(&1u64.to_be_bytes());
    bytes.extend_from_slice(tail);
    bytes
}

#[test]
fn lengths_are_checked_before_anything_is_allocated() {
    // A key past the bound.
    let long_key = hostile(&(MAX_KEY + 1).to_be_bytes());
    assert!(matches!(
        verify(long_key.as_slice()),
        Err(SnapshotError::Malformed(_))
    ));
    // A value past the bound.
    let mut big = 1u32.to_be_bytes().to_vec();
    big.push(b'k');
    big.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        verify(hostile(&big).as_slice()),
        Err(SnapshotError::Malformed(_))
    ));
    // A value within the bound that the file does not hold: it ends, and only what
    // arrived was kept.
    let mut lying = 1u32.to_be_bytes().to_vec();
    lying.push(b'k');
    lying.extend_from_slice(&MAX_VALUE.to_be_bytes());
    lying.extend_from_slice(&[0; 10]);
    assert!(matches!(
        verify(hostile(&lying).as_slice()),
        Err(SnapshotError::Truncated)
    ));
    // More entries than the header's records.
    let mut header_lies = hostile(&[]);
    let count = header_lies.len() - 8;
    header_lies[count..].copy_from_slice(&2u64.to_be_bytes());
    assert!(matches!(
        verify(header_lies.as_slice()),
        Err(SnapshotError::Malformed(
            "more records than the header says"
        ))
    ));
}

#[test]
fn restore_into_a_new_path_makes_a_private_data_file_of_the_same_vault() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = store(dir.path(), "a.redb");
    let (bytes, written) = snapshot_bytes(&store);
    let file = write_file(dir.path(), "a.vsnap", &bytes);
    let target = dir.path().join("new/node/data.redb");
    let restored = restore(&file, &target, RestoreOptions::default()).unwrap();
    assert_eq!(restored.previous, Previous::Nothing);
    assert_eq!(restored.snapshot.digest, written.digest);
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
    for created in [dir.path().join("new"), dir.path().join("new/node")] {
        assert_eq!(std::fs::metadata(created).unwrap().mode() & 0o777, 0o700);
    }
    assert_eq!(names(&dir.path().join("new/node")), ["data.redb"]);
    let reopened = RedbStore::open(&target).unwrap();
    assert_eq!(reopened.vault_id(), store.vault_id());
    assert_eq!(
        reopened.scan_prefix(b"").unwrap(),
        store.scan_prefix(b"").unwrap()
    );
}

#[test]
fn restore_refuses_another_vault_an_initialised_one_without_replace_and_a_held_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = store(dir.path(), "a.redb");
    let (bytes, _) = snapshot_bytes(&store);
    let file = write_file(dir.path(), "a.vsnap", &bytes);

    // Another vault's data file, initialised.
    let (other, other_store) = self::store(dir.path(), "b.redb");
    other_store.put(b"secret/b/live/x", value(b"b's")).unwrap();
    // Held open: refused as in use.
    assert!(matches!(
        restore(&file, &other, RestoreOptions { replace: true }),
        Err(RestoreError::InUse { .. })
    ));
    drop(other_store);
    let refused = restore(&file, &other, RestoreOptions { replace: true }).unwrap_err();
    assert!(
        matches!(refused, RestoreError::OtherVault { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("restore to a new path"),
        "{refused}"
    );
    let other_store = RedbStore::open(&other).unwrap();
    assert_eq!(
        other_store.get(b"secret/b/live/x").unwrap(),
        Some(value(b"b's"))
    );
    drop(other_store);

    // The same vault, initialised: only with --replace, and then it is rolled back.
    let path_a = dir.path().join("a.redb");
    store
        .put(b"secret/acme/live/after", value(b"later"))
        .unwrap();
    drop(store);
    assert!(matches!(
        restore(&file, &path_a, RestoreOptions::default()),
        Err(RestoreError::Initialised { .. })
    ));
    let restored = restore(&file, &path_a, RestoreOptions { replace: true }).unwrap();
    assert_eq!(restored.previous, Previous::SameVault);
    let rolled_back = RedbStore::open(&path_a).unwrap();
    assert_eq!(rolled_back.get(b"secret/acme/live/after").unwrap(), None);
    assert!(rolled_back.get(b"tenant/acme").unwrap().is_some());
    drop(rolled_back);

    // A new node's file (opened once, never initialised) takes any valid snapshot.
    let fresh = dir.path().join("fresh.redb");
    drop(RedbStore::open(&fresh).unwrap());
    let restored = restore(&file, &fresh, RestoreOptions::default()).unwrap();
    assert_eq!(restored.previous, Previous::Uninitialised);
    assert_eq!(
        names(dir.path()),
        ["a.redb", "a.vsnap", "b.redb", "fresh.redb"],
        "no temporary file is left"
    );
}

#[test]
fn a_damaged_snapshot_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = store(dir.path(), "a.redb");
    let (mut bytes, _) = snapshot_bytes(&store);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let file = write_file(dir.path(), "bad.vsnap", &bytes);
    let target = dir.path().join("target/data.redb");
    let refused = restore(&file, &target, RestoreOptions::default()).unwrap_err();
    assert!(
        matches!(refused, RestoreError::Snapshot { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("nothing was written"),
        "{refused}"
    );
    assert!(!dir.path().join("target").exists(), "nothing was created");

    // A whole, valid snapshot without a seal record is not of an initialised vault.
    let empty = dir.path().join("empty.redb");
    let empty_store = RedbStore::open(&empty).unwrap();
    let snapshot = Snapshot::new(empty_store.view().unwrap(), 1, FACTS).unwrap();
    let mut unsealed = Vec::new();
    snapshot.write_all(&mut unsealed).unwrap();
    let file = write_file(dir.path(), "unsealed.vsnap", &unsealed);
    let refused = restore(&file, &target, RestoreOptions::default()).unwrap_err();
    assert!(refused.to_string().contains("no seal record"), "{refused}");
}

#[test]
fn restore_refuses_a_target_that_is_no_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = store(dir.path(), "a.redb");
    let (bytes, _) = snapshot_bytes(&store);
    let file = write_file(dir.path(), "a.vsnap", &bytes);
    let junk = write_file(dir.path(), "junk", &b"not redb ".repeat(500));
    assert!(matches!(
        restore(&file, &junk, RestoreOptions::default()),
        Err(RestoreError::NotADataFile { .. })
    ));
    let link = dir.path().join("link.redb");
    std::os::unix::fs::symlink(&junk, &link).unwrap();
    assert!(matches!(
        restore(&file, &link, RestoreOptions::default()),
        Err(RestoreError::NotADataFile { .. })
    ));
    assert_eq!(std::fs::read(&junk).unwrap(), b"not redb ".repeat(500));
}

#[test]
fn a_restored_file_keeps_the_owner_of_the_file_it_replaces() {
    // Giving a file away takes privilege: as another user this checks nothing new.
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = store(dir.path(), "a.redb");
    let (bytes, _) = snapshot_bytes(&store);
    let file = write_file(dir.path(), "a.vsnap", &bytes);
    drop(store);
    // vaultd's data file, owned by its own user (here: nobody).
    let target = dir.path().join("a.redb");
    std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
    restore(&file, &target, RestoreOptions { replace: true }).unwrap();
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
}
