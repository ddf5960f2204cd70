//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay tests: not
//! an API. Each takes the fuzzer's bytes and panics only when a promise of the daemon
//! is broken; errors are expected, panics are bugs.
//!
//! - [`config`]: a configuration file's text.
//! - [`records`]: stored bytes, as every record type, and as a record of a working
//!   vault whose store was damaged.
//! - [`grpc()`]: a request of `vault.v1.Broker` or `vault.v1.Admin`, served by an
//!   in-process daemon ([`GrpcHarness`]) exactly as the transport hands it over
//!   (`grpc.rs`; the RPCs and their placeholders in `rpcs.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use vault_crypto::SecretValue;
use vault_crypto::shamir::Share;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::names::{Environment, SecretId, SecretKind};
use crate::records::{self, SealRecord, SecretRecord, SystemKeyRecord, TenantRecord};
use crate::storage::{Store, StoreError, StoredValue, Transaction, Write};
use crate::vault::{UnsealOutcome, Vault, VaultOptions};

/// `config`: `data` as the text of `/etc/vaultd/vaultd.toml`. A configuration that
/// loads names only absolute paths and never prints its key's path.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/etc/vaultd");
    let config = match Config::parse(&base.join("vaultd.toml"), text, base) {
        Ok(config) => config,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let tls = &config.tls;
    let paths = [&tls.cert, &tls.key, &config.policy_dir]
        .into_iter()
        .chain(config.storage.redb_path())
        .chain([&config.audit.path])
        .chain(&tls.client_ca)
        .chain(&tls.crls)
        .chain(&config.listen.socket);
    for path in paths {
        assert!(path.is_absolute(), "{} is relative", path.display());
    }
    assert!(tls.client_ca.is_some(), "no client CA, no daemon");
    assert!((1..=64).contains(&config.node.len()));
    assert!(format!("{config:?}").contains("key: \"[redacted]\""));
}

/// `records`: `data` decoded as each record type (a record that decodes encodes back
/// to itself), then written over one record of a working vault's store, which is
/// opened, unsealed and used as far as the damage allows.
///
/// For the damaged store, the first byte picks the record (in key order: `seal`,
/// `secret/…`, `system/…`, `tenant/…`) and the rest replaces its bytes. A single byte
/// leaves the store intact: then everything must work.
pub fn records(data: &[u8]) {
    round_trip::<SealRecord>(data);
    round_trip::<SystemKeyRecord>(data);
    round_trip::<TenantRecord>(data);
    round_trip::<SecretRecord>(data);
    if let Ok(tenant) = records::decode_tenant(b"fuzz", &stored(data)) {
        let again = records::decode_tenant(b"fuzz", &records::encode(&tenant));
        assert_eq!(
            again.ok(),
            Some(tenant),
            "a tenant record is read back as written"
        );
    }
    damaged_store(data);
}

fn stored(data: &[u8]) -> StoredValue {
    StoredValue::from_encoded_record(data.to_vec())
}

fn round_trip<R>(data: &[u8])
where
    R: records::Record + PartialEq + std::fmt::Debug,
{
    match records::decode::<R>(b"fuzz", &stored(data)) {
        Ok(record) => {
            let encoded = records::encode(&record);
            let again = records::decode::<R>(b"fuzz", &encoded);
            assert_eq!(again.ok(), Some(record), "a record is read back as written");
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// A store in memory, for vaults that live for one input.
#[derive(Default)]
struct MemoryStore(RwLock<BTreeMap<Vec<u8>, StoredValue>>);

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<StoredValue>, StoreError> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, StoredValue)>, StoreError> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn transact(&self, txn: Transaction) -> Result<(), StoreError> {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Some(failed) = txn
            .conditions()
            .iter()
            .find(|c| !c.holds(map.get(c.key()).map(StoredValue::as_bytes)))
        {
            return Err(StoreError::Conflict {
                key: failed.key().to_vec(),
            });
        }
        for write in txn.writes() {
            match write {
                Write::Put { key, value } => map.insert(key.clone(), value.clone()),
                Write::Delete { key } => map.remove(key),
            };
        }
        Ok(())
    }
}

/// A working vault's records, made once: its store, its share, the secret it holds
/// and a transit envelope it made.
struct Pristine {
    records: Vec<(Vec<u8>, StoredValue)>,
    share: Zeroizing<Vec<u8>>,
    secret: SecretId,
    envelope: Vec<u8>,
}

const PRISTINE_VALUE: &[u8] = b"sk-pristine-0123456789abcdef";

fn vault_options() -> VaultOptions {
    VaultOptions {
        unseal_timeout: Duration::from_secs(600),
        default_grace: Duration::from_secs(86_400),
        ..VaultOptions::default()
    }
}

fn pristine() -> &'static Pristine {
    static PRISTINE: OnceLock<Pristine> = OnceLock::new();
    PRISTINE.get_or_init(|| {
        let store = Arc::new(MemoryStore::default());
        let vault = Vault::open(Arc::clone(&store) as Arc<dyn Store>, vault_options())
            .expect("a vault opens over an empty store");
        let share = vault
            .init(1, 1)
            .expect("an empty vault initialises")
            .pop()
            .expect("one share was asked for");
        let share_bytes = share.to_bytes();
        vault.unseal(share, None).expect("its own share unseals it");
        let secret = SecretId::parse("acme", "live", "byok/pristine").expect("a valid id");
        let value = SecretValue::from_vec(PRISTINE_VALUE.to_vec());
        vault
            .put_secret(&secret, SecretKind::Byok, &value)
            .expect("an unsealed vault stores a secret");
        let envelope = vault
            .transit_encrypt(&secret.tenant, Environment::Live, b"pristine transit", true)
            .expect("an unsealed vault encrypts")
            .into_bytes();
        let records = store
            .scan_prefix(b"")
            .expect("a memory store scans")
            .into_iter()
            .collect();
        Pristine {
            records,
            share: share_bytes,
            secret,
            envelope,
        }
    })
}

fn damaged_store(data: &[u8]) {
    let pristine = pristine();
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let intact = bytes.is_empty();
    let mut map: BTreeMap<Vec<u8>, StoredValue> = pristine.records.iter().cloned().collect();
    if !intact
        && let Some((key, _)) = pristine
            .records
            .get(usize::from(pick) % pristine.records.len().max(1))
    {
        map.insert(key.clone(), stored(bytes));
    }
    let store = Arc::new(MemoryStore(RwLock::new(map)));
    let Ok(vault) = Vault::open(store, vault_options()) else {
        assert!(!intact, "an intact store opens");
        return;
    };
    let _ = vault.status();
    let share = Share::from_bytes(&pristine.share).expect("the pristine share parses");
    let unsealed = matches!(vault.unseal(share, None), Ok(UnsealOutcome::Unsealed));
    assert!(
        unsealed || !intact,
        "an intact vault unseals with its share"
    );
    let _ = vault.status();
    let _ = vault.audit_public_key();
    let secret = &pristine.secret;
    let opened = vault.open_secret(secret, None);
    if intact {
        let (value, version) = opened.expect("an intact secret opens");
        assert_eq!((value.expose_secret(), version), (PRISTINE_VALUE, 1));
    }
    let _ = vault.check_leasable(secret, 1);
    let _ = vault.describe_secret(secret);
    let _ = vault.list_secrets(&secret.tenant, None);
    let decrypted = vault.transit_decrypt(&secret.tenant, Environment::Live, &pristine.envelope);
    assert!(decrypted.is_ok() || !intact, "an intact envelope decrypts");
    let _ = vault.transit_encrypt(&secret.tenant, Environment::Test, b"x", true);
    let _ = vault.transit_rewrap(&secret.tenant, Environment::Live, &pristine.envelope);
    let _ = vault.rotate_secret(secret, &SecretValue::from_vec(b"rotated".to_vec()), None);
    let _ = vault.tenant_keys(&secret.tenant);
    let _ = vault.rotate_tenant_key(&secret.tenant);
    let _ = vault.queue_stale_tenants();
    while let Ok(Some(_)) = vault.rewrap_step() {}
    let _ = vault.retire_tenant_keys(&secret.tenant, u32::MAX);
    if let Ok(items) = vault.sweep_candidates(u64::MAX) {
        for item in items {
            if let crate::vault::SweepItem::Expired(id) = item {
                let _ = vault.disable_expired(&id, u64::MAX);
            }
        }
    }
    let _ = vault.erase_tenant(&secret.tenant);
    let _ = vault.seal();
}

mod grpc;
mod rpcs;

pub use grpc::{
    GRPC_PEERS, GRPC_POLICY, GrpcHarness, HarnessError, LEASE_PLACEHOLDER, SEAL_MARKER,
    SESSION_PLACEHOLDER, TRANSIT_PLACEHOLDER, grpc, grpc_input,
};
