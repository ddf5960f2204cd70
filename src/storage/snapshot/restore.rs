//! Restoring a snapshot into a new data file, offline: see [`restore`].

use std::fs::File;
use std::io::{BufReader, ErrorKind};
use std::path::{Path, PathBuf};

use ::redb::backends::FileBackend;
use ::redb::{Database, DatabaseError, Durability, ReadOnlyDatabase, ReadableDatabase, TableError};

use super::{Item, META_TABLE, RECORDS_TABLE, Reader, SnapshotError, Verified};
use crate::records::SEAL_KEY;
use crate::storage::redb::{META, RECORDS, VAULT_ID_KEY, table};
use crate::storage::{StoreError, VaultId, files};

/// How a restore may treat an existing data file.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Replace a data file that holds the snapshot's own vault, initialised (a
    /// rollback). Without it, such a file is refused.
    pub replace: bool,
}

/// What the target held before the restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// No file (or an empty one).
    Nothing,
    /// A data file of a vault that was never initialised: a new node.
    Uninitialised,
    /// A data file of the snapshot's own vault, now rolled back to the snapshot.
    SameVault,
}

/// A finished restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The snapshot restored.
    pub snapshot: Verified,
    /// What the target held before.
    pub previous: Previous,
}

/// Why a restore did not happen. In every case the target is as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The snapshot could not be opened.
    #[error("cannot open the snapshot {}: {source}", path.display())]
    OpenSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot is not valid: nothing was written.
    #[error("{}: {source}; nothing was written: use another copy of the snapshot", path.display())]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: SnapshotError,
    },
    /// The snapshot changed between the check and the restore.
    #[error(
        "{} changed while it was being restored; nothing was kept: copy it somewhere no one \
         writes, and restore again",
        path.display()
    )]
    Changed {
        /// The snapshot file.
        path: PathBuf,
    },
    /// The target is held open by another process.
    #[error(
        "{} is in use by another process (a running vaultd?): stop vaultd on this node, then \
         restore",
        path.display()
    )]
    InUse {
        /// The data file.
        path: PathBuf,
    },
    /// The target exists but is no data file vaultd can read.
    #[error(
        "{} exists but is not a vaultd data file ({reason}): move it away, or restore to \
         another path",
        path.display()
    )]
    NotADataFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The target holds another vault.
    #[error(
        "{} holds vault {holds}, but the snapshot is of vault {snapshot}: a snapshot is \
         restored only over its own vault's data file or into a new node; restore to a new \
         path, or move that file away if its vault is to be given up",
        path.display()
    )]
    OtherVault {
        /// The data file.
        path: PathBuf,
        /// The vault it holds (`unknown` when the file records none).
        holds: String,
        /// The snapshot's vault.
        snapshot: VaultId,
    },
    /// The target holds the snapshot's vault, initialised, and replacing was not asked.
    #[error(
        "{} already holds vault {vault}, initialised: pass --replace to roll it back to the \
         snapshot (writes since the snapshot are lost, and tenants erased, API keys revoked \
         and secret versions rotated out or disabled since come back)",
        path.display()
    )]
    Initialised {
        /// The data file.
        path: PathBuf,
        /// Its vault.
        vault: VaultId,
    },
    /// A file operation failed.
    #[error("cannot {doing} {}: {source}", path.display())]
    Io {
        /// What was being done.
        doing: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the new data file failed.
    #[error("writing the new data file {} failed: {source}", path.display())]
    Store {
        /// The new file.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// Restores the snapshot at `snapshot` into the data file at `target`:
///
/// 1. The whole snapshot is read and its checksum checked before anything is written.
/// 2. The target is looked at: a missing (or empty) file, or one holding a vault that
///    was never initialised, is a new node and takes any valid snapshot. A file holding
///    the same vault is replaced only when asked ([`RestoreOptions::replace`]: a
///    rollback). A file of another vault, or one some process holds open (a running
///    vaultd), is refused.
/// 3. The records go into a new file next to the target (mode 0600, its directory
///    created 0700 if missing, one durable commit), read from the snapshot again and
///    checked against the same checksum; only then is it renamed over the target and
///    the directory fsynced. Any failure leaves the target as it was and removes the
///    new file.
pub fn restore(
    snapshot: &Path,
    target: &Path,
    options: RestoreOptions,
) -> Result<Restored, RestoreError> {
    let checked = check(snapshot)?;
    let vault = checked.header.vault_id;
    let (held, previous) = match inspect(target)? {
        None => (None, Previous::Nothing),
        Some((db, existing)) => {
            let previous = match existing {
                Existing::Uninitialised => Previous::Uninitialised,
                Existing::Vault(id) if id == vault && options.replace => Previous::SameVault,
                Existing::Vault(id) if id == vault => {
                    return Err(RestoreError::Initialised {
                        path: target.to_path_buf(),
                        vault,
                    });
                }
                Existing::Vault(id) => {
                    return Err(RestoreError::OtherVault {
                        path: target.to_path_buf(),
                        holds: id.to_string(),
                        snapshot: vault,
                    });
                }
                Existing::Unknown => {
                    return Err(RestoreError::OtherVault {
                        path: target.to_path_buf(),
                        holds: "unknown".to_owned(),
                        snapshot: vault,
                    });
                }
            };
            (Some(db), previous)
        }
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| RestoreError::NotADataFile {
            path: target.to_path_buf(),
            reason: "the path names no file".to_owned(),
        })?
        .to_string_lossy()
        .into_owned();
    files::create_private_dirs(&dir).map_err(io("create the directory", &dir))?;
    let mut suffix = [0u8; 6];
    vault_crypto::aead::random_bytes(&mut suffix).map_err(|_| RestoreError::Store {
        path: dir.clone(),
        source: StoreError::Random,
    })?;
    let temp = Temporary(Some(dir.join(format!(
        ".{name}.restore-{}",
        vault_crypto::hex::encode(&suffix).as_str()
    ))));
    let written = write_new(snapshot, temp.path())?;
    if written.digest != checked.digest {
        return Err(RestoreError::Changed {
            path: snapshot.to_path_buf(),
        });
    }
    // The new file belongs to whoever owned the one it replaces (vaultd's user), not
    // to whoever runs the restore: otherwise vaultd could not open it.
    if let Ok(replaced) = std::fs::metadata(target) {
        use std::os::unix::fs::MetadataExt;
        let new = File::open(temp.path()).map_err(io("open", temp.path()))?;
        std::os::unix::fs::fchown(&new, Some(replaced.uid()), Some(replaced.gid()))
            .map_err(io("give the new data file the owner of", target))?;
    }
    std::fs::rename(temp.path(), target).map_err(io("rename the new data file onto", target))?;
    temp.kept();
    files::sync_dir(&dir).map_err(io("fsync the directory", &dir))?;
    // Held until the new file is in place, so no vaultd opened the old one meanwhile.
    drop(held);
    Ok(Restored {
        snapshot: checked,
        previous,
    })
}

/// Reads the whole snapshot, checks the checksum and that it holds what a restored
/// vault needs (the seal record, the vault's identity); writes nothing.
fn check(path: &Path) -> Result<Verified, RestoreError> {
    let invalid = |source| RestoreError::Snapshot {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = Reader::open(open_snapshot(path)?).map_err(invalid)?;
    let (mut table, mut sealed, mut identified) = (None, false, false);
    while let Some(item) = reader.next_item().map_err(invalid)? {
        match item {
            Item::Table { name, .. } => table = Some(name),
            Item::Entry { key, value } => match table {
                Some(RECORDS_TABLE) if key == SEAL_KEY => sealed = true,
                Some(META_TABLE) if key == VAULT_ID_KEY => {
                    identified = VaultId::from_bytes(&value) == Some(reader.header().vault_id);
                }
                _ => {}
            },
        }
    }
    let verified = reader.finish().map_err(invalid)?;
    if !sealed {
        return Err(invalid(SnapshotError::Malformed(
            "it holds no seal record, so it is not of an initialised vault",
        )));
    }
    if !identified {
        return Err(invalid(SnapshotError::Malformed(
            "its vault id is missing or differs from its header's",
        )));
    }
    Ok(verified)
}

fn open_snapshot(path: &Path) -> Result<BufReader<File>, RestoreError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(256 * 1024, f))
        .map_err(|source| RestoreError::OpenSnapshot {
            path: path.to_path_buf(),
            source,
        })
}

/// What an existing data file holds.
enum Existing {
    /// No seal record: never initialised.
    Uninitialised,
    /// An initialised vault.
    Vault(VaultId),
    /// An initialised vault whose file records no identity.
    Unknown,
}

/// Opens the target if there is one (holding it, so no vaultd starts on it during the
/// restore) and says what it holds.
fn inspect(target: &Path) -> Result<Option<(ReadOnlyDatabase, Existing)>, RestoreError> {
    let not_data = |reason: String| RestoreError::NotADataFile {
        path: target.to_path_buf(),
        reason,
    };
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("look at", target)(e)),
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(not_data(
                "a symbolic link; give the path it points to".to_owned(),
            ));
        }
        Ok(meta) if !meta.is_file() => return Err(not_data("not a regular file".to_owned())),
        Ok(meta) if meta.len() == 0 => return Ok(None),
        Ok(_) => {}
    }
    // Read-only: a file that needs repair is refused rather than repaired, and
    // nothing is written to a target the restore may still refuse.
    let db = match Database::builder().open_read_only(target) {
        Ok(db) => db,
        Err(DatabaseError::DatabaseAlreadyOpen) => {
            return Err(RestoreError::InUse {
                path: target.to_path_buf(),
            });
        }
        Err(e) => return Err(not_data(e.to_string())),
    };
    let store_error = |source: StoreError| RestoreError::Store {
        path: target.to_path_buf(),
        source,
    };
    let read = db
        .begin_read()
        .map_err(|e| store_error(StoreError::from(e)))?;
    let sealed = match read.open_table(RECORDS) {
        Ok(records) => records
            .get(SEAL_KEY)
            .map_err(|e| store_error(e.into()))?
            .is_some(),
        Err(TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(store_error(e.into())),
    };
    let id = match read.open_table(META) {
        Ok(meta) => meta
            .get(VAULT_ID_KEY)
            .map_err(|e| store_error(e.into()))?
            .and_then(|guard| VaultId::from_bytes(guard.value())),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(store_error(e.into())),
    };
    drop(read);
    let existing = match (sealed, id) {
        (false, _) => Existing::Uninitialised,
        (true, Some(id)) => Existing::Vault(id),
        (true, None) => Existing::Unknown,
    };
    Ok(Some((db, existing)))
}

/// Writes every table of the snapshot into a new data file at `path` in one durable
/// commit; returns the snapshot as read this second time.
fn write_new(snapshot: &Path, path: &Path) -> Result<Verified, RestoreError> {
    let store_error = |source: StoreError| RestoreError::Store {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |source| RestoreError::Snapshot {
        path: snapshot.to_path_buf(),
        source,
    };
    let file = files::create_private(path).map_err(io("create", path))?;
    let db = FileBackend::new(file)
        .and_then(|backend| Database::builder().create_with_backend(backend))
        .map_err(|e| store_error(e.into()))?;
    let mut write = db.begin_write().map_err(|e| store_error(e.into()))?;
    write
        .set_durability(Durability::Immediate)
        .map_err(|e| store_error(e.into()))?;
    write.set_quick_repair(true);
    let mut reader = Reader::open(open_snapshot(snapshot)?).map_err(invalid)?;
    {
        let mut current = None;
        while let Some(item) = reader.next_item().map_err(invalid)? {
            match item {
                Item::Table { name, .. } => {
                    // The previous table is closed before the next opens.
                    drop(current.take());
                    current = Some(
                        write
                            .open_table(table(name))
                            .map_err(|e| store_error(e.into()))?,
                    );
                }
                Item::Entry { key, value } => {
                    let table = current.as_mut().ok_or(invalid(SnapshotError::Malformed(
                        "an entry outside any table",
                    )))?;
                    table
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(|e| store_error(e.into()))?;
                }
            }
        }
    }
    let verified = reader.finish().map_err(invalid)?;
    write.commit().map_err(|e| store_error(e.into()))?;
    drop(db);
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", path))?;
    Ok(verified)
}

fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        doing,
        path: path.to_path_buf(),
        source,
    }
}

/// A new file removed when dropped, unless kept.
struct Temporary(Option<PathBuf>);

impl Temporary {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn kept(mut self) {
        self.0 = None;
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Best effort: a leftover `.restore-…` file is inert, and named for what it is.
            let _ = std::fs::remove_file(path);
        }
    }
}
