//! vaultd's tables in PostgreSQL, created and migrated by vaultd itself.
//!
//! `vaultd_schema` holds one row: the schema version and the vault's identity (drawn
//! when the schema is first created, as a redb file draws its own). Migrations run in
//! one transaction under an advisory lock, so nodes starting together migrate once and
//! a failed migration leaves the previous version whole. A database whose schema is
//! newer than this vaultd knows is refused, never downgraded.

use tokio_postgres::Client;

use crate::storage::{StoreError, VaultId};

/// The schema version this vaultd writes and reads.
pub(super) const VERSION: i32 = 2;

/// The statements that take version `n - 1` to `n`, at index `n - 1`.
const MIGRATIONS: [&str; VERSION as usize] = [
    // 1: the records, ordered bytewise (bytea compares as unsigned bytes), and the
    // generation of a node's claim on the database, from when one node held it alone.
    "CREATE TABLE vaultd_records (key bytea PRIMARY KEY, value bytea NOT NULL); \
     CREATE TABLE vaultd_claim (one boolean PRIMARY KEY DEFAULT true CHECK (one), \
                                generation bigint NOT NULL); \
     INSERT INTO vaultd_claim (generation) VALUES (0)",
    // 2: the change log (see the module documentation of `postgres`): the last epoch
    // given out, a row every transaction with notices locks and bumps, so epochs follow
    // commit order; and the notices, each with the node that announced it and when.
    // Nodes share the database from then on: no claim.
    "CREATE TABLE vaultd_epoch (one boolean PRIMARY KEY DEFAULT true CHECK (one), \
                                epoch bigint NOT NULL); \
     INSERT INTO vaultd_epoch (epoch) VALUES (0); \
     CREATE TABLE vaultd_changes (epoch bigint PRIMARY KEY, origin bytea NOT NULL, \
                                  notice bytea NOT NULL, \
                                  at timestamptz NOT NULL DEFAULT clock_timestamp()); \
     CREATE INDEX vaultd_changes_at ON vaultd_changes (at); \
     DROP TABLE vaultd_claim",
];

/// The advisory lock key migrations hold ("vaultd" in ASCII).
const MIGRATION_LOCK: i64 = 0x7661_756c_7464;

const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS vaultd_schema (\
     one boolean PRIMARY KEY DEFAULT true CHECK (one), \
     version integer NOT NULL, \
     vault_id bytea NOT NULL)";

/// What the database holds: its schema version and vault, if vaultd ever created them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaState {
    /// The schema version, 0 before vaultd first ran against the database.
    pub version: i32,
    /// The vault the database belongs to.
    pub vault_id: Option<VaultId>,
}

/// Creates or migrates the schema to [`VERSION`] and returns the vault's identity.
pub(super) async fn migrate(client: &mut Client) -> Result<VaultId, StoreError> {
    let failed = |e: tokio_postgres::Error| StoreError::Postgres(e.into());
    let txn = client.transaction().await.map_err(failed)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    txn.batch_execute(SCHEMA_TABLE).await.map_err(failed)?;
    let state = read_state(&txn).await?;
    if state.version > VERSION {
        return Err(newer(state.version));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(usize_of(state.version)) {
        txn.batch_execute(sql).await.map_err(|e| {
            StoreError::Schema(format!("migrating to version {} failed: {e}", index + 1))
        })?;
    }
    let vault_id = match state.vault_id {
        Some(id) => id,
        None => VaultId::generate()?,
    };
    txn.execute(
        "INSERT INTO vaultd_schema (version, vault_id) VALUES ($1, $2) \
         ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
        &[&VERSION, &vault_id.as_bytes().as_slice()],
    )
    .await
    .map_err(failed)?;
    txn.commit().await.map_err(failed)?;
    Ok(vault_id)
}

/// The schema's state, read without changing anything; a newer schema is an error.
pub(super) async fn inspect(client: &Client) -> Result<SchemaState, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass('vaultd_schema') IS NOT NULL", &[])
        .await
        .map_err(|e| StoreError::Postgres(e.into()))?
        .try_get::<_, bool>(0)
        .map_err(|e| StoreError::Postgres(e.into()))?;
    if !exists {
        return Ok(SchemaState {
            version: 0,
            vault_id: None,
        });
    }
    let state = read_state(client).await?;
    if state.version > VERSION {
        return Err(newer(state.version));
    }
    Ok(state)
}

async fn read_state(
    client: &impl tokio_postgres::GenericClient,
) -> Result<SchemaState, StoreError> {
    let failed = |e: tokio_postgres::Error| StoreError::Postgres(e.into());
    let row = client
        .query_opt("SELECT version, vault_id FROM vaultd_schema", &[])
        .await
        .map_err(failed)?;
    let Some(row) = row else {
        return Ok(SchemaState {
            version: 0,
            vault_id: None,
        });
    };
    let version: i32 = row.try_get(0).map_err(failed)?;
    let id: &[u8] = row.try_get(1).map_err(failed)?;
    if version < 1 {
        return Err(StoreError::Schema(format!(
            "vaultd_schema says version {version}, which no vaultd writes"
        )));
    }
    let vault_id = VaultId::from_bytes(id).ok_or_else(|| {
        StoreError::Schema("the vault id in vaultd_schema is not 16 bytes".into())
    })?;
    Ok(SchemaState {
        version,
        vault_id: Some(vault_id),
    })
}

fn newer(version: i32) -> StoreError {
    StoreError::Schema(format!(
        "the database's schema is version {version}, newer than this vaultd knows ({VERSION}); \
         run the vaultd that wrote it, or a newer one"
    ))
}

fn usize_of(version: i32) -> usize {
    usize::try_from(version).unwrap_or(0)
}
