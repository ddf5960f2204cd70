//! Platform API keys through the client, against the real daemon over mutual TLS:
//! issue, verify (and what the cache spares vaultd), typed refusals, revocation pushed
//! to the cache within a second, limits, and keys that never leave the client.

use std::time::{Duration, Instant};

use vault_client::clock::ManualClock;
use vault_client::proto::ApiKeyState;
use vault_client::{
    ApiKeyRate, ApiKeyRefusal, ApiKeySpec, ApiKeyText, Client, Environment, Error, ExposeSecret,
    VerifiedKey,
};
use vault_testkit::fixture::{FixtureOptions, OPERATOR, free_addr};

use crate::{GATEWAY, Vault, eventually, unsealed, wait_for_watch};

const SECRETS: &[(&str, &str, &[u8])] = &[("acme", "byok/openai", b"sk")];

/// Verifications vaultd has answered (each is audited before it is answered).
fn verifications(vault: &Vault) -> usize {
    vault
        .fixture
        .audit_lines()
        .iter()
        .filter(|l| l.contains(r#""operation":"broker.verify_api_key""#))
        .count()
}

fn spec(tenant: &str, environment: Environment, scopes: &[&str]) -> ApiKeySpec {
    let mut spec = ApiKeySpec::new(tenant, environment);
    spec.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
    spec
}

#[track_caller]
fn refused(result: Result<VerifiedKey, Error>, expected: ApiKeyRefusal) {
    match result {
        Err(Error::ApiKeyRefused { refusal, .. }) if refusal == expected => {}
        other => panic!("expected {expected:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_cached_refused_typed_and_evicted_within_a_second_of_a_revocation() {
    let (mut vault, _) = unsealed(&FixtureOptions::default(), SECRETS).await;
    let operator = vault.client(OPERATOR);
    let gateway = vault.client(GATEWAY);
    let (key, info) = operator
        .issue_api_key(&spec(
            "acme",
            Environment::Live,
            &["usage:read", "usage:write"],
        ))
        .await
        .unwrap();
    assert!(
        key.expose_secret()
            .starts_with(&format!("vk_live_{}_", info.key_id))
    );
    assert_eq!(
        format!("{key:?}"),
        format!("ApiKeyText(vk_live_{}_…)", info.key_id)
    );
    assert_eq!(info.state, ApiKeyState::Active as i32);
    wait_for_watch(&gateway).await;

    let expected = VerifiedKey {
        key_id: info.key_id.clone(),
        tenant: "acme".into(),
        environment: Environment::Live,
        scopes: vec!["usage:read".into(), "usage:write".into()],
        quota_remaining: None,
    };
    let verify = |env, scope| gateway.verify_api_key(&key, env, scope, 1);
    assert_eq!(
        verify(Environment::Live, Some("usage:read")).await.unwrap(),
        expected
    );
    assert_eq!(verifications(&vault), 1);
    assert_eq!(gateway.cached_api_keys(), 1);
    // Hits: vaultd is not asked again, and scope and environment are still judged.
    for _ in 0..20 {
        assert_eq!(verify(Environment::Live, None).await.unwrap(), expected);
    }
    refused(
        verify(Environment::Live, Some("admin")).await,
        ApiKeyRefusal::Scope,
    );
    refused(
        verify(Environment::Test, None).await,
        ApiKeyRefusal::Environment,
    );
    assert_eq!(verifications(&vault), 1, "the cache answered all of these");
    // A verification that costs more than one unit always reaches vaultd.
    gateway
        .verify_api_key(&key, Environment::Live, None, 2)
        .await
        .unwrap();
    assert_eq!(verifications(&vault), 2);

    // vaultd's own refusals are typed the same way.
    let (test_key, _) = operator
        .issue_api_key(&spec("acme", Environment::Test, &[]))
        .await
        .unwrap();
    refused(
        gateway
            .verify_api_key(&test_key, Environment::Live, None, 1)
            .await,
        ApiKeyRefusal::Environment,
    );
    refused(
        gateway
            .verify_api_key(&key, Environment::Live, Some("admin"), 2)
            .await,
        ApiKeyRefusal::Scope,
    );
    let (short, short_info) = operator
        .issue_api_key(&spec("acme", Environment::Live, &[]))
        .await
        .unwrap();
    let (successor, _) = operator
        .rotate_api_key(&short_info.key_id, Some(Duration::ZERO))
        .await
        .unwrap();
    refused(
        gateway
            .verify_api_key(&short, Environment::Live, None, 1)
            .await,
        ApiKeyRefusal::Expired,
    );
    gateway
        .verify_api_key(&successor, Environment::Live, None, 1)
        .await
        .unwrap();

    // An admin revokes: the watch evicts within a second, and vaultd refuses.
    assert_eq!(
        verify(Environment::Live, None).await.unwrap(),
        expected,
        "still cached"
    );
    let before = verifications(&vault);
    let revoked_at = Instant::now();
    let revoked = operator.revoke_api_key(&info.key_id).await.unwrap();
    assert_eq!(revoked.state, ApiKeyState::Revoked as i32);
    assert!(
        eventually(Duration::from_secs(1), || {
            gateway.cached_api_keys() == 1 // the successor's stays
        })
        .await,
        "the revoked key's verification is still cached"
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    refused(
        verify(Environment::Live, None).await,
        ApiKeyRefusal::Revoked,
    );
    assert_eq!(verifications(&vault), before + 1, "asked vaultd again");

    let listed = operator
        .list_api_keys("acme", Some(Environment::Live))
        .await
        .unwrap();
    let state = |id: &str| listed.iter().find(|k| k.key_id == id).unwrap().state;
    assert_eq!(state(&info.key_id), ApiKeyState::Revoked as i32);
    // Rotated with no grace: past its window at once.
    assert_eq!(state(&short_info.key_id), ApiKeyState::Expired as i32);
    assert_eq!(listed.len(), 3, "the test key is not listed under live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_key_never_reaches_vaultd() {
    // Nothing listens on this endpoint: an answer can only come from the client.
    let (mut vault, _) = unsealed(&FixtureOptions::default(), SECRETS).await;
    let files = vault.fixture.client_files(GATEWAY);
    let nowhere = Client::builder()
        .endpoint(format!("https://localhost:{}", free_addr().port()))
        .ca_cert(files.ca)
        .client_cert(files.cert, files.key)
        .max_attempts(1)
        .build()
        .unwrap();
    let (key, _) = vault
        .client(OPERATOR)
        .issue_api_key(&spec("acme", Environment::Live, &[]))
        .await
        .unwrap();
    let mut typo = key.expose_secret().to_owned();
    let last = typo.pop().unwrap();
    typo.push(if last == 'a' { 'b' } else { 'a' });
    let gateway = vault.client(GATEWAY);
    for text in [
        typo,
        String::new(),
        "sk_live_abc".into(),
        key.expose_secret().replacen("vk_live_", "vk_test_", 1),
        format!("{} ", key.expose_secret()),
    ] {
        let malformed = ApiKeyText::from(text);
        for client in [&nowhere, &gateway] {
            let error = client
                .verify_api_key(&malformed, Environment::Live, None, 1)
                .await
                .unwrap_err();
            let Error::ApiKeyRefused {
                refusal: ApiKeyRefusal::Invalid,
                message,
            } = &error
            else {
                panic!("{error:?}");
            };
            assert!(
                message.starts_with("the API key is not valid: "),
                "{message}"
            );
        }
    }
    assert_eq!(verifications(&vault), 0);
    // The well-formed key does try to reach vaultd.
    let error = nowhere
        .verify_api_key(&key, Environment::Live, None, 1)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
}

const METERED: &str = r#"
[[grant]]
id = "metered-verifier"
identities = ["spiffe://billing.example/svc/verifier-a"]
operations = ["apikeys.verify"]
tenants = ["*"]
environments = ["live", "test"]
rate = { burst = 5 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_quotas_are_typed_with_how_long_to_wait() {
    let options = FixtureOptions {
        policies: vec![("metered.toml".into(), METERED.into())],
        ..FixtureOptions::default()
    };
    let (mut vault, _) = unsealed(&options, SECRETS).await;
    let operator = vault.client(OPERATOR);
    let (key, _) = operator
        .issue_api_key(&spec("acme", Environment::Live, &[]))
        .await
        .unwrap();
    // Without its cache every call reaches vaultd, where the grant's rate counts it.
    let metered = vault.client_with("spiffe://billing.example/svc/verifier-a", |b| {
        b.api_key_cache(0)
    });
    let mut passed = 0;
    let limited = loop {
        match metered
            .verify_api_key(&key, Environment::Live, None, 1)
            .await
        {
            Ok(_) => passed += 1,
            Err(error) => break error,
        }
        assert!(passed <= 6, "never limited");
    };
    assert!((5..=6).contains(&passed), "{passed}");
    let Error::Limited {
        scope,
        window,
        retry_after,
        ..
    } = &limited
    else {
        panic!("{limited:?}");
    };
    assert_eq!((scope.as_str(), window.as_str()), ("identity", "burst"));
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(10)).contains(retry_after),
        "{retry_after:?}"
    );
    assert_eq!(metered.cached_api_keys(), 0);

    // A key with a daily quota: each verification is charged by vaultd, so none is
    // answered from the cache, until the quota is spent.
    let gateway = vault.client(GATEWAY);
    wait_for_watch(&gateway).await;
    let mut quota = spec("acme", Environment::Live, &[]);
    quota.daily_quota = 2;
    quota.rate = ApiKeyRate::Limits {
        burst: 100,
        per_minute: 0,
        per_day: 0,
    };
    let (key, info) = operator.issue_api_key(&quota).await.unwrap();
    assert_eq!(info.daily_quota, 2);
    assert_eq!(info.limits.unwrap().burst, 100);
    for left in [1, 0] {
        let verified = gateway
            .verify_api_key(&key, Environment::Live, None, 1)
            .await
            .unwrap();
        assert_eq!(verified.quota_remaining, Some(left));
    }
    assert_eq!(gateway.cached_api_keys(), 0);
    let spent = gateway
        .verify_api_key(&key, Environment::Live, None, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&spent, Error::Limited { scope, window, retry_after, .. }
            if scope == "api_key" && window == "quota" && *retry_after >= Duration::from_secs(1)),
        "{spent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_verification_ends_when_vaultd_said_on_the_clients_clock() {
    let (mut vault, _) = unsealed(&FixtureOptions::default(), SECRETS).await;
    let (key, _) = vault
        .client(OPERATOR)
        .issue_api_key(&spec("acme", Environment::Live, &[]))
        .await
        .unwrap();
    let clock = ManualClock::new();
    let gateway = vault.client_with(GATEWAY, |b| b.clock(clock.clone()));
    wait_for_watch(&gateway).await;
    for _ in 0..3 {
        gateway
            .verify_api_key(&key, Environment::Live, None, 1)
            .await
            .unwrap();
    }
    assert_eq!(verifications(&vault), 1);
    // vaultd's default `[apikeys] cache` is 5 s.
    clock.advance(Duration::from_millis(4_900));
    gateway
        .verify_api_key(&key, Environment::Live, None, 1)
        .await
        .unwrap();
    assert_eq!(verifications(&vault), 1);
    clock.advance(Duration::from_millis(200));
    gateway
        .verify_api_key(&key, Environment::Live, None, 1)
        .await
        .unwrap();
    assert_eq!(verifications(&vault), 2, "served past cache_until");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_watch_clears_every_cached_verification() {
    let options = FixtureOptions {
        grpc: Some(free_addr()),
        ..FixtureOptions::default()
    };
    let (mut vault, share) = unsealed(&options, SECRETS).await;
    let operator = vault.client(OPERATOR);
    let (key, _) = operator
        .issue_api_key(&spec("acme", Environment::Live, &[]))
        .await
        .unwrap();
    let gateway = vault.client(GATEWAY);
    wait_for_watch(&gateway).await;
    gateway
        .verify_api_key(&key, Environment::Live, None, 1)
        .await
        .unwrap();
    assert_eq!(gateway.cached_api_keys(), 1);
    // The stream ends with the daemon: whatever was revoked meanwhile, nothing stays.
    vault.restart();
    assert!(eventually(Duration::from_secs(2), || gateway.cached_api_keys() == 0).await);
    operator.unseal(&share, None).await.unwrap();
    let verified = gateway
        .verify_api_key(&key, Environment::Live, None, 1)
        .await
        .unwrap();
    assert_eq!(verified.tenant, "acme");
}
