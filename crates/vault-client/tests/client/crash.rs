//! The real daemon killed with SIGKILL at random moments under mixed load — secret
//! puts and rotations, leases, transit encryptions, API-key issues and verifications,
//! each acknowledged only once vault-client returned it. After every restart the data
//! file reopens, custodians unseal, every acknowledged write is there (each secret at
//! least at its acknowledged version, with that version's value; each envelope
//! decrypts; each key verifies), and the audit log verifies as one chain.
//!
//! `VAULTD_DAEMON_CRASH_CYCLES` sets the number of cycles (default 3);
//! `scripts/crash-loop.sh --daemon` runs 1000.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vault_client::{ApiKeySpec, ApiKeyText, Client, Environment, ExposeSecret, SecretValue};
use vault_testkit::fixture::{FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::{ACME_WORKER, GATEWAY, Vault, secret, unsealed};

/// What the daemon acknowledged.
#[derive(Default)]
struct Acknowledged {
    /// Secret name → (version, value).
    secrets: BTreeMap<String, (u64, Vec<u8>)>,
    /// Transit envelopes and their plaintexts.
    envelopes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Issued API keys.
    keys: Vec<ApiKeyText>,
}

fn value(name: &str, version: u64) -> Vec<u8> {
    format!("sk-crash-{name}-v{version}").into_bytes()
}

/// A small random number from the OS, for kill times and choices.
fn random(below: u64) -> u64 {
    let mut bytes = [0u8; 8];
    getrandom(&mut bytes);
    u64::from_le_bytes(bytes) % below
}

fn getrandom(bytes: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes))
        .expect("/dev/urandom");
}

/// One writer's loop until the daemon dies under it: puts a new secret, rotates it,
/// leases it, encrypts, issues and verifies a key — recording each success.
async fn load(
    writer: usize,
    cycle: usize,
    operator: Client,
    worker: Client,
    gateway: Client,
    acked: Arc<Mutex<Acknowledged>>,
) {
    for i in 0.. {
        let name = format!("byok/c{cycle}-w{writer}-{i}");
        let path = secret("acme", &name);
        let v1 = SecretValue::from_vec(value(&name, 1));
        if operator
            .put_secret(&path, vault_client::proto::SecretKind::Byok, &v1)
            .await
            .is_err()
        {
            return;
        }
        acked
            .lock()
            .unwrap()
            .secrets
            .insert(name.clone(), (1, value(&name, 1)));
        let v2 = SecretValue::from_vec(value(&name, 2));
        match operator.rotate_secret(&path, &v2, None).await {
            Ok(meta) => {
                acked
                    .lock()
                    .unwrap()
                    .secrets
                    .insert(name.clone(), (meta.current_version, value(&name, 2)));
            }
            Err(_) => return,
        }
        if gateway
            .lease("acme", Environment::Live, &name)
            .await
            .is_err()
        {
            return;
        }
        let plaintext = format!("transit-{cycle}-{writer}-{i}").into_bytes();
        match worker.encrypt("acme", Environment::Live, &plaintext).await {
            Ok(envelope) => acked.lock().unwrap().envelopes.push((envelope, plaintext)),
            Err(_) => return,
        }
        if random(4) == 0 {
            let spec = ApiKeySpec::new("acme", Environment::Live);
            match operator.issue_api_key(&spec).await {
                Ok((key, _)) => {
                    if gateway
                        .verify_api_key(&key, Environment::Live, None, 1)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    acked.lock().unwrap().keys.push(key);
                }
                Err(_) => return,
            }
        }
    }
}

/// Checks everything acknowledged so far against the restarted, unsealed daemon.
async fn check(vault: &mut Vault, acked: &Acknowledged) {
    let operator = vault.client(OPERATOR);
    let worker = vault.client(ACME_WORKER);
    let gateway = vault.client(GATEWAY);
    for (name, (version, expected)) in &acked.secrets {
        let meta = operator
            .describe_secret(&secret("acme", name))
            .await
            .unwrap();
        assert!(
            meta.current_version >= *version,
            "{name}: version {version} was acknowledged, {} is current",
            meta.current_version
        );
        let lease = gateway
            .lease_version("acme", Environment::Live, name, Some(*version))
            .await
            .unwrap();
        assert_eq!(lease.expose_secret(), expected.as_slice(), "{name}");
    }
    for (envelope, plaintext) in &acked.envelopes {
        let opened = worker
            .decrypt("acme", Environment::Live, envelope)
            .await
            .unwrap();
        assert_eq!(opened.expose_secret(), plaintext.as_slice());
    }
    for key in &acked.keys {
        gateway
            .verify_api_key(key, Environment::Live, None, 1)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_sigkill_of_the_daemon_under_mixed_load() {
    let cycles: usize = std::env::var("VAULTD_DAEMON_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(3);
    // A long run issues more keys than the default 1,000 a tenant may hold; past that
    // limit every issue would be refused and the key path no longer exercised.
    let options = FixtureOptions {
        extra: "[apikeys]\nmax_per_tenant = 1000000\n".into(),
        ..FixtureOptions::default()
    };
    let (mut vault, share) = unsealed(&options, &[]).await;
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    for cycle in 0..cycles {
        let keys_before = acked.lock().unwrap().keys.len();
        let mut clients = || {
            (
                vault.client(OPERATOR),
                vault.client(ACME_WORKER),
                vault.client(GATEWAY),
            )
        };
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (operator, worker, gateway) = clients();
                tokio::spawn(load(
                    w,
                    cycle,
                    operator,
                    worker,
                    gateway,
                    Arc::clone(&acked),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100 + random(700))).await;
        // SIGKILL, and wait for the process to be gone.
        drop(vault.process.take());
        for writer in writers {
            writer.await.unwrap();
        }
        // The restart moves a torn tail aside and continues the chain after the last
        // whole record: the log then verifies as one chain.
        vault.process = Some(VaultProcess::start(&vault.fixture));
        vault.client(OPERATOR).unseal(&share, None).await.unwrap();
        let report = {
            let log = std::fs::File::open(vault.fixture.path("audit.jsonl")).unwrap();
            vault_audit::verify(std::io::BufReader::new(log), None)
        };
        assert!(report.is_ok(), "cycle {cycle}: {report:?}");
        // This cycle's acknowledgements all, and a random sample of the earlier ones
        // (each was checked whole after its own cycle), so a long loop stays linear.
        let mine = |name: &str| name.starts_with(&format!("byok/c{cycle}-"));
        let sampled = || random(20) == 0;
        let (snapshot, totals) = {
            let acked = acked.lock().unwrap();
            let snapshot = Acknowledged {
                secrets: acked
                    .secrets
                    .iter()
                    .filter(|(name, _)| mine(name) || sampled())
                    .map(|(name, v)| (name.clone(), v.clone()))
                    .collect(),
                envelopes: acked
                    .envelopes
                    .iter()
                    .filter(|(_, plaintext)| {
                        plaintext.starts_with(format!("transit-{cycle}-").as_bytes()) || sampled()
                    })
                    .cloned()
                    .collect(),
                keys: acked
                    .keys
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i >= keys_before || sampled())
                    .map(|(_, k)| ApiKeyText::new(k.expose_secret().to_owned().into()))
                    .collect(),
            };
            let totals = (acked.secrets.len(), acked.envelopes.len(), acked.keys.len());
            (snapshot, totals)
        };
        check(&mut vault, &snapshot).await;
        eprintln!(
            "cycle {cycle}: acknowledged so far {} secrets, {} envelopes, {} API keys; checked \
             {} secrets, {} envelopes, {} keys; audit chain of {} records verifies",
            totals.0,
            totals.1,
            totals.2,
            snapshot.secrets.len(),
            snapshot.envelopes.len(),
            snapshot.keys.len(),
            report.records
        );
    }
}
