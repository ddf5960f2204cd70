//! Memory test: after seal, no copy of the root key, a tenant key or a secret value
//! remains anywhere in the process's readable memory.
//!
//! The test re-runs this test binary as a child that unseals, stores and reads a
//! random canary secret, and reports (through the test-only hook) the key bytes to
//! look for. The parent reads the child's memory through `/proc/<pid>/mem`: first
//! while unsealed, where every needle must be found (so the scan is known to work),
//! then after seal, where none may be.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use vault_crypto::SecretValue;

use super::tests::unseal_with;
use super::{Vault, VaultOptions};
use crate::names::{SecretId, SecretKind};
use crate::storage::redb::RedbStore;

const CHILD_ENV: &str = "VAULTD_MEMORY_TEST_CHILD";
const TEST_NAME: &str = "vault::memory_tests::no_key_or_value_survives_seal";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// 32 bytes unique to this run, made in place without a random-number library whose
/// internal buffers would be scanned too: four SipHash outputs under std's per-process
/// random keys.
fn unique_canary() -> Vec<u8> {
    use std::hash::BuildHasher;
    let keys = std::collections::hash_map::RandomState::new();
    let mut canary = Vec::with_capacity(32);
    for i in 0..4u64 {
        canary.extend_from_slice(&keys.hash_one(i).to_le_bytes());
    }
    canary
}

/// The child: a worker thread stores and reads the canary (as a request handler on a
/// runtime's worker would), the main thread seals, and both wait for the parent
/// between phases. The worker stays alive so its stack is scanned too.
fn child(dir: &str) {
    let store = Arc::new(RedbStore::open(&std::path::Path::new(dir).join("v.redb")).unwrap());
    let vault = Arc::new(Vault::open(store, VaultOptions::default()).unwrap());
    let shares = vault.init(2, 3).unwrap();
    unseal_with(&vault, &shares[..2]).unwrap();
    drop(shares);

    let (to_worker, worker_rx) = std::sync::mpsc::channel::<()>();
    let (to_main, main_rx) = std::sync::mpsc::channel::<()>();
    let worker_vault = Arc::clone(&vault);
    let worker = std::thread::spawn(move || {
        let vault = worker_vault;
        let id = SecretId::parse("acme", "live", "byok/canary").unwrap();
        let canary = unique_canary();
        let canary_hex = hex(&canary);
        vault
            .put_secret(&id, SecretKind::Byok, &SecretValue::from_vec(canary))
            .unwrap();
        let (held, _) = vault.open_secret(&id, None).unwrap();
        // Out-parameters, so no copy is left in a temporary of this frame.
        let (mut root, mut tenant) = ([0u8; 32], [0u8; 32]);
        vault
            .key_material_for_tests(&id.tenant, &mut root, &mut tenant)
            .unwrap();
        // Written to stdout directly: the test harness captures println! even in a child.
        let mut out = std::io::stdout();
        writeln!(out, "NEEDLES {} {} {canary_hex}", hex(&root), hex(&tenant)).unwrap();
        out.flush().unwrap();
        drop(canary_hex);
        // The hook's copies are the test's own; wipe them so only the vault's could remain.
        zeroize::Zeroize::zeroize(&mut root);
        zeroize::Zeroize::zeroize(&mut tenant);
        worker_rx.recv().unwrap(); // parent scanned: release the value
        drop(held);
        to_main.send(()).unwrap();
        worker_rx.recv().unwrap(); // stay alive until the parent scanned again
    });

    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    to_worker.send(()).unwrap();
    main_rx.recv().unwrap();
    vault.seal().unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "SEALED").unwrap();
    out.flush().unwrap();
    line.clear();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    to_worker.send(()).unwrap();
    worker.join().unwrap();
}

/// Counts occurrences of each needle in the child's readable mappings.
fn scan(pid: u32, needles: &[Vec<u8>]) -> Vec<usize> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut hits = vec![0; needles.len()];
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).unwrap(),
            u64::from_str_radix(hi, 16).unwrap(),
        );
        let mut buf = vec![0u8; (hi - lo) as usize];
        if mem.seek(SeekFrom::Start(lo)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        for (needle, count) in needles.iter().zip(hits.iter_mut()) {
            let found = buf.windows(needle.len()).filter(|w| w == needle).count();
            if found > 0 {
                eprintln!("{found} hit(s) in {line}");
                for (i, _) in buf
                    .windows(needle.len())
                    .enumerate()
                    .filter(|(_, w)| w == needle)
                {
                    let lo = i.saturating_sub(48);
                    eprintln!("  at +{i:#x}: {}", hex(&buf[lo..(i + 80).min(buf.len())]));
                }
            }
            *count += found;
        }
    }
    hits
}

/// Whether some mapping of the child is locked, excluded from dumps and from forks.
fn has_locked_arena(pid: u32) -> bool {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut locked = false;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Locked:") {
            locked = v.trim() != "0 kB";
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let flags: Vec<&str> = flags.split_whitespace().collect();
            if locked && ["lo", "dd", "dc"].iter().all(|f| flags.contains(f)) {
                return true;
            }
        }
    }
    false
}

#[test]
fn no_key_or_value_survives_seal() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = proc.id();
    let mut stdin = proc.stdin.take().unwrap();
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    let mut next_with = |prefix: &str| loop {
        let line = lines.next().expect("child exited early").unwrap();
        // The harness may have printed the test's name on the same line.
        if let Some((_, rest)) = line.split_once(prefix) {
            return rest.to_owned();
        }
    };
    let needles: Vec<Vec<u8>> = next_with("NEEDLES ").split(' ').map(unhex).collect();
    assert_eq!(needles.len(), 3);

    let before = scan(pid, &needles);
    assert!(
        before.iter().all(|n| *n > 0),
        "the scan must find live keys and the held value: {before:?}"
    );
    assert!(
        has_locked_arena(pid),
        "no locked, dump- and fork-excluded mapping found"
    );

    writeln!(stdin, "seal").unwrap();
    next_with("SEALED");
    let after = scan(pid, &needles);
    writeln!(stdin, "exit").unwrap();
    let status = proc.wait().unwrap();
    assert_eq!(
        after,
        vec![0, 0, 0],
        "[root key, tenant key, canary] copies left after seal"
    );
    assert!(status.success());
}
