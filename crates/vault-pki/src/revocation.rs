//! Revocation: the CA directory's list of revoked certificates, and the CRLs signed
//! from it.
//!
//! The list, [`REVOKED_FILE`] in the CA directory (mode 0600), is the record; a CRL is
//! only its signed, dated publication. Entries are only ever added: each change is
//! written to a temporary file and renamed over the list, under a lock, so a crash or
//! two revocations at once never lose an entry. Every CRL lists every entry, with a
//! CRL number one higher than the last (kept in the list too), a `thisUpdate` a minute
//! ago and a `nextUpdate` after which vaultd (`tls.crl_expiry = "enforce"`) refuses
//! every certificate of this CA until a fresh CRL is loaded: publish again before then.
//!
//! ```toml
//! crl_number = 2
//!
//! [[revoked]]
//! serial = "5f3a09c2…"
//! revoked_at = 2026-01-31T12:00:00Z
//! reason = "key-compromise"
//! subject = "spiffe://billing.example/svc/gateway"
//! not_after = 2026-02-28T12:00:00Z
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use serde::Deserialize;
use time::OffsetDateTime;
use toml::value::{Datetime, Offset};

use crate::files::{DirLock, io_error, replace};
use crate::{Authority, Certificate, PkiError, Serial, rfc3339};

/// The revocation list's file name in the CA directory.
pub const REVOKED_FILE: &str = "revoked.toml";
/// Where a CRL is published by default, in the CA directory.
pub const CRL_FILE: &str = "crl.pem";
/// The lock taken while the list is read and changed.
const LOCK_FILE: &str = "revoked.lock";

/// The shortest and longest time a CRL may be valid for.
const NEXT_UPDATE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(3600)..=Duration::from_secs(366 * 86_400);

/// Whether a CRL may be valid for `next_update`: 1 hour to 366 days. (Checked by
/// [`Revocations::publish`] too; check first to refuse before anything is recorded.)
pub fn check_next_update(next_update: Duration) -> Result<(), PkiError> {
    if NEXT_UPDATE.contains(&next_update) {
        Ok(())
    } else {
        Err(PkiError::NextUpdate(next_update))
    }
}

/// Why a certificate was revoked (RFC 5280 §5.3.1), as the CRL says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// No reason given (left out of the CRL, as RFC 5280 asks).
    Unspecified,
    /// Its private key was, or may have been, exposed.
    KeyCompromise,
    /// The CA's key was exposed.
    CaCompromise,
    /// The subject's name or other information changed.
    AffiliationChanged,
    /// Replaced by a newer certificate.
    Superseded,
    /// No longer needed: the service or person is gone.
    CessationOfOperation,
}

impl Reason {
    /// Every reason, in the order `vaultctl` lists them.
    pub const ALL: [Reason; 6] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
    ];

    /// The name used on the command line and in the list, e.g. `key-compromise`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "key-compromise",
            Reason::CaCompromise => "ca-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
        }
    }

    fn code(self) -> Option<RevocationReason> {
        match self {
            Reason::Unspecified => None,
            Reason::KeyCompromise => Some(RevocationReason::KeyCompromise),
            Reason::CaCompromise => Some(RevocationReason::CaCompromise),
            Reason::AffiliationChanged => Some(RevocationReason::AffiliationChanged),
            Reason::Superseded => Some(RevocationReason::Superseded),
            Reason::CessationOfOperation => Some(RevocationReason::CessationOfOperation),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason name that is not one of [`Reason::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a revocation reason: use unspecified, key-compromise, ca-compromise, affiliation-changed, superseded or cessation-of-operation"
)]
pub struct UnknownReason;

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(text: &str) -> Result<Self, UnknownReason> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or(UnknownReason)
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Its serial number.
    pub serial: Serial,
    /// When it was revoked (to the second).
    pub revoked_at: SystemTime,
    /// Why.
    pub reason: Reason,
    /// Whom it named (a SPIFFE ID, server names), for people reading the list.
    pub subject: String,
    /// When it expires anyway, if known.
    pub not_after: Option<SystemTime>,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// The certificate is now on the list.
    Added(Revoked),
    /// It was already; the entry made then.
    AlreadyRevoked(Revoked),
}

/// A CRL written by [`Revocations::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Where it was written.
    pub path: PathBuf,
    /// Its CRL number.
    pub crl_number: u64,
    /// The certificates it lists.
    pub revoked: usize,
    /// Its `thisUpdate`.
    pub this_update: SystemTime,
    /// Its `nextUpdate`: publish again before then.
    pub next_update: SystemTime,
}

/// A CA directory's revocation list, locked while this value lives.
pub struct Revocations {
    path: PathBuf,
    crl_number: u64,
    entries: Vec<Revoked>,
    _lock: DirLock,
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("path", &self.path)
            .field("crl_number", &self.crl_number)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredList {
    crl_number: u64,
    #[serde(default)]
    revoked: Vec<StoredEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredEntry {
    serial: String,
    revoked_at: Datetime,
    reason: String,
    subject: String,
    not_after: Option<Datetime>,
}

/// A TOML datetime in UTC (the only kind this module writes) as a time.
fn time_of(at: &Datetime) -> Option<SystemTime> {
    let (date, clock) = (at.date?, at.time?);
    match at.offset? {
        Offset::Z | Offset::Custom { minutes: 0 } => {}
        _ => return None,
    }
    let month = time::Month::try_from(date.month).ok()?;
    let moment = time::Date::from_calendar_date(i32::from(date.year), month, date.day)
        .ok()?
        .with_hms(clock.hour, clock.minute, clock.second.unwrap_or(0))
        .ok()?
        .assume_utc();
    Some(moment.into())
}

/// `text` as a TOML basic string: quoted, with `"`, `\` and control characters escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Revocations {
    /// Locks the revocation list of the CA directory `ca_dir` (waiting for another
    /// `vaultctl` to finish) and reads it; a directory without one has an empty list.
    pub fn open(ca_dir: &Path) -> Result<Self, PkiError> {
        let lock = DirLock::acquire(ca_dir, LOCK_FILE)?;
        let path = ca_dir.join(REVOKED_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    path,
                    crl_number: 0,
                    entries: Vec::new(),
                    _lock: lock,
                });
            }
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        let stored: StoredList =
            toml::from_str(&text).map_err(|source| PkiError::RevocationFile {
                path: path.clone(),
                source: Box::new(source),
            })?;
        let mut entries = Vec::with_capacity(stored.revoked.len());
        for (i, entry) in stored.revoked.into_iter().enumerate() {
            let damaged = |problem| PkiError::RevocationEntry {
                path: path.clone(),
                entry: i + 1,
                problem,
            };
            entries.push(Revoked {
                serial: entry
                    .serial
                    .parse()
                    .map_err(|_| damaged("a serial that is not hexadecimal"))?,
                revoked_at: time_of(&entry.revoked_at)
                    .ok_or_else(|| damaged("a revoked_at that is not a UTC date and time"))?,
                reason: entry
                    .reason
                    .parse()
                    .map_err(|_| damaged("an unknown reason"))?,
                subject: entry.subject,
                not_after: match &entry.not_after {
                    Some(at) => {
                        Some(time_of(at).ok_or_else(|| {
                            damaged("a not_after that is not a UTC date and time")
                        })?)
                    }
                    None => None,
                },
            });
        }
        Ok(Self {
            path,
            crl_number: stored.crl_number,
            entries,
            _lock: lock,
        })
    }

    /// The revoked certificates, oldest first.
    pub fn entries(&self) -> &[Revoked] {
        &self.entries
    }

    /// The entry for `serial`, if it is revoked.
    pub fn find(&self, serial: &Serial) -> Option<&Revoked> {
        self.entries.iter().find(|e| &e.serial == serial)
    }

    /// The number of the last CRL published (0: none yet).
    pub fn crl_number(&self) -> u64 {
        self.crl_number
    }

    /// Adds `cert`, which `ca` must have issued, to the list and writes the list, now
    /// (publish a CRL afterwards). Revoking a certificate twice keeps the first entry.
    pub fn revoke(
        &mut self,
        ca: &Authority,
        cert: &Certificate,
        reason: Reason,
    ) -> Result<Revocation, PkiError> {
        if !ca.issued(cert) {
            return Err(PkiError::OtherIssuer {
                issuer: cert.issuer().to_owned(),
                authority: ca.name().to_owned(),
            });
        }
        if let Some(entry) = self.find(cert.serial()) {
            return Ok(Revocation::AlreadyRevoked(entry.clone()));
        }
        let entry = Revoked {
            serial: cert.serial().clone(),
            revoked_at: whole_seconds(SystemTime::now()),
            reason,
            subject: cert.subject().to_string(),
            not_after: Some(cert.not_after()),
        };
        self.entries.push(entry.clone());
        if let Err(e) = self.save() {
            self.entries.pop();
            return Err(e);
        }
        Ok(Revocation::Added(entry))
    }

    /// Signs a CRL listing every entry with `ca`, valid for `next_update` (1 hour to
    /// 366 days), and writes it to `out` (mode 0644), replacing what was there.
    pub fn publish(
        &mut self,
        ca: &Authority,
        next_update: Duration,
        out: &Path,
    ) -> Result<Published, PkiError> {
        check_next_update(next_update)?;
        let now = SystemTime::now();
        // A minute of slack for relying parties whose clocks are slightly behind.
        let this_update = whole_seconds(now.checked_sub(Duration::from_secs(60)).unwrap_or(now));
        let next = whole_seconds(now.checked_add(next_update).unwrap_or(now));
        let number = self.crl_number.saturating_add(1);
        let params = CertificateRevocationListParams {
            this_update: this_update.into(),
            next_update: next.into(),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: self
                .entries
                .iter()
                .map(|e| RevokedCertParams {
                    serial_number: SerialNumber::from(e.serial.as_bytes().to_vec()),
                    revocation_time: OffsetDateTime::from(e.revoked_at),
                    reason_code: e.reason.code(),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let pem = ca.sign_crl(&params)?;
        // The number is recorded before the CRL is written, so none is ever reused.
        let previous = self.crl_number;
        self.crl_number = number;
        if let Err(e) = self.save() {
            self.crl_number = previous;
            return Err(e);
        }
        replace(out, pem.as_bytes(), 0o644)?;
        Ok(Published {
            path: out.to_path_buf(),
            crl_number: number,
            revoked: self.entries.len(),
            this_update,
            next_update: next,
        })
    }

    fn save(&self) -> Result<(), PkiError> {
        let mut text = String::from(
            "# Certificates revoked by the CA in this directory, written by `vaultctl pki revoke`.\n\
             # Every CRL that `vaultctl pki revoke` and `vaultctl pki crl` publish lists them all.\n\
             # Entries are never removed; crl_number is the last CRL published.\n",
        );
        text.push_str(&format!("crl_number = {}\n", self.crl_number));
        for entry in &self.entries {
            text.push_str(&format!(
                "\n[[revoked]]\nserial = \"{}\"\nrevoked_at = {}\nreason = \"{}\"\nsubject = {}\n",
                entry.serial,
                rfc3339(entry.revoked_at),
                entry.reason,
                toml_string(&entry.subject),
            ));
            if let Some(at) = entry.not_after {
                text.push_str(&format!("not_after = {}\n", rfc3339(at)));
            }
        }
        replace(&self.path, text.as_bytes(), 0o600)
    }
}

/// `at` without its fraction of a second: what the list and the CRL can hold.
fn whole_seconds(at: SystemTime) -> SystemTime {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        Err(_) => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::pem::parse_x509_pem;
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;

    struct Crl {
        serials: Vec<Serial>,
        number: u64,
        this_update: i64,
        next_update: i64,
    }

    /// Parses the CRL at `path` and checks its signature with `ca`'s key.
    fn read_crl(path: &Path, ca: &Authority) -> Crl {
        let text = std::fs::read_to_string(path).unwrap();
        let (_, pem) = parse_x509_pem(text.as_bytes()).unwrap();
        assert_eq!(pem.label, "X509 CRL");
        let (_, crl) = CertificateRevocationList::from_der(&pem.contents).unwrap();
        let (_, ca_pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        crl.verify_signature(ca_cert.public_key()).unwrap();
        assert_eq!(crl.issuer(), ca_cert.subject());
        Crl {
            serials: crl
                .iter_revoked_certificates()
                .map(|r| Serial::from_be_bytes(r.raw_serial()))
                .collect(),
            number: crl
                .crl_number()
                .map(|n| u64::try_from(n.clone()).unwrap())
                .unwrap(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().unwrap().timestamp(),
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_revoked_certificate_is_listed_in_a_signed_crl_and_never_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("CA", 30).unwrap();
        let a = ca
            .issue_client("spiffe://billing.example/svc/a", 7)
            .unwrap();
        let a = Certificate::from_pem(&a.cert_pem).unwrap();
        let b = ca
            .issue_server(&["vault-1.internal".into()], &[], 7)
            .unwrap();
        let b = Certificate::from_pem(&b.cert_pem).unwrap();
        let out = dir.path().join(CRL_FILE);
        let week = Duration::from_secs(7 * 86_400);

        // An empty CRL is a valid CRL.
        let published = Revocations::open(dir.path())
            .unwrap()
            .publish(&ca, week, &out)
            .unwrap();
        assert_eq!((published.crl_number, published.revoked), (1, 0));
        assert!(read_crl(&out, &ca).serials.is_empty());

        let mut list = Revocations::open(dir.path()).unwrap();
        let added = list.revoke(&ca, &a, Reason::KeyCompromise).unwrap();
        assert!(matches!(&added, Revocation::Added(e) if &e.serial == a.serial()));
        let published = list.publish(&ca, week, &out).unwrap();
        drop(list);
        let crl = read_crl(&out, &ca);
        assert_eq!(crl.serials, [a.serial().clone()]);
        assert_eq!(crl.number, 2);
        assert_eq!(published.crl_number, 2);
        let now = i64::try_from(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        assert!(crl.this_update <= now && crl.this_update > now - 120);
        assert!((crl.next_update - now - 7 * 86_400).abs() < 60);
        let list_file = dir.path().join(REVOKED_FILE);
        assert_eq!(mode(&list_file), 0o600);
        assert_eq!(mode(&out), 0o644);

        // A later revocation keeps the earlier one; a repeated one changes nothing.
        let mut list = Revocations::open(dir.path()).unwrap();
        assert_eq!(list.entries().len(), 1);
        list.revoke(&ca, &b, Reason::Unspecified).unwrap();
        let again = list.revoke(&ca, &a, Reason::Superseded).unwrap();
        assert!(
            matches!(&again, Revocation::AlreadyRevoked(e) if e.reason == Reason::KeyCompromise)
        );
        list.publish(&ca, Duration::from_secs(3600), &out).unwrap();
        drop(list);
        let crl = read_crl(&out, &ca);
        assert_eq!(crl.serials, [a.serial().clone(), b.serial().clone()]);
        assert_eq!(crl.number, 3);
        let list = Revocations::open(dir.path()).unwrap();
        assert_eq!(list.crl_number(), 3);
        let entries = list.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].subject, "spiffe://billing.example/svc/a");
        assert_eq!(entries[1].subject, "vault-1.internal");
        assert_eq!(entries[0].not_after, Some(whole_seconds(a.not_after())));
    }

    #[test]
    fn revocations_at_once_lose_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("CA", 30).unwrap();
        let certificates: Vec<Certificate> = (0..8)
            .map(|i| {
                let issued = ca.issue_client(&format!("spiffe://d/svc/{i}"), 1).unwrap();
                Certificate::from_pem(&issued.cert_pem).unwrap()
            })
            .collect();
        std::thread::scope(|scope| {
            for cert in &certificates {
                let (dir, ca) = (dir.path(), &ca);
                scope.spawn(move || {
                    let mut list = Revocations::open(dir).unwrap();
                    list.revoke(ca, cert, Reason::Superseded).unwrap();
                });
            }
        });
        let list = Revocations::open(dir.path()).unwrap();
        let mut listed: Vec<_> = list.entries().iter().map(|e| e.serial.clone()).collect();
        let mut expected: Vec<_> = certificates.iter().map(|c| c.serial().clone()).collect();
        listed.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(listed, expected);
    }

    #[test]
    fn only_this_cas_certificates_can_be_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("CA", 30).unwrap();
        let other = Authority::generate("other CA", 30).unwrap();
        let foreign = other.issue_client("spiffe://d/x", 1).unwrap();
        let foreign = Certificate::from_pem(&foreign.cert_pem).unwrap();
        let mut list = Revocations::open(dir.path()).unwrap();
        let error = list.revoke(&ca, &foreign, Reason::Unspecified).unwrap_err();
        assert!(
            matches!(&error, PkiError::OtherIssuer { issuer, authority }
                if issuer == "CN=other CA" && authority == "CN=CA"),
            "{error:?}"
        );
        assert!(list.entries().is_empty());
        assert!(!dir.path().join(REVOKED_FILE).exists());
    }

    #[test]
    fn next_update_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("CA", 30).unwrap();
        let out = dir.path().join(CRL_FILE);
        let mut list = Revocations::open(dir.path()).unwrap();
        for bad in [Duration::from_secs(60), Duration::from_secs(367 * 86_400)] {
            assert!(matches!(
                list.publish(&ca, bad, &out),
                Err(PkiError::NextUpdate(_))
            ));
        }
        assert!(!out.exists());
        assert_eq!(list.crl_number(), 0, "no number is used up by a refusal");
    }

    #[test]
    fn a_damaged_list_is_refused_with_where_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REVOKED_FILE);
        let entry = |serial: &str, at: &str, reason: &str| {
            format!(
                "crl_number = 1\n[[revoked]]\nserial = \"{serial}\"\nrevoked_at = {at}\nreason = \"{reason}\"\nsubject = \"x\"\n"
            )
        };
        for (text, expected) in [
            ("crl_number = \"one\"\n".to_owned(), "line 1"),
            ("crl_number = 1\nextra = 2\n".to_owned(), "extra"),
            (
                entry("zz", "2026-01-01T00:00:00Z", "superseded"),
                "entry 1 has a serial",
            ),
            (
                entry("0a", "2026-01-01T00:00:00", "superseded"),
                "revoked_at",
            ),
            (
                entry("0a", "2026-01-01T00:00:00+02:00", "superseded"),
                "revoked_at",
            ),
            (
                entry("0a", "2026-01-01T00:00:00Z", "lost"),
                "unknown reason",
            ),
        ] {
            std::fs::write(&path, &text).unwrap();
            let error = Revocations::open(dir.path()).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(error.contains(REVOKED_FILE), "{error}");
        }
        std::fs::write(&path, entry("0A:1b", "2026-01-01T00:00:00Z", "superseded")).unwrap();
        let list = Revocations::open(dir.path()).unwrap();
        assert_eq!(list.entries()[0].serial.to_string(), "0a1b");
    }

    #[test]
    fn subjects_are_escaped_in_the_list() {
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
        let parsed: toml::Table =
            toml::from_str(&format!("s = {}", toml_string("CN=\"odd\"\\\u{7}"))).unwrap();
        assert_eq!(parsed["s"].as_str(), Some("CN=\"odd\"\\\u{7}"));
    }

    #[test]
    fn reasons_round_trip_by_name() {
        for reason in Reason::ALL {
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(reason));
        }
        assert_eq!("keyCompromise".parse::<Reason>(), Err(UnknownReason));
        assert_eq!(Reason::Unspecified.code(), None, "left out of the CRL");
    }
}
