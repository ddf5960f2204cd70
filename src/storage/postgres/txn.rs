//! One write transaction on PostgreSQL: the per-key locks, the fence, the conditions,
//! and what the writes leave, in two pipelined round trips; and how its errors are
//! told apart (a lost connection, a refused race).

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::pool::Conn;
use crate::storage::{Condition, StoreError, Transaction, Write};

/// Why one attempt at a transaction failed, and whether `COMMIT` was in flight.
pub(super) struct Failure {
    pub(super) error: tokio_postgres::Error,
    pub(super) committing: bool,
}

/// One attempt at `txn`: the inner result is the transaction's outcome (applied, or a
/// failed condition with nothing written).
///
/// READ COMMITTED with a lock per key: the transaction first takes a transaction-scoped
/// advisory lock for every key it reads or writes, in ascending order (so two
/// transactions never wait for each other in a circle), and only then reads its
/// conditions. Each statement of READ COMMITTED sees everything committed
/// before it began, and every transaction that could change one of these keys holds its
/// lock until it commits, so the conditions are checked against every write
/// acknowledged before, and transactions on different keys never wait for or abort each
/// other. SERIALIZABLE gave the same answers but aborted most concurrent inserts of
/// neighbouring keys (its predicate locks cover index pages), and the retries cost
/// more than the locks.
///
/// Notices go to the change log in the second round trip, after the writes: the epoch
/// row is locked from then to COMMIT only, and never by a transaction still waiting for
/// a key's lock, so the two kinds of lock cannot wait for each other in a circle.
pub(super) async fn attempt(
    conn: &mut Conn,
    txn: &Transaction,
    origin: &[u8],
) -> Result<Result<(), StoreError>, Failure> {
    let before_commit = |error| Failure {
        error,
        committing: false,
    };
    let Conn {
        client,
        lock_keys,
        get_many,
        upsert_many,
        delete_many,
        announce,
        ..
    } = conn;
    // Everything up to the conditions goes in one round trip: the server runs pipelined
    // statements in the order sent, so the locks are held before the conditions are read.
    let locks = key_locks(txn);
    let condition_keys: Vec<&[u8]> = txn.conditions().iter().map(Condition::key).collect();
    let lock_params: [&(dyn ToSql + Sync); 2] = [&RECORD_LOCKS, &locks];
    let read_params: [&(dyn ToSql + Sync); 1] = [&condition_keys];
    let (begun, locked, rows) = tokio::join!(
        biased;
        client.batch_execute("BEGIN"),
        client.execute(&*lock_keys, &lock_params),
        client.query(&*get_many, &read_params),
    );
    let read = (|| {
        begun?;
        locked?;
        rows
    })();
    let rows = match read {
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
    let notices: Vec<&[u8]> = txn.notices().iter().map(Vec::as_slice).collect();
    let put_params: [&(dyn ToSql + Sync); 2] = [&put_keys, &put_values];
    let delete_params: [&(dyn ToSql + Sync); 1] = [&deleted];
    let announce_params: [&(dyn ToSql + Sync); 2] = [&notices, &origin];
    let (put, delete, announced, commit) = tokio::join!(
        biased;
        client.execute(&*upsert_many, &put_params),
        client.execute(&*delete_many, &delete_params),
        async {
            if notices.is_empty() {
                return Ok(0);
            }
            client.execute(&*announce, &announce_params).await
        },
        client.batch_execute("COMMIT"),
    );
    // Once COMMIT is sent, a lost connection leaves the outcome unknown.
    let committing = |error| Failure {
        error,
        committing: true,
    };
    put.map_err(committing)?;
    delete.map_err(committing)?;
    announced.map_err(committing)?;
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
/// from the one-key lock of migrations): "vaur".
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
pub(super) fn lost(error: &tokio_postgres::Error) -> bool {
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
pub(super) fn refused_race(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::UNIQUE_VIOLATION,
        ]
        .contains(code)
    })
}
