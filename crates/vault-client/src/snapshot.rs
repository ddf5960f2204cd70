//! Backups: [`Client::save_snapshot`] streams vaultd's `Snapshot` (the whole store in
//! one consistent view: ciphertext and metadata, never a value in clear) into a new
//! file, and keeps it only once its checksum verified.
//!
//! The file is written under a temporary name in the same directory, created with
//! mode 0600, fsynced, and linked to its name only when whole and verified; a file
//! already there is never replaced. Restoring is offline, on a node's host:
//! `vaultd snapshot restore`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};
use vault_proto::v1;
use vault_proto::v1::admin_client::AdminClient;

use crate::client::Client;
use crate::endpoints::Retry;
use crate::error::Error;

/// How every snapshot begins (vaultd's `storage::snapshot::MAGIC`).
const MAGIC: &[u8; 8] = b"VAULTSNP";

/// How the trailer begins; the SHA-256 of every byte before it follows.
const TRAILER_TAG: &[u8; 8] = b"SHA-256:";

/// The trailer: its tag and 32 bytes of SHA-256.
const TRAILER_LEN: usize = 40;

/// The largest chunk vaultd sends; a larger one is not from a vaultd.
const MAX_CHUNK: usize = 64 * 1024;

/// A snapshot saved to a file.
#[derive(Debug, Clone)]
pub struct SavedSnapshot {
    /// Where it was saved.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, as its trailer says and its bytes confirmed.
    pub sha256: [u8; 32],
    /// What it holds, as vaultd described it: the vault, its root-key version and share
    /// set, the record count.
    pub info: v1::SnapshotInfo,
}

/// Why a snapshot was not saved. The file asked for is never left half-written: it
/// exists only if the whole snapshot verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// vaultd refused or failed (no permission, another snapshot under way, ...).
    #[error(transparent)]
    Vault(#[from] Error),
    /// A file is already there.
    #[error("{} already exists: a snapshot never replaces a file", path.display())]
    Exists {
        /// The path asked for.
        path: PathBuf,
    },
    /// Writing the file failed.
    #[error("cannot {doing} {}: {source}", path.display())]
    File {
        /// What was being done.
        doing: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The stream ended without the trailer: vaultd stopped, or the stream was cut.
    #[error(
        "the snapshot stream ended before its checksum (vaultd stopped, or the stream was cut); nothing was saved"
    )]
    Incomplete,
    /// The bytes received do not hash to the checksum in the trailer.
    #[error("the snapshot's bytes do not match its checksum; nothing was saved")]
    Checksum,
    /// What came back is not a snapshot.
    #[error("vaultd's answer is not a snapshot: {0}")]
    NotASnapshot(&'static str),
}

impl Client {
    /// Saves a snapshot of vaultd's whole store to `path`, which must not exist. Needs
    /// the `snapshot.save` permission; vaultd serves it sealed too. The snapshot holds
    /// what the data file holds (ciphertext and metadata): keep it apart from the
    /// unseal shares.
    pub async fn save_snapshot(&self, path: &Path) -> Result<SavedSnapshot, SnapshotError> {
        let mut file = SnapshotFile::create(path)?;
        let mut stream = self
            .inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(AdminClient::new(a.channel)
                    .snapshot(v1::SnapshotRequest {})
                    .await?
                    .into_inner())
            })
            .await?;
        let mut info = None;
        while let Some(chunk) = stream.message().await.map_err(Error::from)? {
            if chunk.data.is_empty() || chunk.data.len() > MAX_CHUNK {
                return Err(SnapshotError::NotASnapshot(
                    "a chunk is empty or larger than 64 KiB",
                ));
            }
            if info.is_none() {
                info = chunk.info;
            }
            file = blocking(move || file.append(&chunk.data).map(|()| file)).await?;
        }
        let info = info.ok_or(SnapshotError::NotASnapshot(
            "no chunk described the snapshot",
        ))?;
        let (bytes, sha256) = blocking(move || file.keep()).await?;
        Ok(SavedSnapshot {
            path: path.to_path_buf(),
            bytes,
            sha256,
            info,
        })
    }
}

/// Runs file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| {
        Err(SnapshotError::File {
            doing: "write",
            path: PathBuf::from("the snapshot"),
            source: std::io::Error::other("the writing thread failed"),
        })
    })
}

/// A snapshot being written: a temporary file beside the one asked for, removed unless
/// it is kept.
struct SnapshotFile {
    /// The path asked for.
    path: PathBuf,
    /// The temporary file, while it exists.
    temp: Option<(PathBuf, File)>,
    check: Check,
}

impl SnapshotFile {
    /// Refuses a path that exists; creates the temporary file (mode 0600, never over
    /// anything) in the same directory.
    fn create(path: &Path) -> Result<Self, SnapshotError> {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(SnapshotError::Exists {
                path: path.to_path_buf(),
            });
        }
        let name = path
            .file_name()
            .ok_or_else(|| SnapshotError::File {
                doing: "write a snapshot to",
                path: path.to_path_buf(),
                source: std::io::Error::other("the path names no file"),
            })?
            .to_string_lossy()
            .into_owned();
        let mut suffix = [0u8; 6];
        vault_crypto::aead::random_bytes(&mut suffix).map_err(|source| Error::LocalCrypto {
            doing: "draw a temporary file name",
            source,
        })?;
        let temp = path.with_file_name(format!(
            ".{name}.partial-{}",
            vault_crypto::hex::encode(&suffix).as_str()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|source| SnapshotError::File {
                doing: "create",
                path: temp.clone(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            temp: Some((temp, file)),
            check: Check::new(),
        })
    }

    fn append(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        let Some((temp, file)) = self.temp.as_mut() else {
            return Err(SnapshotError::Incomplete);
        };
        file.write_all(data).map_err(|source| SnapshotError::File {
            doing: "write",
            path: temp.clone(),
            source,
        })?;
        self.check.update(data);
        Ok(())
    }

    /// Checks the trailer, fsyncs, and links the file to its name (refused if a file
    /// appeared there meanwhile); the temporary name goes. Returns the size and digest.
    fn keep(mut self) -> Result<(u64, [u8; 32]), SnapshotError> {
        let check = std::mem::replace(&mut self.check, Check::new());
        let (bytes, digest) = check.finish()?;
        let Some((temp, file)) = self.temp.take() else {
            return Err(SnapshotError::Incomplete);
        };
        let fail = |doing: &'static str, path: &Path, source| SnapshotError::File {
            doing,
            path: path.to_path_buf(),
            source,
        };
        let synced = file.sync_all();
        drop(file);
        let result = synced.map_err(|e| fail("fsync", &temp, e)).and_then(|()| {
            std::fs::hard_link(&temp, &self.path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    SnapshotError::Exists {
                        path: self.path.clone(),
                    }
                } else {
                    fail("link the verified snapshot to", &self.path, e)
                }
            })
        });
        let removed = std::fs::remove_file(&temp);
        result?;
        removed.map_err(|e| fail("remove", &temp, e))?;
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("fsync the directory", dir, e))?;
        Ok((bytes, digest))
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if let Some((temp, file)) = self.temp.take() {
            drop(file);
            // Best effort: a leftover `.…partial-…` file is inert, and named for what it is.
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// The checks on the bytes as they arrive: the magic, and the SHA-256 of everything
/// but the last 40 bytes, which must be the trailer.
struct Check {
    context: Context,
    /// The last bytes seen, not yet hashed: at most the trailer's length once a chunk
    /// has been taken in.
    held: Vec<u8>,
    /// The first bytes, to compare with the magic.
    start: Vec<u8>,
    bytes: u64,
}

impl Check {
    fn new() -> Self {
        Self {
            context: Context::new(&SHA256),
            held: Vec::with_capacity(MAX_CHUNK + TRAILER_LEN),
            start: Vec::with_capacity(MAGIC.len()),
            bytes: 0,
        }
    }

    fn update(&mut self, data: &[u8]) {
        let wanted = MAGIC.len().saturating_sub(self.start.len());
        self.start
            .extend_from_slice(data.get(..wanted.min(data.len())).unwrap_or_default());
        self.bytes += data.len() as u64;
        self.held.extend_from_slice(data);
        if self.held.len() > TRAILER_LEN {
            let tail = self.held.split_off(self.held.len() - TRAILER_LEN);
            self.context.update(&self.held);
            self.held = tail;
        }
    }

    /// The size and digest, if the bytes were a whole snapshot.
    fn finish(self) -> Result<(u64, [u8; 32]), SnapshotError> {
        if self.start.as_slice() != MAGIC {
            return Err(SnapshotError::NotASnapshot(
                "it does not begin with the snapshot magic",
            ));
        }
        let Some((tag, stored)) = self.held.split_first_chunk::<8>() else {
            return Err(SnapshotError::Incomplete);
        };
        if tag != TRAILER_TAG || stored.len() != TRAILER_LEN - TRAILER_TAG.len() {
            return Err(SnapshotError::Incomplete);
        }
        let digest = self.context.finish();
        if digest.as_ref() != stored {
            return Err(SnapshotError::Checksum);
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(stored);
        Ok((self.bytes, sha256))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// A snapshot-shaped byte string: magic, a body, and a good trailer.
    fn snapshot(body: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(body);
        let digest = ring::digest::digest(&SHA256, &bytes);
        bytes.extend_from_slice(TRAILER_TAG);
        bytes.extend_from_slice(digest.as_ref());
        bytes
    }

    fn save(path: &Path, bytes: &[u8], chunk: usize) -> Result<(u64, [u8; 32]), SnapshotError> {
        let mut file = SnapshotFile::create(path)?;
        for piece in bytes.chunks(chunk) {
            file.append(piece)?;
        }
        file.keep()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_verified_snapshot_is_kept_0600_under_its_name_whatever_the_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = snapshot(&[5; 1000]);
        for chunk in [1, 7, 40, 41, 1000, MAX_CHUNK] {
            let path = dir.path().join(format!("s-{chunk}.vsnap"));
            let (size, digest) = save(&path, &bytes, chunk).unwrap();
            assert_eq!(size, bytes.len() as u64);
            assert_eq!(digest.as_slice(), &bytes[bytes.len() - 32..]);
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
            assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        }
        assert!(
            names(dir.path()).iter().all(|n| !n.starts_with('.')),
            "no temporary file is left: {:?}",
            names(dir.path())
        );
    }

    #[test]
    fn damaged_cut_or_foreign_bytes_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.vsnap");
        let good = snapshot(&[5; 200]);
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        assert!(matches!(
            save(&path, &flipped, 64),
            Err(SnapshotError::Checksum)
        ));
        assert!(matches!(
            save(&path, &good[..good.len() - 1], 64),
            Err(SnapshotError::Incomplete)
        ));
        assert!(matches!(
            save(&path, &good[..30], 64),
            Err(SnapshotError::Incomplete)
        ));
        let mut foreign = good.clone();
        foreign[0] = b'X';
        assert!(matches!(
            save(&path, &foreign, 64),
            Err(SnapshotError::NotASnapshot(_))
        ));
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }

    /// Against the real `vaultd` over mutual TLS: a backup identity saves a verified
    /// snapshot; a second save to the same path and an identity without the permission
    /// are refused, and neither leaves a file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_is_saved_from_a_real_daemon_and_refused_without_the_permission() {
        use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
        use vault_testkit::process::VaultProcess;

        const BACKUP: &str = "spiffe://billing.example/svc/backup";
        let mut fixture = Fixture::new(&FixtureOptions {
            policies: vec![(
                "backup.toml".to_owned(),
                format!(
                    "[[role]]\nid = \"backup\"\nidentities = [\"{BACKUP}\"]\n\
                     permissions = [\"status\", \"snapshot.save\"]\n"
                ),
            )],
            ..FixtureOptions::default()
        });
        let process = VaultProcess::start(&fixture);
        let mut client = |identity: &str| {
            let files = fixture.client_files(identity);
            Client::builder()
                .endpoint(format!("https://localhost:{}", process.grpc.port()))
                .ca_cert(files.ca)
                .client_cert(files.cert, files.key)
                .build()
                .unwrap()
        };
        let (operator, backup, outsider) = (
            client(OPERATOR),
            client(BACKUP),
            client("spiffe://billing.example/svc/outsider"),
        );
        let share = operator.init(1, 1).await.unwrap().pop().unwrap();
        operator.unseal(&share, None).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.vsnap");
        let saved = backup.save_snapshot(&path).await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(saved.bytes, bytes.len() as u64);
        assert_eq!(saved.sha256.as_slice(), &bytes[bytes.len() - 32..]);
        assert_eq!((saved.info.generation, saved.info.threshold), (1, 1));
        assert!(saved.info.records >= 5, "{:?}", saved.info);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

        assert!(matches!(
            backup.save_snapshot(&path).await,
            Err(SnapshotError::Exists { .. })
        ));
        let other = dir.path().join("other.vsnap");
        assert!(matches!(
            outsider.save_snapshot(&other).await,
            Err(SnapshotError::Vault(Error::PermissionDenied { .. }))
        ));
        assert_eq!(names(dir.path()), ["vault.vsnap"]);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn an_existing_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.vsnap");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            SnapshotFile::create(&path),
            Err(SnapshotError::Exists { .. })
        ));
        // One that appears while the snapshot streams is not replaced either.
        let other = dir.path().join("t.vsnap");
        let mut file = SnapshotFile::create(&other).unwrap();
        file.append(&snapshot(b"body")).unwrap();
        std::fs::write(&other, b"arrived meanwhile").unwrap();
        assert!(matches!(file.keep(), Err(SnapshotError::Exists { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        assert_eq!(std::fs::read(&other).unwrap(), b"arrived meanwhile");
        assert_eq!(names(dir.path()), ["s.vsnap", "t.vsnap"]);
    }
}
