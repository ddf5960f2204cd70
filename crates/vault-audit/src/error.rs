//! The one error type of the writing side. Messages say what is wrong and what to
//! do; they never contain record contents.

use std::io;
use std::path::PathBuf;

/// Why the audit log could not be opened or could not take a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The record was not (known to be) written: the request it audits must fail.
    #[error(
        "audit log unavailable: {reason}; the request was refused because it could not be audited"
    )]
    Unavailable {
        /// What went wrong, e.g. "the audit queue is full".
        reason: &'static str,
    },
    /// The log could not be opened, read, or started.
    #[error("cannot open audit log {path}: {source}; check that its directory exists and that vaultd may write there", path = path.display())]
    Open {
        /// The log's path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The log's last line is not an intact record, so the chain cannot continue.
    #[error("audit log {path} ends with a corrupt or partial record at line {line}; run `vaultctl audit verify` on it and move it aside before starting vaultd", path = path.display())]
    CorruptTail {
        /// The log's path.
        path: PathBuf,
        /// The 1-based line number of the bad record.
        line: u64,
    },
    /// A reload could not reopen the log; the log in use before stays in use.
    #[error("cannot reopen audit log {path}: {reason}; the log in use stays in use", path = path.display())]
    Reopen {
        /// The log's path.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Another process holds the log's lock.
    #[error("audit log {path} is locked by another process; stop the other vaultd or give this one its own log", path = path.display())]
    Locked {
        /// The log's path.
        path: PathBuf,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {source}")]
    Spawn {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl AuditError {
    /// Wraps an I/O error met while opening `path`.
    pub(crate) fn open(path: &std::path::Path) -> impl Fn(io::Error) -> Self + '_ {
        move |source| Self::Open {
            path: path.to_owned(),
            source,
        }
    }
}
