//! `vault.v1.Admin` over mutual TLS and over the local socket.

use std::path::Path;

use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use vault_crypto::session::{Direction, SessionAad, op};
use vault_proto::v1::{self, admin_client::AdminClient, broker_client::BrokerClient};
use vault_testkit::grpc::{ClientSession, open_session};

use crate::harness::{
    ACME_WORKER, GATEWAY, OPERATOR, TestVault, env_proto, expect_code, lease_value, opened_shares,
    put_request, secret_ref, unseal_request, watch,
};

const CUSTODIAN: &str = "spiffe://billing.example/human/custodian/carol";
const ADMIN: &str = "spiffe://billing.example/human/admin/alice";
const SECOPS: &str = "spiffe://billing.example/human/secops/sam";

fn sealed_shares(
    session: &ClientSession,
    operation: &str,
    shares: &[Vec<u8>],
) -> Vec<v1::SealedPayload> {
    shares
        .iter()
        .enumerate()
        .map(|(i, s)| v1::SealedPayload {
            envelope: session
                .key
                .seal(&SessionAad::share(operation, Direction::ToDaemon, i), s)
                .unwrap(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_init_unseal_restart_rekey_rotate() {
    let mut vault = TestVault::start().await;
    let mut admin = vault.admin();
    let status = admin
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, v1::SealState::Uninitialised as i32);
    let (code, _) = vault.http_get("/v1/health").await;
    assert_eq!(code, 501);

    let shares = vault.init(3, 5).await;
    assert_eq!(shares.len(), 5);
    // Init twice is refused.
    let (_, session) = vault.session(OPERATOR).await;
    expect_code(
        admin
            .init(v1::InitRequest {
                session_id: session.id.clone(),
                threshold: 1,
                share_count: 1,
            })
            .await,
        Code::FailedPrecondition,
    );

    vault.restart().await;
    let mut admin = vault.admin();
    let (code, body) = vault.http_get("/v1/health").await;
    assert_eq!(
        (code, body.contains("\"sealed\":true")),
        (503, true),
        "{body}"
    );

    // A custodian unseals with progress and a nonce; a share sealed for another
    // operation does not open.
    let (_, session) = vault.session(CUSTODIAN).await;
    let mut custodian = vault.admin_as(CUSTODIAN);
    let first = custodian
        .unseal(unseal_request(&session, &shares[0], ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.submitted, first.threshold), (1, 3));
    let mut wrong_op = unseal_request(&session, &shares[1], &first.nonce);
    wrong_op.share = Some(sealed_shares(&session, op::REKEY, &shares[1..2]).remove(0));
    expect_code(custodian.unseal(wrong_op).await, Code::InvalidArgument);
    let status = admin
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.progress, status.unseal_nonce.clone()),
        (1, first.nonce.clone())
    );
    custodian
        .unseal(unseal_request(&session, &shares[1], &first.nonce))
        .await
        .unwrap();
    let done = custodian
        .unseal(unseal_request(&session, &shares[2], &first.nonce))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, v1::SealState::Unsealed as i32);
    let status = admin
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, v1::SealState::Unsealed as i32);
    assert_eq!(status.audit_public_key.len(), 64);
    assert_eq!(vault.http_get("/v1/health").await.0, 200);
    // The custodian role cannot write secrets.
    let (_, custodian_session) = vault.session(CUSTODIAN).await;
    expect_code(
        custodian
            .put_secret(put_request(
                &custodian_session,
                "acme",
                "live",
                "byok/x",
                b"v",
            ))
            .await,
        Code::PermissionDenied,
    );

    vault
        .put_secret("acme", "live", "byok/openai", b"sk-before-rekey")
        .await;

    // Rekey: 3 current shares → a new 2-of-3 set, pending until verified.
    let (_, session) = vault.session(OPERATOR).await;
    let rekey = |session: &ClientSession| v1::RekeyRequest {
        session_id: session.id.clone(),
        current_shares: sealed_shares(session, op::REKEY, &shares[..3]),
        threshold: 2,
        share_count: 3,
    };
    // A rekey whose answer is lost on its way: nothing changed for the custodians.
    let lost = admin.rekey(rekey(&session)).await.unwrap().into_inner();
    drop(lost);
    vault.restart().await;
    let mut admin = vault.admin();
    vault.unseal(&shares[2..5]).await;
    let (_, session) = vault.session(OPERATOR).await;
    let answer = admin.rekey(rekey(&session)).await.unwrap().into_inner();
    let new_shares = opened_shares(&session, op::REKEY_NEW, &answer.shares);
    assert_eq!(new_shares.len(), 3);
    // Too few of the new shares, or the old ones, do not verify it.
    let verify = |session: &ClientSession, quorum: &[Vec<u8>]| v1::VerifyRekeyRequest {
        session_id: session.id.clone(),
        new_shares: sealed_shares(session, op::VERIFY_REKEY, quorum),
    };
    expect_code(
        admin.verify_rekey(verify(&session, &shares[..3])).await,
        Code::InvalidArgument,
    );
    let set = admin
        .verify_rekey(verify(&session, &new_shares[1..]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((set.threshold, set.share_count), (2, 3));
    // Nothing left to verify.
    expect_code(
        admin.verify_rekey(verify(&session, &new_shares[1..])).await,
        Code::FailedPrecondition,
    );

    // Root-key rotation with a quorum of the new set.
    let rotated = admin
        .rotate_root_key(v1::RotateRootKeyRequest {
            session_id: session.id.clone(),
            shares: sealed_shares(&session, op::ROTATE_ROOT_KEY, &new_shares[..2]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.root_version, 2);

    vault.restart().await;
    let (_, session) = vault.session(OPERATOR).await;
    let mut admin = vault.admin();
    let old = admin.unseal(unseal_request(&session, &shares[0], "")).await;
    expect_code(old, Code::InvalidArgument);
    vault.unseal(&new_shares[1..]).await;
    let (mut broker, session) = vault.session(GATEWAY).await;
    let (_, value) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(value, b"sk-before-rekey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_write_only_and_their_metadata_readable() {
    let (mut vault, _) = TestVault::unsealed().await;
    let mut admin = vault.admin_as(ADMIN);
    let (_, session) = vault.session(ADMIN).await;
    let put = admin
        .put_secret(put_request(
            &session,
            "acme",
            "live",
            "byok/openai",
            b"sk-proj-abcdefgh00000000000000000001234",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(put.current_version, 1);
    let hint = &put.versions[0].hint;
    assert!(
        hint.ends_with("1234") && !hint.contains("abcdefgh"),
        "{hint}"
    );
    expect_code(
        admin
            .put_secret(put_request(
                &session,
                "acme",
                "live",
                "byok/openai",
                b"again",
            ))
            .await,
        Code::AlreadyExists,
    );
    vault
        .rotate_secret("acme", "live", "byok/openai", b"sk-proj-new", None)
        .await;
    vault
        .put_secret("acme", "test", "byok/openai", b"sk-test")
        .await;
    vault
        .put_secret("globex", "live", "byok/openai", b"sk-g")
        .await;

    let described = admin
        .describe_secret(v1::DescribeSecretRequest {
            secret: Some(secret_ref("acme", "live", "byok/openai")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.current_version, 2);
    assert_eq!(described.versions[0].state, v1::VersionState::Grace as i32);
    assert!(described.versions[0].grace_until_unix > 0);

    let listed = admin
        .list_secrets(v1::ListSecretsRequest {
            tenant: "acme".into(),
            environment: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.secrets.len(), 2);
    let live_only = admin
        .list_secrets(v1::ListSecretsRequest {
            tenant: "acme".into(),
            environment: env_proto("live"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live_only.secrets.len(), 1);

    admin
        .delete_secret(v1::DeleteSecretRequest {
            secret: Some(secret_ref("acme", "test", "byok/openai")),
        })
        .await
        .unwrap();
    expect_code(
        admin
            .describe_secret(v1::DescribeSecretRequest {
                secret: Some(secret_ref("acme", "test", "byok/openai")),
            })
            .await,
        Code::NotFound,
    );
    // Invalid names are INVALID_ARGUMENT.
    for tenant in ["", "UPPER", "a/b", &"x".repeat(64)] {
        expect_code(
            admin
                .list_secrets(v1::ListSecretsRequest {
                    tenant: tenant.into(),
                    environment: 0,
                })
                .await,
            Code::InvalidArgument,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_is_confirmed_scoped_and_revokes_leases() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-a")
        .await;
    vault
        .put_secret("globex", "live", "byok/openai", b"sk-g")
        .await;
    let (mut broker, session) = vault.session(GATEWAY).await;
    let mut watch = watch(&mut broker).await;
    let (lease, _) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();

    // The admin role is denied tenants.erase by an explicit deny.
    let mut admin = vault.admin_as(ADMIN);
    expect_code(
        admin
            .erase_tenant(v1::EraseTenantRequest {
                tenant: "acme".into(),
                confirm: "acme".into(),
            })
            .await,
        Code::PermissionDenied,
    );
    let mut secops = vault.admin_as(SECOPS);
    expect_code(
        secops
            .erase_tenant(v1::EraseTenantRequest {
                tenant: "acme".into(),
                confirm: "acm".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    let receipt = secops
        .erase_tenant(v1::EraseTenantRequest {
            tenant: "acme".into(),
            confirm: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (receipt.tenant.as_str(), receipt.secrets_erased),
        ("acme", 1)
    );
    assert!(!receipt.key_versions.is_empty());
    let notice = tokio_stream::StreamExt::next(&mut watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (notice.lease_id, notice.reason),
        (lease.lease_id, v1::RevocationReason::TenantErased as i32)
    );
    let erased = vault
        .audit_lines()
        .into_iter()
        .find(|l| l.contains("admin.erase_tenant") && l.contains("secrets_erased"))
        .expect("erasure receipt in the audit log");
    assert!(erased.contains("key_versions"), "{erased}");
    // Globex is untouched.
    let (_, value) = lease_value(&mut broker, &session, "globex", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(value, b"sk-g");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_listed_and_revoked_by_every_selector() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault.put_secret("acme", "live", "byok/openai", b"a").await;
    vault
        .put_secret("acme", "live", "byok/anthropic", b"b")
        .await;
    vault
        .put_secret("globex", "live", "byok/openai", b"c")
        .await;
    let (mut gateway, gs) = vault.session(GATEWAY).await;
    let (mut worker, ws) = vault.session(ACME_WORKER).await;
    let lease = async |broker: &mut BrokerClient<Channel>, s: &ClientSession, t: &str, n: &str| {
        lease_value(broker, s, t, "live", n)
            .await
            .unwrap()
            .0
            .lease_id
    };
    let one = lease(&mut gateway, &gs, "acme", "byok/openai").await;
    lease(&mut gateway, &gs, "acme", "byok/anthropic").await;
    lease(&mut gateway, &gs, "globex", "byok/openai").await;
    lease(&mut worker, &ws, "acme", "byok/openai").await;
    lease(&mut worker, &ws, "acme", "byok/anthropic").await;

    let mut admin = vault.admin();
    let list = |tenant: Option<&str>, identity: Option<&str>| v1::ListLeasesRequest {
        tenant: tenant.map(str::to_owned),
        identity: identity.map(str::to_owned),
    };
    assert_eq!(
        admin
            .list_leases(list(None, None))
            .await
            .unwrap()
            .into_inner()
            .leases
            .len(),
        5
    );
    assert_eq!(
        admin
            .list_leases(list(Some("acme"), Some(GATEWAY)))
            .await
            .unwrap()
            .into_inner()
            .leases
            .len(),
        2
    );
    use v1::revoke_leases_request::Selector;
    let mut revoke = async |selector| {
        admin
            .revoke_leases(v1::RevokeLeasesRequest {
                selector: Some(selector),
            })
            .await
            .map(|r| r.into_inner().revoked)
    };
    assert_eq!(revoke(Selector::LeaseId(one)).await.unwrap(), 1);
    assert_eq!(
        revoke(Selector::Secret(secret_ref(
            "acme",
            "live",
            "byok/anthropic"
        )))
        .await
        .unwrap(),
        2
    );
    assert_eq!(
        revoke(Selector::Identity(ACME_WORKER.into()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(revoke(Selector::Tenant("globex".into())).await.unwrap(), 1);
    expect_code(revoke(Selector::All(false)).await, Code::InvalidArgument);
    lease(&mut gateway, &gs, "acme", "byok/openai").await;
    assert_eq!(revoke(Selector::All(true)).await.unwrap(), 1);

    // Reading and revoking leases needs leases.read / leases.revoke.
    let mut custodian = vault.admin_as(CUSTODIAN);
    expect_code(
        custodian.list_leases(list(None, None)).await,
        Code::PermissionDenied,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_reload_keeps_the_old_set_and_says_where() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let mut admin = vault.admin();
    let counts = admin
        .reload_policies(v1::ReloadPoliciesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(counts.grants >= 2 && counts.roles >= 4, "{counts:?}");

    std::fs::write(
        vault.path("policies/zz-broken.toml"),
        "[[grant]]\nid = \"broken\"\nidentities = [\"spiffe://x/*\"]\noperations = [\"fly\"]\n\
         tenants = [\"*\"]\nenvironments = [\"live\"]\nsecrets = [\"*\"]\n",
    )
    .unwrap();
    let status = expect_code(
        admin.reload_policies(v1::ReloadPoliciesRequest {}).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("zz-broken.toml"), "{status:?}");
    assert!(status.message().contains("zz-broken.toml:1:"), "{status:?}");
    assert!(status.message().contains("fly"), "{status:?}");
    // The old set is still in force.
    let (mut broker, session) = vault.session(GATEWAY).await;
    lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();

    // CheckPolicy explains a decision with the loaded set.
    let explained = admin
        .check_policy(v1::CheckPolicyRequest {
            identity: "spiffe://billing.example/tenant/globex/svc/worker".into(),
            action: "lease".into(),
            tenant: "acme".into(),
            environment: env_proto("live"),
            secret: "byok/openai".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!explained.allowed);
    let worker_rule = explained
        .trace
        .iter()
        .find(|t| t.id == "tenant-worker")
        .unwrap();
    assert!(worker_rule.outcome.contains("tenant"), "{worker_rule:?}");
    assert!(
        worker_rule.location.contains("tenant-workers.toml:"),
        "{worker_rule:?}"
    );
}

/// A gRPC channel over the daemon's Unix socket.
fn unix_channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_socket_serves_status_unseal_and_seal_only() {
    let mut vault = TestVault::start().await;
    let shares = vault.init(2, 3).await;
    let socket = unix_channel(&vault.socket());
    let mut admin = AdminClient::new(socket.clone());
    let mut broker = BrokerClient::new(socket);
    let status = admin
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, v1::SealState::Sealed as i32);

    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let identity = format!("local:uid={uid}");
    let session = open_session(&mut broker, &identity).await.unwrap();
    let first = admin
        .unseal(unseal_request(&session, &shares[0], ""))
        .await
        .unwrap()
        .into_inner();
    let done = admin
        .unseal(unseal_request(&session, &shares[2], &first.nonce))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, v1::SealState::Unsealed as i32);

    // Nothing else: no secrets, no leases.
    expect_code(
        admin
            .put_secret(put_request(&session, "acme", "live", "byok/x", b"v"))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        broker
            .lease(crate::harness::lease_request(
                &session, "acme", "live", "byok/x",
            ))
            .await,
        Code::PermissionDenied,
    );
    admin.seal(v1::SealRequest::default()).await.unwrap();
    let status = admin
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, v1::SealState::Sealed as i32);
    let line = vault
        .audit_lines()
        .into_iter()
        .find(|l| l.contains("admin.seal"))
        .unwrap();
    assert!(line.contains(&identity), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotations_grace_window_is_capped() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-one")
        .await;
    let (_, session) = vault.session(OPERATOR).await;
    let aad = SessionAad::secret_value(op::ROTATE_SECRET, "acme", "live", "byok/openai");
    let rotate = |grace_seconds| v1::RotateSecretRequest {
        session_id: session.id.clone(),
        secret: Some(secret_ref("acme", "live", "byok/openai")),
        value: Some(v1::SealedPayload {
            envelope: session.key.seal(&aad, b"sk-two").unwrap(),
        }),
        grace_seconds: Some(grace_seconds),
    };
    let mut admin = vault.admin();
    for grace in [1_000_000 * 86_400, u64::MAX] {
        let status = expect_code(
            admin.rotate_secret(rotate(grace)).await,
            Code::InvalidArgument,
        );
        assert!(status.message().contains("seal.max_grace"), "{status:?}");
    }
    let rotated = admin
        .rotate_secret(rotate(30 * 86_400))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.current_version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_oracle_a_guess_in_another_secret_matches_nothing() {
    let (mut vault, _) = TestVault::unsealed().await;
    // A low-entropy value an admin wants to learn without "eyes" on it...
    vault
        .put_secret("acme", "live", "byok/target", b"hunter2")
        .await;
    // ...guessed into secrets of its own: no fingerprint matches the target's.
    let mut admin = vault.admin_as(ADMIN);
    let describe = |name: &str| v1::DescribeSecretRequest {
        secret: Some(secret_ref("acme", "live", name)),
    };
    let target = admin
        .describe_secret(describe("byok/target"))
        .await
        .unwrap()
        .into_inner()
        .versions[0]
        .fingerprint
        .clone();
    for (i, guess) in [&b"hunter1"[..], b"hunter2", b"hunter3"].iter().enumerate() {
        let name = format!("byok/guess-{}", i + 1);
        vault.put_secret("acme", "live", &name, guess).await;
        let fingerprint = admin
            .describe_secret(describe(&name))
            .await
            .unwrap()
            .into_inner()
            .versions[0]
            .fingerprint
            .clone();
        assert_ne!(fingerprint, target, "the guess {i} was told apart");
    }
}
