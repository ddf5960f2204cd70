//! A bounded pool of PostgreSQL connections, each with vaultd's statements prepared.
//!
//! At most `size` connections exist at once; a caller beyond that waits for one. A
//! connection goes back to the pool only when the operation that held it finished
//! cleanly: one dropped mid-transaction (a timeout, an error) is closed, so the server
//! rolls its transaction back and no later caller inherits it. When one connection is
//! found lost, the idle ones are closed too: they are most likely lost with it (the
//! server restarted or failed over).

use std::sync::{Mutex, PoisonError};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Statement};

use super::tls::MakeRustls;
use crate::storage::StoreError;

/// The pool.
pub(super) struct Pool {
    config: tokio_postgres::Config,
    tls: MakeRustls,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
}

/// One connection and its prepared statements.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) lock_keys: Statement,
    pub(super) get: Statement,
    pub(super) get_many: Statement,
    pub(super) scan_from: Statement,
    pub(super) scan_between: Statement,
    pub(super) upsert_many: Statement,
    pub(super) delete_many: Statement,
    pub(super) announce: Statement,
    pub(super) changes_after: Statement,
    pub(super) change_head: Statement,
    pub(super) prune_changes: Statement,
}

impl Pool {
    pub(super) fn new(config: tokio_postgres::Config, tls: MakeRustls, size: usize) -> Self {
        Self {
            config,
            tls,
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Semaphore::new(size),
        }
    }

    /// A connection (an idle one that is still open, or a new one) and the slot it
    /// fills. Given back with [`Pool::give_back`] while the slot is held; dropped
    /// instead, it is closed.
    pub(super) async fn take(&self) -> Result<(Conn, SemaphorePermit<'_>), StoreError> {
        let slot = self.slots.acquire().await.map_err(|_| StoreError::Closed)?;
        let idle = loop {
            match self.idle_list().pop() {
                Some(conn) if conn.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect_prepared().await?,
        };
        Ok((conn, slot))
    }

    /// A new connection outside the pool, with nothing prepared (the schema may not
    /// exist yet): what migrations and checks run on.
    pub(super) async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| StoreError::Unreachable(e.into()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "a PostgreSQL connection ended");
            }
        });
        // Every acknowledged write must be on the server's disk (and on its synchronous
        // standbys), whatever the server's default. The server notices a vaultd that
        // vanished (its host crashed, the network cut) within about 25 s and releases
        // its locks; a session left inside a transaction for a minute is ended.
        client
            .batch_execute(
                "SET synchronous_commit = on; \
                 SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
                 SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000; \
                 SET idle_in_transaction_session_timeout = '60s'",
            )
            .await
            .map_err(|e| StoreError::Unreachable(e.into()))?;
        Ok(client)
    }

    async fn connect_prepared(&self) -> Result<Conn, StoreError> {
        let client = self.connect().await?;
        let prepare = |sql| client.prepare(sql);
        let failed = |e: tokio_postgres::Error| StoreError::Postgres(e.into());
        Ok(Conn {
            // unnest yields the (ascending) array in order, and each row takes its lock
            // before the next is read.
            lock_keys: prepare(
                "SELECT count(pg_advisory_xact_lock($1, key)) FROM unnest($2::int4[]) AS key",
            )
            .await
            .map_err(failed)?,
            get: prepare("SELECT value FROM vaultd_records WHERE key = $1")
                .await
                .map_err(failed)?,
            get_many: prepare("SELECT key, value FROM vaultd_records WHERE key = ANY($1)")
                .await
                .map_err(failed)?,
            scan_from: prepare(
                "SELECT key, value FROM vaultd_records WHERE key >= $1 ORDER BY key",
            )
            .await
            .map_err(failed)?,
            scan_between: prepare(
                "SELECT key, value FROM vaultd_records WHERE key >= $1 AND key < $2 ORDER BY key",
            )
            .await
            .map_err(failed)?,
            upsert_many: prepare(
                "INSERT INTO vaultd_records (key, value) \
                 SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .await
            .map_err(failed)?,
            delete_many: prepare("DELETE FROM vaultd_records WHERE key = ANY($1)")
                .await
                .map_err(failed)?,
            // The epoch row's lock is held to COMMIT: a later transaction with notices
            // waits for it, so its epochs are higher and it commits later.
            announce: prepare(
                "WITH bumped AS (UPDATE vaultd_epoch \
                                 SET epoch = epoch + cardinality($1::bytea[]) RETURNING epoch) \
                 INSERT INTO vaultd_changes (epoch, origin, notice) \
                 SELECT bumped.epoch - cardinality($1::bytea[]) + n.ord, $2, n.notice \
                 FROM bumped, unnest($1::bytea[]) WITH ORDINALITY AS n(notice, ord)",
            )
            .await
            .map_err(failed)?,
            changes_after: prepare(
                "SELECT epoch, origin = $2, notice FROM vaultd_changes \
                 WHERE epoch > $1 ORDER BY epoch LIMIT $3",
            )
            .await
            .map_err(failed)?,
            change_head: prepare("SELECT epoch FROM vaultd_epoch")
                .await
                .map_err(failed)?,
            prune_changes: prepare(
                "DELETE FROM vaultd_changes WHERE at < clock_timestamp() - make_interval(secs => $1)",
            )
            .await
            .map_err(failed)?,
            client,
        })
    }

    /// Puts `conn` back for the next caller: only after an operation that ended
    /// cleanly, outside any transaction.
    pub(super) fn give_back(&self, conn: Conn) {
        if !conn.client.is_closed() {
            self.idle_list().push(conn);
        }
    }

    /// Closes every idle connection (after one was found lost).
    pub(super) fn close_idle(&self) {
        self.idle_list().clear();
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        // The list holds whole connections only; a panic elsewhere cannot leave it torn.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
