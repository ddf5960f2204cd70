//! Integration tests of vault-audit: real files, real FIFOs, real keys.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // test code: a panic is a failure report

mod garbage;
mod rotation;
mod sink;
mod tamper;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vault_audit::{AuditLog, AuditOptions, ChainKeys, Decision, Event, Report, verify};
use vault_crypto::{MacKey, SigningKey, SystemKey};

/// Chain keys from vault-crypto, sealable on demand.
pub(crate) struct TestKeys {
    mac: MacKey,
    signing: SigningKey,
    sealed: AtomicBool,
}

impl TestKeys {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            mac: SystemKey::generate().unwrap().mac_key().unwrap(),
            signing: SystemKey::generate().unwrap().signing_key().unwrap(),
            sealed: AtomicBool::new(false),
        })
    }

    pub(crate) fn public(&self) -> [u8; 32] {
        self.signing.public_key()
    }

    pub(crate) fn set_sealed(&self, sealed: bool) {
        self.sealed.store(sealed, Ordering::SeqCst);
    }

    fn unsealed(&self) -> bool {
        !self.sealed.load(Ordering::SeqCst)
    }
}

impl ChainKeys for TestKeys {
    fn mac(&self, message: &[u8]) -> Option<[u8; 32]> {
        self.unsealed().then(|| self.mac.sign(message))
    }
    fn sign(&self, message: &[u8]) -> Option<[u8; 64]> {
        self.unsealed().then(|| self.signing.sign(message))
    }
    fn public_key(&self) -> Option<[u8; 32]> {
        self.unsealed().then(|| self.signing.public_key())
    }
}

pub(crate) fn event(i: u64) -> Event {
    Event {
        identity: "spiffe://example.org/ns/gw/sa/gateway".into(),
        operation: "broker.lease".into(),
        tenant: Some("acme".into()),
        environment: Some("prod".into()),
        secret: Some(format!("openai-key-{i}")),
        version: Some(i),
        lease_id: Some(format!("lease-{i}")),
        decision: if i.is_multiple_of(3) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        reason: format!("r{i}"),
        grant: Some("gateway-byok".into()),
        request_id: format!("req-{i}"),
        detail: Default::default(),
    }
}

pub(crate) fn options() -> AuditOptions {
    AuditOptions {
        node: "test-node".into(),
        checkpoint_every: 4,
        ..AuditOptions::default()
    }
}

/// Writes `count` events and an explicit checkpoint, then closes the log.
pub(crate) async fn write_log(path: &Path, count: u64, keys: Arc<TestKeys>) -> Vec<u64> {
    let log = AuditLog::open(path, options(), keys).unwrap();
    let mut seqs = Vec::new();
    for i in 0..count {
        seqs.push(log.append(event(i)).await.unwrap());
    }
    assert!(log.checkpoint().await.unwrap());
    assert_eq!(log.appended(), count);
    seqs
}

pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub(crate) fn verify_lines(lines: &[String], public_key: Option<&[u8; 32]>) -> Report {
    let mut text = lines.join("\n");
    text.push('\n');
    verify(text.as_bytes(), public_key)
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<AuditLog>();
}
