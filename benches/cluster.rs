//! Lease throughput of one vaultd node against three sharing one PostgreSQL database,
//! in one run on this machine: real `vaultd` processes over mutual TLS, N connections
//! × M leases in flight spread evenly over the nodes, and the CPU time each part took
//! per lease (the nodes, PostgreSQL, this load generator), to say what limits it.
//!
//! ```sh
//! cargo build --release -p vaultd --bin vaultd
//! VAULTD_BIN=target/release/vaultd cargo bench --bench cluster -- [--connections 6] [--inflight 16] [--seconds 10]
//! ```
//!
//! It measures one node, then the same load over three, then one node again (the
//! machine is shared: the two one-node runs show the noise).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vault_client::{Client, Environment, SecretPath, SecretValue};
use vault_proto::v1::{self, broker_client::BrokerClient};
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::grpc::{channel, client_config, open_session};
use vault_testkit::postgres::PostgresServer;
use vault_testkit::process::VaultProcess;

/// The load's identity, with a grant of its own: no bound on its active leases worth
/// hitting.
const SERVICE: &str = "spiffe://billing.example/svc/cluster-bench";

struct Args {
    connections: usize,
    inflight: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut args = Args {
        connections: 6,
        inflight: 16,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("a value after the flag").parse().unwrap();
        match flag.as_str() {
            "--connections" => args.connections = value(),
            "--inflight" => args.inflight = value(),
            "--seconds" => args.seconds = value() as u64,
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

#[path = "common/cpu.rs"]
mod cpu;

/// CPU seconds of process `pid`; 0 once it is gone.
fn cpu_seconds(pid: u32) -> f64 {
    cpu::cpu_seconds(pid).unwrap_or(0.0)
}

/// CPU seconds of every PostgreSQL process now running.
fn postgres_cpu_seconds() -> f64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("postgres"))
        })
        .map(cpu_seconds)
        .sum()
}

/// What one measured run did.
struct Run {
    leases: u64,
    failed: u64,
    seconds: f64,
    nodes_cpu: f64,
    postgres_cpu: f64,
    loadgen_cpu: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.leases as f64 / self.seconds
    }

    fn line(&self, name: &str) -> String {
        let per = |cpu: f64| cpu / self.leases.max(1) as f64 * 1e6;
        format!(
            "{name}: {:.0} leases/s ({} failed); CPU per lease: vaultd {:.1} us, PostgreSQL \
             {:.1} us, load generator {:.1} us; {:.2} of 2 cores busy",
            self.rate(),
            self.failed,
            per(self.nodes_cpu),
            per(self.postgres_cpu),
            per(self.loadgen_cpu),
            (self.nodes_cpu + self.postgres_cpu + self.loadgen_cpu) / self.seconds,
        )
    }
}

/// Leases for `args.seconds` over `args.connections` connections spread over `nodes`,
/// `args.inflight` in flight on each.
async fn measure(fixture: &mut Fixture, nodes: &[&VaultProcess], args: &Args) -> Run {
    let cert = fixture.cert(SERVICE);
    let config = client_config(&fixture.pki.ca_pem, Some(&cert));
    let mut targets = Vec::new();
    for i in 0..args.connections {
        let addr: SocketAddr = nodes[i % nodes.len()].grpc;
        let channel = channel(addr, config.clone());
        let session = open_session(&mut BrokerClient::new(channel.clone()), SERVICE)
            .await
            .unwrap();
        targets.push((channel, session.id));
    }
    let cpu = || {
        (
            nodes.iter().map(|n| cpu_seconds(n.pid())).sum::<f64>(),
            postgres_cpu_seconds(),
            cpu_seconds(std::process::id()),
        )
    };
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let before = cpu();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for (channel, session_id) in &targets {
        for _ in 0..args.inflight {
            let (channel, session_id) = (channel.clone(), session_id.clone());
            let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
            tasks.push(tokio::spawn(async move {
                let mut broker = BrokerClient::new(channel);
                while Instant::now() < deadline {
                    let leased = broker
                        .lease(v1::LeaseRequest {
                            session_id: session_id.clone(),
                            secret: Some(v1::SecretRef {
                                tenant: "acme".into(),
                                environment: v1::Environment::Live as i32,
                                name: "byok/openai".into(),
                            }),
                            version: None,
                            ttl_seconds: 1,
                        })
                        .await;
                    match leased {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!(
                                    "first failed lease: {:?} {}",
                                    status.code(),
                                    status.message()
                                );
                            }
                            0
                        }
                    };
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = cpu();
    Run {
        leases: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds,
        nodes_cpu: after.0 - before.0,
        postgres_cpu: after.1 - before.1,
        loadgen_cpu: after.2 - before.2,
    }
}

fn client(fixture: &mut Fixture, node: &VaultProcess) -> Client {
    let files = fixture.client_files(OPERATOR);
    Client::builder()
        .endpoint(format!("https://localhost:{}", node.grpc.port()))
        .ca_cert(files.ca)
        .client_cert(files.cert, files.key)
        .build()
        .unwrap()
}

async fn run(args: Args) {
    if std::env::var_os("VAULTD_BIN").is_none() {
        eprintln!(
            "set VAULTD_BIN to a release build of vaultd (cargo build --release -p vaultd \
             --bin vaultd; VAULTD_BIN=target/release/vaultd), or a debug build is measured"
        );
        std::process::exit(2);
    }
    let server = PostgresServer::start();
    server.create_database("vaultd");
    let storage = format!(
        "engine = \"postgres\"\n[storage.postgres]\nconnect = \"{}\"\nca = \"{}\"\n\
         client_cert = \"{}\"\nclient_key = \"{}\"\npool_size = 16\n",
        server.connect_string("vaultd"),
        server.ca.display(),
        server.client_cert.display(),
        server.client_key.display(),
    );
    let grant = format!(
        "[[grant]]\nid = \"cluster-bench\"\nidentities = [\"{SERVICE}\"]\n\
         operations = [\"lease\"]\ntenants = [\"acme\"]\nenvironments = [\"live\"]\n\
         secrets = [\"**\"]\nmax_active_leases = 10000000\n"
    );
    let mut fixture = Fixture::new(&FixtureOptions {
        storage: Some(storage),
        policies: vec![("cluster-bench.toml".into(), grant)],
        ..FixtureOptions::default()
    });
    let nodes: Vec<VaultProcess> = ["a", "b", "c"]
        .iter()
        .map(|node| VaultProcess::start_with_config(&fixture, &fixture.node_config(node, &[])))
        .collect();
    let share = client(&mut fixture, &nodes[0])
        .init(1, 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    for node in &nodes {
        client(&mut fixture, node)
            .unseal(&share, None)
            .await
            .unwrap();
    }
    client(&mut fixture, &nodes[0])
        .put_secret(
            &SecretPath {
                tenant: "acme".into(),
                environment: Environment::Live,
                name: "byok/openai".into(),
            },
            v1::SecretKind::Byok,
            &SecretValue::from_vec(b"sk-bench".to_vec()),
        )
        .await
        .unwrap();
    println!(
        "vaultd cluster bench: {} connections x {} in flight, {} s per run, on PostgreSQL \
         (audit fsync always on every node)",
        args.connections, args.inflight, args.seconds
    );
    let one = measure(&mut fixture, &[&nodes[0]], &args).await;
    println!("{}", one.line("1 node"));
    let three = measure(&mut fixture, &[&nodes[0], &nodes[1], &nodes[2]], &args).await;
    println!("{}", three.line("3 nodes"));
    let again = measure(&mut fixture, &[&nodes[0]], &args).await;
    println!("{}", again.line("1 node again"));
    println!(
        "3 nodes / 1 node: {:.2} (against the mean of the two one-node runs)",
        three.rate() / ((one.rate() + again.rate()) / 2.0)
    );
}

fn main() {
    let args = args();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(args));
}
