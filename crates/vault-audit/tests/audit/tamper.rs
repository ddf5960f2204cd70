//! The verifier: a clean log passes, and every kind of tampering is named precisely.

use ring::digest;
use tempfile::TempDir;
use vault_audit::{VerifyError, VerifyErrorKind, parse_public_key, verify};

use vault_audit::ChainKeys;

use crate::{TestKeys, lines, verify_lines, write_log};

/// A closed log of 10 events with checkpoints, as lines, and its public key.
async fn sample() -> (Vec<String>, [u8; 32]) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    let keys = TestKeys::new();
    write_log(&path, 10, keys.clone()).await;
    (lines(&path), keys.public())
}

fn first_error(lines: &[String], key: &[u8; 32]) -> VerifyError {
    let report = verify_lines(lines, Some(key));
    assert!(!report.is_ok());
    report.first_error.unwrap()
}

#[tokio::test]
async fn a_clean_log_verifies_with_signatures() {
    let (lines, key) = sample().await;
    let report = verify_lines(&lines, Some(&key));
    assert!(report.is_ok(), "{report:?}");
    assert!(report.signatures_checked);
    assert_eq!(report.records, lines.len() as u64);
    assert_eq!(report.segments, 1);
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(report.last_verified_seq, Some(lines.len() as u64 - 1));
    // start + 10 events, a checkpoint after every 4 unsigned records, the explicit one.
    assert_eq!(report.checkpoints, 3);
    assert!(lines[0].starts_with(r#"{"seq":0,"time_ms":"#));
    assert!(lines[0].contains(
        r#""node":"test-node","kind":"start","detail":{"reason":"new audit log"},"prev":"0000"#
    ));
    assert!(lines.iter().all(|l| !l.contains(r#""mac":null"#)));

    let unchecked = verify_lines(&lines, None);
    assert!(unchecked.is_ok());
    assert!(!unchecked.signatures_checked);
}

/// The documented formulas, recomputed here independently of the crate.
#[tokio::test]
async fn macs_and_signatures_follow_the_documented_format() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    let keys = TestKeys::new();
    write_log(&path, 2, keys.clone()).await;
    for line in lines(&path) {
        let field = |name: &str| {
            let at = line.find(&format!(r#""{name}":"#)).unwrap() + name.len() + 3;
            line[at..]
                .split([',', '}'])
                .next()
                .unwrap()
                .trim_matches('"')
                .to_owned()
        };
        let chain = decode(&field("chain"));
        assert_eq!(field("mac"), encode(&keys.mac(&chain).unwrap()));
        if line.contains(r#""kind":"checkpoint""#) {
            let seq: u64 = field("seq").parse().unwrap();
            let mut message = b"vaultd audit checkpoint v1".to_vec();
            message.extend_from_slice(&seq.to_be_bytes());
            message.extend_from_slice(&chain);
            let sig = decode(&field("sig"));
            assert!(vault_crypto::verify_ed25519(&keys.public(), &message, &sig));
        } else {
            assert_eq!(field("sig"), "null");
        }
    }
}

#[tokio::test]
async fn an_edited_field_is_named_by_line() {
    let (mut lines, key) = sample().await;
    lines[5] = lines[5].replace(r#""reason":"r"#, r#""reason":"x"#);
    let error = first_error(&lines, &key);
    assert_eq!(error.line, 6);
    assert_eq!(error.seq, Some(5));
    assert_eq!(error.kind, VerifyErrorKind::ChainMismatch);
    assert!(
        error
            .to_string()
            .starts_with("line 6 (seq 5): chain broken:"),
        "{error}"
    );
}

#[tokio::test]
async fn a_deleted_line_is_a_gap() {
    let (mut lines, key) = sample().await;
    lines.remove(3);
    let error = first_error(&lines, &key);
    assert_eq!((error.line, error.seq), (4, Some(4)));
    assert_eq!(
        error.kind,
        VerifyErrorKind::SeqGap {
            expected: 3,
            found: 4
        }
    );

    let (mut lines, key) = sample().await;
    lines.remove(0);
    assert_eq!(
        first_error(&lines, &key).kind,
        VerifyErrorKind::MissingStart
    );
}

#[tokio::test]
async fn an_inserted_copy_is_caught() {
    let (mut lines, key) = sample().await;
    let copy = lines[2].clone();
    lines.insert(6, copy);
    let error = first_error(&lines, &key);
    assert_eq!(error.line, 7);
    assert_eq!(
        error.kind,
        VerifyErrorKind::SeqGap {
            expected: 6,
            found: 2
        }
    );
}

#[tokio::test]
async fn swapped_lines_are_caught() {
    let (mut lines, key) = sample().await;
    lines.swap(7, 8);
    let error = first_error(&lines, &key);
    assert_eq!(error.line, 8);
    assert_eq!(
        error.kind,
        VerifyErrorKind::SeqGap {
            expected: 7,
            found: 8
        }
    );
}

#[tokio::test]
async fn an_edit_with_recomputed_hashes_fails_the_next_checkpoint() {
    let (mut lines, key) = sample().await;
    lines[2] = lines[2].replace(r#""reason":"r1""#, r#""reason":"r9""#);
    rechain(&mut lines, 2);
    let unchecked = verify_lines(&lines, None);
    assert!(
        unchecked.is_ok(),
        "the forged chain is consistent: {unchecked:?}"
    );

    let error = first_error(&lines, &key);
    assert_eq!(error.kind, VerifyErrorKind::BadSignature);
    let first_checkpoint = lines
        .iter()
        .position(|l| l.contains(r#""kind":"checkpoint""#))
        .unwrap();
    assert!(first_checkpoint > 2);
    assert_eq!(error.line, first_checkpoint as u64 + 1);
}

#[tokio::test]
async fn a_wrong_public_key_fails_the_first_checkpoint() {
    let (lines, _) = sample().await;
    let other = TestKeys::new().public();
    let error = first_error(&lines, &other);
    assert_eq!(error.kind, VerifyErrorKind::BadSignature);
    assert!(lines[error.line as usize - 1].contains(r#""kind":"checkpoint""#));
}

#[tokio::test]
async fn a_truncated_tail_is_reported() {
    let (lines, key) = sample().await;
    let mut text = lines.join("\n");
    text.truncate(text.len() - 10);
    let report = verify(text.as_bytes(), Some(&key));
    let error = report.first_error.unwrap();
    assert_eq!(error.line, lines.len() as u64);
    assert_eq!(error.kind, VerifyErrorKind::PartialLine);
    assert_eq!(report.records, lines.len() as u64 - 1);

    // Cut at a line boundary inside the unsigned part: intact, but unsigned.
    let cut = &lines[..lines.len() - 1];
    let report = verify_lines(cut, Some(&key));
    assert!(report.is_ok());
    assert!(report.unsigned_tail > 0);

    let empty = verify(&b""[..], Some(&key));
    assert_eq!(empty.first_error.unwrap().kind, VerifyErrorKind::Empty);
}

#[tokio::test]
async fn segments_may_follow_each_other_but_only_from_zero() {
    let (first, key) = sample().await;
    let (second, _) = sample().await;
    let both: Vec<String> = first.iter().chain(&second).cloned().collect();
    // The second sample was signed with another key, so check the chain only.
    let report = verify_lines(&both, None);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.segments, 2);
    assert_eq!(report.unsigned_segment_ends, 0);

    // A start record that claims to continue a chain is refused.
    let mut forged = first.clone();
    forged[4] = forged[0].replacen(r#""seq":0,"#, r#""seq":4,"#, 1);
    let error = first_error(&forged, &key);
    assert_eq!((error.line, error.kind), (5, VerifyErrorKind::BadStart));

    // A segment cut after its last checkpoint is counted.
    let cut: Vec<String> = first[..first.len() - 1]
        .iter()
        .chain(&second)
        .cloned()
        .collect();
    assert_eq!(verify_lines(&cut, None).unsigned_segment_ends, 1);
}

#[test]
fn public_keys_parse_from_hex_text() {
    let hex = "ab".repeat(32);
    assert_eq!(parse_public_key(&format!("  {hex}\n")), Some([0xab; 32]));
    assert_eq!(parse_public_key(&hex[2..]), None);
    assert_eq!(parse_public_key(&format!("{hex}00")), None);
    assert_eq!(parse_public_key("zz"), None);
    assert_eq!(parse_public_key(""), None);
}

/// Recomputes `chain` (and the next `prev`) for every line from `from` on, as an
/// attacker without the signing key can.
fn rechain(lines: &mut [String], from: usize) {
    for i in from..lines.len() {
        let line = &lines[i];
        let body_end = line.find(r#","chain":""#).unwrap();
        let body = format!("{}}}", &line[..body_end]);
        let prev_at = line.find(r#""prev":""#).unwrap() + 8;
        let prev = decode(&line[prev_at..prev_at + 64]);
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(b"vaultd audit v1");
        context.update(&prev);
        context.update(body.as_bytes());
        let chain = encode(context.finish().as_ref());
        let chain_at = body_end + 10;
        let old_chain = line[chain_at..chain_at + 64].to_owned();
        lines[i].replace_range(chain_at..chain_at + 64, &chain);
        if let Some(next) = lines.get_mut(i + 1) {
            *next = next.replacen(
                &format!(r#""prev":"{old_chain}""#),
                &format!(r#""prev":"{chain}""#),
                1,
            );
        }
    }
}

fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
