//! `vaultctl apikey` against a real vaultd: a new key appears exactly once (alone on
//! stdout, or in a new 0600 file), verify reads the key from stdin and never from
//! arguments, refusals and limits exit with their documented codes, and rotate,
//! revoke and list show where keys stand.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::{GATEWAY, Run, Vaultctl, snapshot};

/// An initialised, unsealed daemon; the operator issues keys, the gateway verifies.
fn unsealed() -> (Fixture, VaultProcess, Vaultctl, Vaultctl) {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let gateway = Vaultctl::as_identity(&mut fixture, &addr, GATEWAY);
    let dir = fixture.path("shares");
    let dir = dir.to_str().unwrap();
    operator
        .run(&[
            "init",
            "--shares",
            "1",
            "--threshold",
            "1",
            "--share-dir",
            dir,
        ])
        .ok();
    let share = format!("{dir}/share-1.txt");
    operator.run(&["unseal", "--share-file", &share]).ok();
    (fixture, process, operator, gateway)
}

/// The key a run printed: its stdout holds the key and a newline, nothing else.
#[track_caller]
fn printed_key(run: &Run) -> String {
    let key = run
        .stdout
        .strip_suffix('\n')
        .expect("a newline after the key");
    assert!(!key.contains('\n'), "more than the key on stdout: {run:?}");
    assert_eq!(key.len(), 51, "{key:?}");
    key.to_owned()
}

/// The parts of a key: its id, and its secret (what must appear nowhere else).
fn parts(key: &str) -> (&str, &str) {
    (&key[8..20], &key[21..])
}

/// For a run whose stdout is the key itself.
#[track_caller]
fn stderr_never_shows(secret: &str, run: &Run) {
    assert!(!run.stderr.contains(secret), "the key was echoed: {run:#?}");
}

#[track_caller]
fn never_shows(secret: &str, run: &Run) {
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "the key was echoed: {run:#?}"
    );
}

#[test]
fn a_key_from_issue_through_verify_rotate_and_revoke() {
    let (_fixture, _vaultd, operator, gateway) = unsealed();
    let issued = operator
        .run(&[
            "apikey",
            "issue",
            "--tenant",
            "acme",
            "--scope",
            "usage:read",
            "--scope",
            "usage:write",
            "--label",
            "ci",
        ])
        .ok();
    let key = printed_key(&issued);
    let (id, secret) = parts(&key);
    assert!(key.starts_with(&format!("vk_live_{id}_")));
    stderr_never_shows(secret, &issued);
    let issued = operator
        .run(&["apikey", "issue", "--tenant", "acme", "--label", "other"])
        .ok();
    snapshot(
        &issued.stderr,
        "issued vk_live_[..]_… (key id [..]) for tenant acme in live
           scopes: none
           limits: tier standard ([..] per 10 s, [..] per minute, [..] per day)
           daily quota: none
           expires: never
           label: other
         the key above is shown once and stored nowhere: vaultd keeps only a MAC of it",
    );

    // Verify: the key on stdin; a refusal exits 4 and says what to do.
    let verify = |args: &[&str], input: &str| {
        let mut all = vec!["apikey", "verify"];
        all.extend_from_slice(args);
        let run = gateway.run_with_stdin(&all, input.as_bytes());
        never_shows(secret, &run);
        run
    };
    let line = format!("{key}\n");
    snapshot(
        &verify(&["--scope", "usage:read"], &line).ok().stdout,
        &format!(
            "valid: key {id} of tenant acme (live)
               scopes: usage:read, usage:write
               no daily quota"
        ),
    );
    let json: Value = serde_json::from_str(&verify(&["--json"], &key).ok().stdout).unwrap();
    assert_eq!(json["key_id"], id);
    assert_eq!(json["tenant"], "acme");
    assert_eq!(json["quota_remaining"], Value::Null);
    snapshot(
        &verify(&["--scope", "admin"], &line).code(4).stderr,
        "vaultctl: the API key lacks the scope this request needs
           the key does not grant --scope; issue one that does (`vaultctl apikey issue --scope …`)",
    );
    snapshot(
        &verify(&["--env", "test"], &line).code(4).stderr,
        "vaultctl: the API key belongs to the other environment (live and test never mix)
           pass --env for the key's own environment; live and test keys never mix",
    );
    let mut typo = key.clone();
    typo.replace_range(30..31, if &key[30..31] == "a" { "b" } else { "a" });
    snapshot(
        &verify(&[], &typo).code(4).stderr,
        "vaultctl: the API key is not valid: the API key's checksum does not match: a typo or a truncated copy
           check that the whole key was copied (vk_live_… or vk_test_…, 51 characters)",
    );
    verify(&[], "\n").code(7);

    // Never from arguments: there is no such argument, and --key is the TLS key file.
    let on_argv = gateway.run(&["apikey", "verify", &key]).code(2);
    assert!(
        on_argv.stderr.contains("unexpected argument"),
        "{on_argv:?}"
    );
    let as_key = gateway.run(&["apikey", "verify", "--key", &key]).code(7);
    never_shows(secret, &as_key);
    snapshot(
        &as_key.stderr,
        "vaultctl: --key names your client key file (VAULTD_CLIENT_KEY), not an API key
           an API key is read from stdin or a hidden prompt; the one on the command line is visible to other users: rotate it (`vaultctl apikey rotate`)",
    );

    // Rotate: the successor is printed as at issue; both verify during the grace.
    let rotated = operator
        .run(&["apikey", "rotate", id, "--grace", "1h"])
        .ok();
    let successor = printed_key(&rotated);
    let (new_id, new_secret) = parts(&successor);
    stderr_never_shows(new_secret, &rotated);
    verify(&[], &key).ok();
    verify(&[], &successor).ok();
    let listed = operator
        .run(&["apikey", "list", "--tenant", "acme", "--json"])
        .ok();
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    let entry = |id: &str| {
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry(id)["state"], "rotated");
    assert_eq!(entry(id)["successor"], new_id);
    assert_eq!(entry(id)["label"], "ci");
    assert_eq!(entry(new_id)["state"], "active");

    // Revoke: refused at once, with the revoked reason.
    snapshot(
        &operator.run(&["apikey", "revoke", new_id]).ok().stdout,
        &format!(
            "revoked key {new_id} of tenant acme (live): vaultd refuses it from now on, and verifiers were told"
        ),
    );
    snapshot(
        &verify(&[], &successor).code(4).stderr,
        "vaultctl: the API key was revoked
           the key was revoked; its owner needs a new one (`vaultctl apikey issue`)",
    );
    let human = operator
        .run(&["apikey", "list", "--tenant", "acme"])
        .ok()
        .stdout;
    assert!(
        human.starts_with("KEY ID        ENV   STATE")
            && human.contains("SCOPES")
            && human.contains("QUOTA TODAY"),
        "{human}"
    );
    assert!(
        human
            .lines()
            .any(|l| l.starts_with(&format!("{id}  live  rotated to {new_id}, valid until "))),
        "{human}"
    );
    assert!(
        human
            .lines()
            .any(|l| l.starts_with(&format!("{new_id}  live  revoked"))),
        "{human}"
    );
    snapshot(
        &operator
            .run(&["apikey", "list", "--tenant", "globex"])
            .ok()
            .stdout,
        "tenant globex has no API keys",
    );
}

#[test]
fn out_writes_a_new_0600_file_once_and_never_overwrites() {
    let (fixture, _vaultd, operator, gateway) = unsealed();
    let path = fixture.path("acme-test.key");
    let out = path.to_str().unwrap();
    let issue = [
        "apikey", "issue", "--tenant", "acme", "--env", "test", "--out", out,
    ];
    let written = operator.run(&issue).ok();
    assert_eq!(written.stdout, "", "nothing on stdout with --out");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let key = text.strip_suffix('\n').unwrap();
    assert!(key.starts_with("vk_test_") && key.len() == 51, "{text:?}");
    let (id, secret) = parts(key);
    never_shows(secret, &written);
    snapshot(
        &written.stderr,
        &format!(
            "issued vk_test_{id}_… (key id {id}) for tenant acme in test
               scopes: none
               limits: [..]
               daily quota: none
               expires: never
             the key is in [..]/acme-test.key (mode 0600), and nowhere else: vaultd keeps only a MAC of it"
        ),
    );
    // By default a key is verified for its own environment.
    gateway
        .run_with_stdin(&["apikey", "verify"], text.as_bytes())
        .ok();

    // An existing file is refused before any key is issued, and left as it was.
    let again = operator.run(&issue).code(7);
    snapshot(
        &again.stderr,
        "vaultctl: [..]/acme-test.key already exists
           a key file is never overwritten: choose a new --out path",
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    let listed = operator
        .run(&["apikey", "list", "--tenant", "acme", "--json"])
        .ok();
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "no second key");
    // A refused issue leaves no file behind.
    let refused = fixture.path("refused.key");
    operator
        .run(&[
            "apikey",
            "issue",
            "--tenant",
            "ACME",
            "--out",
            refused.to_str().unwrap(),
        ])
        .code(7);
    assert!(!refused.exists());
}

#[test]
fn json_metadata_goes_to_stderr_and_a_spent_quota_exits_9() {
    let (_fixture, _vaultd, operator, gateway) = unsealed();
    let issued = operator
        .run(&[
            "apikey",
            "issue",
            "--tenant",
            "acme",
            "--daily-quota",
            "1",
            "--burst",
            "50",
            "--per-minute",
            "0",
            "--per-day",
            "0",
            "--expires-in",
            "30d",
            "--json",
        ])
        .ok();
    let key = printed_key(&issued);
    let (id, secret) = parts(&key);
    stderr_never_shows(secret, &issued);
    let info: Value = serde_json::from_str(issued.stderr.trim()).unwrap();
    assert_eq!(info["key_id"], id);
    assert_eq!(info["daily_quota"], 1);
    assert_eq!(info["limits"]["burst"], 50);
    assert_eq!(info["tier"], Value::Null);
    assert!(info["expires_unix"].as_i64().unwrap() > 0);
    assert_eq!(info["written_to"], Value::Null);

    let ok = gateway
        .run_with_stdin(&["apikey", "verify"], key.as_bytes())
        .ok();
    snapshot(
        &ok.stdout,
        &format!(
            "valid: key {id} of tenant acme (live)
               scopes: none
               0 quota units left today"
        ),
    );
    let spent = gateway
        .run_with_stdin(&["apikey", "verify"], key.as_bytes())
        .code(9);
    snapshot(
        &spent.stderr,
        "vaultctl: the api key daily quota is spent; it resets at midnight UTC
           retry after [..] s",
    );
    let spent = gateway
        .run_with_stdin(&["apikey", "verify", "--json"], key.as_bytes())
        .code(9);
    let error: Value = serde_json::from_str(spent.stderr.trim()).unwrap();
    assert_eq!(error["error"]["kind"], "limited");
    let help = Vaultctl::bare().run(&["--help"]).ok();
    assert!(help.stdout.contains("9  limited"), "{}", help.stdout);
}
