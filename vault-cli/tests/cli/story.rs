//! An operator's story against a real vaultd: init 5 shares (threshold 3), restart,
//! unseal from three share files, put a BYOK secret, rotate it, lease it as a service,
//! revoke, verify the audit log, then tamper with it and watch verification fail.

use std::os::unix::fs::PermissionsExt;

use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::{ADMIN, CUSTODIAN, GATEWAY, Vaultctl, snapshot};

#[test]
fn operator_story() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let mut vaultd = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", vaultd.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let shares = fixture.path("shares");

    snapshot(
        &operator.run(&["status"]).ok().stdout,
        "uninitialised · vaultd 0.1.0 · initialise with `vaultctl init`",
    );
    let init = operator
        .run(&[
            "init",
            "--shares",
            "5",
            "--threshold",
            "3",
            "--share-dir",
            shares.to_str().unwrap(),
        ])
        .ok();
    snapshot(
        &init.stdout,
        "wrote 5 share files (mode 0600) in [..]/shares: give one to each custodian; any 3 unseal vaultd",
    );
    for i in 1..=5 {
        let path = shares.join(format!("share-{i}.txt"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("vs1-"));
    }

    assert!(vaultd.stop().success());
    vaultd = VaultProcess::start(&fixture);
    // The restarted daemon listens on a new free port.
    let addr = format!("https://localhost:{}", vaultd.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let custodian = Vaultctl::as_identity(&mut fixture, &addr, CUSTODIAN);
    let admin = Vaultctl::as_identity(&mut fixture, &addr, ADMIN);
    let gateway = Vaultctl::as_identity(&mut fixture, &addr, GATEWAY);
    snapshot(
        &operator.run(&["status"]).ok().stdout,
        "sealed · threshold 3 of 5 shares · generation 1 · vaultd 0.1.0 · unseal with `vaultctl unseal`",
    );
    let unseal = |n: u32| {
        let file = shares.join(format!("share-{n}.txt"));
        custodian
            .run(&["unseal", "--share-file", file.to_str().unwrap()])
            .ok()
            .stdout
    };
    snapshot(&unseal(1), "1 of 3 shares submitted; 2 more needed");
    snapshot(
        &operator.run(&["status"]).ok().stdout,
        "sealed · 1 of 3 shares submitted · threshold 3 of 5 · generation 1 · vaultd 0.1.0
         alerts since start: 1 (admin.unseal 1)
         critical admin.unseal at [..] ms · spiffe://billing.example/human/custodian/carol",
    );
    snapshot(&unseal(3), "2 of 3 shares submitted; 1 more needed");
    snapshot(&unseal(5), "unsealed");

    let put = admin
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
            b"sk-proj-original-0000000000000000000001\n",
        )
        .ok();
    snapshot(
        &put.stdout,
        "acme/live/byok/openai (byok), current version 1
         VERSION  STATE    CREATED  [..]  HINT      FINGERPRINT
         1        current  [..] UTC  sk-…0001  [..]",
    );
    let rotate = admin
        .run_with_stdin(
            &[
                "secret",
                "rotate",
                "acme",
                "byok/openai",
                "--env",
                "live",
                "--grace",
                "1h",
            ],
            b"sk-proj-rotated-00000000000000000000002\n",
        )
        .ok();
    snapshot(
        &rotate.stdout,
        "acme/live/byok/openai (byok), current version 2
         VERSION  STATE  [..]
         1        grace until [..] UTC  [..]  sk-…0001  [..]
         2        current  [..]  sk-…0002  [..]",
    );
    assert!(!put.stdout.contains("original") && !rotate.stdout.contains("rotated"));

    // The gateway leases the new value; only `lease get` prints a secret.
    let lease = gateway
        .run(&[
            "lease",
            "get",
            "acme",
            "byok/openai",
            "--env",
            "live",
            "--ttl",
            "30s",
        ])
        .ok();
    assert_eq!(lease.stdout, "sk-proj-rotated-00000000000000000000002");
    snapshot(&lease.stderr, "lease l-[..] (version 2)");
    let listed = admin.run(&["lease", "list", "--tenant", "acme"]).ok();
    snapshot(
        &listed.stdout,
        "LEASE  [..]IDENTITY  [..]SECRET  [..]VERSION  EXPIRES
         l-[..]  spiffe://billing.example/svc/gateway  acme/live/byok/openai  2  [..] UTC",
    );
    snapshot(
        &admin
            .run(&["lease", "revoke", "--secret", "acme/byok/openai"])
            .ok()
            .stdout,
        "revoked 1 lease",
    );
    snapshot(
        &admin.run(&["lease", "list"]).ok().stdout,
        "no active leases",
    );

    // Verify the audit log with the checkpoint key from `status --json`.
    let status: serde_json::Value =
        serde_json::from_str(&operator.run(&["status", "--json"]).ok().stdout).unwrap();
    let key_file = fixture.path("audit.pub");
    std::fs::write(&key_file, status["audit_public_key"].as_str().unwrap()).unwrap();
    operator.run(&["seal"]).ok(); // writes a signed checkpoint
    let copy = fixture.path("audit-copy.jsonl");
    std::fs::copy(fixture.path("audit.jsonl"), &copy).unwrap();
    let verified = operator
        .run(&[
            "audit",
            "verify",
            copy.to_str().unwrap(),
            "--public-key",
            key_file.to_str().unwrap(),
        ])
        .ok();
    snapshot(
        &verified.stdout,
        "ok: [..] records, 1 checkpoint, 1 segment
         verified through seq [..]
         warning: the last record follows the last checkpoint; no signature vouches for it yet",
    );

    // Tamper: rewrite who leased the secret.
    let text = std::fs::read_to_string(&copy).unwrap();
    let line = text.lines().position(|l| l.contains(GATEWAY)).unwrap() + 1;
    std::fs::write(
        &copy,
        text.replace(GATEWAY, "spiffe://billing.example/svc/someone-else"),
    )
    .unwrap();
    let tampered = operator
        .run(&[
            "audit",
            "verify",
            copy.to_str().unwrap(),
            "--public-key",
            key_file.to_str().unwrap(),
        ])
        .code(8);
    snapshot(
        &tampered.stdout,
        &format!(
            "FAILED: [..]audit-copy.jsonl: line {line} (seq {}): chain broken: the record does not hash to its chain value (it was edited)
             verified through seq {}",
            line - 1,
            line - 2
        ),
    );
    snapshot(
        &tampered.stderr,
        &format!(
            "vaultctl: the audit log failed verification in [..]audit-copy.jsonl at line {line}
             compare with a trusted copy; everything before that line verified"
        ),
    );
    assert!(vaultd.stop().success());
}

#[test]
fn audit_verify_reports_a_torn_tail_and_the_continuation() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let vaultd = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", vaultd.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    operator.run(&["status"]).ok();
    assert!(vaultd.stop().success());

    // A crash cut the last write short.
    let log = fixture.path("audit.jsonl");
    let mut text = std::fs::read(&log).unwrap();
    let intact_lines = text.iter().filter(|&&b| b == b'\n').count();
    text.extend_from_slice(br#"{"seq":9,"time_ms":1"#);
    std::fs::write(&log, &text).unwrap();
    let torn = operator
        .run(&["audit", "verify", log.to_str().unwrap()])
        .code(8);
    snapshot(
        &torn.stdout,
        &format!(
            "FAILED: [..]audit.jsonl: line {}: partial line: the last record has no newline (the log was truncated mid-write)
             verified through seq [..]
             note: a partial last record is what a crash or a full disk leaves; vaultd moves it aside and continues the chain when it next opens the log
             warning: signatures not checked; pass --public-key to check them",
            intact_lines + 1
        ),
    );

    // The next start moves it aside and says so in the chain.
    let vaultd = VaultProcess::start(&fixture);
    assert!(vaultd.stop().success());
    let verified = operator
        .run(&["audit", "verify", log.to_str().unwrap()])
        .ok();
    snapshot(
        &verified.stdout,
        &format!(
            "ok: [..] records, 0 checkpoints, 1 segment
             verified through seq [..]
             warning: the last [..] records follow the last checkpoint; no signature vouches for them yet
             recovered: line {} (seq [..]): a torn tail of 20 bytes was moved to audit.jsonl.torn-[..] and the chain continued
             warning: signatures not checked; pass --public-key to check them",
            intact_lines + 1
        ),
    );
    let json: serde_json::Value = serde_json::from_str(
        &operator
            .run(&["audit", "verify", log.to_str().unwrap(), "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    let moved_to = json["recoveries"][0]["moved_to"].as_str().unwrap();
    assert_eq!(
        std::fs::read(fixture.path(moved_to)).unwrap(),
        br#"{"seq":9,"time_ms":1"#
    );
}
