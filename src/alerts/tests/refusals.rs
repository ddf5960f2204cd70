//! What `[alerts]` and `Alerts::start` refuse, and the keys their errors name.

use super::*;

/// A webhook table with everything but `url`.
const SIEM: &str = "[[alerts.webhook]]\nname = \"siem\"\nsecret_file = \"siem.key\"\n";

#[test]
fn the_documented_example_parses_into_its_values() {
    let config = parse(
        r#"
        [alerts]
        queue = 512
        [[alerts.webhook]]
        name = "siem"
        url = "https://siem.example/hooks/vaultd"
        secret_file = "keys/webhook.key"
        ca_file = "/etc/pki/siem-ca.pem"
        timeout = "2s"
        retries = 3
        [[alerts.webhook]]
        name = "pager_2"
        url = "http://[::1]:9000/alerts"
        secret_file = "/etc/vaultd/pager.key"
        [alerts.syslog]
        facility = "auth"
        "#,
    )
    .unwrap();
    assert_eq!(config.queue, 512);
    let [siem, pager] = config.webhooks.as_slice() else {
        panic!("two webhooks: {config:?}")
    };
    assert_eq!(siem.name, "siem");
    assert_eq!(siem.url, "https://siem.example/hooks/vaultd");
    assert_eq!(siem.secret_file, Path::new("/etc/vaultd/keys/webhook.key"));
    assert_eq!(
        siem.ca_file.as_deref(),
        Some(Path::new("/etc/pki/siem-ca.pem"))
    );
    assert_eq!((siem.timeout, siem.retries), (Duration::from_secs(2), 3));
    assert_eq!(pager.name, "pager_2");
    assert_eq!(pager.ca_file, None);
    assert_eq!((pager.timeout, pager.retries), (Duration::from_secs(5), 5));
    let syslog = config.syslog.unwrap();
    assert_eq!(syslog.socket, Path::new("/dev/log"));
    assert_eq!(syslog.facility, Facility::Auth);
}

#[test]
fn an_empty_section_has_no_sink_and_syslog_defaults_to_authpriv() {
    assert_eq!(parse("[alerts]").unwrap(), AlertsConfig::default());
    let config = parse("[alerts]\n[alerts.syslog]\nsocket = \"run/log\"").unwrap();
    let syslog = config.syslog.unwrap();
    assert_eq!(syslog.socket, Path::new("/etc/vaultd/run/log"));
    assert_eq!(syslog.facility, Facility::AuthPriv);
    assert_eq!(Facility::AuthPriv.code(), 10);
}

#[test]
fn bad_values_are_refused_naming_their_key() {
    let webhook = |rest: &str| format!("[alerts]\n{SIEM}{rest}");
    let cases = [
        (
            webhook("url = \"https://siem.example/hooks\""),
            "alerts.webhook[0].ca_file is required",
        ),
        (
            webhook("url = \"http://siem.example/\"\nca_file = \"ca.pem\""),
            "alerts.webhook[0].ca_file: ",
        ),
        (webhook("url = \"not a url\""), "alerts.webhook[0].url: "),
        (webhook("url = \"ftp://siem.example/\""), "alerts.webhook[0].url: "),
        (webhook("url = \"siem.example/hooks\""), "alerts.webhook[0].url: "),
        (webhook("url = \"/hooks\""), "alerts.webhook[0].url: "),
        (
            webhook("url = \"http://alice:hunter2@siem.example/\""),
            "alerts.webhook[0].url: ",
        ),
        (
            format!("[alerts]\n{SIEM}url = \"http://a.example/\"\n{SIEM}url = \"b\""),
            "alerts.webhook[1].url: ",
        ),
        (
            format!("[alerts]\n{SIEM}url = \"http://a.example/\"\n{SIEM}url = \"http://b.example/\""),
            "alerts.webhook[1].name: ",
        ),
        (
            "[alerts]\n[[alerts.webhook]]\nname = \"syslog\"\nurl = \"http://a.example/\"\nsecret_file = \"k\""
                .to_owned(),
            "alerts.webhook[0].name: ",
        ),
        (
            "[alerts]\n[[alerts.webhook]]\nname = \"SIEM\"\nurl = \"http://a.example/\"\nsecret_file = \"k\""
                .to_owned(),
            "alerts.webhook[0].name: ",
        ),
        (
            "[alerts]\n[[alerts.webhook]]\nurl = \"http://a.example/\"\nsecret_file = \"k\"".to_owned(),
            "alerts.webhook[0].name is required",
        ),
        (
            "[alerts]\n[[alerts.webhook]]\nname = \"siem\"\nurl = \"http://a.example/\"".to_owned(),
            "alerts.webhook[0].secret_file is required",
        ),
        (webhook(""), "alerts.webhook[0].url is required"),
        (
            webhook("url = \"http://a.example/\"\ntimeout = \"0s\""),
            "alerts.webhook[0].timeout: ",
        ),
        (
            webhook("url = \"http://a.example/\"\ntimeout = \"soon\""),
            "alerts.webhook[0].timeout: ",
        ),
        (
            webhook("url = \"http://a.example/\"\nretries = 21"),
            "alerts.webhook[0].retries: ",
        ),
        ("[alerts]\nqueue = 0".to_owned(), "alerts.queue: "),
        (
            "[alerts]\n[alerts.syslog]\nfacility = \"local0\"".to_owned(),
            "alerts.syslog.facility: ",
        ),
        (
            format!("[alerts]\n{}", format!("{SIEM}url = \"http://a.example/\"\n").repeat(17)),
            "alerts.webhook: ",
        ),
    ];
    for (text, expected) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with(expected),
            "{text}\n  gave: {err}\n  want: {expected}…"
        );
    }
}

#[test]
fn unknown_keys_are_refused() {
    let text = format!("[alerts]\n{SIEM}url = \"http://a.example/\"\nsecret = \"k\"");
    let err = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| t.get("alerts").cloned())
        .map(|alerts| alerts.try_into::<RawAlerts>())
        .unwrap()
        .err()
        .unwrap();
    assert!(err.to_string().contains("unknown field `secret`"), "{err}");
}

#[test]
fn debug_output_redacts_the_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_webhook(dir.path(), "http://a.example/", "");
    let debug = format!("{config:?}");
    assert!(
        debug.contains("[redacted]") && !debug.contains("webhook.key"),
        "{debug}"
    );
}

fn start_error(config: AlertsConfig) -> AlertsError {
    Alerts::start(config, "vault-1".into())
        .err()
        .expect("refused")
}

#[tokio::test]
async fn a_key_file_others_may_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o601] {
        let mut config = one_webhook(dir.path(), "http://a.example/", "");
        std::fs::set_permissions(
            &config.webhooks[0].secret_file,
            PermissionsExt::from_mode(mode),
        )
        .unwrap();
        config.webhooks[0].name = "siem".into();
        let err = start_error(config);
        assert!(
            matches!(&err, AlertsError::SecretFile { problem: SecretFileProblem::OpenToOthers(m), .. } if *m == mode),
            "{mode:o}: {err:?}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(
            err.to_string()
                .starts_with("alerts.webhook \"siem\": secret_file "),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_empty_short_long_or_missing_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let with_key = |contents: &str| {
        let config = one_webhook(dir.path(), "http://a.example/", "");
        key_file(dir.path(), contents, 0o600);
        start_error(config)
    };
    assert!(matches!(
        with_key(""),
        AlertsError::SecretFile {
            problem: SecretFileProblem::Empty,
            ..
        }
    ));
    assert!(matches!(
        with_key(" \n\n"),
        AlertsError::SecretFile {
            problem: SecretFileProblem::Empty,
            ..
        }
    ));
    assert!(matches!(
        with_key("hunter2\n"),
        AlertsError::SecretFile {
            problem: SecretFileProblem::TooShort(7),
            ..
        }
    ));
    assert!(matches!(
        with_key(&"k".repeat(5000)),
        AlertsError::SecretFile {
            problem: SecretFileProblem::TooLong,
            ..
        }
    ));
    let mut config = one_webhook(dir.path(), "http://a.example/", "");
    config.webhooks[0].secret_file = dir.path().join("missing.key");
    let err = start_error(config);
    assert!(
        matches!(
            err,
            AlertsError::SecretFile {
                problem: SecretFileProblem::Read(_),
                ..
            }
        ),
        "{err:?}"
    );
    let mut config = one_webhook(dir.path(), "http://a.example/", "");
    config.webhooks[0].secret_file = dir.path().to_path_buf();
    let err = start_error(config);
    assert!(
        matches!(
            err,
            AlertsError::SecretFile {
                problem: SecretFileProblem::NotAFile,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_https_webhook_without_a_usable_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Built in code, past the parser's check: start checks again.
    let mut config = one_webhook(dir.path(), "http://siem.example/", "");
    config.webhooks[0].url = "https://siem.example/".parse().unwrap();
    let err = start_error(config.clone());
    assert!(matches!(err, AlertsError::NoTrust { .. }), "{err:?}");
    assert!(err.to_string().contains("never falls back"), "{err}");

    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "no certificates here\n").unwrap();
    config.webhooks[0].ca_file = Some(not_pem);
    let err = start_error(config.clone());
    assert!(matches!(err, AlertsError::CaFile { .. }), "{err:?}");

    config.webhooks[0].url = "ftp://siem.example/".parse().unwrap();
    let err = start_error(config);
    assert!(matches!(err, AlertsError::Url { .. }), "{err:?}");
}

#[tokio::test]
async fn a_missing_syslog_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = |socket: &Path| AlertsConfig {
        syslog: Some(SyslogConfig {
            socket: socket.to_path_buf(),
            facility: Facility::AuthPriv,
        }),
        ..AlertsConfig::default()
    };
    let err = start_error(config(&dir.path().join("log")));
    assert!(matches!(err, AlertsError::Syslog { .. }), "{err:?}");
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = start_error(config(&file));
    assert!(err.to_string().ends_with("not a socket"), "{err}");
}
