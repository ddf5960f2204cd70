//! The syslog sink over a Unix datagram socket bound in a temporary directory.

use super::*;

/// The fields of an RFC 5424 message without structured data: PRI and version,
/// timestamp, hostname, app-name, procid, msgid, structured data, message.
fn fields(datagram: &[u8]) -> [String; 8] {
    let text = std::str::from_utf8(datagram).expect("UTF-8");
    let fields: Vec<String> = text.splitn(8, ' ').map(str::to_owned).collect();
    fields.try_into().expect("eight fields")
}

async fn receive(socket: &tokio::net::UnixDatagram) -> Vec<u8> {
    let mut buffer = vec![0; 65_536];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buffer))
        .await
        .expect("a datagram within 10 s")
        .unwrap();
    buffer.truncate(n);
    buffer
}

fn syslog_to(socket: &Path, facility: &str) -> AlertsConfig {
    parse(&format!(
        "[alerts]\n[alerts.syslog]\nsocket = \"{}\"\nfacility = \"{facility}\"",
        socket.display()
    ))
    .unwrap()
}

#[tokio::test]
async fn syslog_receives_one_rfc5424_message_per_alert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    let alerts = Alerts::start(syslog_to(&path, "authpriv"), "vault-1".into()).unwrap();
    assert_eq!(alerts.sinks().collect::<Vec<_>>(), ["syslog"]);

    let alert = Alert::new("anomaly.rate", Severity::Warning)
        .with_identity("spiffe://platform.example/svc/billing")
        .with_tenant("org-42")
        .with_detail("factor", "10");
    let at = alert.at_unix_ms;
    alerts.raise(alert);
    let [pri, timestamp, host, app, procid, msgid, data, message] = fields(&receive(&socket).await);
    assert_eq!(pri, "<84>1", "authpriv (10) × 8 + warning (4), version 1");
    assert!(
        timestamp.ends_with('Z') && timestamp.len() == 24,
        "{timestamp}"
    );
    let when = humantime::parse_rfc3339(&timestamp).unwrap();
    assert_eq!(
        when,
        UNIX_EPOCH + Duration::from_millis(at.try_into().unwrap())
    );
    assert_eq!(
        [host, app, msgid, data],
        ["vault-1", "vaultd", "anomaly.rate", "-"]
    );
    assert_eq!(procid, std::process::id().to_string());
    let body: serde_json::Value = serde_json::from_str(&message).unwrap();
    assert_eq!(body["node"], "vault-1");
    assert_eq!(body["identity"], "spiffe://platform.example/svc/billing");
    assert_eq!(body["detail"]["factor"], "10");
    eventually("counted as delivered", || alerts.delivered("syslog") == 1).await;
}

#[tokio::test]
async fn syslog_header_fields_that_cannot_stand_are_nil() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    let alerts = Alerts::start(syslog_to(&path, "auth"), "a node".into()).unwrap();
    let mut alert = Alert::new("two words", Severity::Critical);
    alert.at_unix_ms = -1;
    alerts.raise(alert);
    let [pri, timestamp, host, _, _, msgid, _, message] = fields(&receive(&socket).await);
    assert_eq!(pri, "<34>1", "auth (4) × 8 + crit (2), version 1");
    assert_eq!([timestamp, host, msgid], ["-", "-", "-"]);
    let body: serde_json::Value = serde_json::from_str(&message).unwrap();
    assert_eq!(body["kind"], "two words");
}

#[tokio::test]
async fn a_gone_syslog_socket_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let socket = UnixDatagram::bind(&path).unwrap();
    let alerts = Alerts::start(syslog_to(&path, "authpriv"), "vault-1".into()).unwrap();
    drop(socket);
    std::fs::remove_file(&path).unwrap();
    alerts.raise(Alert::new("seal", Severity::Critical));
    eventually("counted as dropped", || alerts.dropped("syslog") == 1).await;
    assert_eq!(alerts.delivered("syslog"), 0);
}
