//! The PostgreSQL engine: the same [`Store`] on a PostgreSQL server, which several
//! nodes share; its change log tells each what the others changed.
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
//! keys do not touch each other (see `txn` for why not SERIALIZABLE). Should
//! PostgreSQL still refuse one for racing another (SQLSTATE 40001, 40P01, 23505), it is
//! run again, conditions re-read, after a jittered backoff, until it commits, a
//! condition fails, or the timeout passes.
//!
//! A connection lost before `COMMIT` was sent is retried on a new one (nothing was
//! written). A connection lost while `COMMIT` was in flight is
//! [`StoreError::Indeterminate`]: the write may or may not be there, and the caller must
//! not report it as done.
//!
//! # Change log
//!
//! A transaction's notices ([`Transaction::announce`]) go into `vaultd_changes` inside
//! the transaction, numbered from the counter in `vaultd_epoch`, which the transaction
//! bumps and so holds locked until it commits: the next transaction with notices waits
//! for that commit before it takes its numbers. So numbers are consecutive and follow
//! commit order, and a snapshot that shows one number shows every lower one (a sequence
//! would not: its numbers are taken before commit, in any order). Each notice carries
//! the store that wrote it, so a node can tell its own.

mod pool;
mod schema;
mod tls;
mod txn;
mod view;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::config::{Host, SslMode};
use zeroize::Zeroizing;

use self::pool::{Conn, Pool};
pub use self::schema::SchemaState;
use self::txn::{Failure, attempt, lost, refused_race};
use super::{Change, ChangeLog, Store, StoreError, StoredValue, Transaction, VaultId};

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
    /// How long a node may go without reading the change log to its end before it
    /// refuses to hand out leases and plaintext.
    pub catch_up: Duration,
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
            .field("catch_up", &self.catch_up)
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
    /// Names this store's notices in the change log, so it can tell its own.
    origin: VaultId,
}

/// The first backoff before running a transaction again, and the cap.
const BACKOFF_BASE: Duration = Duration::from_millis(2);
const BACKOFF_CAP: Duration = Duration::from_millis(200);

impl PostgresStore {
    /// Connects, creates or migrates vaultd's schema, and returns the store. A database
    /// vaultd has not used before gets a new vault identity.
    pub fn open(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let engine = Engine::new(settings)?;
        let limit = settings.connect_timeout + settings.timeout;
        let vault_id = engine.run_within(limit, |shared| async move {
            let mut client = shared.pool.connect().await?;
            schema::migrate(&mut client).await
        })?;
        Ok(Self { engine, vault_id })
    }

    /// Connects and reads the schema's state without changing anything: what
    /// `vaultd check-config` reports.
    pub fn check(settings: &PostgresSettings) -> Result<SchemaState, StoreError> {
        let limit = settings.connect_timeout + settings.timeout;
        Engine::new(settings)?.run_within(limit, |shared| async move {
            let client = shared.pool.connect().await?;
            schema::inspect(&client).await
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
                origin: VaultId::generate()?,
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

/// The password in `path`: an owner-only file, as every secret file vaultd reads.
fn read_password(path: &Path) -> Result<Zeroizing<String>, StoreError> {
    crate::secret_file::read_owner_only(path, 1024, "a password").map_err(|reason| {
        StoreError::PostgresSettings(format!(
            "storage.postgres.password_file {}: {reason}",
            path.display()
        ))
    })
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

    fn change_log(&self) -> Option<&dyn ChangeLog> {
        Some(self)
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

impl ChangeLog for PostgresStore {
    fn head(&self) -> Result<u64, StoreError> {
        let rows = self
            .engine
            .run(|shared| async move { shared.read(&Read::Head).await })?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Schema("vaultd_epoch holds no row".into()))?;
        epoch(row.try_get(0))
    }

    fn after(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let read = Read::Changes {
            after: i64::try_from(after).unwrap_or(i64::MAX),
            limit: i64::from(limit),
        };
        let rows = self
            .engine
            .run(|shared| async move { shared.read(&read).await })?;
        rows.iter()
            .map(|row| {
                Ok(Change {
                    epoch: epoch(row.try_get(0))?,
                    own: row.try_get(1).map_err(|e| StoreError::Postgres(e.into()))?,
                    notice: row.try_get(2).map_err(|e| StoreError::Postgres(e.into()))?,
                })
            })
            .collect()
    }

    fn prune(&self, age: Duration) -> Result<u64, StoreError> {
        let seconds = age.as_secs_f64();
        self.engine.run(|shared| async move {
            shared
                .with_retries(|conn| async move {
                    let pruned = conn
                        .client
                        .execute(&conn.prune_changes, &[&seconds])
                        .await
                        .map_err(|error| Failure {
                            error,
                            committing: false,
                        });
                    (conn, pruned)
                })
                .await
        })
    }
}

/// An epoch as PostgreSQL returned it: never negative.
fn epoch(value: Result<i64, tokio_postgres::Error>) -> Result<u64, StoreError> {
    let value = value.map_err(|e| StoreError::Postgres(e.into()))?;
    u64::try_from(value)
        .map_err(|_| StoreError::Schema(format!("the change log holds epoch {value}")))
}

/// A read: one statement, so one snapshot.
enum Read {
    /// The change log's latest epoch.
    Head,
    /// Up to `limit` notices after epoch `after`, tagged with whether this store
    /// announced them.
    Changes {
        after: i64,
        limit: i64,
    },
    Get(Vec<u8>),
    /// Keys from `prefix` up to `end` (exclusive; unbounded if `None`), in order.
    Scan {
        prefix: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl Shared {
    /// Runs `read` (one statement, so one snapshot).
    async fn read(&self, read: &Read) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.with_retries(|conn| async move {
            let origin = self.origin.as_bytes().as_slice();
            let rows = match read {
                Read::Head => conn.client.query(&conn.change_head, &[]).await,
                Read::Changes { after, limit } => {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                        [after, &origin, limit];
                    conn.client.query(&conn.changes_after, &params).await
                }
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
        let origin = self.origin.as_bytes().as_slice();
        self.with_retries(|mut conn| async move {
            let outcome = attempt(&mut conn, txn, origin).await;
            (conn, outcome)
        })
        .await?
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
