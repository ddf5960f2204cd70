//! The writer thread: it owns the file, drains queued requests, writes them with one
//! `write_all`, syncs according to the policy, and only then answers (group commit).
//! After any write or sync error it answers every request with an error: fail closed.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::chain::Chain;
use crate::event::Event;
use crate::keys::ChainKeys;
use crate::sink::FsyncPolicy;

/// Where a request's outcome goes: a value, or why the sink could not take it.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, &'static str>>;

/// What callers ask of the writer.
pub(crate) enum Request {
    // Boxed: the bounded queue preallocates a slot per request.
    Append(Box<Event>, Reply<u64>),
    Checkpoint(Reply<bool>),
}

/// State the writer shares with the handles.
pub(crate) struct Health {
    failure: OnceLock<&'static str>,
    appended: AtomicU64,
    /// Milliseconds since `epoch` (plus one) at which the current write began; 0 when idle.
    busy_since: AtomicU64,
    epoch: Instant,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            failure: OnceLock::new(),
            appended: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Why the sink failed, if it has; a failed sink stays failed.
    pub(crate) fn failure(&self) -> Option<&'static str> {
        self.failure.get().copied()
    }

    /// Events written since open.
    pub(crate) fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Not failed, and not stuck in a write for longer than `deadline`.
    pub(crate) fn is_healthy(&self, deadline: Duration) -> bool {
        let since = self.busy_since.load(Ordering::Relaxed);
        let stuck = since != 0 && self.now_ms().saturating_sub(since) > millis(deadline);
        self.failure().is_none() && !stuck
    }

    fn fail(&self, reason: &'static str) {
        // The first failure is the one worth reporting.
        let _ = self.failure.set(reason);
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
            && let Some(line) = self.chain.checkpoint(&*self.keys)
        {
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
        let mut lines = String::new();
        let mut pending = Vec::new();
        let mut events = 0u64;
        for request in batch {
            if let Some(reason) = self.health.failure() {
                refuse(request, reason);
                continue;
            }
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
        }
        if lines.is_empty() {
            return pending.into_iter().for_each(|p| p.answer(None));
        }

        let mut outcome = self.write(&lines);
        if outcome.is_ok() && self.durable {
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
        if outcome.is_ok() {
            self.health.appended.fetch_add(events, Ordering::Relaxed);
        }
        let failure = outcome.err();
        pending.into_iter().for_each(|p| p.answer(failure));
    }

    fn write(&mut self, lines: &str) -> Result<(), &'static str> {
        self.health.set_busy(true);
        let result = self.file.write_all(lines.as_bytes());
        self.health.set_busy(false);
        result.map_err(|e| self.failed(&e, "writing the audit log failed"))
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
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                "the audit log's disk is full"
            }
            io::ErrorKind::BrokenPipe => "the audit log's reader has gone away",
            io::ErrorKind::PermissionDenied => "vaultd may no longer write the audit log",
            _ => otherwise,
        };
        self.health.fail(reason);
        reason
    }
}

fn refuse(request: Request, reason: &'static str) {
    match request {
        Request::Append(_, reply) => send(reply, Err(reason)),
        Request::Checkpoint(reply) => send(reply, Err(reason)),
    }
}
