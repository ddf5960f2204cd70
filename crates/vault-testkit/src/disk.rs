//! A small, real filesystem that fills up: a tmpfs of a chosen size, mounted on a
//! temporary directory for the life of a [`SmallDisk`]. Tests of what happens when
//! the audit log's disk is full use it, so the kernel, not a mock, says `ENOSPC`.
//! Mounting needs root (as in CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A tmpfs of a fixed size; unmounted on drop.
pub struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` (rounded up to pages by the kernel).
    pub fn mount(bytes: u64) -> Self {
        let dir = TempDir::new().expect("a temporary directory");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a {bytes}-byte tmpfs failed: this test needs root (CAP_SYS_ADMIN)"
        );
        Self { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path on the disk.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fills the disk with a file `name` until writing fails; returns the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.join(name)).expect("create the filler");
        let block = [0u8; 4096];
        let mut written = 0u64;
        while let Ok(n) = file.write(&block) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        written
    }

    /// Removes the file `name` and waits until the kernel reports its space free again
    /// (at most a few seconds: on a loaded machine `statvfs` can lag the unlink), so a
    /// test that then expects room is not at the mercy of that lag.
    pub fn remove(&self, name: &str) {
        let path = self.join(name);
        let size = std::fs::metadata(&path).expect("the file exists").len();
        let before = self.free();
        std::fs::remove_file(&path).expect("remove the file");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.free() < before + size {
            assert!(
                Instant::now() < deadline,
                "5 s after removing a {size}-byte file the disk reports {} bytes free, \
                 {before} before",
                self.free()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Bytes free for an unprivileged writer, as `statvfs` reports them.
    pub fn free(&self) -> u64 {
        let stat = rustix::fs::statvfs(self.path()).expect("statvfs on the disk");
        stat.f_bavail.saturating_mul(stat.f_frsize)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a file still open in the test does not keep the mount alive.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
