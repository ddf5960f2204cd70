//! Snapshots, end to end: taken over mutual TLS while a writer keeps writing, checked
//! and restored by the `vaultd` binary into a new node that custodians unseal with the
//! same shares; refused for another vault's file, a running node, a damaged file and
//! an identity without `snapshot.save`; one at a time; served while sealed.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use tonic::Code;
use vault_proto::v1;

use crate::harness::{
    GATEWAY, OPERATOR, OUTSIDER, Options, TestVault, expect_code, lease_value, put_request,
};

const VAULTD: &str = env!("CARGO_BIN_EXE_vaultd");

/// A backup job: may take snapshots, and nothing else but status.
const BACKUP: &str = "spiffe://billing.example/svc/backup";
/// `policies/admins.toml`'s day-to-day admin: much, but not `snapshot.save`.
const ADMIN: &str = "spiffe://billing.example/human/admin/alice";

fn options() -> Options {
    Options {
        policies: vec![(
            "backup.toml".to_owned(),
            format!(
                "[[role]]\nid = \"test-backup\"\nidentities = [\"{BACKUP}\"]\n\
                 permissions = [\"status\", \"snapshot.save\"]\n"
            ),
        )],
        ..Options::default()
    }
}

/// A snapshot taken as `identity`: the file's bytes and what the first chunk said.
async fn take(
    vault: &mut TestVault,
    identity: &str,
) -> Result<(Vec<u8>, v1::SnapshotInfo), tonic::Status> {
    let mut stream = vault
        .admin_as(identity)
        .snapshot(v1::SnapshotRequest {})
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    let mut info = None;
    while let Some(chunk) = stream.message().await? {
        assert!(!chunk.data.is_empty() && chunk.data.len() <= 64 * 1024);
        match info {
            None => info = Some(chunk.info.expect("the first chunk describes the snapshot")),
            Some(_) => assert!(chunk.info.is_none(), "only the first chunk describes it"),
        }
        bytes.extend_from_slice(&chunk.data);
    }
    Ok((bytes, info.expect("at least one chunk")))
}

/// The SHA-256 in the trailer, in hex.
fn digest_hex(bytes: &[u8]) -> String {
    let (_, trailer) = bytes.split_at(bytes.len() - 40);
    assert_eq!(&trailer[..8], b"SHA-256:");
    trailer[8..].iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `vaultd snapshot ARGS…`: exit code, stdout, stderr.
fn vaultd_snapshot<S: AsRef<OsStr>>(args: &[S]) -> (i32, String, String) {
    let output = Command::new(VAULTD)
        .arg("snapshot")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `vaultd snapshot restore [EXTRA…] --config CONFIG FILE`.
fn restore(file: &Path, config: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args: Vec<&OsStr> = vec![OsStr::new("restore")];
    args.extend(extra.iter().map(OsStr::new));
    args.extend([OsStr::new("--config"), config.as_os_str(), file.as_os_str()]);
    vaultd_snapshot(&args)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o777
}

fn value(name: &str) -> Vec<u8> {
    format!("sk-{name}-0123456789abcdef").into_bytes()
}

async fn secret_names(vault: &mut TestVault, tenant: &str) -> BTreeSet<String> {
    vault
        .admin()
        .list_secrets(v1::ListSecretsRequest {
            tenant: tenant.into(),
            environment: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .secrets
        .into_iter()
        .map(|s| s.secret.unwrap().name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_under_writes_restores_into_a_new_node_with_every_acknowledged_write() {
    let (mut a, shares) = TestVault::unsealed_with(options()).await;
    assert_eq!(
        mode(&a.path("vault.redb")),
        0o600,
        "the data file is private"
    );
    for i in 0..10 {
        let name = format!("byok/before-{i}");
        a.put_secret("acme", "live", &name, &value(&name)).await;
    }

    // A writer that keeps storing secrets, and says which writes were acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut admin = a.admin();
    let (_, session) = a.session(OPERATOR).await;
    let writer = tokio::spawn({
        let acked = Arc::clone(&acked);
        async move {
            for i in 0.. {
                if *stop_rx.borrow() {
                    break;
                }
                let name = format!("byok/w-{i}");
                admin
                    .put_secret(put_request(&session, "acme", "live", &name, &value(&name)))
                    .await
                    .unwrap();
                let mut acked = acked.lock().unwrap();
                acked.push(name);
                count_tx.send_replace(acked.len());
            }
        }
    });
    count_rx.wait_for(|n| *n >= 5).await.unwrap();
    let before: Vec<String> = acked.lock().unwrap().clone();
    let (bytes, info) = take(&mut a, BACKUP).await.unwrap();
    stop_tx.send_replace(true);
    writer.await.unwrap();
    let written: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();

    assert_eq!(info.format_version, 1);
    assert_eq!(
        (info.generation, info.threshold, info.share_count),
        (1, 2, 3)
    );
    assert_eq!(info.root_version, 1);
    assert!(info.records >= 10 + before.len() as u64, "{info:?}");
    assert!(bytes.starts_with(b"VAULTSNP"));
    // Nothing in clear: no stored value appears in the snapshot.
    for name in &before {
        let v = value(name);
        assert!(
            !bytes.windows(v.len()).any(|w| w == v.as_slice()),
            "{name} in clear"
        );
    }
    // One outcome record: who, how many records, the digest.
    let digest = digest_hex(&bytes);
    let records: Vec<String> = a
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("\"admin.snapshot\"") && l.contains(BACKUP))
        .collect();
    assert_eq!(records.len(), 2, "an intent and an outcome: {records:#?}");
    assert!(records[0].contains("\"intent\""), "{records:#?}");
    let outcome = &records[1];
    assert!(outcome.contains(&digest), "{outcome}");
    assert!(
        outcome.contains(&format!("\"records\":\"{}\"", info.records)),
        "{outcome}"
    );
    assert!(outcome.contains(&info.vault_id), "{outcome}");

    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "a.vsnap", &bytes);
    let (code, out, err) = vaultd_snapshot(&[OsStr::new("verify"), file.as_os_str()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&info.vault_id) && out.contains(&digest),
        "{out}"
    );

    // A new node: started once (an empty, uninitialised data file), then stopped.
    let mut b = TestVault::start_with(options()).await;
    b.stop().await;
    let (code, out, err) = restore(&file, &b.fixture.config, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("never initialised"), "{out}");
    assert!(out.contains("generation 1"), "{out}");
    assert_eq!(
        mode(&b.path("vault.redb")),
        0o600,
        "the restored file is private"
    );
    b.restart().await;
    let status = b
        .admin()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.state,
        v1::SealState::Sealed as i32,
        "a restored node starts sealed"
    );
    assert_eq!(status.generation, 1);
    b.unseal(&shares[..2]).await;

    // Every write acknowledged before the snapshot began is there and decrypts; every
    // secret there was written by someone (the view is whole, never half a write).
    let (mut gateway, gateway_session) = b.session(GATEWAY).await;
    let expected: Vec<String> = (0..10)
        .map(|i| format!("byok/before-{i}"))
        .chain(before.iter().cloned())
        .collect();
    for name in &expected {
        let (_, leased) = lease_value(&mut gateway, &gateway_session, "acme", "live", name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(leased, value(name), "{name}");
    }
    let present = secret_names(&mut b, "acme").await;
    for name in &present {
        assert!(
            expected.contains(name) || written.contains(name),
            "{name} was never written"
        );
        let (_, leased) = lease_value(&mut gateway, &gateway_session, "acme", "live", name)
            .await
            .unwrap();
        assert_eq!(leased, value(name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_running_node_another_vault_and_a_damaged_snapshot_and_brings_erasures_back()
 {
    let (mut a, a_shares) = TestVault::unsealed_with(options()).await;
    a.put_secret("acme", "live", "byok/openai", b"sk-acme")
        .await;
    a.put_secret("globex", "live", "byok/openai", b"sk-globex")
        .await;
    let (bytes, info) = take(&mut a, BACKUP).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "a.vsnap", &bytes);

    // Over a node that is running: its data file is held.
    let (code, _, err) = restore(&file, &a.fixture.config, &["--replace"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("in use") && err.contains("stop vaultd"),
        "{err}"
    );

    // Over another vault's data file: refused, and that vault is untouched.
    let (mut c, c_shares) = TestVault::unsealed_with(options()).await;
    c.put_secret("initech", "live", "byok/openai", b"sk-initech")
        .await;
    c.stop().await;
    let (code, _, err) = restore(&file, &c.fixture.config, &["--replace"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("the snapshot is of vault {}", info.vault_id)),
        "{err}"
    );
    c.restart().await;
    c.unseal(&c_shares[..2]).await;
    let (mut gateway, session) = c.session(GATEWAY).await;
    let (_, leased) = lease_value(&mut gateway, &session, "initech", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(leased, b"sk-initech");

    // A damaged snapshot: refused with the reason, and nothing written.
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    let bad = write(dir.path(), "bad.vsnap", &damaged);
    let target = dir.path().join("new-node").join("vault.redb");
    let (code, _, err) = vaultd_snapshot(&[
        OsStr::new("restore"),
        OsStr::new("--data"),
        target.as_os_str(),
        bad.as_os_str(),
    ]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("snapshot") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!dir.path().join("new-node").exists(), "nothing was created");
    let (code, _, err) = vaultd_snapshot(&[OsStr::new("verify"), bad.as_os_str()]);
    assert_eq!(code, 65, "{err}");

    // Erasure is not undone by a snapshot taken before it: restoring one (a rollback,
    // only with --replace) brings the tenant back, which is why operators erase again.
    a.admin()
        .erase_tenant(v1::EraseTenantRequest {
            tenant: "globex".into(),
            confirm: "globex".into(),
        })
        .await
        .unwrap();
    a.stop().await;
    let (code, _, err) = restore(&file, &a.fixture.config, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--replace"), "{err}");
    let (code, out, err) = restore(&file, &a.fixture.config, &["--replace"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rolled back") && out.contains("erase them again"),
        "{out}"
    );
    // Not only tenants: what was revoked, rotated or disabled since is back too.
    assert!(
        out.contains("API keys revoked since work again")
            && out.contains("revoke them again")
            && out.contains("secret versions disabled since hold their values again")
            && out.contains("rotate those secrets again"),
        "{out}"
    );
    a.restart().await;
    a.unseal(&a_shares[..2]).await;
    let (mut gateway, session) = a.session(GATEWAY).await;
    let (_, leased) = lease_value(&mut gateway, &session, "globex", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(
        leased, b"sk-globex",
        "the erased tenant is back after the restore"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_need_the_permission_are_one_at_a_time_and_are_served_sealed() {
    let mut fresh = TestVault::start_with(options()).await;
    let uninitialised = take(&mut fresh, BACKUP).await;
    expect_code(uninitialised, Code::FailedPrecondition);

    let (mut a, _) = TestVault::unsealed_with(options()).await;
    // Much from an admin, nothing from an outsider: neither may take a snapshot.
    expect_code(take(&mut a, ADMIN).await, Code::PermissionDenied);
    expect_code(take(&mut a, OUTSIDER).await, Code::PermissionDenied);
    assert!(
        a.audit_lines()
            .iter()
            .any(|l| l.contains("\"admin.snapshot\"") && l.contains(ADMIN) && l.contains("deny")),
        "the refusal is recorded"
    );

    // Enough data that a snapshot nobody reads stays under way (it waits for its
    // reader once the transport's buffers are full).
    let big = vec![b'x'; 512 * 1024];
    for i in 0..24 {
        a.put_secret("acme", "live", &format!("byok/big-{i}"), &big)
            .await;
    }
    let mut stalled = a
        .admin_as(BACKUP)
        .snapshot(v1::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let busy = expect_code(take(&mut a, BACKUP).await, Code::ResourceExhausted);
    assert!(busy.message().contains("already being taken"), "{busy:?}");
    let mut stalled_bytes = Vec::new();
    while let Some(chunk) = stalled.message().await.unwrap() {
        stalled_bytes.extend_from_slice(&chunk.data);
    }
    assert!(stalled_bytes.len() > 12 * 1024 * 1024);
    // Read late, it is still whole: it verifies, and its outcome record has its digest.
    let stalled_digest = digest_hex(&stalled_bytes);
    let stalled_dir = tempfile::tempdir().unwrap();
    let stalled_file = write(stalled_dir.path(), "stalled.vsnap", &stalled_bytes);
    let (code, out, err) = vaultd_snapshot(&[OsStr::new("verify"), stalled_file.as_os_str()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&stalled_digest), "{out}");
    assert!(
        a.audit_lines()
            .iter()
            .any(|l| l.contains("\"admin.snapshot\"")
                && l.contains(BACKUP)
                && l.contains(&stalled_digest)),
        "the stalled snapshot's outcome is recorded"
    );
    // Once one is done, the next is served; sealed too (it needs no key).
    a.seal().await;
    let (bytes, info) = take(&mut a, BACKUP).await.unwrap();
    assert!(
        info.records >= 24 + 2,
        "the secrets, the seal record: {info:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "sealed.vsnap", &bytes);
    let (code, out, err) = vaultd_snapshot(&[OsStr::new("verify"), file.as_os_str()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_grpc_fuzz_harness_reads_a_whole_snapshot_stream() {
    use vaultd::fuzzing::{GRPC_POLICY, GrpcHarness, grpc, grpc_input};
    let (name, text) = GRPC_POLICY;
    let fixture = crate::harness::Fixture::new(&Options {
        policies: vec![
            (name.to_owned(), text.to_owned()),
            (
                "fuzz-snapshot.toml".to_owned(),
                format!(
                    "[[role]]\nid = \"fuzz-snapshot\"\nidentities = [\"{OPERATOR}\"]\n\
                     permissions = [\"snapshot.save\"]\n"
                ),
            ),
        ],
        ..Options::default()
    });
    let config = vaultd::config::Config::load(&fixture.config).unwrap();
    let harness = GrpcHarness::new(config, OPERATOR).unwrap();
    // The harness asserts the answer is well formed: a status, whole messages that decode.
    grpc(
        &harness,
        &grpc_input("/vault.v1.Admin/Snapshot", "operator", &[]),
    );
    grpc(
        &harness,
        &grpc_input("/vault.v1.Admin/Snapshot", "local", &[]),
    );
    let outcomes = fixture
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("\"admin.snapshot\"") && l.contains("sha256"))
        .count();
    assert_eq!(outcomes, 1, "the operator's snapshot was served whole");
}
