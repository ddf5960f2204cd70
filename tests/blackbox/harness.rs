//! A daemon on loopback with a generated PKI, real files and real mutual TLS, and
//! clients for it. The daemon runs in this process (`Daemon::open` + `serve`), so a
//! test can restart it; clients reach it only over TCP with certificates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::transport::Channel;
use vault_crypto::clock::SharedClock;
use vault_crypto::session::{Direction, SessionAad, op};
use vault_proto::v1::{self, admin_client::AdminClient, broker_client::BrokerClient};
use vault_testkit::Issued;
pub(crate) use vault_testkit::fixture::{Fixture, FixtureOptions as Options, OPERATOR};
use vault_testkit::grpc::{ClientSession, channel, client_config, open_session};
use vaultd::config::Config;
use vaultd::daemon::{Daemon, Running};

/// The billing gateway of `policies/billing-gateway.toml`: leases `byok/*` anywhere.
pub(crate) const GATEWAY: &str = "spiffe://billing.example/svc/gateway";
/// A per-tenant worker of `policies/tenant-workers.toml`, for tenant `acme`.
pub(crate) const ACME_WORKER: &str = "spiffe://billing.example/tenant/acme/svc/worker";
/// Matches no grant or role.
pub(crate) const OUTSIDER: &str = "spiffe://billing.example/svc/outsider";

pub(crate) struct TestVault {
    pub(crate) fixture: Fixture,
    /// The daemon's clock: the system's unless a test moves its own.
    pub(crate) clock: SharedClock,
    pub(crate) running: Option<Running>,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
}

/// A test's request failed with this status; panics otherwise.
#[track_caller]
pub(crate) fn expect_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
) -> tonic::Status {
    match result {
        Err(status) if status.code() == code => status,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

impl TestVault {
    /// An uninitialised daemon.
    pub(crate) async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub(crate) async fn start_with(options: Options) -> Self {
        Self::start_on(options, vault_crypto::clock::system()).await
    }

    /// An uninitialised daemon reading the time from `clock`.
    pub(crate) async fn start_on(options: Options, clock: SharedClock) -> Self {
        let mut vault = Self {
            fixture: Fixture::new(&options),
            clock,
            running: None,
            grpc: "127.0.0.1:0".parse().unwrap(),
            http: "127.0.0.1:0".parse().unwrap(),
        };
        vault.boot().await;
        vault
    }

    /// Initialises (2 of 3) and unseals; returns the three shares.
    pub(crate) async fn unsealed() -> (Self, Vec<Vec<u8>>) {
        Self::unsealed_with(Options::default()).await
    }

    pub(crate) async fn unsealed_with(options: Options) -> (Self, Vec<Vec<u8>>) {
        Self::unsealed_on(options, vault_crypto::clock::system()).await
    }

    /// Initialised and unsealed, reading the time from `clock`.
    pub(crate) async fn unsealed_on(options: Options, clock: SharedClock) -> (Self, Vec<Vec<u8>>) {
        let mut vault = Self::start_on(options, clock).await;
        let shares = vault.init(2, 3).await;
        vault.unseal(&shares[..2]).await;
        (vault, shares)
    }

    async fn boot(&mut self) {
        let config = Config::load(&self.fixture.config).unwrap();
        let running = Daemon::open_with_clock(config, Arc::clone(&self.clock))
            .unwrap()
            .serve()
            .await
            .unwrap();
        self.grpc = running.grpc_addr;
        self.http = running.http_addr;
        self.running = Some(running);
    }

    /// Stops the daemon (graceful) and starts it again on the same files; sealed.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown().await;
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.fixture.path(name)
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.fixture.socket()
    }

    pub(crate) fn cert(&mut self, identity: &str) -> Issued {
        self.fixture.cert(identity)
    }

    pub(crate) fn channel_as(&mut self, identity: &str) -> Channel {
        let cert = self.cert(identity);
        channel(
            self.grpc,
            client_config(&self.fixture.pki.ca_pem, Some(&cert)),
        )
    }

    pub(crate) fn admin_as(&mut self, identity: &str) -> AdminClient<Channel> {
        AdminClient::new(self.channel_as(identity))
    }

    pub(crate) fn admin(&mut self) -> AdminClient<Channel> {
        self.admin_as(OPERATOR)
    }

    /// `ListSecrets` of `tenant` as `identity`.
    pub(crate) async fn list_secrets_as(
        &mut self,
        identity: &str,
        tenant: &str,
    ) -> Result<v1::ListSecretsResponse, tonic::Status> {
        self.admin_as(identity)
            .list_secrets(v1::ListSecretsRequest {
                tenant: tenant.into(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub(crate) fn broker(&mut self, identity: &str) -> BrokerClient<Channel> {
        BrokerClient::new(self.channel_as(identity))
    }

    /// A broker client and an open session for `identity`.
    pub(crate) async fn session(
        &mut self,
        identity: &str,
    ) -> (BrokerClient<Channel>, ClientSession) {
        let mut broker = self.broker(identity);
        let session = open_session(&mut broker, identity).await.unwrap();
        (broker, session)
    }

    /// Initialises over gRPC as the operator; returns the shares' bytes.
    pub(crate) async fn init(&mut self, threshold: u32, count: u32) -> Vec<Vec<u8>> {
        let (_, session) = self.session(OPERATOR).await;
        let response = self
            .admin()
            .init(v1::InitRequest {
                session_id: session.id.clone(),
                threshold,
                share_count: count,
            })
            .await
            .unwrap()
            .into_inner();
        opened_shares(&session, op::INIT, &response.shares)
    }

    /// Submits `shares` one by one as the operator; returns the last answer.
    pub(crate) async fn unseal(&mut self, shares: &[Vec<u8>]) -> v1::UnsealResponse {
        let (_, session) = self.session(OPERATOR).await;
        let mut admin = self.admin();
        let mut nonce = String::new();
        let mut last = None;
        for share in shares {
            let response = admin
                .unseal(unseal_request(&session, share, &nonce))
                .await
                .unwrap()
                .into_inner();
            nonce.clone_from(&response.nonce);
            last = Some(response);
        }
        last.unwrap()
    }

    /// Stores a secret as the operator; returns its metadata.
    pub(crate) async fn put_secret(
        &mut self,
        tenant: &str,
        env: &str,
        name: &str,
        value: &[u8],
    ) -> v1::SecretMetadata {
        let (_, session) = self.session(OPERATOR).await;
        self.admin()
            .put_secret(put_request(&session, tenant, env, name, value))
            .await
            .unwrap()
            .into_inner()
    }

    /// Rotates a secret as the operator.
    pub(crate) async fn rotate_secret(
        &mut self,
        tenant: &str,
        env: &str,
        name: &str,
        value: &[u8],
        grace_seconds: Option<u64>,
    ) -> v1::SecretMetadata {
        let (_, session) = self.session(OPERATOR).await;
        let aad = SessionAad::secret_value(op::ROTATE_SECRET, tenant, env, name);
        self.admin()
            .rotate_secret(v1::RotateSecretRequest {
                session_id: session.id.clone(),
                secret: Some(secret_ref(tenant, env, name)),
                value: Some(v1::SealedPayload {
                    envelope: session.key.seal(&aad, value).unwrap(),
                }),
                grace_seconds,
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Issues an API key as the operator; returns its text (opened from the session)
    /// and what vaultd keeps of it.
    pub(crate) async fn issue_api_key(
        &mut self,
        request: v1::IssueApiKeyRequest,
    ) -> (String, v1::ApiKeyInfo) {
        let (_, session) = self.session(OPERATOR).await;
        let response = self
            .admin()
            .issue_api_key(v1::IssueApiKeyRequest {
                session_id: session.id.clone(),
                ..request
            })
            .await
            .unwrap()
            .into_inner();
        let info = response.info.unwrap();
        (
            open_api_key(&session, &info, &response.api_key.unwrap()),
            info,
        )
    }

    /// Every active lease, as the operator lists them.
    pub(crate) async fn leases(&mut self) -> Vec<v1::LeaseInfo> {
        self.admin()
            .list_leases(v1::ListLeasesRequest::default())
            .await
            .expect("list leases")
            .into_inner()
            .leases
    }

    pub(crate) async fn seal(&mut self) {
        self.admin().seal(v1::SealRequest::default()).await.unwrap();
    }

    pub(crate) fn audit_lines(&self) -> Vec<String> {
        self.fixture.audit_lines()
    }

    /// GETs `path` on the HTTP listener: status code and body.
    pub(crate) async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(self.http).await.unwrap();
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        let code = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }
}

pub(crate) fn env_proto(env: &str) -> i32 {
    match env {
        "live" => v1::Environment::Live as i32,
        "test" => v1::Environment::Test as i32,
        _ => v1::Environment::Unspecified as i32,
    }
}

pub(crate) fn secret_ref(tenant: &str, env: &str, name: &str) -> v1::SecretRef {
    v1::SecretRef {
        tenant: tenant.to_owned(),
        environment: env_proto(env),
        name: name.to_owned(),
    }
}

pub(crate) fn unseal_request(
    session: &ClientSession,
    share: &[u8],
    nonce: &str,
) -> v1::UnsealRequest {
    let aad = SessionAad::share(op::UNSEAL, Direction::ToDaemon, 0);
    v1::UnsealRequest {
        session_id: session.id.clone(),
        share: Some(v1::SealedPayload {
            envelope: session.key.seal(&aad, share).unwrap(),
        }),
        nonce: nonce.to_owned(),
        reset: false,
    }
}

pub(crate) fn put_request(
    session: &ClientSession,
    tenant: &str,
    env: &str,
    name: &str,
    value: &[u8],
) -> v1::PutSecretRequest {
    let aad = SessionAad::secret_value(op::PUT_SECRET, tenant, env, name);
    v1::PutSecretRequest {
        session_id: session.id.clone(),
        secret: Some(secret_ref(tenant, env, name)),
        kind: v1::SecretKind::Byok as i32,
        value: Some(v1::SealedPayload {
            envelope: session.key.seal(&aad, value).unwrap(),
        }),
    }
}

pub(crate) fn lease_request(
    session: &ClientSession,
    tenant: &str,
    env: &str,
    name: &str,
) -> v1::LeaseRequest {
    v1::LeaseRequest {
        session_id: session.id.clone(),
        secret: Some(secret_ref(tenant, env, name)),
        version: None,
        ttl_seconds: 60,
    }
}

/// Opens a leased value with the session that asked for it.
pub(crate) fn open_lease(
    session: &ClientSession,
    request: &v1::LeaseRequest,
    response: &v1::LeaseResponse,
) -> Vec<u8> {
    let secret = request.secret.as_ref().unwrap();
    let env = if secret.environment == v1::Environment::Live as i32 {
        "live"
    } else {
        "test"
    };
    let aad = SessionAad::lease(
        &secret.tenant,
        env,
        &secret.name,
        response.version,
        &response.lease_id,
    );
    session
        .key
        .open(&aad, &response.value.as_ref().unwrap().envelope)
        .unwrap()
        .expose_secret()
        .to_vec()
}

/// Opens an issued API key with the session it was sealed to.
pub(crate) fn open_api_key(
    session: &ClientSession,
    info: &v1::ApiKeyInfo,
    sealed: &v1::SealedPayload,
) -> String {
    let env = if info.environment == v1::Environment::Live as i32 {
        "live"
    } else {
        "test"
    };
    let aad = SessionAad::issued_api_key(&info.tenant, env, &info.key_id);
    let key = session.key.open(&aad, &sealed.envelope).unwrap();
    String::from_utf8(key.expose_secret().to_vec()).unwrap()
}

/// A request for a key of `tenant` in `env` with `scopes`, the default tier.
pub(crate) fn key_request(tenant: &str, env: &str, scopes: &[&str]) -> v1::IssueApiKeyRequest {
    v1::IssueApiKeyRequest {
        tenant: tenant.to_owned(),
        environment: env_proto(env),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// Leases and opens in one go.
/// The caller's revocation stream, subscribed.
pub(crate) async fn watch(broker: &mut BrokerClient<Channel>) -> tonic::Streaming<v1::Revocation> {
    broker
        .watch_revocations(v1::WatchRevocationsRequest {})
        .await
        .expect("watch revocations")
        .into_inner()
}

pub(crate) async fn lease_value(
    broker: &mut BrokerClient<Channel>,
    session: &ClientSession,
    tenant: &str,
    env: &str,
    name: &str,
) -> Result<(v1::LeaseResponse, Vec<u8>), tonic::Status> {
    let request = lease_request(session, tenant, env, name);
    let response = broker.lease(request.clone()).await?.into_inner();
    let value = open_lease(session, &request, &response);
    Ok((response, value))
}

/// A FIFO named `audit.fifo` in a new temporary directory (kept alive by the guard).
pub(crate) fn audit_fifo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    (dir, fifo)
}

/// Sends `signal` to a child process.
pub(crate) fn signal(child: &std::process::Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// Shares vaultd sealed to `session` for `operation`, opened.
pub(crate) fn opened_shares(
    session: &ClientSession,
    operation: &str,
    shares: &[v1::SealedPayload],
) -> Vec<Vec<u8>> {
    shares
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let aad = SessionAad::share(operation, Direction::ToClient, i);
            session
                .key
                .open(&aad, &s.envelope)
                .unwrap()
                .expose_secret()
                .to_vec()
        })
        .collect()
}
