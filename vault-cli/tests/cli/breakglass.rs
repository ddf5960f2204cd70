//! `vaultctl breakglass` and `vaultctl tenant export` against a real vaultd: a
//! support engineer asks, two security officers approve, the engineer exports the
//! tenant under the grant, and revokes it.

use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::Vaultctl;

const SUPPORT: &str = "spiffe://billing.example/human/support/alice";
const BOB: &str = "spiffe://billing.example/human/secops/bob";
const CAROL: &str = "spiffe://billing.example/human/secops/carol";

#[test]
fn a_support_engineer_exports_a_tenant_under_an_approved_grant() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let support = Vaultctl::as_identity(&mut fixture, &addr, SUPPORT);
    let bob = Vaultctl::as_identity(&mut fixture, &addr, BOB);
    let carol = Vaultctl::as_identity(&mut fixture, &addr, CAROL);
    let shares = fixture.path("shares");
    operator.init_and_unseal(&shares);
    operator
        .run_with_stdin(
            &[
                "secret",
                "put",
                "acme",
                "byok/openai",
                "--env",
                "live",
                "--kind",
                "byok",
            ],
            b"sk-cli-export-canary\n",
        )
        .ok();

    let export = fixture.path("acme-export.json");
    let export_args = [
        "tenant",
        "export",
        "acme",
        "--out",
        export.to_str().unwrap(),
    ];
    // Refused without a grant (exit 4), and nothing is left behind.
    support.run(&export_args).code(4);
    assert!(!export.exists());

    let asked = support
        .run(&[
            "--json",
            "breakglass",
            "request",
            "--permission",
            "tenants.export",
            "--tenant",
            "acme",
            "--duration",
            "15m",
            "--reason",
            "GDPR request from acme",
        ])
        .ok();
    let grant: serde_json::Value = serde_json::from_str(&asked.stdout).unwrap();
    let id = grant["id"].as_str().unwrap().to_owned();
    assert_eq!(grant["state"], "pending");
    // The requester may not approve; one approval leaves it pending.
    support.run(&["breakglass", "approve", &id]).code(4);
    let once = bob.run(&["breakglass", "approve", &id]).ok();
    assert!(once.stdout.contains("pending"), "{}", once.stdout);
    let listed = bob.run(&["breakglass", "list"]).ok();
    assert!(
        listed.stdout.contains(&id) && listed.stdout.contains("1/2"),
        "{}",
        listed.stdout
    );
    let active = carol.run(&["breakglass", "approve", &id]).ok();
    assert!(active.stdout.contains("active until"), "{}", active.stdout);

    support.run(&export_args).ok();
    let text = std::fs::read_to_string(&export).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["secrets"][0]["name"], "byok/openai");
    assert!(!text.contains("sk-cli-export-canary"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // An existing file is never overwritten.
    support.run(&export_args).code(7);

    // The export under the grant names it in its record.
    let log = std::fs::read_to_string(fixture.path("audit.jsonl")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("admin.export_tenant")
            && l.contains(SUPPORT)
            && l.contains(&format!("\"breakglass\":\"{id}\""))),
        "no export record names the grant"
    );

    // Revoked by its requester: refused again.
    support.run(&["breakglass", "revoke", &id]).ok();
    let again = fixture.path("again.json");
    support
        .run(&["tenant", "export", "acme", "--out", again.to_str().unwrap()])
        .code(4);
    let own = support.run(&["breakglass", "list"]).ok();
    assert!(own.stdout.contains("ended (revoked)"), "{}", own.stdout);

    // The alerts show in status: the request, approvals, use and revocation.
    let status = operator.run(&["status"]).ok().stdout;
    for kind in [
        "admin.request_break_glass 1",
        "admin.approve_break_glass 2",
        "breakglass.use 1", // the export under the grant
        "admin.revoke_break_glass 1",
    ] {
        assert!(status.contains(kind), "{kind}: {status}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&operator.run(&["--json", "status"]).ok().stdout).unwrap();
    assert_eq!(json["alerts"]["breakglass.use"], 1);
    assert_eq!(json["recent_alerts"][0]["kind"], "admin.revoke_break_glass");
    assert_eq!(json["recent_alerts"][0]["identity"], SUPPORT);
}
