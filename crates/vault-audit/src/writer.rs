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
//! - any other write error, and any sync error, fails the sink for good: after a
//!   failed `fsync` nothing is known about what reached the disk.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::chain::Chain;
use crate::event::Event;
use crate::keys::ChainKeys;
use crate::options::FsyncPolicy;

/// Where a request's outcome goes: a value, or why the sink could not take it.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, &'static str>>;

/// The most bytes handed to one `write`.
pub(crate) const MAX_WRITE: usize = 1 << 20;

const LOW_SPACE: &str = "the audit log's disk has less free space than audit.min_free";
const DISK_FULL: &str = "the audit log's disk is full (the partial write was undone)";

/// What callers ask of the writer.
pub(crate) enum Request {
    // Boxed: the bounded queue preallocates a slot per request.
    Append(Box<Event>, Reply<u64>),
    Checkpoint(Reply<bool>),
}

/// Why the sink failed for good: a reason for callers, and the cause for the operator.
struct Failure {
    reason: &'static str,
    cause: String,
}

/// State the writer shares with the handles.
pub(crate) struct Health {
    failure: OnceLock<Failure>,
    appended: AtomicU64,
    /// Milliseconds since `epoch` (plus one) at which the current write began; 0 when idle.
    busy_since: AtomicU64,
    epoch: Instant,
    /// Free bytes on the log's filesystem when last checked; `u64::MAX` if never
    /// checked (not a regular file).
    free_bytes: AtomicU64,
    /// The last batch was refused for lack of space.
    low_space: AtomicBool,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            failure: OnceLock::new(),
            appended: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            epoch: Instant::now(),
            free_bytes: AtomicU64::new(u64::MAX),
            low_space: AtomicBool::new(false),
        }
    }

    /// Why the sink failed, if it has; a failed sink stays failed.
    pub(crate) fn failure(&self) -> Option<&'static str> {
        self.failure.get().map(|f| f.reason)
    }

    /// The failure with its cause, for the operator's log.
    pub(crate) fn failure_detail(&self) -> Option<String> {
        self.failure
            .get()
            .map(|f| format!("{}: {}", f.reason, f.cause))
    }

    /// Events written since open.
    pub(crate) fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    pub(crate) fn free_bytes(&self) -> Option<u64> {
        Some(self.free_bytes.load(Ordering::Relaxed)).filter(|&free| free != u64::MAX)
    }

    pub(crate) fn low_space(&self) -> bool {
        self.low_space.load(Ordering::Relaxed)
    }

    /// Not failed, not short of space, and not stuck in a write for longer than
    /// `deadline`.
    pub(crate) fn is_healthy(&self, deadline: Duration) -> bool {
        let since = self.busy_since.load(Ordering::Relaxed);
        let stuck = since != 0 && self.now_ms().saturating_sub(since) > millis(deadline);
        self.failure().is_none() && !stuck && !self.low_space()
    }

    fn fail(&self, reason: &'static str, cause: &io::Error) {
        // The first failure is the one worth reporting.
        let _ = self.failure.set(Failure {
            reason,
            cause: cause.to_string(),
        });
    }

    fn set_busy(&self, busy: bool) {
        let value = if busy { self.now_ms() } else { 0 };
        self.busy_since.store(value, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed()).saturating_add(1)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The writer and everything it owns.
pub(crate) struct Writer {
    pub(crate) file: File,
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
        }
        if self.health.failure().is_none()
            && self.chain.unsigned() > 0
            && self.check_space().is_ok()
            && let Some(line) = self.chain.checkpoint(&*self.keys)
        {
            self.batch_start = self.len;
            let _ = self.write(&line);
        }
        if self.health.failure().is_none() && self.durable {
            let _ = self.sync();
        }
    }

    /// The next request; under group commit, syncs when the interval runs out first.
    fn next(&mut self, requests: &Receiver<Request>) -> Option<Request> {
        loop {
            let (FsyncPolicy::Group(interval), Some(since)) = (self.fsync, self.unsynced) else {
                return requests.recv().ok();
            };
            match requests.recv_timeout(interval.saturating_sub(since.elapsed())) {
                Ok(request) => return Some(request),
                Err(RecvTimeoutError::Timeout) => {
                    self.unsynced = None;
                    let _ = self.sync();
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn commit(&mut self, batch: impl Iterator<Item = Request>) {
        let mut batch = batch.fuse();
        if let Err(reason) = self
            .health
            .failure()
            .map_or_else(|| self.check_space(), Err)
        {
            return batch.for_each(|request| refuse(request, reason));
        }
        let undo = (self.chain.clone(), self.len);
        self.batch_start = self.len;
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
                if reason == DISK_FULL {
                    self.chain = undo.0;
                }
                pending.into_iter().for_each(|p| p.answer(Some(reason)));
                batch.for_each(|request| refuse(request, reason));
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

    /// Marks the sink failed for good and says why in words an operator can act on.
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

fn refuse(request: Request, reason: &'static str) {
    match request {
        Request::Append(_, reply) => send(reply, Err(reason)),
        Request::Checkpoint(reply) => send(reply, Err(reason)),
    }
}
