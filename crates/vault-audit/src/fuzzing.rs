//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay tests: not
//! an API. [`audit`] feeds the fuzzer's bytes to the offline verifier, with and
//! without a checkpoint key, and to the line parser, panicking only when a promise of
//! theirs is broken.

use std::io::BufReader;
use std::sync::OnceLock;

use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::record::Record;
use crate::verify::{Report, verify};

/// The Ed25519 seed of the checkpoint key [`audit`] verifies with. Corpus generators
/// sign their logs' checkpoints with it, so that seeds reach the signature check and
/// pass it; it signs nothing else.
pub const SIGNING_SEED: [u8; 32] = [0x42; 32];

/// The public half of [`SIGNING_SEED`].
pub fn public_key() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(|| {
        let pair = Ed25519KeyPair::from_seed_unchecked(&SIGNING_SEED)
            .expect("a 32-byte seed is an Ed25519 key");
        pair.public_key()
            .as_ref()
            .try_into()
            .expect("Ed25519 public keys are 32 bytes")
    })
}

/// `audit`: verifies `data` as an audit log without a key and with the fixed key,
/// byte by byte as well as at once, and parses each of its lines as a record.
pub fn audit(data: &[u8]) {
    let unkeyed = verify(data, None);
    check(&unkeyed, false);
    let key = public_key();
    let keyed = verify(data, Some(&key));
    check(&keyed, true);

    // A key adds checks and removes none: it can only stop the verifier earlier.
    assert!(keyed.records <= unkeyed.records);
    if keyed.is_ok() {
        assert!(unkeyed.is_ok());
        assert_eq!(
            (keyed.records, keyed.checkpoints, keyed.segments),
            (unkeyed.records, unkeyed.checkpoints, unkeyed.segments)
        );
    }
    if unkeyed.checkpoints == 0 {
        assert_eq!(
            Report {
                signatures_checked: false,
                ..keyed.clone()
            },
            unkeyed,
            "without checkpoints the key changes nothing"
        );
    }

    // How the input arrives in reads does not change the verdict.
    let trickled = verify(BufReader::with_capacity(1, data), Some(&key));
    assert_eq!(
        trickled, keyed,
        "the report depends on the bytes, not the reads"
    );

    for line in data.split(|b| *b == b'\n') {
        let Ok(record) = Record::parse(line) else {
            continue;
        };
        let written = record.to_line();
        assert_eq!(
            written.as_bytes().strip_suffix(b"\n"),
            Some(line),
            "a parsed record writes back as the same line"
        );
        let _ = record.chain_is_consistent();
    }
}

fn check(report: &Report, keyed: bool) {
    assert_eq!(report.signatures_checked, keyed);
    assert!(report.checkpoints <= report.records);
    assert!(report.segments <= report.records);
    assert!(report.unsigned_tail <= report.records);
    assert_eq!(report.last_verified_seq.is_some(), report.records > 0);
    if report.is_ok() {
        assert!(report.records > 0, "an empty log is an error");
        assert!(report.segments > 0, "a log begins with a start record");
    }
    if let Some(error) = &report.first_error {
        let _ = error.to_string();
    }
    for recovery in &report.recoveries {
        let _ = recovery.to_string();
    }
}
