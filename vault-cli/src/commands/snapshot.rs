//! `vaultctl snapshot save FILE`: a backup of vaultd's whole store, verified before it is
//! kept. Restoring is offline, on the node's host (`vaultd snapshot restore`), because it
//! replaces the data file of a stopped node: vaultctl never touches a node's files.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;
use vault_client::{Client, SavedSnapshot, SnapshotError};

use crate::error::{CliError, Exit};
use crate::output::Output;

/// How a snapshot comes back.
const RESTORE: &str = "\
Restoring is offline, on the node's host, with vaultd stopped:
  vaultd snapshot verify FILE
  vaultd snapshot restore FILE --config /etc/vaultd/vaultd.toml
then start vaultd and unseal it with the shares of the snapshot's share-set generation.";

/// Snapshots of vaultd's store, for backup and disaster recovery.
#[derive(Subcommand, Debug)]
#[command(after_help = RESTORE)]
pub(crate) enum SnapshotCommand {
    /// Saves a snapshot of the whole store (one consistent view, taken while writes go
    /// on) to a new file, mode 0600, kept only once its SHA-256 verified. It holds
    /// ciphertext and metadata, as the data file does: store it apart from the unseal
    /// shares. Needs the `snapshot.save` permission; works while vaultd is sealed.
    #[command(after_help = RESTORE)]
    Save {
        /// The new file (an existing one is never replaced).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub(crate) async fn run(
    client: &Client,
    command: &SnapshotCommand,
    out: Output,
) -> Result<(), CliError> {
    match command {
        SnapshotCommand::Save { file } => {
            let saved = client.save_snapshot(file).await.map_err(cli_error)?;
            out.emit(|| saved_text(&saved), || saved_json(&saved));
            Ok(())
        }
    }
}

fn saved_text(saved: &SavedSnapshot) -> String {
    let info = &saved.info;
    format!(
        "saved {}: {} records of vault {} ({} bytes)\n\
         sha256 {}\n\
         restoring it needs shares of share-set generation {} ({} of {}); root-key version {}\n\
         keep it apart from the unseal shares; restore with `vaultd snapshot restore`",
        saved.path.display(),
        info.records,
        info.vault_id,
        saved.bytes,
        vault_crypto::hex::encode(&saved.sha256).as_str(),
        info.generation,
        info.threshold,
        info.share_count,
        info.root_version,
    )
}

fn saved_json(saved: &SavedSnapshot) -> serde_json::Value {
    let info = &saved.info;
    json!({
        "file": saved.path,
        "bytes": saved.bytes,
        "sha256": vault_crypto::hex::encode(&saved.sha256).as_str(),
        "vault_id": info.vault_id,
        "created_unix": info.created_unix,
        "records": info.records,
        "root_version": info.root_version,
        "generation": info.generation,
        "threshold": info.threshold,
        "share_count": info.share_count,
    })
}

/// What to do about a snapshot that was not saved.
fn cli_error(error: SnapshotError) -> CliError {
    match error {
        SnapshotError::Vault(e) => CliError::from(e),
        e @ SnapshotError::Exists { .. } => CliError::invalid(e.to_string())
            .hint("choose a new file name: snapshots are never written over a file"),
        e @ SnapshotError::File { .. } => CliError::new(Exit::Failure, e.to_string())
            .hint("check the directory's space and permissions, then take the snapshot again"),
        e => CliError::new(Exit::Failure, e.to_string())
            .hint("nothing was kept: take the snapshot again"),
    }
}
