//! `vaultctl ceremony`: rekey, verify-rekey and root-key rotation with each custodian
//! submitting their own share from their own machine. Nobody holds a quorum: one
//! identity starts the ceremony, every custodian checks it (`status`) and submits
//! with its nonce, and a rekey's new shares leave vaultd only encrypted to their
//! custodians' age keys.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use vault_client::Client;
use vault_client::proto::{self as v1, CeremonyKind};

use crate::custodians;
use crate::error::CliError;
use crate::input;
use crate::output::Output;

const FLOW: &str = "\
A rekey, start to finish (each custodian on their own machine):
  vaultctl ceremony start rekey --threshold 3 --recipients-file custodians.txt
  vaultctl ceremony status                  # each custodian checks it, notes the nonce
  vaultctl ceremony submit --nonce N --share-file share-me.age --identity me.txt
  vaultctl ceremony status --share-dir new/ # the new files, each for one custodian
  vaultctl ceremony start verify-rekey      # then each submits their NEW share
The current shares keep unsealing vaultd until the verify-rekey ceremony completes.";

/// Custodian ceremonies.
#[derive(Subcommand, Debug)]
#[command(after_help = FLOW)]
pub(crate) enum CeremonyCommand {
    /// Starts a ceremony; custodians then submit their shares one at a time.
    /// Permission: rekey (rekey, verify-rekey, enable- and disable-auto-unseal) or
    /// keys.rotate (rotate-root-key).
    Start(StartArgs),
    /// Shows the ceremony in progress (what it does, its nonce, who started it, the
    /// new set's custodians) and a pending rekey's custodian files.
    Status {
        /// Write the pending set's files here (share-NAME.age, mode 0600; existing
        /// files are never replaced).
        #[arg(long, value_name = "DIR")]
        share_dir: Option<PathBuf>,
    },
    /// Submits your share to the ceremony with this nonce. Permission: unseal.
    Submit(SubmitArgs),
    /// Discards the ceremony in progress, wiping the shares submitted to it.
    /// Permission: unseal.
    Cancel,
}

/// What a ceremony does.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A new share set, one share per named custodian, pending until verified.
    Rekey,
    /// Puts the pending set in force; custodians submit their new shares.
    VerifyRekey,
    /// Rotates the root key.
    RotateRootKey,
    /// Wraps the unseal key with vaultd's PKCS#11 token ([seal.pkcs11]): vaultd then
    /// unseals itself at start; the shares keep working.
    EnableAutoUnseal,
    /// Deletes the token's copy of the unseal key: only custodians unseal.
    DisableAutoUnseal,
}

#[derive(Args, Debug)]
pub(crate) struct StartArgs {
    /// What the ceremony does.
    kind: Kind,
    /// Rekey: shares the new set needs to unseal.
    #[arg(long, required_if_eq("kind", "rekey"))]
    threshold: Option<u32>,
    /// Rekey: a custodian's age public key (age1…), one flag per new share (named
    /// 1, 2, …).
    #[arg(long, value_name = "AGE1…", conflicts_with = "recipients_file")]
    recipient: Vec<String>,
    /// Rekey: the custodians, one `name age1…` line each.
    #[arg(long, value_name = "FILE")]
    recipients_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct SubmitArgs {
    /// The ceremony's nonce, from `vaultctl ceremony status`: a share goes only to
    /// the ceremony its custodian checked.
    #[arg(long)]
    nonce: String,
    /// Your share file (plain, passphrase-protected, or encrypted to your age key);
    /// without it, the share is read at a hidden prompt.
    #[arg(long, value_name = "FILE")]
    share_file: Option<PathBuf>,
    /// Your age identity file, for a share file encrypted to your key.
    #[arg(long, value_name = "FILE", requires = "share_file")]
    identity: Vec<PathBuf>,
    /// If your share completes a rekey, write the new set's files here.
    #[arg(long, value_name = "DIR")]
    share_dir: Option<PathBuf>,
}

pub(crate) async fn run(
    client: &Client,
    command: &CeremonyCommand,
    out: Output,
) -> Result<(), CliError> {
    match command {
        CeremonyCommand::Start(args) => start(client, args, out).await,
        CeremonyCommand::Status { share_dir } => {
            let progress = client.ceremony().await?;
            let files = match (&progress.pending, share_dir) {
                (Some(set), Some(dir)) => write_files(set, dir)?,
                _ => Vec::new(),
            };
            out.emit(
                || {
                    let mut text = match &progress.ceremony {
                        Some(c) => describe(c),
                        None => "no ceremony is in progress".to_owned(),
                    };
                    if let Some(set) = &progress.pending {
                        text.push('\n');
                        text.push_str(&pending_text(set, share_dir.as_deref()));
                    }
                    text
                },
                || {
                    json!({
                        "ceremony": progress.ceremony.as_ref().map(ceremony_json),
                        "pending": progress.pending.as_ref().map(|set| pending_json(set, &files)),
                    })
                },
            );
            Ok(())
        }
        CeremonyCommand::Submit(args) => submit(client, args, out).await,
        CeremonyCommand::Cancel => {
            let cancelled = client.cancel_ceremony().await?;
            out.emit(
                || {
                    format!(
                        "cancelled the {} ceremony; the {} shares submitted to it were wiped",
                        kind_name(cancelled.kind),
                        cancelled.submitted
                    )
                },
                || json!({ "cancelled": ceremony_json(&cancelled) }),
            );
            Ok(())
        }
    }
}

async fn start(client: &Client, args: &StartArgs, out: Output) -> Result<(), CliError> {
    let (kind, threshold, named) = match args.kind {
        Kind::Rekey => {
            let listed = custodians::custodians(&args.recipient, args.recipients_file.as_deref())?
                .ok_or_else(|| {
                    CliError::invalid("a rekey ceremony names its custodians")
                        .hint("pass --recipients-file (one `name age1…` line each) or --recipient per share")
                })?;
            let named: Vec<(String, String)> = listed
                .iter()
                .map(|c| (c.name.clone(), c.recipient()))
                .collect();
            (
                CeremonyKind::Rekey,
                args.threshold.unwrap_or_default(),
                named,
            )
        }
        Kind::VerifyRekey => (CeremonyKind::VerifyRekey, 0, Vec::new()),
        Kind::RotateRootKey => (CeremonyKind::RotateRootKey, 0, Vec::new()),
        Kind::EnableAutoUnseal => (CeremonyKind::EnableAutoUnseal, 0, Vec::new()),
        Kind::DisableAutoUnseal => (CeremonyKind::DisableAutoUnseal, 0, Vec::new()),
    };
    if !matches!(args.kind, Kind::Rekey)
        && (args.threshold.is_some()
            || !args.recipient.is_empty()
            || args.recipients_file.is_some())
    {
        return Err(CliError::invalid(
            "--threshold and the custodians belong to a rekey ceremony only",
        ));
    }
    let started = client.start_ceremony(kind, threshold, &named).await?;
    out.emit(
        || {
            format!(
                "{}\neach custodian runs: vaultctl ceremony submit --nonce {} --share-file …",
                describe(&started),
                started.nonce
            )
        },
        || ceremony_json(&started),
    );
    Ok(())
}

async fn submit(client: &Client, args: &SubmitArgs, out: Output) -> Result<(), CliError> {
    if let Some(dir) = &args.share_dir {
        prepare_dir(dir)?;
    }
    let share = match &args.share_file {
        Some(path) => input::share_file(path, &args.identity)?,
        None => input::share_prompt("your share (input hidden): ")?,
    };
    let progress = client.submit_ceremony_share(&share, &args.nonce).await?;
    drop(share);
    let completed = CeremonyKind::try_from(progress.completed).unwrap_or_default();
    let files = match (&progress.pending, &args.share_dir) {
        (Some(set), Some(dir)) => write_files(set, dir)?,
        _ => Vec::new(),
    };
    out.emit(
        || match (completed, &progress.ceremony) {
            (CeremonyKind::Unspecified, Some(c)) => format!(
                "share accepted: {} of {} submitted",
                c.submitted, c.threshold
            ),
            (CeremonyKind::Rekey, _) => progress.pending.as_ref().map_or_else(String::new, |set| {
                format!(
                    "your share completed the rekey.\n{}",
                    pending_text(set, args.share_dir.as_deref())
                )
            }),
            (CeremonyKind::VerifyRekey, _) => {
                let set = progress.verified.unwrap_or_default();
                format!(
                    "your share completed the verification: the new share set (generation {}, {} \
                     of {}) is in force and the old shares no longer unseal vaultd",
                    set.generation, set.threshold, set.share_count
                )
            }
            (CeremonyKind::RotateRootKey, _) => format!(
                "your share completed the rotation: root key version {} wraps every tenant and \
                 system key",
                progress.root_version
            ),
            (CeremonyKind::EnableAutoUnseal, _) => {
                "your share completed it: auto-unseal is enabled; vaultd unseals itself at start \
                 through its PKCS#11 token, and the shares keep working"
                    .to_owned()
            }
            (CeremonyKind::DisableAutoUnseal, _) => {
                "your share completed it: auto-unseal is disabled; only custodians unseal".to_owned()
            }
            _ => "share accepted".to_owned(),
        },
        || {
            json!({
                "completed": (completed != CeremonyKind::Unspecified).then(|| kind_name(completed as i32)),
                "ceremony": progress.ceremony.as_ref().map(ceremony_json),
                "pending": progress.pending.as_ref().map(|set| pending_json(set, &files)),
                "verified": progress.verified.map(|v| json!({
                    "generation": v.generation, "threshold": v.threshold, "shares": v.share_count,
                })),
                "root_version": (progress.root_version != 0).then_some(progress.root_version),
                "auto_unseal": matches!(completed, CeremonyKind::EnableAutoUnseal | CeremonyKind::DisableAutoUnseal)
                    .then_some(progress.auto_unseal),
            })
        },
    );
    Ok(())
}

fn kind_name(kind: i32) -> &'static str {
    match CeremonyKind::try_from(kind) {
        Ok(CeremonyKind::Rekey) => "rekey",
        Ok(CeremonyKind::VerifyRekey) => "verify-rekey",
        Ok(CeremonyKind::RotateRootKey) => "rotate-root-key",
        Ok(CeremonyKind::EnableAutoUnseal) => "enable-auto-unseal",
        Ok(CeremonyKind::DisableAutoUnseal) => "disable-auto-unseal",
        _ => "unknown",
    }
}

fn describe(c: &v1::Ceremony) -> String {
    let mut text = format!(
        "{} ceremony started by {}: {} of {} shares of generation {} submitted; nonce {}; \
         expires at unix {}",
        kind_name(c.kind),
        c.started_by,
        c.submitted,
        c.threshold,
        c.generation,
        c.nonce,
        c.expires_unix
    );
    if !c.custodians.is_empty() {
        text.push_str(&format!(
            "\nnew set: {} of {}, one share each to:",
            c.new_threshold,
            c.custodians.len()
        ));
        for custodian in &c.custodians {
            text.push_str(&format!("\n  {} {}", custodian.name, custodian.recipient));
        }
    }
    text
}

fn ceremony_json(c: &v1::Ceremony) -> serde_json::Value {
    json!({
        "kind": kind_name(c.kind),
        "nonce": c.nonce,
        "started_by": c.started_by,
        "submitted": c.submitted,
        "threshold": c.threshold,
        "generation": c.generation,
        "expires_unix": c.expires_unix,
        "new_threshold": (!c.custodians.is_empty()).then_some(c.new_threshold),
        "custodians": c.custodians.iter().map(|k| json!({"name": k.name, "recipient": k.recipient})).collect::<Vec<_>>(),
    })
}

fn pending_text(set: &v1::PendingShareSet, dir: Option<&Path>) -> String {
    let whom: Vec<&str> = set.shares.iter().map(|s| s.name.as_str()).collect();
    let place = match dir {
        Some(dir) => format!("written to {}", dir.display()),
        None => "fetch them with `vaultctl ceremony status --share-dir DIR`".to_owned(),
    };
    format!(
        "pending share set, generation {} ({} of {}), encrypted to {}: {place}; it is in force \
         once a verify-rekey ceremony collects {} of the new shares",
        set.generation,
        set.threshold,
        set.shares.len(),
        whom.join(", "),
        set.threshold
    )
}

fn pending_json(set: &v1::PendingShareSet, files: &[PathBuf]) -> serde_json::Value {
    json!({
        "generation": set.generation,
        "threshold": set.threshold,
        "custodians": set.shares.iter().map(|s| json!({"name": s.name, "recipient": s.recipient})).collect::<Vec<_>>(),
        "share_files": files,
    })
}

fn prepare_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::invalid(format!("cannot create {}: {e}", dir.display())))
}

/// Writes each custodian's age file as `share-<name>.age` (mode 0600), keeping any
/// file already there: the files are ciphertext and can be fetched again.
fn write_files(set: &v1::PendingShareSet, dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    prepare_dir(dir)?;
    let mut written = Vec::new();
    for share in &set.shares {
        // vaultd checked the name (a-z, 0-9, '-', '_'); checked again before it names a file.
        if !custodians::valid_name(&share.name) {
            return Err(CliError::invalid(format!(
                "vaultd named a custodian {:?}, which cannot name a file",
                share.name
            )));
        }
        let path = dir.join(format!("share-{}.age", share.name));
        match vault_pki::write_private(&path, &share.sealed) {
            Ok(()) => written.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if std::fs::read(&path).ok().as_deref() != Some(share.sealed.as_slice()) {
                    return Err(CliError::invalid(format!(
                        "{} exists and differs from the pending set's file",
                        path.display()
                    ))
                    .hint("use a new --share-dir"));
                }
                written.push(path);
            }
            Err(e) => {
                return Err(CliError::invalid(format!(
                    "cannot write {}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(written)
}
