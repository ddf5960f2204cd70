//! The daemon's audit log: every request recorded before it is answered, a chain
//! that verifies with the key from Status and breaks at any tampering, and a dead or
//! stuck sink that fails requests within the deadline instead of answering them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use vault_proto::v1;

use crate::harness::{
    GATEWAY, OUTSIDER, Options, TestVault, audit_fifo, lease_request, lease_value,
};

fn verify(lines: &[String], key: &[u8; 32]) -> vault_audit::Report {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    vault_audit::verify(text.as_bytes(), Some(key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_recorded_and_the_chain_verifies_and_detects_tampering() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-in-no-record")
        .await;
    let (mut gateway, session) = vault.session(GATEWAY).await;
    let (lease, _) = lease_value(&mut gateway, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    let (mut outsider, outsider_session) = vault.session(OUTSIDER).await;
    outsider
        .lease(lease_request(
            &outsider_session,
            "acme",
            "live",
            "byok/openai",
        ))
        .await
        .unwrap_err();
    let key_hex = vault
        .admin()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .audit_public_key;
    let key = vault_audit::parse_public_key(&key_hex).unwrap();
    vault.seal().await; // writes a signed checkpoint
    vault.stop().await;

    let lines = vault.audit_lines();
    let report = verify(&lines, &key);
    assert!(report.is_ok(), "{report:?}");
    assert!(report.checkpoints >= 1 && report.signatures_checked);
    let allowed = lines
        .iter()
        .find(|l| l.contains(&lease.lease_id))
        .expect("the lease is recorded");
    assert!(
        allowed.contains(r#""decision":"allow""#) && allowed.contains(GATEWAY),
        "{allowed}"
    );
    assert!(allowed.contains(r#""grant":"gateway-byok""#), "{allowed}");
    let denied = lines
        .iter()
        .find(|l| l.contains(OUTSIDER) && l.contains("broker.lease"))
        .expect("the denial is recorded");
    assert!(denied.contains(r#""decision":"deny""#), "{denied}");
    assert!(!lines.iter().any(|l| l.contains("sk-in-no-record")));

    // Edit, delete, insert, reorder: each is caught at the record it breaks.
    let target = lines
        .iter()
        .position(|l| l.contains(&lease.lease_id))
        .unwrap();
    let mut edited = lines.clone();
    edited[target] = edited[target].replace("acme", "acmf");
    let mut deleted = lines.clone();
    deleted.remove(target);
    let mut inserted = lines.clone();
    inserted.insert(target, lines[target - 1].clone());
    let mut reordered = lines.clone();
    reordered.swap(target, target + 1);
    for (what, log) in [
        ("edited", edited),
        ("deleted", deleted),
        ("inserted", inserted),
        ("reordered", reordered),
    ] {
        let error = verify(&log, &key)
            .first_error
            .unwrap_or_else(|| panic!("{what} passed"));
        // The record at `target` is line `target + 1`: the first one each change breaks.
        assert_eq!(error.line, target as u64 + 1, "{what}: {error}");
    }
}

const READING: u8 = 0;
const PAUSED: u8 = 1;
const CLOSED: u8 = 2;

/// Reads the audit FIFO into `lines` while `state` is READING; stops reading while
/// PAUSED (the pipe fills and the daemon's writes block); closes it when CLOSED.
fn fifo_reader(path: &Path, state: Arc<AtomicU8>, lines: Arc<Mutex<Vec<String>>>) {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(std::fs::File::open(path).unwrap());
        loop {
            match state.load(Ordering::SeqCst) {
                PAUSED => std::thread::sleep(Duration::from_millis(10)),
                CLOSED => return,
                _ => {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    lines.lock().unwrap().push(line);
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_or_dead_audit_sink_fails_requests_within_the_deadline() {
    let (_fifo_dir, fifo) = audit_fifo();
    let state = Arc::new(AtomicU8::new(READING));
    let lines = Arc::new(Mutex::new(Vec::new()));
    fifo_reader(&fifo, Arc::clone(&state), Arc::clone(&lines));

    let (mut vault, _) = TestVault::unsealed_with(Options {
        audit_path: Some(fifo.clone()),
        audit: "write_deadline = \"300ms\"".into(),
        ..Options::default()
    })
    .await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let (mut gateway, session) = vault.session(GATEWAY).await;
    let mut answered = Vec::new();

    // Stuck: the reader stops, the pipe fills, writes block. Requests fail
    // UNAVAILABLE, each within the deadline (plus scheduling slack).
    state.store(PAUSED, Ordering::SeqCst);
    let mut refused = 0;
    for _ in 0..5000 {
        let started = Instant::now();
        match gateway
            .lease(lease_request(&session, "acme", "live", "byok/openai"))
            .await
        {
            Ok(response) => answered.push(response.into_inner().lease_id),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(status.message().contains("audit"), "{status:?}");
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "{:?}",
                    started.elapsed()
                );
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
        }
    }
    assert_eq!(refused, 3, "the pipe never filled");
    // Refused leases do not linger.
    let listed = vault
        .admin()
        .list_leases(v1::ListLeasesRequest::default())
        .await;
    // Listing is itself audited, so with the sink stuck it is refused too.
    assert_eq!(listed.unwrap_err().code(), Code::Unavailable);

    // Unstuck: the sink drains and serves again.
    state.store(READING, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match gateway
            .lease(lease_request(&session, "acme", "live", "byok/openai"))
            .await
        {
            Ok(response) => {
                answered.push(response.into_inner().lease_id);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(status) => panic!("the sink did not recover: {status:?}"),
        }
    }
    let leases = vault.leases().await;
    assert_eq!(
        leases.len(),
        answered.len(),
        "only answered leases are active"
    );

    // Nothing was answered unaudited: every answered lease is in the log.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = lines.lock().unwrap().concat();
    for id in &answered {
        assert!(
            written.contains(id.as_str()),
            "lease {id} answered but not audited"
        );
    }

    // Dead: the reader goes away; writes fail with EPIPE and the sink stays failed.
    state.store(CLOSED, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match gateway
            .lease(lease_request(&session, "acme", "live", "byok/openai"))
            .await
        {
            Ok(_) if Instant::now() < deadline => {}
            Ok(_) => panic!("requests kept succeeding with the audit reader gone"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
    let started = Instant::now();
    let again = gateway
        .lease(lease_request(&session, "acme", "live", "byok/openai"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Unavailable);
    assert!(
        again.message().contains("reader has gone away"),
        "{again:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    let (code, body) = vault.http_get("/v1/health").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""audit":"failing""#), "{body}");
    // The failure is an alert (the log cannot tell of it), raised once.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = vault.http_get("/metrics").await;
        if metrics.contains("vaultd_alerts_total{kind=\"audit.failed\"} 1\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audit.failed alert:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Sealing still happens: it is the safe direction, and the answer says so (the
    // missing record is in vaultd's log and the health answer).
    vault
        .admin()
        .seal(v1::SealRequest::default())
        .await
        .unwrap();
    let (_, body) = vault.http_get("/v1/health").await;
    assert!(body.contains(r#""sealed":true"#), "{body}");
}

fn log_bytes(vault: &TestVault) -> u64 {
    std::fs::metadata(vault.path("audit.jsonl")).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_amplification_refused_requests_cannot_grow_the_log() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let before = log_bytes(&vault);

    // An identity no policy names, sending what the review sent: 55 revocations of a
    // ~1 MiB lease id, and a ~1 MiB identity selector. Each is refused before any of
    // it is recorded.
    let mut outsider = vault.broker(OUTSIDER);
    let started = Instant::now();
    let huge = "l-".to_owned() + &"a".repeat(1_000_000);
    for _ in 0..55 {
        let status = outsider
            .revoke(v1::RevokeRequest {
                lease_id: huge.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("lease_id must be 'l-'"),
            "{status:?}"
        );
    }
    let status = vault
        .admin_as(OUTSIDER)
        .revoke_leases(v1::RevokeLeasesRequest {
            selector: Some(v1::revoke_leases_request::Selector::Identity(
                "spiffe://billing.example/".to_owned() + &"x".repeat(1_000_000),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A flood of well-formed refusals: recorded one by one up to the caller's budget,
    // then counted in a summary.
    for i in 0..2000u32 {
        let status = outsider
            .revoke(v1::RevokeRequest {
                lease_id: format!("l-{i:032x}"),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    // The budget (20/s, a burst of 5 s of it) refills while the flood is sent: on a
    // slow machine more of it is recorded one by one, never more than this.
    let budget = 100 + (20.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a housekeeping tick

    let grown = log_bytes(&vault) - before;
    assert!(grown < 256 * 1024, "the log grew by {grown} bytes");
    let lines = vault.audit_lines();
    assert!(lines.iter().all(|l| l.len() < 4096));
    let one_by_one = lines
        .iter()
        .filter(|l| l.contains(OUTSIDER) && l.contains(r#""operation":"broker.revoke""#))
        .count();
    assert!(
        one_by_one <= budget,
        "{one_by_one} refusals recorded one by one, beyond a budget of {budget}"
    );
    let counted: u64 = lines
        .iter()
        .filter(|l| l.contains(OUTSIDER) && l.contains("audit.refusals_suppressed"))
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).unwrap();
            record["detail"]["broker.revoke"]
                .as_str()
                .map_or(0, |n| n.parse::<u64>().unwrap())
        })
        .sum();
    assert!(counted > 0, "{one_by_one} recorded, none counted");
    assert_eq!(
        one_by_one as u64 + counted,
        2055,
        "every refusal is recorded or counted"
    );
    let (_, metrics) = vault.http_get("/metrics").await;
    assert!(metrics.contains("vaultd_audit_refusals_suppressed_total"));

    // Everyone else is served as before.
    let (mut gateway, session) = vault.session(GATEWAY).await;
    lease_value(&mut gateway, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_disk_refuses_requests_with_a_reason_and_recovers() {
    let disk = vault_testkit::disk::SmallDisk::mount(4 << 20);
    let (mut vault, _) = TestVault::unsealed_with(Options {
        audit_path: Some(disk.join("audit.jsonl")),
        audit: "min_free = \"1MiB\"".into(),
        ..Options::default()
    })
    .await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let (mut gateway, session) = vault.session(GATEWAY).await;
    let (code, body) = vault.http_get("/v1/health").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""audit_free_bytes":"#), "{body}");

    disk.fill("filler");
    let status = lease_value(&mut gateway, &session, "acme", "live", "byok/openai")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("audit.min_free"), "{status:?}");
    let (code, body) = vault.http_get("/v1/health").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""audit":"low-space""#), "{body}");
    let (_, metrics) = vault.http_get("/metrics").await;
    let free = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vaultd_audit_free_bytes "))
        .unwrap();
    assert!(free.parse::<i64>().unwrap() < 1 << 20, "{free}");

    // Space freed: served again, with no restart, and the chain is whole.
    disk.remove("filler");
    lease_value(&mut gateway, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    vault.stop().await;
    let text = std::fs::read(disk.join("audit.jsonl")).unwrap();
    let report = vault_audit::verify(&text[..], None);
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_audit_tail_does_not_stop_the_daemon() {
    let (mut vault, shares) = TestVault::unsealed().await;
    vault.stop().await;
    // A crash mid-write: half a record, no newline.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(vault.path("audit.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut log, br#"{"seq":42,"time_ms":17000"#).unwrap();
    drop(log);

    vault.restart().await;
    vault.unseal(&shares[..2]).await;
    vault.stop().await;
    let lines = vault.audit_lines();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let report = vault_audit::verify(text.as_bytes(), None);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.recoveries.len(), 1, "{report:?}");
    let aside = vault.path(&report.recoveries[0].moved_to);
    assert_eq!(
        std::fs::read(aside).unwrap(),
        br#"{"seq":42,"time_ms":17000"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_the_server_deadline_fails_deadline_exceeded() {
    let (_fifo_dir, fifo) = audit_fifo();
    let state = Arc::new(AtomicU8::new(READING));
    let lines = Arc::new(Mutex::new(Vec::new()));
    fifo_reader(&fifo, Arc::clone(&state), Arc::clone(&lines));
    // The audit deadline is long; the server's request deadline is what ends the wait.
    let (mut vault, _) = TestVault::unsealed_with(Options {
        audit_path: Some(fifo.clone()),
        audit: "write_deadline = \"60s\"".into(),
        limits: "request_timeout = \"500ms\"".into(),
        ..Options::default()
    })
    .await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let (mut gateway, session) = vault.session(GATEWAY).await;
    state.store(PAUSED, Ordering::SeqCst);
    let mut timed_out = None;
    for _ in 0..5000 {
        let started = Instant::now();
        if let Err(status) = gateway
            .lease(lease_request(&session, "acme", "live", "byok/openai"))
            .await
        {
            timed_out = Some((status, started.elapsed()));
            break;
        }
    }
    let (status, took) = timed_out.expect("the pipe fills up");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    state.store(CLOSED, Ordering::SeqCst);
}
