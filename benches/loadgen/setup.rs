//! The daemon's side of a load-generator run: its files (PKI, policies, configuration),
//! initialisation and unsealing, and the state a phase needs (an API key, secrets,
//! tenants, a root-key rotation).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vault_crypto::session::{Direction, SessionAad, op};
use vault_proto::v1::{self, admin_client::AdminClient, broker_client::BrokerClient};
use vault_testkit::Pki;
use vault_testkit::grpc::open_session;

use super::{OPERATOR, SERVICE, secret};

pub(super) fn write_files(
    dir: &std::path::Path,
    pki: &mut Pki,
    fsync: &str,
    port: u16,
) -> std::path::PathBuf {
    let http = if port == 0 { 0 } else { port + 1 };
    let server = pki.server(&["localhost"]);
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
    std::fs::create_dir(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/bench.toml"),
        format!(
            "[[grant]]\nid = \"loadgen\"\nidentities = [\"{SERVICE}\"]\noperations = [\"lease\"]\n\
             tenants = [\"*\"]\nenvironments = [\"live\"]\nsecrets = [\"**\"]\nmax_ttl = \"30m\"\n\
             max_active_leases = 10000000\n\n\
             [[grant]]\nid = \"verifier\"\nidentities = [\"{SERVICE}\"]\n\
             operations = [\"apikeys.verify\"]\ntenants = [\"*\"]\nenvironments = [\"live\"]\n\n\
             [[grant]]\nid = \"transit\"\nidentities = [\"{SERVICE}\"]\n\
             operations = [\"transit.encrypt\", \"transit.decrypt\"]\ntenants = [\"acme\"]\n\
             environments = [\"live\"]\n\n\
             [[role]]\nid = \"operator\"\nidentities = [\"{OPERATOR}\"]\n\
             permissions = [\"status\", \"unseal\", \"secrets.write\", \"keys.rotate\", \"apikeys.issue\"]\n"
        ),
    )
    .unwrap();
    let config = dir.join("vaultd.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\ngrpc = \"127.0.0.1:{port}\"\nhttp = \"127.0.0.1:{http}\"\n\
             [tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n\
             [storage]\npath = \"vault.redb\"\n[policy]\ndir = \"policies\"\n\
             [audit]\npath = \"audit.jsonl\"\nfsync = \"{fsync}\"\n\
             [leases]\nmax_total = 10000000\ndefault_ttl = \"1s\"\n"
        ),
    )
    .unwrap();
    config
}

/// Initialises with one share, unseals and stores the secret leased; returns the share.
pub(super) async fn prepare(
    admin: &mut AdminClient<Channel>,
    broker: &mut BrokerClient<Channel>,
) -> Vec<u8> {
    let session = open_session(broker, OPERATOR).await.unwrap();
    let shares = admin
        .init(v1::InitRequest {
            session_id: session.id.clone(),
            threshold: 1,
            share_count: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .shares;
    let share = session
        .key
        .open(
            &SessionAad::share(op::INIT, Direction::ToClient, 0),
            &shares[0].envelope,
        )
        .unwrap();
    let sealed = session
        .key
        .seal(
            &SessionAad::share(op::UNSEAL, Direction::ToDaemon, 0),
            share.expose_secret(),
        )
        .unwrap();
    admin
        .unseal(v1::UnsealRequest {
            session_id: session.id.clone(),
            share: Some(v1::SealedPayload { envelope: sealed }),
            ..Default::default()
        })
        .await
        .unwrap();
    let aad = SessionAad::secret_value(op::PUT_SECRET, "acme", "live", "byok/openai");
    admin
        .put_secret(v1::PutSecretRequest {
            session_id: session.id.clone(),
            secret: Some(secret()),
            kind: v1::SecretKind::Byok as i32,
            value: Some(v1::SealedPayload {
                envelope: session
                    .key
                    .seal(&aad, b"sk-loadgen-0123456789abcdef")
                    .unwrap(),
            }),
        })
        .await
        .unwrap();
    share.expose_secret().to_vec()
}

/// Issues an API key without rate limits or quota; returns its text.
pub(super) async fn issue_key(channel: &Channel) -> String {
    let session = open_session(&mut BrokerClient::new(channel.clone()), OPERATOR)
        .await
        .unwrap();
    let issued = AdminClient::new(channel.clone())
        .issue_api_key(v1::IssueApiKeyRequest {
            session_id: session.id.clone(),
            tenant: "acme".into(),
            environment: v1::Environment::Live as i32,
            scopes: vec!["proxy:*".into()],
            limits: Some(v1::RateLimits::default()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let info = issued.info.unwrap();
    let key = session
        .key
        .open(
            &SessionAad::issued_api_key("acme", "live", &info.key_id),
            &issued.api_key.unwrap().envelope,
        )
        .unwrap();
    String::from_utf8(key.expose_secret().to_vec()).unwrap()
}

/// Stores one secret for each of `count` tenants, 64 at a time.
pub(super) async fn add_tenants(channel: &Channel, count: usize) {
    put_secrets(std::slice::from_ref(channel), "tenant", count, 0, 64).await;
}

/// Stores `count` secrets from `callers` concurrent callers spread over `channels`, the
/// i-th in tenant `{prefix}-{i % tenants}` (`tenants` 0: a new tenant for each); returns
/// how long it took.
pub(super) async fn put_secrets(
    channels: &[Channel],
    prefix: &str,
    count: usize,
    tenants: usize,
    callers: usize,
) -> Duration {
    let mut broker = BrokerClient::new(channels[0].clone());
    let session = Arc::new(open_session(&mut broker, OPERATOR).await.unwrap());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for caller in 0..callers {
        let prefix = prefix.to_owned();
        let channel = channels[caller % channels.len()].clone();
        let (session, next) = (Arc::clone(&session), Arc::clone(&next));
        writers.push(tokio::spawn(async move {
            let mut admin = AdminClient::new(channel);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let tenant = format!("{prefix}-{}", i.checked_rem(tenants).unwrap_or(i));
                let name = format!("byok/x{i}");
                let aad = SessionAad::secret_value(op::PUT_SECRET, &tenant, "live", &name);
                let envelope = session.key.seal(&aad, b"sk-bench").unwrap();
                admin
                    .put_secret(v1::PutSecretRequest {
                        session_id: session.id.clone(),
                        secret: Some(v1::SecretRef {
                            tenant,
                            environment: v1::Environment::Live as i32,
                            name,
                        }),
                        kind: v1::SecretKind::Byok as i32,
                        value: Some(v1::SealedPayload { envelope }),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    started.elapsed()
}

/// Rotates the root key with `share`; returns how long it took.
pub(super) async fn rotate_root(channel: &Channel, share: &[u8]) -> Duration {
    let mut broker = BrokerClient::new(channel.clone());
    let session = open_session(&mut broker, OPERATOR).await.unwrap();
    let sealed = session
        .key
        .seal(
            &SessionAad::share(op::ROTATE_ROOT_KEY, Direction::ToDaemon, 0),
            share,
        )
        .unwrap();
    let started = Instant::now();
    AdminClient::new(channel.clone())
        .rotate_root_key(v1::RotateRootKeyRequest {
            session_id: session.id.clone(),
            shares: vec![v1::SealedPayload { envelope: sealed }],
        })
        .await
        .unwrap();
    started.elapsed()
}
