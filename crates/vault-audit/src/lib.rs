//! vaultd's audit chain: one JSON line per audited request, hash-chained and
//! MAC'd, with Ed25519-signed checkpoints; a fail-closed writer with a bounded write
//! deadline ([`AuditLog`]); and an offline verifier ([`verify`]) that detects any
//! edit, deletion, insertion or reordering and reports an unsigned or cut tail.
//!
//! No value, share, key or API-key secret ever passes through this crate: an
//! [`Event`] holds names, identifiers and short reasons only.
//!
//! # Format
//!
//! Each record is one JSON object on one line, newline-terminated, serialised
//! canonically by serde_json (no whitespace, fields in this fixed order):
//!
//! | field | meaning |
//! |---|---|
//! | `seq` | 0 for a segment's `start` record, then +1 per record |
//! | `time_ms` | writer's wall clock, milliseconds since the Unix epoch |
//! | `node` | [`AuditOptions::node`] |
//! | `kind` | `"start"`, `"event"` or `"checkpoint"` |
//! | `detail` | `start` only: `{"reason": "…"}` |
//! | [`Event`] fields | `event` only, in declaration order; `detail` omitted when empty |
//! | `prev` | the previous record's `chain` (hex); 32 zero bytes on a `start` record |
//! | `chain` | `SHA-256("vaultd audit v1" ‖ prev ‖ body)`, hex |
//! | `mac` | `HMAC-SHA256(mac key, chain)`, hex; `null` if written while sealed |
//! | `sig` | checkpoints only: `Ed25519("vaultd audit checkpoint v1" ‖ seq as u64 BE ‖ chain)`, hex; else `null` |
//!
//! `body` is the canonical JSON of the record without `chain`, `mac` and `sig` (so
//! with `prev`, and ending in `}`); `prev` inside the hash is its 32 raw bytes. A
//! line is accepted only in exactly this form: re-encoded strings, extra or
//! reordered fields, or upper-case hex are malformed.
//!
//! A log begins with a `start` record. Reopening a regular file continues its chain
//! (seq and `prev` from its last record; a corrupt or partial last line refuses to
//! start). A FIFO or device cannot be read back, so each open writes a new `start`
//! record (seq 0, `prev` zeros): a new segment. Checkpoints are written every
//! [`AuditOptions::checkpoint_every`] records, on [`AuditLog::checkpoint`], and when
//! the last handle is dropped, whenever the signing key is available.
//!
//! ```
//! let log = concat!(
//!     r#"{"seq":0,"time_ms":1795442211189,"node":"vault-1","kind":"start""#,
//!     r#","detail":{"reason":"new audit log"}"#,
//!     r#","prev":"0000000000000000000000000000000000000000000000000000000000000000""#,
//!     r#","chain":"f8a3587e083eef760511e50fed73ecf5ed37d5590766d44299c80f3a767eecd5""#,
//!     r#","mac":"b3b770766fc2de0faf6f109099b1ebf2dfd5c1419cd6bd005d4c91e6f2b42c33""#,
//!     r#","sig":null}"#,
//!     "\n",
//!     r#"{"seq":1,"time_ms":1795442211191,"node":"vault-1","kind":"event""#,
//!     r#","identity":"spiffe://example.org/ns/payments/sa/api""#,
//!     r#","operation":"broker.lease","tenant":"acme","environment":"prod""#,
//!     r#","secret":"stripe-key","version":3,"lease_id":"lease-4f2a","decision":"allow""#,
//!     r#","reason":"grant payments-read","grant":"payments-read""#,
//!     r#","request_id":"req-7c1e""#,
//!     r#","prev":"f8a3587e083eef760511e50fed73ecf5ed37d5590766d44299c80f3a767eecd5""#,
//!     r#","chain":"6eed736b1073d81f7af0cb8ef61f5f188ab3c28160c901cb56621d30667b6172""#,
//!     r#","mac":"b682e2154e0fa34d66e53121949fa842130f12d0323e2e7c189dc9742772aa24""#,
//!     r#","sig":null}"#,
//!     "\n",
//!     r#"{"seq":2,"time_ms":1795442211191,"node":"vault-1","kind":"checkpoint""#,
//!     r#","prev":"6eed736b1073d81f7af0cb8ef61f5f188ab3c28160c901cb56621d30667b6172""#,
//!     r#","chain":"d88c2acc396c46afb199ff7d00fb5c49fa7eeee62f19b0e47c17a75c2486b83a""#,
//!     r#","mac":"bd7570a355bdbb51ef44ce0fa24ec1f792f27d781f4b75b32a30474ad06c2115""#,
//!     r#","sig":"457e202f8c95107e519d454c32e3010bb7943d04f6488589d40782aa451de567"#,
//!     r#"59b1416be8f57a125d7b3f8d1c51d8a192746117ecacb12c14a8c2e83e966f00"}"#,
//!     "\n",
//! );
//! // Without the public key only the chain is checked; `vaultctl audit verify`
//! // passes the key so that checkpoint signatures are checked too.
//! let report = vault_audit::verify(log.as_bytes(), None);
//! assert!(report.is_ok());
//! assert_eq!((report.records, report.checkpoints, report.unsigned_tail), (3, 1, 0));
//!
//! let edited = log.replace("stripe-key", "other-key");
//! let error = vault_audit::verify(edited.as_bytes(), None).first_error.unwrap();
//! assert!(error.to_string().starts_with("line 2 (seq 1): chain broken: "));
//! ```
//!
//! # What the verifier can and cannot see
//!
//! The chain makes any change to a record, and any deletion, insertion or
//! reordering, visible at the first record it breaks. Someone who can write the log
//! can also recompute the chain after an edit, but cannot sign: the next checkpoint's
//! signature then fails. Records after the last checkpoint ([`Report::unsigned_tail`])
//! are vouched for by no signature, and cutting a log exactly after a checkpoint
//! leaves a valid, shorter log; the verifier reports the tail and the seq it verified
//! through so the operator can compare them with what they expect. MACs need the
//! daemon's key and are not checked offline. Segments are authenticated
//! independently, so [`Report::segments`] should match the restarts that happened.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod chain;
mod error;
mod event;
// For the fuzz targets in fuzz/ and the corpus replay tests only; not an API.
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod keys;
mod options;
mod record;
mod search;
mod sink;
mod tail;
mod verify;
mod writer;

pub use error::AuditError;
pub use event::{Decision, Event, MAX_DETAIL, MAX_FIELD};
pub use keys::ChainKeys;
pub use options::{AuditOptions, FsyncPolicy};
pub use search::{Entry, Filter, Line, Reader, search};
pub use sink::AuditLog;
pub use verify::{
    Continued, Recovered, Report, VerifyError, VerifyErrorKind, parse_public_key, verify,
    verify_all,
};
pub use writer::Reopened;
