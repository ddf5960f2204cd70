//! The syslog sink: one RFC 5424 message per alert, sent as a datagram to the local
//! syslog socket without ever waiting — a full or missing socket drops the alert.
//!
//! ```text
//! <84>1 2026-01-01T12:00:00.000Z vault-1 vaultd 4711 anomaly.rate - {"kind":"anomaly.rate",…}
//! ```
//!
//! PRI is facility × 8 + severity (warning 4, crit 2); HOSTNAME is the node, APP-NAME
//! `vaultd`, PROCID the process id, MSGID the alert's kind, no structured data, and MSG
//! the alert's JSON.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::{Alert, AlertsError, Facility, Severity, SinkCounts, SyslogConfig};

/// 9999-12-31T23:59:59.999Z, the last time RFC 3339 (and humantime) can write.
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

/// An opened syslog sink.
pub(super) struct Syslog {
    /// Unbound and non-blocking: each message is addressed to `path`, so a restarted
    /// syslog daemon is reached again without reconnecting.
    socket: UnixDatagram,
    path: PathBuf,
    facility: Facility,
    hostname: String,
    procid: u32,
}

impl Syslog {
    /// Checks that the socket exists and makes the sending socket.
    pub(super) fn open(config: &SyslogConfig, node: &str) -> Result<Self, AlertsError> {
        let fail = |source| AlertsError::Syslog {
            path: config.socket.clone(),
            source,
        };
        let meta = std::fs::metadata(&config.socket).map_err(fail)?;
        if !meta.file_type().is_socket() {
            return Err(fail(std::io::Error::other("not a socket")));
        }
        let socket = UnixDatagram::unbound().map_err(fail)?;
        socket.set_nonblocking(true).map_err(fail)?;
        Ok(Self {
            socket,
            path: config.socket.clone(),
            facility: config.facility,
            hostname: header_field(node, 255).to_owned(),
            procid: std::process::id(),
        })
    }

    /// Sends queued alerts until every sender is gone. Logs when sending starts to
    /// fail and when it works again, not once per dropped alert.
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Arc<Alert>>, counts: Arc<SinkCounts>) {
        let mut failing = false;
        while let Some(alert) = queue.recv().await {
            let sent = self
                .line(&alert)
                .map_err(std::io::Error::from)
                .and_then(|line| self.socket.send_to(&line, &self.path));
            match sent {
                Ok(_) => {
                    counts.count_delivered();
                    if failing {
                        failing = false;
                        tracing::info!(socket = %self.path.display(), "syslog takes alerts again");
                    }
                }
                Err(e) => {
                    counts.count_dropped();
                    if !failing {
                        failing = true;
                        tracing::warn!(
                            socket = %self.path.display(),
                            "syslog refuses alerts, dropping them until it takes them again: {e}"
                        );
                    }
                }
            }
        }
    }

    /// The RFC 5424 message for `alert`.
    pub(super) fn line(&self, alert: &Alert) -> Result<Vec<u8>, serde_json::Error> {
        let severity: u16 = match alert.severity {
            Severity::Warning => 4,
            Severity::Critical => 2,
        };
        let pri = u16::from(self.facility.code()) * 8 + severity;
        let mut line = format!(
            "<{pri}>1 {} {} vaultd {} {} - ",
            timestamp(alert.at_unix_ms),
            self.hostname,
            self.procid,
            header_field(&alert.kind, 32),
        )
        .into_bytes();
        serde_json::to_writer(&mut line, alert)?;
        Ok(line)
    }
}

/// RFC 3339 with milliseconds in UTC, or `-` (the nil value) outside what it can write.
fn timestamp(at_unix_ms: i64) -> String {
    match u64::try_from(at_unix_ms) {
        Ok(ms @ 0..=LAST_RFC3339_MS) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        _ => "-".to_owned(),
    }
}

/// `text` if it can stand as a header field — 1 to `max` printable ASCII characters,
/// no spaces — or else `-`, the nil value.
fn header_field(text: &str, max: usize) -> &str {
    if (1..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
        text
    } else {
        "-"
    }
}
