//! Files and directories vaultd creates for its data: private to its user from the
//! first byte. A mode given at creation (`O_CREAT | O_EXCL` with mode 0600, `mkdir`
//! with 0700) leaves no moment in which another user could open them, as a `chmod`
//! after the fact would; the umask can only take bits away.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Data files (the store, snapshots being restored): read and write for vaultd's user
/// only.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Directories vaultd creates for its data: vaultd's user only.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Creates `path`, which must not exist (a file or a symbolic link already there is an
/// `AlreadyExists` error, never followed), open for reading and writing, mode 0600.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates directory `path` and any missing parents with mode 0700. Directories that
/// already exist keep their mode: they are the operator's.
pub(crate) fn create_private_dirs(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Whether `file` can be read or written by users other than its owner.
pub(crate) fn is_shared(file: &File) -> io::Result<bool> {
    Ok(file.metadata()?.permissions().mode() & 0o077 != 0)
}

/// Makes a rename or link in `dir` durable: fsyncs the directory itself.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn files_are_created_0600_and_never_over_an_existing_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let file = create_private(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(!is_shared(&file).unwrap());
        assert_eq!(
            create_private(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert_eq!(
            create_private(&link).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(
            !dir.path().join("elsewhere").exists(),
            "the link was not followed"
        );
    }

    #[test]
    fn directories_are_created_0700_and_existing_ones_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_private_dirs(&nested).unwrap();
        for path in [dir.path().join("a"), nested] {
            assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o700);
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        create_private_dirs(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(dir.path()).unwrap().mode() & 0o777, 0o750);
    }
}
