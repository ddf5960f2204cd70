//! What every engine must do, written once and run against each: each engine's tests
//! invoke [`conformance_tests!`] with a way to open an empty store of that engine.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;

use super::{Store, StoreError, StoredValue, Transaction};

/// An engine under test: an open store, and a way to close it and open the same data
/// again.
pub(crate) trait Harness {
    /// The open store.
    fn store(&self) -> Arc<dyn Store>;
    /// Closes the store (every handle from [`Harness::store`] must be gone) and opens
    /// the same data again.
    fn reopen(&mut self);
}

/// One `#[test]` per conformance case, each on a fresh store made by `$harness`.
macro_rules! conformance_tests {
    ($harness:expr) => {
        #[test]
        fn put_get_delete() {
            $crate::storage::conformance::put_get_delete(&mut $harness);
        }
        #[test]
        fn scan_is_ordered_and_stops_at_the_prefix_boundary() {
            $crate::storage::conformance::scan_is_ordered(&mut $harness);
        }
        #[test]
        fn failed_condition_writes_nothing() {
            $crate::storage::conformance::failed_condition_writes_nothing(&mut $harness);
        }
        #[test]
        fn transaction_applies_all_writes_in_order() {
            $crate::storage::conformance::writes_apply_in_order(&mut $harness);
        }
        #[test]
        fn compare_and_set() {
            $crate::storage::conformance::compare_and_set(&mut $harness);
        }
        #[test]
        fn of_conflicting_transactions_exactly_one_wins() {
            $crate::storage::conformance::exactly_one_wins(&mut $harness);
        }
        #[test]
        fn many_threads_all_land_without_lost_updates_and_survive_reopen() {
            $crate::storage::conformance::many_threads_all_land(&mut $harness);
        }
        #[test]
        fn reopen_keeps_data() {
            $crate::storage::conformance::reopen_keeps_data(&mut $harness);
        }
    };
}
pub(crate) use conformance_tests;

pub(crate) fn value(bytes: &[u8]) -> StoredValue {
    StoredValue::from_encoded_record(bytes.to_vec())
}

fn keys(entries: &[(Vec<u8>, StoredValue)]) -> Vec<&[u8]> {
    entries.iter().map(|(key, _)| key.as_slice()).collect()
}

fn conflict_on(result: Result<(), StoreError>, expected: &[u8]) {
    assert!(
        matches!(&result, Err(StoreError::Conflict { key }) if key == expected),
        "{result:?}"
    );
}

pub(crate) fn put_get_delete(harness: &mut dyn Harness) {
    let store = harness.store();
    assert_eq!(store.get(b"secret/acme/live/openai").unwrap(), None);

    store.put(b"secret/acme/live/openai", value(b"v1")).unwrap();
    assert_eq!(
        store.get(b"secret/acme/live/openai").unwrap(),
        Some(value(b"v1"))
    );
    store.put(b"secret/acme/live/openai", value(b"v2")).unwrap();
    assert_eq!(
        store.get(b"secret/acme/live/openai").unwrap(),
        Some(value(b"v2"))
    );

    store.delete(b"secret/acme/live/openai").unwrap();
    assert_eq!(store.get(b"secret/acme/live/openai").unwrap(), None);
    // Deleting an absent key is not an error.
    store.delete(b"secret/acme/live/openai").unwrap();
    // An empty value is a value, not absence.
    store.put(b"empty", value(b"")).unwrap();
    assert_eq!(store.get(b"empty").unwrap(), Some(value(b"")));
    // Keys and values are bytes, not text.
    store.put(b"\x00\xff\x80", value(b"\x00\xfe")).unwrap();
    assert_eq!(
        store.get(b"\x00\xff\x80").unwrap(),
        Some(value(b"\x00\xfe"))
    );
}

pub(crate) fn scan_is_ordered(harness: &mut dyn Harness) {
    let store = harness.store();
    let all: [&[u8]; 11] = [
        b"a/z",
        b"a0",
        b"a/",
        b"b",
        b"a/b",
        b"a",
        b"a/\xff\xff",
        b"a.",
        b"\xff",
        b"\xff\xff\x01",
        b"A",
    ];
    for key in all {
        store.put(key, value(key)).unwrap();
    }

    let scanned = store.scan_prefix(b"a/").unwrap();
    assert_eq!(
        keys(&scanned),
        [b"a/".as_slice(), b"a/b", b"a/z", b"a/\xff\xff"]
    );
    for (key, stored) in &scanned {
        assert_eq!(stored.as_bytes(), key.as_slice());
    }

    // Byte order: unsigned, shorter first on a common prefix, no collation.
    let mut sorted = all.to_vec();
    sorted.sort();
    assert_eq!(keys(&store.scan_prefix(b"").unwrap()), sorted);
    assert_eq!(
        keys(&store.scan_prefix(b"\xff").unwrap()),
        [b"\xff".as_slice(), b"\xff\xff\x01"]
    );
    assert_eq!(
        keys(&store.scan_prefix(b"\xff\xff").unwrap()),
        [b"\xff\xff\x01".as_slice()]
    );
    assert!(store.scan_prefix(b"a/c").unwrap().is_empty());
    assert!(store.scan_prefix(b"c").unwrap().is_empty());
}

pub(crate) fn failed_condition_writes_nothing(harness: &mut dyn Harness) {
    let store = harness.store();
    store.put(b"taken", value(b"old")).unwrap();

    let txn = Transaction::new()
        .require_absent("free")
        .require_absent("taken")
        .require_present("missing")
        .put("free", value(b"new"))
        .put("taken", value(b"new"))
        .delete("taken");
    // The first failing condition is named, not a later one.
    conflict_on(store.transact(txn), b"taken");
    assert_eq!(store.get(b"free").unwrap(), None);
    assert_eq!(store.get(b"taken").unwrap(), Some(value(b"old")));
}

pub(crate) fn writes_apply_in_order(harness: &mut dyn Harness) {
    let store = harness.store();
    store.put(b"gone", value(b"x")).unwrap();
    let txn = Transaction::new()
        .put("k", value(b"first"))
        .put("k", value(b"second"))
        .put("other", value(b"o"))
        .delete("gone")
        .put("back", value(b"1"))
        .delete("back");
    store.transact(txn).unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(value(b"second")));
    assert_eq!(store.get(b"other").unwrap(), Some(value(b"o")));
    assert_eq!(store.get(b"gone").unwrap(), None);
    assert_eq!(store.get(b"back").unwrap(), None);
}

pub(crate) fn compare_and_set(harness: &mut dyn Harness) {
    let store = harness.store();
    conflict_on(
        store.transact(Transaction::new().require_present("k")),
        b"k",
    );
    conflict_on(
        store.transact(Transaction::new().require_eq("k", value(b"v1"))),
        b"k",
    );
    store
        .transact(
            Transaction::new()
                .require_absent("k")
                .put("k", value(b"v1")),
        )
        .unwrap();
    conflict_on(
        store.transact(
            Transaction::new()
                .require_absent("k")
                .put("k", value(b"v9")),
        ),
        b"k",
    );

    // A stale expectation loses; the current one wins.
    conflict_on(
        store.transact(
            Transaction::new()
                .require_eq("k", value(b"v0"))
                .put("k", value(b"v9")),
        ),
        b"k",
    );
    store
        .transact(
            Transaction::new()
                .require_eq("k", value(b"v1"))
                .put("k", value(b"v2")),
        )
        .unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(value(b"v2")));

    store
        .transact(Transaction::new().require_present("k").delete("k"))
        .unwrap();
    conflict_on(
        store.transact(Transaction::new().require_present("k")),
        b"k",
    );
    store
        .transact(Transaction::new().require_absent("k"))
        .unwrap();
}

/// Many callers race to create one key, and then to replace one value: each time
/// exactly one succeeds, every other sees a conflict, and what is stored is the
/// winner's.
pub(crate) fn exactly_one_wins(harness: &mut dyn Harness) {
    const RACERS: u8 = 16;
    let store = harness.store();
    store.put(b"current", value(b"start")).unwrap();
    for (key, condition) in [("created", None), ("current", Some(value(b"start")))] {
        let barrier = Arc::new(Barrier::new(usize::from(RACERS)));
        let racers: Vec<_> = (0..RACERS)
            .map(|n| {
                let (store, barrier, condition) =
                    (Arc::clone(&store), Arc::clone(&barrier), condition.clone());
                thread::spawn(move || {
                    let txn = match condition {
                        None => Transaction::new().require_absent(key),
                        Some(expected) => Transaction::new().require_eq(key, expected),
                    };
                    barrier.wait();
                    (n, store.transact(txn.put(key, value(&[n]))))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            let (n, outcome) = racer.join().unwrap();
            match outcome {
                Ok(()) => winners.push(n),
                Err(StoreError::Conflict { key: failed }) => assert_eq!(failed, key.as_bytes()),
                Err(error) => panic!("racer {n} on {key}: {error}"),
            }
        }
        assert_eq!(winners.len(), 1, "{key}: winners {winners:?}");
        assert_eq!(
            store.get(key.as_bytes()).unwrap(),
            Some(value(&[winners[0]]))
        );
    }
}

pub(crate) fn many_threads_all_land(harness: &mut dyn Harness) {
    const THREADS: u32 = 8;
    const PER_THREAD: u32 = 100;
    let store = harness.store();
    store.put(b"counter", value(&0u32.to_be_bytes())).unwrap();

    let workers: Vec<_> = (0..THREADS)
        .map(|thread_id| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let key = format!("t/{thread_id}/{i:04}");
                    store
                        .transact(
                            Transaction::new()
                                .require_absent(key.as_str())
                                .put(key.as_str(), value(key.as_bytes())),
                        )
                        .unwrap();
                    // A read-modify-write increment; a lost update would show in the total.
                    loop {
                        let current = store.get(b"counter").unwrap().unwrap();
                        let count = u32::from_be_bytes(current.as_bytes().try_into().unwrap());
                        let txn = Transaction::new()
                            .require_eq("counter", current)
                            .put("counter", value(&(count + 1).to_be_bytes()));
                        match store.transact(txn) {
                            Ok(()) => break,
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(error) => panic!("{error}"),
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    drop(store);

    harness.reopen();
    let store = harness.store();
    let mut expected = BTreeMap::new();
    for thread_id in 0..THREADS {
        for i in 0..PER_THREAD {
            let key = format!("t/{thread_id}/{i:04}").into_bytes();
            expected.insert(key.clone(), value(&key));
        }
    }
    let scanned: BTreeMap<_, _> = store.scan_prefix(b"t/").unwrap().into_iter().collect();
    assert_eq!(scanned.len(), (THREADS * PER_THREAD) as usize);
    assert_eq!(scanned, expected);
    assert_eq!(
        store.get(b"counter").unwrap(),
        Some(value(&(THREADS * PER_THREAD).to_be_bytes()))
    );
}

pub(crate) fn reopen_keeps_data(harness: &mut dyn Harness) {
    let store = harness.store();
    store
        .put(b"secret/acme/live/openai", value(b"envelope"))
        .unwrap();
    store.put(b"meta/acme", value(b"m")).unwrap();
    store.delete(b"meta/acme").unwrap();
    drop(store);

    harness.reopen();
    let store = harness.store();
    assert_eq!(
        store.get(b"secret/acme/live/openai").unwrap(),
        Some(value(b"envelope"))
    );
    assert_eq!(store.get(b"meta/acme").unwrap(), None);
}
