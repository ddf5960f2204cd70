//! How the audit log is written: what the daemon's configuration sets.

use std::time::Duration;

/// When written records are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before answering each batch: nothing is lost on power loss.
    Always,
    /// Answer once written; `fdatasync` at most this often. A process crash loses
    /// nothing; a power loss may lose up to this interval.
    Group(Duration),
}

/// How the audit log is written.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// This node's name, written into every record.
    pub node: String,
    /// When records are synced to disk.
    pub fsync: FsyncPolicy,
    /// How long an append may take before the request fails with
    /// [`AuditError::Unavailable`](crate::AuditError::Unavailable).
    pub write_deadline: Duration,
    /// Records between automatic signed checkpoints (0: only on request and at shutdown).
    pub checkpoint_every: u64,
    /// Requests that may wait for the writer (at least 1).
    pub queue: usize,
    /// Free bytes the log's filesystem must keep: below this, appends are refused
    /// (before anything is written) until space is freed. 0 disables the check.
    pub min_free: u64,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            node: "vaultd".to_owned(),
            fsync: FsyncPolicy::Always,
            write_deadline: Duration::from_secs(2),
            checkpoint_every: 1000,
            queue: 4096,
            min_free: 64 << 20,
        }
    }
}
