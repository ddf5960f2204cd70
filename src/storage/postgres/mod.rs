//! The PostgreSQL engine: the same [`Store`] on a PostgreSQL server. One node holds a
//! database at a time (see `claim`).
//!
//! # Connections
//!
//! TCP with TLS only, through rustls: TLS 1.3, the server's certificate checked against
//! the configured CA alone and its name against the host in the connection string (what
//! libpq calls `sslmode=verify-full`); a client certificate when configured. A connection
//! string that asks for less (`sslmode=disable`), names a Unix socket (PostgreSQL has no
//! TLS there) or carries a password (use `password_file`) is refused. Each connection
//! sets `synchronous_commit = on`, so a commit is acknowledged only once the server (and
//! its synchronous standbys) has it on disk.
//!
//! The client runs on its own small runtime ("vaultd-postgres" threads), so a slow
//! database never holds the gRPC runtime's workers; a caller blocks only its own thread,
//! as it does on redb, for at most `timeout`.
//!
//! # Transactions
//!
//! One [`Store::transact`] is one PostgreSQL transaction that locks every key it reads
//! or writes (transaction-scoped advisory locks, taken in ascending order) before it
//! reads its conditions, then applies what its writes leave and commits: two round
//! trips, pipelined. Transactions on the same key take turns, so exactly one of two
//! conflicting transactions wins and none loses an update; transactions on different
//! keys do not touch each other (see `attempt` for why not SERIALIZABLE). Should
//! PostgreSQL still refuse one for racing another (SQLSTATE 40001, 40P01, 23505), it is
//! run again, conditions re-read, after a jittered backoff, until it commits, a
//! condition fails, or the timeout passes.
//!
//! A connection lost before `COMMIT` was sent is retried on a new one (nothing was
//! written). A connection lost while `COMMIT` was in flight is
//! [`StoreError::Indeterminate`]: the write may or may not be there, and the caller must
//! not report it as done.

mod claim;
mod pool;
mod schema;
mod tls;
mod view;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use zeroize::Zeroizing;

use self::pool::{Conn, Pool};
pub use self::schema::SchemaState;
use super::{Condition, Store, StoreError, StoredValue, Transaction, VaultId, Write};

/// How vaultd reaches PostgreSQL: `[storage.postgres]`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// A libpq connection string (`host=db.internal port=5432 user=vaultd dbname=vaultd`)
    /// or URL, without a password and without `sslmode` (TLS is always required and
    /// verified).
    pub connect: String,
    /// The CA the server's certificate must chain to, PEM.
    pub ca: PathBuf,
    /// A client certificate chain and its key, PEM, for `cert` authentication.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// A file holding the password, for password (SCRAM) authentication.
    pub password_file: Option<PathBuf>,
    /// The most connections this node holds open.
    pub pool_size: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one store operation may take, retries and waiting for a connection
    /// included.
    pub timeout: Duration,
}

/// Shows the database and hosts, not the connect string.
impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("connect", &self.describe())
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field("password_file", &self.password_file)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PostgresSettings {
    /// The database and hosts, for messages; never the connect string, which may hold
    /// a password by mistake.
    pub fn describe(&self) -> String {
        match tokio_postgres::Config::from_str(&self.connect) {
            Ok(config) => {
                let hosts: Vec<String> = config
                    .get_hosts()
                    .iter()
                    .map(|host| match host {
                        Host::Tcp(name) => name.clone(),
                        Host::Unix(path) => path.display().to_string(),
                    })
                    .collect();
                format!(
                    "PostgreSQL database {} on {}",
                    config.get_dbname().unwrap_or("(default)"),
                    hosts.join(",")
                )
            }
            Err(_) => "PostgreSQL (a connect string that does not parse)".to_owned(),
        }
    }

    /// Whether `connect` carries a password (`password=` or a URL's `user:password@`).
    pub fn connect_has_password(connect: &str) -> bool {
        tokio_postgres::Config::from_str(connect).is_ok_and(|c| c.get_password().is_some())
    }
}

/// A [`Store`] on PostgreSQL. See the [module documentation](self).
pub struct PostgresStore {
    engine: Engine,
    vault_id: VaultId,
}

/// The client's runtime and the pool it drives.
struct Engine {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    pool: Pool,
    timeout: Duration,
    /// Set once `open` has taken it; storage operations are refused without it.
    claim: std::sync::OnceLock<claim::Claim>,
}

/// The first backoff before running a transaction again, and the cap.
const BACKOFF_BASE: Duration = Duration::from_millis(2);
const BACKOFF_CAP: Duration = Duration::from_millis(200);

impl PostgresStore {
    /// Connects, creates or migrates vaultd's schema, and returns the store. A database
    /// vaultd has not used before gets a new vault identity.
    pub fn open(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let engine = Engine::new(settings)?;
        // Connecting, migrating and waiting out a previous claim of this node.
        let limit = settings.connect_timeout + settings.timeout + claim::TAKE_WAIT;
        let vault_id = engine.run_within(limit, |shared| async move {
            let mut client = shared.pool.connect().await?;
            // The claim's lock first: a second node changes nothing, not even the schema.
            claim::lock(&client).await?;
            let vault_id = schema::migrate(&mut client).await?;
            let claim = claim::bump(&client).await?;
            if shared.claim.set(claim).is_err() {
                return Err(claim::superseded());
            }
            tokio::spawn(claim::keep(Arc::clone(&shared), client));
            Ok(vault_id)
        })?;
        Ok(Self { engine, vault_id })
    }

    /// Connects and reads the schema's state without changing anything: what
    /// `vaultd check-config` reports.
    pub fn check(settings: &PostgresSettings) -> Result<SchemaState, StoreError> {
        let limit = settings.connect_timeout + settings.timeout + claim::TAKE_WAIT;
        Engine::new(settings)?.run_within(limit, |shared| async move {
            let client = shared.pool.connect().await?;
            let state = schema::inspect(&client).await?;
            if state.version > 0 && claim::held_by_another(&client).await? {
                return Err(claim::held_elsewhere());
            }
            Ok(state)
        })
    }

    /// The vault this database belongs to.
    pub fn vault_id(&self) -> VaultId {
        self.vault_id
    }
}

impl Engine {
    fn new(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let config = client_config(settings)?;
        let tls = tls::MakeRustls::new(
            &settings.ca,
            settings
                .client_cert
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path())),
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vaultd-postgres")
            .enable_all()
            .build()
            .map_err(|source| StoreError::SpawnCommitter(Arc::new(source)))?;
        Ok(Self {
            shared: Arc::new(Shared {
                pool: Pool::new(config, tls, settings.pool_size.max(1)),
                timeout: settings.timeout,
                claim: std::sync::OnceLock::new(),
            }),
            runtime: Some(runtime),
        })
    }

    /// Runs `operation` on the store's runtime and waits for it, at most `timeout`.
    fn run<T, F, Fut>(&self, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_within(self.shared.timeout, operation)
    }

    /// Runs `operation` on the store's runtime and waits for it, at most `timeout`.
    fn run_within<T, F, Fut>(&self, timeout: Duration, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        run_on(self.handle()?, timeout, operation(Arc::clone(&self.shared)))
    }

    fn handle(&self) -> Result<&tokio::runtime::Handle, StoreError> {
        Ok(self.runtime.as_ref().ok_or(StoreError::Closed)?.handle())
    }
}

/// Runs `work` on the runtime of `handle` and waits for it, at most `timeout`. Once the
/// runtime has shut down, the answer is `Closed`.
fn run_on<T, Fut>(
    handle: &tokio::runtime::Handle,
    timeout: Duration,
    work: Fut,
) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let outcome = tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(StoreError::Timeout(timeout)));
        // The caller only goes away by panicking while it waits.
        let _ = reply.send(outcome);
    });
    answer.recv().map_err(|_| StoreError::Closed)?
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Closes every connection without waiting (dropping a runtime from async
            // code would panic); a caller still waiting is answered `Closed`.
            runtime.shutdown_background();
        }
    }
}

/// The tokio-postgres configuration for `settings`, refusing anything weaker than TLS
/// with verification.
fn client_config(settings: &PostgresSettings) -> Result<tokio_postgres::Config, StoreError> {
    let unusable = |why: &str| StoreError::PostgresSettings(why.to_owned());
    let mut config = tokio_postgres::Config::from_str(&settings.connect).map_err(|e| {
        StoreError::PostgresSettings(format!(
            "storage.postgres.connect does not parse ({e}); leave sslmode out: vaultd always \
             requires TLS and verifies the server's certificate and name"
        ))
    })?;
    if config.get_password().is_some() {
        return Err(unusable(
            "storage.postgres.connect holds a password; put it in storage.postgres.password_file \
             (mode 0600) instead",
        ));
    }
    if config.get_ssl_mode() == SslMode::Disable {
        return Err(unusable(
            "storage.postgres.connect says sslmode=disable; vaultd talks to PostgreSQL over TLS only",
        ));
    }
    if config.get_hosts().is_empty() {
        return Err(unusable("storage.postgres.connect names no host"));
    }
    if config
        .get_hosts()
        .iter()
        .any(|host| !matches!(host, Host::Tcp(_)))
    {
        return Err(unusable(
            "storage.postgres.connect names a Unix socket; PostgreSQL has no TLS there, so name \
             the server's TCP host",
        ));
    }
    config.ssl_mode(SslMode::Require);
    config.connect_timeout(settings.connect_timeout);
    config.tcp_user_timeout(settings.timeout);
    config.keepalives(true);
    if config.get_application_name().is_none() {
        config.application_name("vaultd");
    }
    if let Some(path) = &settings.password_file {
        config.password(read_password(path)?.as_bytes());
    }
    Ok(config)
}

/// The password in `path`, without its final line break.
fn read_password(path: &Path) -> Result<Zeroizing<String>, StoreError> {
    let mut text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        StoreError::PostgresSettings(format!(
            "cannot read storage.postgres.password_file {}: {e}",
            path.display()
        ))
    })?);
    while text.ends_with(['\n', '\r']) {
        text.pop();
    }
    Ok(text)
}

impl Store for PostgresStore {
    fn get(&self, key: &[u8]) -> Result<Option<StoredValue>, StoreError> {
        let read = Read::Get(key.to_vec());
        let rows = self
            .engine
            .run(|shared| async move { shared.read(&read).await })?;
        match rows.first() {
            Some(row) => Ok(Some(StoredValue::from_encoded_record(
                row.try_get(0).map_err(|e| StoreError::Postgres(e.into()))?,
            ))),
            None => Ok(None),
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, StoredValue)>, StoreError> {
        let read = Read::Scan {
            end: prefix_end(prefix),
            prefix: prefix.to_vec(),
        };
        let rows = self
            .engine
            .run(|shared| async move { shared.read(&read).await })?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    StoredValue::from_encoded_record(row.try_get(1)?),
                ))
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| StoreError::Postgres(e.into()))
    }

    fn transact(&self, txn: Transaction) -> Result<(), StoreError> {
        // A write cut off by the timeout may have had its COMMIT on the way.
        match self
            .engine
            .run(|shared| async move { shared.transact(&txn).await })
        {
            Err(StoreError::Timeout(limit)) => Err(StoreError::WriteTimedOut(limit)),
            other => other,
        }
    }

    fn view(&self) -> Result<Box<dyn super::StoreView>, StoreError> {
        let opened = self
            .engine
            .run(|shared| async move { view::PostgresView::begin(&shared).await })?;
        Ok(Box::new(opened.finish(
            self.engine.handle()?.clone(),
            self.engine.shared.timeout,
            self.vault_id,
        )))
    }
}

/// A read: one statement, so one snapshot.
enum Read {
    Get(Vec<u8>),
    /// Keys from `prefix` up to `end` (exclusive; unbounded if `None`), in order.
    Scan {
        prefix: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl Shared {
    /// This node's claim on the database.
    fn claim(&self) -> Result<&claim::Claim, StoreError> {
        self.claim.get().ok_or_else(claim::superseded)
    }

    /// Runs `read` (one statement, so one snapshot).
    async fn read(&self, read: &Read) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.with_retries(|conn| async move {
            let rows = match read {
                Read::Get(key) => conn.client.query(&conn.get, &[key]).await,
                Read::Scan {
                    prefix,
                    end: Some(end),
                } => conn.client.query(&conn.scan_between, &[prefix, end]).await,
                Read::Scan { prefix, end: None } => {
                    conn.client.query(&conn.scan_from, &[prefix]).await
                }
            };
            let rows = rows.map_err(|error| Failure {
                error,
                committing: false,
            });
            (conn, rows)
        })
        .await
    }

    /// Runs `txn` until it commits or a condition fails; see the module documentation.
    async fn transact(&self, txn: &Transaction) -> Result<(), StoreError> {
        let claim = self.claim()?;
        let generation = claim.generation;
        let outcome = self
            .with_retries(|mut conn| async move {
                let outcome = attempt(&mut conn, txn, generation).await;
                (conn, outcome)
            })
            .await?;
        if matches!(outcome, Err(StoreError::NodeClaim(_))) {
            // The fence found the generation moved on: refuse reads too, from now on.
            claim.supersede();
        }
        outcome
    }

    /// Runs `once` on a pooled connection until it succeeds, fails for good, or the
    /// timeout would pass: again after a jittered backoff when no connection could be
    /// made, when the one used was lost before anything was committed, or when
    /// PostgreSQL refused a transaction for racing another.
    async fn with_retries<T, F, Fut>(&self, mut once: F) -> Result<T, StoreError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, Failure>)>,
    {
        let started = Instant::now();
        let mut retry = 0;
        loop {
            self.claim()?.check()?;
            let error = match self.pool.take().await {
                Ok((conn, _slot)) => match once(conn).await {
                    (conn, Ok(value)) => {
                        self.pool.give_back(conn);
                        return Ok(value);
                    }
                    (conn, Err(Failure { error, committing })) if lost(&error) => {
                        drop(conn);
                        self.pool.close_idle();
                        if committing {
                            return Err(StoreError::Indeterminate(error.into()));
                        }
                        StoreError::Unreachable(error.into())
                    }
                    (conn, Err(Failure { error, .. })) if refused_race(&error) => {
                        // The refused transaction was rolled back; the connection is clean.
                        self.pool.give_back(conn);
                        StoreError::Postgres(error.into())
                    }
                    (_, Err(Failure { error, .. })) => {
                        return Err(StoreError::Postgres(error.into()));
                    }
                },
                Err(error @ StoreError::Unreachable(_)) => error,
                Err(error) => return Err(error),
            };
            let wait = crate::retry::jittered(retry, BACKOFF_BASE, BACKOFF_CAP);
            if started.elapsed() + wait >= self.timeout {
                return Err(error);
            }
            retry = retry.saturating_add(1);
            tokio::time::sleep(wait).await;
        }
    }
}

/// Why one attempt at a transaction failed, and whether `COMMIT` was in flight.
struct Failure {
    error: tokio_postgres::Error,
    committing: bool,
}

/// One attempt at `txn`, fenced by this node's claim `generation`: the inner result is
/// the transaction's outcome (applied, or a failed condition or a lost claim with
/// nothing written).
///
/// READ COMMITTED with a lock per key: the transaction first takes the claim's fence
/// (shared) and a transaction-scoped advisory lock for every key it reads or writes, in
/// ascending order (so two transactions never wait for each other in a circle), and only
/// then reads its conditions. Each statement of READ COMMITTED sees everything committed
/// before it began, and every transaction that could change one of these keys holds its
/// lock until it commits, so the conditions are checked against every write
/// acknowledged before, and transactions on different keys never wait for or abort each
/// other. SERIALIZABLE gave the same answers but aborted most concurrent inserts of
/// neighbouring keys (its predicate locks cover index pages), and the retries cost
/// more than the locks.
async fn attempt(
    conn: &mut Conn,
    txn: &Transaction,
    generation: i64,
) -> Result<Result<(), StoreError>, Failure> {
    let before_commit = |error| Failure {
        error,
        committing: false,
    };
    let Conn {
        client,
        fence,
        claim_generation,
        lock_keys,
        get_many,
        upsert_many,
        delete_many,
        ..
    } = conn;
    // Everything up to the conditions goes in one round trip: the server runs pipelined
    // statements in the order sent, so the locks are held before the conditions are read.
    let locks = key_locks(txn);
    let condition_keys: Vec<&[u8]> = txn.conditions().iter().map(Condition::key).collect();
    let lock_params: [&(dyn ToSql + Sync); 2] = [&RECORD_LOCKS, &locks];
    let read_params: [&(dyn ToSql + Sync); 1] = [&condition_keys];
    let (begun, fenced, current, locked, rows) = tokio::join!(
        biased;
        client.batch_execute("BEGIN"),
        client.execute(&*fence, &[&claim::FENCE]),
        client.query_one(&*claim_generation, &[]),
        client.execute(&*lock_keys, &lock_params),
        client.query(&*get_many, &read_params),
    );
    let read = (|| {
        begun?;
        fenced?;
        let current: i64 = current?.try_get(0)?;
        locked?;
        Ok((current, rows?))
    })();
    let (current, rows) = match read {
        Ok(read) => read,
        Err(error) => {
            // Leave no transaction open on a connection that may go back to the pool: if
            // the rollback fails, report that instead, and the connection is closed.
            return Err(before_commit(
                match client.batch_execute("ROLLBACK").await {
                    Ok(()) => error,
                    Err(rollback) => rollback,
                },
            ));
        }
    };
    let refuse = async |refusal: StoreError| {
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(before_commit)?;
        Ok(Err(refusal))
    };
    if current != generation {
        return refuse(claim::superseded()).await;
    }
    let mut stored = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let key: &[u8] = row.try_get(0).map_err(before_commit)?;
        let value: &[u8] = row.try_get(1).map_err(before_commit)?;
        stored.insert(key, value);
    }
    if let Some(failed) = txn
        .conditions()
        .iter()
        .find(|condition| !condition.holds(stored.get(condition.key()).copied()))
    {
        return refuse(StoreError::Conflict {
            key: failed.key().to_vec(),
        })
        .await;
    }
    // The writes and the commit in a second round trip. A failed write aborts the
    // transaction and the COMMIT after it rolls back; the write's error is reported.
    let FinalWrites {
        put_keys,
        put_values,
        deleted,
    } = final_writes(txn);
    let put_params: [&(dyn ToSql + Sync); 2] = [&put_keys, &put_values];
    let delete_params: [&(dyn ToSql + Sync); 1] = [&deleted];
    let (put, delete, commit) = tokio::join!(
        biased;
        client.execute(&*upsert_many, &put_params),
        client.execute(&*delete_many, &delete_params),
        client.batch_execute("COMMIT"),
    );
    // Once COMMIT is sent, a lost connection leaves the outcome unknown.
    let committing = |error| Failure {
        error,
        committing: true,
    };
    put.map_err(committing)?;
    delete.map_err(committing)?;
    commit.map_err(committing)?;
    Ok(Ok(()))
}

/// What a transaction's writes leave: the keys and values put, and the keys deleted.
struct FinalWrites<'a> {
    put_keys: Vec<&'a [u8]>,
    put_values: Vec<&'a [u8]>,
    deleted: Vec<&'a [u8]>,
}

/// What `txn`'s writes leave, key by key (a later write to a key replaces an earlier
/// one).
fn final_writes(txn: &Transaction) -> FinalWrites<'_> {
    let mut last = std::collections::BTreeMap::new();
    for write in txn.writes() {
        last.insert(write.key(), write);
    }
    let (mut put_keys, mut put_values, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
    for (key, write) in last {
        match write {
            Write::Put { value, .. } => {
                put_keys.push(key);
                put_values.push(value.as_bytes());
            }
            Write::Delete { .. } => deleted.push(key),
        }
    }
    FinalWrites {
        put_keys,
        put_values,
        deleted,
    }
}

/// The first key of the advisory locks on records (the two-key form, a space apart
/// from the one-key locks of migrations and the claim): "vaur".
const RECORD_LOCKS: i32 = 0x7661_7572;

/// The record locks `txn` takes: a 32-bit FNV-1a hash of each key it reads or writes,
/// ascending, without repeats. Keys that share a hash share a lock, which only makes
/// their transactions take turns.
fn key_locks(txn: &Transaction) -> Vec<i32> {
    let hash = |key: &[u8]| {
        let hash = key.iter().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
        });
        i32::from_ne_bytes(hash.to_ne_bytes())
    };
    let mut locks: Vec<i32> = txn
        .conditions()
        .iter()
        .map(Condition::key)
        .chain(txn.writes().iter().map(Write::key))
        .map(hash)
        .collect();
    locks.sort_unstable();
    locks.dedup();
    locks
}

/// Whether `error` means the connection is gone (or going: the server is shutting down).
fn lost(error: &tokio_postgres::Error) -> bool {
    let io = std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>());
    error.is_closed()
        || io
        || error.code().is_some_and(|code| {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                ]
                .contains(code)
        })
}

/// Whether `error` is PostgreSQL refusing a transaction that raced another: run it again.
fn refused_race(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::UNIQUE_VIOLATION,
        ]
        .contains(code)
    })
}

/// The least key greater than every key starting with `prefix`, if there is one (none
/// when the prefix is empty or all 0xff bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests;
