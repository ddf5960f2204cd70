//! The seal lifecycle: status, init, unseal, seal, rekey, root-key rotation.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use serde_json::json;
use vault_client::proto::{SealState, StatusResponse};
use vault_client::{Client, Share};
use vault_crypto::Passphrase;
use zeroize::Zeroizing;

use crate::cli::{InitArgs, QuorumArgs, RekeyArgs, SealArgs, ShareOutput, UnsealArgs};
use crate::custodians;
use crate::error::{CliError, Exit};
use crate::input;
use crate::output::Output;

fn state_name(state: i32) -> &'static str {
    match SealState::try_from(state) {
        Ok(SealState::Unsealed) => "unsealed",
        Ok(SealState::Sealed) => "sealed",
        Ok(SealState::Uninitialised) => "uninitialised",
        _ => "unknown",
    }
}

fn status_json(s: &StatusResponse) -> serde_json::Value {
    json!({
        "state": state_name(s.state),
        "threshold": s.threshold,
        "shares": s.share_count,
        "generation": s.generation,
        "progress": s.progress,
        "unseal_nonce": (!s.unseal_nonce.is_empty()).then_some(&s.unseal_nonce),
        "root_version": s.root_version,
        "audit_public_key": (!s.audit_public_key.is_empty()).then_some(&s.audit_public_key),
        "version": s.version,
        "alerts": s.alerts.iter().map(|a| (a.kind.clone(), json!(a.count))).collect::<serde_json::Map<_, _>>(),
        "recent_alerts": s.recent_alerts.iter().map(|a| json!({
            "kind": a.kind,
            "severity": a.severity,
            "at_unix_ms": a.at_unix_ms,
            "identity": (!a.identity.is_empty()).then_some(&a.identity),
            "tenant": (!a.tenant.is_empty()).then_some(&a.tenant),
        })).collect::<Vec<_>>(),
    })
}

/// The alert lines under the status line: counts by kind, then the latest few.
fn alert_lines(s: &StatusResponse) -> String {
    if s.alerts.is_empty() {
        return String::new();
    }
    let total: u64 = s.alerts.iter().map(|a| a.count).sum();
    let kinds: Vec<String> = s
        .alerts
        .iter()
        .map(|a| format!("{} {}", a.kind, a.count))
        .collect();
    let mut lines = vec![format!(
        "alerts since start: {total} ({})",
        kinds.join(", ")
    )];
    for a in s.recent_alerts.iter().take(5) {
        let mut line = format!("  {} {} at {} ms", a.severity, a.kind, a.at_unix_ms);
        if !a.identity.is_empty() {
            line.push_str(&format!(" · {}", a.identity));
        }
        if !a.tenant.is_empty() {
            line.push_str(&format!(" · tenant {}", a.tenant));
        }
        lines.push(line);
    }
    format!("\n{}", lines.join("\n"))
}

fn status_line(s: &StatusResponse) -> String {
    match SealState::try_from(s.state) {
        Ok(SealState::Unsealed) => format!(
            "unsealed · threshold {} of {} shares · generation {} · root key v{} · vaultd {}",
            s.threshold, s.share_count, s.generation, s.root_version, s.version
        ),
        Ok(SealState::Sealed) if s.progress > 0 => format!(
            "sealed · {} of {} shares submitted · threshold {} of {} · generation {} · vaultd {}",
            s.progress, s.threshold, s.threshold, s.share_count, s.generation, s.version
        ),
        Ok(SealState::Sealed) => format!(
            "sealed · threshold {} of {} shares · generation {} · vaultd {} · unseal with `vaultctl unseal`",
            s.threshold, s.share_count, s.generation, s.version
        ),
        _ => format!(
            "uninitialised · vaultd {} · initialise with `vaultctl init`",
            s.version
        ),
    }
}

pub(crate) async fn status(client: &Client, out: Output) -> Result<(), CliError> {
    let status = client.status().await?;
    out.emit(
        || status_line(&status) + &alert_lines(&status),
        || status_json(&status),
    );
    Ok(())
}

/// Where new shares go, settled before vaultd makes them: shares exist once, so
/// nothing that can fail (a full directory, an empty passphrase) may come after.
enum ShareSink {
    /// Printed once.
    Print,
    /// One 0600 file per custodian, each optionally under its own passphrase.
    Files {
        dir: PathBuf,
        protection: Protection,
    },
}

/// How each share file is protected.
enum Protection {
    /// Written as `vs1-…` (mode 0600): the custodian takes the file away.
    None,
    /// Each under its own passphrase.
    Passphrases(Vec<Passphrase>),
    /// Each encrypted to its custodian's age key.
    Custodians(Vec<custodians::Custodian>),
}

impl ShareSink {
    fn prepare(output: &ShareOutput, count: u32) -> Result<Self, CliError> {
        let Some(dir) = &output.share_dir else {
            return Ok(ShareSink::Print);
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::invalid(format!("cannot create {}: {e}", dir.display())))?;
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(CliError::invalid(format!("{} is not empty", dir.display()))
                .hint("share files are never overwritten: use an empty or new --share-dir"));
        }
        // Prove the directory writable now, not after the shares exist.
        let probe = dir.join(".vaultctl-probe");
        vault_pki::write_private(&probe, b"")
            .map_err(|e| CliError::invalid(format!("cannot write in {}: {e}", dir.display())))?;
        std::fs::remove_file(&probe)?;
        let listed = custodians::custodians(&output.recipient, output.recipients_file.as_deref())?;
        let protection = match (listed, output.passphrase_protect) {
            (Some(listed), _) if listed.len() != count as usize => {
                return Err(CliError::invalid(format!(
                    "{} custodians named for {count} shares: name one per share",
                    listed.len()
                )));
            }
            (Some(listed), _) => Protection::Custodians(listed),
            (None, true) => Protection::Passphrases(
                (1..=count)
                    .map(|i| input::new_passphrase(&format!("share {i}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            (None, false) => Protection::None,
        };
        Ok(ShareSink::Files {
            dir: dir.clone(),
            protection,
        })
    }

    /// Hands the shares out. If a file cannot be written, the shares not yet written
    /// are printed rather than lost.
    fn deliver(self, shares: &[Share], out: Output, threshold: u32) -> Result<(), CliError> {
        let ShareSink::Files { dir, protection } = self else {
            eprintln!(
                "These {} shares are shown once and stored nowhere. Give one to each custodian; any {threshold} unseal vaultd.",
                shares.len()
            );
            print_shares(shares, 0, out, threshold);
            return Ok(());
        };
        let mut files = Vec::new();
        for (i, share) in shares.iter().enumerate() {
            let (path, contents) = match &protection {
                Protection::None => (
                    dir.join(format!("share-{}.txt", i + 1)),
                    Ok(Zeroizing::new(
                        format!("{}\n", share.encode().as_str()).into_bytes(),
                    )),
                ),
                Protection::Passphrases(passphrases) => (
                    dir.join(format!("share-{}.txt", i + 1)),
                    passphrases
                        .get(i)
                        .ok_or_else(|| std::io::Error::other("no passphrase for this share"))
                        .and_then(|passphrase| {
                            vault_crypto::sharefile::protect(share, passphrase)
                                .map(|text| Zeroizing::new(text.into_bytes()))
                                .map_err(|e| std::io::Error::other(e.to_string()))
                        }),
                ),
                Protection::Custodians(listed) => match listed.get(i) {
                    Some(custodian) => (
                        dir.join(format!("share-{}.age", custodian.name)),
                        custodian.seal(share).map(Zeroizing::new),
                    ),
                    None => (
                        dir.join(format!("share-{}.age", i + 1)),
                        Err(std::io::Error::other("no custodian for this share")),
                    ),
                },
            };
            if let Err(e) = contents.and_then(|bytes| vault_pki::write_private(&path, &bytes)) {
                eprintln!(
                    "vaultctl: cannot write {}: {e}\nThe shares from number {} on exist only below: copy them now.",
                    path.display(),
                    i + 1
                );
                match &protection {
                    // Sealed to their custodians, never shown in the clear.
                    Protection::Custodians(listed) => print_sealed(shares, listed, i),
                    _ => print_shares(shares, i, out, threshold),
                }
                return Err(CliError::new(Exit::Failure, "not every share file could be written")
                    .hint("the shares printed above are the only copies; hand them to their custodians"));
            }
            files.push(path);
        }
        out.emit(
            || {
                format!(
                    "wrote {} share files (mode 0600{}) in {}: give one to each custodian; any {threshold} unseal vaultd",
                    files.len(),
                    match protection {
                        Protection::None => "",
                        Protection::Passphrases(_) => ", passphrase-protected",
                        Protection::Custodians(_) => ", each encrypted to its custodian's age key",
                    },
                    dir.display()
                )
            },
            || json!({ "threshold": threshold, "share_files": files }),
        );
        Ok(())
    }
}

/// Prints the age files of shares from number `first` (0-based) on, in hex: each
/// still opens only with its custodian's identity.
fn print_sealed(shares: &[Share], custodians: &[custodians::Custodian], first: usize) {
    for (share, custodian) in shares.iter().zip(custodians).skip(first) {
        match custodian.seal(share) {
            Ok(sealed) => println!(
                "share-{}.age (save with: xxd -r -p > share-{}.age): {}",
                custodian.name,
                custodian.name,
                vault_crypto::hex::encode(&sealed).as_str()
            ),
            Err(e) => eprintln!(
                "vaultctl: share for {} could not be sealed: {e}",
                custodian.name
            ),
        }
    }
}

/// Prints shares from number `first` (0-based) on.
fn print_shares(shares: &[Share], first: usize, out: Output, threshold: u32) {
    // Written straight from one zeroising buffer sized up front: shares must not pass
    // through ordinary strings or JSON values, which are freed without being wiped.
    // A share is `vs1-` and hex, so it needs no JSON escaping.
    let mut text = Zeroizing::new(String::with_capacity(128 * shares.len() + 64));
    let pieces = shares.iter().enumerate().skip(first);
    if out.json {
        let _ = write!(text, "{{\"threshold\":{threshold},\"shares\":[");
        for (k, (i, share)) in pieces.enumerate() {
            let comma = if k == 0 { "" } else { "," };
            let _ = write!(
                text,
                "{comma}{{\"number\":{},\"share\":\"{}\"}}",
                i + 1,
                share.encode().as_str()
            );
        }
        text.push_str("]}\n");
    } else {
        for (i, share) in pieces {
            let _ = writeln!(text, "share {}: {}", i + 1, share.encode().as_str());
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

pub(crate) async fn init(client: &Client, args: &InitArgs, out: Output) -> Result<(), CliError> {
    if args.threshold == 0 || args.threshold > args.shares || args.shares > 255 {
        return Err(CliError::invalid(
            "need 1 <= --threshold <= --shares <= 255",
        ));
    }
    let sink = ShareSink::prepare(&args.output, args.shares)?;
    let shares = client.init(args.threshold, args.shares).await?;
    sink.deliver(&shares, out, args.threshold)
}

pub(crate) async fn unseal(
    client: &Client,
    args: &UnsealArgs,
    out: Output,
) -> Result<(), CliError> {
    if args.reset {
        client.unseal_reset().await?;
        out.emit(
            || "unseal attempt discarded".to_owned(),
            || json!({ "reset": true }),
        );
        return Ok(());
    }
    let status = client.status().await?;
    match SealState::try_from(status.state) {
        Ok(SealState::Unsealed) => {
            return Err(CliError::new(Exit::State, "vaultd is already unsealed"));
        }
        Ok(SealState::Uninitialised) => {
            return Err(CliError::new(Exit::State, "vaultd is not initialised")
                .hint("initialise it with `vaultctl init`"));
        }
        _ => {}
    }
    let share = match &args.share_file {
        Some(path) => input::share_file(path, &args.identity)?,
        None => input::share_prompt("unseal share (input hidden): ")?,
    };
    let nonce = (!status.unseal_nonce.is_empty()).then_some(status.unseal_nonce.as_str());
    let progress = client.unseal(&share, nonce).await.map_err(|e| {
        let bad_share = matches!(e, vault_client::Error::InvalidArgument { .. });
        let error = CliError::from(e);
        if bad_share {
            error.hint(
                "check the share file; if the shares do not match, every custodian submits again",
            )
        } else {
            error
        }
    })?;
    let unsealed = progress.state == SealState::Unsealed as i32;
    out.emit(
        || match unsealed {
            true => "unsealed".to_owned(),
            false => format!(
                "{} of {} shares submitted; {} more needed",
                progress.submitted,
                progress.threshold,
                progress.threshold.saturating_sub(progress.submitted)
            ),
        },
        || {
            json!({
                "state": state_name(progress.state),
                "submitted": progress.submitted,
                "threshold": progress.threshold,
            })
        },
    );
    Ok(())
}

pub(crate) async fn reload(client: &Client, out: Output) -> Result<(), CliError> {
    let report = client.reload().await?;
    out.emit(
        || {
            let mut lines: Vec<String> = report
                .parts
                .iter()
                .map(|p| {
                    let mark = if p.ok { "ok" } else { "FAILED" };
                    format!("{}: {mark}: {}", p.part, p.outcome)
                })
                .collect();
            if !report.needs_restart.is_empty() {
                lines.push(format!(
                    "needs a restart: {}",
                    report.needs_restart.join(", ")
                ));
            }
            lines.join("\n")
        },
        || {
            json!({
                "complete": report.complete,
                "parts": report.parts.iter().map(|p| json!({
                    "part": p.part, "ok": p.ok, "outcome": p.outcome,
                })).collect::<Vec<_>>(),
                "needs_restart": report.needs_restart,
            })
        },
    );
    match report.complete {
        true => Ok(()),
        false => Err(CliError::new(
            Exit::CheckFailed,
            "the reload was not complete: what failed keeps its previous version",
        )
        .hint("fix what the lines above name and reload again; settings that need a restart take effect when vaultd restarts")),
    }
}

pub(crate) async fn seal(client: &Client, args: &SealArgs, out: Output) -> Result<(), CliError> {
    if args.cluster {
        client.seal_cluster().await?;
    } else {
        client.seal().await?;
    }
    out.emit(
        || {
            let scope = if args.cluster {
                "this node, and every node on its database as it reads the change log"
            } else {
                "this node"
            };
            format!(
                "sealed {scope}: every key, session and lease was wiped; custodians unseal \
                 with `vaultctl unseal`"
            )
        },
        || json!({ "state": "sealed", "cluster": args.cluster }),
    );
    Ok(())
}

/// The current threshold, so the right number of shares is asked for.
async fn current_threshold(client: &Client) -> Result<usize, CliError> {
    let status = client.status().await?;
    if status.state != SealState::Unsealed as i32 {
        return Err(CliError::new(
            Exit::State,
            format!("vaultd is {}", state_name(status.state)),
        )
        .hint("this needs an unsealed vaultd"));
    }
    Ok(status.threshold as usize)
}

pub(crate) async fn rekey(client: &Client, args: &RekeyArgs, out: Output) -> Result<(), CliError> {
    if args.threshold == 0 || args.threshold > args.shares || args.shares > 255 {
        return Err(CliError::invalid(
            "need 1 <= --threshold <= --shares <= 255",
        ));
    }
    let threshold = current_threshold(client).await?;
    let current = input::quorum(&args.quorum.share_files, &args.quorum.identity, threshold)?;
    let sink = ShareSink::prepare(&args.output, args.shares)?;
    let shares = client.rekey(&current, args.threshold, args.shares).await?;
    eprintln!(
        "a new share set is pending: the current shares keep unsealing vaultd until a quorum \
         of the new ones is verified with `vaultctl rekey-verify --share-file …`"
    );
    sink.deliver(&shares, out, args.threshold)
}

/// Puts a pending share set in force, given a quorum of its shares.
pub(crate) async fn verify_rekey(
    client: &Client,
    args: &QuorumArgs,
    out: Output,
) -> Result<(), CliError> {
    let pending = args.share_files.len().max(1);
    let new = input::quorum(&args.share_files, &args.identity, pending)?;
    let set = client.verify_rekey(&new).await?;
    out.emit(
        || {
            format!(
                "the new share set (generation {}, {} of {}) is in force: the old shares no \
                 longer unseal vaultd",
                set.generation, set.threshold, set.share_count
            )
        },
        || {
            json!({
                "generation": set.generation,
                "threshold": set.threshold,
                "shares": set.share_count,
            })
        },
    );
    Ok(())
}

pub(crate) async fn rotate_root_key(
    client: &Client,
    args: &QuorumArgs,
    out: Output,
) -> Result<(), CliError> {
    let threshold = current_threshold(client).await?;
    let shares = input::quorum(&args.share_files, &args.identity, threshold)?;
    let version = client.rotate_root_key(&shares).await?;
    out.emit(
        || {
            format!(
                "root key rotated to version {version}; every tenant and system key was rewrapped"
            )
        },
        || json!({ "root_version": version }),
    );
    Ok(())
}
