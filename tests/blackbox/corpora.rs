//! The fuzz corpora, replayed: every file of `fuzz/corpus/<target>/` goes through the
//! same `fuzzing` function its cargo-fuzz target wraps, so the stable toolchain checks
//! every target on every test run. A missing or empty corpus fails.
//!
//! `write_seed_corpora` (ignored) regenerates the seed files from the crates' APIs:
//! `cargo test --test blackbox corpora::write_seed_corpora -- --ignored`. Seeds hold
//! keys generated on the spot, so each run writes different bytes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Instant;

use prost::Message;
use vault_audit::{AuditLog, AuditOptions, ChainKeys, Decision, Event};
use vault_crypto::envelope::{Aad, Purpose};
use vault_crypto::{Passphrase, RootKey, SystemKey, TenantKey, UnsealKey, shamir, sharefile};
use vault_proto::v1;
use vaultd::config::Config;
use vaultd::fuzzing::{
    GrpcHarness, LEASE_PLACEHOLDER, SEAL_MARKER, SESSION_PLACEHOLDER, TRANSIT_PLACEHOLDER,
    grpc_input,
};
use vaultd::storage::Store;
use vaultd::storage::redb::RedbStore;
use vaultd::vault::{Vault, VaultOptions};

use crate::harness::{Fixture, OPERATOR, Options};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs every file of `target`'s corpus through `run`; names the file that panics.
fn replay(target: &str, run: impl Fn(&[u8])) {
    let dir = corpus(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    let started = Instant::now();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            panic!("{} fails the {target} target", file.display());
        }
    }
    eprintln!(
        "{target}: {} inputs in {:?}",
        files.len(),
        started.elapsed()
    );
}

#[test]
fn envelope() {
    replay("envelope", vault_crypto::fuzzing::envelope);
}

#[test]
fn share() {
    replay("share", vault_crypto::fuzzing::share);
}

#[test]
fn sharefile() {
    replay("sharefile", vault_crypto::fuzzing::sharefile);
}

#[test]
fn policy() {
    replay("policy", vault_policy::fuzzing::policy);
}

#[test]
fn config() {
    replay("config", vaultd::fuzzing::config);
}

#[test]
fn audit() {
    replay("audit", vault_audit::fuzzing::audit);
}

#[test]
fn records() {
    replay("records", vaultd::fuzzing::records);
}

#[test]
fn grpc() {
    let harness = grpc_harness();
    replay("grpc", |data| vaultd::fuzzing::grpc(harness, data));
}

/// The daemon of the `grpc` target, built as `fuzz/src/lib.rs` builds it (audit
/// records to `/dev/null`), with the store in the fixture's directory.
fn grpc_harness() -> &'static GrpcHarness {
    static HARNESS: OnceLock<(Fixture, GrpcHarness)> = OnceLock::new();
    let (_, harness) = HARNESS.get_or_init(|| {
        let (name, text) = vaultd::fuzzing::GRPC_POLICY;
        let fixture = Fixture::new(&Options {
            policies: vec![(name.to_owned(), text.to_owned())],
            ..Options::default()
        });
        let mut config = Config::load(&fixture.config).unwrap();
        config.audit.path = "/dev/null".into();
        let harness = GrpcHarness::new(config, OPERATOR).unwrap();
        (fixture, harness)
    });
    harness
}

// ---------------------------------------------------------------------------------
// Seeds

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// Writes the seed files of every corpus from the crates' own APIs: valid inputs of
/// each kind and a few broken ones. The fuzzers' own finds sit beside them.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the formats change"]
fn write_seed_corpora() {
    envelope_seeds();
    share_seeds();
    policy_seeds();
    config_seeds();
    records_seeds();
    audit_seeds();
    grpc_seeds();
}

fn envelope_seeds() {
    let secret = Aad {
        tenant: "acme",
        environment: "live",
        name: "byok/openai",
        version: 1,
        ..Aad::purpose(Purpose::Secret)
    };
    let tenant_key = TenantKey::generate(1).unwrap();
    let sealed = tenant_key
        .seal(&secret, b"sk-live-0123456789abcdef")
        .unwrap();
    write("envelope", "secret", sealed.as_bytes());
    let empty = tenant_key.seal(&secret, b"").unwrap();
    write("envelope", "empty-plaintext", empty.as_bytes());
    let root = RootKey::generate(3).unwrap();
    let wrapped = root.wrap_tenant_key("acme", &tenant_key).unwrap();
    write("envelope", "wrapped-tenant-key", wrapped.as_bytes());
    let system = root
        .wrap_system_key("audit-mac", &SystemKey::generate().unwrap())
        .unwrap();
    write("envelope", "wrapped-system-key", system.as_bytes());
    let unseal = UnsealKey::generate(1).unwrap();
    write(
        "envelope",
        "seal-record-root",
        unseal.wrap_root_key(&root).unwrap().as_bytes(),
    );

    let bytes = sealed.as_bytes();
    write("envelope", "truncated", &bytes[..bytes.len() - 17]);
    let mut format = bytes.to_vec();
    format[0] = 0x02;
    write("envelope", "unknown-format", format);
    let mut tag = bytes.to_vec();
    *tag.last_mut().unwrap() ^= 1;
    write("envelope", "tampered-tag", tag);
    write("envelope", "header-only", &bytes[..5]);
    write("envelope", "empty", b"");
}

fn share_seeds() {
    let key = UnsealKey::generate(1).unwrap();
    let shares = shamir::split(&key, 2, 3).unwrap();
    write("share", "binary", &shares[0].to_bytes()[..]);
    write("share", "text", shares[1].encode().as_bytes());
    let quorum = format!("{}\n{}\n", &*shares[0].encode(), &*shares[2].encode());
    write("share", "quorum-text", quorum);
    let bodies: Vec<u8> = [&shares[0], &shares[1]]
        .iter()
        .flat_map(|s| s.to_bytes()[..shamir::SHARE_LEN - 4].to_vec())
        .collect();
    write("share", "quorum-bodies", bodies);
    let other = shamir::split(&UnsealKey::generate(2).unwrap(), 2, 2).unwrap();
    let mixed = format!("{}\n{}\n", &*shares[0].encode(), &*other[1].encode());
    write("share", "mixed-sets", mixed);
    let twice = format!("{}\n{}\n", &*shares[0].encode(), &*shares[0].encode());
    write("share", "duplicate", twice);
    let single = shamir::split(&UnsealKey::generate(4).unwrap(), 1, 1).unwrap();
    write("share", "one-of-one", single[0].encode().as_bytes());
    let mut typo = shares[1].encode().to_string();
    typo.replace_range(10..11, if &typo[10..11] == "0" { "1" } else { "0" });
    write("share", "typo", typo);
    write("share", "wrong-prefix", "vs2-00112233");
    write("share", "odd-hex", "vs1-abc");

    let passphrase = Passphrase::new("correct horse battery staple".to_owned());
    let file = sharefile::protect(&shares[0], &passphrase).unwrap();
    write("sharefile", "protected", &file);
    let hex = file.trim().strip_prefix("vsf1-").unwrap();
    let mut bytes = vault_crypto::hex::decode(hex).unwrap().to_vec();
    let encode = |b: &[u8]| format!("vsf1-{}\n", &*vault_crypto::hex::encode(b));
    bytes[1] = 0; // memory below the minimum
    write("sharefile", "weak-memory", encode(&bytes));
    bytes[1] = 1;
    bytes[7] = 17; // more passes than allowed
    write("sharefile", "too-many-passes", encode(&bytes));
    bytes[7] = 3;
    write("sharefile", "truncated", encode(&bytes[..40]));
    write("sharefile", "not-hex", "vsf1-zz\n");
    write("sharefile", "share-not-file", shares[0].encode().as_bytes());
}

fn policy_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for name in ["admins", "billing-gateway", "tenant-workers"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
        write("policy", name, &text);
    }
    let gateway = std::fs::read_to_string(dir.join("billing-gateway.toml")).unwrap();
    let mut with_requests = gateway.into_bytes();
    with_requests.push(0);
    with_requests.extend_from_slice(
        b"spiffe://billing.example/svc/gateway acme live byok/openai lease seal\n\
          spiffe://billing.example/tenant/globex/svc/api globex test webhooks/x transit.decrypt\n",
    );
    write("policy", "gateway-with-requests", with_requests);
    let broken = [
        ("syntax", "[[grant]\nid = \"x\"\n"),
        (
            "unknown-operation",
            "[[grant]]\nid = \"g\"\nidentities = [\"spiffe://a/b\"]\noperations = [\"steal\"]\n\
             tenants = [\"*\"]\nenvironments = [\"live\"]\n",
        ),
        (
            "unbound-capture",
            "[[grant]]\nid = \"g\"\nidentities = [\"spiffe://a/*\"]\noperations = [\"lease\"]\n\
             tenants = [\"{tenant}\"]\nenvironments = [\"*\"]\nsecrets = [\"**\"]\n",
        ),
        (
            "duplicate-id",
            "[[role]]\nid = \"r\"\nidentities = [\"**\"]\npermissions = [\"status\"]\n\
             [[deny]]\nid = \"r\"\nidentities = [\"**\"]\nactions = [\"seal\"]\n",
        ),
        (
            "ttl-too-long",
            "[[grant]]\nid = \"g\"\nidentities = [\"**\"]\noperations = [\"lease\"]\n\
             tenants = [\"*\"]\nenvironments = [\"test\"]\nsecrets = [\"*\"]\nmax_ttl = \"31d\"\n",
        ),
        (
            "deny-everything",
            "[[grant]]\nid = \"all\"\nidentities = [\"**\"]\noperations = [\"lease\", \"transit.encrypt\"]\n\
             tenants = [\"**\"]\nenvironments = [\"*\"]\nsecrets = [\"**\"]\n\
             [[deny]]\nid = \"none\"\nidentities = [\"spiffe://billing.example/**\"]\n\
             actions = [\"lease\", \"seal\"]\ntenants = [\"acme\"]\n",
        ),
        (
            "stars",
            "[[role]]\nid = \"r\"\nidentities = [\"***\"]\npermissions = [\"seal\"]\n",
        ),
    ];
    for (name, text) in broken {
        write("policy", name, text);
    }
}

fn config_seeds() {
    let fixture = Fixture::new(&Options::default());
    write(
        "config",
        "fixture",
        std::fs::read_to_string(&fixture.config).unwrap(),
    );
    let full = r#"node = "vault-1"

[listen]
grpc = "0.0.0.0:8200"
http = "127.0.0.1:8201"
socket = "/run/vaultd/vaultd.sock"

[tls]
cert = "/etc/vaultd/server.pem"
key = "/etc/vaultd/server.key"
client_ca = "/etc/vaultd/client-ca.pem"
crls = ["/etc/vaultd/clients.crl"]
identities = "spiffe-or-dns"
crl_expiry = "ignore"

[storage]
path = "vault.redb"

[policy]
dir = "policies"

[audit]
path = "audit.jsonl"
fsync = "group"
group_commit = "10ms"
write_deadline = "2s"
checkpoint_every = 1000
min_free = "64MiB"
refusals_per_second = 20

[leases]
default_ttl = "60s"
max_total = 100000
max_per_identity = 10000
session_ttl = "1h"
max_sessions = 1024
sessions_per_identity = 64

[limits]
connections_per_identity = 256
watches_per_identity = 64
request_timeout = "30s"
handshakes = 256
handshakes_per_source = 64
first_byte_timeout = "3s"

[keys]
tenant_key_cache = 1024
tenant_rotate_after = 1073741824

[seal]
unseal_timeout = "10m"
default_grace = "24h"
max_grace = "30d"
"#;
    write("config", "every-option", full);
    for (name, from, to) in [
        (
            "no-client-ca",
            "client_ca = \"/etc/vaultd/client-ca.pem\"\n",
            "",
        ),
        ("bad-fsync", "fsync = \"group\"", "fsync = \"never\""),
        (
            "bad-duration",
            "write_deadline = \"2s\"",
            "write_deadline = \"2 parsecs\"",
        ),
        (
            "bad-size",
            "min_free = \"64MiB\"",
            "min_free = \"99999999999999GiB\"",
        ),
        (
            "bad-address",
            "grpc = \"0.0.0.0:8200\"",
            "grpc = \"localhost\"",
        ),
        ("zero-sessions", "max_sessions = 1024", "max_sessions = 0"),
        ("unknown-key", "[storage]", "[storage]\nengine = \"sled\""),
        ("bad-node", "node = \"vault-1\"", "node = \"vault 1\""),
        (
            "zero-cache",
            "tenant_key_cache = 1024",
            "tenant_key_cache = 0",
        ),
        (
            "grace-beyond-max",
            "max_grace = \"30d\"",
            "max_grace = \"1h\"",
        ),
    ] {
        assert!(full.contains(from), "{name}");
        write("config", name, full.replacen(from, to, 1));
    }
    write("config", "not-toml", "[tls\ncert = ");
}

fn records_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("vault.redb")).unwrap());
    let vault = Vault::open(
        Arc::clone(&store) as Arc<dyn Store>,
        VaultOptions::default(),
    )
    .unwrap();
    let share = vault.init(1, 1).unwrap().pop().unwrap();
    vault.unseal(share, None).unwrap();
    let id = vaultd::names::SecretId::parse("acme", "live", "byok/openai").unwrap();
    let value = vaultd::SecretValue::from_vec(b"sk-live-0123456789abcdef".to_vec());
    vault
        .put_secret(&id, vaultd::names::SecretKind::Byok, &value)
        .unwrap();
    vault.rotate_secret(&id, &value, None).unwrap();
    vault.rotate_tenant_key(&id.tenant).unwrap();
    // Each stored record as it is, and behind a byte that picks the record of the
    // same key in the target's own vault (whose keys differ): pristine keys sort as
    // seal, secret/…, three system/…, tenant/….
    for (pick, (key, value)) in store.scan_prefix(b"").unwrap().into_iter().enumerate() {
        let name = String::from_utf8(key).unwrap().replace('/', "-");
        let bytes = value.into_bytes();
        write("records", &name, &bytes);
        let mut picked = vec![u8::try_from(pick).unwrap()];
        picked.extend_from_slice(&bytes);
        write("records", &format!("{name}-in-place"), picked);
        if let Some(cut) = bytes.len().checked_sub(3) {
            write("records", &format!("{name}-truncated"), &bytes[..cut]);
        }
    }
    for pick in 0..6u8 {
        write("records", &format!("intact-{pick}"), [pick]);
    }
}

/// The checkpoint key of the `audit` target, and a MAC key, for a log written here.
struct SeedKeys {
    signing: ring::signature::Ed25519KeyPair,
}

impl ChainKeys for SeedKeys {
    fn mac(&self, message: &[u8]) -> Option<[u8; 32]> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"audit seed mac key");
        ring::hmac::sign(&key, message).as_ref().try_into().ok()
    }
    fn sign(&self, message: &[u8]) -> Option<[u8; 64]> {
        self.signing.sign(message).as_ref().try_into().ok()
    }
    fn public_key(&self) -> Option<[u8; 32]> {
        use ring::signature::KeyPair;
        self.signing.public_key().as_ref().try_into().ok()
    }
}

fn audit_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = || {
        Arc::new(SeedKeys {
            signing: ring::signature::Ed25519KeyPair::from_seed_unchecked(
                &vault_audit::fuzzing::SIGNING_SEED,
            )
            .unwrap(),
        })
    };
    let options = AuditOptions {
        node: "seed".into(),
        min_free: 0,
        ..AuditOptions::default()
    };
    runtime.block_on(async {
        let log = AuditLog::open(&path, options.clone(), keys()).unwrap();
        for (i, decision) in [Decision::Allow, Decision::Deny, Decision::Error]
            .into_iter()
            .enumerate()
        {
            let mut event = Event {
                identity: "spiffe://billing.example/svc/gateway".into(),
                operation: "broker.lease".into(),
                tenant: Some("acme".into()),
                environment: Some("live".into()),
                secret: Some("byok/openai".into()),
                version: Some(1),
                lease_id: Some(format!("l-{i:032x}")),
                decision,
                reason: "grant gateway-byok".into(),
                grant: Some("gateway-byok".into()),
                request_id: format!("{i:016x}"),
                ..Event::default()
            };
            event.detail.insert("quoted".into(), "a \"b\" é\n".into());
            log.append(event).await.unwrap();
        }
        log.checkpoint().await.unwrap();
        log.append(Event {
            identity: "local:uid=0".into(),
            operation: "admin.seal".into(),
            ..Event::default()
        })
        .await
        .unwrap();
    });
    let signed = std::fs::read(&path).unwrap();
    write("audit", "signed", &signed);
    let text = String::from_utf8(signed.clone()).unwrap();
    write(
        "audit",
        "edited",
        text.replacen("byok/openai", "byok/other", 1),
    );
    let lines: Vec<&str> = text.lines().collect();
    let dropped: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    write("audit", "deleted-record", dropped);
    write("audit", "cut-mid-line", &signed[..signed.len() - 20]);
    write("audit", "first-line", format!("{}\n", lines[0]));
    write("audit", "empty", b"");

    // A torn tail, moved aside on reopening: the log continues with a recovery record.
    let mut torn = signed.clone();
    torn.extend_from_slice(b"{\"seq\":9,\"time_ms\":1,\"no");
    std::fs::write(&path, &torn).unwrap();
    runtime.block_on(async {
        let log = AuditLog::open(&path, options.clone(), keys()).unwrap();
        log.checkpoint().await.unwrap();
    });
    write("audit", "recovered", std::fs::read(&path).unwrap());

    // The crate's documented example: signed by another key, so the fixed key refuses it.
    let example = concat!(
        r#"{"seq":0,"time_ms":1795442211189,"node":"vault-1","kind":"start""#,
        r#","detail":{"reason":"new audit log"}"#,
        r#","prev":"0000000000000000000000000000000000000000000000000000000000000000""#,
        r#","chain":"f8a3587e083eef760511e50fed73ecf5ed37d5590766d44299c80f3a767eecd5""#,
        r#","mac":"b3b770766fc2de0faf6f109099b1ebf2dfd5c1419cd6bd005d4c91e6f2b42c33""#,
        r#","sig":null}"#,
        "\n",
    );
    write("audit", "doc-example-start", example);
}

fn grpc_seeds() {
    let secret = |tenant: &str, env: v1::Environment, name: &str| {
        Some(v1::SecretRef {
            tenant: tenant.into(),
            environment: env as i32,
            name: name.into(),
        })
    };
    let sealed = |plaintext: &[u8]| {
        let mut envelope = SEAL_MARKER.to_vec();
        envelope.extend_from_slice(plaintext);
        Some(v1::SealedPayload { envelope })
    };
    let s = || SESSION_PLACEHOLDER.to_owned();
    let live = v1::Environment::Live;
    let canary = || secret("acme", live, "byok/canary");
    let seeds: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        (
            "open-session",
            "/vault.v1.Broker/OpenSession",
            "gateway",
            v1::OpenSessionRequest {
                client_public_key: vec![9; 32],
            }
            .encode_to_vec(),
        ),
        (
            "lease-canary",
            "/vault.v1.Broker/Lease",
            "gateway",
            v1::LeaseRequest {
                session_id: s(),
                secret: canary(),
                version: None,
                ttl_seconds: 30,
            }
            .encode_to_vec(),
        ),
        (
            "lease-canary-worker",
            "/vault.v1.Broker/Lease",
            "worker",
            v1::LeaseRequest {
                session_id: s(),
                secret: canary(),
                version: Some(1),
                ttl_seconds: 0,
            }
            .encode_to_vec(),
        ),
        (
            "lease-outsider",
            "/vault.v1.Broker/Lease",
            "outsider",
            v1::LeaseRequest {
                session_id: s(),
                secret: canary(),
                version: None,
                ttl_seconds: 30,
            }
            .encode_to_vec(),
        ),
        (
            "renew",
            "/vault.v1.Broker/Renew",
            "gateway",
            v1::RenewRequest {
                lease_id: LEASE_PLACEHOLDER.into(),
                ttl_seconds: 60,
            }
            .encode_to_vec(),
        ),
        (
            "revoke",
            "/vault.v1.Broker/Revoke",
            "gateway",
            v1::RevokeRequest {
                lease_id: LEASE_PLACEHOLDER.into(),
            }
            .encode_to_vec(),
        ),
        (
            "watch",
            "/vault.v1.Broker/WatchRevocations",
            "gateway",
            v1::WatchRevocationsRequest {}.encode_to_vec(),
        ),
        (
            "encrypt",
            "/vault.v1.Broker/Encrypt",
            "worker",
            v1::EncryptRequest {
                session_id: s(),
                tenant: "acme".into(),
                environment: live as i32,
                plaintext: sealed(b"card 4242"),
            }
            .encode_to_vec(),
        ),
        (
            "decrypt",
            "/vault.v1.Broker/Decrypt",
            "worker",
            v1::DecryptRequest {
                session_id: s(),
                tenant: "acme".into(),
                environment: live as i32,
                envelope: TRANSIT_PLACEHOLDER.to_vec(),
            }
            .encode_to_vec(),
        ),
        (
            "batch-encrypt",
            "/vault.v1.Broker/BatchEncrypt",
            "worker",
            v1::BatchEncryptRequest {
                session_id: s(),
                tenant: "acme".into(),
                environment: v1::Environment::Test as i32,
                plaintexts: vec![
                    sealed(b"one").unwrap(),
                    v1::SealedPayload {
                        envelope: vec![1; 40],
                    },
                ],
            }
            .encode_to_vec(),
        ),
        (
            "batch-decrypt",
            "/vault.v1.Broker/BatchDecrypt",
            "worker",
            v1::BatchDecryptRequest {
                session_id: s(),
                tenant: "acme".into(),
                environment: live as i32,
                envelopes: vec![TRANSIT_PLACEHOLDER.to_vec(), vec![1; 33]],
            }
            .encode_to_vec(),
        ),
        (
            "verify-api-key",
            "/vault.v1.Broker/VerifyApiKey",
            "gateway",
            v1::VerifyApiKeyRequest {
                session_id: s(),
                api_key: sealed(b"vk_live_abc_def"),
                environment: live as i32,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "rewrap",
            "/vault.v1.Broker/Rewrap",
            "worker",
            v1::RewrapRequest {
                tenant: "acme".into(),
                environment: live as i32,
                envelope: TRANSIT_PLACEHOLDER.to_vec(),
            }
            .encode_to_vec(),
        ),
        (
            "batch-rewrap",
            "/vault.v1.Broker/BatchRewrap",
            "worker",
            v1::BatchRewrapRequest {
                tenant: "acme".into(),
                environment: live as i32,
                envelopes: vec![TRANSIT_PLACEHOLDER.to_vec(), b"x".to_vec()],
            }
            .encode_to_vec(),
        ),
        (
            "status",
            "/vault.v1.Admin/Status",
            "operator",
            v1::StatusRequest {}.encode_to_vec(),
        ),
        (
            "status-local",
            "/vault.v1.Admin/Status",
            "local",
            v1::StatusRequest {}.encode_to_vec(),
        ),
        (
            "status-no-identity",
            "/vault.v1.Admin/Status",
            "no-identity",
            v1::StatusRequest {}.encode_to_vec(),
        ),
        (
            "init",
            "/vault.v1.Admin/Init",
            "operator",
            v1::InitRequest {
                session_id: s(),
                threshold: 2,
                share_count: 3,
            }
            .encode_to_vec(),
        ),
        (
            "unseal",
            "/vault.v1.Admin/Unseal",
            "operator",
            v1::UnsealRequest {
                session_id: s(),
                share: sealed(&[0; 42]),
                nonce: String::new(),
                reset: false,
            }
            .encode_to_vec(),
        ),
        (
            "seal",
            "/vault.v1.Admin/Seal",
            "local",
            v1::SealRequest::default().encode_to_vec(),
        ),
        (
            "rekey",
            "/vault.v1.Admin/Rekey",
            "operator",
            v1::RekeyRequest {
                session_id: s(),
                current_shares: vec![sealed(&[1; 42]).unwrap()],
                threshold: 1,
                share_count: 2,
            }
            .encode_to_vec(),
        ),
        (
            "rotate-root-key",
            "/vault.v1.Admin/RotateRootKey",
            "operator",
            v1::RotateRootKeyRequest {
                session_id: s(),
                shares: vec![sealed(b"not a share").unwrap()],
            }
            .encode_to_vec(),
        ),
        (
            "put-secret",
            "/vault.v1.Admin/PutSecret",
            "operator",
            v1::PutSecretRequest {
                session_id: s(),
                secret: secret("scratch", live, "byok/openai"),
                kind: v1::SecretKind::Byok as i32,
                value: sealed("sk-é-value-with-multibyte-ü-tail".as_bytes()),
            }
            .encode_to_vec(),
        ),
        (
            "rotate-secret",
            "/vault.v1.Admin/RotateSecret",
            "operator",
            v1::RotateSecretRequest {
                session_id: s(),
                secret: secret("scratch", live, "byok/openai"),
                value: sealed(b"sk-rotated-0123456789"),
                grace_seconds: Some(0),
            }
            .encode_to_vec(),
        ),
        (
            "rotate-canary",
            "/vault.v1.Admin/RotateSecret",
            "operator",
            v1::RotateSecretRequest {
                session_id: s(),
                secret: canary(),
                value: sealed(b"replaced"),
                grace_seconds: None,
            }
            .encode_to_vec(),
        ),
        (
            "describe-canary",
            "/vault.v1.Admin/DescribeSecret",
            "operator",
            v1::DescribeSecretRequest { secret: canary() }.encode_to_vec(),
        ),
        (
            "list-secrets",
            "/vault.v1.Admin/ListSecrets",
            "operator",
            v1::ListSecretsRequest {
                tenant: "acme".into(),
                environment: 0,
            }
            .encode_to_vec(),
        ),
        (
            "delete-secret",
            "/vault.v1.Admin/DeleteSecret",
            "operator",
            v1::DeleteSecretRequest {
                secret: secret("scratch", live, "byok/openai"),
            }
            .encode_to_vec(),
        ),
        (
            "erase-tenant",
            "/vault.v1.Admin/EraseTenant",
            "operator",
            v1::EraseTenantRequest {
                tenant: "scratch".into(),
                confirm: "scratch".into(),
            }
            .encode_to_vec(),
        ),
        (
            "rotate-tenant-key",
            "/vault.v1.Admin/RotateTenantKey",
            "operator",
            v1::RotateTenantKeyRequest {
                tenant: "scratch".into(),
            }
            .encode_to_vec(),
        ),
        (
            "describe-tenant-keys",
            "/vault.v1.Admin/DescribeTenantKeys",
            "operator",
            v1::DescribeTenantKeysRequest {
                tenant: "acme".into(),
            }
            .encode_to_vec(),
        ),
        (
            "retire-tenant-keys",
            "/vault.v1.Admin/RetireTenantKeys",
            "operator",
            v1::RetireTenantKeysRequest {
                tenant: "scratch".into(),
                below_version: 2,
            }
            .encode_to_vec(),
        ),
        (
            "list-leases",
            "/vault.v1.Admin/ListLeases",
            "operator",
            v1::ListLeasesRequest {
                tenant: Some("acme".into()),
                identity: None,
            }
            .encode_to_vec(),
        ),
        (
            "revoke-leases",
            "/vault.v1.Admin/RevokeLeases",
            "operator",
            v1::RevokeLeasesRequest {
                selector: Some(v1::revoke_leases_request::Selector::LeaseId(
                    LEASE_PLACEHOLDER.into(),
                )),
            }
            .encode_to_vec(),
        ),
        (
            "reload-policies",
            "/vault.v1.Admin/ReloadPolicies",
            "operator",
            v1::ReloadPoliciesRequest {}.encode_to_vec(),
        ),
        (
            "check-policy",
            "/vault.v1.Admin/CheckPolicy",
            "operator",
            v1::CheckPolicyRequest {
                identity: "spiffe://billing.example/svc/gateway".into(),
                action: "lease".into(),
                tenant: "acme".into(),
                environment: live as i32,
                secret: "byok/openai".into(),
            }
            .encode_to_vec(),
        ),
        (
            "garbage",
            "/vault.v1.Admin/PutSecret",
            "operator",
            vec![0xff; 12],
        ),
    ];
    for (name, rpc, peer, message) in seeds {
        write("grpc", name, grpc_input(rpc, peer, &message));
    }
}
