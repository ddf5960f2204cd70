//! Failover, a sealed or restarted daemon, rotated certificates, bad files.

use std::time::{Duration, Instant};

use vault_client::{Client, Environment, Error, ExposeSecret, FileError, IdentityError};
use vault_testkit::fixture::{FixtureOptions, OPERATOR, free_addr};

use crate::{GATEWAY, OUTSIDER, unsealed, wait_for_watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_fails_over_to_the_next() {
    let (mut vault, _) = unsealed(
        &FixtureOptions::default(),
        &[("acme", "byok/openai", b"sk")],
    )
    .await;
    let dead = free_addr(); // nothing listens here
    let files = vault.fixture.client_files(GATEWAY);
    let client = Client::builder()
        .endpoint(format!("https://localhost:{}", dead.port()))
        .endpoint(vault.endpoint())
        .ca_cert(files.ca)
        .client_cert(files.cert, files.key)
        .build()
        .unwrap();
    let lease = client
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    assert_eq!(lease.expose_secret(), b"sk");

    // With only the dead endpoint, the client gives up after its retries.
    let files = vault.fixture.client_files(GATEWAY);
    let alone = Client::builder()
        .endpoint(format!("https://localhost:{}", dead.port()))
        .ca_cert(files.ca)
        .client_cert(files.cert, files.key)
        .max_attempts(3)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = alone
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { sealed: false, .. }),
        "{error:?}"
    );
    // Three attempts with 50 + 100 + 200 ms of backoff.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_evicts_the_cache_and_restart_reopens_sessions() {
    let options = FixtureOptions {
        grpc: Some(free_addr()),
        ..FixtureOptions::default()
    };
    let (mut vault, share) = unsealed(&options, &[("acme", "byok/openai", b"sk-1")]).await;
    let gateway = vault.client(GATEWAY);
    let operator = vault.client(OPERATOR);
    wait_for_watch(&gateway).await;
    let held = gateway
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();

    operator.seal().await.unwrap();
    assert!(crate::eventually(Duration::from_secs(1), || held.is_revoked()).await);
    assert_eq!(gateway.cached(), 0);
    let sealed = gateway
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap_err();
    assert!(sealed.is_sealed(), "{sealed:?}");

    // A restart loses every session; the client opens new ones by itself.
    vault.restart();
    operator.unseal(&share, None).await.unwrap();
    let again = gateway
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    assert_eq!(again.expose_secret(), b"sk-1");
    assert_ne!(again.lease_id(), held.lease_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_files_are_picked_up() {
    let (mut vault, _) = unsealed(
        &FixtureOptions::default(),
        &[("acme", "byok/openai", b"sk")],
    )
    .await;
    let outsider = vault.fixture.client_files(OUTSIDER);
    let client = Client::builder()
        .endpoint(vault.endpoint())
        .ca_cert(&outsider.ca)
        .client_cert(&outsider.cert, &outsider.key)
        .reload_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    assert_eq!(client.identity(), OUTSIDER);
    let denied = client
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap_err();
    assert!(
        matches!(denied, Error::PermissionDenied { .. }),
        "{denied:?}"
    );

    // Deploy the gateway's certificate into the same files.
    let gateway = vault.fixture.client_files(GATEWAY);
    std::fs::copy(&gateway.key, &outsider.key).unwrap();
    std::fs::copy(&gateway.cert, &outsider.cert).unwrap();
    assert!(crate::eventually(Duration::from_secs(5), || client.identity() == GATEWAY).await);
    let lease = client
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    assert_eq!(lease.expose_secret(), b"sk");
}

#[test]
fn bad_configuration_is_refused_with_the_file_and_the_reason() {
    let mut fixture = vault_testkit::fixture::Fixture::new(&FixtureOptions::default());
    let files = fixture.client_files(GATEWAY);
    let build = |ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| {
        Client::builder()
            .endpoint("https://localhost:1")
            .ca_cert(ca)
            .client_cert(cert, key)
            .build()
            .unwrap_err()
            .to_string()
    };
    let missing = fixture.path("missing.pem");
    let error = build(&missing, &files.cert, &files.key);
    assert!(
        error.contains("missing.pem") && error.contains("CA certificate"),
        "{error}"
    );
    let error = build(&files.ca, &files.key, &files.key);
    assert!(error.contains("client certificate"), "{error}");
    // Another identity's key does not match the certificate.
    let other = fixture.client_files(OUTSIDER);
    let error = build(&files.ca, &files.cert, &other.key);
    assert!(error.contains("does not match"), "{error}");
    // An expired certificate is named as such before any connection.
    let expired = fixture.pki.client(&vault_testkit::ClientSpec {
        uris: vec![GATEWAY.into()],
        expired: true,
        ..Default::default()
    });
    std::fs::write(fixture.path("expired.pem"), &expired.cert_pem).unwrap();
    std::fs::write(fixture.path("expired.key"), &expired.key_pem).unwrap();
    let error = build(
        &files.ca,
        &fixture.path("expired.pem"),
        &fixture.path("expired.key"),
    );
    assert!(error.contains("expired"), "{error}");
    // Endpoints must be https or unix.
    let error = Client::builder()
        .endpoint("http://localhost:1")
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Endpoint(_)), "{error:?}");
    let error = Client::builder().build().unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
}

#[test]
fn unusable_certificate_files_keep_their_typed_cause() {
    let mut fixture = vault_testkit::fixture::Fixture::new(&FixtureOptions::default());
    let files = fixture.client_files(GATEWAY);
    let build = |cert: &std::path::Path, key: &std::path::Path| {
        Client::builder()
            .endpoint("https://localhost:1")
            .ca_cert(&files.ca)
            .client_cert(cert, key)
            .build()
            .unwrap_err()
    };
    // The identity rules are vault-proto's, as vaultd applies them: a bare scheme and
    // an upper-case trust domain are refused before any connection.
    for (i, uri) in ["spiffe://", "spiffe://Billing.example/svc/gateway"]
        .into_iter()
        .enumerate()
    {
        let issued = fixture.pki.client(&vault_testkit::ClientSpec {
            uris: vec![uri.into()],
            ..Default::default()
        });
        let (cert, key) = (
            fixture.path(&format!("odd-{i}.pem")),
            fixture.path(&format!("odd-{i}.key")),
        );
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        let error = build(&cert, &key);
        assert!(
            matches!(
                &error,
                Error::BadFile {
                    reason: FileError::Identity(IdentityError::InvalidSpiffe(_)),
                    ..
                }
            ),
            "{uri}: {error:?}"
        );
        let cause = std::error::Error::source(&error).unwrap();
        assert!(cause.downcast_ref::<FileError>().is_some(), "{cause:?}");
    }
    // rustls's own reason, kept.
    let other = fixture.client_files(OUTSIDER);
    let error = build(&files.cert, &other.key);
    assert!(
        matches!(
            &error,
            Error::BadFile {
                reason: FileError::KeyMismatch(_),
                ..
            }
        ),
        "{error:?}"
    );
    let error = build(&files.key, &files.key);
    assert!(
        matches!(
            &error,
            Error::BadFile {
                reason: FileError::NoCertificate,
                ..
            }
        ),
        "{error:?}"
    );
    let expired = fixture.pki.client(&vault_testkit::ClientSpec {
        uris: vec![GATEWAY.into()],
        expired: true,
        ..Default::default()
    });
    std::fs::write(fixture.path("expired.pem"), &expired.cert_pem).unwrap();
    std::fs::write(fixture.path("expired.key"), &expired.key_pem).unwrap();
    let error = build(&fixture.path("expired.pem"), &fixture.path("expired.key"));
    let Error::BadFile {
        reason: FileError::Expired { not_after },
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert!(*not_after < std::time::SystemTime::now());
    assert_eq!(error.code(), None, "a local failure carries no status code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_failures_are_not_retried_and_an_untrusted_daemon_is_named() {
    let (mut vault, _) = unsealed(&FixtureOptions::default(), &[]).await;
    let files = vault.fixture.client_files(GATEWAY);
    // A client certificate from another CA: vaultd refuses it at the handshake.
    let mut other = vault_testkit::Pki::generate("another CA");
    let foreign = other.spiffe_client(GATEWAY);
    std::fs::write(vault.fixture.path("foreign.pem"), &foreign.cert_pem).unwrap();
    std::fs::write(vault.fixture.path("foreign.key"), &foreign.key_pem).unwrap();
    let client = Client::builder()
        .endpoint(vault.endpoint())
        .ca_cert(&files.ca)
        .client_cert(
            vault.fixture.path("foreign.pem"),
            vault.fixture.path("foreign.key"),
        )
        .build()
        .unwrap();
    let started = Instant::now();
    assert!(client.status().await.is_err());
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "a refused certificate was retried"
    );
    // vaultd's certificate checked against the wrong CA: named as a TLS failure.
    std::fs::write(vault.fixture.path("other-ca.pem"), &other.ca_pem).unwrap();
    let client = Client::builder()
        .endpoint(vault.endpoint())
        .ca_cert(vault.fixture.path("other-ca.pem"))
        .client_cert(&files.cert, &files.key)
        .build()
        .unwrap();
    let started = Instant::now();
    let untrusted = client.status().await.unwrap_err();
    assert!(matches!(untrusted, Error::Tls { .. }), "{untrusted:?}");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "a TLS failure was retried"
    );
}
