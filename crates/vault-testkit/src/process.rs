//! The real `vaultd` binary, as a child process serving a [`Fixture`].

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::fixture::Fixture;

/// The `vaultd` binary: `$VAULTD_BIN` if set, else built (once per test process) by
/// cargo from this workspace, so it is never stale. It is built in a target directory
/// of its own: in the shared one, a build with the daemon's own features would
/// replace `target/debug/vaultd` under the daemon's tests while they run it.
pub fn vaultd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("VAULTD_BIN") {
            return PathBuf::from(path);
        }
        // The same absolute path `.ci/run` builds into, so an up-to-date build is
        // found up to date rather than made again.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        let output = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args([
                "build",
                "--locked",
                "--quiet",
                "-p",
                "vaultd",
                "--bin",
                "vaultd",
                "--message-format=json",
                "--target-dir",
            ])
            .arg(root.join("target").join("testkit-vaultd"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(output.status.success(), "cargo build of vaultd failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.contains("\"name\":\"vaultd\"") && l.contains("\"bin\""))
            .find_map(|l| {
                let (_, rest) = l.split_once("\"executable\":\"")?;
                Some(PathBuf::from(rest.split_once('"')?.0))
            })
            .expect("cargo reported the vaultd executable")
    })
    .clone()
}

/// A `vaultd serve` child process. Killed when dropped.
pub struct VaultProcess {
    child: Child,
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// The HTTP listener.
    pub http: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(marker)?;
    rest.split(|c: char| c.is_whitespace())
        .next()?
        .trim_end_matches(',')
        .parse()
        .ok()
}

impl VaultProcess {
    /// Starts `vaultd serve --config` on the fixture and waits until it listens.
    pub fn start(fixture: &Fixture) -> Self {
        Self::start_with_config(fixture, &fixture.config)
    }

    /// Starts `vaultd serve --config CONFIG` (a configuration among the fixture's
    /// files, another node's, say) and waits until it listens.
    pub fn start_with_config(fixture: &Fixture, config: &std::path::Path) -> Self {
        let mut child = Command::new(vaultd_binary())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .envs(fixture.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vaultd");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = forward(child.stderr.take().expect("stderr"), Arc::clone(&log));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let (Some(grpc), Some(http)) = (
                        addr_after(&line, "(mutual TLS) on "),
                        addr_after(&line, "health/metrics on http://"),
                    ) {
                        return Self {
                            child,
                            grpc,
                            http,
                            log,
                        };
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("vaultd did not start within 60 s"),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait");
                    panic!("vaultd exited ({status}): {:?}", log.lock().expect("log"));
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What vaultd has written to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
            .expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// Stops it with SIGTERM and waits (at most 20 s) for it to exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vaultd did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for VaultProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward(stderr: std::process::ChildStderr, log: Arc<Mutex<Vec<String>>>) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            log.lock().expect("log").push(line.clone());
            let _ = tx.send(line);
        }
    });
    rx
}
