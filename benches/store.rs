//! Durable writes per second through the vault (encrypt, encode, group commit, fsync):
//! one writer against sixteen concurrent writers, in the same run, on the same disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vaultd::SecretValue;
use vaultd::names::{SecretId, SecretKind};
use vaultd::storage::redb::RedbStore;
use vaultd::vault::{UnsealOutcome, Vault, VaultOptions};

fn unsealed_vault(dir: &std::path::Path) -> Vault {
    let store = Arc::new(RedbStore::open(&dir.join("bench.redb")).expect("open store"));
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
    let vault = Arc::new(unsealed_vault(dir.path()));
    let counter = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("durable put_secret");
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
