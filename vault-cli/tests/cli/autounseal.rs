//! Auto-unseal through a real PKCS#11 token (SoftHSM2 from the distribution's
//! packages): enabled by a ceremony of custodians' shares, a restarted vaultd
//! unseals itself; a wrong PIN or a removed token leaves it sealed and the shares
//! still unseal it; a rekey carries auto-unseal over to the new share set; a
//! ceremony disables it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR, free_addr};
use vault_testkit::process::VaultProcess;

use crate::{CUSTODIAN, Vaultctl};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "314159";

/// A SoftHSM2 configuration of its own with one initialised token, `vaultd`; the
/// path of the configuration file (for `SOFTHSM2_CONF`).
fn softhsm(fixture: &Fixture) -> PathBuf {
    assert!(
        Path::new(MODULE).exists(),
        "{MODULE} is missing: install SoftHSM2 (apt-get install softhsm2); .ci/run does"
    );
    let tokens = fixture.path("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = fixture.path("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "vaultd",
            "--so-pin",
            "27182818",
            "--pin",
            PIN,
        ])
        .output()
        .expect("softhsm2-util (apt-get install softhsm2)");
    assert!(init.status.success(), "{init:?}");
    conf
}

fn json(run: &crate::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// Starts vaultd and returns it with an operator's and a custodian's vaultctl.
fn start(fixture: &mut Fixture) -> (VaultProcess, Vaultctl, Vaultctl) {
    let process = VaultProcess::start(fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(fixture, &addr, OPERATOR);
    let custodian = Vaultctl::as_identity(fixture, &addr, CUSTODIAN);
    (process, operator, custodian)
}

fn state(operator: &Vaultctl) -> String {
    json(&operator.run(&["--json", "status"]).ok())["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs a ceremony of `kind`, the custodian submitting `shares`; the last answer.
fn ceremony(
    operator: &Vaultctl,
    custodian: &Vaultctl,
    kind: &str,
    shares: &[PathBuf],
) -> serde_json::Value {
    let started = json(&operator.run(&["--json", "ceremony", "start", kind]).ok());
    let nonce = started["nonce"].as_str().unwrap().to_owned();
    let mut last = serde_json::Value::Null;
    for share in shares {
        last = json(
            &custodian
                .run(&[
                    "--json",
                    "ceremony",
                    "submit",
                    "--nonce",
                    &nonce,
                    "--share-file",
                    share.to_str().unwrap(),
                ])
                .ok(),
        );
    }
    last
}

fn unseal(operator: &Vaultctl, shares: &[PathBuf]) {
    for share in shares {
        operator
            .run(&["unseal", "--share-file", share.to_str().unwrap()])
            .ok();
    }
}

#[test]
fn a_softhsm_token_unseals_a_restarted_vaultd_and_the_shares_still_recover_without_it() {
    let extra = "[seal.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n\
                 token = \"vaultd\"\npin_file = \"hsm.pin\"\n"
        .to_owned();
    let mut fixture = Fixture::new(&FixtureOptions {
        grpc: Some(free_addr()),
        extra,
        ..FixtureOptions::default()
    });
    let conf = softhsm(&fixture);
    fixture.env.push(("SOFTHSM2_CONF".into(), conf));
    let pin = fixture.path("hsm.pin");
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();

    let (process, operator, custodian) = start(&mut fixture);
    let dir = fixture.path("shares");
    operator
        .run(&[
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--share-dir",
            dir.to_str().unwrap(),
        ])
        .ok();
    let shares: Vec<PathBuf> = (1..=3)
        .map(|i| dir.join(format!("share-{i}.txt")))
        .collect();
    unseal(&operator, &shares[..2]);
    // Not enabled yet: a restart seals.
    assert!(process.stop().success());
    let (process, operator, custodian_2) = start(&mut fixture);
    assert_eq!(state(&operator), "sealed");
    assert!(
        process
            .log()
            .iter()
            .any(|l| l.contains("auto-unseal is not enabled")),
        "{:?}",
        process.log()
    );
    drop(custodian);

    // A quorum of custodians enables it, each submitting a share.
    unseal(&operator, &shares[1..]);
    let done = ceremony(&operator, &custodian_2, "enable-auto-unseal", &shares[..2]);
    assert_eq!(done["completed"], "enable-auto-unseal");
    assert_eq!(done["auto_unseal"], true);
    assert!(process.stop().success());
    let (process, operator, custodian) = start(&mut fixture);
    assert_eq!(state(&operator), "unsealed");
    assert!(
        process
            .log()
            .iter()
            .any(|l| l.contains("unsealed through the PKCS#11 token")),
        "{:?}",
        process.log()
    );
    let audit = std::fs::read_to_string(fixture.path("audit.jsonl")).unwrap();
    assert!(audit.contains("system.auto_unseal"));
    assert!(!audit.contains(PIN), "the PIN reached the audit log");
    drop(custodian);

    // A wrong PIN: sealed, the reason logged without the PIN, the shares unseal.
    std::fs::write(&pin, "999999\n").unwrap();
    assert!(process.stop().success());
    let (process, operator, _) = start(&mut fixture);
    assert_eq!(state(&operator), "sealed");
    let log = process.log().join("\n");
    assert!(log.contains("refused the PIN"), "{log}");
    assert!(!log.contains("999999") && !log.contains(PIN), "{log}");
    unseal(&operator, &shares[..2]);
    assert_eq!(state(&operator), "unsealed");
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();

    // The token removed: sealed, and the shares still recover the vault.
    let tokens = fixture.path("tokens");
    let away = fixture.path("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    assert!(process.stop().success());
    let (process, operator, _) = start(&mut fixture);
    assert_eq!(state(&operator), "sealed");
    assert!(
        process.log().join("\n").contains("auto-unseal failed"),
        "{:?}",
        process.log()
    );
    unseal(&operator, &shares[1..]);
    assert_eq!(state(&operator), "unsealed");
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();

    // A rekey carries auto-unseal over to the new share set.
    let new_dir = fixture.path("new-shares");
    let mut rekey = vec![
        "rekey",
        "--shares",
        "3",
        "--threshold",
        "2",
        "--share-dir",
        new_dir.to_str().unwrap(),
    ];
    let old: Vec<String> = shares[..2]
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    for share in &old {
        rekey.extend(["--share-file", share.as_str()]);
    }
    operator.run(&rekey).ok();
    let new: Vec<PathBuf> = (1..=3)
        .map(|i| new_dir.join(format!("share-{i}.txt")))
        .collect();
    let mut verify = vec!["rekey-verify"];
    let fresh: Vec<String> = new[..2]
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    for share in &fresh {
        verify.extend(["--share-file", share.as_str()]);
    }
    operator.run(&verify).ok();
    assert!(process.stop().success());
    let (process, operator, custodian) = start(&mut fixture);
    assert_eq!(state(&operator), "unsealed");

    // Disabling takes a quorum too; then a restart seals again.
    let done = ceremony(&operator, &custodian, "disable-auto-unseal", &new[1..]);
    assert_eq!(done["completed"], "disable-auto-unseal");
    assert_eq!(done["auto_unseal"], false);
    assert!(process.stop().success());
    let (_process, operator, _) = start(&mut fixture);
    assert_eq!(state(&operator), "sealed");
}
