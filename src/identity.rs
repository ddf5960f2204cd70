//! The caller's identity: the single SPIFFE ID in the URI SAN of its verified client
//! certificate (or, if configured, its single DNS SAN). Nothing in a request can
//! override it. SPIFFE IDs are held to the specification's rules (and at most 255
//! bytes) by `vault_proto::spiffe`, the one definition the daemon, the client and
//! the CLI share; a certificate whose ID breaks them names no identity.

use std::fmt;

use vault_proto::identity::{DNS_PREFIX, valid_dns_name};
use vault_proto::spiffe::SpiffeId;

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
        Self(vault_proto::identity::local(uid))
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

pub use vault_proto::identity::{IdentityError, IdentitySource};

/// The identity of a client certificate that rustls already verified.
pub fn identity_of(cert_der: &[u8], source: IdentitySource) -> Result<Identity, IdentityError> {
    vault_proto::identity::identity_of(cert_der, source).map(Identity)
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
