//! The policy language end to end: parsing, errors, evaluation and its laws.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use vault_policy::{
    Operation, Outcome, Permission, PermissionRequest, PolicyErrorKind, PolicySet, Request,
};

fn examples() -> PolicySet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    PolicySet::load_dir(&dir).unwrap()
}

fn lease<'a>(identity: &'a str, tenant: &'a str, env: &'a str, secret: &'a str) -> Request<'a> {
    Request {
        identity,
        operation: Operation::Lease,
        tenant,
        environment: env,
        secret: Some(secret),
    }
}

#[test]
fn the_example_policies_load_and_decide() {
    let set = examples();
    let gateway = "spiffe://billing.example/svc/gateway";
    let d = set.evaluate(&lease(gateway, "acme", "live", "byok/openai"));
    assert!(d.allowed, "{d}");
    assert_eq!(d.decided_by.unwrap().id, "gateway-byok");
    assert_eq!(d.max_ttl, Some(std::time::Duration::from_secs(300)));
    assert!(
        !set.evaluate(&lease(gateway, "acme", "live", "webhooks/x"))
            .allowed
    );

    // {tenant} capture: a worker of acme may lease acme's secrets, never globex's.
    let worker = "spiffe://billing.example/tenant/acme/svc/sync";
    assert!(
        set.evaluate(&lease(worker, "acme", "live", "byok/openai"))
            .allowed
    );
    let wrong = set.evaluate(&lease(worker, "globex", "live", "byok/openai"));
    assert!(!wrong.allowed);
    assert!(
        wrong
            .trace
            .iter()
            .any(|t| t.rule.id == "tenant-worker" && t.outcome == Outcome::Tenant)
    );

    // The deny wins over the worker grant for test workers on live.
    let test_worker = "spiffe://billing.example/tenant/acme/svc/sync-test";
    let denied = set.evaluate(&lease(test_worker, "acme", "live", "byok/openai"));
    assert!(!denied.allowed);
    assert_eq!(denied.decided_by.unwrap().id, "test-workers-stay-in-test");
    assert!(
        set.evaluate(&lease(test_worker, "acme", "test", "byok/openai"))
            .allowed
    );

    let erase = |identity| PermissionRequest {
        identity,
        permission: Permission::TenantsErase,
        tenant: Some("acme"),
        any_tenant: false,
    };
    assert!(
        set.authorize(&erase("spiffe://billing.example/human/secops/ann"))
            .allowed
    );
    assert!(
        !set.authorize(&erase("spiffe://billing.example/human/admin/bob"))
            .allowed
    );
    let nobody = set.evaluate(&lease(
        "spiffe://elsewhere/x",
        "acme",
        "live",
        "byok/openai",
    ));
    assert!(!nobody.allowed && nobody.decided_by.is_none());
    assert!(
        nobody
            .to_string()
            .starts_with("DENY: no grant or role matched")
    );
}

fn parse_err(text: &str) -> (usize, PolicyErrorKind) {
    let e = PolicySet::parse(Path::new("p.toml"), text).unwrap_err();
    assert_eq!(e.file, PathBuf::from("p.toml"));
    (e.line, e.kind)
}

#[test]
fn errors_name_the_line_and_reason() {
    let (line, kind) = parse_err(
        "\n\n[[grant]]\nid = \"g\"\nidentities = [\"a\"]\noperations = [\"lease\"]\ntenants = [\"*\"]\nenvironments = [\"live\"]\n",
    );
    assert_eq!(line, 3);
    assert!(matches!(kind, PolicyErrorKind::MissingSecrets));

    let (line, kind) = parse_err(
        "[[grant]]\nid = \"g\"\nidentities = [\"a\"]\noperations = [\"decrypt\"]\ntenants = [\"*\"]\nenvironments = [\"live\"]\n",
    );
    assert_eq!(line, 1);
    assert!(
        kind.to_string().contains("unknown operation \"decrypt\""),
        "{kind}"
    );

    let (_, kind) = parse_err(
        "[[grant]]\nid = \"g\"\nidentities = [\"spiffe://x/{org}/*\"]\noperations = [\"transit.encrypt\"]\ntenants = [\"{tenant}\"]\nenvironments = [\"live\"]\n",
    );
    assert!(
        matches!(kind, PolicyErrorKind::UnboundCapture { .. }),
        "{kind}"
    );

    let (line, kind) = parse_err(
        "[[role]]\nid = \"r\"\nidentities = [\"a\"]\npermissions = [\"status\"]\nextra = 1\n",
    );
    assert!(matches!(kind, PolicyErrorKind::Syntax(_)));
    assert!(line >= 1, "syntax errors carry a line");

    let (line, kind) = parse_err(
        "[[role]]\nid = \"r\"\nidentities = [\"a\"]\npermissions = [\"status\"]\n[[role]]\nid = \"r\"\nidentities = [\"b\"]\npermissions = [\"seal\"]\n",
    );
    assert_eq!(line, 5);
    assert!(matches!(kind, PolicyErrorKind::DuplicateId(_)));
    let (_, kind) = parse_err(
        "[[grant]]\nid = \"g\"\nidentities = [\"a\"]\noperations = [\"transit.encrypt\"]\ntenants = [\"*\"]\nenvironments = [\"prod\"]\n",
    );
    assert!(matches!(kind, PolicyErrorKind::Environment(_)));
    let (_, kind) = parse_err(
        "[[grant]]\nid = \"g\"\nidentities = [\"a\"]\noperations = [\"lease\"]\ntenants = [\"*\"]\nenvironments = [\"live\"]\nsecrets = [\"*\"]\nmax_ttl = \"31d\"\n",
    );
    assert!(matches!(kind, PolicyErrorKind::TtlTooLong(_)), "{kind}");
}

#[test]
fn a_broken_file_rejects_the_directory_and_empty_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = PolicySet::load_dir(dir.path()).unwrap_err();
    assert!(matches!(empty.kind, PolicyErrorKind::NoPolicies));
    std::fs::write(
        dir.path().join("a.toml"),
        "[[role]]\nid = \"r\"\nidentities = [\"a\"]\npermissions = [\"status\"]\n",
    )
    .unwrap();
    assert!(PolicySet::load_dir(dir.path()).is_ok());
    std::fs::write(dir.path().join("b.toml"), "[[role]\n").unwrap();
    let e = PolicySet::load_dir(dir.path()).unwrap_err();
    assert!(e.file.ends_with("b.toml"), "{e}");
    assert!(e.to_string().contains("b.toml:1:"), "{e}");
}

fn grant_everything(identity_pattern: &str) -> String {
    format!(
        "[[grant]]\nid = \"all\"\nidentities = [\"{identity_pattern}\"]\noperations = [\"lease\", \"transit.encrypt\", \"transit.decrypt\", \"apikeys.verify\"]\ntenants = [\"*\"]\nenvironments = [\"*\"]\nsecrets = [\"**\"]\n"
    )
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Lease),
        Just(Operation::TransitEncrypt),
        Just(Operation::TransitDecrypt),
        Just(Operation::ApiKeysVerify),
    ]
}

proptest! {
    #[test]
    fn deny_wins_over_any_grant(
        svc in "[a-z]{1,8}",
        tenant in "[a-z0-9]{1,8}",
        live in any::<bool>(),
        secret in "[a-z]{1,6}(/[a-z]{1,6}){0,2}",
        op in operation(),
    ) {
        let text = format!(
            "{}[[deny]]\nid = \"no\"\nidentities = [\"spiffe://x/{svc}\"]\nactions = [\"{op}\"]\n",
            grant_everything("spiffe://x/*")
        );
        let set = PolicySet::parse(Path::new("p.toml"), &text).unwrap();
        let identity = format!("spiffe://x/{svc}");
        let env = if live { "live" } else { "test" };
        let req = Request { identity: &identity, operation: op, tenant: &tenant, environment: env, secret: Some(&secret) };
        let d = set.evaluate(&req);
        prop_assert!(!d.allowed);
        prop_assert_eq!(d.decided_by.map(|r| r.id), Some("no".to_owned()));
        // Without the deny the same request is allowed: the grant really covers it.
        let open = PolicySet::parse(Path::new("p.toml"), &grant_everything("spiffe://x/*")).unwrap();
        prop_assert!(open.evaluate(&req).allowed);
    }

    #[test]
    fn no_matching_rule_means_deny(
        identity in "\\PC{0,40}",
        tenant in "\\PC{0,20}",
        op in operation(),
    ) {
        let set = examples();
        let req = Request { identity: &identity, operation: op, tenant: &tenant, environment: "live", secret: Some("byok/x") };
        let d = set.evaluate(&req);
        // Only identities under the example trust domain can ever be allowed.
        if !identity.starts_with("spiffe://billing.example/") {
            prop_assert!(!d.allowed);
            prop_assert!(d.decided_by.is_none());
        }
    }

    #[test]
    fn parsing_never_panics(text in "\\PC{0,300}") {
        let _ = PolicySet::parse(Path::new("fuzz.toml"), &text);
    }
}

#[test]
fn a_grant_carries_its_rates_and_verification_anywhere_is_known() {
    let text = r#"
        [[grant]]
        id = "gw"
        identities = ["spiffe://x/gw"]
        operations = ["apikeys.verify"]
        tenants = ["acme"]
        environments = ["live"]
        rate = { burst = 50, per_minute = 600 }

        [[grant]]
        id = "lessee"
        identities = ["spiffe://x/svc/*"]
        operations = ["lease"]
        tenants = ["*"]
        environments = ["live"]
        secrets = ["*"]

        [[deny]]
        id = "never"
        identities = ["spiffe://x/svc/banned"]
        actions = ["lease"]
    "#;
    let set = PolicySet::parse(Path::new("p.toml"), text).unwrap();
    let d = set.evaluate(&Request {
        identity: "spiffe://x/gw",
        operation: Operation::ApiKeysVerify,
        tenant: "acme",
        environment: "live",
        secret: None,
    });
    assert!(d.allowed);
    assert_eq!(
        d.rate,
        Some(vault_policy::Rate {
            burst: 50,
            per_minute: 600,
            per_day: 0
        })
    );
    assert_eq!(
        set.evaluate(&lease("spiffe://x/svc/a", "t", "live", "s"))
            .rate,
        None
    );

    assert!(set.grants_somewhere("spiffe://x/gw", Operation::ApiKeysVerify));
    assert!(!set.grants_somewhere("spiffe://x/gw", Operation::Lease));
    assert!(!set.grants_somewhere("spiffe://x/other", Operation::ApiKeysVerify));
    assert!(set.grants_somewhere("spiffe://x/svc/a", Operation::Lease));
    assert!(!set.grants_somewhere("spiffe://x/svc/banned", Operation::Lease));

    let bad = text.replace("per_minute = 600", "per_hour = 600");
    assert!(PolicySet::parse(Path::new("p.toml"), &bad).is_err());
}

#[test]
fn roles_limited_to_tenants_cover_those_tenants_only() {
    let set = PolicySet::parse(
        Path::new("cs.toml"),
        r#"
[[role]]
id = "customer-success"
identities = ["spiffe://billing.example/human/cs/{tenant}/*"]
permissions = ["secrets.read-metadata"]
tenants = ["{tenant}"]

[[role]]
id = "emea-support"
identities = ["spiffe://billing.example/human/emea/*"]
permissions = ["secrets.read-metadata", "apikeys.revoke"]
tenants = ["eu-*"]
"#,
    )
    .unwrap();
    let ask = |identity, permission, tenant, any_tenant| {
        set.authorize(&PermissionRequest {
            identity,
            permission,
            tenant,
            any_tenant,
        })
        .allowed
    };
    let cs = "spiffe://billing.example/human/cs/acme/ann";
    assert!(ask(
        cs,
        Permission::SecretsReadMetadata,
        Some("acme"),
        false
    ));
    assert!(!ask(
        cs,
        Permission::SecretsReadMetadata,
        Some("globex"),
        false
    ));
    assert!(!ask(cs, Permission::SecretsWrite, Some("acme"), false));
    // A request about no tenant is not covered; a lookup before the tenant is known is.
    assert!(!ask(cs, Permission::SecretsReadMetadata, None, false));
    assert!(ask(cs, Permission::SecretsReadMetadata, None, true));

    let emea = "spiffe://billing.example/human/emea/bo";
    assert!(ask(emea, Permission::ApiKeysRevoke, Some("eu-acme"), false));
    assert!(!ask(
        emea,
        Permission::ApiKeysRevoke,
        Some("us-acme"),
        false
    ));
    let explained = set
        .explain(emea, "secrets.read-metadata", "us-acme", "", None)
        .unwrap();
    assert!(
        explained.to_string().contains("does not cover this tenant"),
        "{explained}"
    );
}

#[test]
fn a_role_limited_to_tenants_may_name_only_per_tenant_permissions() {
    for global in [
        "status",
        "seal",
        "unseal",
        "rekey",
        "leases.read",
        "leases.revoke",
        "policy.reload",
        "audit.read",
        "breakglass.approve",
        "snapshot.save",
        "node.join",
    ] {
        let (line, kind) = parse_err(&format!(
            "# a comment\n[[role]]\nid = \"r\"\nidentities = [\"a\"]\npermissions = [\"secrets.write\", \"{global}\"]\ntenants = [\"acme\"]\n"
        ));
        assert_eq!(line, 2, "{global}");
        assert!(
            matches!(&kind, PolicyErrorKind::NotPerTenant(p) if p == global),
            "{global}: {kind}"
        );
        assert!(kind.to_string().contains("secrets.read-metadata"), "{kind}");
    }
    let (_, kind) = parse_err(
        "[[role]]\nid = \"r\"\nidentities = [\"spiffe://x/*\"]\npermissions = [\"secrets.write\"]\ntenants = [\"{tenant}\"]\n",
    );
    assert!(
        matches!(kind, PolicyErrorKind::UnboundCapture { .. }),
        "{kind}"
    );
    for name in Permission::names() {
        let permission = Permission::parse(name).unwrap();
        let text = format!(
            "[[role]]\nid = \"r\"\nidentities = [\"a\"]\npermissions = [\"{name}\"]\ntenants = [\"acme\"]\n"
        );
        assert_eq!(
            PolicySet::parse(Path::new("p.toml"), &text).is_ok(),
            permission.per_tenant(),
            "{name}"
        );
    }
}
