//! Anomaly detection in a running daemon on a clock the test moves: rate levels at
//! 3×, 5× and 10× of an identity's usual rate, a grant that throttles at 10×, first
//! access, and bursts of failed authentications raised once, each as an audit record
//! and an alert.

use std::time::{Duration, Instant};

use tonic::Code;
use vault_crypto::clock::ManualClock;
use vault_proto::v1;
use vault_testkit::Pki;
use vault_testkit::grpc::client_config;

use crate::harness::{GATEWAY, OUTSIDER, Options, TestVault, expect_code, lease_value};

/// Leases like the gateway, under a grant that throttles at the highest level.
const REPORTER: &str = "spiffe://billing.example/svc/reporter";

const THROTTLING: &str = r#"
[[grant]]
id = "reporter"
identities = ["spiffe://billing.example/svc/reporter"]
operations = ["lease"]
tenants = ["acme"]
environments = ["live"]
secrets = ["byok/*"]
max_active_leases = 10000
throttle_anomalies = true
"#;

/// The `system.anomaly` records of `kind` about `subject` in the log now.
fn records(vault: &TestVault, kind: &str, subject: &str) -> Vec<String> {
    vault
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("system.anomaly") && l.contains(&format!("\"reason\":\"{kind}\"")))
        .filter(|l| l.contains(&format!("\"subject\":\"{subject}\"")))
        .collect()
}

/// As [`records`], once `expected` of them are there (they are written by a task of
/// their own), or after 5 s; then a moment more, for any that should not be there.
async fn anomalies(vault: &TestVault, kind: &str, subject: &str, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while records(vault, kind, subject).len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    records(vault, kind, subject)
}

/// `n` leases of acme's key by `who`, each its answer.
async fn leases(vault: &mut TestVault, who: &str, n: usize) -> Vec<Result<(), tonic::Status>> {
    let (mut broker, session) = vault.session(who).await;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            lease_value(&mut broker, &session, "acme", "live", "byok/openai")
                .await
                .map(|_| ()),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_far_above_the_baseline_raise_each_level_once_and_can_throttle() {
    let clock = ManualClock::new();
    let options = Options {
        policies: vec![("reporter.toml".into(), THROTTLING.into())],
        ..Options::default()
    };
    let (mut vault, _) = TestVault::unsealed_on(options, clock.clone()).await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-acme")
        .await;

    // Twelve minutes at 10 leases a minute: the usual rate, nothing to report but
    // each identity's first access.
    for _ in 0..12 {
        for who in [GATEWAY, REPORTER] {
            assert!(leases(&mut vault, who, 10).await.iter().all(Result::is_ok));
        }
        clock.advance(Duration::from_secs(60));
    }
    assert_eq!(
        anomalies(&vault, "anomaly.first_access", GATEWAY, 1)
            .await
            .len(),
        1
    );
    assert!(
        anomalies(&vault, "anomaly.rate", GATEWAY, 0)
            .await
            .is_empty()
    );

    // Then 120 in one minute: 3× at the 30th, 5× at the 50th, 10× at the 100th.
    let answers = leases(&mut vault, GATEWAY, 120).await;
    assert!(
        answers.iter().all(Result::is_ok),
        "the gateway's grant does not throttle"
    );
    let raised = anomalies(&vault, "anomaly.rate", GATEWAY, 3).await;
    let levels: Vec<&str> = ["3x", "5x", "10x"]
        .into_iter()
        .filter(|level| {
            raised
                .iter()
                .any(|l| l.contains(&format!("\"level\":\"{level}\"")))
        })
        .collect();
    assert_eq!(levels, ["3x", "5x", "10x"], "{raised:#?}");
    assert_eq!(raised.len(), 3, "{raised:#?}");
    assert!(raised.iter().all(|l| l.contains("\"tenant\":\"acme\"")));

    // The reporter's grant throttles at 10×: the 100th lease of the minute is refused.
    let answers = leases(&mut vault, REPORTER, 101).await;
    assert!(answers[..99].iter().all(Result::is_ok));
    let refused = expect_code(answers[99].clone(), Code::ResourceExhausted);
    assert!(refused.message().contains("usual rate"), "{refused:?}");
    // Until the minute ends.
    clock.advance(Duration::from_secs(60));
    assert!(leases(&mut vault, REPORTER, 1).await[0].is_ok());

    let (_, metrics) = vault.http_get("/metrics").await;
    assert!(
        metrics.contains("vaultd_alerts_total{kind=\"anomaly.rate\"} 6"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("alerts_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failed_authentications_raises_one_event() {
    let (mut vault, _) = TestVault::unsealed().await;
    let ca = vault.fixture.pki.ca_pem.clone();
    let foreign = Pki::generate("some other CA").spiffe_client(OUTSIDER);
    for _ in 0..60 {
        assert!(
            crate::handshakes::handshake(vault.grpc, client_config(&ca, Some(&foreign)))
                .await
                .is_err()
        );
    }
    let bursts = anomalies(&vault, "anomaly.tls_failures", "-", 1).await;
    assert_eq!(bursts.len(), 1, "{bursts:#?}");
    assert!(
        bursts[0].contains("\"source\":\"127.0.0.1\""),
        "{}",
        bursts[0]
    );

    // Requests the policy denies, per identity: one event for the burst.
    let mut admin = vault.admin_as(OUTSIDER);
    for _ in 0..40 {
        expect_code(
            admin
                .list_secrets(v1::ListSecretsRequest {
                    tenant: "acme".into(),
                    ..Default::default()
                })
                .await,
            Code::PermissionDenied,
        );
    }
    let denied = anomalies(&vault, "anomaly.denied_requests", OUTSIDER, 1).await;
    assert_eq!(denied.len(), 1, "{denied:#?}");
}
