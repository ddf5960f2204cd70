//! Refused TLS handshakes, as an operator sees them: counted by cause on the metrics
//! endpoint (`vaultd_tls_handshakes_refused_total{reason}`) and logged in aggregate —
//! one line per cause per 10 s, with the count and the last peer — by the real
//! `vaultd` binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::AlertDescription;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vault_testkit::grpc::client_config;
use vault_testkit::process::VaultProcess;
use vault_testkit::{ClientSpec, Pki};

use crate::harness::{Fixture, OPERATOR, Options};

/// Handshakes and reads once: a refused certificate shows up as the server's alert
/// on that read (TLS 1.3 checks the client's certificate after the client considers
/// the handshake done).
pub(crate) async fn handshake(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<(), rustls::Error> {
    let tls_error = |e: std::io::Error| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned()
            .unwrap_or_else(|| panic!("not a TLS error: {e}"))
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(tls_error)?;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .map_err(tls_error)?;
    let mut buf = [0u8; 64];
    tls.read(&mut buf).await.map_err(tls_error)?;
    Ok(())
}

async fn metrics(http: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(http).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The refusals counted for `reason`, if the metric shows that label.
fn refused(metrics: &str, reason: &str) -> Option<u64> {
    let prefix = format!("vaultd_tls_handshakes_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

fn refused_in_all(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("vaultd_tls_handshakes_refused_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_are_counted_by_cause_and_logged_in_aggregate() {
    let mut fixture = Fixture::new(&Options {
        crl: true,
        ..Options::default()
    });
    let revoked = fixture.cert("spiffe://billing.example/svc/revoked");
    std::fs::write(
        fixture.path("clients.crl"),
        fixture.pki.crl(&[revoked.serial]),
    )
    .unwrap();
    let vaultd = VaultProcess::start(&fixture);

    // Every cause is shown before anything is refused.
    let before = metrics(vaultd.http).await;
    for reason in [
        "no_certificate",
        "unknown_ca",
        "revoked",
        "expired",
        "crl_expired",
        "wrong_usage",
        "timeout",
        "other",
    ] {
        assert_eq!(refused(&before, reason), Some(0), "{reason}:\n{before}");
    }

    let ca = fixture.pki.ca_pem.clone();
    let good = fixture.cert(OPERATOR);
    assert_eq!(
        handshake(vaultd.grpc, client_config(&ca, Some(&good))).await,
        Ok(())
    );
    let foreign = Pki::generate("some other CA").spiffe_client(OPERATOR);
    for _ in 0..5 {
        assert_eq!(
            handshake(vaultd.grpc, client_config(&ca, Some(&foreign))).await,
            Err(rustls::Error::AlertReceived(AlertDescription::UnknownCA))
        );
    }
    let expired = fixture.pki.client(&ClientSpec {
        uris: vec![OPERATOR.into()],
        expired: true,
        ..ClientSpec::default()
    });
    for (config, alert) in [
        (
            client_config(&ca, Some(&expired)),
            AlertDescription::CertificateExpired,
        ),
        (
            client_config(&ca, Some(&revoked)),
            AlertDescription::CertificateRevoked,
        ),
        (
            client_config(&ca, None),
            AlertDescription::CertificateRequired,
        ),
    ] {
        assert_eq!(
            handshake(vaultd.grpc, config).await,
            Err(rustls::Error::AlertReceived(alert))
        );
    }

    // Counted by cause, just after each alert is sent; the good handshake not at all.
    let expected = [
        ("unknown_ca", 5),
        ("expired", 1),
        ("revoked", 1),
        ("no_certificate", 1),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let now = metrics(vaultd.http).await;
        if expected
            .iter()
            .all(|(reason, n)| refused(&now, reason) == Some(*n))
        {
            break now;
        }
        assert!(Instant::now() < deadline, "not counted:\n{now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused_in_all(&counted), 8, "{counted}");

    // Logged: the first of each cause at once; the four other unknown_ca refusals in
    // one line when their 10 s window ends.
    let handshake_lines = || -> Vec<String> {
        vaultd
            .log()
            .into_iter()
            .filter(|line| line.contains("TLS handshake"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while handshake_lines()
        .iter()
        .filter(|line| line.contains("(unknown_ca)"))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no summary line: {:#?}",
            vaultd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = handshake_lines();
    let with = |text: &str| lines.iter().filter(|l| l.contains(text)).count();
    assert_eq!(
        with("refused 1 TLS handshake (unknown_ca), the last from 127.0.0.1:"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        with("refused 4 TLS handshakes (unknown_ca) in the last 10s, the last from 127.0.0.1:"),
        1,
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("not issued by tls.client_ca")),
        "the line says what to do: {lines:#?}"
    );
    for cause in ["(expired)", "(revoked)", "(no_certificate)"] {
        assert_eq!(with(cause), 1, "{cause}: {lines:#?}");
    }
    assert_eq!(lines.len(), 5, "{lines:#?}");
    // Nothing of the certificates themselves.
    for line in &lines {
        assert!(
            !line.contains("spiffe://") && !line.contains("BEGIN"),
            "{line}"
        );
    }
}
