//! The certificate lifecycle: defaults and bounds, renewal, revocation with a CRL that
//! a real vaultd enforces, and how vaultctl tells a refused or expired client
//! certificate (exit 4, the likely cause, the next step).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use vault_pki::{Certificate, Subject};
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;
use vault_testkit::{ClientSpec, Pki};

use crate::{ADMIN, CUSTODIAN, GATEWAY, Vaultctl, snapshot};

const DAY: u64 = 86_400;

fn read_cert(path: &Path) -> Certificate {
    Certificate::from_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Whole days from now until `cert` expires (rounded to the nearest day).
fn days_left(cert: &Certificate) -> u64 {
    let left = cert
        .not_after()
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs();
    (left + DAY / 2) / DAY
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn certificates_are_short_lived_by_default_and_renew_with_the_same_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ca = root.join("ca");
    let ctl = Vaultctl::bare();
    ctl.run(&["pki", "init-ca", "--dir", s(&ca)]).ok();
    assert_eq!(days_left(&read_cert(&ca.join("ca.pem"))), 1825);
    ctl.run(&[
        "pki",
        "issue-server",
        "--ca-dir",
        s(&ca),
        "--dns",
        "vault-1.internal",
        "--ip",
        "10.0.0.5",
        "--out",
        s(&root.join("server")),
    ])
    .ok();
    let server = read_cert(&root.join("server.pem"));
    assert_eq!(days_left(&server), 90);
    let gateway = "spiffe://billing.example/svc/gateway";
    let issued = ctl
        .run(&[
            "pki",
            "issue-client",
            "--ca-dir",
            s(&ca),
            "--spiffe-id",
            gateway,
            "--out",
            s(&root.join("gateway")),
            "--json",
        ])
        .ok();
    let issued: serde_json::Value = serde_json::from_str(&issued.stdout).unwrap();
    let client = read_cert(&root.join("gateway.pem"));
    assert_eq!(days_left(&client), 30);
    assert_eq!(issued["not_after"], vault_pki::rfc3339(client.not_after()));

    // --days is bounded by the kind of certificate, and the message says the range.
    let long = ctl
        .run(&[
            "pki",
            "issue-client",
            "--ca-dir",
            s(&ca),
            "--spiffe-id",
            gateway,
            "--out",
            s(&root.join("long")),
            "--days",
            "366",
        ])
        .code(7);
    snapshot(
        &long.stderr,
        "vaultctl: a client certificate must be valid for 1..=365 days, not 366
         pass --days from 1 to 365 (default 30)",
    );
    assert!(!root.join("long.key").exists());

    // Renewal: the same SPIFFE ID, a new key and serial, never over existing files.
    let renewed = ctl
        .run(&[
            "pki",
            "renew",
            "--ca-dir",
            s(&ca),
            s(&root.join("gateway.pem")),
            "--out",
            s(&root.join("gateway-2")),
        ])
        .ok();
    snapshot(
        &renewed.stdout,
        "wrote a renewed client certificate for spiffe://billing.example/svc/gateway: [..]gateway-2.pem and [..]gateway-2.key (mode 0600), valid until [..]Z
         the old certificate (serial [..]) stays valid until [..]Z; move the new files into place, and revoke the old one (`vaultctl pki revoke`) if it must stop sooner",
    );
    let new = read_cert(&root.join("gateway-2.pem"));
    assert_eq!(new.subject(), client.subject());
    assert_ne!(new.serial(), client.serial());
    assert_eq!(days_left(&new), 30);
    assert_eq!(mode(&root.join("gateway-2.key")), 0o600);
    assert_ne!(
        std::fs::read(root.join("gateway-2.key")).unwrap(),
        std::fs::read(root.join("gateway.key")).unwrap()
    );
    let again = ctl
        .run(&[
            "pki",
            "renew",
            "--ca-dir",
            s(&ca),
            s(&root.join("gateway.pem")),
            "--out",
            s(&root.join("gateway-2")),
        ])
        .code(7);
    assert!(again.stderr.contains("never overwritten"), "{again:?}");
    let renewed_server = ctl
        .run(&[
            "pki",
            "renew",
            "--ca-dir",
            s(&ca),
            s(&root.join("server.pem")),
            "--out",
            s(&root.join("server-2")),
            "--days",
            "5",
            "--json",
        ])
        .ok();
    let renewed_server: serde_json::Value = serde_json::from_str(&renewed_server.stdout).unwrap();
    assert_eq!(renewed_server["subject"], "vault-1.internal, 10.0.0.5");
    assert_eq!(
        renewed_server["previous"]["serial"],
        server.serial().to_string()
    );
    let server_2 = read_cert(&root.join("server-2.pem"));
    assert_eq!(
        server_2.subject(),
        &Subject::Server {
            dns: vec!["vault-1.internal".into()],
            ips: vec!["10.0.0.5".parse().unwrap()]
        }
    );
    assert_eq!(days_left(&server_2), 5);

    // A CA certificate names no one to renew.
    let nothing = ctl
        .run(&[
            "pki",
            "renew",
            "--ca-dir",
            s(&ca),
            s(&ca.join("ca.pem")),
            "--out",
            s(&root.join("x")),
        ])
        .code(7);
    assert!(
        nothing.stderr.contains("issue a new one instead"),
        "{nothing:?}"
    );
}

#[test]
fn only_the_issuing_ca_renews_unless_a_foreign_certificate_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (ca, old) = (root.join("ca"), root.join("old"));
    let ctl = Vaultctl::bare();
    ctl.run(&["pki", "init-ca", "--dir", s(&ca)]).ok();
    ctl.run(&["pki", "init-ca", "--dir", s(&old), "--name", "old CA"])
        .ok();
    ctl.run(&[
        "pki",
        "issue-client",
        "--ca-dir",
        s(&old),
        "--spiffe-id",
        OPERATOR,
        "--out",
        s(&root.join("foreign")),
    ])
    .ok();
    let (foreign, moved) = (root.join("foreign.pem"), root.join("moved"));
    let renew = |extra: &[&str]| {
        let mut args = vec![
            "pki",
            "renew",
            "--ca-dir",
            s(&ca),
            s(&foreign),
            "--out",
            s(&moved),
        ];
        args.extend_from_slice(extra);
        ctl.run(&args)
    };
    let refused = renew(&[]).code(7);
    snapshot(
        &refused.stderr,
        r#"vaultctl: [..]foreign.pem: the certificate was not signed by this CA ("CN=vaultd CA"); its issuer is "CN=old CA"
           renew it with the --ca-dir of the CA that issued it; to move it to this CA because the old CA is being replaced, pass --allow-foreign"#,
    );
    assert!(!root.join("moved.key").exists() && !root.join("moved.pem").exists());

    // The CA-replacement path: asked for by name, and said.
    let moved = renew(&["--allow-foreign"]).ok();
    snapshot(
        &moved.stdout,
        r#"wrote a renewed client certificate for [..]: [..]moved.pem and [..]moved.key (mode 0600), valid until [..]Z
             reissued under CN=vaultd CA (the old one was issued by "CN=old CA"): vaultd and clients must trust this CA
             the old certificate (serial [..]) stays valid until [..]Z; move the new files into place, and revoke the old one (`vaultctl pki revoke`) if it must stop sooner"#,
    );
    let (foreign, moved) = (
        read_cert(&root.join("foreign.pem")),
        read_cert(&root.join("moved.pem")),
    );
    assert_eq!(moved.subject(), foreign.subject());
    assert_eq!(moved.issuer(), "CN=vaultd CA");
}

#[test]
fn only_the_issuing_ca_revokes_and_bad_values_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (ca, other) = (root.join("ca"), root.join("other"));
    let ctl = Vaultctl::bare();
    ctl.run(&["pki", "init-ca", "--dir", s(&ca)]).ok();
    ctl.run(&["pki", "init-ca", "--dir", s(&other), "--name", "other CA"])
        .ok();
    ctl.run(&[
        "pki",
        "issue-client",
        "--ca-dir",
        s(&other),
        "--spiffe-id",
        OPERATOR,
        "--out",
        s(&root.join("foreign")),
    ])
    .ok();
    let foreign = ctl
        .run(&[
            "pki",
            "revoke",
            "--ca-dir",
            s(&ca),
            s(&root.join("foreign.pem")),
        ])
        .code(7);
    snapshot(
        &foreign.stderr,
        r#"vaultctl: [..]foreign.pem: the certificate was not signed by this CA ("CN=vaultd CA"); its issuer is "CN=other CA"
           a CRL revokes only its own CA's certificates: use the --ca-dir of "CN=other CA""#,
    );
    let short = ctl
        .run(&[
            "pki",
            "revoke",
            "--ca-dir",
            s(&other),
            s(&root.join("foreign.pem")),
            "--next-update",
            "10m",
        ])
        .code(7);
    snapshot(
        &short.stderr,
        "vaultctl: a CRL's next update must be 1 hour to 366 days away, not 600 seconds
         pass --next-update from 1h to 366d (default 7d)",
    );
    // Nothing was recorded, and no CRL number used up.
    assert!(!other.join(vault_pki::REVOKED_FILE).exists());
    let published = ctl
        .run(&["pki", "crl", "--ca-dir", s(&other), "--json"])
        .ok();
    let published: serde_json::Value = serde_json::from_str(&published.stdout).unwrap();
    assert_eq!(published["revoked"], 0);
    assert_eq!(published["crl_number"], 1);
    assert!(!ca.join(vault_pki::REVOKED_FILE).exists());
    assert!(!ca.join(vault_pki::CRL_FILE).exists());
}

/// Waits until vaultd's log has a line containing `text`.
fn logged(vaultd: &VaultProcess, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if vaultd.log().iter().any(|l| l.contains(text)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A daemon on a PKI made by `vaultctl pki`, with its CRL in tls.crls; the CA
/// directory and the directory of the fixture.
fn daemon_on_vaultctl_pki() -> (Fixture, PathBuf) {
    let fixture = Fixture::new(&FixtureOptions {
        crl: true,
        ..FixtureOptions::default()
    });
    let ca = fixture.path("pki");
    let ctl = Vaultctl::bare();
    ctl.run(&["pki", "init-ca", "--dir", s(&ca)]).ok();
    ctl.run(&[
        "pki",
        "issue-server",
        "--ca-dir",
        s(&ca),
        "--dns",
        "localhost",
        "--out",
        s(&fixture.path("pki-server")),
    ])
    .ok();
    // The fixture's configuration names these files: the testkit's PKI gives way.
    for (from, to) in [
        (ca.join("ca.pem"), "ca.pem"),
        (fixture.path("pki-server.pem"), "server.pem"),
        (fixture.path("pki-server.key"), "server.key"),
    ] {
        std::fs::copy(from, fixture.path(to)).unwrap();
    }
    (fixture, ca)
}

#[test]
fn a_certificate_revoked_by_vaultctl_is_refused_by_vaultd_and_says_what_to_do() {
    let (fixture, ca) = daemon_on_vaultctl_pki();
    let ctl = Vaultctl::bare();
    let crl = fixture.path("clients.crl");
    for name in ["operator", "victim", "spare"] {
        ctl.run(&[
            "pki",
            "issue-client",
            "--ca-dir",
            s(&ca),
            "--spiffe-id",
            OPERATOR,
            "--out",
            s(&fixture.path(name)),
        ])
        .ok();
    }
    let victim = read_cert(&fixture.path("victim.pem"));
    let revoked = ctl
        .run(&[
            "pki",
            "revoke",
            "--ca-dir",
            s(&ca),
            s(&fixture.path("victim.pem")),
            "--reason",
            "key-compromise",
            "--crl-out",
            s(&crl),
        ])
        .ok();
    snapshot(
        &revoked.stdout,
        &format!(
            "revoked certificate {} ({OPERATOR}; reason key-compromise)
             wrote CRL #1 to [..]clients.crl: 1 revoked, valid until [..]Z
             vaultd reads it from tls.crls on start and on reload (SIGHUP); publish again before then (`vaultctl pki crl`), or vaultd refuses every certificate of this CA",
            victim.serial()
        ),
    );
    // The list is the CA's record: 0600, and a later revocation keeps earlier entries.
    let list = ca.join(vault_pki::REVOKED_FILE);
    assert_eq!(mode(&list), 0o600);
    ctl.run(&[
        "pki",
        "revoke",
        "--ca-dir",
        s(&ca),
        s(&fixture.path("spare.pem")),
        "--crl-out",
        s(&crl),
    ])
    .ok();
    let again = ctl
        .run(&[
            "pki",
            "revoke",
            "--ca-dir",
            s(&ca),
            s(&fixture.path("victim.pem")),
            "--crl-out",
            s(&crl),
            "--json",
        ])
        .ok();
    let again: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["already_revoked"], true);
    assert_eq!(again["reason"], "key-compromise");
    assert_eq!(again["crl"]["revoked"], 2);
    assert_eq!(again["crl"]["crl_number"], 3);
    let text = std::fs::read_to_string(&list).unwrap();
    assert!(
        text.contains(&format!("serial = \"{}\"", victim.serial())),
        "{text}"
    );
    assert_eq!(text.matches("[[revoked]]").count(), 2, "{text}");

    // A fresh vaultd on that CRL: the revoked certificate is refused with exit 4, the
    // cause and the next step; the others work.
    let vaultd = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", vaultd.grpc.port());
    let as_files = |name: &str| {
        Vaultctl::bare()
            .set("VAULTD_CACERT", ca.join("ca.pem"))
            .set("VAULTD_CLIENT_CERT", fixture.path(&format!("{name}.pem")))
            .set("VAULTD_CLIENT_KEY", fixture.path(&format!("{name}.key")))
    };
    as_files("operator").run(&["status", "--addr", &addr]).ok();
    let refused = as_files("victim").run(&["status", "--addr", &addr]).code(4);
    snapshot(
        &refused.stderr,
        "vaultctl: vaultd refused the client certificate: it has been revoked (TLS alert certificate_revoked)
         ask for a new certificate from the CA vaultd trusts: `vaultctl pki issue-client --ca-dir CA_DIR --spiffe-id ID --out PREFIX` (a revoked certificate is never renewed)",
    );
    assert!(refused.stdout.is_empty());
    let json = as_files("victim")
        .run(&["status", "--addr", &addr, "--json"])
        .code(4);
    let json: serde_json::Value = serde_json::from_str(json.stderr.trim()).unwrap();
    assert_eq!(json["error"]["kind"], "refused");
    assert!(logged(&vaultd, "(revoked)"), "{:#?}", vaultd.log());

    // Revoked while vaultd runs: the new CRL takes effect on SIGHUP.
    as_files("spare").run(&["status", "--addr", &addr]).code(4);
    ctl.run(&[
        "pki",
        "issue-client",
        "--ca-dir",
        s(&ca),
        "--spiffe-id",
        OPERATOR,
        "--out",
        s(&fixture.path("late")),
    ])
    .ok();
    as_files("late").run(&["status", "--addr", &addr]).ok();
    ctl.run(&[
        "pki",
        "revoke",
        "--ca-dir",
        s(&ca),
        s(&fixture.path("late.pem")),
        "--crl-out",
        s(&crl),
    ])
    .ok();
    vaultd.signal(rustix::process::Signal::HUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = as_files("late").run(&["status", "--addr", &addr]);
        if run.code == 4 {
            assert!(run.stderr.contains("it has been revoked"), "{run:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still accepted after SIGHUP: {run:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    as_files("operator").run(&["status", "--addr", &addr]).ok();

    // A revoked certificate is never renewed, not even with --allow-foreign: the
    // identity is issued a fresh one on purpose, whose serial the CRL does not list.
    let (victim_pem, renewed) = (fixture.path("victim.pem"), fixture.path("renewed"));
    for flags in [&[][..], &["--allow-foreign"][..]] {
        let mut args = vec![
            "pki",
            "renew",
            "--ca-dir",
            s(&ca),
            s(&victim_pem),
            "--out",
            s(&renewed),
        ];
        args.extend_from_slice(flags);
        let refused = ctl.run(&args).code(7);
        snapshot(
            &refused.stderr,
            &format!(
                "vaultctl: [..]victim.pem: certificate {} was revoked on [..]Z (reason key-compromise), so it cannot be renewed
                 a revoked certificate is never renewed: if this identity keeps its access, issue it a fresh one (`vaultctl pki issue-client` or `vaultctl pki issue-server`)",
                victim.serial()
            ),
        );
        assert!(!fixture.path("renewed.key").exists());
        assert!(!fixture.path("renewed.pem").exists());
    }
    ctl.run(&[
        "pki",
        "issue-client",
        "--ca-dir",
        s(&ca),
        "--spiffe-id",
        OPERATOR,
        "--out",
        s(&fixture.path("renewed")),
    ])
    .ok();
    as_files("renewed").run(&["status", "--addr", &addr]).ok();

    // `pki crl` publishes again, revoking nothing new, with a later next update.
    let before = std::fs::read(&crl).unwrap();
    let published = ctl
        .run(&[
            "pki",
            "crl",
            "--ca-dir",
            s(&ca),
            "--crl-out",
            s(&crl),
            "--next-update",
            "30d",
        ])
        .ok();
    snapshot(
        &published.stdout,
        "wrote CRL #5 to [..]clients.crl: 3 revoked, valid until [..]Z
         vaultd reads it from tls.crls on start and on reload (SIGHUP); publish again before then (`vaultctl pki crl`), or vaultd refuses every certificate of this CA",
    );
    assert_ne!(std::fs::read(&crl).unwrap(), before);
    assert_eq!(mode(&crl), 0o644);
}

#[test]
fn foreign_and_expired_client_certificates_exit_4_with_the_cause_and_the_next_step() {
    let fixture = Fixture::new(&FixtureOptions::default());
    let vaultd = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", vaultd.grpc.port());
    let write = |name: &str, issued: &vault_testkit::Issued| {
        let (cert, key) = (
            fixture.path(&format!("{name}.pem")),
            fixture.path(&format!("{name}.key")),
        );
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        Vaultctl::bare()
            .set("VAULTD_CACERT", fixture.path("ca.pem"))
            .set("VAULTD_CLIENT_CERT", cert)
            .set("VAULTD_CLIENT_KEY", key)
    };
    // From a CA vaultd does not trust: refused at the handshake.
    let foreign = Pki::generate("another CA").spiffe_client(OPERATOR);
    let run = write("foreign", &foreign)
        .run(&["status", "--addr", &addr])
        .code(4);
    snapshot(
        &run.stderr,
        "vaultctl: vaultd refused the client certificate: it is not from a CA vaultd trusts, or vaultd's CRL for its CA is out of date (TLS alert unknown_ca)
         use a certificate from the CA vaultd trusts (its tls.client_ca): `vaultctl pki issue-client --ca-dir CA_DIR --spiffe-id ID --out PREFIX`; if it is from that CA, vaultd's CRL is out of date: `vaultctl pki crl --ca-dir CA_DIR`, then reload vaultd (SIGHUP)",
    );
    assert!(logged(&vaultd, "(unknown_ca)"), "{:#?}", vaultd.log());
    // Expired: said before connecting, with how to renew.
    let mut pki = Pki::generate("vaultd test CA");
    let expired = pki.client(&ClientSpec {
        uris: vec![OPERATOR.into()],
        expired: true,
        ..ClientSpec::default()
    });
    let run = write("expired", &expired)
        .run(&["status", "--addr", &addr])
        .code(4);
    snapshot(
        &run.stderr,
        r#"vaultctl: the client certificate in [..]expired.pem cannot be used: it expired on [..]
           renew it: `vaultctl pki renew --ca-dir CA_DIR "$VAULTD_CLIENT_CERT" --out NEW_PREFIX` (with the CA's directory), then point VAULTD_CLIENT_CERT and VAULTD_CLIENT_KEY at the new files"#,
    );
    // A server certificate used as a client's (it names a DNS identity): the wrong
    // usage is named.
    let server = fixture.path("server.pem");
    let run = Vaultctl::bare()
        .set("VAULTD_CACERT", fixture.path("ca.pem"))
        .set("VAULTD_CLIENT_CERT", &server)
        .set("VAULTD_CLIENT_KEY", fixture.path("server.key"))
        .run(&["status", "--addr", &addr]);
    let run = run.code(4);
    snapshot(
        &run.stderr,
        "vaultctl: vaultd refused the client certificate: it is not usable as a client certificate: the wrong extended key usage (a server certificate?), a signature that does not verify, or a malformed certificate (TLS alert unsupported_certificate)
         use a client certificate (extended key usage clientAuth, one spiffe:// URI SAN) from `vaultctl pki issue-client`, not a server certificate",
    );
}

#[test]
fn the_readme_deployment_with_vaultctl_pki_stores_and_leases_a_secret() {
    let (fixture, ca) = daemon_on_vaultctl_pki();
    let ctl = Vaultctl::bare();
    for (name, identity) in [("carol", CUSTODIAN), ("alice", ADMIN), ("gateway", GATEWAY)] {
        ctl.run(&[
            "pki",
            "issue-client",
            "--ca-dir",
            s(&ca),
            "--spiffe-id",
            identity,
            "--out",
            s(&fixture.path(name)),
        ])
        .ok();
    }
    ctl.run(&[
        "pki",
        "crl",
        "--ca-dir",
        s(&ca),
        "--crl-out",
        s(&fixture.path("clients.crl")),
        "--next-update",
        "30d",
    ])
    .ok();
    let vaultd = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", vaultd.grpc.port());
    let as_files = |name: &str| {
        Vaultctl::bare()
            .set("VAULTD_CACERT", ca.join("ca.pem"))
            .set("VAULTD_CLIENT_CERT", fixture.path(&format!("{name}.pem")))
            .set("VAULTD_CLIENT_KEY", fixture.path(&format!("{name}.key")))
    };
    let (carol, alice, gateway) = (as_files("carol"), as_files("alice"), as_files("gateway"));
    let shares = fixture.path("shares");
    carol
        .run(&[
            "init",
            "--addr",
            &addr,
            "--shares",
            "1",
            "--threshold",
            "1",
            "--share-dir",
            s(&shares),
        ])
        .ok();
    carol
        .run(&[
            "unseal",
            "--addr",
            &addr,
            "--share-file",
            s(&shares.join("share-1.txt")),
        ])
        .ok();
    alice
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
                "--addr",
                &addr,
            ],
            b"sk-proj-readme",
        )
        .ok();
    let leased = gateway
        .run(&[
            "lease",
            "get",
            "acme",
            "byok/openai",
            "--env",
            "live",
            "--addr",
            &addr,
        ])
        .ok();
    assert_eq!(leased.stdout.trim_end(), "sk-proj-readme");
    let leases = alice
        .run(&["lease", "list", "--tenant", "acme", "--addr", &addr])
        .ok();
    assert!(leases.stdout.contains(GATEWAY), "{leases:#?}");
    // The gateway may lease but not write.
    gateway
        .run_with_stdin(
            &[
                "secret", "put", "acme", "byok/x", "--env", "live", "--kind", "byok", "--addr",
                &addr,
            ],
            b"sk-x",
        )
        .code(4);
}
