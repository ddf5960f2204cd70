//! Day-2 changes without a restart: SIGHUP re-reads `vaultd.toml` (a CRL added to
//! the list takes effect on new and open connections) and reopens the audit log for
//! rotation, the chain continuing across the files; a FIFO audit sink whose reader
//! died comes back by itself when a new reader appears, and no request was answered
//! unaudited meanwhile.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::AlertDescription;
use tonic::Code;
use vault_proto::v1;
use vault_testkit::grpc::{channel, client_config};

use crate::harness::{
    Fixture, GATEWAY, OPERATOR, Options, TestVault, audit_fifo, lease_request, signal,
};

const VAULTD: &str = env!("CARGO_BIN_EXE_vaultd");

/// Whole lines a reader took from the FIFO; a line cut short when it died is dropped.
type Captured = Arc<Mutex<Vec<String>>>;

/// Starts `cat` reading the FIFO, its output lines collected into `into`.
fn cat_reader(fifo: &Path, into: &Captured) -> (Child, std::thread::JoinHandle<()>) {
    let mut cat = Command::new("cat")
        .arg(fifo)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(cat.stdout.take().unwrap());
    let into = Arc::clone(into);
    let collector = std::thread::spawn(move || {
        let mut line = Vec::new();
        while stdout.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            if let Some(whole) = line.strip_suffix(b"\n") {
                into.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(whole).into_owned());
            }
            line.clear();
        }
    });
    (cat, collector)
}

fn text(lines: &Captured) -> String {
    lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| format!("{l}\n"))
        .collect()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct Outcomes {
    /// Lease ids answered.
    answered: Vec<String>,
    /// Requests refused because they could not be audited.
    refused: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_reader_killed_under_load_and_restarted_gets_the_chain_back() {
    let (_fifo_dir, fifo) = audit_fifo();
    let first: Captured = Captured::default();
    let (mut cat1, collect1) = cat_reader(&fifo, &first);
    let (mut vault, _) = TestVault::unsealed_with(Options {
        audit_path: Some(fifo.clone()),
        ..Options::default()
    })
    .await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let (gateway, session) = vault.session(GATEWAY).await;

    // Load: leases one after another, each answered only once audited.
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let (outcomes, stop, mut gateway) = (Arc::clone(&outcomes), Arc::clone(&stop), gateway);
        async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let request = lease_request(&session, "acme", "live", "byok/openai");
                match gateway.lease(request).await {
                    Ok(answer) => outcomes
                        .lock()
                        .unwrap()
                        .answered
                        .push(answer.into_inner().lease_id),
                    Err(status) => {
                        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                        assert!(status.message().contains("audit"), "{status:?}");
                        outcomes.lock().unwrap().refused += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
    });
    let answered = || outcomes.lock().unwrap().answered.len();
    until("leases before the kill", || answered() >= 100).await;

    // The reader dies mid-load: requests are refused, not answered.
    cat1.kill().unwrap();
    cat1.wait().unwrap();
    collect1.join().unwrap();
    until("refusals", || outcomes.lock().unwrap().refused >= 10).await;
    let (answered_before, refused_while_gone) = {
        let o = outcomes.lock().unwrap();
        (o.answered.len(), o.refused)
    };
    let health = vault.http_get("/v1/health").await.0;
    assert_eq!(health, 503, "health while the audit sink is down");

    // A new reader: vaultd opens the FIFO again by itself, and serves.
    let second: Captured = Captured::default();
    let (mut cat2, collect2) = cat_reader(&fifo, &second);
    until("leases after the new reader", || {
        answered() >= answered_before + 100
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();
    assert!(refused_while_gone >= 10);
    assert_eq!(vault.http_get("/v1/health").await.0, 200);

    // Stopping closes the FIFO: the second reader ends with everything written.
    vault.stop().await;
    collect2.join().unwrap();
    cat2.wait().unwrap();

    let (first, second) = (text(&first), text(&second));
    let report = vault_audit::verify_all([first.as_bytes(), second.as_bytes()], None);
    // Whatever a reader's death may lose (records it had read but not yet written
    // out), the chain shows as a gap, and nothing answered is missing beyond it.
    let lost = match &report.first_error {
        None => 0,
        Some(e) => match &e.kind {
            // Records missing, never records repeated or going backwards.
            vault_audit::VerifyErrorKind::SeqGap { expected, found }
                if e.input == 1 && found > expected =>
            {
                found - expected
            }
            _ => panic!("the chain across both readers is broken: {report:?}"),
        },
    };
    // The second reader's stream: what the first left unread in the pipe (vaultd
    // holds the pipe open, so it waits there), then the continuation, which names
    // the failure.
    let continuation = second
        .lines()
        .find(|l| l.contains(r#""kind":"continuation""#))
        .unwrap_or_else(|| panic!("no continuation record: {second}"));
    assert!(continuation.contains("refused"), "{continuation}");
    if lost == 0 {
        assert_eq!(report.continuations.len(), 1, "{report:?}");
        assert_eq!(report.continuations[0].input, 1, "{report:?}");
    }
    let captured = first + &second;
    let missing = outcomes
        .lock()
        .unwrap()
        .answered
        .iter()
        .filter(|id| !captured.contains(id.as_str()))
        .count() as u64;
    assert!(
        missing <= lost,
        "{missing} answered leases are in no record, and the chain shows {lost} lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_config_adds_a_crl_and_rotates_the_audit_log() {
    let grpc = vault_testkit::fixture::free_addr();
    let mut fixture = Fixture::new(&Options {
        grpc: Some(grpc),
        ..Options::default()
    });
    let ca = fixture.pki.ca_pem.clone();
    let victim = fixture.cert(OPERATOR);
    let bystander = fixture.cert(GATEWAY);
    let mut child = Killed(
        Command::new(VAULTD)
            .args(["serve", "--config"])
            .arg(&fixture.config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("serving gRPC"), "{line}");

    let connect = |cert| {
        vault_proto::v1::admin_client::AdminClient::new(channel(
            grpc,
            client_config(&ca, Some(cert)),
        ))
    };
    let mut open = connect(&victim);
    open.status(v1::StatusRequest {}).await.unwrap();

    // Day 2: a CRL added to the configuration, a new log level, a listener moved
    // (which needs a restart), and the audit log rotated away.
    std::fs::write(
        fixture.path("revoked.crl"),
        fixture.pki.crl(&[victim.serial]),
    )
    .unwrap();
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    let config = config
        .replacen(
            "client_ca = \"ca.pem\"\n",
            "client_ca = \"ca.pem\"\ncrls = [\"revoked.crl\"]\n",
            1,
        )
        .replacen(
            "node = \"test-node\"\n",
            "node = \"test-node\"\nlog_level = \"debug\"\n",
            1,
        )
        .replacen("http = \"127.0.0.1:0\"", "http = \"127.0.0.1:1\"", 1);
    std::fs::write(&fixture.config, config).unwrap();
    std::fs::rename(fixture.path("audit.jsonl"), fixture.path("audit.jsonl.1")).unwrap();
    signal(child, rustix::process::Signal::HUP);
    let mut logged = String::new();
    while !logged.contains("reload: needs_restart") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{logged}");
        logged.push_str(&line);
    }
    assert!(logged.contains("reload: config: read again"), "{logged}");
    assert!(logged.contains("reload: applied: log_level"), "{logged}");
    assert!(logged.contains("listen.http"), "{logged}");
    assert!(logged.contains("the chain continues"), "{logged}");

    // The revoked certificate: refused on a new connection, and its open one closed.
    let refused = crate::tls::handshake_at(grpc, client_config(&ca, Some(&victim))).await;
    assert_eq!(
        refused,
        Err(rustls::Error::AlertReceived(
            AlertDescription::CertificateRevoked
        ))
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.status(v1::StatusRequest {}).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the revoked connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Anyone may open a session: the bystander's certificate still connects.
    vault_proto::v1::broker_client::BrokerClient::new(channel(
        grpc,
        client_config(&ca, Some(&bystander)),
    ))
    .open_session(v1::OpenSessionRequest {
        client_public_key: vec![9; 32],
    })
    .await
    .unwrap();

    signal(child, rustix::process::Signal::TERM);
    assert!(child.wait().unwrap().success());
    let files = ["audit.jsonl.1", "audit.jsonl"].map(|f| std::fs::read(fixture.path(f)).unwrap());
    let report = vault_audit::verify_all(files.iter().map(Vec::as_slice), None);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.continuations.len(), 1, "{report:?}");
    assert_eq!(report.continuations[0].input, 1);
    // Each file alone: the old one ends where the new one's continuation begins.
    let alone = vault_audit::verify(files[1].as_slice(), None);
    assert!(alone.is_ok(), "{alone:?}");
    let new_log = String::from_utf8_lossy(&files[1]).into_owned();
    assert!(new_log.contains("system.reload"), "{new_log}");
}

/// A child process killed if the test ends early: a leftover daemon would hold its
/// ports and files.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
