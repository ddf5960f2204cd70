//! Certificates for vaultd deployments: a certificate authority, server certificates
//! and SPIFFE client certificates, with ECDSA P-256 keys (rcgen over ring).
//!
//! `vaultd dev` uses it to make a throw-away PKI, and `vaultctl pki` to make one for a
//! real deployment. Private keys are held in zeroising buffers and written with mode
//! 0600 by [`write_private`]; nothing here ever prints one.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Why a certificate could not be made or loaded.
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
    /// A validity of zero days, or one too long to represent.
    #[error("validity must be 1..=3650 days, not {0}")]
    Validity(u32),
}

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Certificate { what, source }
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
}

/// A certificate authority that signs server and client certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// The longest validity accepted, in days.
const MAX_DAYS: u32 = 3650;

fn validity(params: &mut CertificateParams, days: u32) -> Result<(), PkiError> {
    if days == 0 || days > MAX_DAYS {
        return Err(PkiError::Validity(days));
    }
    let now = OffsetDateTime::now_utc();
    // A minute of slack for clocks that are slightly behind.
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + Duration::days(i64::from(days));
    Ok(())
}

/// A random 128-bit serial number, positive as RFC 5280 asks.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Random)?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from(serial.to_vec()))
}

impl Authority {
    /// Generates a CA named `common_name`, valid for `days`.
    pub fn generate(common_name: &str, days: u32) -> Result<Self, PkiError> {
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
        validity(&mut params, days)?;
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_error("self-signing the CA"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key, both PEM.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error("reading the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(rcgen_error("reading the CA certificate"))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
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

    fn sign(&self, mut params: CertificateParams, days: u32) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_error("generating a key"))?;
        params.serial_number = Some(random_serial()?);
        validity(&mut params, days)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_error("signing the certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key: PrivateKeyPem(Zeroizing::new(key.serialize_pem())),
        })
    }

    /// A server certificate for `dns_names` and `ips`, valid for `days`.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        days: u32,
    ) -> Result<Issued, PkiError> {
        let mut params =
            CertificateParams::new(dns_names.to_vec()).map_err(rcgen_error("server names"))?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        if let Some(name) = dns_names.first() {
            params.distinguished_name.push(DnType::CommonName, name);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, days)
    }

    /// A client certificate whose only URI SAN is `spiffe_id`, valid for `days`.
    pub fn issue_client(&self, spiffe_id: &str, days: u32) -> Result<Issued, PkiError> {
        check_spiffe_id(spiffe_id)?;
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

/// Writes `contents` to a new file at `path` with mode 0600. Refuses to overwrite.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Writes a public file (certificate, CA) with mode 0644. Refuses to overwrite.
pub fn write_public(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
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
        let (_, pem) = parse_x509_pem(client.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 7);
        assert!(client.key.expose_secret().contains("PRIVATE KEY"));
    }

    #[test]
    fn a_loaded_ca_issues_certificates_that_chain_to_it() {
        let ca = Authority::generate("CA", 30).unwrap();
        let loaded = Authority::load(ca.cert_pem(), ca.key_pem().expose_secret()).unwrap();
        let leaf = loaded.issue_server(&["localhost".into()], &[], 1).unwrap();
        let (_, ca_pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        let (_, leaf_pem) = parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
        let leaf_cert = leaf_pem.parse_x509().unwrap();
        assert_eq!(leaf_cert.issuer(), ca_cert.subject());
        assert!(
            leaf_cert
                .verify_signature(Some(ca_cert.public_key()))
                .is_ok()
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let ca = Authority::generate("CA", 1).unwrap();
        for id in [
            "https://a/b",
            "spiffe://",
            "spiffe://domain",
            "spiffe://domain/",
            "spiffe://Dom/x",
            "spiffe://d/a//b",
            "spiffe://d/../x",
        ] {
            assert!(ca.issue_client(id, 1).is_err(), "{id}");
        }
        assert!(matches!(
            Authority::generate("CA", 0),
            Err(PkiError::Validity(0))
        ));
        assert!(Authority::load("not pem", "not pem").is_err());
    }

    #[test]
    fn private_files_are_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_private(&path, b"k").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_private(&path, b"other").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"k");
    }
}
