//! The embedded store: one redb file, durable commits, and a group committer.
//!
//! # Durability
//!
//! Every write transaction commits with [`Durability::Immediate`] and quick-repair, which makes
//! redb commit in two phases (data and commit slot fsynced, then the slot switch fsynced). A
//! write is acknowledged only after that commit returns, so an acknowledged write survives a
//! crash or power loss, and reopening after a crash loads the saved allocator state instead of
//! walking the whole file.
//!
//! # Group commit
//!
//! redb runs one write transaction at a time, and each durable commit costs fsyncs, so one
//! commit per caller would cap throughput at the disk's fsync rate. Instead one committer thread
//! owns the write side. Callers hand it their [`Transaction`] and block for the answer. The
//! committer takes one request, drains up to [`MAX_GROUP`] − 1 more that are already queued, and
//! applies them in arrival order inside one write transaction: each request's conditions are
//! checked against the state left by the requests before it, and a request whose conditions fail
//! is answered [`StoreError::Conflict`] with none of its writes applied, while the others go on.
//! One durable commit then covers the whole group, and only after it returns is each caller
//! answered. If that commit fails, every request of the group gets the error and none of them
//! was written.
//!
//! Reads do not queue: they open a read transaction on the caller's thread and see the last
//! committed snapshot.
//!
//! # The file
//!
//! A new data file is created with mode 0600 before redb writes its first byte (redb
//! initialises an empty file as a new database), so no other user can ever read it. It
//! holds two tables: `vaultd_records` (the records) and `vaultd_meta` (the vault's
//! identity, drawn when the file is created). [`Store::view`] is one read transaction
//! over both: what a snapshot streams.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use ::redb::backends::FileBackend;
use ::redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, TableHandle, WriteTransaction,
};

use super::snapshot::{META_TABLE, RECORDS_TABLE, TABLES, WriteError};
use super::{
    Condition, EntryVisitor, Store, StoreError, StoreView, StoredValue, TableInfo, Transaction,
    VaultId, Write, files,
};

/// The records: key bytes to stored-value bytes.
pub(crate) const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new(RECORDS_TABLE);

/// Facts about the file itself (its vault's identity), never a record.
pub(crate) const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new(META_TABLE);

/// The key of the vault's identity in [`META`].
pub(crate) const VAULT_ID_KEY: &[u8] = b"vault-id";

/// The most transactions one durable commit covers.
pub const MAX_GROUP: usize = 256;

/// A [`Store`] kept in one redb file, with durable group commits.
///
/// See the [module documentation](self) for the durability guarantee and how concurrent writes
/// share one commit. Dropping the store finishes every queued write, stops the committer thread
/// and closes the file.
pub struct RedbStore {
    db: Arc<Database>,
    vault_id: VaultId,
    stats: Arc<Counters>,
    /// `None` only while dropping.
    committer: Option<Committer>,
}

/// Counts of the committer's work since the store was opened, for metrics and benchmarks.
///
/// `transactions / commits` is the mean group size: how many acknowledged transactions shared
/// one fsynced commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Durable commits that succeeded.
    pub commits: u64,
    /// Transactions answered by those commits, applied or refused with a conflict.
    pub transactions: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    transactions: AtomicU64,
}

struct Committer {
    requests: mpsc::Sender<CommitRequest>,
    thread: JoinHandle<()>,
}

struct CommitRequest {
    txn: Transaction,
    reply: mpsc::SyncSender<Result<(), StoreError>>,
}

impl CommitRequest {
    fn answer(self, outcome: Result<(), StoreError>) {
        // The caller only goes away by panicking while it waits; nobody is left to tell.
        let _ = self.reply.send(outcome);
    }
}

impl RedbStore {
    /// Opens the database file at `path`, creating it (mode 0600) if it does not exist, and
    /// starts the committer thread. A new file gets a new vault identity.
    ///
    /// A file that is not a redb database is refused with [`StoreError::Open`]. A file another
    /// process (or another `RedbStore`) has open is refused too. An existing file that other
    /// users may read or write is opened, with a warning in the log.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_writable(path)
    }

    /// Checks that the existing data file at `path` would open, without changing it:
    /// a redb file, not held by another process, and not in need of the repair that
    /// opening it for writing would do (start vaultd once to let it recover).
    pub fn check_existing(path: &Path) -> Result<(), StoreError> {
        Database::builder()
            .open_read_only(path)
            .map(drop)
            .map_err(StoreError::from)
    }

    fn open_writable(path: &Path) -> Result<Self, StoreError> {
        let file = match files::create_private(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| StoreError::File(Arc::new(e)))?,
            Err(e) => return Err(StoreError::File(Arc::new(e))),
        };
        if files::is_shared(&file).unwrap_or(false) {
            tracing::warn!(
                "the data file {} can be read or written by other users; \
                 make it private with `chmod 600`",
                path.display()
            );
        }
        let db = Database::builder().create_with_backend(FileBackend::new(file)?)?;
        // Create the tables up front, so a read never meets a missing table, and give a
        // new file its identity.
        let init = begin_durable_write(&db)?;
        init.open_table(RECORDS)?;
        let vault_id = {
            let mut meta = init.open_table(META)?;
            let stored = meta
                .get(VAULT_ID_KEY)?
                .map(|guard| VaultId::from_bytes(guard.value()));
            match stored {
                Some(Some(id)) => id,
                Some(None) => return Err(StoreError::Meta("the vault id is not 16 bytes")),
                None => {
                    let id = VaultId::generate()?;
                    meta.insert(VAULT_ID_KEY, id.as_bytes().as_slice())?;
                    id
                }
            }
        };
        init.commit()?;

        let db = Arc::new(db);
        let stats = Arc::new(Counters::default());
        let (requests, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vaultd-store-commit".to_owned())
            .spawn({
                let db = Arc::clone(&db);
                let stats = Arc::clone(&stats);
                move || run_committer(&db, &stats, &queue)
            })
            .map_err(|source| StoreError::SpawnCommitter(Arc::new(source)))?;
        Ok(Self {
            db,
            vault_id,
            stats,
            committer: Some(Committer { requests, thread }),
        })
    }

    /// The vault this file belongs to.
    pub fn vault_id(&self) -> VaultId {
        self.vault_id
    }

    /// How many durable commits the committer made, and how many transactions they answered.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            transactions: self.stats.transactions.load(Ordering::Relaxed),
        }
    }
}

impl Store for RedbStore {
    fn get(&self, key: &[u8]) -> Result<Option<StoredValue>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(RECORDS)?;
        let value = table.get(key)?;
        Ok(value.map(|guard| StoredValue::from_encoded_record(guard.value().to_vec())))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, StoredValue)>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(RECORDS)?;
        let mut entries = Vec::new();
        // Keys sort bytewise, so the matches are one run starting at `prefix`.
        for entry in table.range::<&[u8]>(prefix..)? {
            let (key, value) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            entries.push((
                key.to_vec(),
                StoredValue::from_encoded_record(value.value().to_vec()),
            ));
        }
        Ok(entries)
    }

    fn transact(&self, txn: Transaction) -> Result<(), StoreError> {
        let committer = self.committer.as_ref().ok_or(StoreError::Closed)?;
        if txn.conditions().is_empty() && txn.writes().is_empty() {
            // Notices alone: one node holds the file and has acted on them itself.
            return Ok(());
        }
        let (reply, answer) = mpsc::sync_channel(1);
        committer
            .requests
            .send(CommitRequest { txn, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn view(&self) -> Result<Box<dyn StoreView>, StoreError> {
        Ok(Box::new(RedbView {
            read: self.db.begin_read()?,
            vault_id: self.vault_id,
        }))
    }
}

/// One read transaction over every table: a consistent view while writes go on.
struct RedbView {
    read: ReadTransaction,
    vault_id: VaultId,
}

impl StoreView for RedbView {
    fn vault_id(&self) -> VaultId {
        self.vault_id
    }

    fn get(&self, key: &[u8]) -> Result<Option<StoredValue>, StoreError> {
        let table = self.read.open_table(RECORDS)?;
        let value = table.get(key)?;
        Ok(value.map(|guard| StoredValue::from_encoded_record(guard.value().to_vec())))
    }

    fn tables(&self) -> Result<Vec<TableInfo>, StoreError> {
        if self.read.list_multimap_tables()?.next().is_some() {
            return Err(StoreError::Snapshot(
                "the data file holds a multimap table, which this vaultd never writes",
            ));
        }
        let mut tables = Vec::with_capacity(TABLES.len());
        for handle in self.read.list_tables()? {
            let name = TABLES.iter().find(|known| **known == handle.name()).ok_or(
                StoreError::Snapshot("the data file holds a table this vaultd does not know"),
            )?;
            let entries = self.read.open_table(table(name))?.len()?;
            tables.push(TableInfo { name, entries });
        }
        tables.sort_by_key(|t| t.name);
        Ok(tables)
    }

    fn visit(&self, table_name: &str, visit: &mut EntryVisitor<'_>) -> Result<(), WriteError> {
        let table = self
            .read
            .open_table(table(table_name))
            .map_err(StoreError::from)?;
        for entry in table.iter().map_err(StoreError::from)? {
            let (key, value) = entry.map_err(StoreError::from)?;
            visit(key.value(), value.value())?;
        }
        Ok(())
    }
}

/// The definition of table `name`: every table maps key bytes to value bytes.
pub(crate) fn table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Some(Committer { requests, thread }) = self.committer.take() {
            // Closing the queue lets the committer drain what is queued, then return.
            drop(requests);
            // A join error carries the committer's panic payload; a destructor cannot report it,
            // and every queued caller has already been answered `Closed`.
            let _ = thread.join();
        }
    }
}

/// The committer thread: one group per loop, until the store is dropped and the queue is empty.
fn run_committer(db: &Database, stats: &Counters, queue: &mpsc::Receiver<CommitRequest>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        commit_group(db, stats, group);
    }
}

/// How one attempt at committing a group ended.
enum Attempt {
    /// Committed durably; one outcome per request, in order.
    Committed(Vec<Result<(), StoreError>>),
    /// Applying the request at `index` failed in the engine; nothing was committed.
    RequestFailed { index: usize, error: StoreError },
    /// The write transaction could not begin or commit; nothing was committed.
    GroupFailed(StoreError),
}

/// Commits `group` in one durable write transaction and answers every request.
///
/// A request whose writes fail in the engine (say, a value too large) is answered with that error
/// and the rest of the group is retried without it, so one bad request cannot fail its
/// neighbours. Each retry drops a request, so this ends.
fn commit_group(db: &Database, stats: &Counters, mut group: Vec<CommitRequest>) {
    while !group.is_empty() {
        match attempt(db, &group) {
            Attempt::Committed(outcomes) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats
                    .transactions
                    .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
                // One outcome per request by construction; a request left without one would
                // see its reply channel close and report `Closed`, never a false success.
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    request.answer(outcome);
                }
                return;
            }
            Attempt::RequestFailed { index, error } => {
                let mut failed = None;
                let mut rest = Vec::with_capacity(group.len());
                for (position, request) in group.into_iter().enumerate() {
                    if position == index {
                        failed = Some(request);
                    } else {
                        rest.push(request);
                    }
                }
                group = rest;
                match failed {
                    Some(request) => request.answer(Err(error)),
                    None => {
                        // Unreachable by construction; refuse the group rather than loop.
                        answer_all(group, &error);
                        return;
                    }
                }
            }
            Attempt::GroupFailed(error) => {
                answer_all(group, &error);
                return;
            }
        }
    }
}

fn answer_all(group: Vec<CommitRequest>, error: &StoreError) {
    for request in group {
        request.answer(Err(error.clone()));
    }
}

/// One write transaction over the whole group: apply each request in order, commit once.
fn attempt(db: &Database, group: &[CommitRequest]) -> Attempt {
    let write = match begin_durable_write(db) {
        Ok(write) => write,
        Err(error) => return Attempt::GroupFailed(error),
    };
    let applied = match write.open_table(RECORDS) {
        Ok(mut table) => apply_group(&mut table, group),
        Err(error) => Err(GroupApplyError::Table(error.into())),
    };
    match applied {
        Ok(outcomes) => match write.commit() {
            Ok(()) => Attempt::Committed(outcomes),
            Err(error) => Attempt::GroupFailed(error.into()),
        },
        Err(failure) => {
            // Roll back the partial writes. If rollback fails, redb refuses the next write
            // transaction, and that error reaches the callers.
            let _ = write.abort();
            match failure {
                GroupApplyError::Table(error) => Attempt::GroupFailed(error),
                GroupApplyError::Request { index, error } => Attempt::RequestFailed {
                    index,
                    error: error.into(),
                },
            }
        }
    }
}

enum GroupApplyError {
    Table(StoreError),
    Request {
        index: usize,
        error: ::redb::StorageError,
    },
}

fn apply_group(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    group: &[CommitRequest],
) -> Result<Vec<Result<(), StoreError>>, GroupApplyError> {
    let mut outcomes = Vec::with_capacity(group.len());
    for (index, request) in group.iter().enumerate() {
        let outcome = apply(table, &request.txn)
            .map_err(|error| GroupApplyError::Request { index, error })?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Checks `txn`'s conditions against the table as it stands (including earlier requests of the
/// group) and, only if all hold, applies its writes.
///
/// The outer error is an engine failure that may have left some writes applied, so the caller
/// must abort the write transaction; the inner one is a clean conflict with nothing written.
fn apply(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    txn: &Transaction,
) -> Result<Result<(), StoreError>, ::redb::StorageError> {
    if let Some(key) = first_failing_condition(table, txn.conditions())? {
        return Ok(Err(StoreError::Conflict { key }));
    }
    for write in txn.writes() {
        match write {
            Write::Put { key, value } => {
                table.insert(key.as_slice(), value.as_bytes())?;
            }
            Write::Delete { key } => {
                table.remove(key.as_slice())?;
            }
        }
    }
    Ok(Ok(()))
}

fn first_failing_condition(
    table: &Table<'_, &'static [u8], &'static [u8]>,
    conditions: &[Condition],
) -> Result<Option<Vec<u8>>, ::redb::StorageError> {
    for condition in conditions {
        let current = table.get(condition.key())?;
        if !condition.holds(current.as_ref().map(|guard| guard.value())) {
            return Ok(Some(condition.key().to_vec()));
        }
    }
    Ok(None)
}

/// A write transaction that is acknowledged only once fsynced, and commits in two phases with
/// the allocator state saved so a crash never forces a full-file repair.
fn begin_durable_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut write = db.begin_write()?;
    write.set_durability(Durability::Immediate)?;
    write.set_quick_repair(true);
    Ok(write)
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::storage::conformance::{Harness, conformance_tests, value};

    fn open_temp() -> (tempfile::TempDir, std::path::PathBuf, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.redb");
        let store = RedbStore::open(&path).unwrap();
        (dir, path, store)
    }

    /// A redb file in a temporary directory.
    struct Redb {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        store: Option<Arc<dyn Store>>,
    }

    fn redb() -> Redb {
        let (dir, path, store) = open_temp();
        Redb {
            _dir: dir,
            path,
            store: Some(Arc::new(store)),
        }
    }

    impl Harness for Redb {
        fn store(&self) -> Arc<dyn Store> {
            Arc::clone(self.store.as_ref().unwrap())
        }

        fn reopen(&mut self) {
            drop(self.store.take());
            self.store = Some(Arc::new(RedbStore::open(&self.path).unwrap()));
        }
    }

    conformance_tests!(redb());

    /// A request sent straight to `commit_group`, and the channel its answer arrives on.
    fn request(txn: Transaction) -> (CommitRequest, mpsc::Receiver<Result<(), StoreError>>) {
        let (reply, answer) = mpsc::sync_channel(1);
        (CommitRequest { txn, reply }, answer)
    }

    #[test]
    fn a_conflict_in_a_group_spares_the_others() {
        let (_dir, _path, store) = open_temp();
        store.put(b"existing", value(b"e")).unwrap();
        let before = store.commit_stats();

        // Each request sees the state left by those before it in the same group.
        let (create, create_answer) = request(
            Transaction::new()
                .require_absent("k")
                .put("k", value(b"v1")),
        );
        let (duplicate, duplicate_answer) = request(
            Transaction::new()
                .require_absent("k")
                .put("k", value(b"dup"))
                .put("dup-marker", value(b"x")),
        );
        let (update, update_answer) = request(
            Transaction::new()
                .require_eq("k", value(b"v1"))
                .put("k", value(b"v2")),
        );
        let (remove, remove_answer) = request(
            Transaction::new()
                .require_present("existing")
                .delete("existing"),
        );
        commit_group(
            &store.db,
            &store.stats,
            vec![create, duplicate, update, remove],
        );

        assert!(create_answer.recv().unwrap().is_ok());
        assert!(matches!(
            duplicate_answer.recv().unwrap(),
            Err(StoreError::Conflict { key }) if key == b"k"
        ));
        assert!(update_answer.recv().unwrap().is_ok());
        assert!(remove_answer.recv().unwrap().is_ok());

        assert_eq!(store.get(b"k").unwrap(), Some(value(b"v2")));
        assert_eq!(store.get(b"dup-marker").unwrap(), None);
        assert_eq!(store.get(b"existing").unwrap(), None);
        let after = store.commit_stats();
        assert_eq!(
            after.commits - before.commits,
            1,
            "one durable commit for the group"
        );
        assert_eq!(after.transactions - before.transactions, 4);
    }

    #[test]
    fn concurrent_writers_share_commits() {
        let (_dir, _path, store) = open_temp();
        let store = Arc::new(store);
        let before = store.commit_stats();

        // Hold the write lock so the callers pile up in the queue behind it.
        let blocker = store.db.begin_write().unwrap();
        let writers: Vec<_> = (0..16u8)
            .map(|n| {
                let store = Arc::clone(&store);
                thread::spawn(move || store.put(&[b'w', n], value(&[n])))
            })
            .collect();
        thread::sleep(Duration::from_millis(300));
        blocker.abort().unwrap();
        for writer in writers {
            writer.join().unwrap().unwrap();
        }

        for n in 0..16u8 {
            assert_eq!(store.get(&[b'w', n]).unwrap(), Some(value(&[n])));
        }
        let after = store.commit_stats();
        assert_eq!(after.transactions - before.transactions, 16);
        // Without grouping this would be 16 commits; with it, about 2.
        assert!(
            after.commits - before.commits < 16,
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn a_new_data_file_is_private_from_its_first_byte_and_keeps_its_vault_id() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, path, store) = open_temp();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let id = store.vault_id();
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.vault_id(), id, "the identity is kept in the file");
        let (_other_dir, _, other) = open_temp();
        assert_ne!(other.vault_id(), id, "each new file is a new vault");
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused() {
        let (_dir, path, _store) = open_temp();
        assert!(matches!(RedbStore::open(&path), Err(StoreError::Open(_))));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-db");
        std::fs::write(
            &path,
            b"certainly not a redb file, just some bytes ".repeat(200),
        )
        .unwrap();
        assert!(matches!(RedbStore::open(&path), Err(StoreError::Open(_))));
    }

    #[test]
    fn store_is_shareable_across_threads() {
        fn assert_store<T: Store>() {}
        assert_store::<RedbStore>();
    }
}
