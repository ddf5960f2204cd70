//! `vaultd check-config`: every check that opening and serving make before vaultd
//! answers anything — locked memory, TLS files, policies, the data file (or the
//! PostgreSQL database: reachable over verified TLS, its schema a version this vaultd
//! can use) and the audit log (neither in use by another process), the socket's directory, the listen
//! addresses and, if configured, the auto-unseal token and the files a node joins its
//! cluster with — without changing anything. A configuration it calls ok does
//! not fail `serve` for a reason it could have seen.

use std::fs::{OpenOptions, TryLockError};
use std::path::Path;

use super::{LockedMemory, StartError};
use crate::config::{Config, StorageConfig};
use crate::storage::postgres::{PostgresSettings, PostgresStore};
use crate::storage::redb::RedbStore;

/// A check that failed: the configuration key it concerns, and what is wrong.
#[derive(Debug)]
pub struct Problem {
    /// The configuration key, e.g. `tls` or `storage.path`.
    pub key: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// Runs every check; what failed, in the order `serve` would meet it.
pub fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut note = |key: &'static str, result: Result<(), String>| {
        if let Err(message) = result {
            problems.push(Problem { key, message });
        }
    };
    note(
        "leases.max_sessions",
        LockedMemory::of(config)
            .fits(config)
            .map_err(|e| e.to_string()),
    );
    note(
        "tls",
        crate::tls::server_config(&config.tls)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        "policy.dir",
        vault_policy::PolicySet::load_dir(&config.policy_dir)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    match &config.storage {
        StorageConfig::Redb(path) => note("storage.path", data_file(path)),
        StorageConfig::Postgres(settings) => note("storage.postgres", database(settings)),
    }
    if let Some(token) = &config.seal.pkcs11 {
        // serve starts without it (sealed, for custodians' shares), but an operator
        // who configured auto-unseal wants to know it would not work.
        note(
            "seal.pkcs11",
            token.probe().map_err(|e| {
                format!("{e}; vaultd would start sealed and wait for custodians' shares")
            }),
        );
    }
    if let Some(join) = &config.cluster.join {
        note("cluster.join", join_files(join));
    }
    note("audit.path", audit_log(&config.audit.path));
    if let Some(socket) = &config.listen.socket {
        note("listen.socket", directory_of(socket));
    }
    for (key, addr) in [
        ("listen.grpc", config.listen.grpc),
        ("listen.http", config.listen.http),
    ] {
        note(
            key,
            std::net::TcpListener::bind(addr)
                .map(drop)
                .map_err(|e| format!("cannot listen on {addr}: {e}")),
        );
    }
    problems
}

/// The certificate, key and CA a node joins its cluster with load as `serve` loads
/// them (on a runtime of their own: the client watches its files for changes).
fn join_files(join: &crate::config::JoinConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime to check it: {e}"))?;
    runtime.block_on(async {
        crate::cluster::join::client(join)
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// The directory a file goes in exists.
fn directory_of(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(format!("its directory {} does not exist", dir.display()))
        }
        _ => Ok(()),
    }
}

/// The data file's directory exists; an existing data file opens read-only (a redb
/// file, not held by another vaultd, not in need of repair). Nothing is written.
fn data_file(path: &Path) -> Result<(), String> {
    directory_of(path)?;
    if !path.exists() {
        return Ok(());
    }
    RedbStore::check_existing(path).map_err(|e| {
        StartError::Store {
            store: path.display().to_string(),
            source: e.into(),
        }
        .to_string()
    })
}

/// The database answers over verified TLS, and its schema (if vaultd created one) is a
/// version this vaultd can use. Nothing is written.
fn database(settings: &PostgresSettings) -> Result<(), String> {
    PostgresStore::check(settings).map(drop).map_err(|e| {
        StartError::Store {
            store: settings.describe(),
            source: e.into(),
        }
        .to_string()
    })
}

/// The audit log's directory exists; an existing log file can be appended to and
/// is not held by another vaultd.
fn audit_log(path: &Path) -> Result<(), String> {
    directory_of(path)?;
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        // A FIFO or device: opening it for writing would wait for, or write to, its
        // reader. Its existence is what can be checked.
        Ok(_) => return Ok(()),
        Err(_) => return Ok(()),
    }
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot append to {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(format!(
            "{} is in use by another process (another vaultd?)",
            path.display()
        )),
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}
