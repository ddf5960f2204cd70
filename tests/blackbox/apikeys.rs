//! Platform API keys over real mutual TLS: issue, verify, rotate with a grace window
//! (on a clock the test moves), revoke, test/live separation, what an identity
//! without `apikeys.verify` learns, rate limits per identity, daily quotas across a
//! restart, and that neither the store nor the audit log holds a key.

use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;
use vault_crypto::clock::ManualClock;
use vault_crypto::session::SessionAad;
use vault_proto::reason;
use vault_proto::v1::{self, broker_client::BrokerClient};
use vault_testkit::grpc::ClientSession;

use crate::harness::{
    GATEWAY, OUTSIDER, Options, TestVault, env_proto, expect_code, key_request, watch,
};

/// A verifier: a broker client and its session.
struct Verifier {
    broker: BrokerClient<Channel>,
    session: ClientSession,
}

impl Verifier {
    async fn of(vault: &mut TestVault, identity: &str) -> Self {
        let (broker, session) = vault.session(identity).await;
        Self { broker, session }
    }

    async fn verify_as(
        &mut self,
        key: &str,
        env: &str,
        scope: &str,
        cost: u32,
    ) -> Result<v1::VerifyApiKeyResponse, tonic::Status> {
        let envelope = self
            .session
            .key
            .seal(&SessionAad::api_key_to_verify(env), key.as_bytes())
            .unwrap();
        self.broker
            .verify_api_key(v1::VerifyApiKeyRequest {
                session_id: self.session.id.clone(),
                api_key: Some(v1::SealedPayload { envelope }),
                environment: env_proto(env),
                scope: scope.to_owned(),
                cost,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn verify(&mut self, key: &str) -> Result<v1::VerifyApiKeyResponse, tonic::Status> {
        self.verify_as(key, "live", "", 1).await
    }
}

/// The `vault-error` reason of a refusal.
fn reason_of(status: &tonic::Status) -> String {
    status
        .metadata()
        .get(reason::KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn refused(result: Result<v1::VerifyApiKeyResponse, tonic::Status>, code: Code, why: &str) {
    let status = expect_code(result, code);
    assert_eq!(reason_of(&status), why, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_verify_rotate_within_grace_then_revoke() {
    let clock = ManualClock::new();
    let (mut vault, _) = TestVault::unsealed_on(Options::default(), clock.clone()).await;
    let (key, info) = vault
        .issue_api_key(key_request("acme", "live", &["usage:read", "usage:write"]))
        .await;
    assert!(
        key.starts_with(&format!("vk_live_{}_", info.key_id)),
        "{key}"
    );
    assert_eq!(info.state, v1::ApiKeyState::Active as i32);
    assert!(
        !info.hint.contains(&key[20..]),
        "the hint holds nothing of the secret"
    );
    assert_eq!(info.tier, "standard");

    let mut gateway = Verifier::of(&mut vault, GATEWAY).await;
    let verified = gateway
        .verify_as(&key, "live", "usage:read", 1)
        .await
        .unwrap();
    assert_eq!(verified.tenant, "acme");
    assert_eq!(verified.key_id, info.key_id);
    assert_eq!(verified.scopes, ["usage:read", "usage:write"]);
    assert_eq!(verified.quota_remaining, None);
    refused(
        gateway.verify_as(&key, "live", "admin", 1).await,
        Code::PermissionDenied,
        reason::API_KEY_SCOPE,
    );

    // Rotation: both keys verify during the grace window.
    let (_, operator) = vault.session(crate::harness::OPERATOR).await;
    let rotated = vault
        .admin()
        .rotate_api_key(v1::RotateApiKeyRequest {
            session_id: operator.id.clone(),
            key_id: info.key_id.clone(),
            grace_seconds: Some(3600),
        })
        .await
        .unwrap()
        .into_inner();
    let successor_info = rotated.info.unwrap();
    let successor =
        crate::harness::open_api_key(&operator, &successor_info, &rotated.api_key.unwrap());
    assert_ne!(successor, key);
    gateway.verify(&key).await.unwrap();
    gateway.verify(&successor).await.unwrap();
    let listed = list(&mut vault, "acme").await;
    let old = listed.iter().find(|k| k.key_id == info.key_id).unwrap();
    assert_eq!(old.state, v1::ApiKeyState::Rotated as i32);
    assert_eq!(old.successor, successor_info.key_id);

    // Past the window the old key is refused, the successor is not.
    clock.advance(Duration::from_secs(3600));
    // (Sessions age by the same clock: the gateway opens a new one.)
    let mut gateway = Verifier::of(&mut vault, GATEWAY).await;
    refused(
        gateway.verify(&key).await,
        Code::Unauthenticated,
        reason::API_KEY_EXPIRED,
    );
    gateway.verify(&successor).await.unwrap();

    // Revocation is immediate, and pushed to verifiers' revocation watches.
    let mut watch = watch(&mut gateway.broker).await;
    let revoked = vault
        .admin()
        .revoke_api_key(v1::RevokeApiKeyRequest {
            key_id: successor_info.key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state, v1::ApiKeyState::Revoked as i32);
    refused(
        gateway.verify(&successor).await,
        Code::Unauthenticated,
        reason::API_KEY_REVOKED,
    );
    let notice = tokio::time::timeout(
        Duration::from_secs(1),
        tokio_stream::StreamExt::next(&mut watch),
    )
    .await
    .expect("a notice within a second")
    .unwrap()
    .unwrap();
    assert_eq!(notice.api_key_id, successor_info.key_id);
    assert_eq!(notice.reason, v1::RevocationReason::ApiKeyRevoked as i32);

    // Every verification was audited, and the refusal after the grace window too.
    let lines = vault.audit_lines();
    let verifies: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(r#""operation":"broker.verify_api_key""#))
        .collect();
    assert!(verifies.len() >= 7, "{verifies:#?}");
    assert!(verifies.iter().any(|l| l.contains("expired")));
}

async fn list(vault: &mut TestVault, tenant: &str) -> Vec<v1::ApiKeyInfo> {
    vault
        .admin()
        .list_api_keys(v1::ListApiKeysRequest {
            tenant: tenant.to_owned(),
            environment: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_test_keys_never_cross_and_typos_need_no_lookup() {
    let (mut vault, _) = TestVault::unsealed().await;
    let (live, _) = vault.issue_api_key(key_request("acme", "live", &[])).await;
    let (test, _) = vault.issue_api_key(key_request("acme", "test", &[])).await;
    let mut gateway = Verifier::of(&mut vault, GATEWAY).await;
    gateway.verify_as(&live, "live", "", 1).await.unwrap();
    gateway.verify_as(&test, "test", "", 1).await.unwrap();
    for (key, env) in [(&live, "test"), (&test, "live")] {
        refused(
            gateway.verify_as(key, env, "", 1).await,
            Code::PermissionDenied,
            reason::API_KEY_ENVIRONMENT,
        );
    }
    // Relabelled as the other environment, a key is no key at all (its checksum).
    let relabelled = live.replacen("vk_live_", "vk_test_", 1);
    refused(
        gateway.verify_as(&relabelled, "test", "", 1).await,
        Code::Unauthenticated,
        reason::API_KEY_INVALID,
    );

    // A typo fails on its checksum, before any lookup: even an identity that may not
    // verify keys gets that answer, where a well-formed key would be refused it.
    let mut typo = live.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == 'a' { 'b' } else { 'a' });
    let mut outsider = Verifier::of(&mut vault, OUTSIDER).await;
    refused(
        outsider.verify(&typo).await,
        Code::Unauthenticated,
        reason::API_KEY_INVALID,
    );
    let status = expect_code(outsider.verify(&live).await, Code::PermissionDenied);
    assert_eq!(reason_of(&status), "");
    let typo_record = vault
        .audit_lines()
        .into_iter()
        .find(|l| l.contains(OUTSIDER) && l.contains("verify_api_key") && l.contains("not valid"))
        .unwrap();
    assert!(
        typo_record.contains(r#""tenant":null"#),
        "no lookup named a tenant: {typo_record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_without_apikeys_verify_learns_nothing() {
    let (mut vault, _) = TestVault::unsealed().await;
    let (key, info) = vault.issue_api_key(key_request("acme", "live", &[])).await;
    // A well-formed key with an id that does not exist.
    let mut forged = String::new();
    vault_proto::apikey::compose(
        "live",
        "AAAAAAAAAAAA",
        "BBBBBBBBBBBBBBBBBBBBBBBB",
        &mut forged,
    );
    let mut outsider = Verifier::of(&mut vault, OUTSIDER).await;
    let existing = expect_code(outsider.verify(&key).await, Code::PermissionDenied);
    let missing = expect_code(outsider.verify(&forged).await, Code::PermissionDenied);
    assert_eq!(existing.message(), missing.message());
    assert_eq!(reason_of(&existing), reason_of(&missing));
    // The gateway, which may verify, is told the forged key is not valid.
    let mut gateway = Verifier::of(&mut vault, GATEWAY).await;
    refused(
        gateway.verify(&forged).await,
        Code::Unauthenticated,
        reason::API_KEY_INVALID,
    );
    gateway.verify(&key).await.unwrap();
    // And the outsider may not list, rotate or revoke either.
    let status = vault
        .admin_as(OUTSIDER)
        .revoke_api_key(v1::RevokeApiKeyRequest {
            key_id: info.key_id,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

const VERIFIERS: &str = r#"
[[grant]]
id = "metered-verifiers"
identities = ["spiffe://billing.example/svc/verifier-*"]
operations = ["apikeys.verify"]
tenants = ["*"]
environments = ["live", "test"]
rate = { burst = 20 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_identity_is_held_to_its_rate_while_another_is_served() {
    let (mut vault, _) = TestVault::unsealed_with(Options {
        policies: vec![("verifiers.toml".into(), VERIFIERS.into())],
        ..Options::default()
    })
    .await;
    let (key_a, _) = vault.issue_api_key(key_request("acme", "live", &[])).await;
    let (key_b, _) = vault
        .issue_api_key(key_request("globex", "live", &[]))
        .await;
    let mut flooder = Verifier::of(&mut vault, "spiffe://billing.example/svc/verifier-a").await;
    let mut quiet = Verifier::of(&mut vault, "spiffe://billing.example/svc/verifier-b").await;
    let (mut passed, mut limited) = (0, 0);
    for _ in 0..200 {
        match flooder.verify(&key_a).await {
            Ok(_) => passed += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason_of(&status), reason::RATE_LIMITED);
                let meta = status.metadata();
                assert_eq!(meta.get(reason::LIMIT_SCOPE).unwrap(), "identity");
                assert_eq!(meta.get(reason::LIMIT_WINDOW).unwrap(), "burst");
                let retry: u64 = meta
                    .get(reason::RETRY_AFTER)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=10).contains(&retry), "{retry}");
                limited += 1;
            }
        }
    }
    // 20 in the burst window, perhaps one more refilled while the loop ran.
    assert!((20..=22).contains(&passed), "{passed}");
    assert_eq!(passed + limited, 200);
    for _ in 0..20 {
        quiet.verify(&key_b).await.unwrap();
    }
    // The refusals are summarised, not recorded one by one.
    tokio::time::sleep(Duration::from_millis(1500)).await; // a housekeeping tick
    let lines = vault.audit_lines();
    let summaries: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("limits.refused"))
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    assert!(
        summaries[0].contains(&format!(r#""count":"{limited}""#)),
        "{}",
        summaries[0]
    );
    let single = lines
        .iter()
        .filter(|l| l.contains("verifier-a") && l.contains("verify_api_key"))
        .count();
    assert_eq!(
        single, passed,
        "only the verifications that passed have records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_refuses_after_its_units_survives_a_restart_and_resets_at_midnight() {
    let clock = ManualClock::new();
    let (mut vault, shares) = TestVault::unsealed_on(Options::default(), clock.clone()).await;
    let (key, _) = vault
        .issue_api_key(v1::IssueApiKeyRequest {
            daily_quota: 5,
            ..key_request("acme", "live", &[])
        })
        .await;
    let mut gateway = Verifier::of(&mut vault, GATEWAY).await;
    assert_eq!(
        gateway
            .verify_as(&key, "live", "", 2)
            .await
            .unwrap()
            .quota_remaining,
        Some(3)
    );
    for left in [2, 1, 0] {
        assert_eq!(
            gateway.verify(&key).await.unwrap().quota_remaining,
            Some(left)
        );
    }
    let status = expect_code(gateway.verify(&key).await, Code::ResourceExhausted);
    assert_eq!(reason_of(&status), reason::QUOTA_EXCEEDED);
    let retry: u64 = status
        .metadata()
        .get(reason::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");

    // A restart does not give the units back.
    vault.restart().await;
    vault.unseal(&shares[..2]).await;
    let mut gateway = Verifier::of(&mut vault, GATEWAY).await;
    let again = expect_code(gateway.verify(&key).await, Code::ResourceExhausted);
    assert_eq!(reason_of(&again), reason::QUOTA_EXCEEDED);
    let listed = list(&mut vault, "acme").await;
    assert_eq!(listed[0].used_today, 5);

    // Midnight UTC by the daemon's clock: a new day's units.
    clock.advance(Duration::from_secs(retry));
    let mut gateway = Verifier::of(&mut vault, GATEWAY).await;
    assert_eq!(gateway.verify(&key).await.unwrap().quota_remaining, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_the_store_nor_the_audit_log_holds_an_issued_key() {
    let (mut vault, _) = TestVault::unsealed().await;
    let mut keys = Vec::new();
    for env in ["live", "test"] {
        keys.push(
            vault
                .issue_api_key(key_request("acme", env, &["usage:read"]))
                .await
                .0,
        );
    }
    let mut gateway = Verifier::of(&mut vault, GATEWAY).await;
    for (key, env) in keys.iter().zip(["live", "test"]) {
        gateway.verify_as(key, env, "usage:read", 1).await.unwrap();
    }
    vault.stop().await;
    let store = std::fs::read(vault.path("vault.redb")).unwrap();
    let audit = std::fs::read(vault.path("audit.jsonl")).unwrap();
    for key in &keys {
        // The secret part: after the prefix and the id.
        let secret = &key.as_bytes()[20..];
        for (name, bytes) in [("store", &store), ("audit log", &audit)] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "the {name} holds an issued key's secret"
            );
        }
    }
    assert!(
        audit.windows(8).any(|w| w == &keys[0].as_bytes()[8..16]),
        "the key id is in the audit log (only the id)"
    );
}
