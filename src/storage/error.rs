//! The one error type of the storage layer.

use std::sync::Arc;

/// Why a storage operation failed.
///
/// Engine failures keep the engine's own error (redb's or PostgreSQL's) as their source.
/// Sources are behind `Arc` because one failed group commit answers every transaction of
/// the group with the same error.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A condition of the transaction did not hold; nothing of the transaction was written.
    #[error(
        "transaction condition failed on key `{}`; nothing was written",
        String::from_utf8_lossy(key).escape_debug()
    )]
    Conflict {
        /// The key of the first condition that failed (keys are non-secret paths).
        key: Vec<u8>,
    },
    /// The database file could not be created or opened.
    #[error("opening the database file failed")]
    Open(#[source] Arc<::redb::DatabaseError>),
    /// A read or write transaction could not begin.
    #[error("beginning a storage transaction failed")]
    Begin(#[source] Arc<::redb::TransactionError>),
    /// The table holding the records could not be opened.
    #[error("opening the storage table failed")]
    Table(#[source] Arc<::redb::TableError>),
    /// Reading or writing pages failed (I/O error, corruption, value too large).
    #[error("storage read or write failed")]
    Storage(#[source] Arc<::redb::StorageError>),
    /// The commit durability could not be set to immediate.
    #[error("requesting immediate durability failed")]
    Durability(#[source] Arc<::redb::SetDurabilityError>),
    /// The durable commit failed; nothing of the transaction was written.
    #[error("durable commit failed")]
    Commit(#[source] Arc<::redb::CommitError>),
    /// The thread that commits writes could not be started.
    #[error("starting the storage committer thread failed")]
    SpawnCommitter(#[source] Arc<std::io::Error>),
    /// The committer thread is gone, so writes can no longer be made.
    #[error("the storage committer has stopped")]
    Closed,
    /// The data file could not be created (with mode 0600) or opened.
    #[error("creating or opening the data file failed")]
    File(#[source] Arc<std::io::Error>),
    /// The data file's own metadata (the vault's identity) is damaged.
    #[error("the data file's own metadata is damaged: {0}")]
    Meta(&'static str),
    /// The system's random generator failed (drawing a new vault's identity).
    #[error("the system random generator failed")]
    Random,
    /// This engine cannot do what was asked (a consistent view for a snapshot).
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
    /// The store holds something a snapshot cannot carry (a table this vaultd does not
    /// know, a record larger than the format allows).
    #[error("the store cannot be snapshotted: {0}")]
    Snapshot(&'static str),
    /// The PostgreSQL settings cannot be used (a connection string without TLS, a CA or
    /// client certificate that does not load); nothing was connected.
    #[error("the PostgreSQL settings are unusable: {0}")]
    PostgresSettings(String),
    /// PostgreSQL refused or failed the operation; nothing of a write was applied.
    #[error("PostgreSQL failed the operation: {0}")]
    Postgres(#[source] Arc<tokio_postgres::Error>),
    /// No connection to PostgreSQL could be made, or the one in use was lost before a
    /// write was committed; nothing of a write was applied.
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(#[source] Arc<tokio_postgres::Error>),
    /// The connection was lost while PostgreSQL was committing: the write may or may not
    /// have been applied. Read the keys again before deciding what to do.
    #[error(
        "the PostgreSQL connection was lost during the commit; the write may or may not have \
         been applied"
    )]
    Indeterminate(#[source] Arc<tokio_postgres::Error>),
    /// PostgreSQL did not answer a read within the configured timeout.
    #[error("PostgreSQL did not answer within {0:?} (storage.postgres.timeout)")]
    Timeout(std::time::Duration),
    /// A write did not finish within the configured timeout: it may or may not have
    /// been applied (its COMMIT may have been on the way).
    #[error(
        "PostgreSQL did not finish a write within {0:?} (storage.postgres.timeout); it may \
         or may not have been applied"
    )]
    WriteTimedOut(std::time::Duration),
    /// The database's schema is not one this vaultd can use (newer than it knows, or
    /// damaged); nothing was changed.
    #[error("the PostgreSQL schema is unusable: {0}")]
    Schema(String),
}

impl From<::redb::DatabaseError> for StoreError {
    fn from(source: ::redb::DatabaseError) -> Self {
        Self::Open(Arc::new(source))
    }
}

impl From<::redb::TransactionError> for StoreError {
    fn from(source: ::redb::TransactionError) -> Self {
        Self::Begin(Arc::new(source))
    }
}

impl From<::redb::TableError> for StoreError {
    fn from(source: ::redb::TableError) -> Self {
        Self::Table(Arc::new(source))
    }
}

impl From<::redb::StorageError> for StoreError {
    fn from(source: ::redb::StorageError) -> Self {
        Self::Storage(Arc::new(source))
    }
}

impl From<::redb::SetDurabilityError> for StoreError {
    fn from(source: ::redb::SetDurabilityError) -> Self {
        Self::Durability(Arc::new(source))
    }
}

impl From<::redb::CommitError> for StoreError {
    fn from(source: ::redb::CommitError) -> Self {
        Self::Commit(Arc::new(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_the_key_as_lossy_utf8() {
        let error = StoreError::Conflict {
            key: b"secret/acme/live/\xffopenai\n".to_vec(),
        };
        assert_eq!(
            error.to_string(),
            "transaction condition failed on key `secret/acme/live/\u{fffd}openai\\n`; \
             nothing was written"
        );
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<StoreError>();
    }
}
