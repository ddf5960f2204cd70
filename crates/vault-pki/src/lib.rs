//! Certificates for vaultd deployments: a certificate authority, server certificates
//! and SPIFFE client certificates, with ECDSA P-256 keys (rcgen over ring); and their
//! lifecycle: renewal with a fresh key ([`Authority::renew`]), revocation recorded in
//! the CA directory and published as a signed CRL ([`Revocations`]).
//!
//! `vaultd dev` uses it to make a throw-away PKI, and `vaultctl pki` to make one for a
//! real deployment. Private keys are held in zeroising buffers and written with mode
//! 0600 by [`write_private`]; nothing here ever prints one.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod authority;
mod certificate;
mod files;
mod revocation;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

pub use authority::Authority;
pub use certificate::{BadSerial, Certificate, Serial, Subject};
pub use files::{write_private, write_public};
pub use revocation::{
    CRL_FILE, Published, REVOKED_FILE, Reason, Revocation, Revocations, Revoked, UnknownReason,
    check_next_update,
};

/// Why a certificate could not be made, read, renewed or revoked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// rcgen refused the parameters or the input (the message names which).
    #[error("{what}: {source}")]
    Certificate {
        /// What was being done.
        what: &'static str,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A SPIFFE ID was malformed.
    #[error("{0:?} is not a SPIFFE ID: use spiffe://<trust-domain>/<path>")]
    SpiffeId(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A validity outside what this kind of certificate may have.
    #[error("{} must be valid for 1..={} days, not {days}", kind.name(), kind.max_days())]
    Validity {
        /// The days asked for.
        days: u32,
        /// The kind of certificate.
        kind: Kind,
    },
    /// A CRL's validity outside 1 hour ..= 366 days.
    #[error("a CRL's next update must be 1 hour to 366 days away, not {}", human(*.0))]
    NextUpdate(Duration),
    /// PEM text held no certificate, or one that does not parse as X.509.
    #[error("{what} is not a PEM X.509 certificate")]
    Unparsable {
        /// What it should have been, e.g. "the CA certificate".
        what: &'static str,
    },
    /// The CA certificate is not a CA (no basic constraints saying so).
    #[error("the CA certificate is not a certificate authority (basic constraints)")]
    NotAnAuthority,
    /// The CA key does not belong to the CA certificate.
    #[error("the CA key does not belong to the CA certificate")]
    KeyMismatch,
    /// The certificate was not issued by this CA (its signature does not verify with
    /// this CA's key), so this CA's CRL cannot revoke it, nor this CA renew it.
    #[error("the certificate was not signed by this CA ({authority:?}); its issuer is {issuer:?}")]
    OtherIssuer {
        /// The certificate's issuer.
        issuer: String,
        /// This CA's name.
        authority: String,
    },
    /// The certificate is on this CA's revocation list, so it is not renewed.
    #[error(
        "certificate {serial} was revoked on {} (reason {reason}), so it cannot be renewed",
        rfc3339(*revoked_at)
    )]
    Revoked {
        /// Its serial number.
        serial: Serial,
        /// When it was revoked.
        revoked_at: SystemTime,
        /// Why.
        reason: Reason,
    },
    /// The certificate names neither one SPIFFE ID (a client) nor DNS or IP names for
    /// server authentication (a server), so there is nothing to renew it as.
    #[error(
        "the certificate is neither a client certificate with one SPIFFE ID nor a server certificate with DNS or IP names"
    )]
    NothingToRenew,
    /// A file in the CA directory could not be read or written.
    #[error("cannot {doing} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "write".
        doing: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The revocation list in the CA directory does not parse.
    #[error("{} is damaged: {source}", path.display())]
    RevocationFile {
        /// The file.
        path: PathBuf,
        /// The parser's reason (it names the line).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An entry of the revocation list is not one vault-pki wrote.
    #[error("{} is damaged: entry {entry} has {problem}", path.display())]
    RevocationEntry {
        /// The file.
        path: PathBuf,
        /// The entry, counting from 1.
        entry: usize,
        /// What is wrong, e.g. "a serial that is not hexadecimal".
        problem: &'static str,
    },
}

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Certificate { what, source }
}

/// What a certificate is for, and so how long it may live.
///
/// Leaf certificates are short-lived on purpose: a short life bounds what a stolen key
/// is worth and keeps CRLs short, and renewing costs nothing at run time because
/// vault-client re-reads its certificate files when they change and vaultd re-reads
/// its own on `SIGHUP`. The CA lives long, since replacing it means reissuing every
/// certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A certificate authority: 5 years by default, at most 10.
    Authority,
    /// vaultd's server certificate: 90 days by default, at most 397 (the longest
    /// public CAs may issue).
    Server,
    /// A client's SPIFFE certificate: 30 days by default, at most 365.
    Client,
}

impl Kind {
    /// The validity used when none is asked for, in days.
    pub const fn default_days(self) -> u32 {
        match self {
            Kind::Authority => 1825,
            Kind::Server => 90,
            Kind::Client => 30,
        }
    }

    /// The longest validity accepted, in days.
    pub const fn max_days(self) -> u32 {
        match self {
            Kind::Authority => 3650,
            Kind::Server => 397,
            Kind::Client => 365,
        }
    }

    /// "a CA", "a server certificate", "a client certificate".
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Authority => "a CA",
            Kind::Server => "a server certificate",
            Kind::Client => "a client certificate",
        }
    }

    /// `days`, if this kind may have it.
    fn check(self, days: u32) -> Result<u32, PkiError> {
        if days == 0 || days > self.max_days() {
            return Err(PkiError::Validity { days, kind: self });
        }
        Ok(days)
    }
}

/// A PEM private key, wiped from memory on drop.
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// The PEM text. Declassifies the key: write it to a 0600 file and nowhere else.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

/// A certificate and its private key.
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key: PrivateKeyPem,
    /// When the certificate stops being valid.
    pub not_after: SystemTime,
}

/// Checks `spiffe://<trust-domain>/<path>` with a non-empty trust domain and path.
pub fn check_spiffe_id(id: &str) -> Result<(), PkiError> {
    let bad = || PkiError::SpiffeId(id.to_owned());
    let rest = id.strip_prefix("spiffe://").ok_or_else(bad)?;
    let (domain, path) = rest.split_once('/').ok_or_else(bad)?;
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    let path_ok = !path.is_empty()
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b));
    if domain_ok && path_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A time as RFC 3339 in UTC to the second, e.g. `2026-01-31T12:00:00Z`: how the
/// revocation list stores times, and how `vaultctl` shows them.
pub fn rfc3339(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// A duration in the largest whole unit that fits, for messages.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match () {
        () if s >= 86_400 && s.is_multiple_of(86_400) => format!("{} days", s / 86_400),
        () if s >= 3600 && s.is_multiple_of(3600) => format!("{} hours", s / 3600),
        () => format!("{s} seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_are_checked() {
        for id in [
            "https://a/b",
            "spiffe://",
            "spiffe://domain",
            "spiffe://domain/",
            "spiffe://Dom/x",
            "spiffe://d/a//b",
            "spiffe://d/../x",
        ] {
            assert!(check_spiffe_id(id).is_err(), "{id}");
        }
        check_spiffe_id("spiffe://billing.example/svc/gateway").unwrap();
    }

    #[test]
    fn validity_bounds_depend_on_the_kind() {
        assert_eq!(Kind::Client.check(30).unwrap(), 30);
        assert!(Kind::Client.check(366).is_err());
        assert!(Kind::Server.check(397).is_ok());
        assert!(Kind::Server.check(398).is_err());
        assert!(Kind::Authority.check(3650).is_ok());
        for kind in [Kind::Authority, Kind::Server, Kind::Client] {
            assert!(kind.check(0).is_err());
            assert!(kind.check(kind.default_days()).is_ok());
        }
        let message = Kind::Client.check(400).unwrap_err().to_string();
        assert_eq!(
            message,
            "a client certificate must be valid for 1..=365 days, not 400"
        );
    }

    #[test]
    fn times_print_as_rfc3339_utc() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 3_723);
        assert_eq!(rfc3339(at), "2026-01-01T01:02:03Z");
        assert_eq!(human(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(human(Duration::from_secs(7200)), "2 hours");
        assert_eq!(human(Duration::from_secs(90)), "90 seconds");
    }
}
