//! Reading a certificate back: what renewal copies (the subject's names) and what
//! revocation records (serial, subject, expiry, issuer).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use crate::PkiError;

/// A certificate's serial number: a positive integer, big-endian, without leading
/// zero bytes. Shown as lower-case hexadecimal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// From the bytes of an ASN.1 INTEGER (a leading zero byte, added to keep it
    /// positive, is dropped).
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        Self(bytes.get(start..).unwrap_or_default().to_vec())
    }

    /// The big-endian bytes, without leading zeros.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A serial that is not hexadecimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a serial number is hexadecimal digits, e.g. 5f3a09c2")]
pub struct BadSerial;

impl FromStr for Serial {
    type Err = BadSerial;

    /// Hexadecimal, with optional `:` separators (as `openssl x509 -serial` and
    /// other tools print serials); case does not matter.
    fn from_str(text: &str) -> Result<Self, BadSerial> {
        let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
        if digits.is_empty() || digits.len() > 64 {
            return Err(BadSerial);
        }
        let nibble = |b: u8| {
            char::from(b)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
                .ok_or(BadSerial)
        };
        // An odd count has an implied leading zero.
        let padded: Vec<u8> = std::iter::repeat_n(b'0', digits.len() % 2)
            .chain(digits)
            .collect();
        let mut bytes = Vec::with_capacity(padded.len() / 2);
        for pair in padded.chunks_exact(2) {
            let [high, low] = <[u8; 2]>::try_from(pair).map_err(|_| BadSerial)?;
            bytes.push(nibble(high)? << 4 | nibble(low)?);
        }
        Ok(Self::from_be_bytes(&bytes))
    }
}

/// Whom a certificate names, as vault-pki issues them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// A client certificate (extended key usage clientAuth) with one SPIFFE ID.
    Client {
        /// The SPIFFE ID in its one URI SAN.
        spiffe_id: String,
    },
    /// A server certificate (serverAuth) with DNS and/or IP names.
    Server {
        /// DNS SANs.
        dns: Vec<String>,
        /// IP SANs.
        ips: Vec<IpAddr>,
    },
    /// Anything else; the subject's distinguished name, for messages.
    Other(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Client { spiffe_id } => f.write_str(spiffe_id),
            Subject::Server { dns, ips } => {
                let names: Vec<String> = dns
                    .iter()
                    .cloned()
                    .chain(ips.iter().map(IpAddr::to_string))
                    .collect();
                f.write_str(&names.join(", "))
            }
            Subject::Other(name) => write!(f, "{name:?}"),
        }
    }
}

/// A certificate read from PEM: what renewal and revocation need of it.
#[derive(Debug, Clone)]
pub struct Certificate {
    der: Vec<u8>,
    serial: Serial,
    subject: Subject,
    issuer: String,
    not_after: SystemTime,
}

/// Unix seconds as a time (times before 1970 included).
pub(crate) fn time_of(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    match unix_seconds >= 0 {
        true => SystemTime::UNIX_EPOCH.checked_add(magnitude),
        false => SystemTime::UNIX_EPOCH.checked_sub(magnitude),
    }
    .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The first `CERTIFICATE` block of `pem`, DER.
pub(crate) fn first_certificate(pem: &str, what: &'static str) -> Result<Vec<u8>, PkiError> {
    Pem::iter_from_buffer(pem.as_bytes())
        .map_while(Result::ok)
        .find(|block| block.label == "CERTIFICATE")
        .map(|block| block.contents)
        .ok_or(PkiError::Unparsable { what })
}

pub(crate) fn parse<'a>(
    der: &'a [u8],
    what: &'static str,
) -> Result<X509Certificate<'a>, PkiError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(PkiError::Unparsable { what }),
    }
}

impl Certificate {
    /// Reads the first certificate of `pem` (a chain's leaf).
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        const WHAT: &str = "the certificate";
        let der = first_certificate(pem, WHAT)?;
        let cert = parse(&der, WHAT)?;
        let subject = subject_of(&cert);
        let serial = Serial::from_be_bytes(cert.raw_serial());
        let issuer = cert.issuer().to_string();
        let not_after = time_of(cert.validity().not_after.timestamp());
        Ok(Self {
            serial,
            subject,
            issuer,
            not_after,
            der,
        })
    }

    /// Its serial number.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// Whom it names.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Its issuer's distinguished name, e.g. `CN=vaultd CA`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// When it stops being valid.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn der(&self) -> &[u8] {
        &self.der
    }
}

fn subject_of(cert: &X509Certificate<'_>) -> Subject {
    let (client_auth, server_auth) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (eku.value.client_auth, eku.value.server_auth),
        _ => (false, false),
    };
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        _ => Vec::new(),
    };
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    if client_auth
        && let [uri] = uris.as_slice()
        && crate::check_spiffe_id(uri).is_ok()
    {
        return Subject::Client {
            spiffe_id: (*uri).to_owned(),
        };
    }
    let dns: Vec<String> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
        .collect();
    let ips: Vec<IpAddr> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::IPAddress(bytes) => ip_of(bytes),
            _ => None,
        })
        .collect();
    if server_auth && uris.is_empty() && !(dns.is_empty() && ips.is_empty()) {
        return Subject::Server { dns, ips };
    }
    Subject::Other(cert.subject().to_string())
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_print_and_parse_as_hex() {
        let serial = Serial::from_be_bytes(&[0, 0x8a, 0x01]);
        assert_eq!(serial.as_bytes(), [0x8a, 0x01]);
        assert_eq!(serial.to_string(), "8a01");
        assert_eq!("8A:01".parse::<Serial>(), Ok(serial.clone()));
        assert_eq!("008a01".parse::<Serial>(), Ok(serial));
        assert_eq!("a01".parse::<Serial>().unwrap().as_bytes(), [0x0a, 0x01]);
        for bad in ["", "xy", "12 34", ":", &"f".repeat(65), "é1"] {
            assert_eq!(bad.parse::<Serial>(), Err(BadSerial), "{bad:?}");
        }
        assert_eq!(Serial::from_be_bytes(&[0]).to_string(), "00");
    }

    #[test]
    fn pem_without_a_certificate_is_refused() {
        for text in [
            "",
            "not pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(matches!(
                Certificate::from_pem(text),
                Err(PkiError::Unparsable { .. })
            ));
        }
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(Certificate::from_pem(garbage).is_err());
    }
}
