//! `vault.v1.Broker` over mutual TLS: sessions, leases, transit, revocations.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use vault_crypto::clock::ManualClock;
use vault_crypto::session::{Direction, SessionAad};
use vault_proto::v1;
use vault_proto::v1::broker_client::BrokerClient;
use vault_testkit::grpc::{ClientSession, open_session};

use crate::harness::{
    ACME_WORKER, GATEWAY, OUTSIDER, Options, TestVault, env_proto, expect_code, lease_request,
    lease_value, secret_ref, watch,
};

/// Leases `tenant/env/name` and expects it refused with `code`; returns the status.
async fn lease_refused(
    broker: &mut BrokerClient<Channel>,
    session: &ClientSession,
    tenant: &str,
    env: &str,
    name: &str,
    code: Code,
) -> tonic::Status {
    expect_code(
        broker
            .lease(lease_request(session, tenant, env, name))
            .await,
        code,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renew_revoke_and_the_revocation_stream() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-acme-live")
        .await;
    let (mut broker, session) = vault.session(GATEWAY).await;
    let mut watch = watch(&mut broker).await;

    let (lease, value) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(value, b"sk-acme-live");
    assert_eq!(lease.version, 1);
    assert!(lease.expires_unix_ms <= lease.renewable_until_unix_ms);
    // The gateway's grant caps leases at 5 minutes.
    assert!(lease.renewable_until_unix_ms - lease.expires_unix_ms <= 5 * 60 * 1000);

    let renewed = broker
        .renew(v1::RenewRequest {
            lease_id: lease.lease_id.clone(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(renewed.expires_unix_ms > lease.expires_unix_ms);
    assert!(renewed.expires_unix_ms <= lease.renewable_until_unix_ms);

    // Another identity can neither renew nor revoke it, nor learn that it exists.
    let mut worker = vault.broker(ACME_WORKER);
    for result in [
        worker
            .renew(v1::RenewRequest {
                lease_id: lease.lease_id.clone(),
                ttl_seconds: 1,
            })
            .await
            .map(|_| ()),
        worker
            .revoke(v1::RevokeRequest {
                lease_id: lease.lease_id.clone(),
            })
            .await
            .map(|_| ()),
    ] {
        expect_code(result, Code::NotFound);
    }

    broker
        .revoke(v1::RevokeRequest {
            lease_id: lease.lease_id.clone(),
        })
        .await
        .unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(notice.lease_id, lease.lease_id);
    assert_eq!(notice.reason, v1::RevocationReason::Revoked as i32);
    expect_code(
        broker
            .renew(v1::RenewRequest {
                lease_id: lease.lease_id,
                ttl_seconds: 1,
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_does_not_reveal_whether_a_secret_exists() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-x")
        .await;
    let (mut broker, session) = vault.session(OUTSIDER).await;
    let exists = lease_refused(
        &mut broker,
        &session,
        "acme",
        "live",
        "byok/openai",
        Code::PermissionDenied,
    )
    .await;
    let missing = lease_refused(
        &mut broker,
        &session,
        "acme",
        "live",
        "byok/nothing",
        Code::PermissionDenied,
    )
    .await;
    assert_eq!(exists.message(), missing.message());
    assert!(!exists.message().contains("byok"), "{exists:?}");

    // The gateway may lease byok/* but not other names, existing or not.
    vault
        .put_secret("acme", "live", "webhooks/signing", b"whsec")
        .await;
    let (mut gateway, session) = vault.session(GATEWAY).await;
    let a = lease_refused(
        &mut gateway,
        &session,
        "acme",
        "live",
        "webhooks/signing",
        Code::PermissionDenied,
    )
    .await;
    let b = lease_refused(
        &mut gateway,
        &session,
        "acme",
        "live",
        "webhooks/none",
        Code::PermissionDenied,
    )
    .await;
    assert_eq!(a.message(), b.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_worker_reaches_only_its_own_tenant() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-acme")
        .await;
    vault
        .put_secret("globex", "live", "byok/openai", b"sk-globex")
        .await;
    let (mut worker, session) = vault.session(ACME_WORKER).await;
    let (_, value) = lease_value(&mut worker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(value, b"sk-acme");
    lease_refused(
        &mut worker,
        &session,
        "globex",
        "live",
        "byok/openai",
        Code::PermissionDenied,
    )
    .await;
    // Transit too: its own tenant's key only.
    let encrypt = |tenant: &str| v1::EncryptRequest {
        session_id: session.id.clone(),
        tenant: tenant.to_owned(),
        environment: env_proto("live"),
        plaintext: Some(v1::SealedPayload {
            envelope: session
                .key
                .seal(
                    &SessionAad::transit(Direction::ToDaemon, tenant, "live", 0),
                    b"x",
                )
                .unwrap(),
        }),
    };
    worker.encrypt(encrypt("acme")).await.unwrap();
    expect_code(
        worker.encrypt(encrypt("globex")).await,
        Code::PermissionDenied,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_belong_to_their_identity() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let (_, gateway_session) = vault.session(GATEWAY).await;
    // The worker presents the gateway's session id: unknown to it.
    let (mut worker, _) = vault.session(ACME_WORKER).await;
    let status = expect_code(
        worker
            .lease(lease_request(
                &gateway_session,
                "acme",
                "live",
                "byok/openai",
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("OpenSession"), "{status:?}");
    // A malformed public key is refused.
    expect_code(
        worker
            .open_session(v1::OpenSessionRequest {
                client_public_key: vec![7; 31],
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_round_trips_singly_and_in_batches() {
    let (mut vault, _) = TestVault::unsealed().await;
    let (mut worker, session) = vault.session(ACME_WORKER).await;
    let seal = |i: usize, text: &[u8]| v1::SealedPayload {
        envelope: session
            .key
            .seal(
                &SessionAad::transit(Direction::ToDaemon, "acme", "live", i),
                text,
            )
            .unwrap(),
    };
    let envelope = worker
        .encrypt(v1::EncryptRequest {
            session_id: session.id.clone(),
            tenant: "acme".into(),
            environment: env_proto("live"),
            plaintext: Some(seal(0, b"card 4242")),
        })
        .await
        .unwrap()
        .into_inner()
        .envelope;
    assert!(!envelope.windows(9).any(|w| w == b"card 4242"));
    let decrypted = worker
        .decrypt(v1::DecryptRequest {
            session_id: session.id.clone(),
            tenant: "acme".into(),
            environment: env_proto("live"),
            envelope: envelope.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let aad = SessionAad::transit(Direction::ToClient, "acme", "live", 0);
    let plain = session
        .key
        .open(&aad, &decrypted.plaintext.unwrap().envelope)
        .unwrap();
    assert_eq!(plain.expose_secret(), b"card 4242");

    // The envelope is bound to its environment.
    expect_code(
        worker
            .decrypt(v1::DecryptRequest {
                session_id: session.id.clone(),
                tenant: "acme".into(),
                environment: env_proto("test"),
                envelope: envelope.clone(),
            })
            .await,
        Code::InvalidArgument,
    );

    // Batches: items succeed or fail on their own, in order.
    let texts: Vec<Vec<u8>> = (0..5).map(|i| format!("item-{i}").into_bytes()).collect();
    let mut plaintexts: Vec<v1::SealedPayload> =
        texts.iter().enumerate().map(|(i, t)| seal(i, t)).collect();
    plaintexts[3] = seal(0, b"sealed for the wrong item");
    let results = worker
        .batch_encrypt(v1::BatchEncryptRequest {
            session_id: session.id.clone(),
            tenant: "acme".into(),
            environment: env_proto("live"),
            plaintexts,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 5);
    let mut envelopes = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match (i, result.result.unwrap()) {
            (3, v1::batch_item_result::Result::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32)
            }
            (_, v1::batch_item_result::Result::Envelope(e)) => envelopes.push(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    envelopes.push(b"garbage".to_vec());
    let results = worker
        .batch_decrypt(v1::BatchDecryptRequest {
            session_id: session.id.clone(),
            tenant: "acme".into(),
            environment: env_proto("live"),
            envelopes,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let expected = [0usize, 1, 2, 4];
    for (i, result) in results.into_iter().enumerate() {
        match result.result.unwrap() {
            v1::batch_item_result::Result::Plaintext(p) => {
                let aad = SessionAad::transit(Direction::ToClient, "acme", "live", i);
                let plain = session.key.open(&aad, &p.envelope).unwrap();
                assert_eq!(plain.expose_secret(), texts[expected[i]].as_slice());
            }
            v1::batch_item_result::Result::Error(e) => {
                assert_eq!(i, 4);
                assert_eq!(e.code, Code::InvalidArgument as i32);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Too many items are refused whole.
    let too_many = vec![seal(0, b"x"); 1001];
    expect_code(
        worker
            .batch_encrypt(v1::BatchEncryptRequest {
                session_id: session.id.clone(),
                tenant: "acme".into(),
                environment: env_proto("live"),
                plaintexts: too_many,
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_and_uninitialised_daemons_say_so() {
    let mut vault = TestVault::start().await;
    let (mut broker, session) = vault.session(GATEWAY).await;
    let status = lease_refused(
        &mut broker,
        &session,
        "acme",
        "live",
        "byok/openai",
        Code::FailedPrecondition,
    )
    .await;
    assert!(status.message().contains("not initialised"), "{status:?}");

    let shares = vault.init(2, 3).await;
    vault.unseal(&shares[..2]).await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    vault.seal().await;
    // Sessions are wiped on seal; a new one opens while sealed (it needs no root key).
    let session = open_session(&mut broker, GATEWAY).await.unwrap();
    let status = lease_refused(
        &mut broker,
        &session,
        "acme",
        "live",
        "byok/openai",
        Code::Unavailable,
    )
    .await;
    assert!(status.message().contains("sealed"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_limits_hold_in_total() {
    let (mut vault, _) = TestVault::unsealed_with(Options {
        leases: "max_total = 2".into(),
        ..Options::default()
    })
    .await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let (mut broker, session) = vault.session(GATEWAY).await;
    for _ in 0..2 {
        lease_value(&mut broker, &session, "acme", "live", "byok/openai")
            .await
            .unwrap();
    }
    let status = lease_refused(
        &mut broker,
        &session,
        "acme",
        "live",
        "byok/openai",
        Code::ResourceExhausted,
    )
    .await;
    assert!(
        status.message().contains("maximum of 2 leases"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_past_its_grace_window_is_disabled_and_its_leases_revoked() {
    let clock = ManualClock::new();
    let (mut vault, _) = TestVault::unsealed_on(Options::default(), clock.clone()).await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-v1")
        .await;
    let (mut broker, session) = vault.session(GATEWAY).await;
    let mut watch = watch(&mut broker).await;
    let (old, _) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    let rotated = vault
        .rotate_secret("acme", "live", "byok/openai", b"sk-v2", Some(1))
        .await;
    assert_eq!(rotated.current_version, 2);
    let (new, value) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!((new.version, value.as_slice()), (2, &b"sk-v2"[..]));

    // The daemon's clock stands: ticks pass, the window does not end.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), watch.next())
            .await
            .is_err(),
        "nothing is revoked before the window ends"
    );
    // Past the window and the sweep's pace, the next housekeeping tick disables it.
    clock.advance(Duration::from_secs(6));
    let notice = tokio::time::timeout(Duration::from_secs(3), watch.next())
        .await
        .expect("revocation at the next housekeeping tick")
        .unwrap()
        .unwrap();
    assert_eq!(notice.lease_id, old.lease_id);
    assert_eq!(notice.reason, v1::RevocationReason::VersionDisabled as i32);
    let described = vault
        .admin()
        .describe_secret(v1::DescribeSecretRequest {
            secret: Some(secret_ref("acme", "live", "byok/openai")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        described.versions[0].state,
        v1::VersionState::Disabled as i32
    );
    let mut pinned = lease_request(&session, "acme", "live", "byok/openai");
    pinned.version = Some(1);
    expect_code(broker.lease(pinned).await, Code::NotFound);
    let disabled = vault
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("system.disable_version"))
        .count();
    assert_eq!(disabled, 1);
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const RENEWER: &str = "spiffe://billing.example/svc/renewer";

fn renewer_policy(max_ttl: &str) -> String {
    format!(
        "[[grant]]\nid = \"renewer\"\nidentities = [\"{RENEWER}\"]\noperations = [\"lease\"]\n\
         tenants = [\"acme\"]\nenvironments = [\"live\"]\nsecrets = [\"byok/*\"]\nmax_ttl = \"{max_ttl}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_is_capped_by_the_current_grants_max_ttl() {
    let (mut vault, _) = TestVault::unsealed_with(Options {
        policies: vec![("renewer.toml".into(), renewer_policy("1h"))],
        ..Options::default()
    })
    .await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let (mut broker, session) = vault.session(RENEWER).await;
    let issued = unix_ms_now();
    let (lease, _) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert!(lease.renewable_until_unix_ms >= issued + 3_599_000);

    // The operator tightens the grant: renewal may now reach 90 s past issue, no more.
    std::fs::write(vault.path("policies/renewer.toml"), renewer_policy("90s")).unwrap();
    vault
        .admin()
        .reload_policies(v1::ReloadPoliciesRequest {})
        .await
        .unwrap();
    let renewed = broker
        .renew(v1::RenewRequest {
            lease_id: lease.lease_id.clone(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        renewed.expires_unix_ms <= unix_ms_now() + 90_000,
        "renewed to {} ms from now",
        renewed.expires_unix_ms - unix_ms_now()
    );
    assert!(renewed.expires_unix_ms >= lease.expires_unix_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_identity_sixty_four_replicas_lease_concurrently() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let mut replicas = Vec::new();
    for _ in 0..64 {
        replicas.push(vault.session(GATEWAY).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (mut broker, session) in replicas {
        tasks.spawn(async move {
            for _ in 0..5 {
                lease_value(&mut broker, &session, "acme", "live", "byok/openai").await?;
            }
            Ok::<_, tonic::Status>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_watches_per_identity_are_bounded() {
    let (mut vault, _) = TestVault::unsealed_with(Options {
        limits: "watches_per_identity = 2".into(),
        ..Options::default()
    })
    .await;
    let mut broker = vault.broker(GATEWAY);
    let first = broker
        .watch_revocations(v1::WatchRevocationsRequest {})
        .await
        .unwrap();
    let _second = broker
        .watch_revocations(v1::WatchRevocationsRequest {})
        .await
        .unwrap();
    let status = broker
        .watch_revocations(v1::WatchRevocationsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("watches_per_identity"),
        "{status:?}"
    );
    // Others keep theirs.
    vault
        .broker(ACME_WORKER)
        .watch_revocations(v1::WatchRevocationsRequest {})
        .await
        .unwrap();
    // A watch that ends gives its place back.
    drop(first);
    let mut reopened = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if broker
            .watch_revocations(v1::WatchRevocationsRequest {})
            .await
            .is_ok()
        {
            reopened = true;
            break;
        }
    }
    assert!(reopened, "a closed watch kept its place");
}

/// A transit request's plaintext, sealed to the session for item `i`.
fn transit_item(session: &ClientSession, tenant: &str, i: usize, text: &[u8]) -> v1::SealedPayload {
    v1::SealedPayload {
        envelope: session
            .key
            .seal(
                &SessionAad::transit(Direction::ToDaemon, tenant, "live", i),
                text,
            )
            .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_keys_rotate_and_transit_envelopes_rewrap() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-before-rotation")
        .await;
    let (mut worker, session) = vault.session(ACME_WORKER).await;
    let encrypt = |text: &'static [u8]| v1::EncryptRequest {
        session_id: session.id.clone(),
        tenant: "acme".into(),
        environment: env_proto("live"),
        plaintext: Some(transit_item(&session, "acme", 0, text)),
    };
    let old = worker
        .encrypt(encrypt(b"card 1"))
        .await
        .unwrap()
        .into_inner()
        .envelope;

    let mut admin = vault.admin();
    let tenant = || "acme".to_owned();
    let keys = admin
        .rotate_tenant_key(v1::RotateTenantKeyRequest { tenant: tenant() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((keys.current_version, keys.versions.len()), (2, 2));
    // Old envelopes keep decrypting; the platform moves them to the new version.
    let rewrapped = worker
        .rewrap(v1::RewrapRequest {
            tenant: tenant(),
            environment: env_proto("live"),
            envelope: old.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .envelope;
    assert_ne!(rewrapped, old);
    let batch = worker
        .batch_rewrap(v1::BatchRewrapRequest {
            tenant: tenant(),
            environment: env_proto("live"),
            envelopes: vec![old.clone(), b"garbage".to_vec()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(matches!(
        batch[0].result,
        Some(v1::batch_item_result::Result::Envelope(_))
    ));
    assert!(matches!(
        &batch[1].result,
        Some(v1::batch_item_result::Result::Error(e)) if e.code == Code::InvalidArgument as i32
    ));
    // The background pass rewraps the tenant's secrets; then version 1 can retire.
    let mut retired = None;
    for _ in 0..100 {
        match admin
            .retire_tenant_keys(v1::RetireTenantKeysRequest {
                tenant: tenant(),
                below_version: 2,
            })
            .await
        {
            Ok(keys) => {
                retired = Some(keys.into_inner());
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().contains("rewrap"), "{status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let retired = retired.expect("the rewrap pass finished");
    assert_eq!(
        (retired.min_decryption_version, retired.versions.len()),
        (2, 1)
    );
    let described = admin
        .describe_tenant_keys(v1::DescribeTenantKeysRequest { tenant: tenant() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.versions[0].secret_versions, 1);
    // Retired: what was not rewrapped is unreadable for good; the rest still opens.
    let decrypt = |envelope: Vec<u8>| v1::DecryptRequest {
        session_id: session.id.clone(),
        tenant: tenant(),
        environment: env_proto("live"),
        envelope,
    };
    expect_code(worker.decrypt(decrypt(old)).await, Code::InvalidArgument);
    worker.decrypt(decrypt(rewrapped)).await.unwrap();
    let (mut gateway, gw_session) = vault.session(GATEWAY).await;
    let (_, value) = lease_value(&mut gateway, &gw_session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(value, b"sk-before-rotation");
    // Rotating and retiring need keys.rotate on the tenant.
    let status = vault
        .admin_as(OUTSIDER)
        .rotate_tenant_key(v1::RotateTenantKeyRequest { tenant: tenant() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_memory_transit_under_a_wildcard_grant_creates_no_tenants() {
    let policy = "[[grant]]\nid = \"any-tenant-transit\"\n\
                  identities = [\"spiffe://billing.example/svc/encryptor\"]\n\
                  operations = [\"transit.encrypt\"]\ntenants = [\"*\"]\nenvironments = [\"live\"]\n";
    let (mut vault, _) = TestVault::unsealed_with(Options {
        policies: vec![("encryptor.toml".into(), policy.into())],
        ..Options::default()
    })
    .await;
    let (mut encryptor, session) = vault
        .session("spiffe://billing.example/svc/encryptor")
        .await;
    for i in 0..20 {
        let tenant = format!("made-up-{i}");
        let status = encryptor
            .encrypt(v1::EncryptRequest {
                session_id: session.id.clone(),
                tenant: tenant.clone(),
                environment: env_proto("live"),
                plaintext: Some(transit_item(&session, &tenant, 0, b"x")),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains("create_tenant_keys"),
            "{status:?}"
        );
    }
    // An existing tenant is served.
    vault.put_secret("acme", "live", "byok/x", b"v").await;
    encryptor
        .encrypt(v1::EncryptRequest {
            session_id: session.id.clone(),
            tenant: "acme".into(),
            environment: env_proto("live"),
            plaintext: Some(transit_item(&session, "acme", 0, b"x")),
        })
        .await
        .unwrap();
}
