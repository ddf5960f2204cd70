//! A consistent, read-only view of a PostgreSQL store, for snapshots: one REPEATABLE
//! READ, READ ONLY transaction on a connection of its own, held until the view is
//! dropped. Records are read in pages of [`PAGE`], by key, so a large store is never
//! held in memory at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_postgres::Client;

use super::{Shared, run_on};
use crate::storage::redb::VAULT_ID_KEY;
use crate::storage::snapshot::{META_TABLE, RECORDS_TABLE, WriteError};
use crate::storage::{EntryVisitor, StoreError, StoreView, StoredValue, TableInfo, VaultId};

/// Records read per round trip.
const PAGE: i64 = 1000;

/// A view being opened: the transaction has begun and fixed its snapshot.
pub(super) struct Begun {
    client: Client,
    records: u64,
}

/// The view.
pub(super) struct PostgresView {
    client: Arc<Client>,
    handle: Handle,
    timeout: Duration,
    vault_id: VaultId,
    records: u64,
}

fn failed(error: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(error.into())
}

impl PostgresView {
    /// Begins the view's transaction on a new connection and counts the records in it,
    /// which fixes its snapshot.
    pub(super) async fn begin(shared: &Shared) -> Result<Begun, StoreError> {
        let client = shared.pool.connect().await?;
        // A snapshot's reader may pause between pages (up to a minute, by the snapshot
        // rules), so this transaction may stay idle longer than a write's.
        client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                 SET LOCAL idle_in_transaction_session_timeout = 0",
            )
            .await
            .map_err(failed)?;
        let records: i64 = client
            .query_one("SELECT count(*) FROM vaultd_records", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(failed)?;
        Ok(Begun {
            client,
            records: u64::try_from(records).unwrap_or(0),
        })
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        run_on(&self.handle, self.timeout, work)
    }
}

impl Begun {
    /// The view, reading through `handle`'s runtime, each read at most `timeout`.
    pub(super) fn finish(
        self,
        handle: Handle,
        timeout: Duration,
        vault_id: VaultId,
    ) -> PostgresView {
        PostgresView {
            client: Arc::new(self.client),
            handle,
            timeout,
            vault_id,
            records: self.records,
        }
    }
}

impl StoreView for PostgresView {
    fn vault_id(&self) -> VaultId {
        self.vault_id
    }

    fn get(&self, key: &[u8]) -> Result<Option<StoredValue>, StoreError> {
        let (client, key) = (Arc::clone(&self.client), key.to_vec());
        self.run(async move {
            let row = client
                .query_opt("SELECT value FROM vaultd_records WHERE key = $1", &[&key])
                .await
                .map_err(failed)?;
            row.map(|row| row.try_get(0).map(StoredValue::from_encoded_record))
                .transpose()
                .map_err(failed)
        })
    }

    /// What a redb file holds: the vault's identity in its own table, and the records.
    fn tables(&self) -> Result<Vec<TableInfo>, StoreError> {
        Ok(vec![
            TableInfo {
                name: META_TABLE,
                entries: 1,
            },
            TableInfo {
                name: RECORDS_TABLE,
                entries: self.records,
            },
        ])
    }

    fn visit(&self, table: &str, visit: &mut EntryVisitor<'_>) -> Result<(), WriteError> {
        match table {
            META_TABLE => return visit(VAULT_ID_KEY, self.vault_id.as_bytes()),
            RECORDS_TABLE => {}
            _ => return Err(StoreError::Snapshot("no such table").into()),
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (client, from) = (Arc::clone(&self.client), after.clone());
            let mut page = self.run(async move {
                let rows = match &from {
                    None => {
                        client
                            .query(
                                "SELECT key, value FROM vaultd_records ORDER BY key LIMIT $1",
                                &[&PAGE],
                            )
                            .await
                    }
                    Some(from) => {
                        client
                            .query(
                                "SELECT key, value FROM vaultd_records WHERE key > $1 \
                                 ORDER BY key LIMIT $2",
                                &[from, &PAGE],
                            )
                            .await
                    }
                }
                .map_err(failed)?;
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                    .collect::<Result<Vec<(Vec<u8>, Vec<u8>)>, tokio_postgres::Error>>()
                    .map_err(failed)
            })?;
            for (key, value) in &page {
                visit(key, value)?;
            }
            // A short page is the last one.
            if page.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                return Ok(());
            }
            after = page.pop().map(|(key, _)| key);
        }
    }
}
