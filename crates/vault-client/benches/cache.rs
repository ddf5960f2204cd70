//! A cached lease hit, against a real vaultd: what `Client::lease` costs when the
//! value is in the cache (target: at most 1 µs). Baseline in the same run: the bare
//! data-structure work a cache hit cannot avoid (an `RwLock<HashMap>` lookup of a
//! freshly built key and an `Arc` clone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use vault_client::{Client, Environment, SecretPath, SecretValue};
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

const GATEWAY: &str = "spiffe://billing.example/svc/gateway";

fn cached_lease(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let endpoint = format!("https://localhost:{}", process.grpc.port());
    let client = |identity: &str, fixture: &mut Fixture| {
        let files = fixture.client_files(identity);
        Client::builder()
            .endpoint(endpoint.clone())
            .ca_cert(files.ca)
            .client_cert(files.cert, files.key)
            .lease_ttl(std::time::Duration::from_secs(300))
    };
    let operator = client(OPERATOR, &mut fixture);
    let gateway = client(GATEWAY, &mut fixture);
    let gateway = runtime.block_on(async {
        let operator = operator.build().unwrap();
        let share = operator.init(1, 1).await.unwrap().pop().unwrap();
        operator.unseal(&share, None).await.unwrap();
        let path = SecretPath {
            tenant: "acme".into(),
            environment: Environment::Live,
            name: "byok/openai".into(),
        };
        let value = SecretValue::from_vec(b"sk-bench-0123456789".to_vec());
        operator
            .put_secret(&path, vault_client::proto::SecretKind::Byok, &value)
            .await
            .unwrap();
        let gateway = gateway.build().unwrap();
        // Wait for the revocation watch, then make sure the next lease is a hit.
        loop {
            let a = gateway
                .lease("acme", Environment::Live, "byok/openai")
                .await
                .unwrap();
            let b = gateway
                .lease("acme", Environment::Live, "byok/openai")
                .await
                .unwrap();
            if a.lease_id() == b.lease_id() {
                break gateway;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });

    let mut group = c.benchmark_group("lease");
    group.bench_function("cached_hit", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(
                        gateway
                            .lease(
                                black_box("acme"),
                                Environment::Live,
                                black_box("byok/openai"),
                            )
                            .await
                            .unwrap(),
                    );
                }
                start.elapsed()
            })
        });
    });
    type Key = (String, Environment, String);
    let map: RwLock<HashMap<Key, Arc<[u8; 32]>>> = RwLock::new(
        [(
            (
                "acme".to_owned(),
                Environment::Live,
                "byok/openai".to_owned(),
            ),
            Arc::new([0u8; 32]),
        )]
        .into_iter()
        .collect(),
    );
    group.bench_function("baseline_rwlock_hashmap_arc", |b| {
        b.iter(|| {
            let key = (
                black_box("acme").to_owned(),
                Environment::Live,
                black_box("byok/openai").to_owned(),
            );
            black_box(map.read().unwrap().get(&key).cloned())
        });
    });
    group.finish();
    drop(process);
}

criterion_group!(benches, cached_lease);
criterion_main!(benches);
