//! The PostgreSQL engine against a real, throw-away PostgreSQL server.

use std::sync::Arc;
use std::time::Duration;

use vault_testkit::postgres::PostgresServer;

use super::*;
use crate::storage::conformance::{Harness, conformance_tests, value};

fn settings(server: &PostgresServer, dbname: &str) -> PostgresSettings {
    PostgresSettings {
        connect: server.connect_string(dbname),
        ca: server.ca.clone(),
        client_cert: Some((server.client_cert.clone(), server.client_key.clone())),
        password_file: None,
        pool_size: 8,
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        catch_up: Duration::from_secs(1),
    }
}

/// A server with database `vaultd`, and a store on it.
struct Postgres {
    server: PostgresServer,
    store: Option<Arc<dyn Store>>,
}

fn postgres() -> Postgres {
    let server = PostgresServer::start();
    server.create_database("vaultd");
    let store = PostgresStore::open(&settings(&server, "vaultd")).unwrap();
    Postgres {
        server,
        store: Some(Arc::new(store)),
    }
}

impl Harness for Postgres {
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(self.store.as_ref().unwrap())
    }

    fn reopen(&mut self) {
        drop(self.store.take());
        let store = PostgresStore::open(&settings(&self.server, "vaultd")).unwrap();
        self.store = Some(Arc::new(store));
    }
}

conformance_tests!(postgres());

#[test]
fn the_schema_is_created_once_and_keeps_the_vaults_identity() {
    let server = PostgresServer::start();
    server.create_database("vaultd");
    let settings = settings(&server, "vaultd");
    assert_eq!(
        PostgresStore::check(&settings).unwrap(),
        SchemaState {
            version: 0,
            vault_id: None
        }
    );
    let first = PostgresStore::open(&settings).unwrap();
    let id = first.vault_id();
    // A second node on the same database, while the first runs, is the same vault.
    let second = PostgresStore::open(&settings).unwrap();
    assert_eq!(second.vault_id(), id);
    drop((first, second));
    assert_eq!(
        PostgresStore::check(&settings).unwrap(),
        SchemaState {
            version: schema::VERSION,
            vault_id: Some(id)
        }
    );
    // Another database is another vault.
    server.create_database("other");
    let other = PostgresStore::open(&self::settings(&server, "other")).unwrap();
    assert_ne!(other.vault_id(), id);
    assert_eq!(
        server.psql("vaultd", "SELECT version FROM vaultd_schema"),
        schema::VERSION.to_string()
    );
}

#[test]
fn a_schema_newer_than_this_vaultd_is_refused_and_left_alone() {
    let server = PostgresServer::start();
    server.create_database("vaultd");
    let settings = settings(&server, "vaultd");
    drop(PostgresStore::open(&settings).unwrap());
    server.psql("vaultd", "UPDATE vaultd_schema SET version = version + 1");
    for error in [
        PostgresStore::open(&settings).err().unwrap(),
        PostgresStore::check(&settings).unwrap_err(),
    ] {
        assert!(
            matches!(&error, StoreError::Schema(why) if why.contains("newer than this vaultd")),
            "{error}"
        );
    }
    assert_eq!(
        server.psql("vaultd", "SELECT version FROM vaultd_schema"),
        (schema::VERSION + 1).to_string()
    );
}

#[test]
fn anything_weaker_than_verified_tls_is_refused() {
    let server = PostgresServer::start();
    server.create_database("vaultd");
    let good = settings(&server, "vaultd");
    let refused = |settings: PostgresSettings, expect: &str| {
        let error = PostgresStore::open(&settings).err().unwrap();
        assert!(error.to_string().contains(expect), "{error}");
    };
    for (connect, expect) in [
        (format!("{} sslmode=disable", good.connect), "TLS only"),
        (
            format!("{} sslmode=verify-full", good.connect),
            "leave sslmode out",
        ),
        (
            format!("{} password=hunter2", good.connect),
            "password_file",
        ),
        (
            format!("host=/tmp port={} user=vaultd dbname=vaultd", server.port),
            "Unix socket",
        ),
    ] {
        refused(
            PostgresSettings {
                connect,
                ..good.clone()
            },
            expect,
        );
    }
    // A server certificate from another CA: the handshake fails, nothing is sent.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, vault_testkit::Pki::generate("other").ca_pem).unwrap();
    let error = PostgresStore::open(&PostgresSettings {
        ca: other_ca,
        ..good.clone()
    })
    .err()
    .unwrap();
    assert!(
        matches!(&error, StoreError::Unreachable(e) if format!("{e:?}").contains("UnknownIssuer")),
        "{error:?}"
    );
    // The right name is checked too: the server's certificate does not name db.example.
    let error = PostgresStore::open(&PostgresSettings {
        connect: good
            .connect
            .replace("host=127.0.0.1", "host=localhost hostaddr=127.0.0.1")
            .replace("localhost", "db.example"),
        ..good.clone()
    })
    .err()
    .unwrap();
    assert!(
        matches!(&error, StoreError::Unreachable(e) if format!("{e:?}").contains("NotValidForName")),
        "{error:?}"
    );
    // The server requires a client certificate.
    let error = PostgresStore::open(&PostgresSettings {
        client_cert: None,
        ..good.clone()
    })
    .err()
    .unwrap();
    assert!(
        matches!(&error, StoreError::Unreachable(e) if format!("{e:?}").contains("certificate")),
        "{error:?}"
    );
    // And with everything right, it opens.
    drop(PostgresStore::open(&good).unwrap());
}

/// PostgreSQL stops in the middle of a run of writes, for longer than the store's
/// timeout: the store answers errors while it is down, serves again once it is back, and
/// every write it acknowledged is there.
#[test]
fn a_database_restart_mid_run_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = PostgresServer::start();
    server.create_database("vaultd");
    let store = Arc::new(
        PostgresStore::open(&PostgresSettings {
            timeout: Duration::from_secs(1),
            ..settings(&server, "vaultd")
        })
        .unwrap(),
    );
    let restarted = Arc::new(AtomicBool::new(false));
    // Writes until the server is back and 100 writes in a row were acknowledged.
    let writer = {
        let (store, restarted) = (Arc::clone(&store), Arc::clone(&restarted));
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let (mut acknowledged, mut failed, mut in_a_row) = (Vec::new(), 0, 0);
            for n in 0u32.. {
                let back = restarted.load(Ordering::SeqCst) && in_a_row >= 100;
                if back || std::time::Instant::now() > deadline {
                    break;
                }
                let key = format!("w/{n:06}");
                match store.put(key.as_bytes(), value(&n.to_be_bytes())) {
                    Ok(()) => {
                        acknowledged.push(key);
                        in_a_row += 1;
                    }
                    Err(_) => {
                        failed += 1;
                        in_a_row = 0;
                    }
                }
            }
            (acknowledged, failed, in_a_row)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    std::thread::sleep(Duration::from_secs(3));
    server.start_again();
    restarted.store(true, Ordering::SeqCst);
    let (acknowledged, failed, in_a_row) = writer.join().unwrap();
    assert!(failed > 0, "the writer never saw the database down");
    assert!(in_a_row >= 100, "the writer did not get going again");
    for key in &acknowledged {
        assert!(
            store.get(key.as_bytes()).unwrap().is_some(),
            "{key} was acknowledged and is lost"
        );
    }
}

/// A snapshot of a PostgreSQL store holds what the database held when the view was
/// taken (over several pages of records, whatever is written meanwhile) and restores
/// into a redb file of the same vault.
#[test]
fn a_snapshot_is_the_database_as_it_was_and_restores_into_redb() {
    use crate::storage::redb::RedbStore;
    use crate::storage::snapshot::{RestoreOptions, SealFacts, Snapshot, restore};
    let server = PostgresServer::start();
    server.create_database("vaultd");
    let store = PostgresStore::open(&settings(&server, "vaultd")).unwrap();
    for batch in 0..25u32 {
        let mut txn = Transaction::new();
        for n in 0..100u32 {
            let key = format!("r/{batch:02}/{n:03}");
            txn = txn.put(key.as_bytes(), value(key.as_bytes()));
        }
        store.transact(txn).unwrap();
    }
    store.put(b"\xff\x00", value(b"")).unwrap();
    // A restore takes only a snapshot of an initialised vault.
    store.put(b"seal", value(b"the seal record")).unwrap();
    let before = store.scan_prefix(b"").unwrap();
    assert_eq!(before.len(), 2502);

    let view = store.view().unwrap();
    store.put(b"r/after", value(b"later")).unwrap();
    store.delete(b"r/00/000").unwrap();
    let facts = SealFacts {
        root_version: 1,
        generation: 1,
        threshold: 1,
        shares: 1,
    };
    let snapshot = Snapshot::new(view, 1_700_000_000, facts).unwrap();
    assert_eq!(
        snapshot.header().records,
        2503,
        "the records and the vault id"
    );
    let mut bytes = Vec::new();
    snapshot.write_all(&mut bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.vsnap");
    std::fs::write(&file, &bytes).unwrap();
    let target = dir.path().join("restored.redb");
    restore(&file, &target, RestoreOptions::default()).unwrap();
    let restored = RedbStore::open(&target).unwrap();
    assert_eq!(restored.vault_id(), store.vault_id());
    assert_eq!(restored.scan_prefix(b"").unwrap(), before);
}

#[test]
fn notices_are_numbered_in_commit_order_and_a_follower_misses_none() {
    let pg = postgres();
    let store = pg.store();
    let log = || store.change_log().unwrap();
    assert_eq!(log().head().unwrap(), 0);
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A follower reads small pages while the writers commit: every page must start
    // right after the last epoch it saw, or a later commit was visible before an
    // earlier one.
    let follower = {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let log = store.change_log().unwrap();
            let mut seen = 0;
            let mut notices = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                let page = log.after(seen, 7).unwrap();
                for change in &page {
                    assert_eq!(change.epoch, seen + 1, "a notice was skipped");
                    assert!(change.own);
                    seen = change.epoch;
                    notices.push(change.notice.clone());
                }
                if finished && page.is_empty() {
                    return notices;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let key = format!("k/{w}/{i}");
                    // Every third transaction announces two notices; every fifth fails
                    // its condition, and its notice must not appear.
                    let mut txn = Transaction::new()
                        .put(key.clone(), value(b"v"))
                        .announce(format!("{w}/{i}/a"));
                    if i % 3 == 0 {
                        txn = txn.announce(format!("{w}/{i}/b"));
                    }
                    if i % 5 == 0 {
                        txn = txn.require_present(format!("absent/{w}/{i}"));
                        assert!(store.transact(txn).is_err());
                    } else {
                        store.transact(txn).unwrap();
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let seen: Vec<String> = follower
        .join()
        .unwrap()
        .into_iter()
        .map(|n| String::from_utf8(n).unwrap())
        .collect();
    let mut expected = Vec::new();
    for w in 0..WRITERS {
        for i in (0..EACH).filter(|i| i % 5 != 0) {
            expected.push(format!("{w}/{i}/a"));
            if i % 3 == 0 {
                expected.push(format!("{w}/{i}/b"));
            }
        }
    }
    assert_eq!(seen.len(), expected.len());
    assert_eq!(log().head().unwrap(), expected.len() as u64);
    // Each writer's notices in the order it committed them, a transaction's together.
    for w in 0..WRITERS {
        let mine: Vec<&String> = seen
            .iter()
            .filter(|n| n.starts_with(&format!("{w}/")))
            .collect();
        let wanted: Vec<&String> = expected
            .iter()
            .filter(|n| n.starts_with(&format!("{w}/")))
            .collect();
        assert_eq!(mine, wanted);
    }
    for (index, notice) in seen.iter().enumerate() {
        if notice.ends_with("/b") {
            assert_eq!(seen[index - 1], notice.replace("/b", "/a"));
        }
    }
    // Another node's notice is not this store's own; pruning keeps the epoch.
    pg.server.psql(
        "vaultd",
        "UPDATE vaultd_epoch SET epoch = epoch + 1 RETURNING epoch; \
         INSERT INTO vaultd_changes (epoch, origin, notice) \
         SELECT epoch, '\\x00'::bytea, 'theirs' FROM vaultd_epoch",
    );
    let last = log().after(expected.len() as u64, 10).unwrap();
    assert_eq!(last.len(), 1);
    assert!(!last[0].own && last[0].notice == b"theirs");
    assert_eq!(log().prune(Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(
        log().prune(Duration::ZERO).unwrap(),
        expected.len() as u64 + 1
    );
    assert!(log().after(0, 10).unwrap().is_empty());
    assert_eq!(log().head().unwrap(), expected.len() as u64 + 1);
}

/// Two nodes on one database: each sees what the other wrote, of two conflicting
/// writes exactly one wins, and each tells its own notices from the other's.
#[test]
fn nodes_sharing_a_database_see_each_others_writes_and_notices() {
    let pg = postgres();
    let a = pg.store();
    let b: Arc<dyn Store> = Arc::new(PostgresStore::open(&settings(&pg.server, "vaultd")).unwrap());
    a.transact(Transaction::new().put("k", value(b"from a")).announce("a"))
        .unwrap();
    assert_eq!(b.get(b"k").unwrap(), Some(value(b"from a")));
    // Both try to replace what they read; one wins, the other is told which key moved.
    let race: Vec<_> = [&a, &b]
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let store = Arc::clone(store);
            std::thread::spawn(move || {
                store.transact(
                    Transaction::new()
                        .require_eq("k", value(b"from a"))
                        .put("k", value(format!("won by {i}").as_bytes()))
                        .announce(format!("{i}")),
                )
            })
        })
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(race.iter().filter(|r| r.is_ok()).count(), 1, "{race:?}");
    assert!(
        race.iter()
            .any(|r| matches!(r, Err(StoreError::Conflict { key }) if key == b"k"))
    );
    let changes = |store: &Arc<dyn Store>| {
        store
            .change_log()
            .unwrap()
            .after(0, 10)
            .unwrap()
            .into_iter()
            .map(|c| (c.epoch, c.own))
            .collect::<Vec<_>>()
    };
    let winner_is_a = race[0].is_ok();
    assert_eq!(changes(&a), [(1, true), (2, winner_is_a)]);
    assert_eq!(changes(&b), [(1, false), (2, !winner_is_a)]);
}
