//! The handle the daemon appends through: a bounded queue in front of the writer
//! thread, with a deadline on every answer.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::chain::Chain;
use crate::error::AuditError;
use crate::event::Event;
use crate::health::Health;
use crate::keys::ChainKeys;
use crate::options::AuditOptions;
use crate::record::{MOVED_TO, TORN_BYTES};
use crate::tail::{self, Tail};
use crate::writer::{Reopened, Request, Writer, open_file};

const QUEUE_FULL: &str = "the audit queue is full";
const TOO_SLOW: &str = "the audit write did not complete within the deadline";
const STOPPED: &str = "the audit writer has stopped";
const NEW_LOG: &str = "new audit log";
const NEW_SEGMENT: &str = "not a regular file: every open starts a new chain segment";
const TORN: &str = "a write was cut short (crash or full disk): the torn bytes were moved aside";

/// A handle to the audit log; clones share one writer thread. When the last handle
/// is dropped the writer writes a final checkpoint (if the signing key is available),
/// and the drop waits for it for at most the write deadline.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: std::path::PathBuf,
    requests: SyncSender<Request>,
    health: Arc<Health>,
    deadline: Duration,
    /// Declared after `requests` so it drops after it: the writer sees the queue
    /// close, finishes, and only then is it waited for.
    _exit: WriterExit,
}

/// Waits, boundedly, for the writer thread to finish when the handles are gone, so
/// a log reopened right after is not written by two threads at once.
struct WriterExit {
    exited: Mutex<Receiver<()>>,
    wait: Duration,
}

impl Drop for WriterExit {
    fn drop(&mut self) {
        if let Ok(exited) = self.exited.get_mut() {
            // Disconnected means the writer is done; a timeout means it is stuck in a
            // write, and is left to finish (or fail) on its own.
            let _ = exited.recv_timeout(self.wait);
        }
    }
}

impl AuditLog {
    /// Opens (creating if missing, mode 0600) `path` for appending and starts the
    /// writer thread.
    ///
    /// A regular file is locked against other writers and its last record is read
    /// to continue the chain (seq and chain hash). A torn tail (a partial last line,
    /// or lines that are not records, left by a crash or a full disk) is moved to
    /// `<log>.torn-<unix ms>` next to the log, and a `recovery` record naming it
    /// continues the chain. A last record that parses but does not hash to its chain
    /// value (an edit), or a torn tail over 4 MiB, is [`AuditError::CorruptTail`]:
    /// the operator must look before vaultd starts. An empty file, and any
    /// non-regular file (FIFO, character device), begin a new chain segment with a
    /// `start` record. Opening a FIFO waits for its reader.
    pub fn open(
        path: &Path,
        options: AuditOptions,
        keys: Arc<dyn ChainKeys>,
    ) -> Result<Self, AuditError> {
        let io_error = AuditError::open(path);
        let (mut file, regular) = open_file(path, true)?;
        let meta = file.metadata().map_err(&io_error)?;
        let tail = if regular {
            tail::read(&mut file, path)?
        } else {
            Tail::Empty
        };
        let mut chain = match &tail {
            Tail::Intact(last) => Chain::resume(options.node.clone(), last),
            Tail::Torn(torn) => Chain::resume(options.node.clone(), &torn.last),
            Tail::Empty => Chain::genesis(options.node.clone()),
        };
        let opening = match &tail {
            Tail::Intact(_) => None,
            Tail::Empty => Some(chain.start(if regular { NEW_LOG } else { NEW_SEGMENT }, &*keys)),
            Tail::Torn(torn) => {
                let moved_to = torn.move_aside(&file, path)?;
                let detail = BTreeMap::from([
                    ("reason".to_owned(), TORN.to_owned()),
                    ("line".to_owned(), torn.line.to_string()),
                    (TORN_BYTES.to_owned(), torn.len().to_string()),
                    (MOVED_TO.to_owned(), moved_to),
                ]);
                Some(chain.recovery(detail, &*keys))
            }
        };
        if let Some(line) = opening {
            file.write_all(line.as_bytes()).map_err(&io_error)?;
            if regular {
                file.sync_data().map_err(&io_error)?;
                tail::sync_parent(path).map_err(&io_error)?;
            }
        }
        let len = if regular {
            file.seek(SeekFrom::End(0)).map_err(&io_error)?
        } else {
            0
        };

        let queue = options.queue.max(1);
        let (requests, incoming) = mpsc::sync_channel(queue);
        let (exit_signal, exited) = mpsc::channel::<()>();
        let health = Arc::new(Health::new());
        let writer = Writer {
            path: path.to_owned(),
            file,
            file_id: (meta.dev(), meta.ino()),
            durable: regular,
            len,
            batch_start: len,
            min_free: options.min_free,
            chain,
            keys,
            fsync: options.fsync,
            checkpoint_every: options.checkpoint_every,
            batch_limit: queue,
            health: Arc::clone(&health),
            unsynced: None,
            reopens: Vec::new(),
            sent: 0,
        };
        std::thread::Builder::new()
            .name("vault-audit".to_owned())
            .spawn(move || {
                writer.run(incoming);
                drop(exit_signal);
            })
            .map_err(|source| AuditError::Spawn { source })?;

        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                requests,
                health,
                deadline: options.write_deadline,
                _exit: WriterExit {
                    exited: Mutex::new(exited),
                    wait: options.write_deadline,
                },
            }),
        })
    }

    /// Appends one event and returns its seq once it is written (and synced, under
    /// [`FsyncPolicy::Always`](crate::FsyncPolicy::Always)). Every string field is first cut to
    /// [`MAX_FIELD`](crate::MAX_FIELD) bytes and the detail map to
    /// [`MAX_DETAIL`](crate::MAX_DETAIL) entries, so no input can amplify the log.
    ///
    /// Fails with [`AuditError::Unavailable`] if the queue is full, the sink has
    /// failed, or the write does not complete within the write deadline; it never
    /// waits longer than that. A record whose caller timed out may still be written
    /// later: an over-audit, never an under-audit. Needs a Tokio runtime with its
    /// time driver enabled (for the deadline).
    pub async fn append(&self, event: Event) -> Result<u64, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Append(Box::new(event.bounded()), reply), answer)
            .await
    }

    /// Writes a signed checkpoint now; `Ok(false)` if the signing key is unavailable
    /// (sealed). The same deadline rules as [`AuditLog::append`] apply.
    pub async fn checkpoint(&self) -> Result<bool, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Checkpoint(reply), answer).await
    }

    /// The log's path (read back by searches, never through the writer).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the sink can write: false after a write or sync error (until the log
    /// is reopened: the sink fails closed), while a write has been stuck for longer
    /// than the deadline, and while appends are refused for lack of space.
    pub fn is_healthy(&self) -> bool {
        self.inner.health.is_healthy(self.inner.deadline)
    }

    /// Events written since open, for metrics.
    pub fn appended(&self) -> u64 {
        self.inner.health.appended()
    }

    /// Why the sink failed, with the underlying cause, for the operator's log;
    /// `None` while it works.
    pub fn failure(&self) -> Option<String> {
        self.inner.health.failure_detail()
    }

    /// Free bytes on the log's filesystem when the writer last looked (before each
    /// batch); `None` for a FIFO or device, or before the first batch.
    pub fn free_bytes(&self) -> Option<u64> {
        self.inner.health.free_bytes()
    }

    /// Whether appends are being refused for lack of space (`min_free`, or a full
    /// disk). Clears by itself once a batch finds enough space again.
    pub fn low_space(&self) -> bool {
        self.inner.health.low_space()
    }

    /// Opens the log's path again (on reload), and continues the chain there when it
    /// names a new file — the old one was moved away, as log rotation does — or a
    /// FIFO whose reader went away: the file written until now is closed with a
    /// signed checkpoint (if the key is available), and the new one begins with a
    /// `continuation` record whose `prev` is the last record of the old one, so
    /// `verify` follows the chain across both. A log that failed is written again
    /// only this way (a FIFO is also tried every second by itself), and the
    /// `continuation` record names the gap. Works while the sink has failed; on
    /// error, the log in use stays in use.
    pub async fn reopen(&self) -> Result<Reopened, AuditError> {
        let refused = |reason: String| AuditError::Reopen {
            path: self.inner.path.clone(),
            reason,
        };
        let (reply, answer) = oneshot::channel();
        match self.inner.requests.try_send(Request::Reopen(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(refused(QUEUE_FULL.to_owned())),
            Err(TrySendError::Disconnected(_)) => return Err(refused(STOPPED.to_owned())),
        }
        match tokio::time::timeout(self.inner.deadline, answer).await {
            Ok(Ok(outcome)) => outcome.map_err(refused),
            Ok(Err(_)) => Err(refused(STOPPED.to_owned())),
            Err(_) => Err(refused(TOO_SLOW.to_owned())),
        }
    }

    async fn submit<T>(
        &self,
        request: Request,
        answer: oneshot::Receiver<Result<T, &'static str>>,
    ) -> Result<T, AuditError> {
        let unavailable = |reason| AuditError::Unavailable { reason };
        if let Some(reason) = self.inner.health.failure() {
            return Err(unavailable(reason));
        }
        match self.inner.requests.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(unavailable(QUEUE_FULL)),
            Err(TrySendError::Disconnected(_)) => return Err(unavailable(STOPPED)),
        }
        match tokio::time::timeout(self.inner.deadline, answer).await {
            Ok(Ok(outcome)) => outcome.map_err(unavailable),
            Ok(Err(_)) => Err(unavailable(STOPPED)),
            Err(_) => Err(unavailable(TOO_SLOW)),
        }
    }
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("healthy", &self.is_healthy())
            .field("appended", &self.appended())
            .finish_non_exhaustive()
    }
}
