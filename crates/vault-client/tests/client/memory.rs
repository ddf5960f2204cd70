//! Memory test: once a lease handle is dropped and its cache entry evicted, no copy of
//! the value is left anywhere in the client process.
//!
//! The parent runs a daemon holding a canary secret and re-runs this test binary as a
//! child: a client that leases the canary, holds it (the parent's scan must find it,
//! so the scan is known to work), then drops the handle and clears its cache (the scan
//! must find nothing). The child never sees the canary except through the client.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use vault_client::{Client, Environment, ExposeSecret};
use vault_testkit::fixture::FixtureOptions;
use vault_testkit::memory::{scan, unique_canary};

use crate::{GATEWAY, unsealed};

const CHILD_ENV: &str = "VAULT_CLIENT_MEMORY_TEST_CHILD";
const TEST_NAME: &str = "memory::no_copy_of_a_value_survives_its_handle_and_cache_entry";

/// The child: `endpoint ca cert key` come in the environment variable.
async fn child(args: &str) {
    let mut parts = args.split(' ');
    let mut next = || parts.next().unwrap().to_owned();
    let (endpoint, ca, cert, key) = (next(), next(), next(), next());
    let client = Client::builder()
        .endpoint(endpoint)
        .ca_cert(ca)
        .client_cert(cert, key)
        .build()
        .unwrap();
    crate::wait_for_watch(&client).await;
    let held = client
        .lease("acme", Environment::Live, "byok/canary")
        .await
        .unwrap();
    let mut out = std::io::stdout();
    // Its length only: the value itself must not be copied anywhere by the test.
    writeln!(out, "HOLDING {}", held.expose_secret().len()).unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    drop(held);
    client.clear_cache();
    writeln!(out, "RELEASED").unwrap();
    out.flush().unwrap();
    line.clear();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_copy_of_a_value_survives_its_handle_and_cache_entry() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        child(&args).await;
        return;
    }
    let canary = unique_canary();
    let (mut vault, _) = unsealed(
        &FixtureOptions::default(),
        &[
            ("acme", "byok/openai", b"sk-other"),
            ("acme", "byok/canary", &canary),
        ],
    )
    .await;
    let files = vault.fixture.client_files(GATEWAY);
    let args = format!(
        "{} {} {} {}",
        vault.endpoint(),
        files.ca.display(),
        files.cert.display(),
        files.key.display()
    );
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = proc.id();
    let mut stdin = proc.stdin.take().unwrap();
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    let mut next_with = |prefix: &str| loop {
        let line = lines.next().expect("child exited early").unwrap();
        if let Some((_, rest)) = line.split_once(prefix) {
            return rest.to_owned();
        }
    };
    assert_eq!(next_with("HOLDING ").trim(), canary.len().to_string());
    let needles = vec![canary.clone()];
    let holding = scan(pid, &needles);
    assert!(holding[0] > 0, "the scan must find the held value");

    writeln!(stdin, "release").unwrap();
    next_with("RELEASED");
    let released = scan(pid, &needles);
    writeln!(stdin, "exit").unwrap();
    let status = proc.wait().unwrap();
    assert_eq!(released, vec![0], "copies of the value left after release");
    assert!(status.success());
}
