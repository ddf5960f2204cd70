//! Tenant export over real mTLS: a tenant with secrets, API keys and an audit
//! history. The export holds their metadata and the tenant's audit records, never a
//! value, a key, a hint or a fingerprint; its records are the log's lines at their
//! chain positions, and the log verifies.

use tokio_stream::StreamExt;
use tonic::Code;
use vault_proto::v1;

use crate::harness::{GATEWAY, Options, TestVault, expect_code, key_request, lease_value};

async fn export(vault: &mut TestVault, who: &str, tenant: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = vault
        .admin_as(who)
        .export_tenant(v1::ExportTenantRequest {
            tenant: tenant.into(),
        })
        .await?
        .into_inner();
    let mut document = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        assert!(!chunk.data.is_empty() && chunk.data.len() <= 64 * 1024);
        document.extend(chunk.data);
    }
    Ok(document)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_metadata_and_the_tenants_audit_records_and_nothing_secret() {
    let (mut vault, _) = TestVault::unsealed_with(Options::default()).await;
    let canary_openai = "sk-export-canary-openai-0123456789";
    let canary_rotated = "sk-export-canary-rotated-9876543210";
    let openai = vault
        .put_secret("acme", "live", "byok/openai", canary_openai.as_bytes())
        .await;
    let rotated = vault
        .rotate_secret(
            "acme",
            "live",
            "byok/openai",
            canary_rotated.as_bytes(),
            None,
        )
        .await;
    vault
        .put_secret("acme", "test", "byok/anthropic", b"sk-export-canary-test")
        .await;
    vault
        .put_secret("globex", "live", "byok/openai", b"sk-globex-elsewhere")
        .await;
    let (api_key, info) = vault
        .issue_api_key(key_request("acme", "live", &["usage:read"]))
        .await;
    let (mut gateway, session) = vault.session(GATEWAY).await;
    lease_value(&mut gateway, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();

    // Without tenants.export: refused.
    let support = "spiffe://billing.example/human/support/alice";
    expect_code(
        export(&mut vault, support, "acme").await,
        Code::PermissionDenied,
    );
    expect_code(
        export(&mut vault, crate::harness::OPERATOR, "Not A Tenant").await,
        Code::InvalidArgument,
    );

    let document = export(&mut vault, crate::harness::OPERATOR, "acme")
        .await
        .unwrap();
    let text = String::from_utf8(document).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["format"], "vaultd-tenant-export/1");
    assert_eq!(json["tenant"], "acme");

    let secrets = json["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2, "{secrets:#?}");
    let live = secrets.iter().find(|s| s["environment"] == "live").unwrap();
    assert_eq!(live["name"], "byok/openai");
    assert_eq!(live["current_version"], 2);
    assert_eq!(live["versions"][0]["state"], "grace");
    let keys = json["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], info.key_id.as_str());
    assert_eq!(keys[0]["state"], "active");

    // Nothing secret, nor anything derived from a secret.
    let versions = openai.versions.iter().chain(&rotated.versions);
    let mut canaries = vec![
        canary_openai.to_owned(),
        canary_rotated.to_owned(),
        "sk-export-canary-test".to_owned(),
        api_key.clone(),
        info.hint.clone(),
    ];
    for v in versions {
        canaries.push(v.hint.clone());
        canaries.push(v.fingerprint.clone());
    }
    for canary in canaries.iter().filter(|c| !c.is_empty()) {
        assert!(
            !text.contains(canary.as_str()),
            "the export holds {canary:?}"
        );
    }
    assert!(
        !text.contains("globex"),
        "another tenant's name is in the export"
    );

    // The audit records are the tenant's, exactly as written, at their positions.
    let log = vault.audit_lines();
    let audit = json["audit"].as_array().unwrap();
    let recorded: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("\"tenant\":\"acme\""))
        .collect();
    assert!(audit.len() >= 6, "{audit:#?}");
    // Everything about acme written before the export was read, in order, and the
    // export's own record among them.
    assert_eq!(
        audit
            .iter()
            .map(|e| e["line"].as_str().unwrap())
            .collect::<Vec<_>>(),
        recorded[..audit.len()]
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
    );
    assert!(
        audit
            .iter()
            .any(|e| e["line"].as_str().unwrap().contains("admin.export_tenant"))
    );
    for entry in audit {
        let line = entry["line"].as_str().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed["seq"], entry["seq"], "{line}");
        assert_eq!(parsed["tenant"], "acme");
    }
    let key_hex = vault
        .admin()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .audit_public_key;
    let key = vault_audit::parse_public_key(&key_hex).unwrap();
    vault.seal().await;
    let text: String = vault
        .audit_lines()
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let report = vault_audit::verify(text.as_bytes(), Some(&key));
    assert!(report.is_ok(), "{report:?}");
}
