//! The caller's identity: the single SPIFFE ID in the URI SAN of its verified client
//! certificate (or, if configured, its single DNS SAN). Nothing in a request can
//! override it. SPIFFE IDs are held to the specification's rules (and at most 255
//! bytes) by `vault_proto::spiffe`, the one definition the daemon, the client and
//! the CLI share; a certificate whose ID breaks them names no identity.

use std::fmt;

use vault_proto::spiffe::{SpiffeError, SpiffeId};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A verified caller identity, such as `spiffe://billing.example/svc/gateway`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity(String);

impl Identity {
    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A remote identity named in a request (a revocation selector, say): a valid
    /// SPIFFE ID, or `dns:` and a valid DNS name. `None` for anything else, which no
    /// caller can have.
    pub(crate) fn parse_remote(text: &str) -> Option<Self> {
        match text.strip_prefix(DNS_PREFIX) {
            Some(name) => valid_dns_name(name).then(|| Self(text.to_owned())),
            None => SpiffeId::parse(text)
                .ok()
                .map(|id| Self(id.as_str().to_owned())),
        }
    }

    /// What connections whose certificate names no identity are counted under; no
    /// caller is ever this identity.
    pub(crate) fn unidentified() -> Self {
        Self("(unidentified)".to_owned())
    }

    /// A caller on the local Unix socket, named by its user id.
    pub(crate) fn local(uid: u32) -> Self {
        Self(format!("local:uid={uid}"))
    }

    #[cfg(test)]
    pub(crate) fn for_tests(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a verified certificate does not name exactly one identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate does not parse (it passed chain verification, so this is rare).
    #[error("client certificate does not parse")]
    Malformed,
    /// More than one URI SAN: the identity would be ambiguous.
    #[error("client certificate has {0} URI SANs; exactly one SPIFFE ID is required")]
    AmbiguousUri(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("client certificate's URI SAN is not a spiffe:// ID")]
    NotSpiffe,
    /// The URI SAN is a SPIFFE ID that breaks the specification's rules.
    #[error("client certificate's SPIFFE ID is invalid: {0}")]
    InvalidSpiffe(SpiffeError),
    /// The DNS SAN is not a valid DNS name.
    #[error("client certificate's DNS SAN is not a valid DNS name")]
    InvalidDns,
    /// No URI SAN, and DNS identities are off or there is not exactly one DNS SAN.
    #[error("client certificate names no identity (one spiffe:// URI SAN is required)")]
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

/// Extracts the identity from a client certificate that rustls already verified.
pub fn identity_of(cert_der: &[u8], source: IdentitySource) -> Result<Identity, IdentityError> {
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
                .map(|id| Identity(id.as_str().to_owned()))
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
            Ok(Identity(format!("{DNS_PREFIX}{name}")))
        }
        (IdentitySource::SpiffeOrDns, [_]) => Err(IdentityError::InvalidDns),
        _ => Err(IdentityError::Missing),
    }
}

const SCHEME: &str = "spiffe://";
const DNS_PREFIX: &str = "dns:";

/// A lower-case DNS name of at most 253 characters: labels of 1-63 `a-z 0-9 -`, not
/// starting or ending with `-`. No wildcards, no trailing dot.
fn valid_dns_name(name: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use vault_testkit::{ClientSpec, Pki};

    #[test]
    fn exactly_one_spiffe_id_is_an_identity() {
        let mut pki = Pki::generate("ca");
        let one = pki.spiffe_client("spiffe://billing.example/svc/gateway");
        assert_eq!(
            identity_of(&one.cert_der, IdentitySource::SpiffeOnly)
                .unwrap()
                .as_str(),
            "spiffe://billing.example/svc/gateway"
        );
        let two = pki.client(&ClientSpec {
            uris: vec!["spiffe://a.example/x".into(), "spiffe://a.example/y".into()],
            ..ClientSpec::default()
        });
        assert_eq!(
            identity_of(&two.cert_der, IdentitySource::SpiffeOnly),
            Err(IdentityError::AmbiguousUri(2))
        );
        let https = pki.client(&ClientSpec {
            uris: vec!["https://a.example/x".into()],
            ..ClientSpec::default()
        });
        assert_eq!(
            identity_of(&https.cert_der, IdentitySource::SpiffeOnly),
            Err(IdentityError::NotSpiffe)
        );
        let dns = pki.client(&ClientSpec {
            dns: vec!["worker.internal".into()],
            ..ClientSpec::default()
        });
        assert_eq!(
            identity_of(&dns.cert_der, IdentitySource::SpiffeOnly),
            Err(IdentityError::Missing)
        );
        assert_eq!(
            identity_of(&dns.cert_der, IdentitySource::SpiffeOrDns)
                .unwrap()
                .as_str(),
            "dns:worker.internal"
        );
        assert_eq!(
            identity_of(b"not a cert", IdentitySource::SpiffeOnly),
            Err(IdentityError::Malformed)
        );
    }

    #[test]
    fn spiffe_ids_that_break_the_specification_name_no_identity() {
        let mut pki = Pki::generate("ca");
        let long = format!("spiffe://billing.example/{}", "a".repeat(4096));
        for uri in [
            "spiffe://billing.example/human/admin/..",
            "spiffe://billing.example/human/admin/",
            "spiffe://billing.example/human/admin/x?role=root",
            "spiffe://billing.example/human/admin/x#frag",
            "spiffe://billing.example/human/admin/%2F..",
            "spiffe://billing.example/human/admin/a\nb",
            long.as_str(),
            "spiffe://billing.example:443/human/admin/x",
            "spiffe://root@billing.example/human/admin/x",
            "spiffe://",
            "SPIFFE://billing.example/human/admin/x",
        ] {
            let cert = pki.client(&ClientSpec {
                uris: vec![uri.to_owned()],
                ..ClientSpec::default()
            });
            assert!(
                matches!(
                    identity_of(&cert.cert_der, IdentitySource::SpiffeOnly),
                    Err(IdentityError::InvalidSpiffe(_))
                ),
                "{uri:?}"
            );
        }
        let dns = pki.client(&ClientSpec {
            dns: vec!["*.example.com".into()],
            ..ClientSpec::default()
        });
        assert_eq!(
            identity_of(&dns.cert_der, IdentitySource::SpiffeOrDns),
            Err(IdentityError::InvalidDns)
        );
    }

    #[test]
    fn identities_named_in_requests_must_be_ones_a_caller_could_have() {
        for ok in [
            "spiffe://billing.example/svc/gateway",
            "dns:worker.internal",
        ] {
            assert_eq!(Identity::parse_remote(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "spiffe://billing.example/svc/",
            "dns:",
            "dns:Worker",
            "dns:-a.b",
            "local:uid=0",
            &"x".repeat(100_000),
        ] {
            assert!(Identity::parse_remote(bad).is_none(), "{bad:?}");
        }
    }
}
