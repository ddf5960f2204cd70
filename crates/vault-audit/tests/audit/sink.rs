//! The writer: chains continue across restarts, torn tails are moved aside, edited
//! ones stop the start, a full disk is refused or undone, and a stuck or broken sink
//! fails closed within the deadline.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vault_audit::{AuditError, AuditLog, AuditOptions, FsyncPolicy, verify};
use vault_testkit::disk::SmallDisk;

use crate::{TestKeys, event, lines, options, verify_lines, write_log};

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn reopening_continues_the_chain() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    let keys = TestKeys::new();
    let first = write_log(&path, 3, keys.clone()).await;
    let second = write_log(&path, 3, keys.clone()).await;
    assert!(second[0] > *first.last().unwrap());

    let lines = lines(&path);
    let report = verify_lines(&lines, Some(&keys.public()));
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.segments, 1);
    assert_eq!(report.records, lines.len() as u64);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(r#""kind":"start""#))
            .count(),
        1
    );

    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn records_written_while_sealed_have_no_mac_and_no_checkpoints() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    let keys = TestKeys::new();
    keys.set_sealed(true);
    {
        let log = AuditLog::open(&path, options(), keys.clone()).unwrap();
        for i in 0..6 {
            log.append(event(i)).await.unwrap();
        }
        assert!(!log.checkpoint().await.unwrap());
    }
    let lines = lines(&path);
    assert_eq!(lines.len(), 7);
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with(r#","mac":null,"sig":null}"#))
    );
    let report = verify_lines(&lines, Some(&keys.public()));
    assert!(report.is_ok());
    assert_eq!((report.checkpoints, report.unsigned_tail), (0, 7));

    // Unsealed, the next open signs everything so far at shutdown.
    keys.set_sealed(false);
    drop(AuditLog::open(&path, options(), keys.clone()).unwrap());
    let report = verify_lines(&self::lines(&path), Some(&keys.public()));
    assert!(report.is_ok());
    assert_eq!((report.checkpoints, report.unsigned_tail), (1, 0));
}

#[tokio::test]
async fn group_commit_answers_once_written() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    let options = AuditOptions {
        fsync: FsyncPolicy::Group(Duration::from_millis(20)),
        ..options()
    };
    let log = AuditLog::open(&path, options, TestKeys::new()).unwrap();
    for i in 0..5 {
        let seq = log.append(event(i)).await.unwrap();
        let prefix = format!(r#"{{"seq":{seq},"#);
        assert!(
            lines(&path).iter().any(|l| l.starts_with(&prefix)),
            "seq {seq} not written"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // lets an interval sync run
    assert!(log.is_healthy());
}

#[tokio::test]
async fn a_torn_tail_is_moved_aside_and_the_chain_continues() {
    for garbage in [
        "{\"seq\":99}\n",
        "{\"seq\":7,\"time",
        "\n",
        "\0\0\0\0\0\0\0\0",
        "garbage\n{\"seq\":3,\"ti",
    ] {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("audit.log");
        let keys = TestKeys::new();
        write_log(&path, 3, keys.clone()).await;
        let intact = lines(&path).len() as u64;
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(garbage.as_bytes())
            .unwrap();

        let log = AuditLog::open(&path, options(), keys.clone()).unwrap();
        log.append(event(9)).await.unwrap();
        drop(log);

        // The torn bytes are kept, byte for byte, in the file the recovery names.
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != &path)
            .collect();
        assert_eq!(aside.len(), 1, "{garbage:?}: {aside:?}");
        assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage.as_bytes());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&aside[0]).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        let report = verify_lines(&lines(&path), Some(&keys.public()));
        assert!(report.is_ok(), "{garbage:?}: {report:?}");
        assert_eq!(report.segments, 1, "the chain continued, no new segment");
        assert_eq!(report.recoveries.len(), 1);
        let recovery = &report.recoveries[0];
        assert_eq!(recovery.line, intact + 1, "{garbage:?}");
        assert_eq!(recovery.torn_bytes, garbage.len() as u64);
        assert_eq!(
            recovery.moved_to,
            aside[0].file_name().unwrap().to_str().unwrap()
        );
        assert!(recovery.to_string().contains("moved to audit.log.torn-"));
    }
}

#[tokio::test]
async fn an_edited_last_record_or_a_huge_tail_still_refuses_to_start() {
    // An edited last record no longer hashes to its chain value: not a tear.
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, 3, TestKeys::new()).await;
    let mut edited = lines(&path);
    let last = edited.len() - 1;
    edited[last] = edited[last].replace(r#""node":"test-node""#, r#""node":"test-nodf""#);
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    let error = AuditLog::open(&path, options(), TestKeys::new()).unwrap_err();
    assert!(
        matches!(error, AuditError::CorruptTail { line, .. } if line == edited.len() as u64),
        "{error:?}"
    );
    assert!(error.to_string().contains("vaultctl audit verify"));

    // More garbage than a cut-short write can leave.
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, 3, TestKeys::new()).await;
    let intact = lines(&path).len() as u64;
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    for _ in 0..5 * 1024 {
        file.write_all(&[b'x'; 1023]).unwrap();
        file.write_all(b"\n").unwrap();
    }
    let error = AuditLog::open(&path, options(), TestKeys::new()).unwrap_err();
    assert!(
        matches!(error, AuditError::CorruptTail { line, .. } if line == intact + 5 * 1024),
        "{error:?}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing moved"
    );
}

#[tokio::test]
async fn low_free_space_refuses_appends_before_anything_is_written() {
    let disk = SmallDisk::mount(1 << 20);
    let path = disk.join("audit.log");
    let keys = TestKeys::new();
    let options = AuditOptions {
        min_free: 256 * 1024,
        ..options()
    };
    let log = AuditLog::open(&path, options, keys.clone()).unwrap();
    log.append(event(1)).await.unwrap();
    assert!(log.is_healthy() && !log.low_space());
    assert!(log.free_bytes().unwrap() > 512 * 1024);

    disk.fill("filler");
    let before = std::fs::read(&path).unwrap();
    let error = log.append(event(2)).await.unwrap_err();
    assert!(
        matches!(error, AuditError::Unavailable { reason } if reason.contains("audit.min_free")),
        "{error:?}"
    );
    assert!(log.low_space() && !log.is_healthy());
    assert!(log.free_bytes().unwrap() < 256 * 1024);
    assert!(log.failure().is_none(), "low space is not a failure");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "nothing half-written"
    );

    // Space comes back: the sink goes on by itself, and the chain is whole.
    disk.remove("filler");
    log.append(event(3)).await.unwrap();
    assert!(log.is_healthy() && !log.low_space());
    drop(log);
    let report = verify_lines(&lines(&path), Some(&keys.public()));
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test]
async fn a_write_cut_short_by_a_full_disk_is_undone_and_the_sink_goes_on() {
    let disk = SmallDisk::mount(1 << 20);
    let path = disk.join("audit.log");
    let keys = TestKeys::new();
    let options = AuditOptions {
        min_free: 0,
        ..options()
    };
    let log = AuditLog::open(&path, options, keys.clone()).unwrap();
    log.append(event(1)).await.unwrap();
    disk.fill("filler");

    let mut big = event(2);
    big.detail = (0..16)
        .map(|i| (format!("k{i}"), "v".repeat(200)))
        .collect();
    let mut refused = None;
    for _ in 0..10_000 {
        if let Err(error) = log.append(big.clone()).await {
            refused = Some(error);
            break;
        }
    }
    let error = refused.expect("the disk fills up");
    assert!(
        matches!(error, AuditError::Unavailable { reason } if reason.contains("disk is full")),
        "{error:?}"
    );
    assert!(log.failure().is_none(), "undone, not failed");
    let text = std::fs::read(&path).unwrap();
    assert_eq!(text.last(), Some(&b'\n'), "no partial record left behind");

    disk.remove("filler");
    let seq = log.append(event(3)).await.unwrap();
    drop(log);
    let report = verify_lines(&lines(&path), Some(&keys.public()));
    assert!(report.is_ok(), "{report:?}");
    assert!(report.last_verified_seq.unwrap() >= seq);
    assert!(report.recoveries.is_empty());
}

#[tokio::test]
async fn a_huge_event_is_cut_to_its_bounds() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, options(), TestKeys::new()).unwrap();
    let mut huge = event(1);
    huge.lease_id = Some("l".repeat(1 << 20));
    huge.detail = (0..10_000)
        .map(|i| (i.to_string(), "v".repeat(1000)))
        .collect();
    log.append(huge).await.unwrap();
    drop(log);
    let longest = lines(&path).iter().map(String::len).max().unwrap();
    assert!(longest < 16 * 1024, "{longest}");
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    let _log = AuditLog::open(&path, options(), TestKeys::new()).unwrap();
    let error = AuditLog::open(&path, options(), TestKeys::new()).unwrap_err();
    assert!(matches!(error, AuditError::Locked { .. }), "{error:?}");
    assert!(error.to_string().contains("locked by another process"));
}

#[tokio::test]
async fn a_stuck_sink_fails_within_the_deadline() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("audit.fifo");
    mkfifo(&fifo);
    // Opening a FIFO read-write does not block on Linux; this end never reads.
    let reader = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let deadline = Duration::from_millis(200);
    let options = AuditOptions {
        write_deadline: deadline,
        ..options()
    };
    let log = AuditLog::open(&fifo, options, TestKeys::new()).unwrap();

    let mut refused = None;
    for i in 0..100_000 {
        let started = Instant::now();
        let outcome = log.append(event(i)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "append {i} hung"
        );
        if let Err(error) = outcome {
            refused = Some(error);
            break;
        }
    }
    let error = refused.expect("the pipe fills up");
    assert!(
        matches!(error, AuditError::Unavailable { reason } if reason.contains("deadline")),
        "{error:?}"
    );

    // Still stuck: later appends and checkpoints fail as fast, and health says so.
    let started = Instant::now();
    assert!(log.append(event(0)).await.is_err());
    assert!(log.checkpoint().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
    tokio::time::sleep(deadline * 2).await;
    assert!(!log.is_healthy());

    let started = Instant::now();
    drop(log);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop waited too long"
    );
    drop(reader); // the blocked write now fails and the writer exits
}

#[tokio::test]
async fn a_broken_sink_fails_closed_for_good() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("audit.fifo");
    mkfifo(&fifo);
    let reader = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let log = AuditLog::open(&fifo, options(), TestKeys::new()).unwrap();
    assert!(log.is_healthy());
    drop(reader); // no reader left: the next write gets EPIPE

    let error = log.append(event(1)).await.unwrap_err();
    match &error {
        AuditError::Unavailable { reason } => {
            assert!(reason.contains("reader has gone away"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!log.is_healthy());
    assert!(log.append(event(2)).await.is_err());
    assert!(log.checkpoint().await.is_err());
    assert_eq!(log.appended(), 0);
}

#[tokio::test]
async fn a_fifo_starts_a_segment_per_open() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("audit.fifo");
    mkfifo(&fifo);
    let keys = TestKeys::new();
    let mut reader = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    for _ in 0..2 {
        let log = AuditLog::open(&fifo, options(), keys.clone()).unwrap();
        log.append(event(1)).await.unwrap();
        drop(log);
    }
    // Read back what the two opens wrote: 2 × (start, event, shutdown checkpoint).
    let mut captured = Vec::new();
    let mut buf = [0u8; 4096];
    while captured.iter().filter(|&&b| b == b'\n').count() < 6 {
        let n = std::io::Read::read(&mut reader, &mut buf).unwrap();
        captured.extend_from_slice(&buf[..n]);
    }
    let report = verify(&captured[..], Some(&keys.public()));
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        (report.segments, report.records, report.unsigned_tail),
        (2, 6, 0)
    );
}
