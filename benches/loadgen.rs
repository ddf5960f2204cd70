//! Load generator: N mutual-TLS connections × M requests in flight against a vaultd,
//! measuring `Lease` and `VerifyApiKey` and, in the same run and over the same
//! listener, TLS configuration and connections, a bare tonic echo
//! (`grpc.health.v1.Health/Check`, which does no authorisation, crypto or audit).
//! Prints requests/s, p50 and p99 of each and the ratios to the echo, so the figures
//! survive a noisy, shared machine. Every `VerifyApiKey` reaches the daemon (no client
//! cache) and is audited; the key has no rate limits or quota.
//!
//! ```sh
//! cargo bench --bench loadgen -- [--connections 4] [--inflight 16] [--seconds 10] [--fsync always|group]
//!                                [--rotate-tenants 10000]
//! ```
//!
//! With `--rotate-tenants N`, it then stores a secret for N more tenants and measures
//! `Lease` again while a root-key rotation rewraps all of them, to show that leases keep
//! flowing (and at what p99) while the vault rotates.
//!
//! With `--puts N`, it stores N secrets through `Admin.PutSecret` from 256 concurrent
//! callers over `--connections` mTLS connections of the operator and prints durable
//! writes per second; each in a new tenant, or spread over K tenants with `--put-tenants K`.
//!
//! With `--soak SECONDS`, it then leases at steady load for that long and prints, every
//! 10 s, the window's rate and latencies and the process's RSS, open files and locked
//! memory (the daemon and the load generator share the process).
//!
//! To measure a vaultd running as its own process (so the load generator's CPU is not
//! counted), write its files, start it, and point the load generator at it:
//!
//! ```sh
//! cargo bench --bench loadgen -- --write-files DIR --port 8300
//! target/release/vaultd serve --config DIR/vaultd.toml &
//! cargo bench --bench loadgen -- --dir DIR --port 8300 --pid $!
//! ```
//!
//! It initialises and unseals that daemon, then reports the echo and `Lease` as above and
//! the daemon's CPU time per request of each, from `/proc/PID/stat`. Then, as asked:
//! `--batch-decrypt` measures transit `BatchDecrypt` items/s (1000 items of 64 bytes per
//! call) and the daemon's CPU per item; `--active N` holds N leases active and reports the
//! daemon's RSS growth per lease and the lease rate there against the rate near none;
//! `--puts N` as above, with the daemon's CPU per write.
//!
//! The daemon runs in this process (its files, PKI and policies in a temporary
//! directory), on the same runtime as the clients, so both compete for the same cores.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use vault_crypto::session::SessionAad;
use vault_proto::v1::{self, admin_client::AdminClient, broker_client::BrokerClient};
use vault_testkit::Pki;
use vault_testkit::grpc::{channel, client_config, open_session};
use vaultd::config::Config;
use vaultd::daemon::Daemon;

const SERVICE: &str = "spiffe://bench.example/svc/loadgen";
const OPERATOR: &str = "spiffe://bench.example/human/operator";

struct Args {
    connections: usize,
    inflight: usize,
    seconds: u64,
    fsync: String,
    rotate_tenants: usize,
    puts: usize,
    soak: u64,
    /// External mode: hold this many leases active, and compare the lease rate there
    /// with the rate near none.
    active: usize,
    /// Spread `--puts` over this many tenants (0: a new tenant for each put).
    put_tenants: usize,
    /// External mode: measure transit `BatchDecrypt` of 1000 64-byte items per call.
    batch: bool,
    external: External,
}

/// A vaultd process to drive instead of one in this process.
#[derive(Default)]
struct External {
    /// Write its files (PKI, policies, configuration) here, then exit.
    write_files: Option<std::path::PathBuf>,
    /// Its files, as `--write-files` left them.
    dir: Option<std::path::PathBuf>,
    /// Its gRPC port (health and metrics on the next one).
    port: u16,
    /// Its process.
    pid: Option<u32>,
}

fn args() -> Args {
    let mut args = Args {
        connections: 4,
        inflight: 16,
        seconds: 10,
        fsync: "always".into(),
        rotate_tenants: 0,
        puts: 0,
        soak: 0,
        active: 0,
        put_tenants: 0,
        batch: false,
        external: External::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match arg.as_str() {
            "--connections" => args.connections = value().parse().expect("a count"),
            "--inflight" => args.inflight = value().parse().expect("a count"),
            "--seconds" => args.seconds = value().parse().expect("seconds"),
            "--fsync" => args.fsync = value(),
            "--rotate-tenants" => args.rotate_tenants = value().parse().expect("a count"),
            "--puts" => args.puts = value().parse().expect("a count"),
            "--soak" => args.soak = value().parse().expect("seconds"),
            "--active" => args.active = value().parse().expect("a count"),
            "--batch-decrypt" => args.batch = true,
            "--put-tenants" => args.put_tenants = value().parse().expect("a count"),
            "--write-files" => args.external.write_files = Some(value().into()),
            "--dir" => args.external.dir = Some(value().into()),
            "--port" => args.external.port = value().parse().expect("a port"),
            "--pid" => args.external.pid = Some(value().parse().expect("a pid")),
            _ => {} // `cargo bench` passes --bench and filters
        }
    }
    args
}

struct Outcome {
    calls: usize,
    errors: usize,
    latencies_us: Vec<u32>,
    elapsed: Duration,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<6} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} calls, {} errors)",
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.calls,
            self.errors
        )
    }
}

/// Runs `inflight` loops of `call` per target (a connection and what goes with it)
/// for `duration`.
async fn drive<T, F, Fut>(targets: &[T], inflight: usize, duration: Duration, call: F) -> Outcome
where
    T: Clone + Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    drive_until(targets, inflight, tokio::time::sleep(duration), call).await
}

/// As [`drive`], until `done` resolves.
async fn drive_until<T, F, Fut>(
    targets: &[T],
    inflight: usize,
    done: impl std::future::Future<Output = ()>,
    call: F,
) -> Outcome
where
    T: Clone + Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for target in targets {
        for _ in 0..inflight {
            let (target, call, stop) = (target.clone(), call.clone(), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if call(target.clone()).await {
                        latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            }));
        }
    }
    done.await;
    stop.store(true, Ordering::Relaxed);
    let mut outcome = Outcome {
        calls: 0,
        errors: 0,
        latencies_us: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, errors) = task.await.unwrap();
        outcome.latencies_us.extend(latencies);
        outcome.errors += errors;
    }
    outcome.elapsed = started.elapsed();
    outcome.calls = outcome.latencies_us.len();
    outcome.latencies_us.sort_unstable();
    outcome
}

/// A process's resident set, locked memory (KiB) and open files, from `/proc/{of}`
/// (`self`, or a pid).
fn process_usage(of: &str) -> (u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{of}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let files = std::fs::read_dir(format!("/proc/{of}/fd")).map_or(0, |d| d.count());
    (kib("VmRSS:"), kib("VmLck:"), files)
}

/// Prints the first failure, so a misconfigured run says why instead of a bare count.
fn report_first_error(status: &tonic::Status) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| eprintln!("first failed call: {status:?}"));
}

/// One bare echo: `grpc.health.v1.Health/Check`.
async fn check_health(channel: Channel) -> bool {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|status| report_first_error(&status))
        .is_ok()
}

/// One lease of [`secret`] in `session_id`, for 1 s.
async fn lease_once(target: (Channel, String)) -> bool {
    lease_for(target, 1).await
}

/// One lease of [`secret`] in `session_id`, for `ttl_seconds`.
async fn lease_for((channel, session_id): (Channel, String), ttl_seconds: u32) -> bool {
    BrokerClient::new(channel)
        .lease(v1::LeaseRequest {
            session_id,
            secret: Some(secret()),
            version: None,
            ttl_seconds,
        })
        .await
        .map_err(|status| report_first_error(&status))
        .is_ok()
}

fn secret() -> v1::SecretRef {
    v1::SecretRef {
        tenant: "acme".into(),
        environment: v1::Environment::Live as i32,
        name: "byok/openai".into(),
    }
}

#[path = "common/cpu.rs"]
mod cpu;
#[path = "loadgen/external.rs"]
mod external;
#[path = "loadgen/setup.rs"]
mod setup;

use setup::{add_tenants, issue_key, prepare, put_secrets, rotate_root, write_files};

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(dir) = &args.external.write_files {
        external::write_files(dir, args.external.port, &args.fsync);
        return;
    }
    if args.external.pid.is_some() {
        runtime.block_on(external::run(&args));
        return;
    }
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut pki = Pki::generate("loadgen CA");
        let config = Config::load(&write_files(dir.path(), &mut pki, &args.fsync, 0)).unwrap();
        let running = Daemon::open(config).unwrap().serve().await.unwrap();
        let operator = pki.spiffe_client(OPERATOR);
        let service = pki.spiffe_client(SERVICE);
        let operator_channel = channel(
            running.grpc_addr,
            client_config(&pki.ca_pem, Some(&operator)),
        );
        let share = prepare(
            &mut AdminClient::new(operator_channel.clone()),
            &mut BrokerClient::new(operator_channel.clone()),
        )
        .await;

        let channels: Vec<Channel> = (0..args.connections)
            .map(|_| {
                channel(
                    running.grpc_addr,
                    client_config(&pki.ca_pem, Some(&service)),
                )
            })
            .collect();
        // One session per connection, as a service's client library would hold.
        let mut sessions = Vec::new();
        for channel in &channels {
            let mut broker = BrokerClient::new(channel.clone());
            sessions.push(open_session(&mut broker, SERVICE).await.unwrap());
        }
        let duration = Duration::from_secs(args.seconds);
        println!(
            "vaultd loadgen: {} connections x {} in flight, {} s each, audit fsync {}",
            args.connections, args.inflight, args.seconds, args.fsync
        );

        let echo = drive(&channels, args.inflight, duration, check_health).await;

        let targets: Vec<(Channel, String)> = channels
            .iter()
            .cloned()
            .zip(sessions.iter().map(|s| s.id.clone()))
            .collect();
        let leases = drive(&targets, args.inflight, duration, lease_once).await;

        // The key sealed to each session once, as a client seals it per request.
        let key = issue_key(&operator_channel).await;
        let verify_targets: Vec<(Channel, String, Vec<u8>)> = channels
            .iter()
            .cloned()
            .zip(sessions.iter())
            .map(|(channel, session)| {
                let envelope = session
                    .key
                    .seal(&SessionAad::api_key_to_verify("live"), key.as_bytes())
                    .unwrap();
                (channel, session.id.clone(), envelope)
            })
            .collect();
        let verify = |(channel, session_id, envelope): (Channel, String, Vec<u8>)| async move {
            BrokerClient::new(channel)
                .verify_api_key(v1::VerifyApiKeyRequest {
                    session_id,
                    api_key: Some(v1::SealedPayload { envelope }),
                    environment: v1::Environment::Live as i32,
                    scope: "proxy:*".into(),
                    cost: 1,
                })
                .await
                .map_err(|status| report_first_error(&status))
                .is_ok()
        };
        let verifies = drive(&verify_targets, args.inflight, duration, verify).await;

        println!("{}", echo.line("echo"));
        println!("{}", leases.line("lease"));
        println!("{}", verifies.line("verify"));
        for (name, outcome) in [("lease", &leases), ("verify", &verifies)] {
            println!(
                "{name}/echo throughput ratio: {:.3}   p50 latency ratio: {:.2}x",
                outcome.rate() / echo.rate(),
                outcome.percentile(0.5) / echo.percentile(0.5).max(0.001)
            );
        }
        if args.puts > 0 {
            let channels: Vec<Channel> = (0..args.connections)
                .map(|_| {
                    let config = client_config(&pki.ca_pem, Some(&operator));
                    channel(running.grpc_addr, config)
                })
                .collect();
            let took = put_secrets(&channels, "put", args.puts, args.put_tenants, 256).await;
            println!(
                "put_secret: {} durable writes from 256 concurrent callers in {:.2} s: {:.0}/s",
                args.puts,
                took.as_secs_f64(),
                args.puts as f64 / took.as_secs_f64()
            );
        }
        if args.soak > 0 {
            println!(
                "soak: leases at {} x {} for {} s",
                args.connections, args.inflight, args.soak
            );
            let mut first_p99 = None;
            for window in 0..args.soak.div_ceil(10) {
                let outcome =
                    drive(&targets, args.inflight, Duration::from_secs(10), lease_once).await;
                let (rss, locked, files) = process_usage("self");
                let p99 = outcome.percentile(0.99);
                let first = *first_p99.get_or_insert(p99);
                println!(
                    "{:>4} s {}   RSS {} KiB   locked {} KiB   files {}   p99/first {:.2}x",
                    (window + 1) * 10,
                    outcome.line("lease"),
                    rss,
                    locked,
                    files,
                    p99 / first.max(0.001)
                );
            }
        }
        if args.rotate_tenants > 0 {
            add_tenants(&operator_channel, args.rotate_tenants).await;
            let before = drive(&targets, args.inflight, duration, lease_once).await;
            let (took_tx, took_rx) = tokio::sync::oneshot::channel();
            let rotation = {
                let channel = operator_channel.clone();
                tokio::spawn(async move {
                    let _ = took_tx.send(rotate_root(&channel, &share).await);
                })
            };
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let waiter = tokio::spawn(async move {
                let took = took_rx.await.unwrap();
                let _ = done_tx.send(());
                took
            });
            let during = drive_until(
                &targets,
                args.inflight,
                async {
                    let _ = done_rx.await;
                },
                lease_once,
            )
            .await;
            rotation.await.unwrap();
            let took = waiter.await.unwrap();
            println!(
                "root-key rotation over {} tenants took {:.2} s",
                args.rotate_tenants + 1,
                took.as_secs_f64()
            );
            println!("{}", before.line("before"));
            println!("{}", during.line("during"));
            println!(
                "lease p99 during the rotation / before: {:.2}x",
                during.percentile(0.99) / before.percentile(0.99).max(0.001)
            );
        }
        let _ = running.shutdown().await;
    });
}
