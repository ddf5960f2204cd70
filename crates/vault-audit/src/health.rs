//! What the writer thread and the handles share about the sink: whether it failed
//! (and why, and since when), whether it is short of space or stuck in a write, and
//! how many records it has written.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why the sink failed: a reason for callers, the cause for the operator, and when.
pub(crate) struct Failure {
    pub(crate) reason: &'static str,
    pub(crate) cause: String,
    pub(crate) since_unix_ms: u64,
}

/// State the writer shares with the handles.
pub(crate) struct Health {
    /// Whether `failure` holds one: read on every append without the lock.
    failed: AtomicBool,
    failure: Mutex<Option<Failure>>,
    pub(crate) appended: AtomicU64,
    /// Milliseconds since `epoch` (plus one) at which the current write began; 0 when idle.
    busy_since: AtomicU64,
    epoch: Instant,
    /// Free bytes on the log's filesystem when last checked; `u64::MAX` if never
    /// checked (not a regular file).
    pub(crate) free_bytes: AtomicU64,
    /// The last batch was refused for lack of space.
    pub(crate) low_space: AtomicBool,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            appended: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            epoch: Instant::now(),
            free_bytes: AtomicU64::new(u64::MAX),
            low_space: AtomicBool::new(false),
        }
    }

    /// Why the sink failed, if it has; it stays failed until it is reopened.
    pub(crate) fn failure(&self) -> Option<&'static str> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.lock().as_ref().map(|f| f.reason)
    }

    /// The failure with its cause, for the operator's log.
    pub(crate) fn failure_detail(&self) -> Option<String> {
        self.lock()
            .as_ref()
            .map(|f| format!("{}: {}", f.reason, f.cause))
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failure>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
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

    pub(crate) fn fail(&self, reason: &'static str, cause: &io::Error) {
        // The first failure is the one worth reporting.
        let mut failure = self.lock();
        if failure.is_none() {
            *failure = Some(Failure {
                reason,
                cause: cause.to_string(),
                since_unix_ms: unix_ms(),
            });
        }
        self.failed.store(true, Ordering::Release);
    }

    /// Clears the failure (the log was reopened); returns it.
    pub(crate) fn recover(&self) -> Option<Failure> {
        let mut failure = self.lock();
        self.failed.store(false, Ordering::Release);
        self.low_space.store(false, Ordering::Relaxed);
        failure.take()
    }

    pub(crate) fn set_busy(&self, busy: bool) {
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}
