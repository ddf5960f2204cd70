//! Break-glass grants over real mTLS: a support engineer with no role asks for
//! metadata access to one tenant; one approval is not enough, two distinct security
//! officers are; the requester cannot approve itself; the grant covers only what it
//! names, survives a restart, ends by itself, by revocation and by a seal; every
//! request made under it names it in the audit log.

use std::time::Duration;

use tonic::Code;
use vault_crypto::clock::ManualClock;
use vault_proto::v1;

use crate::harness::{Options, TestVault, expect_code};

/// No role: may do nothing but ask.
const SUPPORT: &str = "spiffe://billing.example/human/support/alice";
/// Security officers of `policies/admins.toml`: hold `breakglass.approve`.
const BOB: &str = "spiffe://billing.example/human/secops/bob";
const CAROL: &str = "spiffe://billing.example/human/secops/carol";

fn ask(tenants: &[&str], seconds: u64) -> v1::RequestBreakGlassRequest {
    v1::RequestBreakGlassRequest {
        permissions: vec!["secrets.read-metadata".into()],
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        duration_seconds: seconds,
        reason: "INC-4711: customer cannot see their keys".into(),
    }
}

fn id(grant: &v1::BreakGlassGrant) -> v1::BreakGlassId {
    v1::BreakGlassId {
        id: grant.id.clone(),
    }
}

async fn request(vault: &mut TestVault, who: &str, tenants: &[&str]) -> v1::BreakGlassGrant {
    vault
        .admin_as(who)
        .request_break_glass(ask(tenants, 600))
        .await
        .unwrap()
        .into_inner()
}

async fn approve(
    vault: &mut TestVault,
    who: &str,
    grant: &v1::BreakGlassGrant,
) -> Result<v1::BreakGlassGrant, tonic::Status> {
    vault
        .admin_as(who)
        .approve_break_glass(id(grant))
        .await
        .map(tonic::Response::into_inner)
}

async fn approved(vault: &mut TestVault, tenants: &[&str]) -> v1::BreakGlassGrant {
    let grant = request(vault, SUPPORT, tenants).await;
    approve(vault, BOB, &grant).await.unwrap();
    let active = approve(vault, CAROL, &grant).await.unwrap();
    assert_eq!(active.state(), v1::BreakGlassState::Active);
    active
}

async fn state_of(vault: &mut TestVault, grant: &v1::BreakGlassGrant) -> v1::BreakGlassGrant {
    let all = vault
        .admin_as(BOB)
        .list_break_glass(v1::ListBreakGlassRequest {})
        .await
        .unwrap()
        .into_inner()
        .grants;
    all.into_iter().find(|g| g.id == grant.id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_distinct_approvers_open_a_scoped_grant_that_ends_by_itself() {
    let clock = ManualClock::new();
    let (mut vault, shares) = TestVault::unsealed_on(Options::default(), clock.clone()).await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-acme")
        .await;
    vault
        .put_secret("globex", "live", "byok/openai", b"sk-globex")
        .await;
    expect_code(
        vault.list_secrets_as(SUPPORT, "acme").await,
        Code::PermissionDenied,
    );

    let grant = request(&mut vault, SUPPORT, &["acme"]).await;
    assert_eq!(grant.state(), v1::BreakGlassState::Pending);
    assert_eq!(grant.approvals_required, 2);
    assert!(grant.id.starts_with("bg-"), "{}", grant.id);

    // The requester holds no breakglass.approve; a security officer asking for
    // itself cannot approve its own grant either.
    expect_code(
        approve(&mut vault, SUPPORT, &grant).await,
        Code::PermissionDenied,
    );
    let own = request(&mut vault, BOB, &["acme"]).await;
    let refused = expect_code(approve(&mut vault, BOB, &own).await, Code::PermissionDenied);
    assert!(refused.message().contains("own"), "{refused:?}");

    // One approval is not enough, and the same approver twice is one approval.
    let once = approve(&mut vault, BOB, &grant).await.unwrap();
    assert_eq!(once.state(), v1::BreakGlassState::Pending);
    expect_code(
        approve(&mut vault, BOB, &grant).await,
        Code::FailedPrecondition,
    );
    expect_code(
        vault.list_secrets_as(SUPPORT, "acme").await,
        Code::PermissionDenied,
    );

    // The second distinct approver activates it: for acme, for metadata only.
    let active = approve(&mut vault, CAROL, &grant).await.unwrap();
    assert_eq!(active.state(), v1::BreakGlassState::Active);
    assert_eq!(active.expires_unix - active.active_since_unix, 600);
    let listed = vault.list_secrets_as(SUPPORT, "acme").await.unwrap();
    assert_eq!(listed.secrets.len(), 1);
    expect_code(
        vault.list_secrets_as(SUPPORT, "globex").await,
        Code::PermissionDenied,
    );
    let erase = vault
        .admin_as(SUPPORT)
        .erase_tenant(v1::EraseTenantRequest {
            tenant: "acme".into(),
            confirm: "acme".into(),
        })
        .await;
    expect_code(erase, Code::PermissionDenied);

    // Every request made under it names it in the audit log.
    let under: Vec<String> = vault
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("admin.list_secrets") && l.contains(SUPPORT))
        .filter(|l| l.contains("\"decision\":\"allow\""))
        .collect();
    assert_eq!(under.len(), 1, "{under:#?}");
    assert!(
        under[0].contains(&format!("\"grant\":\"breakglass/{}\"", grant.id))
            && under[0].contains(&format!("\"breakglass\":\"{}\"", grant.id)),
        "{}",
        under[0]
    );

    // A restart keeps the active grant, and the pending one.
    vault.restart().await;
    vault.unseal(&shares[..2]).await;
    vault.list_secrets_as(SUPPORT, "acme").await.unwrap();
    assert_eq!(
        state_of(&mut vault, &own).await.state(),
        v1::BreakGlassState::Pending
    );

    // It ends by itself.
    clock.advance(Duration::from_secs(601));
    expect_code(
        vault.list_secrets_as(SUPPORT, "acme").await,
        Code::PermissionDenied,
    );
    let ended = state_of(&mut vault, &grant).await;
    assert_eq!(ended.state(), v1::BreakGlassState::Ended);
    assert_eq!(ended.end_reason, "expired");
    // And an unapproved one lapses (the approval window is an hour).
    clock.advance(Duration::from_secs(3600));
    assert_eq!(state_of(&mut vault, &own).await.end_reason, "lapsed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_seal_end_a_grant_early() {
    let (mut vault, shares) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-acme")
        .await;

    // Revoked by its requester.
    let grant = approved(&mut vault, &["acme"]).await;
    vault.list_secrets_as(SUPPORT, "acme").await.unwrap();
    let revoked = vault
        .admin_as(SUPPORT)
        .revoke_break_glass(id(&grant))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.end_reason, "revoked");
    assert_eq!(revoked.ended_by, SUPPORT);
    expect_code(
        vault.list_secrets_as(SUPPORT, "acme").await,
        Code::PermissionDenied,
    );

    // Someone else's grant is unknown to a caller who may not end it; an approver
    // may end any.
    let grant = approved(&mut vault, &["acme-*", "acme"]).await;
    let other = "spiffe://billing.example/human/support/mallory";
    let refused = vault.admin_as(other).revoke_break_glass(id(&grant)).await;
    expect_code(refused, Code::NotFound);
    let mine = vault
        .admin_as(other)
        .list_break_glass(v1::ListBreakGlassRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(mine.grants.is_empty(), "{mine:?}");

    // A seal ends it: it stays ended after the next unseal.
    vault.list_secrets_as(SUPPORT, "acme").await.unwrap();
    vault.seal().await;
    vault.unseal(&shares[..2]).await;
    expect_code(
        vault.list_secrets_as(SUPPORT, "acme").await,
        Code::PermissionDenied,
    );
    let ended = state_of(&mut vault, &grant).await;
    assert_eq!(ended.end_reason, "sealed");
    expect_code(
        vault.admin_as(BOB).revoke_break_glass(id(&grant)).await,
        Code::FailedPrecondition,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_validated_and_bounded() {
    let (mut vault, _) = TestVault::unsealed().await;
    let mut admin = vault.admin_as(SUPPORT);
    let bad = [
        v1::RequestBreakGlassRequest {
            permissions: vec!["seal".into()],
            ..ask(&["acme"], 60)
        },
        v1::RequestBreakGlassRequest {
            permissions: vec!["breakglass.approve".into()],
            ..ask(&["acme"], 60)
        },
        ask(&[], 60),
        ask(&["ACME"], 60),
        ask(&["acme/x"], 60),
        ask(&["acme"], 0),
        ask(&["acme"], 5 * 3600),
        v1::RequestBreakGlassRequest {
            reason: " ".into(),
            ..ask(&["acme"], 60)
        },
        v1::RequestBreakGlassRequest {
            reason: "two\nlines".into(),
            ..ask(&["acme"], 60)
        },
    ];
    for request in bad {
        let status = expect_code(
            admin.request_break_glass(request.clone()).await,
            Code::InvalidArgument,
        );
        assert!(!status.message().is_empty(), "{request:?}");
    }
    for _ in 0..4 {
        admin.request_break_glass(ask(&["acme"], 60)).await.unwrap();
    }
    let status = expect_code(
        admin.request_break_glass(ask(&["acme"], 60)).await,
        Code::ResourceExhausted,
    );
    assert!(status.message().contains("revoke one"), "{status:?}");
    let malformed = admin
        .approve_break_glass(v1::BreakGlassId { id: "bg-x".into() })
        .await;
    expect_code(malformed, Code::InvalidArgument);
    let unknown = vault
        .admin_as(BOB)
        .approve_break_glass(v1::BreakGlassId {
            id: format!("bg-{}", "0".repeat(32)),
        })
        .await;
    expect_code(unknown, Code::NotFound);
}
