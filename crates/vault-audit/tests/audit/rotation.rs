//! Reopening the log: rotation by rename, the chain continuing across files, and
//! what a reopen refuses.

use std::os::unix::fs::PermissionsExt;

use vault_audit::{AuditError, AuditLog, Reopened, verify, verify_all};

use crate::{TestKeys, event, options};

#[tokio::test]
async fn a_renamed_log_continues_in_a_new_file_that_verifies_with_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let keys = TestKeys::new();
    let log = AuditLog::open(&path, options(), keys.clone()).unwrap();
    for i in 0..6 {
        log.append(event(i)).await.unwrap();
    }
    // Nothing moved: nothing to do.
    assert_eq!(log.reopen().await.unwrap(), Reopened::Unchanged);

    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    let Reopened::Continued { seq } = log.reopen().await.unwrap() else {
        panic!("the renamed log was not replaced");
    };
    for i in 6..9 {
        log.append(event(i)).await.unwrap();
    }
    assert!(log.checkpoint().await.unwrap());
    drop(log);

    let (old, new) = (
        std::fs::read(&rotated).unwrap(),
        std::fs::read(&path).unwrap(),
    );
    let key = keys.public();
    let both = verify_all([old.as_slice(), new.as_slice()], Some(&key));
    assert!(both.is_ok(), "{both:?}");
    assert_eq!(both.continuations.len(), 1);
    assert_eq!(
        (both.continuations[0].input, both.continuations[0].seq),
        (1, seq)
    );
    // The old file was closed with a signed checkpoint: nothing of it is unsigned.
    let old_alone = verify(old.as_slice(), Some(&key));
    assert!(
        old_alone.is_ok() && old_alone.unsigned_tail == 0,
        "{old_alone:?}"
    );
    assert!(verify(new.as_slice(), Some(&key)).is_ok());
    // The new file first: the report says the chain was checked from mid-chain.
    let reversed = verify_all([new.as_slice(), old.as_slice()], Some(&key));
    assert!(reversed.begins_mid_chain, "{reversed:?}");
    assert!(!both.begins_mid_chain);
    // With the old file missing its end, the chain breaks.
    let cut = &old[..old.len()
        - 1
        - old[..old.len() - 1]
            .iter()
            .rev()
            .position(|&b| b == b'\n')
            .unwrap()];
    assert!(!verify_all([cut, new.as_slice()], Some(&key)).is_ok());
}

#[tokio::test]
async fn a_reopen_refuses_another_file_and_makes_a_loose_new_one_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, options(), TestKeys::new()).unwrap();
    log.append(event(0)).await.unwrap();

    // Someone else's non-empty file at the path: refused, the log in use stays.
    std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
    std::fs::write(&path, b"not ours\n").unwrap();
    let refused = log.reopen().await.unwrap_err();
    assert!(matches!(refused, AuditError::Reopen { .. }), "{refused}");
    log.append(event(1)).await.unwrap();

    // An empty file made with loose permissions (logrotate's `create 0644`): taken,
    // and made private before a record goes in.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        log.reopen().await.unwrap(),
        Reopened::Continued { .. }
    ));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
