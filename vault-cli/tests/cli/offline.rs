//! Offline commands: pki (and a daemon that runs on what it makes), policy lint and
//! check with the daemon's engine, completions and man pages.

use std::os::unix::fs::PermissionsExt;

use vault_testkit::fixture::example_policies;

use crate::{Vaultctl, snapshot};

#[test]
fn a_real_deployment_from_vaultctl_pki() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ctl = Vaultctl::bare();
    let path = |name: &str| root.join(name).to_str().unwrap().to_owned();
    snapshot(
        &ctl.run(&["pki", "init-ca", "--dir", &path("ca"), "--days", "30"])
            .ok()
            .stdout,
        r#"wrote CA "vaultd CA": [..]ca/ca.pem (give to vaultd as tls.client_ca, and to clients as VAULTD_CACERT) and [..]ca/ca.key (mode 0600; keep it offline)"#,
    );
    ctl.run(&[
        "pki",
        "issue-server",
        "--ca-dir",
        &path("ca"),
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--out",
        &path("server"),
    ])
    .ok();
    snapshot(
        &ctl.run(&[
            "pki",
            "issue-client",
            "--ca-dir",
            &path("ca"),
            "--spiffe-id",
            "spiffe://billing.example/human/custodian/carol",
            "--out",
            &path("carol"),
        ])
        .ok()
        .stdout,
        "wrote a client certificate for spiffe://billing.example/human/custodian/carol: [..]carol.pem and [..]carol.key (mode 0600)",
    );
    for key in ["ca/ca.key", "server.key", "carol.key"] {
        assert_eq!(
            std::fs::metadata(root.join(key))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{key}"
        );
    }
    // Never overwritten.
    let again = ctl.run(&["pki", "init-ca", "--dir", &path("ca")]).code(7);
    assert!(again.stderr.contains("never overwritten"), "{again:?}");
    let bad = ctl
        .run(&[
            "pki",
            "issue-client",
            "--ca-dir",
            &path("ca"),
            "--spiffe-id",
            "https://x/y",
            "--out",
            &path("x"),
        ])
        .code(7);
    assert!(bad.stderr.contains("is not a SPIFFE ID"), "{bad:?}");

    // vaultd runs on these files, and the custodian's certificate works.
    std::fs::create_dir(root.join("policies")).unwrap();
    for entry in std::fs::read_dir(example_policies()).unwrap() {
        let entry = entry.unwrap().path();
        std::fs::copy(
            &entry,
            root.join("policies").join(entry.file_name().unwrap()),
        )
        .unwrap();
    }
    let addr = vault_testkit::fixture::free_addr();
    std::fs::write(
        root.join("vaultd.toml"),
        format!(
            "[listen]\ngrpc = \"{addr}\"\nhttp = \"127.0.0.1:0\"\n\
             [tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca/ca.pem\"\n\
             [storage]\npath = \"vault.redb\"\n[policy]\ndir = \"policies\"\n[audit]\npath = \"audit.jsonl\"\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(vault_testkit::process::vaultd_binary())
        .args(["serve", "--config", &path("vaultd.toml")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let carol = Vaultctl::bare()
        .set("VAULTD_CACERT", root.join("ca/ca.pem"))
        .set("VAULTD_CLIENT_CERT", root.join("carol.pem"))
        .set("VAULTD_CLIENT_KEY", root.join("carol.key"));
    let url = format!("https://127.0.0.1:{}", addr.port());
    let mut status = None;
    for _ in 0..200 {
        let run = carol.run(&["status", "--addr", &url]);
        if run.code == 0 {
            status = Some(run.stdout);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    snapshot(
        &status.expect("vaultd answered"),
        "uninitialised · vaultd 0.1.0 · initialise with `vaultctl init`",
    );
}

#[test]
fn policy_lint_and_check_work_offline() {
    let ctl = Vaultctl::bare();
    let dir = example_policies();
    let dir = dir.to_str().unwrap();
    snapshot(
        &ctl.run(&["policy", "lint", "--dir", dir]).ok().stdout,
        "[..]policies: ok (2 grants, 2 denies, 6 roles)",
    );
    let allowed = ctl
        .run(&[
            "policy",
            "check",
            "--dir",
            dir,
            "--identity",
            "spiffe://billing.example/tenant/acme/svc/worker",
            "--op",
            "lease",
            "--tenant",
            "acme",
            "--secret",
            "byok/openai",
        ])
        .ok();
    snapshot(
        &allowed.stdout,
        "allowed by tenant-worker
         KIND   RULE  [..]WHERE  [..]OUTCOME
         deny   only-secops-erase  [..]admins.toml:[..]  identity does not match
         deny   test-workers-stay-in-test  [..]tenant-workers.toml:[..]  identity does not match
         grant  gateway-byok  [..]billing-gateway.toml:[..]  identity does not match
         grant  tenant-worker  [..]tenant-workers.toml:[..]  matched",
    );
    let denied = ctl
        .run(&[
            "policy",
            "check",
            "--dir",
            dir,
            "--identity",
            "spiffe://billing.example/tenant/acme/svc/worker",
            "--op",
            "lease",
            "--tenant",
            "globex",
            "--secret",
            "byok/openai",
        ])
        .code(8);
    assert!(
        denied
            .stdout
            .starts_with("denied: no grant or role matched (default deny)"),
        "{denied:?}"
    );
    assert!(
        denied.stdout.contains("does not cover this tenant"),
        "{denied:?}"
    );
    let json = ctl
        .run(&[
            "policy",
            "check",
            "--dir",
            dir,
            "--identity",
            "spiffe://billing.example/human/admin/alice",
            "--op",
            "tenants.erase",
            "--tenant",
            "acme",
            "--json",
        ])
        .code(8);
    let answer: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(answer["allowed"], false);
    assert_eq!(answer["decided_by"], "only-secops-erase");

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("bad.toml"),
        "[[role]]\nid = \"r\"\nidentities = [\"spiffe://x/*\"]\npermissions = [\"fly\"]\n",
    )
    .unwrap();
    let run = ctl
        .run(&["policy", "lint", "--dir", broken.path().to_str().unwrap()])
        .code(8);
    snapshot(
        &run.stderr,
        r#"vaultctl: policy error: [..]bad.toml:1: unknown permission "fly"; roles may name: [..]
           fix the file and line named; the daemon would keep its previous policies"#,
    );
}

#[test]
fn completions_and_man_pages() {
    let ctl = Vaultctl::bare();
    let bash = ctl.run(&["completions", "bash"]).ok();
    assert!(bash.stdout.contains("vaultctl") && bash.stdout.contains("unseal"));
    let dir = tempfile::tempdir().unwrap();
    ctl.run(&["man", "--dir", dir.path().to_str().unwrap()])
        .ok();
    let page = std::fs::read_to_string(dir.path().join("vaultctl.1")).unwrap();
    assert!(
        page.contains("Exit codes"),
        "the man page documents exit codes"
    );
    assert!(dir.path().join("vaultctl-unseal.1").exists());
    let help = ctl.run(&["--help"]).ok();
    assert!(help.stdout.contains("8  a check failed"));
}

#[test]
fn vaultd_logs_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let run = |format: &str| {
        std::process::Command::new(vault_testkit::process::vaultd_binary())
            .args(["--log-format", format, "serve", "--config"])
            .arg(&missing)
            .output()
            .unwrap()
    };
    let json = run("json");
    assert_eq!(json.status.code(), Some(78), "{json:?}");
    let stderr = String::from_utf8(json.stderr).unwrap();
    let line: serde_json::Value = serde_json::from_str(stderr.lines().next().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(line["level"], "ERROR");
    let message = line["fields"]["message"].as_str().unwrap();
    assert!(message.contains("invalid configuration"), "{message}");
    // The default stays text.
    let text = String::from_utf8(run("text").stderr).unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(text.trim()).is_err(),
        "{text}"
    );
    assert!(text.contains("ERROR invalid configuration"), "{text}");
}
