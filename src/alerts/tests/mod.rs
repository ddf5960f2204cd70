//! The sinks over real sockets: an HTTP(S) receiver on 127.0.0.1 that checks
//! signatures as a receiver would, a syslog socket in a temporary directory, and the
//! configuration's refusals.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use ring::hmac;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::config::RawAlerts;
use super::*;
use crate::config::ConfigError;

mod refusals;
mod syslog_line;

/// The webhook key as the receiver holds it; the file adds a newline, which is not
/// part of the key.
const KEY: &str = "5c1b0e0d6f3a4e8b9a7c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";

fn parse(text: &str) -> Result<AlertsConfig, ConfigError> {
    #[derive(serde::Deserialize)]
    struct File {
        alerts: RawAlerts,
    }
    let file: File = toml::from_str(text).expect("valid TOML");
    AlertsConfig::parse(file.alerts, &|p| Path::new("/etc/vaultd").join(p))
}

/// A key file with `mode` in `dir`.
fn key_file(dir: &Path, contents: &str, mode: u32) -> PathBuf {
    let path = dir.join("webhook.key");
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `[alerts]` with one webhook named `siem` at `url`, signed with [`KEY`].
fn one_webhook(dir: &Path, url: &str, extra: &str) -> AlertsConfig {
    let key = key_file(dir, &format!("{KEY}\n"), 0o600);
    parse(&format!(
        "[alerts]\n[[alerts.webhook]]\nname = \"siem\"\nurl = \"{url}\"\n\
         secret_file = \"{}\"\n{extra}",
        key.display()
    ))
    .unwrap()
}

/// One request as the receiver got it.
struct Received {
    target: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// An HTTP/1.1 receiver on 127.0.0.1 answering `statuses` in turn, then 200; over TLS
/// when `tls` is given.
async fn receiver(
    statuses: Vec<u16>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let statuses = Arc::new(Mutex::new(statuses.into_iter()));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (tx, statuses, tls) = (tx.clone(), Arc::clone(&statuses), tls.clone());
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (tx, statuses) = (tx.clone(), Arc::clone(&statuses));
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body.collect().await?.to_bytes();
                    let _ = tx.send(Received {
                        target: parts.uri.to_string(),
                        headers: parts.headers,
                        body,
                    });
                    let status = statuses.lock().unwrap().next().unwrap_or(200);
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(b"noted")))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    None => http.serve_connection(TokioIo::new(tcp), service).await,
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                        Err(_) => return,
                    },
                };
            });
        }
    });
    (addr, rx)
}

/// What a receiver does before trusting a delivery: the timestamp is recent, and the
/// signature over `<timestamp>.<body>` verifies under the shared key. Returns the alert.
fn verify_as_receiver(key: &[u8], received: &Received) -> serde_json::Value {
    assert_eq!(received.headers["content-type"], "application/json");
    let timestamp = received.headers["x-vaultd-timestamp"].to_str().unwrap();
    let sent: u64 = timestamp.parse().expect("decimal Unix seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(sent) <= 5,
        "timestamp {sent} is not now ({now})"
    );
    let signature = received.headers["x-vaultd-signature"].to_str().unwrap();
    let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let tag = vault_testkit::memory::unhex(hex);
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let signed = |body: &[u8]| [timestamp.as_bytes(), b".", body].concat();
    hmac::verify(&key, &signed(&received.body), &tag).expect("the signature verifies");
    // The check has teeth: another body, or another timestamp, does not verify.
    let mut tampered = received.body.to_vec();
    tampered.push(b' ');
    assert!(hmac::verify(&key, &signed(&tampered), &tag).is_err());
    let other_time = [(sent + 1).to_string().as_bytes(), b".", &received.body].concat();
    assert!(hmac::verify(&key, &other_time, &tag).is_err());
    serde_json::from_slice(&received.body).expect("the body is JSON")
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a request within 10 s")
        .expect("the receiver runs")
}

async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn webhook_delivers_an_alert_whose_signature_a_receiver_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut rx) = receiver(vec![], None).await;
    let url = format!("http://{addr}/hooks/vaultd?source=vault-1");
    let alerts = Alerts::start(one_webhook(dir.path(), &url, ""), "vault-1".into()).unwrap();
    assert_eq!(alerts.sinks().collect::<Vec<_>>(), ["siem"]);

    let mut alert = Alert::new("seal", Severity::Critical)
        .with_identity("spiffe://platform.example/admin/ops")
        .with_tenant("org-42")
        .with_request_id("req-7")
        .with_detail("reason", "emergency");
    alert.node = "a node the caller made up".into();
    let at = alert.at_unix_ms;
    alerts.raise(alert);

    let received = next(&mut rx).await;
    assert_eq!(received.target, "/hooks/vaultd?source=vault-1");
    assert_eq!(received.headers["host"], addr.to_string());
    let body = verify_as_receiver(KEY.as_bytes(), &received);
    assert_eq!(
        body,
        serde_json::json!({
            "kind": "seal",
            "severity": "critical",
            "at_unix_ms": at,
            "node": "vault-1",
            "identity": "spiffe://platform.example/admin/ops",
            "tenant": "org-42",
            "request_id": "req-7",
            "detail": {"reason": "emergency"},
        })
    );
    eventually("counted as delivered", || alerts.delivered("siem") == 1).await;
    assert_eq!(alerts.dropped("siem"), 0);
    assert_eq!(alerts.raised_total(), [("seal".to_owned(), 1)]);
}

#[tokio::test]
async fn webhook_retries_server_errors_then_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut rx) = receiver(vec![500, 500], None).await;
    let config = one_webhook(dir.path(), &format!("http://{addr}/"), "retries = 2");
    let alerts = Alerts::start(config, "vault-1".into()).unwrap();
    alerts.raise(Alert::new("policy.reload", Severity::Warning));

    let mut bodies = Vec::new();
    for _ in 0..3 {
        let received = next(&mut rx).await;
        // Every attempt is signed afresh, and carries the same alert.
        bodies.push(verify_as_receiver(KEY.as_bytes(), &received));
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    eventually("delivered after two failures", || {
        alerts.delivered("siem") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "no attempt after the one that succeeded"
    );
    assert_eq!((alerts.delivered("siem"), alerts.dropped("siem")), (1, 0));
}

#[tokio::test]
async fn raise_never_waits_on_an_unreachable_webhook_and_counts_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let config = one_webhook(dir.path(), &format!("http://{addr}/"), "retries = 0");
    assert_eq!(config.queue, 1024);
    let alerts = Alerts::start(config, "vault-1".into()).unwrap();
    let batch: Vec<Alert> = (0..10_000)
        .map(|i| Alert::new("anomaly.rate", Severity::Warning).with_detail("n", i.to_string()))
        .collect();

    for alert in batch {
        alerts.raise(alert);
    }
    // This test's runtime has one thread, busy raising: the sink took nothing yet, so
    // everything past a full queue was dropped. Had a raise waited for the sink, the
    // queue would have drained and fewer been dropped. (What a raise costs is measured
    // by `cargo bench --bench alerts`.)
    assert_eq!(alerts.dropped("siem"), 10_000 - 1024);
    assert_eq!(alerts.raised_total(), [("anomaly.rate".to_owned(), 10_000)]);
    // The queued ones fail too (connection refused, no retries) and are counted.
    eventually("every alert counted", || alerts.dropped("siem") == 10_000).await;
    assert_eq!(alerts.delivered("siem"), 0);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_and_loses_its_connection() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let config = one_webhook(dir.path(), &url, "timeout = \"200ms\"\nretries = 0");
    let alerts = Alerts::start(config, "vault-1".into()).unwrap();
    alerts.raise(Alert::new("seal", Severity::Critical));
    let (mut stalled, _) = listener.accept().await.unwrap();
    // Read the request, answer nothing, and wait for vaultd to hang up.
    let mut request = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut request));
    read.await
        .expect("vaultd closes the connection after its timeout")
        .unwrap();
    assert!(request.starts_with(b"POST / HTTP/1.1\r\n"));
    eventually("counted as dropped", || alerts.dropped("siem") == 1).await;
    assert_eq!(alerts.delivered("siem"), 0);
}

fn tls_acceptor(issued: &vault_testkit::Issued) -> tokio_rustls::TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(issued.cert_der.clone())],
        PrivateKeyDer::from(PrivatePkcs8KeyDer::from(issued.key_der.clone())),
    )
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An https webhook (no retries) whose server presents `server`, trusting `ca_pem`.
async fn https_webhook(
    dir: &Path,
    server: &vault_testkit::Issued,
    ca_pem: &str,
) -> (Alerts, mpsc::UnboundedReceiver<Received>) {
    let (addr, rx) = receiver(vec![], Some(tls_acceptor(server))).await;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let extra = format!("ca_file = \"{}\"\nretries = 0", ca.display());
    let config = one_webhook(dir, &format!("https://{addr}/hooks"), &extra);
    (Alerts::start(config, "vault-1".into()).unwrap(), rx)
}

#[tokio::test]
async fn https_webhook_delivers_to_a_server_its_ca_file_vouches_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut pki = vault_testkit::Pki::generate("siem CA");
    let server = pki.server(&["siem.example"]);
    let (alerts, mut rx) = https_webhook(dir.path(), &server, &pki.ca_pem).await;
    alerts.raise(Alert::new("tenant.erase", Severity::Critical).with_tenant("org-42"));
    let body = verify_as_receiver(KEY.as_bytes(), &next(&mut rx).await);
    assert_eq!(body["kind"], "tenant.erase");
    eventually("counted as delivered", || alerts.delivered("siem") == 1).await;
}

#[tokio::test]
async fn https_webhook_refuses_a_server_another_ca_vouches_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut impostor = vault_testkit::Pki::generate("siem CA");
    let server = impostor.server(&["siem.example"]);
    let trusted = vault_testkit::Pki::generate("siem CA");
    let (alerts, mut rx) = https_webhook(dir.path(), &server, &trusted.ca_pem).await;
    alerts.raise(Alert::new("tenant.erase", Severity::Critical));
    eventually("counted as dropped", || alerts.dropped("siem") == 1).await;
    assert_eq!(alerts.delivered("siem"), 0);
    assert!(rx.try_recv().is_err(), "no request reached the impostor");
}

#[test]
fn alerts_without_sinks_need_no_runtime_and_still_count() {
    let alerts = Alerts::start(AlertsConfig::default(), "vault-1".into()).unwrap();
    alerts.raise(Alert::new("seal", Severity::Critical));
    alerts.raise(Alert::new("seal", Severity::Critical));
    assert_eq!(alerts.raised_total(), [("seal".to_owned(), 2)]);
    assert_eq!(alerts.sinks().count(), 0);
    assert_eq!(alerts.dropped("siem"), 0);
}

#[test]
fn sinks_outside_a_runtime_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_webhook(dir.path(), "http://127.0.0.1:9/", "");
    let err = Alerts::start(config, "vault-1".into()).err().unwrap();
    assert!(matches!(err, AlertsError::NoRuntime), "{err}");
}

#[test]
fn kinds_past_the_bound_are_counted_as_other() {
    let alerts = Alerts::start(AlertsConfig::default(), "vault-1".into()).unwrap();
    for i in 0..100 {
        alerts.raise(Alert::new(format!("kind.{i}"), Severity::Warning));
    }
    alerts.raise(Alert::new("kind.0", Severity::Warning));
    let raised = alerts.raised_total();
    assert_eq!(raised.len(), MAX_KINDS);
    let count = |kind: &str| raised.iter().find(|(k, _)| k == kind).map(|(_, n)| *n);
    assert_eq!(count("kind.0"), Some(2));
    assert_eq!(count("other"), Some(100 - (MAX_KINDS as u64 - 1)));
    assert_eq!(count("kind.99"), None);
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    for (retry, low, high) in [
        (0, 100, 200),
        (1, 200, 400),
        (3, 800, 1_600),
        (40, 15_000, 30_000),
    ] {
        let waits: Vec<Duration> = (0..50).map(|_| webhook::backoff(retry)).collect();
        for wait in &waits {
            let ms = wait.as_millis();
            assert!((low..=high).contains(&ms), "retry {retry}: {ms} ms");
        }
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "retry {retry}: no jitter"
        );
    }
}
