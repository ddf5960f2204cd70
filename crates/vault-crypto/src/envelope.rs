//! The envelope format and its associated data.
//!
//! # Envelope format, version 1
//!
//! Every ciphertext vaultd produces — wrapped root, tenant and system keys, secret
//! values, transit envelopes — is one AES-256-GCM envelope:
//!
//! ```text
//!  0        1                5                          17                 17+n            33+n
//!  +--------+----------------+--------------------------+------------------+----------------+
//!  | format | key version    | nonce                    | ciphertext       | tag            |
//!  | 0x01   | u32 big-endian | 12 random bytes          | n bytes          | 16 bytes       |
//!  +--------+----------------+--------------------------+------------------+----------------+
//!  \______ header _________/
//! ```
//!
//! The *key version* names the version of the key that sealed the envelope (root key
//! version for wrapped tenant and system keys, tenant key version for secrets and
//! transit, share-set generation for the seal record). Unknown format bytes are
//! rejected; there is no format that skips the associated data.
//!
//! # Associated data
//!
//! The AEAD's associated data binds the ciphertext to its place. It is a canonical
//! encoding in which every variable-length field carries a 32-bit big-endian length
//! prefix, so `("ab", "c")` and `("a", "bc")` encode differently:
//!
//! ```text
//!  "vaultd.aad"            domain label (fixed, 10 bytes)
//!  header                  the 5 header bytes above: format and key version
//!  purpose                 1 byte: 1 seal, 2 tenant key, 3 secret, 4 transit,
//!                          5 system key, 6 share file, 7 session
//!  len ‖ tenant            u32 + UTF-8 bytes
//!  len ‖ environment       u32 + UTF-8 bytes
//!  len ‖ name              u32 + UTF-8 bytes
//!  version                 u64 big-endian: secret, tenant-key or root-key version
//!  len ‖ binding           u32 + bytes: the lease id or operation a session
//!                          message belongs to; empty for stored data
//! ```
//!
//! Moving a ciphertext to another tenant, environment, name, version, purpose or key
//! version makes it fail to open.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::EnvelopeError;

/// The only envelope format this version writes and reads.
pub const FORMAT_V1: u8 = 0x01;
/// Bytes of the header: format and key version.
pub const HEADER_LEN: usize = 5;
/// Bytes of the random nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Envelope bytes beyond the ciphertext itself.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

const DOMAIN: &[u8] = b"vaultd.aad";

/// What a ciphertext is for. Part of the associated data, so a ciphertext made for
/// one purpose never opens as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// The root key wrapped under the unseal key.
    Seal = 1,
    /// A tenant key wrapped under the root key.
    TenantKey = 2,
    /// A stored secret value under a tenant key.
    Secret = 3,
    /// A transit envelope under a tenant key.
    Transit = 4,
    /// A system key (API-key pepper, audit keys) wrapped under the root key.
    SystemKey = 5,
    /// A share protected by a passphrase.
    ShareFile = 6,
    /// A message sealed to a client session.
    Session = 7,
}

/// The associated data of one envelope: where the ciphertext belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    /// What the ciphertext is for.
    pub purpose: Purpose,
    /// Tenant id; empty for platform-wide data.
    pub tenant: &'a str,
    /// Environment (`live` or `test`); empty where none applies.
    pub environment: &'a str,
    /// Secret or key name; empty where none applies.
    pub name: &'a str,
    /// Version of the thing sealed (secret version, tenant-key version, …).
    pub version: u64,
    /// The lease id or operation a session message belongs to; empty for stored data.
    pub binding: &'a [u8],
}

impl<'a> Aad<'a> {
    /// Associated data with only a purpose; other fields empty.
    pub const fn purpose(purpose: Purpose) -> Self {
        Self {
            purpose,
            tenant: "",
            environment: "",
            name: "",
            version: 0,
            binding: &[],
        }
    }

    /// Encodes the associated data for an envelope with the given header.
    pub(crate) fn encode(&self, header: &[u8; HEADER_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            DOMAIN.len()
                + HEADER_LEN
                + 1
                + 4 * 4
                + 8
                + self.tenant.len()
                + self.environment.len()
                + self.name.len()
                + self.binding.len(),
        );
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(header);
        out.push(self.purpose as u8);
        for field in [
            self.tenant.as_bytes(),
            self.environment.as_bytes(),
            self.name.as_bytes(),
        ] {
            put_len_prefixed(&mut out, field);
        }
        out.extend_from_slice(&self.version.to_be_bytes());
        put_len_prefixed(&mut out, self.binding);
        out
    }
}

fn put_len_prefixed(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are names and ids far below 4 GiB; saturating keeps the encoding total
    // (a longer field would still be bound by its bytes, which follow in full).
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// An AES-256-GCM envelope: ciphertext and the header needed to open it.
///
/// Only ciphertext can be an `Envelope`: it is produced by sealing, or parsed from
/// stored bytes with [`Envelope::from_bytes`], which checks the layout.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Envelope(key version {}, {} bytes)",
            self.key_version(),
            self.bytes.len()
        )
    }
}

impl Envelope {
    /// Parses stored or received bytes as an envelope. Never panics.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, EnvelopeError> {
        if bytes.len() < OVERHEAD {
            return Err(EnvelopeError::TooShort(bytes.len()));
        }
        match bytes.first() {
            Some(&FORMAT_V1) => Ok(Self { bytes }),
            Some(&other) => Err(EnvelopeError::UnknownFormat(other)),
            None => Err(EnvelopeError::TooShort(0)),
        }
    }

    pub(crate) fn assemble(
        header: [u8; HEADER_LEN],
        nonce: [u8; NONCE_LEN],
        ciphertext_and_tag: Vec<u8>,
    ) -> Self {
        let mut bytes = Vec::with_capacity(HEADER_LEN + NONCE_LEN + ciphertext_and_tag.len());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext_and_tag);
        Self { bytes }
    }

    /// The envelope's bytes, for storage or transmission.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the envelope, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The version of the key that sealed this envelope.
    pub fn key_version(&self) -> u32 {
        self.parts().header_key_version()
    }

    /// Length of the plaintext inside.
    pub fn plaintext_len(&self) -> usize {
        self.bytes.len() - OVERHEAD
    }

    pub(crate) fn parts(&self) -> Parts<'_> {
        // The length was checked at construction, so these splits succeed; fall back
        // to empty parts rather than panic if that invariant were ever broken.
        let (header, rest) = self
            .bytes
            .split_first_chunk::<HEADER_LEN>()
            .unwrap_or((&[0; HEADER_LEN], &[]));
        let (nonce, rest) = rest
            .split_first_chunk::<NONCE_LEN>()
            .unwrap_or((&[0; NONCE_LEN], &[]));
        let (ciphertext, tag) = rest
            .split_last_chunk::<TAG_LEN>()
            .unwrap_or((&[], &[0; TAG_LEN]));
        Parts {
            header,
            nonce,
            ciphertext,
            tag,
        }
    }
}

/// The fields of a parsed envelope.
pub(crate) struct Parts<'a> {
    pub(crate) header: &'a [u8; HEADER_LEN],
    pub(crate) nonce: &'a [u8; NONCE_LEN],
    pub(crate) ciphertext: &'a [u8],
    pub(crate) tag: &'a [u8; TAG_LEN],
}

impl Parts<'_> {
    fn header_key_version(&self) -> u32 {
        let [_, a, b, c, d] = *self.header;
        u32::from_be_bytes([a, b, c, d])
    }
}

pub(crate) fn header(key_version: u32) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = key_version.to_be_bytes();
    [FORMAT_V1, a, b, c, d]
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("envelope bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Envelope, E> {
                Envelope::from_bytes(v.to_vec()).map_err(E::custom)
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Envelope, E> {
                Envelope::from_bytes(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixes_separate_adjacent_fields() {
        let h = header(1);
        let a = Aad {
            tenant: "ab",
            name: "c",
            ..Aad::purpose(Purpose::Secret)
        };
        let b = Aad {
            tenant: "a",
            name: "bc",
            ..Aad::purpose(Purpose::Secret)
        };
        assert_ne!(a.encode(&h), b.encode(&h));
    }

    #[test]
    fn header_is_part_of_the_associated_data() {
        let aad = Aad::purpose(Purpose::Seal);
        assert_ne!(aad.encode(&header(1)), aad.encode(&header(2)));
    }

    #[test]
    fn parsing_rejects_short_and_unknown_formats() {
        for len in 0..OVERHEAD {
            assert_eq!(
                Envelope::from_bytes(vec![FORMAT_V1; len]),
                Err(EnvelopeError::TooShort(len))
            );
        }
        assert_eq!(
            Envelope::from_bytes(vec![0x02; OVERHEAD]),
            Err(EnvelopeError::UnknownFormat(0x02))
        );
        let empty = Envelope::from_bytes(vec![FORMAT_V1; OVERHEAD]).unwrap();
        assert_eq!(empty.plaintext_len(), 0);
        assert_eq!(empty.key_version(), 0x0101_0101);
    }
}
