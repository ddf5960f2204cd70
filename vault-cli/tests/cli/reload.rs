//! `vaultctl reload`: what SIGHUP does, asked over mutual TLS, with each part's
//! outcome and what waits for a restart.

use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::{GATEWAY, Vaultctl};

#[test]
fn reload_reports_each_part_and_what_needs_a_restart() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);

    let run = operator.run(&["reload"]).ok();
    for part in ["config: ok", "tls: ok", "policies: ok", "audit: ok"] {
        assert!(run.stdout.contains(part), "{part}: {run:?}");
    }

    // A new log level goes into force; a moved listener waits for a restart.
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let text = text
        .replacen(
            "node = \"test-node\"\n",
            "node = \"test-node\"\nlog_level = \"warn\"\n",
            1,
        )
        .replacen("http = \"127.0.0.1:0\"", "http = \"127.0.0.1:1\"", 1);
    std::fs::write(&fixture.config, text).unwrap();
    let run = operator.run(&["reload", "--json"]).code(8);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["complete"], false, "{run:?}");
    assert_eq!(report["needs_restart"], serde_json::json!(["listen.http"]));
    assert!(run.stdout.contains("log_level"), "{run:?}");

    // Reloading is an operator's: a service identity is refused.
    let gateway = Vaultctl::as_identity(&mut fixture, &addr, GATEWAY);
    gateway.run(&["reload"]).code(4);
}
