//! The caller's identity: the single SPIFFE ID in the URI SAN of its verified client
//! certificate (or, if configured, its single DNS SAN). Nothing in a request can
//! override it.

use std::fmt;

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
        [uri] if uri.starts_with("spiffe://") && uri.len() > "spiffe://".len() => {
            return Ok(Identity((*uri).to_owned()));
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
        (IdentitySource::SpiffeOrDns, [name]) => Ok(Identity(format!("dns:{name}"))),
        _ => Err(IdentityError::Missing),
    }
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
}
