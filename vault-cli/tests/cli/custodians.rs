//! Custodian ceremonies: shares encrypted at `init` to each custodian's own age key,
//! each file opened only with that custodian's identity, and a quorum of custodians
//! unsealing one by one, each from their own process.

use std::os::unix::fs::PermissionsExt;

use age::secrecy::ExposeSecret;
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::Vaultctl;

const CUSTODIANS: [&str; 5] = ["carol", "dave", "erin", "frank", "grace"];

#[test]
fn shares_sealed_to_five_custodians_open_only_with_their_own_identity() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);

    // Each custodian makes a key pair on their own machine and sends the public key.
    let keys = fixture.path("keys");
    std::fs::create_dir(&keys).unwrap();
    let mut recipients = String::from("# name, age public key\n");
    for name in CUSTODIANS {
        let identity = age::x25519::Identity::generate();
        let secret = format!("{}\n", identity.to_string().expose_secret());
        std::fs::write(keys.join(format!("{name}.txt")), secret).unwrap();
        recipients.push_str(&format!("{name} {}\n", identity.to_public()));
    }
    let list = fixture.path("custodians.txt");
    std::fs::write(&list, recipients).unwrap();

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
