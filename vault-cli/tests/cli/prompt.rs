//! The hidden prompt, on a real (pseudo-)terminal: the share typed there unseals,
//! and the terminal never echoes it.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::{Vaultctl, snapshot};

#[test]
fn a_share_typed_at_the_hidden_prompt_unseals_without_echo() {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let _vaultd = VaultProcess::start(&fixture);
    let dir = fixture.path("shares");
    let addr = format!("https://localhost:{}", _vaultd.grpc.port());
    Vaultctl::as_identity(&mut fixture, &addr, OPERATOR)
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
    let share = std::fs::read_to_string(dir.join("share-1.txt")).unwrap();

    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ptsname(&master, Vec::new()).unwrap().to_str().unwrap())
        .unwrap();
    let mut master = std::fs::File::from(master);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaultctl"))
        .args(["unseal", "--socket"])
        .arg(fixture.socket())
        .env_remove("VAULTD_ADDR")
        .stdin(Stdio::from(terminal))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Type once the prompt is shown: echo is off by then.
    let mut stderr = child.stderr.take().unwrap();
    let mut prompt = Vec::new();
    let mut byte = [0u8; 1];
    while !prompt.ends_with(b"(input hidden): ") {
        assert_eq!(
            stderr.read(&mut byte).unwrap(),
            1,
            "vaultctl exited before prompting"
        );
        prompt.push(byte[0]);
    }
    assert_eq!(prompt, b"unseal share (input hidden): ");
    master.write_all(share.trim().as_bytes()).unwrap();
    master.write_all(b"\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    snapshot(&String::from_utf8_lossy(&output.stdout), "unsealed");

    // Whatever the terminal showed: never the share.
    rustix::io::ioctl_fionbio(&master, true).unwrap();
    let mut shown = Vec::new();
    let _ = master.read_to_end(&mut shown);
    let shown = String::from_utf8_lossy(&shown);
    assert!(
        !shown.contains(&share.trim()[..20]),
        "the terminal echoed the share: {shown:?}"
    );
}
