//! `vaultctl audit search`: exactly the records of a known story that match, each
//! line as the log holds it; and a refusal for a caller without `audit.read`.

use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::{ADMIN, GATEWAY, Vaultctl};

/// The event records of the log file whose `field` is `value`, as lines.
fn expected(log: &str, field: &str, value: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["kind"] == "event" && record[field] == value
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn search_by_tenant_and_by_identity_returns_exactly_the_matching_records() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let admin = Vaultctl::as_identity(&mut fixture, &addr, ADMIN);
    let shares = fixture.path("shares");
    operator.init_and_unseal(&shares);
    for (tenant, value) in [
        ("acme", "sk-acme-canary-1"),
        ("globex", "sk-globex-canary-2"),
    ] {
        admin
            .run_with_stdin(
                &[
                    "secret",
                    "put",
                    tenant,
                    "byok/openai",
                    "--env",
                    "live",
                    "--kind",
                    "byok",
                ],
                format!("{value}\n").as_bytes(),
            )
            .ok();
    }
    admin.run(&["secret", "list", "acme", "--env", "live"]).ok();
    // A caller without audit.read is refused.
    Vaultctl::as_identity(&mut fixture, &addr, GATEWAY)
        .run(&["audit", "search"])
        .code(4);

    // The log as it stands after each search: a search records itself (with its
    // filters) before it reads, so a search by tenant finds its own record too.
    let log = || std::fs::read_to_string(fixture.path("audit.jsonl")).unwrap();
    let acme = operator.run(&["audit", "search", "--tenant", "acme"]).ok();
    let found: Vec<&str> = acme.stdout.lines().collect();
    assert_eq!(found, expected(&log(), "tenant", "acme"));
    let operations: Vec<String> = found
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["operation"].to_string())
        .collect();
    // The put's intent and outcome, the list, and this search.
    assert_eq!(
        operations,
        [
            "\"admin.put_secret\"",
            "\"admin.put_secret\"",
            "\"admin.list_secrets\"",
            "\"admin.search_audit\""
        ]
    );
    let by_admin = operator.run(&["audit", "search", "--identity", ADMIN]).ok();
    let found: Vec<&str> = by_admin.stdout.lines().collect();
    assert_eq!(found, expected(&log(), "identity", ADMIN));
    for tenant in ["acme", "globex"] {
        let put = format!("\"operation\":\"admin.put_secret\",\"tenant\":\"{tenant}\"");
        assert!(found.iter().any(|l| l.contains(&put)), "{found:?}");
    }
    // Narrower: the admin's puts only, and a limit.
    let puts = operator
        .run(&[
            "audit",
            "search",
            "--identity",
            ADMIN,
            "--operation",
            "admin.put_*",
            "--decision",
            "allow",
            "--limit",
            "1",
        ])
        .ok();
    assert_eq!(puts.stdout.lines().count(), 1);
    assert!(puts.stdout.contains("\"tenant\":\"acme\""), "{puts:?}");
    // No value reaches the log, so none comes back.
    assert!(!by_admin.stdout.contains("canary"));
    // The searches themselves were audited, with their filters.
    assert!(log().contains("\"filter_identity\":\"spiffe://billing.example/human/admin/alice\""));
}
