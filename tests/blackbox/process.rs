//! The `vaultd` binary as users run it: `vaultd dev`, `check-config`, `serve`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use vault_proto::v1::{self, admin_client::AdminClient};
use vault_testkit::grpc::{channel, client_config, client_config_pem, open_session};

use crate::harness::{Fixture, OPERATOR, Options, TestVault, audit_fifo, lease_value, signal};

const VAULTD: &str = env!("CARGO_BIN_EXE_vaultd");

fn wait(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "vaultd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `export A=x B=y` → {A: x, B: y}
fn parse_exports(line: &str) -> HashMap<String, String> {
    line.trim()
        .trim_start_matches("export ")
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn client(env: &HashMap<String, String>) -> tonic::transport::Channel {
    let read = |key: &str| std::fs::read_to_string(&env[key]).unwrap();
    let addr = env["VAULTD_ADDR"]
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let config = client_config_pem(
        &read("VAULTD_CACERT"),
        Some((&read("VAULTD_CLIENT_CERT"), &read("VAULTD_CLIENT_KEY"))),
    );
    channel(addr, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultd_dev_serves_a_working_vault_and_cleans_up() {
    let mut child = Command::new(VAULTD)
        .args(["dev", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("service.env") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "vaultd dev ended early:\n{banner}"
        );
        banner.push_str(&line);
    }
    assert!(banner.contains("DEVELOPMENT MODE"), "{banner}");
    let dir = PathBuf::from(
        banner
            .split_once(" is in ")
            .and_then(|(_, rest)| rest.split_once(", which"))
            .unwrap()
            .0,
    );
    let health_url = banner
        .lines()
        .find_map(|l| l.strip_prefix("Health:"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(health_url.starts_with("http://127.0.0.1:") && health_url.ends_with("/v1/health"));
    for key in ["ca.key", "server.key", "admin.key", "service.key"] {
        let mode = std::fs::metadata(dir.join("pki").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let share_mode = std::fs::metadata(dir.join("unseal-share"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(share_mode & 0o777, 0o600);

    let service_env = parse_exports(&std::fs::read_to_string(dir.join("service.env")).unwrap());
    assert!(
        banner.contains(
            &std::fs::read_to_string(dir.join("service.env"))
                .unwrap()
                .trim()
                .to_owned()
        )
    );
    let mut broker = vault_proto::v1::broker_client::BrokerClient::new(client(&service_env));
    let session = open_session(&mut broker, vaultd::dev::DEMO_SERVICE)
        .await
        .unwrap();
    let (_, value) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert!(value.starts_with(b"sk-demo-"));

    let admin_env = parse_exports(&std::fs::read_to_string(dir.join("admin.env")).unwrap());
    let status = AdminClient::new(client(&admin_env))
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, v1::SealState::Unsealed as i32);
    // The dev daemon's audit log verifies with the key it wrote.
    let key =
        vault_audit::parse_public_key(&std::fs::read_to_string(dir.join("audit.pub")).unwrap())
            .unwrap();
    assert_eq!(
        vault_crypto::hex::encode(&key).as_str(),
        status.audit_public_key
    );

    signal(&child, rustix::process::Signal::TERM);
    assert!(wait(&mut child, Duration::from_secs(15)).success());
    assert!(!dir.exists(), "the temporary dev directory was left behind");
}

#[test]
fn vaultd_dev_refuses_a_directory_that_is_not_temporary() {
    let output = Command::new(VAULTD)
        .args([
            "dev",
            "--dir",
            "/var/lib/vaultd-dev-test",
            "--grpc",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-persistent-dir"), "{stderr}");
    assert!(!Path::new("/var/lib/vaultd-dev-test").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_and_serve_fail_closed_with_the_reason() {
    let mut vault = TestVault::start().await;
    let config = vault.path("vaultd.toml");
    // While a vaultd runs on them, the data file and the audit log are in use:
    // `serve` would refuse, so check-config does too.
    let busy = Command::new(VAULTD)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("storage.path"), "{stderr}");
    assert!(
        stderr.contains("audit.path") && stderr.contains("in use by another process"),
        "{stderr}"
    );
    let other_key = vault.cert(OPERATOR).key_pem;
    std::fs::write(vault.path("other.key"), other_key).unwrap();
    vault.stop().await;

    let ok = Command::new(VAULTD)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(": ok"));

    let text = std::fs::read_to_string(&config).unwrap();
    for (change, code, reason) in [
        (
            ("client_ca = \"ca.pem\"\n", ""),
            78,
            "tls.client_ca is required",
        ),
        (
            (
                "[audit]\npath = ",
                "[audit]\nfsync = \"sometimes\"\npath = ",
            ),
            78,
            "audit.fsync",
        ),
        (
            ("dir = \"policies\"", "dir = \"no-such-dir\""),
            78,
            "policy.dir",
        ),
        (
            ("key = \"server.key\"", "key = \"ca.pem\""),
            78,
            "cannot read a private key from",
        ),
        (
            ("key = \"server.key\"", "key = \"other.key\""),
            78,
            "the key is not the certificate's key",
        ),
        (
            (
                "socket = \"vaultd.sock\"",
                "socket = \"no-such-dir/vaultd.sock\"",
            ),
            78,
            "listen.socket: its directory",
        ),
    ] {
        let broken = vault.path("broken.toml");
        std::fs::write(&broken, text.replace(change.0, change.1)).unwrap();
        let out = Command::new(VAULTD)
            .arg("check-config")
            .arg(&broken)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }

    // serve: a missing client CA stops it before it listens, with the key named.
    let broken = vault.path("broken.toml");
    std::fs::write(&broken, text.replace("client_ca = \"ca.pem\"\n", "")).unwrap();
    let out = Command::new(VAULTD)
        .args(["serve", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.client_ca is required"));
    // ... and an empty policy directory stops it too.
    std::fs::create_dir(vault.path("empty-policies")).unwrap();
    std::fs::write(
        &broken,
        text.replace("dir = \"policies\"", "dir = \"empty-policies\""),
    )
    .unwrap();
    let out = Command::new(VAULTD)
        .args(["serve", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to start: policies:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_would_not_fit_in_locked_memory_stop_the_start() {
    let vault = TestVault::start().await;
    let text = std::fs::read_to_string(vault.path("vaultd.toml")).unwrap();
    let config = vault.path("many-sessions.toml");
    std::fs::write(
        &config,
        text.replace("[leases]\n", "[leases]\nmax_sessions = 2048\n"),
    )
    .unwrap();
    // 4 MiB of locked memory cannot hold 2048 sessions (4 MiB) and the vault's keys.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l 4096 && exec {VAULTD} serve --config {}",
            config.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("leases.max_sessions = 2048")
            && stderr.contains("RLIMIT_MEMLOCK is 4096 KiB"),
        "{stderr}"
    );
    // check-config sees it too.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l 4096 && exec {VAULTD} check-config {}",
            config.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("RLIMIT_MEMLOCK is 4096 KiB"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_on_sighup_and_stops_on_sigterm() {
    let mut vault = TestVault::start().await;
    vault.stop().await; // the process below takes over the same files
    let mut child = Command::new(VAULTD)
        .args(["serve", "--config"])
        .arg(vault.path("vaultd.toml"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.contains("serving gRPC (mutual TLS) on 127.0.0.1:"),
        "{line}"
    );

    std::fs::write(vault.path("policies/zz-bad.toml"), "[[grant]]\nid = 3\n").unwrap();
    signal(&child, rustix::process::Signal::HUP);
    let mut reload = String::new();
    while !reload.contains("reload: policies") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0);
        reload.push_str(&line);
    }
    assert!(reload.contains("zz-bad.toml"), "{reload}");
    assert!(
        reload.contains("previous policies stay in force"),
        "{reload}"
    );

    signal(&child, rustix::process::Signal::TERM);
    assert!(wait(&mut child, Duration::from_secs(15)).success());
    assert!(!vault.socket().exists(), "the socket was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_sink_is_logged_once_and_ends_in_a_failing_exit() {
    let (_fifo_dir, fifo) = audit_fifo();
    let grpc = vault_testkit::fixture::free_addr();
    let mut fixture = Fixture::new(&Options {
        audit_path: Some(fifo.clone()),
        grpc: Some(grpc),
        ..Options::default()
    });

    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            // Reads the first record (the new segment's start), then goes away.
            let mut reader = BufReader::new(std::fs::File::open(fifo).unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line
        }
    });
    let mut child = Command::new(VAULTD)
        .args(["serve", "--config"])
        .arg(&fixture.config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("serving gRPC"), "{line}");
    assert!(reader.join().unwrap().contains(r#""kind":"start""#));

    // The reader is gone: the next record fails with EPIPE, and the sink for good.
    let cert = fixture.cert(OPERATOR);
    let mut admin = AdminClient::new(channel(
        grpc,
        client_config(&fixture.pki.ca_pem, Some(&cert)),
    ));
    let status = admin.status(v1::StatusRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let mut logged = String::new();
    while !logged.contains("the audit log failed") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{logged}");
        logged.push_str(&line);
    }
    assert!(logged.contains("reader has gone away"), "{logged}");
    assert!(
        logged.contains("Broken pipe"),
        "the cause is named: {logged}"
    );
    // Once, not once per tick or per request.
    admin.status(v1::StatusRequest {}).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    signal(&child, rustix::process::Signal::TERM);
    let status = wait(&mut child, Duration::from_secs(15));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(
        rest.contains("stopped after the audit log stopped vaultd serving"),
        "{rest}"
    );
    assert_eq!(
        (logged + &rest).matches("the audit log failed").count(),
        1,
        "logged once"
    );
}
