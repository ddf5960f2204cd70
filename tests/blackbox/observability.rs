//! Health, metrics, gRPC health and server reflection.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::harness::{GATEWAY, OUTSIDER, TestVault, lease_request, lease_value};

async fn health_of(vault: &mut TestVault, service: &str) -> i32 {
    let mut health = HealthClient::new(vault.channel_as(OUTSIDER));
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn broker_health(vault: &mut TestVault) -> i32 {
    health_of(vault, "vault.v1.Broker").await
}

/// An unsealed daemon that has stored a secret and leased it once to the gateway.
async fn leased_once() -> TestVault {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-metrics")
        .await;
    let (mut broker, session) = vault.session(GATEWAY).await;
    lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    vault
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_reflection() {
    let mut vault = leased_once().await;
    let (mut outsider, s) = vault.session(OUTSIDER).await;
    outsider
        .lease(lease_request(&s, "acme", "live", "byok/openai"))
        .await
        .unwrap_err();

    let (code, body) = vault.http_get("/v1/health").await;
    assert_eq!(code, 200);
    assert!(body.contains(r#""state":"unsealed""#), "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await; // a housekeeping pass
    let (code, metrics) = vault.http_get("/metrics").await;
    assert_eq!(code, 200);
    for expected in [
        r#"vaultd_requests_total{rpc="broker.lease",code="Ok"} 1"#,
        r#"vaultd_requests_total{rpc="broker.lease",code="PermissionDenied"} 1"#,
        "vaultd_request_duration_seconds_bucket{",
        "vaultd_leases_active 1",
        "vaultd_sealed 0",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }
    // Labels name RPCs and codes, never tenants, identities or secrets.
    for secret in ["acme", "byok", "spiffe", "sk-metrics"] {
        assert!(!metrics.contains(secret), "{secret} in metrics");
    }
    assert_eq!(vault.http_get("/nope").await.0, 404);

    assert_eq!(
        broker_health(&mut vault).await,
        ServingStatus::Serving as i32
    );
    vault.seal().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        broker_health(&mut vault).await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(vault.http_get("/v1/health").await.0, 503);

    let mut reflection = ServerReflectionClient::new(vault.channel_as(OUTSIDER));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in ["vault.v1.Broker", "vault.v1.Admin", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == service), "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_while_sealed_is_not_serving_from_the_moment_of_sealing() {
    let (mut vault, shares) = TestVault::unsealed().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for service in ["", "vault.v1.Broker", "vault.v1.Admin"] {
        assert_eq!(
            health_of(&mut vault, service).await,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    // No waiting for a housekeeping pass: the change is reported as it happens.
    vault.seal().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for service in ["", "vault.v1.Broker"] {
        assert_eq!(
            health_of(&mut vault, service).await,
            ServingStatus::NotServing as i32,
            "{service:?}"
        );
    }
    // Admin still serves status and unseal while sealed.
    assert_eq!(
        health_of(&mut vault, "vault.v1.Admin").await,
        ServingStatus::Serving as i32
    );
    vault.unseal(&shares[..2]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        broker_health(&mut vault).await,
        ServingStatus::Serving as i32
    );
}

/// The metric families and `rpc` labels `deploy/prometheus-alerts.yml` names, each
/// exported by a serving daemon: the example rules cannot drift from the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_alerting_rules_name_only_exported_metrics() {
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus-alerts.yml"),
    )
    .unwrap();
    let vault = leased_once().await;
    let (_, metrics) = vault.http_get("/metrics").await;
    let exprs: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect();
    assert!(exprs.len() >= 5, "{exprs:?}");
    let mut named = 0;
    for expr in &exprs {
        for (start, _) in expr.match_indices("vaultd_") {
            let name: String = expr[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let family = name.strip_suffix("_total").unwrap_or(&name);
            assert!(
                metrics.contains(&format!("# TYPE {family} ")),
                "{name} in the rules is not exported:\n{metrics}"
            );
            named += 1;
        }
        for (start, _) in expr.match_indices("rpc=\"") {
            let rpc = expr[start + 5..].split('"').next().unwrap();
            assert!(
                metrics.contains(&format!("rpc=\"{rpc}\"")),
                "no rpc {rpc} in the metrics"
            );
        }
    }
    assert!(named >= exprs.len());
}
