//! Memory test: after seal, no copy of the root key, a tenant key or a secret value
//! remains anywhere in the process's readable memory.
//!
//! The test re-runs this test binary as a child that unseals, stores and reads a
//! random canary secret, and reports (through the test-only hook) the key bytes to
//! look for. The parent reads the child's memory through `/proc/<pid>/mem`: first
//! while unsealed, where every needle must be found (so the scan is known to work),
//! then after seal, where none may be.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use vault_crypto::SecretValue;
use vault_testkit::memory::{has_locked_arena, hex, scan, unhex, unique_canary};

use super::tests::unseal_with;
use super::{Vault, VaultOptions};
use crate::names::{SecretId, SecretKind};
use crate::storage::redb::RedbStore;

const CHILD_ENV: &str = "VAULTD_MEMORY_TEST_CHILD";
const TEST_NAME: &str = "vault::memory_tests::no_key_or_value_survives_seal";

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
