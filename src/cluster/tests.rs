use std::sync::Mutex;

use super::*;

fn secret() -> SecretId {
    SecretId::parse("acme", "live", "byok/openai").unwrap()
}

fn every_kind() -> Vec<Notice> {
    let mut notices: Vec<Notice> = [
        Selector::Id(LeaseId::generate().unwrap()),
        Selector::Held(
            LeaseId::generate().unwrap(),
            Identity::parse_remote("spiffe://billing.example/svc/gw").unwrap(),
        ),
        Selector::Tenant(TenantId::new("acme").unwrap()),
        Selector::Secret(secret()),
        Selector::Version(secret(), 7),
        Selector::Identity(Identity::parse_remote("spiffe://billing.example/svc/gw").unwrap()),
        Selector::All,
    ]
    .into_iter()
    .zip([
        RevocationReason::Revoked,
        RevocationReason::Revoked,
        RevocationReason::TenantErased,
        RevocationReason::VersionDisabled,
        RevocationReason::VersionDisabled,
        RevocationReason::Revoked,
        RevocationReason::Sealed,
    ])
    .map(|(selector, reason)| Notice::RevokeLeases(selector, reason))
    .collect();
    notices.push(Notice::TenantKeys(TenantId::new("acme").unwrap()));
    notices.push(Notice::ApiKeyRevoked("k1b2c3d4e5f6".into()));
    notices.push(Notice::BreakGlass);
    notices.push(Notice::Seal);
    notices.push(Notice::RootRotated);
    notices
}

#[test]
fn every_notice_reads_back_as_written() {
    for notice in every_kind() {
        let bytes = notice.encode();
        assert_eq!(Notice::decode(&bytes), Some(notice), "{bytes:?}");
    }
}

#[test]
fn a_notice_with_a_bad_name_or_of_an_unknown_kind_is_not_read() {
    for bytes in [
        r#"{"tenant_keys":{"tenant":"../etc"}}"#,
        r#"{"tenant_keys":{"tenant":"acme","extra":1}}"#,
        r#"{"api_key_revoked":{"id":"not an id"}}"#,
        r#"{"revoke_leases":{"selector":{"lease_id":"lease-xyz"},"reason":"revoked"}}"#,
        r#"{"revoke_leases":{"selector":{"identity":"mallory"},"reason":"revoked"}}"#,
        r#"{"revoke_leases":{"selector":{"held":["lease-xyz","spiffe://a/b"]},"reason":"revoked"}}"#,
        r#"{"revoke_leases":{"selector":"all","reason":"forgotten"}}"#,
        r#"{"seal_cluster":{}}"#,
        "",
        "\u{0}\u{1}",
    ] {
        assert_eq!(Notice::decode(bytes.as_bytes()), None, "{bytes}");
    }
    let long = format!(
        r#"{{"tenant_keys":{{"tenant":"acme"}}}}{}"#,
        " ".repeat(MAX_NOTICE)
    );
    assert_eq!(Notice::decode(long.as_bytes()), None);
}

#[test]
fn a_node_alone_is_always_in_step() {
    assert!(InStep::alone().check().is_ok());
    assert_eq!(InStep::alone().behind(), None);
}

#[test]
fn a_sharing_node_is_in_step_only_within_the_bound_of_its_last_full_read() {
    let bound = Duration::from_millis(200);
    let in_step = InStep::shared(bound);
    // Out of step until it first reads the log.
    assert!(matches!(in_step.check(), Err(Error::OutOfStep { bound: b }) if b == bound));
    in_step.caught_up(Instant::now());
    assert!(in_step.check().is_ok());
    assert!(in_step.behind().unwrap() < bound);
    std::thread::sleep(bound + Duration::from_millis(50));
    assert!(in_step.check().is_err());
    assert!(in_step.behind().unwrap() > bound);
    // A read that began before the last one does not move it back.
    let earlier = Instant::now();
    in_step.caught_up(Instant::now());
    in_step.caught_up(earlier - Duration::from_secs(5));
    assert!(in_step.check().is_ok());
}

#[derive(Default)]
struct Recorded {
    applied: Mutex<Vec<Notice>>,
    resets: Mutex<Vec<String>>,
    /// Applying this notice fails (the store is unreachable, say).
    fails: Mutex<Option<Notice>>,
}

impl Apply for Recorded {
    fn apply(&self, notice: &Notice) -> Result<(), Error> {
        if self.fails.lock().unwrap().as_ref() == Some(notice) {
            return Err(Error::Sealed);
        }
        self.applied.lock().unwrap().push(notice.clone());
        Ok(())
    }

    fn reset(&self, why: &str) -> Result<(), Error> {
        self.resets.lock().unwrap().push(why.to_owned());
        Ok(())
    }
}

fn change(epoch: u64, own: bool, notice: &Notice) -> Change {
    Change {
        epoch,
        own,
        notice: notice.encode(),
    }
}

#[test]
fn others_notices_are_applied_in_order_and_own_ones_skipped() {
    let kinds = every_kind();
    let recorded = Recorded::default();
    let changes = vec![
        change(5, false, &kinds[0]),
        change(6, true, &kinds[1]),
        change(7, false, &kinds[6]),
    ];
    assert_eq!(take(4, changes, &recorded, &mut Vec::new()).unwrap(), 7);
    assert_eq!(
        *recorded.applied.lock().unwrap(),
        [kinds[0].clone(), kinds[6].clone()]
    );
    assert!(recorded.resets.lock().unwrap().is_empty());
}

#[test]
fn missed_or_unreadable_notices_reset_the_node() {
    let kinds = every_kind();
    let recorded = Recorded::default();
    let unreadable = Change {
        epoch: 12,
        own: false,
        notice: br#"{"from_the_future":{}}"#.to_vec(),
    };
    // 5 to 9 are gone from the log; 12 cannot be read.
    let changes = vec![
        change(10, false, &kinds[7]),
        change(11, true, &kinds[0]),
        unreadable,
    ];
    assert_eq!(take(4, changes, &recorded, &mut Vec::new()).unwrap(), 12);
    let resets = recorded.resets.lock().unwrap();
    assert_eq!(resets.len(), 2, "{resets:?}");
    assert!(resets[0].contains("5 to 9"), "{}", resets[0]);
    assert!(resets[1].contains("notice 12"), "{}", resets[1]);
    // What could be read is still applied.
    assert_eq!(*recorded.applied.lock().unwrap(), [kinds[7].clone()]);
}

#[test]
fn a_notice_that_cannot_be_applied_holds_the_node_before_it() {
    let kinds = every_kind();
    let recorded = Recorded::default();
    *recorded.fails.lock().unwrap() = Some(Notice::BreakGlass);
    let changes = || {
        vec![
            change(1, false, &kinds[0]),
            change(2, false, &Notice::BreakGlass),
            change(3, false, &kinds[6]),
        ]
    };
    let (seen, _) = take(0, changes(), &recorded, &mut Vec::new()).unwrap_err();
    assert_eq!(seen, 1);
    assert_eq!(*recorded.applied.lock().unwrap(), [kinds[0].clone()]);
    // Read again from there once applying works.
    *recorded.fails.lock().unwrap() = None;
    assert_eq!(
        take(seen, changes().split_off(1), &recorded, &mut Vec::new()).unwrap(),
        3
    );
    assert_eq!(recorded.applied.lock().unwrap().len(), 3);
}
