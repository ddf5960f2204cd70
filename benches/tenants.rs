//! A million tenants touched after unseal: every one gets a key (a durable write) and
//! is used again after the others pushed it out of the tenant-key cache, with the
//! locked-memory budgets the daemon sets by default. Prints the locked memory each pool
//! holds, how many tenant keys are cached, a lease's p50/p99 before and after (an
//! in-process `open_secret`, the lease path's vault work), and that a lease session
//! still opens at the end: many tenants cost re-unwraps, never failures, and never the
//! memory sessions need.
//!
//! ```sh
//! cargo bench --bench tenants -- [--tenants 1000000] [--writers 16]
//! ```
//!
//! With `--unseal-secrets S`, it instead measures unseal-to-serving as the store grows:
//! it stores S/10 secrets in `--tenants` / 10 tenants, restarts (a new `Vault` on the
//! reopened redb file), unseals and opens one secret; then grows the store to S secrets
//! in `--tenants` tenants and does the same, printing both times and their ratio.
//!
//! Run it under the default `RLIMIT_MEMLOCK` (`ulimit -l 8192`) to see it needs no more.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vault_crypto::arena::{Pool, pool_stats, set_budget};
use vault_crypto::session::SessionOffer;
use vaultd::names::{Environment, SecretId, SecretKind, TenantId};
use vaultd::storage::redb::RedbStore;
use vaultd::vault::{UnsealOutcome, Vault, VaultOptions};
use vaultd::{SecretValue, Share};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a count"))
}

/// p50 and p99 of `rounds` leases of `secret`, in microseconds.
fn lease_latency(vault: &Vault, secret: &SecretId, rounds: usize) -> (f64, f64) {
    let mut micros: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            vault.open_secret(secret, None).unwrap();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    micros.sort_by(f64::total_cmp);
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p) as usize];
    (at(0.50), at(0.99))
}

fn locked() -> String {
    let kib = |pool| pool_stats(pool).locked_bytes / 1024;
    format!(
        "vault {} KiB, sessions {} KiB, tenants {} KiB",
        kib(Pool::Vault),
        kib(Pool::Sessions),
        kib(Pool::Tenants)
    )
}

/// Runs `work(i)` for i in 0..count on `writers` threads; returns the rate per second.
fn in_parallel(count: usize, writers: usize, work: impl Fn(usize) + Sync) -> f64 {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..writers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    work(i);
                }
            });
        }
    });
    count as f64 / started.elapsed().as_secs_f64()
}

/// Opens the vault on `path` as a restart would, unseals it and opens `secret`:
/// returns the time from opening the file to the secret's plaintext.
fn restart_to_serving(path: &std::path::Path, share: &[u8], secret: &SecretId) -> Duration {
    let started = Instant::now();
    let store = Arc::new(RedbStore::open(path).unwrap());
    let vault = Vault::open(store, VaultOptions::default()).unwrap();
    let share = Share::from_bytes(share).unwrap();
    assert_eq!(vault.unseal(share, None).unwrap(), UnsealOutcome::Unsealed);
    vault.open_secret(secret, None).unwrap();
    started.elapsed()
}

/// Unseal-to-serving with S/10 secrets in T/10 tenants, then with S in T.
fn unseal_at_scale(secrets: usize, tenants: usize, writers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.redb");
    let share = {
        let vault = Vault::open(
            Arc::new(RedbStore::open(&path).unwrap()),
            VaultOptions::default(),
        )
        .unwrap();
        let shares: Vec<Share> = vault.init(1, 1).unwrap();
        shares[0].to_bytes()
    };
    let secret = |i: usize, tenants: usize| {
        SecretId::parse(&format!("t{}", i % tenants), "live", &format!("byok/s{i}")).unwrap()
    };
    let value = SecretValue::from_vec(b"sk-bench-0123456789abcdef".to_vec());
    let mut stored = 0;
    let mut figures = Vec::new();
    for (count, in_tenants) in [(secrets / 10, tenants / 10), (secrets, tenants)] {
        let vault = Vault::open(
            Arc::new(RedbStore::open(&path).unwrap()),
            VaultOptions::default(),
        )
        .unwrap();
        let unsealed = vault
            .unseal(Share::from_bytes(&share).unwrap(), None)
            .unwrap();
        assert_eq!(unsealed, UnsealOutcome::Unsealed);
        // The new secrets spread over all the tenants of this step.
        let rate = in_parallel(count - stored, writers, |i| {
            let id = secret(stored + i, in_tenants);
            vault.put_secret(&id, SecretKind::Byok, &value).unwrap();
        });
        stored = count;
        drop(vault);
        let took = restart_to_serving(&path, &share, &secret(count - 1, in_tenants));
        println!(
            "{count} secrets in {in_tenants} tenants (stored at {rate:.0}/s): \
             open + unseal + first secret {:.1} ms",
            took.as_secs_f64() * 1e3
        );
        figures.push(took);
    }
    println!(
        "unseal-to-serving at {secrets} secrets / at {}: {:.2}x",
        secrets / 10,
        figures[1].as_secs_f64() / figures[0].as_secs_f64()
    );
}

fn main() {
    let tenants = arg("--tenants", 1_000_000);
    let writers = arg("--writers", 16);
    let unseal_secrets = arg("--unseal-secrets", 0);
    if unseal_secrets > 0 {
        return unseal_at_scale(unseal_secrets, tenants, writers);
    }
    let options = VaultOptions::default();
    // The budgets `vaultd serve` gives each pool by default (leases.max_sessions = 1024,
    // keys.tenant_key_cache = 1024 plus 512 in flight, 1 MiB for the vault's own keys).
    set_budget(Pool::Sessions, 1024 * 2048);
    set_budget(Pool::Tenants, (options.tenant_key_cache + 512) * 2048);
    set_budget(Pool::Vault, 1024 * 1024);

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("vault.redb")).unwrap());
    let vault = Vault::open(store, options.clone()).unwrap();
    let shares: Vec<Share> = vault.init(1, 1).unwrap();
    let share = Share::from_bytes(&shares[0].to_bytes()).unwrap();
    assert_eq!(vault.unseal(share, None).unwrap(), UnsealOutcome::Unsealed);
    let secret = SecretId::parse("acme", "live", "byok/openai").unwrap();
    vault
        .put_secret(
            &secret,
            SecretKind::Byok,
            &SecretValue::from_vec(b"sk-bench-0123456789abcdef".to_vec()),
        )
        .unwrap();
    println!(
        "vaultd tenants: {tenants} tenants, {writers} writers, tenant-key cache {}",
        options.tenant_key_cache
    );
    let (p50, p99) = lease_latency(&vault, &secret, 20_000);
    println!(
        "lease before: p50 {p50:.1} us, p99 {p99:.1} us; locked: {}",
        locked()
    );

    let tenant = |i: usize| TenantId::new(&format!("t{i}")).unwrap();
    let envelopes: Vec<std::sync::Mutex<Vec<u8>>> = (0..tenants)
        .map(|_| std::sync::Mutex::new(Vec::new()))
        .collect();
    let created = in_parallel(tenants, writers, |i| {
        let envelope = vault
            .transit_encrypt(&tenant(i), Environment::Live, b"x", true)
            .unwrap_or_else(|e| panic!("tenant {i}: {e}"));
        *envelopes[i].lock().unwrap() = envelope.into_bytes();
    });
    println!(
        "created {tenants} tenant keys at {created:.0}/s; cached {}, locked: {}",
        vault.cached_tenant_keys(),
        locked()
    );
    // Every tenant again, in order: each was evicted long ago, so each is unwrapped anew.
    let reused = in_parallel(tenants, writers, |i| {
        let envelope = envelopes[i].lock().unwrap().clone();
        vault
            .transit_decrypt(&tenant(i), Environment::Live, &envelope)
            .unwrap_or_else(|e| panic!("tenant {i}: {e}"));
    });
    println!(
        "used all {tenants} again (re-unwrapping) at {reused:.0}/s; cached {}, locked: {}",
        vault.cached_tenant_keys(),
        locked()
    );
    let (p50, p99) = lease_latency(&vault, &secret, 20_000);
    println!("lease after:  p50 {p50:.1} us, p99 {p99:.1} us");
    let sessions: Vec<_> = (0..1024)
        .map(|_| {
            let client = SessionOffer::generate().unwrap();
            let server = SessionOffer::generate().unwrap();
            let client_public = *client.public_key();
            let server_public = *server.public_key();
            let transcript = vault_crypto::session::Transcript {
                client_public: &client_public,
                server_public: &server_public,
                identity: "spiffe://bench.example/svc/x",
                session_id: "s-bench",
            };
            server.agree(&client_public, &transcript).unwrap()
        })
        .collect();
    println!(
        "opened {} lease sessions afterwards (the full default budget); locked: {}",
        sessions.len(),
        locked()
    );
    std::thread::sleep(Duration::from_millis(1));
}
