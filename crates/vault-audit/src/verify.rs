//! The offline verifier behind `vaultctl audit verify`: it recomputes the chain from
//! the records' bodies and checks checkpoint signatures, and reports the first bad
//! record precisely. It needs no MAC key, and treats its input as hostile.

use std::fmt;
use std::io::{BufRead, Read};

use crate::record::{GENESIS, MAX_LINE, MOVED_TO, Payload, Record, TORN_BYTES, checkpoint_message};

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Records that passed every check, up to the first error.
    pub records: u64,
    /// Checkpoints among them.
    pub checkpoints: u64,
    /// Chain segments among them (each begins with a `start` record). A regular-file
    /// log has one; more mean the log was written through a pipe or device and
    /// vaultd restarted (or someone spliced segments: check the restarts happened).
    pub segments: u64,
    /// The seq of the last record that passed every check.
    pub last_verified_seq: Option<u64>,
    /// Records after the last checkpoint of the last segment: intact as a chain, but
    /// no signature vouches for them (they may have been rewritten, or the log cut).
    pub unsigned_tail: u64,
    /// Earlier segments that did not end with a checkpoint: their ends are unsigned
    /// too, so records may have been cut from them.
    pub unsigned_segment_ends: u64,
    /// Whether checkpoint signatures were checked (a public key was given).
    pub signatures_checked: bool,
    /// Torn tails vaultd moved aside when it reopened the log, in order: where the
    /// chain continued, and where the torn bytes went.
    pub recoveries: Vec<Recovered>,
    /// Where the log was reopened (rotation, or a failed sink written again), in
    /// order. The first input may begin with one: the files before it were not given,
    /// and the chain is checked from there.
    pub continuations: Vec<Continued>,
    /// The first record is a `continuation`: the files before it were not given (or
    /// were given after it), so the records before it are not checked.
    pub begins_mid_chain: bool,
    /// The first bad record; `None` if every record passed.
    pub first_error: Option<VerifyError>,
}

impl Report {
    /// No error was found. An unsigned tail is reported but is not an error by
    /// itself, nor are unchecked signatures: the caller decides.
    pub fn is_ok(&self) -> bool {
        self.first_error.is_none()
    }
}

/// A `recovery` record: vaultd found a torn tail when it reopened the log (a crash or
/// a full disk cut a write short), moved those bytes aside, and continued the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The 1-based line of the recovery record (the torn bytes had begun here).
    pub line: u64,
    /// The recovery record's seq.
    pub seq: u64,
    /// How many bytes were moved aside.
    pub torn_bytes: u64,
    /// The file they were moved to (a file name next to the log).
    pub moved_to: String,
}

impl fmt::Display for Recovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} (seq {}): a torn tail of {} bytes was moved to {} and the chain continued",
            self.line, self.seq, self.torn_bytes, self.moved_to
        )
    }
}

/// A `continuation` record: vaultd reopened the log (rotation on reload, or a sink
/// that had failed could be written again) and the chain continued there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continued {
    /// Which input (0-based) it begins.
    pub input: usize,
    /// Its 1-based line.
    pub line: u64,
    /// Its seq.
    pub seq: u64,
    /// Why the log was reopened.
    pub reason: String,
    /// The failure it ends, if the sink had failed: requests were refused meanwhile.
    pub gap: Option<String>,
}

impl fmt::Display for Continued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} (seq {}): {}", self.line, self.seq, self.reason)?;
        match &self.gap {
            Some(gap) => write!(f, "; {gap}"),
            None => Ok(()),
        }
    }
}

/// The first bad record: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// Which input (0-based) it is in.
    pub input: usize,
    /// The 1-based line number.
    pub line: u64,
    /// The record's seq, if the line parsed far enough to have one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: VerifyErrorKind,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "line {} (seq {seq}): {}", self.line, self.kind),
            None => write!(f, "line {}: {}", self.line, self.kind),
        }
    }
}

impl std::error::Error for VerifyError {}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyErrorKind {
    /// The line is not a record in canonical form.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The seq does not follow the previous record's.
    #[error(
        "sequence gap: expected seq {expected}, found {found} (a record was deleted, inserted or moved)"
    )]
    SeqGap {
        /// The seq that should have come next.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// `prev` is not the previous record's chain value.
    #[error(
        "chain broken: prev does not match the previous record (a record was deleted, inserted or moved)"
    )]
    PrevMismatch,
    /// The chain value is not the hash of the record's body.
    #[error("chain broken: the record does not hash to its chain value (it was edited)")]
    ChainMismatch,
    /// The checkpoint's signature does not verify.
    #[error(
        "bad checkpoint signature: records up to here were rewritten, or this is the wrong public key"
    )]
    BadSignature,
    /// A checkpoint carries no signature, or another record carries one.
    #[error("misplaced signature: only checkpoints are signed, and every checkpoint is")]
    MisplacedSignature,
    /// A `start` record that does not begin a chain (seq 0, all-zero prev).
    #[error("bad start record: a segment must begin at seq 0 with an all-zero prev")]
    BadStart,
    /// The first record is not a `start` or `continuation` record.
    #[error(
        "missing start: the log does not begin with a start or continuation record (its head was cut)"
    )]
    MissingStart,
    /// There are no records at all.
    #[error("no records: the log is empty (it was truncated, or is not an audit log)")]
    Empty,
    /// The last line has no newline: the log was cut mid-record.
    #[error("partial line: the last record has no newline (the log was truncated mid-write)")]
    PartialLine,
    /// A line longer than any the writer produces.
    #[error("line longer than {MAX_LINE} bytes: not an audit record")]
    LineTooLong,
    /// The input could not be read.
    #[error("cannot read the log: {0}")]
    Read(std::io::ErrorKind),
}

/// Verifies an audit log read from `input`. With `public_key`, checkpoint signatures
/// are checked too; without it, only the chain is (and the report says so).
///
/// Stops at the first bad record. Never panics, whatever the input.
pub fn verify(input: impl BufRead, public_key: Option<&[u8; 32]>) -> Report {
    verify_all([input], public_key)
}

/// Verifies logs that follow one another as one chain, oldest first: a log and the
/// files its rotations left (`audit.jsonl.1`, then `audit.jsonl`), or what two
/// readers of a FIFO captured. A file after the first begins with the
/// `continuation` record whose `prev` is the previous file's last record, so a
/// file missing, reordered or cut at either end is found.
pub fn verify_all<R: BufRead>(
    inputs: impl IntoIterator<Item = R>,
    public_key: Option<&[u8; 32]>,
) -> Report {
    let mut verifier = Verifier {
        public_key,
        last: None,
        input: 0,
        report: Report {
            signatures_checked: public_key.is_some(),
            ..Report::default()
        },
    };
    let mut failure = None;
    for (index, input) in inputs.into_iter().enumerate() {
        verifier.input = index;
        if let Some((line, found)) = verifier.read(input) {
            failure = Some(VerifyError {
                input: index,
                line,
                seq: found.0,
                kind: found.1,
            });
            break;
        }
    }
    let mut report = verifier.report;
    report.first_error = failure;
    report
}

/// Where a record failed, and how.
type Failure = (u64, (Option<u64>, VerifyErrorKind));

struct Verifier<'k> {
    public_key: Option<&'k [u8; 32]>,
    /// The previous record's seq and chain value.
    last: Option<(u64, [u8; 32])>,
    /// The input being read.
    input: usize,
    report: Report,
}

impl Verifier<'_> {
    /// Checks every line of one input; the first failure, with its line.
    fn read(&mut self, mut input: impl BufRead) -> Option<Failure> {
        let mut buf = Vec::new();
        let mut line = 0u64;
        loop {
            line += 1;
            buf.clear();
            match (&mut input)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
            {
                Ok(0) if line == 1 => return Some((line, (None, VerifyErrorKind::Empty))),
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some((line, (None, VerifyErrorKind::Read(e.kind())))),
            }
            let Some(text) = buf.strip_suffix(b"\n") else {
                let kind = if buf.len() >= MAX_LINE {
                    VerifyErrorKind::LineTooLong
                } else {
                    VerifyErrorKind::PartialLine
                };
                return Some((line, (None, kind)));
            };
            if let Err(failure) = self.check(text, line) {
                return Some((line, failure));
            }
        }
    }

    fn check(&mut self, text: &[u8], line: u64) -> Result<(), (Option<u64>, VerifyErrorKind)> {
        let record =
            Record::parse(text).map_err(|e| (None, VerifyErrorKind::Malformed(e.to_string())))?;
        let seq = record.body.seq;
        let fail = |kind| (Some(seq), kind);

        let prev = record.body.prev.0;
        match (&record.body.payload, self.last) {
            (Payload::Start { .. }, _) if seq != 0 || prev != GENESIS => {
                return Err(fail(VerifyErrorKind::BadStart));
            }
            (Payload::Start { .. }, _) => {}
            // The files before this one were not given: the chain is checked from here.
            (Payload::Continuation { .. }, None) => self.report.begins_mid_chain = true,
            (_, None) => return Err(fail(VerifyErrorKind::MissingStart)),
            (_, Some((last_seq, last_chain))) => {
                let expected = last_seq.saturating_add(1);
                if seq != expected {
                    return Err(fail(VerifyErrorKind::SeqGap {
                        expected,
                        found: seq,
                    }));
                }
                if prev != last_chain {
                    return Err(fail(VerifyErrorKind::PrevMismatch));
                }
            }
        }

        let chain = record.body.chain();
        if chain != record.chain.0 {
            return Err(fail(VerifyErrorKind::ChainMismatch));
        }
        let checkpoint = matches!(record.body.payload, Payload::Checkpoint);
        match (checkpoint, &record.sig, self.public_key) {
            (true, Some(sig), Some(key)) => {
                let message = checkpoint_message(seq, &chain);
                if !vault_crypto::verify_ed25519(key, &message, &sig.0) {
                    return Err(fail(VerifyErrorKind::BadSignature));
                }
            }
            (true, Some(_), None) | (false, None, _) => {}
            (true, None, _) | (false, Some(_), _) => {
                return Err(fail(VerifyErrorKind::MisplacedSignature));
            }
        }

        let report = &mut self.report;
        match record.body.payload {
            Payload::Checkpoint => {
                report.checkpoints += 1;
                report.unsigned_tail = 0;
            }
            Payload::Start { .. } => {
                if report.unsigned_tail > 0 {
                    report.unsigned_segment_ends += 1;
                }
                report.segments += 1;
                report.unsigned_tail = 1;
            }
            Payload::Event(_) => report.unsigned_tail += 1,
            Payload::Continuation { detail } => {
                report.unsigned_tail += 1;
                report.continuations.push(Continued {
                    input: self.input,
                    line,
                    seq,
                    reason: detail.get("reason").cloned().unwrap_or_default(),
                    gap: detail.get("gap").cloned(),
                });
            }
            Payload::Recovery { detail } => {
                report.unsigned_tail += 1;
                let field = |name: &str| detail.get(name).map(String::as_str).unwrap_or("");
                report.recoveries.push(Recovered {
                    line,
                    seq,
                    torn_bytes: field(TORN_BYTES).parse().unwrap_or(0),
                    moved_to: field(MOVED_TO).to_owned(),
                });
            }
        }
        report.records += 1;
        report.last_verified_seq = Some(seq);
        self.last = Some((seq, chain));
        Ok(())
    }
}

/// Parses a hex Ed25519 public key (64 hex digits, surrounding whitespace ignored),
/// as kept in the file given to `vaultctl audit verify --public-key`.
pub fn parse_public_key(text: &str) -> Option<[u8; 32]> {
    let bytes = vault_crypto::hex::decode(text.trim())?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}
