//! Roles limited to tenants, over real mTLS: a customer-success engineer reads the
//! metadata of the tenant in its own identity and nothing else; a policy that gives
//! such a role a permission it could never use is refused with its file and line.

use tonic::Code;
use vault_proto::v1;

use crate::harness::{TestVault, expect_code};

/// `customer-success` in `policies/admins.toml`, for tenant acme.
const ACME_CS: &str = "spiffe://billing.example/human/cs/acme/ann";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_limited_to_its_tenant_reads_that_tenant_only() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-a")
        .await;
    vault
        .put_secret("globex", "live", "byok/openai", b"sk-g")
        .await;

    assert_eq!(
        vault
            .list_secrets_as(ACME_CS, "acme")
            .await
            .unwrap()
            .secrets
            .len(),
        1
    );
    let keys = vault
        .admin_as(ACME_CS)
        .list_api_keys(v1::ListApiKeysRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await;
    keys.unwrap();
    expect_code(
        vault.list_secrets_as(ACME_CS, "globex").await,
        Code::PermissionDenied,
    );
    let delete = vault
        .admin_as(ACME_CS)
        .delete_secret(v1::DeleteSecretRequest {
            secret: Some(crate::harness::secret_ref("acme", "live", "byok/openai")),
        })
        .await;
    expect_code(delete, Code::PermissionDenied);
    expect_code(
        vault.admin_as(ACME_CS).status(v1::StatusRequest {}).await,
        Code::PermissionDenied,
    );
    // The decision names the role.
    let allowed = vault
        .audit_lines()
        .into_iter()
        .find(|l| l.contains(ACME_CS) && l.contains("\"decision\":\"allow\""))
        .unwrap();
    assert!(
        allowed.contains("\"grant\":\"customer-success\""),
        "{allowed}"
    );

    // A tenant-limited role naming a permission that acts on no tenant is refused
    // whole, with where it is; the loaded set stays.
    std::fs::write(
        vault.path("policies/zz-cs.toml"),
        "# on-call support\n[[role]]\nid = \"oncall\"\nidentities = [\"spiffe://x/*\"]\n\
         permissions = [\"secrets.read-metadata\", \"seal\"]\ntenants = [\"acme\"]\n",
    )
    .unwrap();
    let status = expect_code(
        vault
            .admin()
            .reload_policies(v1::ReloadPoliciesRequest {})
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("zz-cs.toml:2:"), "{status:?}");
    assert!(status.message().contains("\"seal\""), "{status:?}");
    vault.list_secrets_as(ACME_CS, "acme").await.unwrap();
}
