//! Writing the CA directory's files: keys and certificates once (never overwritten),
//! the revocation list and the CRL by atomic replacement, under a lock.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::PkiError;

/// Writes `contents` to a new file at `path` with mode 0600. Refuses to overwrite.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_new(path, contents, 0o600)
}

/// Writes a public file (certificate, CA) with mode 0644. Refuses to overwrite.
pub fn write_public(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_new(path, contents, 0o644)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

pub(crate) fn io_error(
    doing: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_path_buf();
    move |source| PkiError::Io {
        doing,
        path,
        source,
    }
}

/// Replaces `path` with `contents` (mode `mode`) so that a reader sees the old file or
/// the new one, whole, and a crash leaves one of them: written to a temporary file
/// beside it, synced, renamed over it, and the directory synced.
pub(crate) fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover of a process that had this id and crashed: ours to remove.
    let _ = std::fs::remove_file(&temporary);
    let written = write_new(&temporary, contents, mode)
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| File::open(&dir)?.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(io_error("write", path))
}

/// An exclusive lock on a CA directory's revocation state, held until dropped, so two
/// `vaultctl pki revoke` at once cannot lose each other's entries.
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Waits for the lock file `name` in `dir` (created 0600 if missing).
    pub(crate) fn acquire(dir: &Path, name: &str) -> Result<Self, PkiError> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_error("open", &path))?;
        file.lock().map_err(io_error("lock", &path))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_files_are_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_private(&path, b"k").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(write_private(&path, b"other").is_err());
        assert!(write_public(&path, b"other").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"k");
    }

    #[test]
    fn replacing_leaves_the_new_file_whole_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crl.pem");
        replace(&path, b"one", 0o644).unwrap();
        replace(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["crl.pem"], "no temporary file is left behind");
        let missing = dir.path().join("no-such-dir").join("crl.pem");
        let error = replace(&missing, b"x", 0o644).unwrap_err();
        assert!(error.to_string().contains("no-such-dir"), "{error}");
    }
}
