//! Gateway overhead per request: the same POST sent straight to a local mock
//! provider, and through the gateway (API-key verification, cached lease, forward,
//! usage event) to that provider, over one kept-alive connection each. The difference
//! is what the gateway adds; the ratio is the figure to compare across machines. The
//! gateway runs with its default configuration: verifications are reused by the vault
//! client for vaultd's `[apikeys] cache` (5 s), so most requests ask vaultd nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use billing_gateway::Gateway;
use billing_gateway::config::Config;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use vault_client::{
    ApiKeyRate, ApiKeySpec, Client, Environment, ExposeSecret, SecretPath, SecretValue,
};
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

async fn mock_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"{\"ok\":true}"),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// Sends `iterations` POSTs to `url` with the API key `key` over one connection;
/// returns the time taken.
async fn drive(addr: SocketAddr, path: &str, key: &str, iterations: u64) -> Duration {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let started = Instant::now();
    for _ in 0..iterations {
        sender.ready().await.unwrap();
        let request = Request::post(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"prompt\":\"hello\"}")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let _ = response.into_body().collect().await.unwrap();
    }
    started.elapsed()
}

fn overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut fixture = Fixture::new(&FixtureOptions::default());
    let vaultd = VaultProcess::start(&fixture);
    let endpoint = format!("https://localhost:{}", vaultd.grpc.port());
    let operator = fixture.client_files(OPERATOR);
    let gateway_files = fixture.client_files("spiffe://billing.example/svc/gateway");
    let dir = fixture.path("gateway");
    std::fs::create_dir(&dir).unwrap();
    let (upstream, gateway, key) = runtime.block_on(async {
        let operator = Client::builder()
            .endpoint(&endpoint)
            .ca_cert(&operator.ca)
            .client_cert(&operator.cert, &operator.key)
            .build()
            .unwrap();
        let share = operator.init(1, 1).await.unwrap().pop().unwrap();
        operator.unseal(&share, None).await.unwrap();
        let path = SecretPath {
            tenant: "acme".into(),
            environment: Environment::Live,
            name: "byok/openai".into(),
        };
        operator
            .put_secret(&path, vault_client::proto::SecretKind::Byok, &SecretValue::from_vec(b"sk-bench".to_vec()))
            .await
            .unwrap();
        let upstream = mock_upstream().await;
        let mut spec = ApiKeySpec::new("acme", Environment::Live);
        spec.scopes = vec!["proxy:openai".into()];
        spec.rate = ApiKeyRate::Limits { burst: 0, per_minute: 0, per_day: 0 };
        let (key, _) = operator.issue_api_key(&spec).await.unwrap();
        let key = key.expose_secret().to_owned();
        std::fs::write(
            dir.join("gateway.toml"),
            format!(
                "listen = \"127.0.0.1:0\"\nusage_log = \"usage.jsonl\"\n\
                 [vault]\nendpoints = [\"{endpoint}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nlease_ttl = \"300s\"\n\
                 [providers.openai]\nupstream = \"http://{upstream}\"\n",
                gateway_files.ca.display(),
                gateway_files.cert.display(),
                gateway_files.key.display()
            ),
        )
        .unwrap();
        let config = Config::load(&dir.join("gateway.toml")).unwrap();
        let (gateway, _serving) = Gateway::new(&config).unwrap().bind(config.listen).await.unwrap();
        // Warm the caches (and wait for the revocation watch that lets them cache).
        drive(gateway, "/v1/proxy/openai/v1/chat", &key, 200).await;
        (upstream, gateway, key)
    });

    let mut group = c.benchmark_group("gateway");
    group.bench_function("direct_to_upstream", |b| {
        b.iter_custom(|n| runtime.block_on(drive(upstream, "/v1/chat", &key, n)));
    });
    group.bench_function("through_gateway", |b| {
        b.iter_custom(|n| runtime.block_on(drive(gateway, "/v1/proxy/openai/v1/chat", &key, n)));
    });
    group.finish();
    drop(vaultd);
}

criterion_group!(benches, overhead);
criterion_main!(benches);
