//! `[storage]`: which engine holds the records, and how to reach it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::raw::{SECOND, count, duration, invalid, required};
use crate::storage::postgres::{PostgresSettings, PostgresStore};
use crate::storage::redb::RedbStore;
use crate::storage::{Store, StoreError};

/// Where the records are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// One redb file on this node (`engine = "redb"`, the default).
    Redb(PathBuf),
    /// A PostgreSQL database (`engine = "postgres"`), which several nodes may share.
    Postgres(PostgresSettings),
}

impl StorageConfig {
    /// What the store is, for messages: the redb file, or the PostgreSQL database and
    /// hosts (never the connect string itself).
    pub fn describe(&self) -> String {
        match self {
            Self::Redb(path) => path.display().to_string(),
            Self::Postgres(settings) => settings.describe(),
        }
    }

    /// Opens the store: the redb file (created if missing), or the PostgreSQL database
    /// (its schema created or migrated).
    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Self::Redb(path) => Arc::new(RedbStore::open(path)?),
            Self::Postgres(settings) => Arc::new(PostgresStore::open(settings)?),
        })
    }

    /// How far behind the change log a node may fall before it stops serving leases
    /// and plaintext; `None` for an engine only one node uses.
    pub fn catch_up(&self) -> Option<Duration> {
        match self {
            Self::Redb(_) => None,
            Self::Postgres(settings) => Some(settings.catch_up),
        }
    }

    /// The redb file, if that is the engine.
    pub fn redb_path(&self) -> Option<&PathBuf> {
        match self {
            Self::Redb(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    engine: Option<String>,
    path: Option<PathBuf>,
    postgres: Option<RawPostgres>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    connect: Option<String>,
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    password_file: Option<PathBuf>,
    pool_size: Option<usize>,
    connect_timeout: Option<String>,
    timeout: Option<String>,
    catch_up: Option<String>,
}

pub(super) fn storage(
    raw: RawStorage,
    at: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<StorageConfig, ConfigError> {
    match raw.engine.as_deref() {
        None | Some("redb") => {
            if raw.postgres.is_some() {
                return Err(invalid(
                    "storage.postgres",
                    "set, but storage.engine is \"redb\"; set engine = \"postgres\" to use it",
                ));
            }
            Ok(StorageConfig::Redb(at(required(
                raw.path,
                "storage.path",
                "the redb file holding sealed records",
            )?)))
        }
        Some("postgres") => {
            if raw.path.is_some() {
                return Err(invalid(
                    "storage.path",
                    "is the redb file; with engine = \"postgres\" the records are in the \
                     database storage.postgres.connect names",
                ));
            }
            let pg = required(
                raw.postgres,
                "storage.postgres",
                "engine = \"postgres\" needs the database's connect string and CA",
            )?;
            let client_cert = match (pg.client_cert, pg.client_key) {
                (Some(cert), Some(key)) => Some((at(cert), at(key))),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "storage.postgres.client_cert",
                        "client_cert and client_key go together: set both or neither",
                    ));
                }
            };
            let connect = required(
                pg.connect,
                "storage.postgres.connect",
                "the libpq connection string, e.g. \"host=db.internal user=vaultd dbname=vaultd\"",
            )?;
            // Checked here, so that no message ever repeats a password written into it.
            if PostgresSettings::connect_has_password(&connect) {
                return Err(invalid(
                    "storage.postgres.connect",
                    "holds a password; put it in storage.postgres.password_file (mode 0600) \
                     and take it out of the connect string",
                ));
            }
            Ok(StorageConfig::Postgres(PostgresSettings {
                connect,
                ca: at(required(
                    pg.ca,
                    "storage.postgres.ca",
                    "the CA the server's certificate must chain to; vaultd connects over TLS only",
                )?),
                client_cert,
                password_file: pg.password_file.map(at),
                pool_size: count("storage.postgres.pool_size", pg.pool_size, 8, (1, 256))?,
                connect_timeout: duration(
                    "storage.postgres.connect_timeout",
                    pg.connect_timeout.as_deref(),
                    5 * SECOND,
                    (Duration::from_millis(100), 60 * SECOND),
                )?,
                timeout: duration(
                    "storage.postgres.timeout",
                    pg.timeout.as_deref(),
                    5 * SECOND,
                    (Duration::from_millis(100), 60 * SECOND),
                )?,
                catch_up: duration(
                    "storage.postgres.catch_up",
                    pg.catch_up.as_deref(),
                    SECOND,
                    (Duration::from_millis(200), 60 * SECOND),
                )?,
            }))
        }
        Some(other) => Err(ConfigError::Invalid {
            key: "storage.engine",
            reason: format!("{other:?}: use \"redb\" or \"postgres\""),
        }),
    }
}
