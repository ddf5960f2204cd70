//! Offline verification of an audit log.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde_json::json;
use vault_audit::VerifyErrorKind;

use crate::error::{CliError, Exit};
use crate::output::Output;

fn plural(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

pub(crate) fn verify(
    files: &[PathBuf],
    public_key: Option<&Path>,
    out: Output,
) -> Result<(), CliError> {
    let key = public_key
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::invalid(format!(
                    "cannot read the public key {}: {e}",
                    path.display()
                ))
            })?;
            vault_audit::parse_public_key(&text).ok_or_else(|| {
                CliError::invalid(format!(
                    "{} is not an Ed25519 public key in hex (64 digits)",
                    path.display()
                ))
                .hint("`vaultctl status --json` shows audit_public_key while vaultd is unsealed")
            })
        })
        .transpose()?;
    let logs = files
        .iter()
        .map(|file| {
            std::fs::File::open(file)
                .map(BufReader::new)
                .map_err(|e| CliError::invalid(format!("cannot open {}: {e}", file.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let report = vault_audit::verify_all(logs, key.as_ref());
    let error = report.first_error.as_ref();
    let name = |input: usize| {
        files
            .get(input)
            .map_or_else(String::new, |f| f.display().to_string())
    };
    out.emit(
        || {
            let mut lines = Vec::new();
            match error {
                Some(e) => lines.push(format!("FAILED: {}: {e}", name(e.input))),
                None => lines.push(format!(
                    "ok: {}, {}, {}",
                    plural(report.records, "record"),
                    plural(report.checkpoints, "checkpoint"),
                    plural(report.segments, "segment")
                )),
            }
            if let Some(seq) = report.last_verified_seq {
                lines.push(format!("verified through seq {seq}"));
            }
            // After a failure the tail is beside the point: the failure is the finding.
            match (error, report.unsigned_tail) {
                (Some(_), _) | (None, 0) => {}
                (None, 1) => lines.push(
                    "warning: the last record follows the last checkpoint; no signature vouches for it yet"
                        .to_owned(),
                ),
                (None, n) => lines.push(format!(
                    "warning: the last {n} records follow the last checkpoint; no signature vouches for them yet"
                )),
            }
            for recovery in &report.recoveries {
                lines.push(format!("recovered: {recovery}"));
            }
            if report.begins_mid_chain {
                lines.push(
                    "warning: the first file begins mid-chain (a continuation): the files before it \
                     were not given first, so what came before is not checked"
                        .to_owned(),
                );
            }
            for continued in &report.continuations {
                lines.push(format!("continued in {}: {continued}", name(continued.input)));
            }
            if let Some(VerifyErrorKind::PartialLine) = error.map(|e| &e.kind) {
                lines.push(
                    "note: a partial last record is what a crash or a full disk leaves; vaultd moves \
                     it aside and continues the chain when it next opens the log"
                        .to_owned(),
                );
            }
            if !report.signatures_checked {
                lines.push("warning: signatures not checked; pass --public-key to check them".to_owned());
            }
            lines.join("\n")
        },
        || {
            json!({
                "ok": error.is_none(),
                "records": report.records,
                "checkpoints": report.checkpoints,
                "segments": report.segments,
                "last_verified_seq": report.last_verified_seq,
                "unsigned_tail": report.unsigned_tail,
                "unsigned_segment_ends": report.unsigned_segment_ends,
                "signatures_checked": report.signatures_checked,
                "recoveries": report.recoveries.iter().map(|r| json!({
                    "line": r.line,
                    "seq": r.seq,
                    "torn_bytes": r.torn_bytes,
                    "moved_to": r.moved_to,
                })).collect::<Vec<_>>(),
                "begins_mid_chain": report.begins_mid_chain,
                "continuations": report.continuations.iter().map(|c| json!({
                    "file": name(c.input),
                    "line": c.line,
                    "seq": c.seq,
                    "reason": c.reason,
                    "gap": c.gap,
                })).collect::<Vec<_>>(),
                "error": error.map(|e| json!({
                    "file": name(e.input),
                    "line": e.line,
                    "seq": e.seq,
                    "message": e.to_string(),
                })),
            })
        },
    );
    match error {
        None => Ok(()),
        Some(e) => Err(CliError::new(
            Exit::CheckFailed,
            format!(
                "the audit log failed verification in {} at line {}",
                name(e.input),
                e.line
            ),
        )
        .hint("compare with a trusted copy; everything before that line verified")),
    }
}

/// `audit search` and `audit tail`: vaultd's records that match, one JSON line each,
/// printed as they arrive.
pub(crate) async fn search(
    client: &vault_client::Client,
    command: &crate::cli::AuditCommand,
) -> Result<(), CliError> {
    use crate::cli::AuditCommand;
    use std::io::Write as _;

    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    let (filters, since_ms, limit, follow) = match command {
        AuditCommand::Search {
            filters,
            since,
            limit,
            follow,
        } => {
            let since = match since {
                Some(text) => {
                    let ago = crate::input::duration(text)?;
                    now_ms().saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX))
                }
                None => 0,
            };
            (filters.clone(), since, *limit, *follow)
        }
        AuditCommand::Tail { filters } => (filters.clone(), now_ms(), 100_000, true),
        AuditCommand::Verify { .. } => {
            return Err(CliError::new(Exit::Failure, "audit verify runs offline"));
        }
    };
    let mut stream = client
        .search_audit(vault_client::proto::SearchAuditRequest {
            tenant: filters.tenant.unwrap_or_default(),
            identity: filters.identity.unwrap_or_default(),
            operation: filters.operation.unwrap_or_default(),
            decision: filters.decision.unwrap_or_default(),
            since_unix_ms: since_ms,
            until_unix_ms: 0,
            limit,
            follow,
        })
        .await?;
    let mut stdout = std::io::stdout().lock();
    while let Some(entry) = stream
        .message()
        .await
        .map_err(|status| CliError::from(vault_client::Error::from(status)))?
    {
        if writeln!(stdout, "{}", entry.line)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (a closed pipe): done.
            return Ok(());
        }
    }
    Ok(())
}
