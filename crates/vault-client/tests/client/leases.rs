//! The lease cache: hits, coalescing, revocation, expiry, renewal; and transit.

use std::time::{Duration, Instant};

use vault_client::clock::{Clock, ManualClock};
use vault_client::proto::revoke_leases_request::Selector;
use vault_client::{Environment, Error, ExposeSecret, Lease};
use vault_testkit::fixture::{FixtureOptions, OPERATOR};

use crate::{ACME_WORKER, GATEWAY, eventually, unsealed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_cached_coalesced_and_evicted_on_revocation() {
    let (mut vault, _) = unsealed(
        &FixtureOptions::default(),
        &[
            ("acme", "byok/openai", b"sk-acme"),
            ("acme", "byok/anthropic", b"sk-ant"),
        ],
    )
    .await;
    let gateway = vault.client(GATEWAY);
    let operator = vault.client(OPERATOR);

    crate::wait_for_watch(&gateway).await;
    let first = gateway
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    let second = gateway
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    assert_eq!(
        first.lease_id(),
        second.lease_id(),
        "the second lease is a cache hit"
    );
    assert_eq!(first.expose_secret(), b"sk-acme");

    // 32 concurrent first requests for another secret make one RPC.
    let before = operator
        .list_leases(Some("acme"), None)
        .await
        .unwrap()
        .len();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                gateway
                    .lease("acme", Environment::Live, "byok/anthropic")
                    .await
                    .unwrap()
                    .lease_id()
                    .to_owned()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let after = operator
        .list_leases(Some("acme"), None)
        .await
        .unwrap()
        .len();
    assert_eq!(after, before + 1);

    // An admin revokes: the watch evicts within a second, and the next use leases anew.
    let revoked_at = Instant::now();
    operator
        .revoke_leases(Selector::LeaseId(first.lease_id().to_owned()))
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(1), || first.is_revoked()).await);
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    let third = gateway
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    assert_ne!(third.lease_id(), first.lease_id());

    // Clearing the cache drops every entry.
    assert!(gateway.clear_cache() >= 2);
    assert_eq!(gateway.cached(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_and_never_retried() {
    let (mut vault, _) = unsealed(
        &FixtureOptions::default(),
        &[("acme", "byok/openai", b"sk")],
    )
    .await;
    let worker = vault.client(ACME_WORKER);
    let started = Instant::now();
    let denied = worker
        .lease("globex", Environment::Live, "byok/openai")
        .await
        .unwrap_err();
    assert!(
        matches!(denied, Error::PermissionDenied { .. }),
        "{denied:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a refusal was retried"
    );
    let denials = vault
        .fixture
        .audit_lines()
        .iter()
        .filter(|l| l.contains(ACME_WORKER) && l.contains("\"deny\""))
        .count();
    assert_eq!(denials, 1, "exactly one request reached vaultd");

    let missing = worker
        .lease("acme", Environment::Live, "byok/nothing")
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");
    let invalid = worker
        .lease("ACME", Environment::Live, "byok/x")
        .await
        .unwrap_err();
    assert!(
        matches!(invalid, Error::InvalidArgument { .. }),
        "{invalid:?}"
    );
}

/// How far to move `clock` to stand just short of `lease`'s end: past the margin in
/// which the cache no longer serves it (at least 1 s), before the end itself.
fn near_end(lease: &Lease, clock: &ManualClock) -> Duration {
    let left = lease
        .expires_at()
        .duration_since(clock.now())
        .expect("the lease ends after the clock's present");
    left - Duration::from_millis(500)
}

/// Cache expiry and renew-before-expiry are the client's own reckoning, so the test
/// moves the client's clock instead of sleeping. vaultd keeps real time: the renewal's
/// round trip is waited for, within a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_leases_expire_from_the_cache_or_are_renewed() {
    let (mut vault, _) = unsealed(
        &FixtureOptions::default(),
        &[("acme", "byok/openai", b"sk")],
    )
    .await;
    let clock = ManualClock::new();
    let plain = vault.client_with(GATEWAY, |b| {
        b.lease_ttl(Duration::from_secs(2)).clock(clock.clone())
    });
    crate::wait_for_watch(&plain).await;
    let a = plain
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    let b = plain
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    assert_eq!(a.lease_id(), b.lease_id());
    clock.advance(near_end(&a, &clock)); // past 2 s - 1 s margin
    let c = plain
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    assert_ne!(
        a.lease_id(),
        c.lease_id(),
        "a value near its end is not served"
    );

    let clock = ManualClock::new();
    let renewing = vault.client_with(GATEWAY, |b| {
        b.lease_ttl(Duration::from_secs(3))
            .auto_renew(true)
            .clock(clock.clone())
    });
    crate::wait_for_watch(&renewing).await;
    let first = renewing
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    let end = first.expires_at();
    clock.advance(near_end(&first, &clock));
    // The renewal runs on the client's background tick (each second) and asks vaultd.
    assert!(
        eventually(Duration::from_secs(5), || first.expires_at() > end).await,
        "the lease was not renewed"
    );
    let later = renewing
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    assert_eq!(
        first.lease_id(),
        later.lease_id(),
        "renewed, not leased again"
    );
    assert!(later.expires_at() > end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_round_trips() {
    let (mut vault, _) = unsealed(&FixtureOptions::default(), &[]).await;
    let worker = vault.client(ACME_WORKER);
    let envelope = worker
        .encrypt("acme", Environment::Live, b"4242 4242")
        .await
        .unwrap();
    let plain = worker
        .decrypt("acme", Environment::Live, &envelope)
        .await
        .unwrap();
    assert_eq!(plain.expose_secret(), b"4242 4242");
    assert!(!format!("{plain:?}").contains("4242"));
    let wrong_env = worker
        .decrypt("acme", Environment::Test, &envelope)
        .await
        .unwrap_err();
    assert!(
        matches!(wrong_env, Error::InvalidArgument { .. }),
        "{wrong_env:?}"
    );

    let items: Vec<&[u8]> = vec![b"a", b"bb", b"ccc"];
    let envelopes: Vec<Vec<u8>> = worker
        .encrypt_batch("acme", Environment::Live, &items)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut refs: Vec<&[u8]> = envelopes.iter().map(Vec::as_slice).collect();
    refs.push(b"not an envelope");
    let plains = worker
        .decrypt_batch("acme", Environment::Live, &refs)
        .await
        .unwrap();
    for (i, expected) in items.iter().enumerate() {
        assert_eq!(plains[i].as_ref().unwrap().expose_secret(), *expected);
    }
    assert!(plains[3].is_err());
}
