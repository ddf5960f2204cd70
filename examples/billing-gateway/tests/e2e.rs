//! End to end on loopback: the real vaultd, the real gateway binary, a mock
//! upstream provider that records the key each request carried, and one that never
//! answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use billing_gateway::keys::digest_hex;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use vault_client::proto::revoke_leases_request::Selector;
use vault_client::{Client, Environment, SecretPath, SecretValue};
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

const GATEWAY_ID: &str = "spiffe://billing.example/svc/gateway";
const ACME_KEY: &str = "vk_live_acme1_4f9c2a7e1b3d5f6081a2c3d4e5f60718";
const GLOBEX_KEY: &str = "vk_live_globex1_0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const NARROW_KEY: &str = "vk_live_acme2_99887766554433221100aabbccddeeff";

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

/// POSTs `body` to the gateway; returns the status and the body.
async fn post(
    gateway: SocketAddr,
    path: &str,
    key: Option<&str>,
    idempotency: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
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
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
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

fn secret(tenant: &str) -> SecretPath {
    SecretPath {
        tenant: tenant.into(),
        environment: Environment::Live,
        name: "byok/openai".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_keys_rotation_revocation_seal_and_usage() {
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
    let byok = vault_client::proto::SecretKind::Byok;
    for (tenant, key) in [("acme", "sk-acme-1"), ("globex", "sk-globex-1")] {
        operator
            .put_secret(
                &secret(tenant),
                byok,
                &SecretValue::from_vec(key.as_bytes().to_vec()),
            )
            .await
            .unwrap();
    }

    operator
        .put_secret(
            &SecretPath {
                name: "byok/stalled".into(),
                ..secret("globex")
            },
            byok,
            &SecretValue::from_vec(b"sk-globex-stalled".to_vec()),
        )
        .await
        .unwrap();

    let (upstream, seen) = mock_upstream().await;
    let (stalled, held) = stalled_upstream().await;
    let dir = fixture.path("gateway");
    std::fs::create_dir(&dir).unwrap();
    let keys: String = [(ACME_KEY, "acme1", "acme", "proxy:openai"), (GLOBEX_KEY, "globex1", "globex", "proxy:*"), (NARROW_KEY, "acme2", "acme", "proxy:anthropic")]
        .iter()
        .map(|(key, id, tenant, scope)| {
            format!(
                "[[key]]\nid = \"{id}\"\nsha256 = \"{}\"\ntenant = \"{tenant}\"\nenvironment = \"live\"\nscopes = [\"{scope}\"]\n\n",
                digest_hex(key)
            )
        })
        .collect();
    std::fs::write(dir.join("api-keys.toml"), keys).unwrap();
    let gateway_files = fixture.client_files(GATEWAY_ID);
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nusage_log = \"usage.jsonl\"\napi_keys = \"api-keys.toml\"\n\n\
             [vault]\nendpoints = [\"{endpoint}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nlease_ttl = \"3s\"\n\n\
             [providers.openai]\nupstream = \"http://{upstream}/api\"\n\n\
             [providers.stalled]\nupstream = \"https://{stalled}/api\"\nca = \"{}\"\n",
            gateway_files.ca.display(),
            gateway_files.cert.display(),
            gateway_files.key.display(),
            gateway_files.ca.display()
        ),
    )
    .unwrap();
    let gateway = start_gateway(&dir.join("gateway.toml"));
    let g = gateway.addr;
    let chat = "/v1/proxy/openai/v1/chat/completions";

    // Each tenant's request reaches the upstream with its own key, never another's.
    for _ in 0..3 {
        let (status, body) = post(g, chat, Some(ACME_KEY), None, r#"{"prompt":"acme body"}"#).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"ok\":true}"));
        let (status, _) = post(
            g,
            chat,
            Some(GLOBEX_KEY),
            None,
            r#"{"prompt":"globex body"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    for (auth, body) in seen.lock().unwrap().iter() {
        match (body.contains("acme"), body.contains("globex")) {
            (true, false) => assert_eq!(auth, "Bearer sk-acme-1"),
            (false, true) => assert_eq!(auth, "Bearer sk-globex-1"),
            other => panic!("unexpected upstream body {body}: {other:?}"),
        }
    }
    assert_eq!(seen.lock().unwrap().len(), 6);

    // Refused before anything goes upstream: no key, a bad key, a key without scope.
    for (key, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("vk_live_acme1_wrong"), StatusCode::UNAUTHORIZED),
        (Some(NARROW_KEY), StatusCode::FORBIDDEN),
    ] {
        let (status, _) = post(g, chat, key, None, "{}").await;
        assert_eq!(status, expected, "{key:?}");
    }
    assert_eq!(
        post(g, "/v1/proxy/nope/x", Some(ACME_KEY), None, "{}")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(seen.lock().unwrap().len(), 6);

    // Rotation: picked up within the lease TTL (3 s).
    operator
        .rotate_secret(
            &secret("acme"),
            &SecretValue::from_vec(b"sk-acme-2".to_vec()),
            None,
        )
        .await
        .unwrap();
    let rotated_at = Instant::now();
    loop {
        post(g, chat, Some(ACME_KEY), None, r#"{"prompt":"acme body"}"#).await;
        if seen.lock().unwrap().last().unwrap().0 == "Bearer sk-acme-2" {
            break;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(4),
            "rotation not picked up within the TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revocation: within 1 s the gateway leases again.
    let before: Vec<String> = operator
        .list_leases(Some("acme"), Some(GATEWAY_ID))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.lease_id)
        .collect();
    assert!(!before.is_empty());
    let revoked_at = Instant::now();
    let revoked = operator
        .revoke_leases(Selector::Tenant("acme".into()))
        .await
        .unwrap();
    assert_eq!(revoked as usize, before.len());
    loop {
        post(g, chat, Some(ACME_KEY), None, r#"{"prompt":"acme body"}"#).await;
        let now = operator
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
    let usage = dir.join("usage.jsonl");
    let counted = |key: &str| {
        std::fs::read_to_string(&usage)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("\"idempotency_key\":\"{key}\"")))
            .count()
    };
    let forwarded = seen.lock().unwrap().len();
    assert_eq!(
        post(g, chat, Some(ACME_KEY), Some("req-42"), "{}").await.0,
        StatusCode::OK
    );
    for _ in 0..2 {
        let (status, body) = post(g, chat, Some(ACME_KEY), Some("req-42"), "{}").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    assert_eq!(
        post(g, chat, Some(GLOBEX_KEY), Some("req-42"), "{}")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(counted("req-42"), 2, "once for acme, once for globex");
    assert_eq!(
        seen.lock().unwrap().len(),
        forwarded + 2,
        "retries are not forwarded again"
    );
    assert!(
        std::fs::read_to_string(&usage)
            .unwrap()
            .contains("\"tenant\":\"globex\"")
    );

    // A client that goes away mid-request (here while the gateway is still connecting
    // to the provider) does not keep its Idempotency-Key: its retry is not a 409.
    let stalled_chat = "/v1/proxy/stalled/v1/chat/completions";
    let mut client = TcpStream::connect(g).await.unwrap();
    client
        .write_all(
            format!(
                "POST {stalled_chat} HTTP/1.1\r\nhost: {g}\r\nauthorization: Bearer {GLOBEX_KEY}\r\n\
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
    let (status, body) = loop {
        let (status, body) = post(g, stalled_chat, Some(GLOBEX_KEY), Some("req-43"), "{}").await;
        if status != StatusCode::CONFLICT || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(counted("req-43"), 0, "never sent, never counted");

    // Sealed: 503, and the upstream receives nothing.
    let upstream_count = seen.lock().unwrap().len();
    operator.seal().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // the seal's revocations arrive
    for key in [ACME_KEY, GLOBEX_KEY] {
        let (status, body) = post(g, chat, Some(key), None, r#"{"prompt":"after seal"}"#).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    assert_eq!(seen.lock().unwrap().len(), upstream_count);
    // Unreachable: 503 too.
    drop(vaultd);
    let (status, _) = post(g, chat, Some(ACME_KEY), None, "{}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.lock().unwrap().len(), upstream_count);

    // The gateway's log names requests, never keys or bodies.
    let log = gateway.log.lock().unwrap().join("\n");
    assert!(
        log.contains("tenant=acme") && log.contains("status=503"),
        "{log}"
    );
    for secret in [
        "sk-acme",
        "sk-globex",
        ACME_KEY,
        GLOBEX_KEY,
        "acme body",
        "globex body",
        "after seal",
    ] {
        assert!(!log.contains(secret), "{secret} in the gateway log:\n{log}");
    }
}
