//! The wire form of one audit line and the hashes that chain lines together.
//!
//! A line is `Record` serialised by serde_json: the `Body` fields, then `chain`,
//! `mac` and `sig`. The chain value covers the body's canonical JSON, so a line is
//! only accepted back if re-serialising it reproduces it byte for byte.

use std::collections::BTreeMap;
use std::fmt;

use ring::digest;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::Event;

/// The longest line, newline included, that is written or read.
pub(crate) const MAX_LINE: usize = 1 << 20;
/// `detail` keys of a `recovery` record.
pub(crate) const TORN_BYTES: &str = "torn_bytes";
pub(crate) const MOVED_TO: &str = "moved_to";
/// `prev` of the first record of a chain segment.
pub(crate) const GENESIS: [u8; 32] = [0; 32];
const CHAIN_DOMAIN: &[u8] = b"vaultd audit v1";
const CHECKPOINT_DOMAIN: &[u8] = b"vaultd audit checkpoint v1";

/// Bytes written as lower-case hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hex<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&vault_crypto::hex::encode(&self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        vault_crypto::hex::decode(&text)
            .and_then(|bytes| <[u8; N]>::try_from(bytes.as_slice()).ok())
            .map(Hex)
            .ok_or_else(|| D::Error::custom(format_args!("expected {N} bytes of hex")))
    }
}

/// What a record is, serialised as its `kind` followed by its own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Payload {
    /// Begins a chain segment; `detail` says why (`reason`).
    Start { detail: BTreeMap<String, String> },
    /// One audited request.
    Event(Box<Event>),
    /// A signed statement that the chain up to here is intact.
    Checkpoint,
    /// Written when a log is reopened after a torn tail (a crash or a full disk cut a
    /// write short) was moved aside; `detail` says how many bytes, from which line,
    /// and where they went. The chain continues from the last intact record.
    Recovery { detail: BTreeMap<String, String> },
    /// Begins a file (or a FIFO reader's stream) in the middle of the chain: the log
    /// was reopened — rotated on reload, or a failed sink could be written again.
    /// Its `prev` is the last record written before; `detail` says why (`reason`).
    Continuation { detail: BTreeMap<String, String> },
}

/// Everything the chain value covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Body {
    pub(crate) seq: u64,
    pub(crate) time_ms: u64,
    pub(crate) node: String,
    #[serde(flatten)]
    pub(crate) payload: Payload,
    pub(crate) prev: Hex<32>,
}

impl Body {
    /// The body's canonical JSON: what the chain value covers, and what its line
    /// begins with.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self)
            .expect("a body holds only strings, integers and string maps, which always serialise")
    }

    /// `SHA-256("vaultd audit v1" || prev || canonical JSON of the body)`.
    pub(crate) fn chain(&self) -> [u8; 32] {
        chain_of(&self.prev.0, &self.to_json())
    }
}

/// The chain value of a body whose canonical JSON is `body_json` and whose `prev` is
/// `prev`.
pub(crate) fn chain_of(prev: &[u8; 32], body_json: &str) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(CHAIN_DOMAIN);
    context.update(prev);
    context.update(body_json.as_bytes());
    context
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 digests are 32 bytes")
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    #[serde(flatten)]
    pub(crate) body: Body,
    pub(crate) chain: Hex<32>,
    pub(crate) mac: Option<Hex<32>>,
    pub(crate) sig: Option<Hex<64>>,
}

impl Record {
    /// The record as one newline-terminated line.
    pub(crate) fn to_line(&self) -> String {
        self.line_after(&self.body.to_json())
    }

    /// The record's line, given its body's canonical JSON (`body.to_json()`, already
    /// made for the chain value): the body's fields, then `chain`, `mac` and `sig`,
    /// byte for byte what serialising the whole record writes, without serialising
    /// the body a second time.
    pub(crate) fn line_after(&self, body_json: &str) -> String {
        let fields = body_json.strip_suffix('}').unwrap_or(body_json);
        let mut line = String::with_capacity(fields.len() + 2 * (32 + 32 + 64) + 40);
        line.push_str(fields);
        line.push_str(",\"chain\":\"");
        vault_crypto::hex::encode_into(&mut line, &self.chain.0);
        line.push_str("\",\"mac\":");
        push_hex_or_null(&mut line, self.mac.as_ref().map(|mac| &mac.0[..]));
        line.push_str(",\"sig\":");
        push_hex_or_null(&mut line, self.sig.as_ref().map(|sig| &sig.0[..]));
        line.push_str("}\n");
        line
    }

    /// Parses one line (without its newline), accepting only the canonical form.
    pub(crate) fn parse(line: &[u8]) -> Result<Self, LineError> {
        let record: Self = serde_json::from_slice(line).map_err(LineError::Json)?;
        let canonical = serde_json::to_string(&record)
            .expect("a parsed record holds only strings, integers and string maps");
        if canonical.as_bytes() != line {
            return Err(LineError::NotCanonical);
        }
        Ok(record)
    }

    /// Whether the chain value is the hash of this record's body.
    pub(crate) fn chain_is_consistent(&self) -> bool {
        self.body.chain() == self.chain.0
    }
}

fn push_hex_or_null(line: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            line.push('"');
            vault_crypto::hex::encode_into(line, bytes);
            line.push('"');
        }
        None => line.push_str("null"),
    }
}

/// The message a checkpoint signs:
/// `"vaultd audit checkpoint v1" || seq (u64 big-endian) || chain`.
pub(crate) fn checkpoint_message(seq: u64, chain: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 8 + chain.len());
    message.extend_from_slice(CHECKPOINT_DOMAIN);
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(chain);
    message
}

/// Why a line is not a record.
#[derive(Debug)]
pub(crate) enum LineError {
    Json(serde_json::Error),
    NotCanonical,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "not a record: {e}"),
            Self::NotCanonical => {
                f.write_str("not in canonical form (fields reordered, added or re-encoded)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Decision;

    fn event_record() -> Record {
        let event = Event {
            identity: "spiffe://example.org/gw".into(),
            operation: "broker.lease".into(),
            tenant: Some("acme \"quoted\" \u{e9}\n".into()),
            version: Some(3),
            decision: Decision::Deny,
            reason: "default deny".into(),
            request_id: "r1".into(),
            detail: BTreeMap::from([("k".into(), "v".into())]),
            ..Event::default()
        };
        let body = Body {
            seq: 7,
            time_ms: 1_700_000_000_000,
            node: "n1".into(),
            payload: Payload::Event(Box::new(event)),
            prev: Hex([0xab; 32]),
        };
        Record {
            chain: Hex(body.chain()),
            body,
            mac: None,
            sig: Some(Hex([1; 64])),
        }
    }

    #[test]
    fn lines_round_trip_in_field_order() {
        for record in [
            event_record(),
            Record {
                body: Body {
                    payload: Payload::Checkpoint,
                    ..event_record().body
                },
                ..event_record()
            },
            Record {
                body: Body {
                    payload: Payload::Start {
                        detail: BTreeMap::from([("reason".into(), "new audit log".into())]),
                    },
                    ..event_record().body
                },
                ..event_record()
            },
        ] {
            let line = record.to_line();
            for (mac, sig) in [(None, None), (Some(Hex([2; 32])), None), (None, record.sig)] {
                let variant = Record {
                    mac,
                    sig,
                    ..record.clone()
                };
                let serialised = serde_json::to_string(&variant).unwrap() + "\n";
                assert_eq!(variant.to_line(), serialised);
            }
            let text = line.strip_suffix('\n').unwrap();
            assert_eq!(Record::parse(text.as_bytes()).unwrap(), record);
            assert!(text.starts_with(r#"{"seq":7,"time_ms":1700000000000,"node":"n1","kind":"#));
            assert!(text.contains(r#","prev":"abab"#));
            assert!(text.contains(r#","mac":null,"sig":"0101"#));
        }
        let line = event_record().to_line();
        assert!(line.contains(r#""kind":"event","identity":"spiffe://example.org/gw","operation":"broker.lease","tenant":"acme \"quoted\" é\n","environment":null"#));
    }

    #[test]
    fn non_canonical_lines_are_refused() {
        let line = event_record().to_line();
        let text = line.trim_end();
        let variants = [
            text.replacen("\"seq\":7", "\"seq\": 7", 1),
            text.replacen("n1", "\\u006e1", 1),
            text.replacen("abab", "ABAB", 1),
            text.replacen("{\"seq\":7,", "{\"seq\":7,\"extra\":1,", 1),
            text.replacen("{\"seq\":7,", "{\"seq\":7,\"seq\":7,", 1),
            format!("{text} "),
        ];
        for variant in variants {
            assert_ne!(variant, text);
            assert!(Record::parse(variant.as_bytes()).is_err(), "{variant}");
        }
    }
}
