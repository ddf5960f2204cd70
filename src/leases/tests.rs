//! The lease table: limits, revocation, renewal and its memory sharing.

use super::*;
use vault_crypto::clock::ManualClock;

fn lid(n: u32) -> LeaseId {
    LeaseId::parse(&format!("l-{n:032x}")).unwrap()
}

fn lease(id: u32, who: &str, tenant: &str, ttl: u64) -> Lease {
    let now = SystemTime::now();
    Lease {
        id: lid(id),
        issued: now,
        identity: Identity::for_tests(who),
        secret: SecretId::parse(tenant, "live", "byok/openai").unwrap(),
        version: 1,
        expires: now + Duration::from_secs(ttl),
        renewable_until: now + Duration::from_secs(ttl * 2),
    }
}

#[test]
fn limits_per_identity_and_total() {
    let leases = Leases::new(3, vault_crypto::clock::system());
    leases.insert(lease(1, "a", "t", 60), 2, 0).unwrap();
    leases.insert(lease(2, "a", "t", 60), 2, 0).unwrap();
    assert_eq!(
        leases.insert(lease(3, "a", "t", 60), 2, 0),
        Err(LeaseLimit::Identity(2))
    );
    leases.insert(lease(3, "b", "t", 60), 5, 0).unwrap();
    assert_eq!(
        leases.insert(lease(4, "c", "t", 60), 5, 0),
        Err(LeaseLimit::Total(3))
    );
    assert!(leases.remove(&Identity::for_tests("a"), &lid(1)));
    leases.insert(lease(5, "a", "t", 60), 2, 0).unwrap();
}

#[test]
fn leases_share_their_identity_and_secret_until_the_last_one_goes() {
    let leases = Leases::new(100, vault_crypto::clock::system());
    for n in 0..10 {
        let tenant = if n % 2 == 0 { "t1" } else { "t2" };
        leases.insert(lease(n, "a", tenant, 60), 100, 0).unwrap();
    }
    {
        let index = leases.lock();
        assert_eq!(index.per_identity.len(), 1);
        assert_eq!(index.secrets.len(), 2);
        let shared = index
            .by_id
            .values()
            .filter(|e| e.secret.tenant.as_str() == "t1");
        assert!(shared.map(|e| Arc::strong_count(&e.secret)).all(|n| n == 6));
    }
    let original = lease(3, "a", "t2", 60);
    let back = leases.get(&Identity::for_tests("a"), &lid(3)).unwrap();
    assert_eq!((back.id, back.secret), (original.id, original.secret));
    assert_eq!(
        back.expires,
        leases.lock().by_id[&lid(3).bits()]
            .lease(lid(3).bits())
            .expires
    );
    assert!(leases.remove(&Identity::for_tests("a"), &lid(0)));
    assert_eq!(
        leases
            .revoke(&Selector::All, RevocationReason::Sealed)
            .len(),
        9
    );
    let index = leases.lock();
    assert!(index.per_identity.is_empty() && index.secrets.is_empty());
    assert!(index.by_expiry.is_empty());
}

#[test]
fn revocation_by_selector_notifies_watchers() {
    let leases = Leases::new(100, vault_crypto::clock::system());
    let mut watch = leases.subscribe();
    leases.insert(lease(1, "a", "t1", 60), 10, 0).unwrap();
    leases.insert(lease(2, "a", "t2", 60), 10, 0).unwrap();
    leases.insert(lease(3, "b", "t1", 60), 10, 0).unwrap();
    let gone = leases.revoke(
        &Selector::Tenant(TenantId::new("t1").unwrap()),
        RevocationReason::Revoked,
    );
    assert_eq!(gone.len(), 2);
    assert_eq!(leases.len(), 1);
    let first = watch.try_recv().unwrap();
    assert_eq!(first.reason, RevocationReason::Revoked);
    assert_eq!(
        leases
            .revoke(&Selector::All, RevocationReason::Sealed)
            .len(),
        1
    );
    assert_eq!(leases.len(), 0);
}

#[test]
fn a_revocation_during_issuance_refuses_the_lease_it_covers() {
    let leases = Leases::new(100, vault_crypto::clock::system());
    let seen = leases.generation();
    leases.revoke(
        &Selector::Tenant(TenantId::new("t1").unwrap()),
        RevocationReason::TenantErased,
    );
    assert_eq!(
        leases.insert(lease(1, "a", "t1", 60), 10, seen),
        Err(LeaseLimit::Revoked)
    );
    leases.insert(lease(2, "a", "t2", 60), 10, seen).unwrap();
    // A lease that started after the revocation is not affected by it.
    leases
        .insert(lease(3, "a", "t1", 60), 10, leases.generation())
        .unwrap();
    // Older than every remembered revocation: refused, to be safe.
    let ancient = leases.generation();
    for _ in 0..=REVOCATION_LOG {
        leases.revoke(&Selector::Id(lid(999)), RevocationReason::Revoked);
    }
    assert_eq!(
        leases.insert(lease(4, "a", "t2", 60), 10, ancient),
        Err(LeaseLimit::Revoked)
    );
    leases.revoke(&Selector::All, RevocationReason::Sealed);
    assert_eq!(
        leases.insert(lease(5, "b", "t3", 60), 10, leases.generation() - 1),
        Err(LeaseLimit::Revoked)
    );
}

#[test]
fn renew_is_capped_and_sweep_drops_expired() {
    let clock = ManualClock::new();
    let leases = Leases::new(100, clock.clone());
    let a = Identity::for_tests("a");
    let l = lease(1, "a", "t", 10);
    let cap = l.renewable_until;
    leases.insert(l, 10, 0).unwrap();
    let day = Duration::from_secs(86_400);
    assert_eq!(
        leases.renew(&a, &lid(1), Duration::from_secs(3600), day),
        Some(cap)
    );
    assert_eq!(
        leases.renew(
            &Identity::for_tests("b"),
            &lid(1),
            Duration::from_secs(1),
            day
        ),
        None
    );
    // Leases are made at the system time, a moment after the clock's start.
    leases.insert(lease(2, "a", "t", 10), 10, 0).unwrap();
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        leases.sweep(),
        1,
        "lease 2 has ended; lease 1 was renewed to 20 s"
    );
    assert!(leases.get(&a, &lid(2)).is_none());
    assert!(leases.get(&a, &lid(1)).is_some());
    clock.advance(Duration::from_secs(10));
    assert!(
        leases.get(&a, &lid(1)).is_none(),
        "an expired lease is not live"
    );
    assert!(!leases.is_live(&a, &lid(1)));
    assert_eq!(leases.sweep(), 1);
}

#[test]
fn renew_is_capped_by_the_grants_current_max_ttl() {
    let leases = Leases::new(100, vault_crypto::clock::system());
    let a = Identity::for_tests("a");
    let mut l = lease(1, "a", "t", 10);
    l.renewable_until = l.issued + Duration::from_secs(3600);
    let issued = l.issued;
    leases.insert(l, 10, 0).unwrap();
    // The policy now allows only 20 s from issue: renewal cannot reach past it.
    let capped = leases
        .renew(
            &a,
            &lid(1),
            Duration::from_secs(600),
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(capped, issued + Duration::from_secs(20));
    // Loosening it again does not bring back what tightening took.
    let again = leases
        .renew(
            &a,
            &lid(1),
            Duration::from_secs(600),
            Duration::from_secs(3600),
        )
        .unwrap();
    assert_eq!(again, capped);
    // Never earlier than it was.
    let l2 = lease(2, "a", "t", 60);
    let expires = l2.expires;
    leases.insert(l2, 10, 0).unwrap();
    let kept = leases
        .renew(&a, &lid(2), Duration::from_secs(1), Duration::from_secs(1))
        .unwrap();
    assert_eq!(kept, expires);
}

#[test]
fn a_repeated_id_replaces_its_lease_and_keeps_the_counts_true() {
    let leases = Leases::new(100, vault_crypto::clock::system());
    leases.insert(lease(1, "a", "t1", 60), 100, 0).unwrap();
    leases.insert(lease(1, "a", "t2", 30), 100, 0).unwrap();
    {
        let index = leases.lock();
        assert_eq!(index.by_id.len(), 1);
        assert_eq!(index.by_expiry.len(), 1);
        assert_eq!(index.per_identity.values().map(Cell::get).sum::<u32>(), 1);
        assert_eq!(index.secrets.len(), 1);
    }
    let a = Identity::for_tests("a");
    assert_eq!(
        leases.get(&a, &lid(1)).unwrap().secret.tenant.as_str(),
        "t2"
    );
    assert!(leases.remove(&a, &lid(1)));
    let index = leases.lock();
    assert!(index.by_expiry.is_empty() && index.per_identity.is_empty());
    assert!(index.secrets.is_empty());
}

#[test]
fn a_holders_revocation_ends_only_a_lease_that_identity_holds() {
    let leases = Leases::new(10, vault_crypto::clock::system());
    leases.insert(lease(1, "a", "t", 60), 5, 0).unwrap();
    leases.insert(lease(2, "b", "t", 60), 5, 0).unwrap();
    let held = |id, who| Selector::Held(lid(id), Identity::for_tests(who));
    // Another identity naming the lease, or the holder naming one it does not hold.
    assert!(
        leases
            .revoke(&held(1, "b"), RevocationReason::Revoked)
            .is_empty()
    );
    assert!(
        leases
            .revoke(&held(2, "a"), RevocationReason::Revoked)
            .is_empty()
    );
    assert!(
        leases
            .revoke(&held(9, "a"), RevocationReason::Revoked)
            .is_empty()
    );
    assert_eq!(leases.len(), 2);
    let gone = leases.revoke(&held(1, "a"), RevocationReason::Revoked);
    assert_eq!(
        gone.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        [lid(1)]
    );
    assert!(leases.get(&Identity::for_tests("b"), &lid(2)).is_some());
}
