//! The writer thread: it owns the file, drains queued requests, writes them, syncs
//! according to the policy, and only then answers (group commit).
//!
//! Fail closed, and bounded:
//! - a batch is written in pieces of at most [`MAX_WRITE`] bytes, so a burst of
//!   requests never builds one huge buffer;
//! - before a batch, the free space of the log's filesystem is checked: below
//!   `min_free` the batch is refused with a reason that says so, and nothing is
//!   half-written; the sink recovers by itself once space is freed;
//! - a write that still hits a full disk is undone (the file is cut back to where the
//!   batch began and the chain rewound), its requests refused, and the sink goes on;
//! - any other write error, and any sync error, fails the sink: its requests are
//!   refused (after a failed `fsync` nothing is known about what reached the disk).
//!   A failed sink comes back only by being reopened, into a new file or a FIFO with
//!   a reader: a FIFO whose reader went away is tried again every [`RETRY`] by
//!   itself; a regular file when the operator has moved it aside and reloads. The
//!   reopened log begins with a `continuation` record that names the gap.
//!
//! Reopening (on reload) is also how logs rotate: the file being written is closed
//! with a signed checkpoint, and the chain continues in a new file at the same path.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::chain::Chain;
use crate::error::AuditError;
use crate::event::Event;
use crate::health::Health;
use crate::keys::ChainKeys;
use crate::options::FsyncPolicy;
use crate::tail::sync_parent;

/// Where a request's outcome goes: a value, or why the sink could not take it.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, &'static str>>;

/// The most bytes handed to one `write`.
pub(crate) const MAX_WRITE: usize = 1 << 20;

const LOW_SPACE: &str = "the audit log's disk has less free space than audit.min_free";
const DISK_FULL: &str = "the audit log's disk is full (the partial write was undone)";

/// How often a failed FIFO sink is opened again, to see whether a reader is back.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// What callers ask of the writer.
pub(crate) enum Request {
    // Boxed: the bounded queue preallocates a slot per request.
    Append(Box<Event>, Reply<u64>),
    Checkpoint(Reply<bool>),
    /// Reopen the log's path (reload): answered even while the sink has failed.
    Reopen(oneshot::Sender<Result<Reopened, String>>),
}

/// What reopening the audit log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reopened {
    /// The path still names the log being written, which works: nothing changed.
    Unchanged,
    /// The log continues at the path, in a new file (the old one was moved away, as
    /// rotation does) or a FIFO that has a reader again, from the `continuation`
    /// record with this seq.
    Continued {
        /// The seq of the `continuation` record that begins it.
        seq: u64,
    },
}

impl fmt::Display for Reopened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unchanged => f.write_str("the log in use is still at its path"),
            Self::Continued { seq } => write!(f, "the chain continues at its path from seq {seq}"),
        }
    }
}

/// The writer and everything it owns.
pub(crate) struct Writer {
    /// The log's path, which a reopen opens again.
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// The file's device and inode: whether the path still names it.
    pub(crate) file_id: (u64, u64),
    /// Whether syncing applies: a regular file (a pipe or device cannot be synced).
    pub(crate) durable: bool,
    /// The file's length (regular files), to undo a write cut short by a full disk.
    pub(crate) len: u64,
    /// The length before the batch being written: what an undo cuts back to.
    pub(crate) batch_start: u64,
    /// Below this many free bytes, batches are refused before anything is written.
    pub(crate) min_free: u64,
    pub(crate) chain: Chain,
    pub(crate) keys: Arc<dyn ChainKeys>,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) checkpoint_every: u64,
    pub(crate) batch_limit: usize,
    pub(crate) health: Arc<Health>,
    /// Under group commit, when the oldest write not yet synced was made.
    pub(crate) unsynced: Option<Instant>,
    /// Reopens asked for in the batch being committed, done after it.
    pub(crate) reopens: Vec<oneshot::Sender<Result<Reopened, String>>>,
    /// Bytes of the batch being committed that went out (to a pipe: they cannot be
    /// taken back).
    pub(crate) sent: u64,
}

/// A request whose line is in the batch, waiting for the batch's outcome.
enum Pending {
    Seq(Reply<u64>, u64),
    Flag(Reply<bool>, bool),
}

impl Pending {
    fn answer(self, failure: Option<&'static str>) {
        match self {
            Self::Seq(reply, seq) => send(reply, failure.map_or(Ok(seq), Err)),
            Self::Flag(reply, flag) => send(reply, failure.map_or(Ok(flag), Err)),
        }
    }
}

fn send<T>(reply: Reply<T>, outcome: Result<T, &'static str>) {
    // A caller that gave up waiting has dropped its receiver; nothing to tell it.
    let _ = reply.send(outcome);
}

impl Writer {
    /// Serves requests until every handle is gone, then writes a final checkpoint.
    pub(crate) fn run(mut self, requests: Receiver<Request>) {
        while let Some(first) = self.next(&requests) {
            let batch = std::iter::once(first).chain(requests.try_iter().take(self.batch_limit));
            self.commit(batch);
            for reply in std::mem::take(&mut self.reopens) {
                let _ = reply.send(self.reopen(REOPENED));
            }
        }
        if self.health.failure().is_none() {
            self.close_out();
        }
    }

    /// Signs what the file holds with a final checkpoint (if the key is available)
    /// and syncs it: the file will be written no more.
    fn close_out(&mut self) {
        if self.chain.unsigned() > 0
            && self.check_space().is_ok()
            && let Some(line) = self.chain.checkpoint(&*self.keys)
        {
            self.batch_start = self.len;
            let _ = self.write(&line);
        }
        if self.health.failure().is_none() && self.durable {
            self.unsynced = None;
            let _ = self.sync();
        }
    }

    /// The next request. Under group commit, syncs when the interval runs out
    /// first; while a FIFO sink has failed, opens it again every [`RETRY`].
    fn next(&mut self, requests: &Receiver<Request>) -> Option<Request> {
        loop {
            let sync_in = match (self.fsync, self.unsynced) {
                (FsyncPolicy::Group(interval), Some(since)) => {
                    Some(interval.saturating_sub(since.elapsed()))
                }
                _ => None,
            };
            let retry_in = (!self.durable && self.health.failure().is_some()).then_some(RETRY);
            let Some(wait) = sync_in.into_iter().chain(retry_in).min() else {
                return requests.recv().ok();
            };
            match requests.recv_timeout(wait) {
                Ok(request) => return Some(request),
                Err(RecvTimeoutError::Timeout) => {
                    if sync_in.is_some_and(|left| left <= wait) {
                        self.unsynced = None;
                        let _ = self.sync();
                    }
                    if retry_in.is_some() {
                        // No reader yet is the usual answer: try again later.
                        let _ = self.reopen(READER_BACK);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Opens the log's path again, and continues the chain there if it names a new
    /// file or a FIFO to be opened again; see [`Reopened`]. On error the log in use
    /// stays in use.
    pub(crate) fn reopen(&mut self, why: &str) -> Result<Reopened, String> {
        let failure = self.health.failure_detail();
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.file_id => match &failure {
                None => return Ok(Reopened::Unchanged),
                Some(failure) if self.durable => {
                    return Err(format!(
                        "it failed ({failure}) and cannot be written again in place: move \
                         it aside (keep it for audit verify), then reload; the chain \
                         continues in a new file"
                    ));
                }
                Some(_) => {} // a FIFO whose reader went away: open it again
            },
            Ok(meta) if meta.is_file() && meta.len() > 0 => {
                return Err("the path names another file that is not empty: move that \
                            file away (or back), then reload"
                    .to_owned());
            }
            _ => {}
        }
        let (mut file, regular) = open_file(&self.path, false).map_err(|e| e.to_string())?;
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if regular && meta.len() > 0 {
            return Err("the path names another file that is not empty".to_owned());
        }
        if failure.is_none() {
            self.close_out();
        }
        let mut detail = BTreeMap::from([("reason".to_owned(), why.to_owned())]);
        if let Some(gap) = self.gap() {
            detail.insert("gap".to_owned(), gap);
        }
        let undo = self.chain.clone();
        let (seq, line) = self.chain.continuation(detail, &*self.keys);
        let written = file
            .write_all(line.as_bytes())
            .and_then(|()| match regular {
                true => file.sync_data().and_then(|()| sync_parent(&self.path)),
                false => Ok(()),
            });
        if let Err(e) = written {
            self.chain = undo;
            return Err(format!("the new log could not be written: {e}"));
        }
        self.file = file;
        self.file_id = (meta.dev(), meta.ino());
        self.durable = regular;
        self.len = if regular { line.len() as u64 } else { 0 };
        self.batch_start = self.len;
        self.unsynced = None;
        self.health.recover();
        Ok(Reopened::Continued { seq })
    }

    /// What the `continuation` record says of a failure it ends, if any.
    fn gap(&self) -> Option<String> {
        let failure = self.health.lock();
        let failure = failure.as_ref()?;
        let synced = match self.fsync {
            FsyncPolicy::Always => "none answered unaudited",
            // Answered once written: a failed sync may have lost them from the old file.
            FsyncPolicy::Group(_) => {
                "none answered unaudited, but under fsync = group the records answered \
                 since the last sync may be missing from the failed file"
            }
        };
        Some(format!(
            "the sink had failed ({}: {}); from unix ms {} until this record every \
             request was refused, {synced}",
            failure.reason, failure.cause, failure.since_unix_ms
        ))
    }

    fn commit(&mut self, batch: impl Iterator<Item = Request>) {
        let mut batch = batch.fuse();
        if let Err(reason) = self
            .health
            .failure()
            .map_or_else(|| self.check_space(), Err)
        {
            return batch.for_each(|request| self.refuse(request, reason));
        }
        let undo = (self.chain.clone(), self.len);
        self.batch_start = self.len;
        self.sent = 0;
        let mut lines = String::new();
        let mut pending = Vec::new();
        let mut events = 0u64;
        let mut outcome = Ok(());
        for request in batch.by_ref() {
            match request {
                Request::Append(event, reply) => match self.chain.event(event, &*self.keys) {
                    Ok((seq, line)) => {
                        lines.push_str(&line);
                        pending.push(Pending::Seq(reply, seq));
                        events += 1;
                        if self.checkpoint_every > 0
                            && self.chain.unsigned() >= self.checkpoint_every
                        {
                            lines.extend(self.chain.checkpoint(&*self.keys));
                        }
                    }
                    Err(reason) => send(reply, Err(reason)),
                },
                Request::Checkpoint(reply) => {
                    let line = self.chain.checkpoint(&*self.keys);
                    pending.push(Pending::Flag(reply, line.is_some()));
                    lines.extend(line);
                }
                Request::Reopen(reply) => self.reopens.push(reply),
            }
            if lines.len() >= MAX_WRITE {
                outcome = self.write(&lines);
                lines.clear();
                if outcome.is_err() {
                    break;
                }
            }
        }
        if outcome.is_ok() && !lines.is_empty() {
            outcome = self.write(&lines);
        }
        if outcome.is_ok() && self.durable && self.len != undo.1 {
            match self.fsync {
                FsyncPolicy::Always => outcome = self.sync(),
                FsyncPolicy::Group(interval) => match self.unsynced {
                    Some(since) if since.elapsed() >= interval => {
                        self.unsynced = None;
                        outcome = self.sync();
                    }
                    Some(_) => {}
                    None => self.unsynced = Some(Instant::now()),
                },
            }
        }
        match outcome {
            Ok(()) => {
                self.health.appended.fetch_add(events, Ordering::Relaxed);
                pending.into_iter().for_each(|p| p.answer(None));
            }
            Err(reason) => {
                // Every record of the batch was refused. The chain goes on from the
                // last one answered if the sink holds nothing of the batch (a full
                // disk's write was cut back; other errors are cut back here if the
                // file allows it); otherwise from what the sink may hold, so that a
                // continuation follows the failed file's last line.
                if self.cut_back(undo.1) {
                    self.chain = undo.0;
                }
                pending.into_iter().for_each(|p| p.answer(Some(reason)));
                batch.for_each(|request| self.refuse(request, reason));
            }
        }
    }

    /// Whether the log's filesystem has `min_free` bytes free; records what it found.
    fn check_space(&self) -> Result<(), &'static str> {
        if !self.durable || self.min_free == 0 {
            return Ok(());
        }
        let Ok(stat) = rustix::fs::fstatvfs(&self.file) else {
            return Ok(()); // unknown: the write itself will tell
        };
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        self.health.free_bytes.store(free, Ordering::Relaxed);
        let low = free < self.min_free;
        self.health.low_space.store(low, Ordering::Relaxed);
        if low { Err(LOW_SPACE) } else { Ok(()) }
    }

    fn write(&mut self, lines: &str) -> Result<(), &'static str> {
        self.health.set_busy(true);
        let result = self.file.write_all(lines.as_bytes());
        self.health.set_busy(false);
        match result {
            Ok(()) => {
                self.len += lines.len() as u64;
                self.sent += lines.len() as u64;
                Ok(())
            }
            Err(e) if self.durable && is_space(&e) => self.undo_partial(&e),
            Err(e) => Err(self.failed(&e, "writing the audit log failed")),
        }
    }

    /// Cuts the file back to its length before the batch, after a write ran out of
    /// space; the caller rewinds the chain. Only if that fails is the sink lost.
    fn undo_partial(&mut self, cause: &io::Error) -> Result<(), &'static str> {
        match self.file.set_len(self.batch_start) {
            Ok(()) => {
                self.len = self.batch_start;
                self.health.low_space.store(true, Ordering::Relaxed);
                Err(DISK_FULL)
            }
            Err(_) => Err(self.failed(cause, "the audit log's disk is full")),
        }
    }

    fn sync(&mut self) -> Result<(), &'static str> {
        self.health.set_busy(true);
        let result = self.file.sync_data();
        self.health.set_busy(false);
        result.map_err(|e| self.failed(&e, "syncing the audit log to disk failed"))
    }

    /// Whether the sink holds nothing written since it was `len` long: a file is cut
    /// back to that length (best effort); a pipe or device holds whatever went out.
    fn cut_back(&mut self, len: u64) -> bool {
        if !self.durable {
            return self.sent == 0;
        }
        if self.len == len {
            return true;
        }
        match self.file.set_len(len) {
            Ok(()) => {
                self.len = len;
                true
            }
            Err(_) => false,
        }
    }

    /// Refuses `request` because the sink cannot take it; a reopen still happens.
    fn refuse(&mut self, request: Request, reason: &'static str) {
        match request {
            Request::Append(_, reply) => send(reply, Err(reason)),
            Request::Checkpoint(reply) => send(reply, Err(reason)),
            Request::Reopen(reply) => self.reopens.push(reply),
        }
    }

    /// Marks the sink failed and says why in words an operator can act on.
    fn failed(&self, error: &io::Error, otherwise: &'static str) -> &'static str {
        let reason = match error.kind() {
            _ if is_space(error) => "the audit log's disk is full",
            io::ErrorKind::BrokenPipe => "the audit log's reader has gone away",
            io::ErrorKind::PermissionDenied => "vaultd may no longer write the audit log",
            _ => otherwise,
        };
        self.health.fail(reason, error);
        reason
    }
}

fn is_space(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

/// Why a reload reopens the log, as its `continuation` record says.
const REOPENED: &str = "reopened on reload (log rotation)";
/// Why a failed FIFO sink is opened again.
const READER_BACK: &str = "the audit FIFO has a reader again";

/// Opens the log for appending; reports whether it is a regular file (which is then
/// also readable, for its tail, and locked). With `wait_for_reader`, opening a FIFO
/// waits for its reader; without, it fails at once when there is none.
pub(crate) fn open_file(path: &Path, wait_for_reader: bool) -> Result<(File, bool), AuditError> {
    let io_error = AuditError::open(path);
    let regular = match std::fs::metadata(path) {
        Ok(meta) => meta.is_file(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(io_error(e)),
    };
    let nonblocking = if regular || wait_for_reader {
        0
    } else {
        rustix::fs::OFlags::NONBLOCK.bits() as i32
    };
    // Reading a FIFO would make us its reader, so only a regular file is opened for both.
    let file = OpenOptions::new()
        .append(true)
        .read(regular)
        .create(regular)
        .mode(0o600)
        .custom_flags(nonblocking)
        .open(path)
        .map_err(&io_error)?;
    if nonblocking != 0 {
        // Writes wait for the reader, like a FIFO opened at start.
        let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| io_error(e.into()))?;
        rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| io_error(e.into()))?;
    }
    if file.metadata().map_err(&io_error)?.is_file() != regular {
        return Err(io_error(io::Error::other(
            "the path changed type while it was being opened",
        )));
    }
    if regular {
        // A file made by someone else (logrotate's `create 0644`, say) is made private
        // before vaultd writes a record to it.
        let mode = file.metadata().map_err(&io_error)?.mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(&io_error)?;
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(AuditError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
    }
    Ok((file, regular))
}
