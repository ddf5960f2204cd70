//! Test harness for vaultd: a generated PKI, so no private key is ever committed.
//!
//! [`Pki::generate`] makes a CA; from it, server and client certificates (with SPIFFE
//! URI SANs), expired ones, and a CRL revoking chosen serials. A second, unrelated CA
//! comes from another `Pki::generate`. [`fixture`] writes a daemon's files, [`process`]
//! runs the real `vaultd` on them, [`grpc`] connects to it over mutual TLS, and
//! [`memory`] scans a process for secrets, [`disk`] mounts a small filesystem that
//! fills up, and [`postgres`] runs a throw-away PostgreSQL server.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// A harness for tests: a failed step is a failed test, so it panics with context, and
// its scanners index buffers they just sized.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

pub mod disk;
pub mod fixture;
pub mod grpc;
pub mod memory;
pub mod postgres;
pub mod process;

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// Serial number.
    pub serial: u64,
}

/// What a client certificate should name.
#[derive(Clone, Debug, Default)]
pub struct ClientSpec {
    /// URI SANs (SPIFFE IDs); zero, one or several.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// Make it expired (valid from two days ago until yesterday).
    pub expired: bool,
    /// Make it valid from a minute ago for this long (whole seconds) only.
    pub valid_for: Option<std::time::Duration>,
}

/// A certificate authority that issues test certificates.
pub struct Pki {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    next_serial: u64,
}

impl Pki {
    /// Generates a CA named `name`.
    pub fn generate(name: &str) -> Self {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&ca_key).expect("self-sign CA");
        Self {
            ca_pem: cert.pem(),
            ca_der: cert.der().to_vec(),
            ca_key,
            ca_params: params,
            next_serial: 1,
        }
    }

    fn issue(&mut self, mut params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("generate leaf key");
        let serial = self.next_serial;
        self.next_serial += 1;
        params.serial_number = Some(SerialNumber::from(serial));
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            serial,
        }
    }

    /// A server certificate for `dns_names` (and 127.0.0.1).
    pub fn server(&mut self, dns_names: &[&str]) -> Issued {
        let mut params =
            CertificateParams::new(dns_names.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate as described by `spec`.
    pub fn client(&mut self, spec: &ClientSpec) -> Issued {
        let mut params = CertificateParams::new(spec.dns.clone()).expect("client params");
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into().expect("URI SAN")));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        if spec.expired {
            params.not_before = now - Duration::days(2);
            params.not_after = now - Duration::days(1);
        }
        if let Some(valid) = spec.valid_for {
            params.not_before = now - Duration::minutes(1);
            params.not_after = now + Duration::seconds(valid.as_secs() as i64);
        }
        self.issue(params)
    }

    /// A client certificate with one SPIFFE ID.
    pub fn spiffe_client(&mut self, spiffe_id: &str) -> Issued {
        self.client(&ClientSpec {
            uris: vec![spiffe_id.to_owned()],
            ..ClientSpec::default()
        })
    }

    /// A CRL, signed by this CA, revoking `serials`. DER.
    pub fn crl(&self, serials: &[u64]) -> Vec<u8> {
        self.crl_between(serials, -Duration::minutes(1), Duration::days(1))
    }

    /// A CRL like [`Pki::crl`] whose `nextUpdate` passed yesterday. DER.
    pub fn expired_crl(&self, serials: &[u64]) -> Vec<u8> {
        self.crl_between(serials, -Duration::days(2), -Duration::days(1))
    }

    fn crl_between(
        &self,
        serials: &[u64],
        this_update: Duration,
        next_update: Duration,
    ) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now + this_update,
            next_update: now + next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now + this_update,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        params.signed_by(&issuer).expect("sign CRL").der().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_distinct_serials_and_pem() {
        let mut pki = Pki::generate("test CA");
        let a = pki.spiffe_client("spiffe://billing.example/svc/a");
        let b = pki.server(&["localhost"]);
        assert_ne!(a.serial, b.serial);
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.key_pem.contains("PRIVATE KEY"));
        assert!(!pki.crl(&[a.serial]).is_empty());
    }
}
