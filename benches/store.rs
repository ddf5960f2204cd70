//! Durable writes per second through the vault (encrypt, encode, commit, fsync): one
//! writer against sixteen concurrent writers, on the redb file and on a PostgreSQL
//! server (a throw-away one on loopback, TLS, `synchronous_commit = on`), in the same
//! run, on the same disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vault_testkit::postgres::PostgresServer;
use vaultd::SecretValue;
use vaultd::names::{SecretId, SecretKind};
use vaultd::storage::Store;
use vaultd::storage::postgres::{PostgresSettings, PostgresStore};
use vaultd::storage::redb::RedbStore;
use vaultd::vault::{UnsealOutcome, Vault, VaultOptions};

fn unsealed_vault(store: Arc<dyn Store>) -> Vault {
    let vault = Vault::open(store, VaultOptions::default()).expect("open vault");
    let shares = vault.init(1, 1).expect("init");
    let share = shares.into_iter().next().expect("init returns one share");
    assert_eq!(
        vault.unseal(share, None).expect("unseal"),
        UnsealOutcome::Unsealed
    );
    vault
}

fn put(vault: &Vault, n: u64) {
    let id = SecretId::parse("bench", "live", &format!("byok/k{n}")).expect("valid name");
    let value = SecretValue::from_vec(b"sk-bench-0123456789abcdefghijklmnopqrstuvwxyz".to_vec());
    vault
        .put_secret(&id, SecretKind::Byok, &value)
        .expect("put");
}

fn durable_writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = Arc::new(RedbStore::open(&dir.path().join("bench.redb")).expect("open redb"));
    writes(c, "durable put_secret, redb", redb);

    let server = PostgresServer::start();
    server.create_database("vaultd");
    let postgres = PostgresStore::open(&PostgresSettings {
        connect: server.connect_string("vaultd"),
        ca: server.ca.clone(),
        client_cert: Some((server.client_cert.clone(), server.client_key.clone())),
        password_file: None,
        pool_size: 16,
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        catch_up: Duration::from_secs(1),
    })
    .expect("open PostgreSQL");
    writes(c, "durable put_secret, PostgreSQL", Arc::new(postgres));
}

fn writes(c: &mut Criterion, name: &str, store: Arc<dyn Store>) {
    let vault = Arc::new(unsealed_vault(store));
    let counter = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("1 writer", |b| {
        b.iter(|| put(&vault, counter.fetch_add(1, Ordering::Relaxed)));
    });

    const WRITERS: u64 = 16;
    group.bench_function("16 writers", |b| {
        b.iter_custom(|iters| {
            let per_writer = iters.div_ceil(WRITERS);
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..WRITERS {
                    let (vault, counter) = (&vault, &counter);
                    s.spawn(move || {
                        for _ in 0..per_writer {
                            put(vault, counter.fetch_add(1, Ordering::Relaxed));
                        }
                    });
                }
            });
            // Report time per write, so both lines read as writes/s.
            start
                .elapsed()
                .mul_f64(iters as f64 / (per_writer * WRITERS) as f64)
        });
    });
    group.finish();
}

criterion_group!(benches, durable_writes);
criterion_main!(benches);
