//! The identity a client certificate names, decided one way for everyone: the daemon
//! (for callers), vault-client (to bind its sessions to what the daemon will see) and
//! the CLI.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::spiffe::{SpiffeError, SpiffeId};

/// Why a verified certificate does not name exactly one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The certificate does not parse (it passed chain verification, so this is rare).
    Malformed,
    /// More than one URI SAN: the identity would be ambiguous.
    AmbiguousUri(usize),
    /// The URI SAN is not a SPIFFE ID.
    NotSpiffe,
    /// The URI SAN is a SPIFFE ID that breaks the specification's rules.
    InvalidSpiffe(SpiffeError),
    /// The DNS SAN is not a valid DNS name.
    InvalidDns,
    /// No URI SAN, and DNS identities are off or there is not exactly one DNS SAN.
    Missing,
}

/// Which SANs may name a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentitySource {
    /// Only a SPIFFE URI SAN (the default).
    #[default]
    SpiffeOnly,
    /// A SPIFFE URI SAN, or else a single DNS SAN (as `dns:<name>`).
    SpiffeOrDns,
}

/// The identity a certificate names: its single SPIFFE URI SAN (valid per
/// [`SpiffeId`]), or with [`IdentitySource::SpiffeOrDns`] its single DNS SAN as
/// `dns:<name>`. The daemon calls this on verified client certificates; clients call it
/// on their own, to bind their sessions to the identity the daemon will see.
pub fn identity_of(cert_der: &[u8], source: IdentitySource) -> Result<String, IdentityError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|_| IdentityError::Malformed)?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.clone(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(IdentityError::Malformed),
    };
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri]
            if uri
                .get(..SCHEME.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME)) =>
        {
            return SpiffeId::parse(uri)
                .map(|id| id.as_str().to_owned())
                .map_err(IdentityError::InvalidSpiffe);
        }
        [_] => return Err(IdentityError::NotSpiffe),
        [] => {}
        many => return Err(IdentityError::AmbiguousUri(many.len())),
    }
    let dns: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        })
        .collect();
    match (source, dns.as_slice()) {
        (IdentitySource::SpiffeOrDns, [name]) if valid_dns_name(name) => {
            Ok(format!("{DNS_PREFIX}{name}"))
        }
        (IdentitySource::SpiffeOrDns, [_]) => Err(IdentityError::InvalidDns),
        _ => Err(IdentityError::Missing),
    }
}

const SCHEME: &str = "spiffe://";
/// How a DNS identity is written: `dns:` and the name.
pub const DNS_PREFIX: &str = "dns:";

/// The identity of a caller on the daemon's local Unix socket, named by its user id.
/// Both ends bind it into a session's key exchange, so both spell it here.
pub fn local(uid: u32) -> String {
    format!("local:uid={uid}")
}

/// A lower-case DNS name of at most 253 characters: labels of 1-63 `a-z 0-9 -`, not
/// starting or ending with `-`. No wildcards, no trailing dot.
pub fn valid_dns_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("the certificate does not parse"),
            Self::AmbiguousUri(n) => write!(
                f,
                "the certificate has {n} URI SANs; exactly one SPIFFE ID is required"
            ),
            Self::NotSpiffe => f.write_str("the certificate's URI SAN is not a spiffe:// ID"),
            Self::InvalidSpiffe(e) => write!(f, "the certificate's SPIFFE ID is invalid: {e}"),
            Self::InvalidDns => f.write_str("the certificate's DNS SAN is not a valid DNS name"),
            Self::Missing => {
                f.write_str("the certificate names no identity (one spiffe:// URI SAN is required)")
            }
        }
    }
}

impl std::error::Error for IdentityError {}
