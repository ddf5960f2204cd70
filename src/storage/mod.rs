//! Storage: the narrow, synchronous interface between vaultd and its durable data.
//!
//! A [`Store`] holds byte keys (non-secret paths such as `secret/acme/live/openai`) mapped to
//! [`StoredValue`]s. A stored value is always a ciphertext envelope or non-secret metadata: only
//! the record layer can build one, so plaintext cannot reach a store by accident.
//!
//! Every method blocks. The async layer calls them through `spawn_blocking`.
//!
//! Engines:
//! - [`redb::RedbStore`], the embedded default: one file (created 0600), every acknowledged
//!   write fsynced, and concurrent writers grouped into one durable commit.
//! - [`postgres::PostgresStore`], the records in a PostgreSQL database that several
//!   nodes share: one transaction per write with a lock on each key it touches, over TLS
//!   only, on a runtime of its own, and a [`ChangeLog`] of what transactions announced
//!   for the other nodes.
//!
//! A store also gives a consistent read-only [`StoreView`] of everything it holds, which
//! [`snapshot`] streams as a self-checking file and restores into a new data file.

#[cfg(test)]
mod conformance;
mod error;
pub(crate) mod files;
mod identity;
pub mod postgres;
pub mod redb;
pub mod snapshot;
mod transaction;

pub use error::StoreError;
pub use identity::VaultId;
pub use transaction::{Condition, Transaction, Write};

/// Bytes a store may hold: a ciphertext envelope or non-secret metadata, never plaintext.
///
/// The record layer is the only code that builds one (it encodes ciphertext and metadata only);
/// engines rebuild one from bytes they stored, which were a `StoredValue` when written.
/// `Debug` prints only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredValue(Vec<u8>);

impl StoredValue {
    /// Wraps bytes produced by the record encoder (ciphertext envelope plus metadata).
    pub(crate) fn from_encoded_record(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The stored bytes, for the record decoder.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The stored bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl std::fmt::Debug for StoredValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredValue({} bytes)", self.0.len())
    }
}

/// A durable, ordered key-value store with atomic multi-key compare-and-set transactions.
///
/// Reads see a consistent snapshot of committed data. A write method returns `Ok` only once its
/// effects are durable: they survive a crash or power loss from that moment on (to the extent the
/// disk honours `fsync`). Writes are linearizable: each transaction's conditions are checked
/// against every transaction acknowledged before it.
pub trait Store: Send + Sync + 'static {
    /// The value stored under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<StoredValue>, StoreError>;

    /// Every entry whose key starts with `prefix`, in ascending byte order of key, read from one
    /// snapshot. An empty prefix returns every entry.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, StoredValue)>, StoreError>;

    /// Applies `txn` atomically and durably.
    ///
    /// Either every condition holds and every write is applied, or nothing is written and
    /// [`StoreError::Conflict`] names the first condition (in the order they were added) that
    /// failed. Conditions are all checked against the state before this transaction's writes;
    /// writes apply in the order they were added, so a later write to the same key wins.
    fn transact(&self, txn: Transaction) -> Result<(), StoreError>;

    /// Stores `value` under `key` unconditionally, durably.
    fn put(&self, key: &[u8], value: StoredValue) -> Result<(), StoreError> {
        self.transact(Transaction::new().put(key, value))
    }

    /// Removes `key` unconditionally, durably. Removing an absent key succeeds.
    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.transact(Transaction::new().delete(key))
    }

    /// A consistent, read-only view of every table, taken now: writes acknowledged
    /// before this call are in it, later ones are not, and it does not change while it
    /// is read. Engines that cannot give one answer [`StoreError::Unsupported`].
    fn view(&self) -> Result<Box<dyn StoreView>, StoreError> {
        Err(StoreError::Unsupported("consistent views for snapshots"))
    }

    /// The log of notices that transactions announced, for the other nodes sharing
    /// the store; `None` for an engine only one node uses, which drops notices.
    fn change_log(&self) -> Option<&dyn ChangeLog> {
        None
    }
}

/// Notices announced by committed transactions ([`Transaction::announce`]), numbered
/// in commit order: a transaction's notices get the next epochs, consecutive, and a
/// transaction that committed after another has higher epochs. So a reader that has
/// seen every epoch up to `e` and then reads `e + 1` onwards misses nothing.
pub trait ChangeLog: Send + Sync {
    /// The latest epoch committed (0 before any notice).
    fn head(&self) -> Result<u64, StoreError>;

    /// Up to `limit` notices after `epoch`, in epoch order. Notices older than the
    /// log keeps are gone: a first epoch above `epoch + 1` says some were missed.
    fn after(&self, epoch: u64, limit: u32) -> Result<Vec<Change>, StoreError>;

    /// Drops notices older than `age` by the database's clock; returns how many.
    fn prune(&self, age: std::time::Duration) -> Result<u64, StoreError>;
}

/// One notice of the change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Its place in commit order.
    pub epoch: u64,
    /// Whether this node announced it (and so has acted on it already).
    pub own: bool,
    /// What it says (non-secret: what to revoke or forget).
    pub notice: Vec<u8>,
}

/// One table of a [`StoreView`] and how many entries it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableInfo {
    /// The table's name, one of [`snapshot::TABLES`].
    pub name: &'static str,
    /// Its entries.
    pub entries: u64,
}

/// A consistent, read-only view of everything a store holds (one read transaction):
/// what a snapshot is read from. It holds only what the store holds, ciphertext and
/// non-secret metadata.
pub trait StoreView: Send {
    /// The vault the store belongs to.
    fn vault_id(&self) -> VaultId;

    /// The record stored under `key` as of the view.
    fn get(&self, key: &[u8]) -> Result<Option<StoredValue>, StoreError>;

    /// Every table, in ascending order of name.
    fn tables(&self) -> Result<Vec<TableInfo>, StoreError>;

    /// Calls `visit` with each entry of `table` (key, value) in ascending order of key,
    /// stopping at the first error.
    fn visit(&self, table: &str, visit: &mut EntryVisitor<'_>) -> Result<(), snapshot::WriteError>;
}

/// What [`StoreView::visit`] calls with each entry: its key and value.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), snapshot::WriteError> + 'a;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_the_length() {
        let value = StoredValue::from_encoded_record(b"sk-live-0123456789".to_vec());
        assert_eq!(format!("{value:?}"), "StoredValue(18 bytes)");
    }

    #[test]
    fn bytes_round_trip() {
        let value = StoredValue::from_encoded_record(vec![1, 2, 3]);
        assert_eq!(value.as_bytes(), &[1, 2, 3]);
        assert_eq!(value.into_bytes(), vec![1, 2, 3]);
    }
}
