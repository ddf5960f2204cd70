//! Custodian ceremonies: shares encrypted at `init` to each custodian's own age key,
//! each file opened only with that custodian's identity, and a quorum of custodians
//! unsealing one by one, each from their own process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::Vaultctl;

const CUSTODIANS: [&str; 5] = ["carol", "dave", "erin", "frank", "grace"];

/// Each custodian makes a key pair on their own machine and sends the public key:
/// the identities (`<dir>/<name>.txt`) and the recipients file, `name age1…` lines.
fn custodian_keys(fixture: &Fixture, dir: &str) -> (PathBuf, PathBuf) {
    let keys = fixture.path(dir);
    std::fs::create_dir(&keys).unwrap();
    let mut recipients = String::from("# name, age public key\n");
    for name in CUSTODIANS {
        let identity = age::x25519::Identity::generate();
        let secret = format!("{}\n", identity.to_string().expose_secret());
        std::fs::write(keys.join(format!("{name}.txt")), secret).unwrap();
        recipients.push_str(&format!("{name} {}\n", identity.to_public()));
    }
    let list = fixture.path(&format!("{dir}.txt"));
    std::fs::write(&list, recipients).unwrap();
    (keys, list)
}

#[test]
fn shares_sealed_to_five_custodians_open_only_with_their_own_identity() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);

    let (keys, list) = custodian_keys(&fixture, "keys");
    let dir = fixture.path("shares");
    let (dir_text, list_text) = (dir.to_str().unwrap(), list.to_str().unwrap());
    let init = operator
        .run(&[
            "init",
            "--shares",
            "5",
            "--threshold",
            "3",
            "--share-dir",
            dir_text,
            "--recipients-file",
            list_text,
        ])
        .ok();
    assert!(
        init.stdout
            .contains("each encrypted to its custodian's age key"),
        "{init:?}"
    );
    assert!(!init.stdout.contains("vs1-") && !init.stderr.contains("vs1-"));
    let share = |name: &str| dir.join(format!("share-{name}.age"));
    let key = |name: &str| keys.join(format!("{name}.txt"));
    for name in CUSTODIANS {
        let bytes = std::fs::read(share(name)).unwrap();
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"), "{name}");
        assert!(
            !bytes.windows(4).any(|w| w == b"vs1-"),
            "{name}: a share in the clear"
        );
        let mode = std::fs::metadata(share(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    // A custodian cannot open another's share, and a share needs an identity.
    let wrong = operator
        .run(&[
            "unseal",
            "--share-file",
            &path(&share("carol")),
            "--identity",
            &path(&key("dave")),
        ])
        .code(7);
    assert!(
        wrong
            .stderr
            .contains("does not open with the given identity"),
        "{wrong:?}"
    );
    let none = operator
        .run(&["unseal", "--share-file", &path(&share("carol"))])
        .code(7);
    assert!(none.stderr.contains("--identity"), "{none:?}");

    // Three custodians, one after another, each with their own file and key.
    let mut last = String::new();
    for name in ["carol", "erin", "grace"] {
        last = operator
            .run(&[
                "unseal",
                "--share-file",
                &path(&share(name)),
                "--identity",
                &path(&key(name)),
            ])
            .ok()
            .stdout;
    }
    assert!(last.contains("unsealed"), "{last}");
}

/// A custodian's own vaultctl: their certificate, their identity.
fn custodian(fixture: &mut Fixture, addr: &str, name: &str) -> Vaultctl {
    Vaultctl::as_identity(
        fixture,
        addr,
        &format!("spiffe://billing.example/human/custodian/{name}"),
    )
}

fn json(run: &crate::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// Three custodians submit their shares of `dir` (opened with the keys of `keys`),
/// each from their own vaultctl process; the answers, in order.
fn submit_three(
    fixture: &mut Fixture,
    addr: &str,
    nonce: &str,
    dir: &Path,
    keys: &Path,
    last_dir: Option<&Path>,
) -> Vec<serde_json::Value> {
    let names = ["carol", "erin", "grace"];
    let mut answers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let share = dir.join(format!("share-{name}.age"));
        let key = keys.join(format!("{name}.txt"));
        let mut args = vec![
            "--json",
            "ceremony",
            "submit",
            "--nonce",
            nonce,
            "--share-file",
            share.to_str().unwrap(),
            "--identity",
            key.to_str().unwrap(),
        ];
        let out = last_dir.map(|d| d.to_str().unwrap().to_owned());
        if let (2, Some(out)) = (i, &out) {
            args.extend(["--share-dir", out.as_str()]);
        }
        let run = custodian(fixture, addr, name).run(&args).ok();
        answers.push(json(&run));
    }
    answers
}

#[test]
fn custodians_rekey_verify_and_rotate_each_submitting_from_their_own_process() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let (keys, list) = custodian_keys(&fixture, "keys");
    let old = fixture.path("old");
    operator
        .run(&[
            "init",
            "--shares",
            "5",
            "--threshold",
            "3",
            "--share-dir",
            old.to_str().unwrap(),
            "--recipients-file",
            list.to_str().unwrap(),
        ])
        .ok();
    let unseal_with = |dir: &Path, keys: &Path| {
        let mut last = String::new();
        for name in ["dave", "frank", "carol"] {
            let share = dir.join(format!("share-{name}.age"));
            let key = keys.join(format!("{name}.txt"));
            last = operator
                .run(&[
                    "unseal",
                    "--share-file",
                    share.to_str().unwrap(),
                    "--identity",
                    key.to_str().unwrap(),
                ])
                .stdout;
        }
        last
    };
    assert!(unseal_with(&old, &keys).contains("unsealed"));

    // The operator starts a rekey to five new custodian keys; nobody holds a quorum.
    let (new_keys, new_list) = custodian_keys(&fixture, "new-keys");
    let started = json(
        &operator
            .run(&[
                "--json",
                "ceremony",
                "start",
                "rekey",
                "--threshold",
                "3",
                "--recipients-file",
                new_list.to_str().unwrap(),
            ])
            .ok(),
    );
    let nonce = started["nonce"].as_str().unwrap().to_owned();
    assert_eq!(started["started_by"], OPERATOR);
    assert_eq!(started["threshold"], 3);
    assert_eq!(started["custodians"].as_array().unwrap().len(), 5);
    // Every custodian sees what they are asked to take part in.
    let seen = custodian(&mut fixture, &addr, "dave")
        .run(&["ceremony", "status"])
        .ok();
    assert!(
        seen.stdout.contains("rekey ceremony started by"),
        "{seen:?}"
    );
    assert!(seen.stdout.contains(&nonce), "{seen:?}");
    // A custodian may not start a rotation (keys.rotate), and a wrong nonce is refused.
    custodian(&mut fixture, &addr, "dave")
        .run(&["ceremony", "start", "rotate-root-key"])
        .code(4);
    let share = old.join("share-dave.age");
    let key = keys.join("dave.txt");
    let stale = custodian(&mut fixture, &addr, "dave")
        .run(&[
            "ceremony",
            "submit",
            "--nonce",
            "00000000000000000000000000000000",
            "--share-file",
            share.to_str().unwrap(),
            "--identity",
            key.to_str().unwrap(),
        ])
        .code(5);
    assert!(stale.stderr.contains("nonce"), "{stale:?}");

    let new = fixture.path("new");
    let answers = submit_three(&mut fixture, &addr, &nonce, &old, &keys, Some(&new));
    assert_eq!(answers[0]["ceremony"]["submitted"], 1);
    assert_eq!(answers[1]["ceremony"]["submitted"], 2);
    assert_eq!(answers[2]["completed"], "rekey");
    assert_eq!(answers[2]["pending"]["generation"], 2);
    // Each new file opens only with its custodian's new identity.
    let identity = |dir: &Path, name: &str| -> age::x25519::Identity {
        std::fs::read_to_string(dir.join(format!("{name}.txt")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    for name in CUSTODIANS {
        let file = std::fs::read(new.join(format!("share-{name}.age"))).unwrap();
        assert!(
            age::decrypt(&identity(&new_keys, name), &file).is_ok(),
            "{name}"
        );
        for other in CUSTODIANS.iter().filter(|o| **o != name) {
            assert!(age::decrypt(&identity(&new_keys, other), &file).is_err());
        }
    }
    // An answer lost on its way is fetched again: the same files.
    let again = fixture.path("again");
    operator
        .run(&["ceremony", "status", "--share-dir", again.to_str().unwrap()])
        .ok();
    for name in CUSTODIANS {
        let file = format!("share-{name}.age");
        assert_eq!(
            std::fs::read(new.join(&file)).unwrap(),
            std::fs::read(again.join(&file)).unwrap()
        );
    }

    // Until verified, the old shares still unseal and the new ones do not.
    operator.run(&["seal"]).ok();
    assert!(unseal_with(&old, &keys).contains("unsealed"));
    let verify = json(
        &custodian(&mut fixture, &addr, "erin")
            .run(&["--json", "ceremony", "start", "verify-rekey"])
            .ok(),
    );
    let nonce = verify["nonce"].as_str().unwrap().to_owned();
    let answers = submit_three(&mut fixture, &addr, &nonce, &new, &new_keys, None);
    assert_eq!(answers[2]["completed"], "verify-rekey");
    assert_eq!(answers[2]["verified"]["generation"], 2);
    operator.run(&["seal"]).ok();
    let refused = operator
        .run(&[
            "unseal",
            "--share-file",
            old.join("share-dave.age").to_str().unwrap(),
            "--identity",
            keys.join("dave.txt").to_str().unwrap(),
        ])
        .code(7);
    assert!(refused.stderr.contains("generation"), "{refused:?}");
    assert!(unseal_with(&new, &new_keys).contains("unsealed"));

    // A root-key rotation, collected the same way; a cancelled one wipes its shares.
    let rotation = json(
        &operator
            .run(&["--json", "ceremony", "start", "rotate-root-key"])
            .ok(),
    );
    let nonce = rotation["nonce"].as_str().unwrap().to_owned();
    let cancelled = custodian(&mut fixture, &addr, "frank")
        .run(&["ceremony", "cancel"])
        .ok();
    assert!(
        cancelled
            .stdout
            .contains("cancelled the rotate-root-key ceremony")
    );
    let gone = custodian(&mut fixture, &addr, "carol")
        .run(&[
            "ceremony",
            "submit",
            "--nonce",
            &nonce,
            "--share-file",
            new.join("share-carol.age").to_str().unwrap(),
            "--identity",
            new_keys.join("carol.txt").to_str().unwrap(),
        ])
        .code(5);
    assert!(
        gone.stderr.contains("no ceremony is in progress"),
        "{gone:?}"
    );
    let rotation = json(
        &operator
            .run(&["--json", "ceremony", "start", "rotate-root-key"])
            .ok(),
    );
    let nonce = rotation["nonce"].as_str().unwrap().to_owned();
    let answers = submit_three(&mut fixture, &addr, &nonce, &new, &new_keys, None);
    assert_eq!(answers[2]["completed"], "rotate-root-key");
    assert_eq!(answers[2]["root_version"], 2);
    let status = operator.run(&["status"]).ok();
    assert!(status.stdout.contains("root key v2"), "{status:?}");
}
