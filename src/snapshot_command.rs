//! `vaultd snapshot verify|restore` (part of the `vaultd` binary, not the library):
//! the offline half of backups, run on a node's host with vaultd stopped. Taking a
//! snapshot is online (`vaultctl snapshot save`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use vaultd::config::Config;
use vaultd::storage::snapshot::{
    Previous, RestoreError, RestoreOptions, Verified, restore, verify,
};

use crate::EXIT_CONFIG;

/// Exit code for a snapshot that is not valid (sysexits' EX_DATAERR).
const EXIT_INVALID: u8 = 65;

/// The last second RFC 3339 can show (9999-12-31T23:59:59Z).
const LAST_RFC3339: u64 = 253_402_300_799;

/// Exit codes of `vaultd snapshot`, for its help.
const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   refused or failed: the message says why (the data file is in use, holds another
      vault, or could not be written); the data file is as it was
  2   bad usage
  65  the snapshot is not valid (damaged, truncated, altered): nothing was written
  78  the configuration file does not load";

/// Snapshots, offline. Take one with `vaultctl snapshot save FILE` (online, needs
/// the `snapshot.save` permission).
#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Reads a snapshot whole, checks its format and SHA-256, and prints what it
    /// holds. Writes nothing.
    #[command(after_help = EXIT_CODES)]
    Verify {
        /// The snapshot file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Restores a snapshot into the data file of a stopped or new node. The snapshot
    /// is checked whole first; the data file is replaced only by a complete new one.
    /// A data file of another vault, or one in use, is refused. The node then starts
    /// sealed: custodians unseal it with shares of the snapshot's share-set generation.
    #[command(after_help = EXIT_CODES)]
    Restore {
        /// The snapshot file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Where the data file is.
        #[command(flatten)]
        target: Target,
        /// Roll back a data file that already holds this vault, initialised. Writes
        /// made since the snapshot are lost; tenants erased, API keys revoked and
        /// secret versions rotated out or disabled since come back.
        #[arg(long)]
        replace: bool,
    },
}

/// Where the data file is: the node's configuration names it, or its path is given.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct Target {
    /// The node's configuration file: its `storage.path` is the data file.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data file itself.
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
}

impl SnapshotCommand {
    /// Runs the command, printing what it did (stdout) or why not (stderr).
    pub(crate) fn run(&self) -> ExitCode {
        match self {
            SnapshotCommand::Verify { file } => run_verify(file),
            SnapshotCommand::Restore {
                file,
                target,
                replace,
            } => {
                let data = match (&target.config, &target.data) {
                    (_, Some(data)) => data.clone(),
                    (Some(file), None) => match Config::load(file) {
                        Ok(config) => match config.storage.redb_path() {
                            Some(path) => path.clone(),
                            None => {
                                eprintln!(
                                    "vaultd: {} keeps its records in PostgreSQL; restore \
                                     PostgreSQL's own backup instead (a snapshot restores \
                                     into a redb file only: give --data)",
                                    file.display()
                                );
                                return ExitCode::from(EXIT_CONFIG);
                            }
                        },
                        Err(e) => {
                            eprintln!("vaultd: invalid configuration: {e}");
                            return ExitCode::from(EXIT_CONFIG);
                        }
                    },
                    (None, None) => {
                        eprintln!("vaultd: give --config or --data");
                        return ExitCode::from(2);
                    }
                };
                run_restore(file, &data, *replace)
            }
        }
    }
}

fn run_verify(file: &Path) -> ExitCode {
    let opened = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vaultd: cannot open the snapshot {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match verify(std::io::BufReader::with_capacity(256 * 1024, opened)) {
        Ok(verified) => {
            println!("{}: valid snapshot", file.display());
            println!("{}", describe(&verified));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vaultd: {}: {e}", file.display());
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// What a restore brings back, and what to do about it before serving: everything
/// undone since the snapshot was taken is in force again.
const ROLLED_BACK: &str = "\
Everything undone after the snapshot was taken is back; before serving:
  - tenants erased since are back: erase them again (the audit log's erasure receipts list them);
  - API keys revoked since work again: revoke them again (`vaultctl apikey revoke`);
  - secrets rotated since are back at the version that was current then, and secret versions \
disabled since hold their values again: rotate those secrets again.";

fn run_restore(file: &Path, data: &Path, replace: bool) -> ExitCode {
    match restore(file, data, RestoreOptions { replace }) {
        Ok(restored) => {
            let before = match restored.previous {
                Previous::Nothing => "a new data file",
                Previous::Uninitialised => "the data file of a node never initialised",
                Previous::SameVault => "the data file, rolled back",
            };
            println!(
                "restored {} into {} ({before})",
                file.display(),
                data.display()
            );
            println!("{}", describe(&restored.snapshot));
            println!(
                "start vaultd on it: it starts sealed, and custodians unseal it with shares of \
                 share-set generation {}.\n{ROLLED_BACK}",
                restored.snapshot.header.seal.generation
            );
            ExitCode::SUCCESS
        }
        Err(e @ RestoreError::Snapshot { .. }) => {
            eprintln!("vaultd: {e}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => {
            eprintln!("vaultd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a verified snapshot holds, in a few lines.
fn describe(verified: &Verified) -> String {
    let header = &verified.header;
    // humantime fails (and `to_string` would panic) past the year 9999.
    let taken = match header.created_unix {
        secs @ 0..=LAST_RFC3339 => {
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .to_string()
        }
        secs => format!("Unix time {secs}"),
    };
    format!(
        "  vault      {}\n  taken      {}\n  records    {} in {} tables\n  \
         root key   version {}\n  shares     generation {}, {} of {}\n  \
         size       {} bytes\n  sha256     {}",
        header.vault_id,
        taken,
        header.records,
        header.tables,
        header.seal.root_version,
        header.seal.generation,
        header.seal.threshold,
        header.seal.shares,
        verified.bytes,
        vault_crypto::hex::encode(&verified.digest).as_str(),
    )
}
