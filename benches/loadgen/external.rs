//! The load generator against a vaultd running as its own process: its files written
//! for `vaultd serve`, then the echo and `Lease` with the daemon's CPU per request.

use std::time::Duration;

use std::sync::Arc;
use tonic::transport::Channel;
use vault_proto::v1::{admin_client::AdminClient, broker_client::BrokerClient};
use vault_testkit::Pki;

use vault_crypto::session::{Direction, SessionAad};
use vault_proto::v1;
use vault_testkit::grpc::{ClientSession, channel, open_session};

use super::{
    Args, OPERATOR, Outcome, SERVICE, check_health, drive, lease_for, lease_once, prepare,
    process_usage, put_secrets,
};

/// CPU seconds (user + system) the daemon `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    super::cpu::cpu_seconds(pid).expect("the daemon's /proc/PID/stat")
}

/// The resident set of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    process_usage(&pid.to_string()).0 * 1024
}

/// How long the leases held by `--active` last: past the end of the run.
const HELD_TTL: u32 = 1800;

/// Holds `count` leases active (each for [`HELD_TTL`]) and prints the daemon's RSS
/// growth per lease and the lease rate with that many active against the rate of the
/// first seconds, when few were.
async fn hold_active(targets: &[(Channel, String)], args: &Args, pid: u32) {
    // The 1 s leases of the phases before expire and are swept first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before = rss_bytes(pid);
    let window = Duration::from_secs(5);
    let held = |target| lease_for(target, HELD_TTL);
    let first = drive(targets, args.inflight, window, held).await;
    let mut active = first.calls;
    while active + first.calls < args.active {
        let fill = drive(targets, args.inflight, window, held).await;
        active += fill.calls;
        println!("  {active} leases active, {:.0}/s", fill.rate());
    }
    let last = drive(targets, args.inflight, window, held).await;
    active += last.calls;
    let grown = rss_bytes(pid).saturating_sub(rss_before);
    println!("{}", first.line("lease, first 5 s"));
    println!("{}", last.line(&format!("lease, at {active} active")));
    println!(
        "at {active} active leases: rate {:.3}x the first 5 s, daemon RSS grew {:.1} MB \
         ({:.0} bytes per lease)",
        last.rate() / first.rate(),
        grown as f64 / 1e6,
        grown as f64 / active as f64
    );
}

/// Items per `BatchDecrypt` call, and the bytes of each.
const BATCH: usize = 1000;
const ITEM: usize = 64;

/// Transit `BatchDecrypt` of [`BATCH`] items of [`ITEM`] bytes per call, 2 calls in
/// flight per connection: items per second and the daemon's CPU per item.
async fn batch_decrypt(channels: &[Channel], args: &Args, pid: u32) {
    let (tenant, live) = ("acme", v1::Environment::Live as i32);
    let mut broker = BrokerClient::new(channels[0].clone());
    let session = open_session(&mut broker, SERVICE).await.unwrap();
    let plaintexts = (0..BATCH)
        .map(|i| {
            let aad = SessionAad::transit(Direction::ToDaemon, tenant, "live", i);
            let envelope = session.key.seal(&aad, &[i as u8; ITEM]).unwrap();
            v1::SealedPayload { envelope }
        })
        .collect();
    let encrypted = broker
        .batch_encrypt(v1::BatchEncryptRequest {
            session_id: session.id.clone(),
            tenant: tenant.into(),
            environment: live,
            plaintexts,
        })
        .await
        .unwrap()
        .into_inner();
    let envelopes: Arc<Vec<Vec<u8>>> = Arc::new(
        encrypted
            .results
            .into_iter()
            .map(|r| match r.result {
                Some(v1::batch_item_result::Result::Envelope(e)) => e,
                other => panic!("transit encrypt failed: {other:?}"),
            })
            .collect(),
    );
    let mut targets = Vec::new();
    for channel in channels {
        let session = open_session(&mut BrokerClient::new(channel.clone()), SERVICE).await;
        let target = (
            channel.clone(),
            Arc::new(session.unwrap()),
            Arc::clone(&envelopes),
        );
        targets.push(target);
    }
    let before = cpu_seconds(pid);
    let window = Duration::from_secs(args.seconds);
    let outcome = drive(&targets, 2, window, decrypt_batch).await;
    let items = outcome.calls * BATCH;
    let cpu = (cpu_seconds(pid) - before) / items.max(1) as f64 * 1e6;
    println!("{}", outcome.line("batch_decrypt"));
    println!(
        "batch_decrypt: {:.0} items/s of {ITEM} bytes ({BATCH} per call), daemon CPU {cpu:.2} us per item",
        items as f64 / outcome.elapsed.as_secs_f64()
    );
}

/// One `BatchDecrypt` of `envelopes` for tenant acme: true if every item came back
/// and the last one opens, with the session's key, to what was encrypted.
async fn decrypt_batch(
    (channel, session, envelopes): (Channel, Arc<ClientSession>, Arc<Vec<Vec<u8>>>),
) -> bool {
    let answer = BrokerClient::new(channel)
        .batch_decrypt(v1::BatchDecryptRequest {
            session_id: session.id.clone(),
            tenant: "acme".into(),
            environment: v1::Environment::Live as i32,
            envelopes: envelopes.to_vec(),
        })
        .await;
    let Ok(answer) = answer else { return false };
    let results = answer.into_inner().results;
    let last = BATCH - 1;
    let aad = SessionAad::transit(Direction::ToClient, "acme", "live", last);
    results.len() == BATCH
        && match &results[last].result {
            Some(v1::batch_item_result::Result::Plaintext(p)) => session
                .key
                .open(&aad, &p.envelope)
                .is_ok_and(|v| v.expose_secret() == [last as u8; ITEM]),
            _ => false,
        }
}

/// Writes a daemon's files to `dir` (its gRPC port `port`), with the operator's and
/// the service's certificates beside them, for `vaultd serve --config DIR/vaultd.toml`.
pub(super) fn write_files(dir: &std::path::Path, port: u16, fsync: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut pki = Pki::generate("loadgen CA");
    let config = super::write_files(dir, &mut pki, fsync, port);
    for (name, identity) in [("operator", OPERATOR), ("service", SERVICE)] {
        let issued = pki.spiffe_client(identity);
        std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), &issued.key_pem).unwrap();
    }
    println!("vaultd serve --config {}", config.display());
}

/// Drives the vaultd process `external` names: initialises and unseals it, then the
/// echo and `Lease`, with the daemon's CPU time per request for each.
pub(super) async fn run(args: &Args) {
    let e = &args.external;
    let pid = e.pid.unwrap();
    let dir = e.dir.as_ref().expect("with --pid, give --dir and --port");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], e.port));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let ca = read("ca.pem");
    let client = |name: &str| {
        let (cert, key) = (read(&format!("{name}.pem")), read(&format!("{name}.key")));
        vault_testkit::grpc::client_config_pem(&ca, Some((&cert, &key)))
    };
    let operator_channel = channel(addr, client("operator"));
    prepare(
        &mut AdminClient::new(operator_channel.clone()),
        &mut BrokerClient::new(operator_channel.clone()),
    )
    .await;
    let service = client("service");
    let channels: Vec<Channel> = (0..args.connections)
        .map(|_| channel(addr, service.clone()))
        .collect();
    let mut targets = Vec::new();
    for channel in &channels {
        let mut broker = BrokerClient::new(channel.clone());
        let session = open_session(&mut broker, SERVICE).await.unwrap();
        targets.push((channel.clone(), session.id));
    }
    let duration = Duration::from_secs(args.seconds);
    println!(
        "vaultd loadgen against pid {pid} at {addr}: {} connections x {} in flight, {} s each",
        args.connections, args.inflight, args.seconds
    );
    let before = cpu_seconds(pid);
    let echo = drive(&channels, args.inflight, duration, check_health).await;
    let after_echo = cpu_seconds(pid);
    let leases = drive(&targets, args.inflight, duration, lease_once).await;
    let after_lease = cpu_seconds(pid);
    let per = |cpu: f64, o: &Outcome| cpu / o.calls.max(1) as f64 * 1e6;
    let (echo_cpu, lease_cpu) = (
        per(after_echo - before, &echo),
        per(after_lease - after_echo, &leases),
    );
    println!("{}", echo.line("echo"));
    println!("{}", leases.line("lease"));
    println!(
        "lease/echo throughput ratio: {:.3}   p50 latency ratio: {:.2}x",
        leases.rate() / echo.rate(),
        leases.percentile(0.5) / echo.percentile(0.5).max(0.001)
    );
    println!(
        "daemon CPU per request: echo {echo_cpu:.1} us, lease {lease_cpu:.1} us ({:.2}x)",
        lease_cpu / echo_cpu.max(0.001)
    );
    if args.batch {
        batch_decrypt(&channels, args, pid).await;
    }
    if args.active > 0 {
        hold_active(&targets, args, pid).await;
    }
    if args.puts > 0 {
        let before = cpu_seconds(pid);
        let operators: Vec<Channel> = (0..args.connections)
            .map(|_| channel(addr, client("operator")))
            .collect();
        let took = put_secrets(&operators, "put", args.puts, args.put_tenants, 256).await;
        let cpu = (cpu_seconds(pid) - before) / args.puts as f64 * 1e6;
        println!(
            "put_secret: {} durable writes from 256 concurrent callers in {:.2} s: {:.0}/s, \
             daemon CPU {cpu:.1} us each",
            args.puts,
            took.as_secs_f64(),
            args.puts as f64 / took.as_secs_f64()
        );
    }
}
