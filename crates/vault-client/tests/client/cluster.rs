//! Three real vaultd processes on one real PostgreSQL database, used through
//! vault-client: revocations made on one node reach the others within a second, a
//! node killed with SIGKILL under lease load costs the client no failed lease, nodes
//! join through an unsealed one without custodians (at start, after a restart, and
//! for a rotated root key), a node cut off from the database stops serving within its
//! bound and serves again once it is back, and `seal --cluster` seals every node for
//! good.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vault_client::proto::revoke_leases_request::Selector;
use vault_client::{ApiKeySpec, Client, ClientBuilder, Environment, Error, SecretValue};
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::postgres::PostgresServer;
use vault_testkit::process::VaultProcess;

use crate::{GATEWAY, eventually, secret};

const NODES: [&str; 3] = ["a", "b", "c"];

/// The identity node `node` joins the others with.
fn node_identity(node: &str) -> String {
    format!("spiffe://billing.example/vaultd/node-{node}")
}

/// Forwards TCP connections to `upstream` until cut: then it drops the connections it
/// carries and refuses new ones, as a network partition would.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = watching.clone();
                tokio::spawn(async move {
                    if *cut.borrow() {
                        return;
                    }
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// PostgreSQL, three nodes' configurations in one fixture (one PKI), node `b` reaching
/// the database through a proxy the test can cut.
struct Cluster {
    _server: PostgresServer,
    fixture: Fixture,
    processes: Vec<Option<VaultProcess>>,
    configs: Vec<PathBuf>,
    proxy: Proxy,
}

impl Cluster {
    async fn start() -> Self {
        let server = PostgresServer::start();
        server.create_database("vaultd");
        let connect = server.connect_string("vaultd");
        let storage = format!(
            "engine = \"postgres\"\n[storage.postgres]\nconnect = \"{connect}\"\nca = \"{}\"\n\
             client_cert = \"{}\"\nclient_key = \"{}\"\ntimeout = \"2s\"\n",
            server.ca.display(),
            server.client_cert.display(),
            server.client_key.display(),
        );
        // The nodes' identities hold node.join through the example policies.
        let mut fixture = Fixture::new(&FixtureOptions {
            storage: Some(storage),
            ..FixtureOptions::default()
        });
        let port = connect
            .split_whitespace()
            .find_map(|part| part.strip_prefix("port="))
            .unwrap()
            .to_owned();
        let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
        // B reaches the database through the proxy.
        let (direct, proxied) = (
            format!("port={port} "),
            format!("port={} ", proxy.addr.port()),
        );
        // Fixed ports, so that each node can list the others to join through.
        let ports: Vec<u16> = NODES
            .iter()
            .map(|_| vault_testkit::fixture::free_addr().port())
            .collect();
        let identities: Vec<String> = NODES.iter().map(|node| node_identity(node)).collect();
        let configs: Vec<PathBuf> = NODES
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let grpc = format!("grpc = \"127.0.0.1:{}\"", ports[i]);
                let mut replace = vec![("grpc = \"127.0.0.1:0\"", grpc.as_str())];
                if *node == "b" {
                    replace.push((&direct, &proxied));
                }
                let path = fixture.node_config(node, &replace);
                let files = fixture.client_files(&identities[i]);
                let others: Vec<String> = (0..NODES.len())
                    .filter(|j| *j != i)
                    .map(|j| format!("\"https://localhost:{}\"", ports[j]))
                    .collect();
                let quoted: Vec<String> = identities.iter().map(|id| format!("{id:?}")).collect();
                let cluster = format!(
                    "\n[cluster]\nnodes = [{}]\n[cluster.join]\nendpoints = [{}]\nca = {:?}\n\
                     cert = {:?}\nkey = {:?}\nretry = \"200ms\"\n",
                    quoted.join(", "),
                    others.join(", "),
                    files.ca,
                    files.cert,
                    files.key,
                );
                let text = std::fs::read_to_string(&path).unwrap() + &cluster;
                std::fs::write(&path, text).unwrap();
                path
            })
            .collect();
        let processes = configs
            .iter()
            .map(|config| Some(VaultProcess::start_with_config(&fixture, config)))
            .collect();
        Self {
            _server: server,
            fixture,
            processes,
            configs,
            proxy,
        }
    }

    /// Starts `node` again on its configuration.
    fn restart(&mut self, node: usize) {
        self.processes[node] = Some(VaultProcess::start_with_config(
            &self.fixture,
            &self.configs[node],
        ));
    }

    fn endpoint(&self, node: usize) -> String {
        let process = self.processes[node].as_ref().unwrap();
        format!("https://localhost:{}", process.grpc.port())
    }

    /// A client for `identity` on `nodes`, in that order.
    fn client(
        &mut self,
        identity: &str,
        nodes: &[usize],
        extra: impl FnOnce(ClientBuilder) -> ClientBuilder,
    ) -> Client {
        let files = self.fixture.client_files(identity);
        let builder = nodes.iter().fold(Client::builder(), |builder, node| {
            builder.endpoint(self.endpoint(*node))
        });
        extra(builder.ca_cert(files.ca).client_cert(files.cert, files.key))
            .build()
            .unwrap()
    }

    fn audit_lines(&self, node: usize) -> Vec<String> {
        std::fs::read_to_string(self.fixture.path(&format!("audit-{}.jsonl", NODES[node])))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many of `node`'s audit records contain `needle`.
    fn audit_count(&self, node: usize, needle: &str) -> usize {
        self.audit_lines(node)
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// Leases until the client's revocation watch is connected and the lease is cached.
async fn cached_lease(client: &Client) {
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            let a = client.lease("acme", Environment::Live, "byok/openai").await;
            let b = client.lease("acme", Environment::Live, "byok/openai").await;
            matches!((a, b), (Ok(a), Ok(b)) if a.lease_id() == b.lease_id())
        })
        .await,
        "the revocation watch never connected"
    );
}

async fn eventually_async<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_database_and_keep_in_step() {
    let mut cluster = Cluster::start().await;
    // Initialised through A and unsealed there by custodians; B and C, started
    // sealed, join through A without them, and both sides audit it.
    let operators: Vec<Client> = (0..3)
        .map(|node| cluster.client(OPERATOR, &[node], |b| b))
        .collect();
    let share = operators[0].init(1, 1).await.unwrap().pop().unwrap();
    operators[0].unseal(&share, None).await.unwrap();
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            root_version(&operators[1]).await == Some(1)
                && root_version(&operators[2]).await == Some(1)
        })
        .await,
        "B and C did not join through A"
    );
    for node in [1, 2] {
        let identity = node_identity(NODES[node]);
        assert!(
            cluster
                .audit_lines(0)
                .iter()
                .any(|l| l.contains("admin.join_cluster")
                    && l.contains(&identity)
                    && l.contains("\"allow\"")),
            "A did not audit {identity} joining"
        );
        assert!(
            cluster
                .audit_lines(node)
                .iter()
                .any(|l| l.contains("system.join") && l.contains("without custodians")),
            "{identity} did not audit its joining"
        );
    }
    // Holding node.join is not enough: the caller must be one of the nodes listed.
    assert!(matches!(
        operators[0].join_cluster().await,
        Err(Error::PermissionDenied { .. })
    ));
    operators[0]
        .put_secret(
            &secret("acme", "byok/openai"),
            vault_client::proto::SecretKind::Byok,
            &SecretValue::from_vec(b"sk-cluster".to_vec()),
        )
        .await
        .unwrap();
    // Written on A, leased from B and C.
    let gateways: Vec<Client> = (0..3)
        .map(|node| cluster.client(GATEWAY, &[node], |b| b))
        .collect();
    for gateway in &gateways[1..] {
        cached_lease(gateway).await;
        assert_eq!(gateway.cached(), 1);
    }

    // An admin revocation on A: B and C end their leases and their clients drop the
    // cached values within a second.
    operators[0]
        .revoke_leases(Selector::Tenant("acme".into()))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || gateways[1].cached() == 0
            && gateways[2].cached() == 0)
        .await,
        "the revocation did not reach B and C within a second"
    );
    for operator in &operators[1..] {
        assert!(operator.list_leases(None, None).await.unwrap().is_empty());
    }

    // A lease issued by B, revoked by its holder through A, ends on B within a second.
    let on_b = gateways[1]
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    let b_has = |id: String| {
        let operator = &operators[1];
        async move {
            operator
                .list_leases(None, None)
                .await
                .unwrap()
                .iter()
                .any(|l| l.lease_id == id)
        }
    };
    assert!(b_has(on_b.lease_id().to_owned()).await);
    gateways[0].revoke(&on_b).await.unwrap();
    assert!(
        eventually_async(Duration::from_secs(1), || {
            let has = b_has(on_b.lease_id().to_owned());
            async move { !has.await }
        })
        .await,
        "the holder's revocation through A did not end B's lease within a second"
    );

    // An API key revoked on A is refused on B and C, and their verifiers drop it
    // within a second.
    let (key, info) = operators[0]
        .issue_api_key(&ApiKeySpec::new("acme", Environment::Live))
        .await
        .unwrap();
    for gateway in &gateways[1..] {
        gateway
            .verify_api_key(&key, Environment::Live, None, 1)
            .await
            .unwrap();
        assert_eq!(gateway.cached_api_keys(), 1);
    }
    operators[0].revoke_api_key(&info.key_id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(1), || gateways[1].cached_api_keys()
            == 0
            && gateways[2].cached_api_keys() == 0)
        .await,
        "the key revocation did not reach B's and C's verifiers within a second"
    );
    for gateway in &gateways[1..] {
        assert!(matches!(
            gateway
                .verify_api_key(&key, Environment::Live, None, 1)
                .await,
            Err(Error::ApiKeyRefused { .. })
        ));
    }

    // Lease load on C first, then A and B: C is killed with SIGKILL midway, and no
    // lease fails (the client fails over).
    let load = cluster.client(GATEWAY, &[2, 0, 1], |b| b.revocation_watch(false));
    let done = Arc::new(AtomicUsize::new(0));
    let runner = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..300 {
                match load.lease("acme", Environment::Live, "byok/openai").await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            failed
        })
    };
    assert!(
        eventually(Duration::from_secs(30), || done.load(Ordering::Relaxed)
            >= 50)
        .await
    );
    cluster.processes[2]
        .as_ref()
        .unwrap()
        .signal(rustix::process::Signal::KILL);
    let at_kill = done.load(Ordering::Relaxed);
    let failed = runner.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} leases failed: {failed:?}",
        failed.len()
    );
    assert!(at_kill < 300, "the load was over before the kill");
    assert_eq!(done.load(Ordering::Relaxed), 300);
    cluster.processes[2] = None;
    // C served until it died, A after it.
    let leases = |node| cluster.audit_count(node, "\"broker.lease\"");
    assert!(
        leases(2) >= 50 && leases(0) > 0,
        "C {} A {}",
        leases(2),
        leases(0)
    );

    // C starts again, sealed, and joins without custodians.
    cluster.restart(2);
    let operator_c = cluster.client(OPERATOR, &[2], |b| b);
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            root_version(&operator_c).await == Some(1)
        })
        .await,
        "C did not join again after its restart"
    );

    // A rotates the root key: B and C, holding only the old one, seal, then join
    // again for the new one and serve.
    assert_eq!(
        operators[0]
            .rotate_root_key(std::slice::from_ref(&share))
            .await
            .unwrap(),
        2
    );
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            root_version(&operators[1]).await == Some(2)
                && root_version(&operator_c).await == Some(2)
        })
        .await,
        "B and C did not take up the rotated root key"
    );
    cluster
        .client(GATEWAY, &[2], |b| b.revocation_watch(false))
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();

    // B's database connection is cut: within its bound (1 s) B refuses leases while A
    // serves; once the connection is back, B serves again.
    let only_b = cluster.client(GATEWAY, &[1], |b| b.revocation_watch(false).max_attempts(1));
    only_b
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    cluster.proxy.cut(true);
    assert!(
        eventually_async(Duration::from_secs(3), || async {
            matches!(
                only_b.lease("acme", Environment::Live, "byok/openai").await,
                Err(Error::Unavailable { .. })
            )
        })
        .await,
        "B kept serving without its database"
    );
    gateways[0]
        .lease("acme", Environment::Live, "byok/openai")
        .await
        .unwrap();
    cluster.proxy.cut(false);
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            only_b
                .lease("acme", Environment::Live, "byok/openai")
                .await
                .is_ok()
        })
        .await,
        "B did not serve again once its database was back"
    );

    // `seal --cluster` on A seals A and B; B audits why.
    operators[0].seal_cluster().await.unwrap();
    assert!(
        eventually_async(Duration::from_secs(1), || async {
            operators[1]
                .status()
                .await
                .is_ok_and(|s| s.state == vault_client::proto::SealState::Sealed as i32)
        })
        .await,
        "B was not sealed within a second"
    );
    assert!(
        cluster
            .audit_lines(1)
            .iter()
            .any(|l| l.contains("system.seal") && l.contains("seal --cluster"))
    );
    // Sealed on purpose, no node joins again: with none unsealed, none could, and B
    // and C do not even ask.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for operator in [&operators[0], &operators[1], &operator_c] {
        assert_eq!(root_version(operator).await, None);
    }
    let asked = |node| cluster.audit_count(node, "admin.join_cluster");
    let before = (asked(0), asked(1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((asked(0), asked(1)), before);
}

/// The root key version of an unsealed node; `None` while it is sealed or unreachable.
async fn root_version(operator: &Client) -> Option<u32> {
    let status = operator.status().await.ok()?;
    (status.state == vault_client::proto::SealState::Unsealed as i32).then_some(status.root_version)
}
