//! What raising a security alert costs the request that raises it, by the state of
//! the sinks: none configured; a webhook that is down (connection refused, its queue
//! full, every further alert dropped and counted); a webhook that is down with an
//! empty queue (each alert queued, then its delivery fails). The baseline, in the same
//! run: building the same alert and offering it to a bounded tokio channel that is
//! full. Raising never waits on a sink, so a webhook that is down costs a request what
//! a full channel does.
//!
//! ```sh
//! cargo bench --bench alerts -- [--raises 200000]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vaultd::alerts::{Alert, Alerts, AlertsConfig, Severity, WebhookConfig};

fn alert(i: usize) -> Alert {
    Alert::new("anomaly.rate", Severity::Warning)
        .with_identity("spiffe://bench.example/svc/gateway".to_owned())
        .with_tenant("acme".to_owned())
        .with_detail("per_minute", i.to_string())
}

/// Nanoseconds per call of `raise` over `n` calls.
fn per_call(n: usize, mut raise: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        raise(i);
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let mut raises = 200_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--raises" {
            raises = args.next().expect("a count").parse().expect("a count");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("webhook.key");
        std::fs::write(&key, "a-webhook-key-of-at-least-thirty-two-bytes").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let down = |queue| AlertsConfig {
            webhooks: vec![WebhookConfig {
                name: "down".into(),
                url: format!("http://{addr}/").parse().unwrap(),
                secret_file: key.clone(),
                ca_file: None,
                timeout: Duration::from_secs(1),
                retries: 5,
            }],
            syslog: None,
            queue,
        };

        let (full, _receiver) = tokio::sync::mpsc::channel::<Arc<Alert>>(1);
        full.try_send(Arc::new(alert(0))).unwrap();
        let baseline = per_call(raises, |i| {
            let _ = full.try_send(Arc::new(alert(i)));
        });

        let none = Alerts::start(AlertsConfig::default(), "bench".into()).unwrap();
        let no_sink = per_call(raises, |i| none.raise(alert(i)));

        let dead = Alerts::start(down(1024), "bench".into()).unwrap();
        let dead_full = per_call(raises, |i| dead.raise(alert(i)));
        let dropped = dead.dropped("down");

        let roomy = Alerts::start(down(raises + 1), "bench".into()).unwrap();
        let dead_queued = per_call(raises, |i| roomy.raise(alert(i)));

        println!("{raises} raises each; ns per raise (ratio to the baseline)");
        println!("baseline: build + try_send on a full channel  {baseline:8.0}");
        for (what, ns) in [
            ("no sink", no_sink),
            ("webhook down, queue full (drops)", dead_full),
            ("webhook down, queue with room", dead_queued),
        ] {
            println!("{what:<46}{ns:8.0}  ({:.2}x)", ns / baseline);
        }
        println!("alerts the down webhook dropped while raising: {dropped}");
    });
}
