//! End to end on loopback: the real vaultd, the real gateway binary, a mock
//! upstream provider that records the key each request carried, and one that never
//! answers. Platform API keys are issued by vaultd (as the test operator) and
//! verified by it on the gateway's behalf.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use vault_client::proto::revoke_leases_request::Selector;
use vault_client::{
    ApiKeyRate, ApiKeySpec, Client, Environment, ExposeSecret, SecretPath, SecretValue,
};
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

const GATEWAY_ID: &str = "spiffe://billing.example/svc/gateway";
const CHAT: &str = "/v1/proxy/openai/v1/chat/completions";
/// Well-formed (its checksum matches) but never issued.
const UNKNOWN_KEY: &str = "vk_live_4f9XbQ2mT0aZ_hV3kP9sQ2wE5rT7yU1iO3pAs1cljRS";

/// What the mock provider saw: the auth header and the body of each request.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn mock_upstream() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let log = Arc::clone(&log);
                        async move {
                            let auth = request
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            log.lock()
                                .unwrap()
                                .push((auth, String::from_utf8_lossy(&body).into_owned()));
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A provider that never answers. The first connection is handed to the test and
/// held open, so the gateway's TLS handshake with it waits; later ones are closed
/// at once, so the gateway answers that the provider could not be reached.
async fn stalled_upstream() -> (SocketAddr, oneshot::Receiver<TcpStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (first, held) = oneshot::channel();
    tokio::spawn(async move {
        let mut first = Some(first);
        while let Ok((tcp, _)) = listener.accept().await {
            if let Some(first) = first.take() {
                let _ = first.send(tcp);
            }
        }
    });
    (addr, held)
}

/// The gateway's answer to one request.
struct Reply {
    status: StatusCode,
    retry_after: Option<u64>,
    body: String,
}

/// POSTs `body` to the gateway.
async fn post(
    gateway: SocketAddr,
    path: &str,
    key: Option<&str>,
    idempotency: Option<&str>,
    body: &str,
) -> Reply {
    let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request =
        Request::post(format!("http://{gateway}{path}")).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(idempotency) = idempotency {
        request = request.header("idempotency-key", idempotency);
    }
    let response = sender
        .send_request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The status of a POST of `{}` to the chat endpoint with `key`.
async fn chat_status(gateway: SocketAddr, key: &str) -> StatusCode {
    post(gateway, CHAT, Some(key), None, "{}").await.status
}

struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(config: &std::path::Path) -> GatewayProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_billing-gateway"))
        .arg("--config")
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .split_once("serving on http://")
        .unwrap_or_else(|| panic!("gateway did not start: {first}"))
        .1
        .parse()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    GatewayProcess { child, addr, log }
}

fn secret(tenant: &str, environment: Environment, name: &str) -> SecretPath {
    SecretPath {
        tenant: tenant.into(),
        environment,
        name: name.into(),
    }
}

/// An unsealed vaultd holding BYOK keys, its operator, and a mock provider.
struct World {
    fixture: Fixture,
    vaultd: Option<VaultProcess>,
    endpoint: String,
    operator: Client,
    upstream: SocketAddr,
    seen: Seen,
}

/// The BYOK keys stored: (tenant, environment, secret name, value).
const BYOK: [(&str, Environment, &str, &str); 4] = [
    ("acme", Environment::Live, "byok/openai", "sk-acme-1"),
    ("acme", Environment::Test, "byok/openai", "sk-acme-test-1"),
    ("globex", Environment::Live, "byok/openai", "sk-globex-1"),
    (
        "globex",
        Environment::Live,
        "byok/stalled",
        "sk-globex-stalled",
    ),
];

async fn world() -> World {
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let vaultd = VaultProcess::start(&fixture);
    let endpoint = format!("https://localhost:{}", vaultd.grpc.port());
    let files = fixture.client_files(OPERATOR);
    let operator = Client::builder()
        .endpoint(&endpoint)
        .ca_cert(&files.ca)
        .client_cert(&files.cert, &files.key)
        .build()
        .unwrap();
    let share = operator.init(1, 1).await.unwrap().pop().unwrap();
    operator.unseal(&share, None).await.unwrap();
    for (tenant, environment, name, value) in BYOK {
        operator
            .put_secret(
                &secret(tenant, environment, name),
                vault_client::proto::SecretKind::Byok,
                &SecretValue::from_vec(value.as_bytes().to_vec()),
            )
            .await
            .unwrap();
    }
    let (upstream, seen) = mock_upstream().await;
    World {
        fixture,
        vaultd: Some(vaultd),
        endpoint,
        operator,
        upstream,
        seen,
    }
}

impl World {
    /// Writes `{name}.toml` for a gateway with the providers `providers` (TOML) and
    /// `vault_extra` in its `[vault]` table; returns its path.
    fn gateway_config(&mut self, name: &str, vault_extra: &str, providers: &str) -> PathBuf {
        let dir = self.fixture.path(name);
        std::fs::create_dir(&dir).unwrap();
        let files = self.fixture.client_files(GATEWAY_ID);
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\nusage_log = \"usage.jsonl\"\n\n\
                 [vault]\nendpoints = [\"{}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
                 lease_ttl = \"3s\"\n{vault_extra}\n\n\
                 [providers.openai]\nupstream = \"http://{}/api\"\n\n{providers}",
                self.endpoint,
                files.ca.display(),
                files.cert.display(),
                files.key.display(),
                self.upstream,
            ),
        )
        .unwrap();
        path
    }

    /// Issues a key of `tenant` in `environment` with `scopes`, `rate` and
    /// `daily_quota`; returns its text and its id.
    async fn issue(
        &self,
        tenant: &str,
        environment: Environment,
        scopes: &[&str],
        rate: ApiKeyRate,
        daily_quota: u64,
    ) -> (String, String) {
        let mut spec = ApiKeySpec::new(tenant, environment);
        spec.scopes = scopes.iter().map(|&s| s.to_owned()).collect();
        spec.rate = rate;
        spec.daily_quota = daily_quota;
        let (key, info) = self.operator.issue_api_key(&spec).await.unwrap();
        (key.expose_secret().to_owned(), info.key_id)
    }

    /// A key of `tenant` in `environment` with `scopes` and no limits.
    async fn unlimited(
        &self,
        tenant: &str,
        environment: Environment,
        scopes: &[&str],
    ) -> (String, String) {
        let rate = ApiKeyRate::Limits {
            burst: 0,
            per_minute: 0,
            per_day: 0,
        };
        self.issue(tenant, environment, scopes, rate, 0).await
    }

    /// Requests the mock provider has received.
    fn forwarded(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Stops vaultd: from now on it is unreachable.
    fn stop_vaultd(&mut self) {
        drop(self.vaultd.take());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_keys_rotation_revocation_seal_and_usage() {
    let mut world = world().await;
    let (acme, acme_id) = world
        .unlimited("acme", Environment::Live, &["proxy:openai"])
        .await;
    // `proxy:*`: every provider, the gateway's wildcard.
    let (globex, _) = world
        .unlimited("globex", Environment::Live, &["proxy:*"])
        .await;
    let (stalled, held) = stalled_upstream().await;
    let config = world.gateway_config(
        "gateway",
        "",
        &format!(
            "[providers.stalled]\nupstream = \"https://{stalled}/api\"\nca = \"{}\"\n",
            world.fixture.path("ca.pem").display()
        ),
    );
    let gateway = start_gateway(&config);
    let g = gateway.addr;
    let seen = Arc::clone(&world.seen);

    // Each tenant's request reaches the upstream with its own key, never another's.
    for _ in 0..3 {
        let reply = post(g, CHAT, Some(&acme), None, r#"{"prompt":"acme body"}"#).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "{\"ok\":true}")
        );
        let reply = post(g, CHAT, Some(&globex), None, r#"{"prompt":"globex body"}"#).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    for (auth, body) in seen.lock().unwrap().iter() {
        match (body.contains("acme"), body.contains("globex")) {
            (true, false) => assert_eq!(auth, "Bearer sk-acme-1"),
            (false, true) => assert_eq!(auth, "Bearer sk-globex-1"),
            other => panic!("unexpected upstream body {body}: {other:?}"),
        }
    }
    assert_eq!(world.forwarded(), 6);
    assert_eq!(
        post(g, "/v1/proxy/nope/x", Some(&acme), None, "{}")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Rotation: picked up within the lease TTL (3 s).
    world
        .operator
        .rotate_secret(
            &secret("acme", Environment::Live, "byok/openai"),
            &SecretValue::from_vec(b"sk-acme-2".to_vec()),
            None,
        )
        .await
        .unwrap();
    let rotated_at = Instant::now();
    loop {
        post(g, CHAT, Some(&acme), None, r#"{"prompt":"acme body"}"#).await;
        if seen.lock().unwrap().last().unwrap().0 == "Bearer sk-acme-2" {
            break;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(4),
            "rotation not picked up within the TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revocation of the BYOK lease: within 1 s the gateway leases again.
    let before: Vec<String> = world
        .operator
        .list_leases(Some("acme"), Some(GATEWAY_ID))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.lease_id)
        .collect();
    assert!(!before.is_empty());
    let revoked_at = Instant::now();
    let revoked = world
        .operator
        .revoke_leases(Selector::Tenant("acme".into()))
        .await
        .unwrap();
    assert_eq!(revoked as usize, before.len());
    loop {
        post(g, CHAT, Some(&acme), None, r#"{"prompt":"acme body"}"#).await;
        let now = world
            .operator
            .list_leases(Some("acme"), Some(GATEWAY_ID))
            .await
            .unwrap();
        if now.iter().any(|l| !before.contains(&l.lease_id)) {
            assert_eq!(seen.lock().unwrap().last().unwrap().0, "Bearer sk-acme-2");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the revocation took longer than 1 s to take effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Idempotent retries are counted once.
    let usage = config.parent().unwrap().join("usage.jsonl");
    let counted = |key: &str| {
        std::fs::read_to_string(&usage)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("\"idempotency_key\":\"{key}\"")))
            .count()
    };
    let forwarded = world.forwarded();
    assert_eq!(
        post(g, CHAT, Some(&acme), Some("req-42"), "{}")
            .await
            .status,
        StatusCode::OK
    );
    for _ in 0..2 {
        let reply = post(g, CHAT, Some(&acme), Some("req-42"), "{}").await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    }
    assert_eq!(
        post(g, CHAT, Some(&globex), Some("req-42"), "{}")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(counted("req-42"), 2, "once for acme, once for globex");
    assert_eq!(
        world.forwarded(),
        forwarded + 2,
        "retries are not forwarded again"
    );
    let ledger = std::fs::read_to_string(&usage).unwrap();
    assert!(ledger.contains("\"tenant\":\"globex\""), "{ledger}");
    assert!(
        ledger.contains(&format!("\"key_id\":\"{acme_id}\"")),
        "usage names the key vaultd verified: {ledger}"
    );

    // A client that goes away mid-request (here while the gateway is still connecting
    // to the provider) does not keep its Idempotency-Key: its retry is not a 409.
    let stalled_chat = "/v1/proxy/stalled/v1/chat/completions";
    let mut client = TcpStream::connect(g).await.unwrap();
    client
        .write_all(
            format!(
                "POST {stalled_chat} HTTP/1.1\r\nhost: {g}\r\nauthorization: Bearer {globex}\r\n\
                 idempotency-key: req-43\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut held = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the gateway connects to the stalled provider")
        .unwrap();
    drop(client);
    // The gateway abandons the request: the TLS connection it was opening closes.
    let mut hello = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), held.read_to_end(&mut hello)).await;
    assert!(
        closed.is_ok(),
        "the gateway gives up a request whose client went away"
    );
    // It closes that connection a moment before it gives the key back: a 409 is
    // retried briefly, and only a lasting one fails.
    let deadline = Instant::now() + Duration::from_secs(2);
    let reply = loop {
        let reply = post(g, stalled_chat, Some(&globex), Some("req-43"), "{}").await;
        if reply.status != StatusCode::CONFLICT || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.body);
    assert_eq!(counted("req-43"), 0, "never sent, never counted");

    // Sealed: 503, and the upstream receives nothing.
    let upstream_count = world.forwarded();
    world.operator.seal().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // the seal's revocations arrive
    for key in [&acme, &globex] {
        let reply = post(g, CHAT, Some(key), None, r#"{"prompt":"after seal"}"#).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
    }
    assert_eq!(world.forwarded(), upstream_count);
    // Unreachable: 503 too; but a typo is still refused, here, without vaultd.
    world.stop_vaultd();
    let reply = post(g, CHAT, Some(&acme), None, "{}").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(chat_status(g, &typo(&acme)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(world.forwarded(), upstream_count);

    // The gateway's log names requests, never keys or bodies.
    let log = gateway.log.lock().unwrap().join("\n");
    assert!(
        log.contains("tenant=acme") && log.contains("status=503"),
        "{log}"
    );
    for secret in [
        "sk-acme",
        "sk-globex",
        &acme,
        &globex,
        "acme body",
        "globex body",
        "after seal",
    ] {
        assert!(!log.contains(secret), "{secret} in the gateway log:\n{log}");
    }
}

/// `key` with one character of its secret changed: its checksum no longer matches.
fn typo(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let at = chars.len() - 10;
    chars[at] = if chars[at] == 'x' { 'y' } else { 'x' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_vaultd_refuses_are_refused_by_kind_and_never_forwarded() {
    let mut world = world().await;
    let (acme, _) = world
        .unlimited("acme", Environment::Live, &["proxy:openai"])
        .await;
    let (narrow, _) = world
        .unlimited("acme", Environment::Live, &["proxy:anthropic"])
        .await;
    let (acme_test, _) = world
        .unlimited("acme", Environment::Test, &["proxy:openai"])
        .await;
    let (globex_test, _) = world
        .unlimited("globex", Environment::Test, &["proxy:openai"])
        .await;
    let (doomed, doomed_id) = world
        .unlimited("acme", Environment::Live, &["proxy:openai"])
        .await;
    let (quota, _) = world
        .issue(
            "acme",
            Environment::Live,
            &["proxy:openai"],
            ApiKeyRate::DefaultTier,
            2,
        )
        .await;
    let (bursty, _) = world
        .issue(
            "globex",
            Environment::Live,
            &["proxy:openai"],
            ApiKeyRate::Limits {
                burst: 3,
                per_minute: 0,
                per_day: 0,
            },
            0,
        )
        .await;
    let mut spec = ApiKeySpec::new("acme", Environment::Live);
    spec.scopes = vec!["proxy:openai".into()];
    spec.expires_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    let (expired, _) = world.operator.issue_api_key(&spec).await.unwrap();
    let expired = expired.expose_secret().to_owned();

    let config = world.gateway_config(
        "gateway",
        "",
        "[providers.anthropic]\nupstream = \"http://127.0.0.1:9/never\"\n",
    );
    let gateway = start_gateway(&config);
    let g = gateway.addr;
    assert_eq!(chat_status(g, &acme).await, StatusCode::OK);
    assert_eq!(chat_status(g, &doomed).await, StatusCode::OK);
    let forwarded = world.forwarded();

    // 401: no key, a typo (refused by its checksum, here), a well-formed key vaultd
    // never issued, one that expired. 403: a key without the provider's scope.
    for (key, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer-less"), StatusCode::UNAUTHORIZED),
        (Some(typo(&acme).as_str()), StatusCode::UNAUTHORIZED),
        (Some(UNKNOWN_KEY), StatusCode::UNAUTHORIZED),
        (Some(expired.as_str()), StatusCode::UNAUTHORIZED),
        (Some(narrow.as_str()), StatusCode::FORBIDDEN),
    ] {
        let reply = post(g, CHAT, key, None, "{}").await;
        assert_eq!(reply.status, expected, "{key:?}: {}", reply.body);
        assert_eq!(reply.retry_after, None);
        assert!(
            key.is_none_or(|key| !reply.body.contains(key)),
            "{}",
            reply.body
        );
    }
    // ... and the other way round: acme's key is not for anthropic.
    let reply = post(
        g,
        "/v1/proxy/anthropic/v1/messages",
        Some(&acme),
        None,
        "{}",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(
        world.forwarded(),
        forwarded,
        "nothing refused went upstream"
    );

    // Revoked through vaultd: the revocation reaches the gateway's client (which had
    // this key's verification cached) within a second, and the key is refused.
    world.operator.revoke_api_key(&doomed_id).await.unwrap();
    let revoked_at = Instant::now();
    loop {
        let status = chat_status(g, &doomed).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "a revoked key still served after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let forwarded = world.forwarded();
    assert_eq!(chat_status(g, &doomed).await, StatusCode::UNAUTHORIZED);
    assert_eq!(world.forwarded(), forwarded);

    // The environment is the key's own: a test key spends the tenant's test BYOK key,
    // never its live one, and a tenant without a test key has nothing to spend. (The
    // gateway serves both environments on one path, so a key is never asked for in
    // the other environment: its prefix, covered by its checksum, decides.)
    let reply = post(g, CHAT, Some(&acme_test), None, r#"{"prompt":"test mode"}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        world.seen.lock().unwrap().last().unwrap().0,
        "Bearer sk-acme-test-1"
    );
    let reply = post(g, CHAT, Some(&globex_test), None, "{}").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert!(reply.body.contains("in test"), "{}", reply.body);

    // A daily quota of 2: the third request is refused with the wait until it renews
    // (a key with a quota is verified by vaultd on every request, cache or not).
    for _ in 0..2 {
        assert_eq!(chat_status(g, &quota).await, StatusCode::OK);
    }
    let forwarded = world.forwarded();
    let reply = post(g, CHAT, Some(&quota), None, "{}").await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    let wait = reply.retry_after.expect("a Retry-After");
    assert!((1..=86_400).contains(&wait), "{wait}");
    assert!(reply.body.contains("quota"), "{}", reply.body);
    assert_eq!(world.forwarded(), forwarded);

    // A burst limit of 3 in 10 s. With the client's verification cache, only the
    // verifications that reach vaultd count; a gateway that asks vaultd on every
    // request counts every request.
    let strict = world.gateway_config("strict-gateway", "api_key_cache = 0", "");
    let strict = start_gateway(&strict);
    for _ in 0..3 {
        assert_eq!(chat_status(strict.addr, &bursty).await, StatusCode::OK);
    }
    let forwarded = world.forwarded();
    let reply = post(strict.addr, CHAT, Some(&bursty), None, "{}").await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    let wait = reply.retry_after.expect("a Retry-After");
    assert!((1..=10).contains(&wait), "{wait}");
    assert_eq!(world.forwarded(), forwarded);

    // Stopped: 503, nothing upstream.
    world.stop_vaultd();
    for g in [g, strict.addr] {
        let reply = post(g, CHAT, Some(&acme), None, "{}").await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
    }
    assert_eq!(world.forwarded(), forwarded);

    // No answer and no log line holds a key.
    let log = [gateway.log.lock().unwrap(), strict.log.lock().unwrap()]
        .iter()
        .flat_map(|l| l.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n");
    for key in [
        &acme,
        &narrow,
        &acme_test,
        &globex_test,
        &doomed,
        &quota,
        &bursty,
        &expired,
    ] {
        assert!(
            !log.contains(key.as_str()),
            "a key in the gateway log:\n{log}"
        );
    }
    assert!(
        log.contains("status=401") && log.contains("status=429"),
        "{log}"
    );
}
