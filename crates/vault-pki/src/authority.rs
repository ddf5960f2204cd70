//! The certificate authority: makes or loads the CA, issues server and client
//! certificates, renews them with a fresh key, and signs CRLs.

use std::net::IpAddr;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::certificate::{first_certificate, parse};
use crate::{
    Certificate, Issued, Kind, PkiError, PrivateKeyPem, Revocations, Subject, rcgen_error,
};

/// A certificate authority that signs server and client certificates and CRLs.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    name: String,
}

/// Sets a validity of `days` from now, with a minute of slack for clocks slightly
/// behind; returns when it ends.
fn validity(params: &mut CertificateParams, days: u32) -> SystemTime {
    // Certificates hold whole seconds; so does the time returned.
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + Duration::days(i64::from(days));
    params.not_after.into()
}

/// A random 128-bit serial number, positive as RFC 5280 asks.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Random)?;
    if let Some(first) = serial.first_mut() {
        *first = (*first & 0x7f) | 0x01;
    }
    Ok(SerialNumber::from(serial.to_vec()))
}

impl Authority {
    /// Generates a CA named `common_name`, valid for `days` (see [`Kind::Authority`]).
    pub fn generate(common_name: &str, days: u32) -> Result<Self, PkiError> {
        let days = Kind::Authority.check(days)?;
        let key = KeyPair::generate().map_err(rcgen_error("generating the CA key"))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error("CA parameters"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        validity(&mut params, days);
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_error("self-signing the CA"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            name: format!("CN={common_name}"),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key, both PEM. Refuses a
    /// certificate that is not a CA, and a key that is not the certificate's.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        const WHAT: &str = "the CA certificate";
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error("reading the CA key"))?;
        let cert_der = first_certificate(cert_pem, WHAT)?;
        let cert = parse(&cert_der, WHAT)?;
        if !cert.is_ca() {
            return Err(PkiError::NotAnAuthority);
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(PkiError::KeyMismatch);
        }
        let name = cert.subject().to_string();
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)
            .map_err(rcgen_error("reading the CA certificate"))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
            name,
        })
    }

    /// The CA certificate, PEM: what servers and clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> PrivateKeyPem {
        PrivateKeyPem(Zeroizing::new(self.issuer.key().serialize_pem()))
    }

    /// The CA's distinguished name, e.g. `CN=vaultd CA`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this CA issued `cert`: its issuer is this CA's name and its signature
    /// verifies with this CA's key.
    pub fn issued(&self, cert: &Certificate) -> bool {
        let (Ok(ca), Ok(leaf)) = (
            parse(&self.cert_der, "the CA certificate"),
            parse(cert.der(), "the certificate"),
        ) else {
            return false;
        };
        leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
    }

    fn sign(&self, mut params: CertificateParams, days: u32) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_error("generating a key"))?;
        params.serial_number = Some(random_serial()?);
        let not_after = validity(&mut params, days);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_error("signing the certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key: PrivateKeyPem(Zeroizing::new(key.serialize_pem())),
            not_after,
        })
    }

    /// A server certificate for `dns_names` and `ips`, valid for `days` (see
    /// [`Kind::Server`]).
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        days: u32,
    ) -> Result<Issued, PkiError> {
        let days = Kind::Server.check(days)?;
        let mut params =
            CertificateParams::new(dns_names.to_vec()).map_err(rcgen_error("server names"))?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let common_name = dns_names
            .first()
            .cloned()
            .or_else(|| ips.first().map(IpAddr::to_string));
        if let Some(name) = common_name {
            params.distinguished_name.push(DnType::CommonName, name);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, days)
    }

    /// A client certificate whose only URI SAN is `spiffe_id`, valid for `days` (see
    /// [`Kind::Client`]).
    pub fn issue_client(&self, spiffe_id: &str, days: u32) -> Result<Issued, PkiError> {
        crate::check_spiffe_id(spiffe_id)?;
        let days = Kind::Client.check(days)?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(rcgen_error("client parameters"))?;
        let uri = spiffe_id
            .try_into()
            .map_err(|_| PkiError::SpiffeId(spiffe_id.to_owned()))?;
        params.subject_alt_names.push(SanType::URI(uri));
        params
            .distinguished_name
            .push(DnType::CommonName, spiffe_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, days)
    }

    /// A fresh certificate for what `cert` names — the same SPIFFE ID for a client, the
    /// same DNS and IP names for a server — with a new key and serial, valid for `days`
    /// (by default, its kind's [`Kind::default_days`]). `cert` itself is left alone; it
    /// stays valid until it expires or is revoked.
    ///
    /// Renewal extends an identity this CA already vouched for, so `cert` must be one
    /// this CA issued ([`Authority::issued`]: its signature verifies with this CA's
    /// key) and not on `revoked`, this CA's revocation list: a revoked identity gets a
    /// fresh certificate only by being issued one again, deliberately.
    pub fn renew(
        &self,
        cert: &Certificate,
        revoked: &Revocations,
        days: Option<u32>,
    ) -> Result<Issued, PkiError> {
        if !self.issued(cert) {
            return Err(PkiError::OtherIssuer {
                issuer: cert.issuer().to_owned(),
                authority: self.name.clone(),
            });
        }
        self.renew_foreign(cert, revoked, days)
    }

    /// As [`Authority::renew`], for a `cert` from any issuer, even a self-signed one:
    /// how certificates move to a new CA when the old one is replaced. Nothing about
    /// `cert` is verified, so whoever can hand this CA a certificate naming an identity
    /// gets a certificate for that identity: use it only for certificates whose origin
    /// is known. A serial on `revoked` is still refused.
    pub fn renew_foreign(
        &self,
        cert: &Certificate,
        revoked: &Revocations,
        days: Option<u32>,
    ) -> Result<Issued, PkiError> {
        if let Some(entry) = revoked.find(cert.serial()) {
            return Err(PkiError::Revoked {
                serial: entry.serial.clone(),
                revoked_at: entry.revoked_at,
                reason: entry.reason,
            });
        }
        match cert.subject() {
            Subject::Client { spiffe_id } => {
                self.issue_client(spiffe_id, days.unwrap_or(Kind::Client.default_days()))
            }
            Subject::Server { dns, ips } => {
                self.issue_server(dns, ips, days.unwrap_or(Kind::Server.default_days()))
            }
            Subject::Other(_) => Err(PkiError::NothingToRenew),
        }
    }

    /// Signs a CRL described by `params`, PEM.
    pub(crate) fn sign_crl(
        &self,
        params: &CertificateRevocationListParams,
    ) -> Result<String, PkiError> {
        params
            .signed_by(&self.issuer)
            .and_then(|crl| crl.pem())
            .map_err(rcgen_error("signing the CRL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::pem::parse_x509_pem;

    fn uris(pem: &str) -> Vec<String> {
        let (_, pem) = parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some((*u).to_owned()),
                _ => None,
            })
            .collect()
    }

    fn days_valid(pem: &str) -> i64 {
        let (_, pem) = parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let validity = cert.validity();
        // not_before has a minute of slack.
        (validity.not_after.timestamp() - validity.not_before.timestamp() - 60) / 86_400
    }

    #[test]
    fn client_certificates_carry_one_spiffe_id_and_a_bounded_validity() {
        let ca = Authority::generate("test CA", 30).unwrap();
        let client = ca
            .issue_client("spiffe://billing.example/svc/gateway", 7)
            .unwrap();
        assert_eq!(
            uris(&client.cert_pem),
            ["spiffe://billing.example/svc/gateway"]
        );
        assert_eq!(days_valid(&client.cert_pem), 7);
        assert!(client.key.expose_secret().contains("PRIVATE KEY"));
        let read = Certificate::from_pem(&client.cert_pem).unwrap();
        assert_eq!(read.not_after(), client.not_after);
        assert!(ca.issued(&read));
        assert_eq!(read.issuer(), "CN=test CA");
        assert!(matches!(
            ca.issue_client("spiffe://billing.example/svc/gateway", 366),
            Err(PkiError::Validity {
                days: 366,
                kind: Kind::Client
            })
        ));
    }

    #[test]
    fn a_loaded_ca_issues_certificates_that_chain_to_it() {
        let ca = Authority::generate("CA", 30).unwrap();
        let loaded = Authority::load(ca.cert_pem(), ca.key_pem().expose_secret()).unwrap();
        assert_eq!(loaded.name(), "CN=CA");
        let leaf = loaded.issue_server(&["localhost".into()], &[], 1).unwrap();
        let leaf = Certificate::from_pem(&leaf.cert_pem).unwrap();
        assert!(ca.issued(&leaf));
        // A CA of the same name but another key did not.
        let namesake = Authority::generate("CA", 30).unwrap();
        assert!(!namesake.issued(&leaf));
    }

    #[test]
    fn a_ca_loads_only_with_its_own_key() {
        let ca = Authority::generate("CA", 30).unwrap();
        let other = Authority::generate("CA", 30).unwrap();
        assert!(matches!(
            Authority::load(ca.cert_pem(), other.key_pem().expose_secret()),
            Err(PkiError::KeyMismatch)
        ));
        let leaf = ca.issue_client("spiffe://d/x", 1).unwrap();
        assert!(matches!(
            Authority::load(&leaf.cert_pem, leaf.key.expose_secret()),
            Err(PkiError::NotAnAuthority)
        ));
        assert!(Authority::load("not pem", "not pem").is_err());
        assert!(matches!(
            Authority::load("not pem", ca.key_pem().expose_secret()),
            Err(PkiError::Unparsable { .. })
        ));
    }

    /// An empty revocation list in a temporary CA directory.
    fn no_revocations() -> (tempfile::TempDir, Revocations) {
        let dir = tempfile::tempdir().unwrap();
        let list = Revocations::open(dir.path()).unwrap();
        (dir, list)
    }

    #[test]
    fn renewal_keeps_the_names_and_changes_key_and_serial() {
        let (_dir, none) = no_revocations();
        let ca = Authority::generate("CA", 30).unwrap();
        let client = ca
            .issue_client("spiffe://billing.example/svc/gateway", 7)
            .unwrap();
        let old = Certificate::from_pem(&client.cert_pem).unwrap();
        let renewed = ca.renew(&old, &none, None).unwrap();
        let new = Certificate::from_pem(&renewed.cert_pem).unwrap();
        assert_eq!(new.subject(), old.subject());
        assert_ne!(new.serial(), old.serial());
        assert_ne!(
            renewed.key.expose_secret(),
            client.key.expose_secret(),
            "a new key"
        );
        assert_eq!(days_valid(&renewed.cert_pem), 30, "the client default");
        assert_eq!(uris(&renewed.cert_pem), uris(&client.cert_pem));

        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let server = ca
            .issue_server(&["vault-1.internal".into()], &[ip], 10)
            .unwrap();
        let old = Certificate::from_pem(&server.cert_pem).unwrap();
        assert_eq!(
            old.subject(),
            &Subject::Server {
                dns: vec!["vault-1.internal".into()],
                ips: vec![ip]
            }
        );
        let renewed = ca.renew(&old, &none, Some(5)).unwrap();
        let new = Certificate::from_pem(&renewed.cert_pem).unwrap();
        assert_eq!(new.subject(), old.subject());
        assert_eq!(days_valid(&renewed.cert_pem), 5);
        assert!(ca.renew(&old, &none, Some(398)).is_err());

        // A CA certificate names no one to renew.
        let itself = Certificate::from_pem(ca.cert_pem()).unwrap();
        assert!(matches!(
            ca.renew(&itself, &none, None),
            Err(PkiError::NothingToRenew)
        ));
    }

    #[test]
    fn only_this_cas_certificates_renew_unless_foreign_ones_are_allowed() {
        let (_dir, none) = no_revocations();
        let ca = Authority::generate("CA", 30).unwrap();
        let spiffe_id = "spiffe://billing.example/svc/gateway";
        // From another CA, from a namesake CA with another key, and self-signed.
        let other = Authority::generate("CA 2", 30).unwrap();
        let namesake = Authority::generate("CA", 30).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(spiffe_id.try_into().unwrap()));
        params.distinguished_name.push(DnType::CommonName, "CA");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let forged = params.self_signed(&key).unwrap().pem();
        for pem in [
            other.issue_client(spiffe_id, 7).unwrap().cert_pem,
            namesake.issue_client(spiffe_id, 7).unwrap().cert_pem,
            forged,
        ] {
            let cert = Certificate::from_pem(&pem).unwrap();
            assert!(
                matches!(
                    ca.renew(&cert, &none, None),
                    Err(PkiError::OtherIssuer { ref authority, .. }) if authority == "CN=CA"
                ),
                "{}",
                cert.issuer()
            );
            // Reissued under this CA on purpose: how a CA is replaced.
            let moved = ca.renew_foreign(&cert, &none, None).unwrap();
            let moved = Certificate::from_pem(&moved.cert_pem).unwrap();
            assert!(ca.issued(&moved));
            assert_eq!(moved.subject(), cert.subject());
        }
    }

    #[test]
    fn a_revoked_certificate_is_not_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("CA", 30).unwrap();
        let victim = ca.issue_client("spiffe://d/victim", 7).unwrap();
        let victim = Certificate::from_pem(&victim.cert_pem).unwrap();
        let other = ca.issue_client("spiffe://d/other", 7).unwrap();
        let other = Certificate::from_pem(&other.cert_pem).unwrap();
        let mut list = Revocations::open(dir.path()).unwrap();
        list.revoke(&ca, &victim, crate::Reason::KeyCompromise)
            .unwrap();
        drop(list);
        let list = Revocations::open(dir.path()).unwrap();
        for renewal in [
            ca.renew(&victim, &list, None),
            ca.renew_foreign(&victim, &list, None),
        ] {
            let Err(error) = renewal else {
                panic!("a revoked certificate was renewed")
            };
            assert!(
                matches!(&error, PkiError::Revoked { serial, reason, .. }
                    if serial == victim.serial() && *reason == crate::Reason::KeyCompromise),
                "{error:?}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("certificate {} was revoked on ", victim.serial())),
                "{error}"
            );
        }
        ca.renew(&other, &list, None).unwrap();
    }

    #[test]
    fn bad_input_is_refused() {
        let ca = Authority::generate("CA", 1).unwrap();
        assert!(ca.issue_client("https://a/b", 1).is_err());
        assert!(matches!(
            Authority::generate("CA", 0),
            Err(PkiError::Validity { days: 0, .. })
        ));
        assert!(Authority::generate("CA", 3651).is_err());
    }
}
