//! `[alerts]`: where security alerts go, as written in the configuration file and as
//! validated.
//!
//! ```toml
//! [alerts]
//! queue = 1024                   # alerts waiting per sink; more are dropped and counted
//!
//! [[alerts.webhook]]             # any number, up to 16
//! name = "siem"                  # names the sink in metrics and logs
//! url = "https://siem.example/hooks/vaultd"
//! secret_file = "/etc/vaultd/webhook.key"   # the HMAC key, mode 0600, at least 32 bytes
//! ca_file = "/etc/vaultd/siem-ca.pem"       # required for https, refused for http
//! timeout = "5s"                 # per attempt
//! retries = 5                    # after the first attempt
//!
//! [alerts.syslog]                # optional
//! socket = "/dev/log"
//! facility = "authpriv"          # or "auth"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use rustls::pki_types::ServerName;
use serde::Deserialize;

use crate::config::{ConfigError, SECOND, count, duration, required};

/// Alerts waiting in one sink's queue when `alerts.queue` is not set.
const DEFAULT_QUEUE: usize = 1024;
/// Webhooks one daemon may have: each is a task, a queue and a connection per alert.
const MAX_WEBHOOKS: usize = 16;
/// The name the syslog sink has in metrics; no webhook may take it.
pub(super) const SYSLOG_SINK: &str = "syslog";

/// `[alerts]` as written: every key optional, unknown keys refused.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    pub(crate) queue: Option<usize>,
    #[serde(default)]
    pub(crate) webhook: Vec<RawWebhook>,
    pub(crate) syslog: Option<RawSyslog>,
}

/// One `[[alerts.webhook]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub(crate) name: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) secret_file: Option<PathBuf>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) timeout: Option<String>,
    pub(crate) retries: Option<u32>,
}

/// `[alerts.syslog]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyslog {
    pub(crate) socket: Option<PathBuf>,
    pub(crate) facility: Option<String>,
}

/// Where security alerts go. The default has no sink: alerts are logged and counted only.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// Signed HTTP webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// The local syslog daemon, if alerts go there too.
    pub syslog: Option<SyslogConfig>,
    /// Alerts that may wait in each sink's queue; when it is full, new alerts are
    /// dropped for that sink and counted.
    pub queue: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            syslog: None,
            queue: DEFAULT_QUEUE,
        }
    }
}

/// One signed webhook (`[[alerts.webhook]]`).
#[derive(Clone, PartialEq)]
pub struct WebhookConfig {
    /// The sink's name in metrics and logs: 1-32 characters a-z, 0-9, `-`, `_`.
    pub name: String,
    /// Where alerts are POSTed: `http://` or `https://`, no credentials in it.
    pub url: Uri,
    /// The file holding the HMAC key (owner-only permissions, at least 32 bytes).
    pub secret_file: PathBuf,
    /// The CA (PEM) an https endpoint's certificate must chain to. Required for https,
    /// where it is the only trust: there is no fallback to the system roots.
    pub ca_file: Option<PathBuf>,
    /// How long one attempt (connect, TLS, request, response head) may take.
    pub timeout: Duration,
    /// Attempts after the first before an alert is dropped.
    pub retries: u32,
}

// The key file's path is redacted like every key path in the configuration.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret_file", &"[redacted]")
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// The local syslog daemon (`[alerts.syslog]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// Its Unix datagram socket.
    pub socket: PathBuf,
    /// The facility alerts are logged under.
    pub facility: Facility,
}

/// The syslog facilities security alerts may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facility {
    /// `auth` (4): security and authorisation messages.
    Auth,
    /// `authpriv` (10): the same, kept in a file only root reads (the default).
    AuthPriv,
}

impl Facility {
    /// The facility's number in a syslog priority.
    pub fn code(self) -> u8 {
        match self {
            Self::Auth => 4,
            Self::AuthPriv => 10,
        }
    }
}

impl AlertsConfig {
    /// Validates `[alerts]`; `at` resolves relative paths (against the configuration
    /// file's directory). Files are not read here but by [`super::Alerts::start`].
    pub(crate) fn parse(
        raw: RawAlerts,
        at: &dyn Fn(PathBuf) -> PathBuf,
    ) -> Result<Self, ConfigError> {
        if raw.webhook.len() > MAX_WEBHOOKS {
            return Err(ConfigError::Invalid {
                key: "alerts.webhook",
                reason: format!(
                    "{} webhooks; at most {MAX_WEBHOOKS} are allowed",
                    raw.webhook.len()
                ),
            });
        }
        let mut webhooks: Vec<WebhookConfig> = Vec::with_capacity(raw.webhook.len());
        for (index, raw) in raw.webhook.into_iter().enumerate() {
            let in_table = |error| ConfigError::InTable {
                array: "alerts.webhook",
                index,
                source: Box::new(error),
            };
            let webhook = webhook(raw, at).map_err(in_table)?;
            if webhook.name == SYSLOG_SINK || webhooks.iter().any(|w| w.name == webhook.name) {
                return Err(in_table(ConfigError::Invalid {
                    key: "name",
                    reason: format!(
                        "{:?} already names another sink; each sink needs its own name",
                        webhook.name
                    ),
                }));
            }
            webhooks.push(webhook);
        }
        Ok(Self {
            webhooks,
            syslog: raw.syslog.map(|s| syslog(s, at)).transpose()?,
            queue: count("alerts.queue", raw.queue, DEFAULT_QUEUE, (1, 1_000_000))?,
        })
    }
}

/// One `[[alerts.webhook]]` table; error keys are relative to it.
fn webhook(raw: RawWebhook, at: &dyn Fn(PathBuf) -> PathBuf) -> Result<WebhookConfig, ConfigError> {
    let name = required(
        raw.name,
        "name",
        "the sink's name in metrics, e.g. \"siem\"",
    )?;
    if !valid_name(&name) {
        return Err(ConfigError::Invalid {
            key: "name",
            reason: format!("{name:?}: use 1-32 characters a-z, 0-9, '-' or '_'"),
        });
    }
    let text = required(
        raw.url,
        "url",
        "where alerts are POSTed, e.g. \"https://siem.example/hooks/vaultd\"",
    )?;
    let url: Uri = text.parse().map_err(|_| ConfigError::Invalid {
        key: "url",
        reason: format!("{text:?} is not a URL; use e.g. \"https://siem.example/hooks/vaultd\""),
    })?;
    if let Some(problem) = url_problem(&url) {
        return Err(ConfigError::Invalid {
            key: "url",
            reason: format!("{text:?}: {problem}"),
        });
    }
    let ca_file = match (is_https(&url), raw.ca_file) {
        (true, None) => {
            return Err(ConfigError::Missing {
                key: "ca_file",
                why: "an https webhook's certificate is checked against this CA (PEM) only; \
                      vaultd does not fall back to the system roots",
            });
        }
        (false, Some(_)) => {
            return Err(ConfigError::Invalid {
                key: "ca_file",
                reason: "set for a plain http url, where no TLS would use it; \
                         use an https url or remove ca_file"
                    .into(),
            });
        }
        (_, ca_file) => ca_file.map(at),
    };
    Ok(WebhookConfig {
        name,
        url,
        secret_file: at(required(
            raw.secret_file,
            "secret_file",
            "a file (mode 0600) holding the key alerts are signed with, \
             e.g. made with `openssl rand -hex 32`",
        )?),
        ca_file,
        timeout: duration(
            "timeout",
            raw.timeout.as_deref(),
            5 * SECOND,
            (Duration::from_millis(100), 60 * SECOND),
        )?,
        retries: count("retries", raw.retries, 5, (0, 20))?,
    })
}

fn syslog(raw: RawSyslog, at: &dyn Fn(PathBuf) -> PathBuf) -> Result<SyslogConfig, ConfigError> {
    Ok(SyslogConfig {
        socket: at(raw.socket.unwrap_or_else(|| PathBuf::from("/dev/log"))),
        facility: match raw.facility.as_deref() {
            None | Some("authpriv") => Facility::AuthPriv,
            Some("auth") => Facility::Auth,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "alerts.syslog.facility",
                    reason: format!("{other:?}: use \"authpriv\" or \"auth\""),
                });
            }
        },
    })
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
}

pub(super) fn is_https(url: &Uri) -> bool {
    url.scheme() == Some(&http::uri::Scheme::HTTPS)
}

/// Why `url` cannot be a webhook, if it cannot. Checked when the configuration is
/// parsed and again when a sink starts, since [`WebhookConfig`] can be built in code.
pub(super) fn url_problem(url: &Uri) -> Option<&'static str> {
    if !matches!(url.scheme_str(), Some("http" | "https")) {
        return Some("use an http:// or https:// URL");
    }
    let Some(authority) = url.authority() else {
        return Some("the URL names no host");
    };
    if authority.as_str().contains('@') {
        return Some(
            "credentials in the URL would end up in logs; alerts are authenticated by \
             their signature (secret_file) instead",
        );
    }
    let host = bare_host(authority.host());
    if host.is_empty() {
        return Some("the URL names no host");
    }
    if is_https(url) && ServerName::try_from(host).is_err() {
        return Some("the host is neither a DNS name nor an IP address, so TLS cannot check it");
    }
    None
}

/// A URL's host without the brackets of an IPv6 literal.
pub(super) fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}
