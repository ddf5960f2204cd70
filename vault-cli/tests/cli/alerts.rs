//! Critical events reach a configured webhook, signed, once their audit record is
//! written; the alert counters show on /metrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::Duration;

use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

use crate::Vaultctl;

const KEY: &str = "an-hmac-key-of-at-least-thirty-two-bytes!";

/// One HTTP request a receiver took: its headers (lower-cased names) and body.
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Accepts deliveries on `listener`, answers 200, and passes them on.
fn receiver(listener: TcpListener) -> mpsc::Receiver<Delivery> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let Some((name, value)) = line.trim_end().split_once(':') else {
                    break;
                };
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            if tx.send(Delivery { headers, body }).is_err() {
                return;
            }
        }
    });
    rx
}

fn metrics(process: &VaultProcess) -> String {
    let mut tcp = std::net::TcpStream::connect(process.http).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn a_seal_reaches_the_webhook_signed_and_is_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/vaultd", listener.local_addr().unwrap());
    let deliveries = receiver(listener);
    let mut fixture = Fixture::new(&FixtureOptions {
        extra: format!(
            "[[alerts.webhook]]\nname = \"siem\"\nurl = \"{url}\"\nsecret_file = \"webhook.key\"\n"
        ),
        ..FixtureOptions::default()
    });
    let key = fixture.path("webhook.key");
    std::fs::write(&key, KEY).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let process = VaultProcess::start(&fixture);
    let addr = format!("https://localhost:{}", process.grpc.port());
    let operator = Vaultctl::as_identity(&mut fixture, &addr, OPERATOR);
    let shares = fixture.path("shares");
    operator.init_and_unseal(&shares);
    operator.run(&["seal"]).ok();

    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let delivery = deliveries
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("alerts so far: {kinds:?}"));
        let header = |name: &str| {
            delivery
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        // Verified as a receiver would: HMAC-SHA256 over "<timestamp>.<body>".
        let timestamp = header("x-vaultd-timestamp");
        let signature = header("x-vaultd-signature");
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(&delivery.body);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY.as_bytes());
        let tag = vault_crypto::hex::decode(signature.strip_prefix("sha256=").unwrap()).unwrap();
        ring::hmac::verify(&key, &signed, &tag).expect("a valid signature");
        let alert: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(alert["identity"], OPERATOR);
        assert_eq!(alert["severity"], "critical");
        kinds.push(alert["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["admin.init", "admin.unseal", "admin.seal"]);
    let text = metrics(&process);
    assert!(
        text.contains("vaultd_alerts_total{kind=\"admin.seal\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vaultd_alert_drops_total{sink=\"siem\"} 0"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}
