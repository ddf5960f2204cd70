//! Crash test: a child process writing secrets and acknowledging each on stdout is
//! SIGKILLed at random moments. After every kill the store must reopen and every
//! acknowledged write must be present and decrypt to its value.
//!
//! `VAULTD_CRASH_CYCLES` sets the number of cycles (default 50);
//! `scripts/crash-loop.sh` runs 1000.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vaultd::names::{SecretId, SecretKind};
use vaultd::storage::redb::RedbStore;
use vaultd::vault::{UnsealOutcome, Vault, VaultOptions};
use vaultd::{SecretValue, Share};

const CHILD_ENV: &str = "VAULTD_CRASH_TEST_CHILD";
const TEST_NAME: &str = "crash::acknowledged_writes_survive_sigkill";
const WRITERS: usize = 4;

fn open_unsealed(dir: &Path) -> Vault {
    let store = Arc::new(RedbStore::open(&dir.join("vault.redb")).expect("store reopens"));
    let vault = Vault::open(store, VaultOptions::default()).unwrap();
    let text = std::fs::read_to_string(dir.join("shares")).unwrap();
    let mut nonce = None;
    for line in text.lines() {
        match vault
            .unseal(Share::parse(line).unwrap(), nonce.as_ref())
            .unwrap()
        {
            UnsealOutcome::InProgress { nonce: n, .. } => nonce = Some(n),
            UnsealOutcome::Unsealed => return vault,
        }
    }
    panic!("shares did not unseal");
}

fn expected_value(name: &str) -> Vec<u8> {
    format!("sk-crash-test-value-for-{name}").into_bytes()
}

fn secret(name: &str) -> SecretId {
    SecretId::parse("crash", "live", name).unwrap()
}

/// The child: several writers store secrets as fast as they can, acknowledging
/// each one only after `put_secret` returned (that is, after it is durable).
fn child(dir: &Path, cycle: &str) {
    let vault = Arc::new(open_unsealed(dir));
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    writeln!(stdout.lock().unwrap(), "READY").unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (vault, stdout) = (Arc::clone(&vault), Arc::clone(&stdout));
            let cycle = cycle.to_owned();
            std::thread::spawn(move || {
                for i in 0.. {
                    let name = format!("c{cycle}-w{w}-{i}");
                    let value = SecretValue::from_vec(expected_value(&name));
                    vault
                        .put_secret(&secret(&name), SecretKind::Byok, &value)
                        .unwrap();
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ACK {name}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
}

/// A small xorshift generator: kill timings need variety, not secrecy.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, cycle) = spec.split_once('|').unwrap();
        child(Path::new(dir), cycle);
        return;
    }
    let cycles: usize = std::env::var("VAULTD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test: {cycles} cycles, seed {seed}");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(RedbStore::open(&dir.path().join("vault.redb")).unwrap());
        let vault = Vault::open(store, VaultOptions::default()).unwrap();
        let shares = vault.init(2, 3).unwrap();
        let text: String = shares[..2]
            .iter()
            .map(|s| format!("{}\n", &*s.encode()))
            .collect();
        std::fs::write(dir.path().join("shares"), text).unwrap();
    }

    let mut acked: Vec<String> = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}|{cycle}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = proc.stdout.take().unwrap();
        let (started_writing, is_writing) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut names = Vec::new();
            let mut ready = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("READY") {
                    ready = true;
                    let _ = started_writing.send(());
                }
                if let Some((_, name)) = line.split_once("ACK ") {
                    names.push(name.to_owned());
                }
            }
            (ready, names)
        });
        // Once the child writes (however long a loaded machine takes to start it),
        // kill it somewhere in its stream of writes.
        let _ = is_writing.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5 + rng.below(60)));
        proc.kill().unwrap();
        proc.wait().unwrap();
        let (ready, names) = reader.join().unwrap();
        assert!(ready, "cycle {cycle}: child never became ready");
        acked.extend(names);

        let vault = open_unsealed(dir.path());
        for name in acked.iter().rev().take(200) {
            let (value, _) = vault
                .open_secret(&secret(name), None)
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged {name} lost: {e}"));
            assert_eq!(value.expose_secret(), &expected_value(name)[..], "{name}");
        }
    }
    let vault = open_unsealed(dir.path());
    for name in &acked {
        let (value, _) = vault.open_secret(&secret(name), None).unwrap();
        assert_eq!(value.expose_secret(), &expected_value(name)[..], "{name}");
    }
    eprintln!(
        "crash test: {cycles} cycles, {} acknowledged writes, all present, in {:.1?}",
        acked.len(),
        started.elapsed()
    );
    assert!(
        acked.len() >= cycles,
        "too few writes were acknowledged to test anything"
    );
}
