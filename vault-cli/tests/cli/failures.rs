//! Failure paths: each says what went wrong and what to do, with a documented code.

use vault_testkit::Pki;
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::{CUSTODIAN, GATEWAY, Vaultctl, snapshot};

/// A daemon initialised with one share and unsealed, holding acme's byok/openai.
fn unsealed() -> (Fixture, VaultProcess, String, std::path::PathBuf) {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let dir = fixture.path("shares");
    let share = operator.init_and_unseal(&dir);
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
            b"sk-x",
        )
        .ok();
    (fixture, process, addr, share)
}

#[test]
fn missing_settings_name_the_variable_to_set() {
    let run = Vaultctl::bare().run(&["secret", "list", "acme"]).code(3);
    snapshot(
        &run.stderr,
        "vaultctl: no vaultd address: VAULTD_ADDR is not set
         set VAULTD_ADDR=https://HOST:PORT (or --addr), or VAULTD_SOCKET for status, init, unseal and seal; `vaultd dev` prints the lines to paste",
    );
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let run = Vaultctl::as_identity(&mut fixture, "https://localhost:1", GATEWAY)
        .unset("VAULTD_CLIENT_CERT")
        .run(&["lease", "get", "acme", "byok/openai", "--env", "live"])
        .code(3);
    snapshot(
        &run.stderr,
        "vaultctl: no client certificate: VAULTD_CLIENT_CERT is not set
         set VAULTD_CLIENT_CERT and VAULTD_CLIENT_KEY (or --cert and --key); vaultd accepts only mutual TLS",
    );
    let run = Vaultctl::as_identity(&mut fixture, "https://localhost:1", GATEWAY)
        .set("VAULTD_CACERT", fixture.path("nope.pem"))
        .run(&["status"])
        .code(3);
    snapshot(
        &run.stderr,
        "vaultctl: cannot read the CA certificate from [..]/nope.pem: No such file or directory (os error 2)
         check --cacert/--cert/--key (VAULTD_CACERT, VAULTD_CLIENT_CERT, VAULTD_CLIENT_KEY)",
    );
    // --json errors are machine-readable.
    let run = Vaultctl::bare()
        .run(&["secret", "list", "acme", "--json"])
        .code(3);
    let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(error["error"]["kind"], "connect");
}

#[test]
fn a_wrong_ca_an_unreachable_daemon_and_a_sealed_one() {
    let (mut fixture, process, addr, share) = unsealed();
    let other = Pki::generate("another CA");
    std::fs::write(fixture.path("other-ca.pem"), &other.ca_pem).unwrap();
    let run = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR)
        .set("VAULTD_CACERT", fixture.path("other-ca.pem"))
        .run(&["status"])
        .code(3);
    snapshot(
        &run.stderr,
        "vaultctl: the TLS handshake with vaultd failed: [..]certificate[..]
         is VAULTD_CACERT the CA that signed vaultd's certificate, and does VAULTD_ADDR use a name in it?",
    );

    let free = vault_testkit::fixture::free_addr();
    let run = Vaultctl::as_identity(
        &mut fixture,
        &format!("https://localhost:{}", free.port()),
        OPERATOR,
    )
    .run(&["status"])
    .code(3);
    snapshot(
        &run.stderr,
        "vaultctl: vaultd unavailable: [..]
         check VAULTD_ADDR and that vaultd is running (vaultd serve, or vaultd dev)",
    );

    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    operator.run(&["seal"]).ok();
    let gateway = Vaultctl::as_identity(&mut fixture, &addr, GATEWAY);
    let run = gateway
        .run(&["lease", "get", "acme", "byok/openai", "--env", "live"])
        .code(5);
    snapshot(
        &run.stderr,
        "vaultctl: vaultd unavailable: vaultd is sealed; custodians must unseal it
         custodians unseal it with `vaultctl unseal`; `vaultctl status` shows the progress",
    );
    assert!(run.stdout.is_empty());
    // Over the local socket, a custodian on the host unseals without a certificate.
    let run = Vaultctl::bare()
        .set("VAULTD_SOCKET", fixture.socket())
        .run(&["unseal", "--share-file", share.to_str().unwrap()])
        .ok();
    snapshot(&run.stdout, "unsealed");
    drop(process);
}

#[test]
fn permission_denied_names_the_missing_permission() {
    let (mut fixture, _process, addr, _) = unsealed();
    let custodian = Vaultctl::as_identity(&mut fixture, &addr, CUSTODIAN);
    let run = custodian
        .run_with_stdin(
            &[
                "secret", "put", "acme", "byok/new", "--env", "live", "--kind", "byok",
            ],
            b"v",
        )
        .code(4);
    snapshot(
        &run.stderr,
        r#"vaultctl: permission denied: your identity is not allowed "secrets.write" on this target
           ask an administrator for a role or grant that allows it; `vaultctl policy check` explains decisions"#,
    );
    // A value over 1 MiB is refused before anything is sent.
    let huge = vec![b'x'; (1 << 20) + 1];
    let run = custodian
        .run_with_stdin(
            &[
                "secret", "put", "acme", "byok/new", "--env", "live", "--kind", "byok",
            ],
            &huge,
        )
        .code(7);
    assert!(run.stderr.contains("larger than 1 MiB"), "{run:?}");
    let run = custodian.run(&["lease", "revoke", "--all"]).code(4);
    assert!(run.stderr.contains(r#""leases.revoke""#), "{run:?}");
}

#[test]
fn bad_shares_are_refused_with_what_to_check() {
    let (mut fixture, _process, addr, _) = unsealed();
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    operator.run(&["seal"]).ok();

    // A truncated copy fails its checksum before it is sent.
    let truncated = fixture.path("truncated.txt");
    let text = std::fs::read_to_string(fixture.path("shares/share-1.txt")).unwrap();
    std::fs::write(&truncated, &text.trim()[..text.trim().len() - 2]).unwrap();
    let run = operator
        .run(&["unseal", "--share-file", truncated.to_str().unwrap()])
        .code(7);
    snapshot(
        &run.stderr,
        "vaultctl: share file [..]truncated.txt is not a valid share: [..]
         a share looks like vs1-… (or vsf1-… for a passphrase-protected file)",
    );

    // A well-formed share of another vault: vaultd finds it does not unseal.
    let mut other = Fixture::new(&FixtureOptions::default());
    let other_process = VaultProcess::start(&other);
    let other_addr = format!("https://localhost:{}", other_process.grpc.port());
    let dir = other.path("shares");
    Vaultctl::as_identity(&mut other, &other_addr, OPERATOR)
        .run(&[
            "init",
            "--shares",
            "1",
            "--threshold",
            "1",
            "--share-dir",
            dir.to_str().unwrap(),
        ])
        .ok();
    let foreign = dir.join("share-1.txt");
    let run = operator
        .run(&["unseal", "--share-file", foreign.to_str().unwrap()])
        .code(7);
    snapshot(
        &run.stderr,
        "vaultctl: the shares do not reconstruct the unseal key; progress was discarded
         check the share file; if the shares do not match, every custodian submits again",
    );
    // Shares never come from arguments: there is no flag for one.
    let run = operator.run(&["unseal", "vs1-00"]).code(2);
    assert!(run.stderr.contains("unexpected argument"), "{run:?}");
}

#[test]
fn rekey_settles_where_shares_go_before_changing_anything() {
    let (mut fixture, _process, addr, share) = unsealed();
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let share = share.to_str().unwrap();
    let used = fixture.path("shares");
    let run = operator
        .run(&[
            "rekey",
            "--shares",
            "2",
            "--threshold",
            "2",
            "--share-file",
            share,
            "--share-dir",
            used.to_str().unwrap(),
        ])
        .code(7);
    assert!(run.stderr.contains("is not empty"), "{run:?}");
    let status: serde_json::Value =
        serde_json::from_str(&operator.run(&["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(status["generation"], 1, "the share set must not change");

    // An empty passphrase is refused before the rekey, too.
    let fresh = fixture.path("new-shares");
    let args = [
        "rekey",
        "--shares",
        "2",
        "--threshold",
        "2",
        "--share-file",
        share,
        "--share-dir",
        fresh.to_str().unwrap(),
        "--passphrase-protect",
    ];
    operator
        .run_with_stdin(&args, b"pw-one\npw-one\n\n")
        .code(7);
    let run = operator.run_with_stdin(&args, b"pw-one\npw-0ne\n").code(7);
    assert!(run.stderr.contains("differ"), "{run:?}");
    let status: serde_json::Value =
        serde_json::from_str(&operator.run(&["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(status["generation"], 1);

    let run = operator
        .run_with_stdin(&args, b"pw-one\npw-one\npw-two\npw-two\n")
        .ok();
    snapshot(
        &run.stdout,
        "wrote 2 share files (mode 0600, passphrase-protected) in [..]new-shares: give one to each custodian; any 2 unseal vaultd",
    );
    let first = fresh.join("share-1.txt");
    let second = fresh.join("share-2.txt");
    assert!(
        std::fs::read_to_string(&first)
            .unwrap()
            .starts_with("vsf1-")
    );
    // The new set is pending until a quorum of it is verified.
    let run = operator
        .run_with_stdin(
            &[
                "rekey-verify",
                "--share-file",
                first.to_str().unwrap(),
                "--share-file",
                second.to_str().unwrap(),
            ],
            b"pw-one\npw-two\n",
        )
        .ok();
    assert!(run.stdout.contains("is in force"), "{run:?}");
    operator.run(&["seal"]).ok();
    let run = operator
        .run_with_stdin(
            &["unseal", "--share-file", first.to_str().unwrap()],
            b"pw-two\n",
        )
        .code(7);
    assert!(run.stderr.contains("wrong passphrase"), "{run:?}");
    let run = operator
        .run_with_stdin(
            &["unseal", "--share-file", first.to_str().unwrap()],
            b"pw-one\n",
        )
        .ok();
    snapshot(&run.stdout, "1 of 2 shares submitted; 1 more needed");
    let run = operator
        .run_with_stdin(
            &["unseal", "--share-file", second.to_str().unwrap()],
            b"pw-two\n",
        )
        .ok();
    snapshot(&run.stdout, "unsealed");
}

#[test]
fn shares_without_a_share_dir_are_printed_once_and_work() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let _process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", _process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let run = operator
        .run(&["init", "--shares", "2", "--threshold", "2"])
        .ok();
    snapshot(&run.stdout, "share 1: vs1-[..]\nshare 2: vs1-[..]");
    assert!(
        run.stderr.contains("shown once and stored nowhere"),
        "{run:?}"
    );
    let shares: Vec<String> = run
        .stdout
        .lines()
        .map(|l| l.split_once(": ").unwrap().1.to_owned())
        .collect();
    // Typed at the prompt (stdin here).
    operator
        .run_with_stdin(&["unseal"], format!("{}\n", shares[0]).as_bytes())
        .ok();
    snapshot(
        &operator
            .run_with_stdin(&["unseal"], format!("{}\n", shares[1]).as_bytes())
            .ok()
            .stdout,
        "unsealed",
    );
    // Rekey with --json prints the new shares as JSON.
    let mut stdin = format!("{}\n{}\n", shares[0], shares[1]);
    let run = operator
        .run_with_stdin(
            &["rekey", "--shares", "3", "--threshold", "2", "--json"],
            stdin.as_bytes(),
        )
        .ok();
    stdin.clear();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["threshold"], 2);
    let new: Vec<&str> = json["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["share"].as_str().unwrap())
        .collect();
    assert_eq!(new.len(), 3);
    assert!(new.iter().all(|s| s.starts_with("vs1-")));
    assert_eq!(json["shares"][2]["number"], 3);
    // Pending until a quorum of the new shares is verified.
    let generation = || {
        let status: serde_json::Value =
            serde_json::from_str(&operator.run(&["status", "--json"]).ok().stdout).unwrap();
        status["generation"].clone()
    };
    assert_eq!(generation(), 1);
    let files: Vec<String> = new[..2]
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let path = fixture.path(&format!("new-share-{i}.txt"));
            std::fs::write(&path, format!("{share}\n")).unwrap();
            path.to_str().unwrap().to_owned()
        })
        .collect();
    let verified = operator
        .run(&[
            "rekey-verify",
            "--share-file",
            &files[0],
            "--share-file",
            &files[1],
        ])
        .ok();
    assert!(verified.stdout.contains("is in force"), "{verified:?}");
    assert_eq!(generation(), 2);
}

#[test]
fn a_grace_window_past_the_maximum_is_refused_with_the_reason() {
    let (mut fixture, _process, addr, _) = unsealed();
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let rotate = |grace: &str| {
        operator.run_with_stdin(
            &[
                "secret",
                "rotate",
                "acme",
                "byok/openai",
                "--env",
                "live",
                "--grace",
                grace,
            ],
            b"sk-y",
        )
    };
    let refused = rotate("1000000d").code(7);
    assert!(refused.stderr.contains("seal.max_grace"), "{refused:#?}");
    assert!(!refused.stderr.contains("panicked"), "{refused:#?}");
    // Nothing changed, and describing it prints every time it holds.
    let described = operator
        .run(&["secret", "describe", "acme", "byok/openai", "--env", "live"])
        .ok();
    assert!(described.stdout.contains("current"), "{described:#?}");
    rotate("30d").ok();
    operator
        .run(&["secret", "describe", "acme", "byok/openai", "--env", "live"])
        .ok();
}

#[test]
fn tenant_keys_rotate_and_retire_from_the_cli() {
    let (mut fixture, _process, addr, _) = unsealed();
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    snapshot(
        &operator.run(&["tenant", "rotate-key", "acme"]).ok().stdout,
        "rotated: tenant acme: current key version 2
         VERSION  CREATED[..]ENCRYPTIONS (AT MOST)  SECRET VERSIONS
         1        [..] UTC  65536                  1
         2        [..] UTC  65536                  0",
    );
    // Retiring waits for the background rewrap; then version 1 is destroyed.
    let mut retired = None;
    for _ in 0..100 {
        let run = operator.run(&["tenant", "retire-keys", "acme", "--below", "2"]);
        if run.code == 0 {
            retired = Some(run);
            break;
        }
        assert_eq!(run.code, 5, "{run:#?}");
        assert!(run.stderr.contains("rewrap"), "{run:#?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    snapshot(
        &retired.expect("the rewrap pass finished").stdout,
        "retired: tenant acme: current key version 2, versions below 2 retired
         VERSION  CREATED[..]ENCRYPTIONS (AT MOST)  SECRET VERSIONS
         2        [..] UTC  65536                  1",
    );
    let json: serde_json::Value = serde_json::from_str(
        &operator
            .run(&["tenant", "keys", "acme", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(json["min_decryption_version"], 2);
    let run = operator
        .run(&["tenant", "retire-keys", "acme", "--below", "5"])
        .code(7);
    assert!(run.stderr.contains("current version is 2"), "{run:#?}");
}

#[test]
fn an_uninitialised_vault_says_to_initialise_it() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    // The exit code and hint come from vaultd's `uninitialised` reason, not its words.
    let run = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR)
        .run(&["secret", "list", "acme"])
        .code(5);
    snapshot(
        &run.stderr,
        "vaultctl: [..]
         initialise it with `vaultctl init`",
    );
    let run = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR)
        .run(&["secret", "list", "acme", "--json"])
        .code(5);
    let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(error["error"]["kind"], "state");
    drop(process);
}
