//! vaultctl against the real `vaultd` binary over real mutual TLS: an operator's
//! story, failure paths, and the offline commands. Outputs are compared with
//! snapshots in which `[..]` stands for any text on that line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod alerts;
mod apikeys;
mod audit_search;
mod autounseal;
mod breakglass;
mod custodians;
mod failures;
mod offline;
mod pki;
mod prompt;
mod reload;
mod story;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vault_testkit::fixture::Fixture;

pub(crate) const ADMIN: &str = "spiffe://billing.example/human/admin/alice";
pub(crate) const CUSTODIAN: &str = "spiffe://billing.example/human/custodian/carol";
pub(crate) const GATEWAY: &str = "spiffe://billing.example/svc/gateway";

/// What a vaultctl run printed and how it exited.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    #[track_caller]
    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.code, 0, "vaultctl failed: {self:#?}");
        self
    }

    #[track_caller]
    pub(crate) fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }
}

/// Compares `actual` with `expected` line by line; `[..]` in `expected` matches any
/// run of characters.
#[track_caller]
pub(crate) fn snapshot(actual: &str, expected: &str) {
    // Indentation is not compared: snapshots are indented with the code.
    let actual_lines: Vec<&str> = actual.trim_end().lines().map(str::trim_start).collect();
    let expected_lines: Vec<&str> = expected.trim().lines().map(str::trim_start).collect();
    let ok = actual_lines.len() == expected_lines.len()
        && actual_lines
            .iter()
            .zip(&expected_lines)
            .all(|(a, e)| line_matches(a, e));
    assert!(
        ok,
        "output differs from the snapshot\n--- expected\n{}\n--- actual\n{}",
        expected.trim(),
        actual.trim_end()
    );
}

fn line_matches(actual: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    let Some((first, rest)) = parts.split_first() else {
        return actual.is_empty();
    };
    let Some(mut left) = actual.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        if last {
            return left.ends_with(part);
        }
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    left.is_empty()
}

/// Runs vaultctl with only the given VAULTD_* variables set.
pub(crate) struct Vaultctl {
    env: Vec<(String, PathBuf)>,
    addr: Option<String>,
}

impl Vaultctl {
    /// Connects over mutual TLS as `identity` (certificate files from the fixture).
    pub(crate) fn as_identity(fixture: &mut Fixture, addr: &str, identity: &str) -> Self {
        let files = fixture.client_files(identity);
        Self {
            env: vec![
                ("VAULTD_CACERT".into(), files.ca),
                ("VAULTD_CLIENT_CERT".into(), files.cert),
                ("VAULTD_CLIENT_KEY".into(), files.key),
            ],
            addr: Some(addr.to_owned()),
        }
    }

    /// No connection settings at all.
    pub(crate) fn bare() -> Self {
        Self {
            env: Vec::new(),
            addr: None,
        }
    }

    pub(crate) fn set(mut self, key: &str, value: impl AsRef<Path>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env
            .push((key.to_owned(), value.as_ref().to_path_buf()));
        self
    }

    pub(crate) fn unset(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// Initialises the vault with one share, written under `dir`, and unseals it;
    /// returns the share's file.
    pub(crate) fn init_and_unseal(&self, dir: &Path) -> PathBuf {
        self.run(&[
            "init",
            "--shares",
            "1",
            "--threshold",
            "1",
            "--share-dir",
            dir.to_str().unwrap(),
        ])
        .ok();
        let share = dir.join("share-1.txt");
        self.run(&["unseal", "--share-file", share.to_str().unwrap()])
            .ok();
        share
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, b"")
    }

    pub(crate) fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vaultctl"));
        for key in [
            "VAULTD_ADDR",
            "VAULTD_CACERT",
            "VAULTD_CLIENT_CERT",
            "VAULTD_CLIENT_KEY",
            "VAULTD_SOCKET",
        ] {
            command.env_remove(key);
        }
        if let Some(addr) = &self.addr {
            command.env("VAULTD_ADDR", addr);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let output = child.wait_with_output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

#[test]
fn the_snapshot_matcher_matches_what_it_should() {
    assert!(line_matches(
        "wrote 5 files in /tmp/x: ok",
        "wrote 5 files in [..]: ok"
    ));
    assert!(line_matches("abc", "[..]"));
    assert!(line_matches("a-b-c", "a[..]b[..]c"));
    assert!(!line_matches("wrote 4 files", "wrote 5 files"));
    assert!(!line_matches("abc", "a[..]d"));
    assert!(!line_matches("abcx", "abc"));
}
