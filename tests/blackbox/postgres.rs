//! vaultd on a real PostgreSQL server: a snapshot streams from it and verifies, the
//! records survive a restart of the node, a second node serves the same records beside
//! the first after its own unseal, `check-config` reaches the database (and says why it
//! cannot), and a database that goes away fails requests
//! rather than answering from nowhere. Revocations other nodes write to the change log
//! reach this node's leases and watchers within a second, this node's reach the log,
//! and a node that cannot read the log stops handing out leases within the bound.

use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;
use vault_proto::v1;
use vault_testkit::postgres::PostgresServer;

use crate::harness::{GATEWAY, Options, TestVault, expect_code, lease_value, watch};

const VAULTD: &str = env!("CARGO_BIN_EXE_vaultd");

/// Options for a node on `dbname` of `server`, over TLS with the server's client
/// certificate.
fn on_postgres(server: &PostgresServer, dbname: &str) -> Options {
    Options {
        storage: Some(format!(
            "engine = \"postgres\"\n[storage.postgres]\nconnect = \"{}\"\nca = \"{}\"\n\
             client_cert = \"{}\"\nclient_key = \"{}\"\ntimeout = \"2s\"\n",
            server.connect_string(dbname),
            server.ca.display(),
            server.client_cert.display(),
            server.client_key.display(),
        )),
        ..Options::default()
    }
}

fn check_config(vault: &TestVault) -> (bool, String) {
    let output = Command::new(VAULTD)
        .arg("check-config")
        .arg(vault.path("vaultd.toml"))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_postgres_survive_restarts_and_serve_a_second_node() {
    let server = PostgresServer::start();
    server.create_database("vaultd");
    let (mut a, shares) = TestVault::unsealed_with(on_postgres(&server, "vaultd")).await;
    a.put_secret("acme", "live", "byok/openai", b"sk-in-postgres")
        .await;
    let (mut broker, session) = a.session(GATEWAY).await;
    let (_, value) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(value, b"sk-in-postgres");
    // The database holds ciphertext only.
    let dump = server.psql("vaultd", "SELECT encode(value, 'hex') FROM vaultd_records");
    assert!(!dump.contains(&vault_testkit::memory::hex(b"sk-in-postgres")));

    // A snapshot streams from the database's consistent view, and `vaultd snapshot
    // verify` accepts it.
    let mut stream = a
        .admin()
        .snapshot(vault_proto::v1::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend_from_slice(&chunk.data);
    }
    let file = a.path("pg.vsnap");
    std::fs::write(&file, &bytes).unwrap();
    let verify = Command::new(VAULTD)
        .args(["snapshot", "verify"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(!bytes.windows(14).any(|w| w == b"sk-in-postgres"));

    // A restart seals the node; the same shares unseal it, and the record is there.
    a.restart().await;
    a.unseal(&shares[..2]).await;
    let (mut broker, session) = a.session(GATEWAY).await;
    let (_, value) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(value, b"sk-in-postgres");

    // A second node on the same database, while the first runs, is the same vault:
    // already initialised, unsealed by the same custodians' shares, serving the same
    // records; both serve.
    let mut b = TestVault::start_with(on_postgres(&server, "vaultd")).await;
    b.unseal(&shares[1..]).await;
    let (mut broker, session) = b.session(GATEWAY).await;
    let (_, value) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    assert_eq!(value, b"sk-in-postgres");
    let (mut broker_a, session_a) = a.session(GATEWAY).await;
    lease_value(&mut broker_a, &session_a, "acme", "live", "byok/openai")
        .await
        .unwrap();
    // With A stopped, its check-config reaches the database that B is using.
    a.stop().await;
    let (ok, stderr) = check_config(&a);
    assert!(ok, "{stderr}");
    // It also loads the files A would join its cluster with, and names a missing one.
    let config = std::fs::read_to_string(a.path("vaultd.toml")).unwrap();
    let join = "\n[cluster.join]\nendpoints = [\"https://localhost:1\"]\nca = \"ca.pem\"\n\
                cert = \"server.pem\"\nkey = \"server.key\"\n";
    std::fs::write(a.path("vaultd.toml"), config.clone() + join).unwrap();
    let (ok, stderr) = check_config(&a);
    assert!(ok, "{stderr}");
    std::fs::write(
        a.path("vaultd.toml"),
        config.clone() + &join.replace("server.pem", "missing.pem"),
    )
    .unwrap();
    let (ok, stderr) = check_config(&a);
    assert!(
        !ok && stderr.contains("cluster.join") && stderr.contains("missing.pem"),
        "{stderr}"
    );
    std::fs::write(a.path("vaultd.toml"), config).unwrap();

    // Without the database, a request fails; nothing is answered from nowhere.
    server.stop();
    let (mut broker, session) = b.session(GATEWAY).await;
    let status = expect_code(
        lease_value(&mut broker, &session, "acme", "live", "byok/openai").await,
        Code::Unavailable,
    );
    assert!(!status.message().contains("sk-in-postgres"));
    let (ok, stderr) = check_config(&a);
    assert!(!ok);
    assert!(
        stderr.contains("storage.postgres") && stderr.contains("unreachable"),
        "{stderr}"
    );
    // Once it is back, the node catches up with the change log and serves; until then
    // it answers UNAVAILABLE, which clients retry.
    server.start_again();
    let (mut broker, session) = b.session(GATEWAY).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let value = loop {
        match lease_value(&mut broker, &session, "acme", "live", "byok/openai").await {
            Ok((_, value)) => break value,
            Err(status) if status.code() == Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    };
    assert_eq!(value, b"sk-in-postgres");
}

/// Appends `notice` to the change log as another node sharing the database would.
fn announce_as_another_node(server: &PostgresServer, notice: &str) {
    server.psql(
        "vaultd",
        &format!(
            "UPDATE vaultd_epoch SET epoch = epoch + 1; \
             INSERT INTO vaultd_changes (epoch, origin, notice) \
             SELECT epoch, '\\xaa'::bytea, convert_to('{notice}', 'UTF8') FROM vaultd_epoch"
        ),
    );
}

/// The `vault-error` reason of a failed call.
fn reason(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("vault-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_revocation_reaches_this_node_and_a_node_cut_off_stops_serving() {
    let server = PostgresServer::start();
    server.create_database("vaultd");
    let (mut vault, shares) = TestVault::unsealed_with(on_postgres(&server, "vaultd")).await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-a")
        .await;
    vault
        .put_secret("globex", "live", "byok/openai", b"sk-g")
        .await;
    let (mut broker, session) = vault.session(GATEWAY).await;
    let mut watch = watch(&mut broker).await;
    let (acme, _) = lease_value(&mut broker, &session, "acme", "live", "byok/openai")
        .await
        .unwrap();
    let (globex, _) = lease_value(&mut broker, &session, "globex", "live", "byok/openai")
        .await
        .unwrap();

    // Another node revokes acme's leases: this node ends its own within the bound
    // (1 s) and tells the holder; globex's lease lives on.
    let announced = Instant::now();
    announce_as_another_node(
        &server,
        r#"{"revoke_leases":{"selector":{"tenant":"acme"},"reason":"revoked"}}"#,
    );
    let notice = tokio::time::timeout(
        Duration::from_secs(1),
        tokio_stream::StreamExt::next(&mut watch),
    )
    .await
    .expect("the revocation within a second")
    .unwrap()
    .unwrap();
    assert!(announced.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (notice.lease_id, notice.reason),
        (acme.lease_id, v1::RevocationReason::Revoked as i32)
    );
    let listed = vault.leases().await;
    assert_eq!(
        listed.iter().map(|l| &l.lease_id).collect::<Vec<_>>(),
        [&globex.lease_id]
    );

    // A revocation made here is announced to the others, in the log with its epoch.
    vault
        .admin()
        .revoke_leases(v1::RevokeLeasesRequest {
            selector: Some(v1::revoke_leases_request::Selector::Tenant("globex".into())),
        })
        .await
        .unwrap();
    let log = server.psql(
        "vaultd",
        "SELECT epoch, convert_from(notice, 'UTF8') FROM vaultd_changes ORDER BY epoch",
    );
    assert!(
        log.contains(
            "2|{\"revoke_leases\":{\"selector\":{\"tenant\":\"globex\"},\"reason\":\"revoked\"}}"
        ),
        "{log}"
    );

    // The node cannot read the change log (the records it can): within the bound it
    // refuses leases as out of step, then serves again once it can.
    server.psql("vaultd", "ALTER TABLE vaultd_changes RENAME TO hidden");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = expect_code(
        lease_value(&mut broker, &session, "globex", "live", "byok/openai").await,
        Code::Unavailable,
    );
    assert_eq!(reason(&status), "out-of-step", "{status:?}");
    assert!(status.message().contains("change log"), "{status:?}");
    server.psql("vaultd", "ALTER TABLE hidden RENAME TO vaultd_changes");
    let served = Instant::now();
    let value = loop {
        match lease_value(&mut broker, &session, "globex", "live", "byok/openai").await {
            Ok((_, value)) => break value,
            Err(status) => {
                assert_eq!(reason(&status), "out-of-step", "{status:?}");
                assert!(served.elapsed() < Duration::from_secs(5), "{status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(value, b"sk-g");

    // Another node seals the cluster: this node seals within the bound, and its audit
    // log says why.
    let asked = Instant::now();
    announce_as_another_node(&server, r#""seal""#);
    let mut admin = vault.admin();
    while admin
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .state
        != v1::SealState::Sealed as i32
    {
        assert!(asked.elapsed() < Duration::from_secs(1), "not sealed yet");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = expect_code(
        lease_value(&mut broker, &session, "globex", "live", "byok/openai").await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        reason(&status),
        "unknown-session",
        "sessions went with the seal"
    );
    assert!(
        vault
            .audit_lines()
            .iter()
            .any(|l| l.contains("system.seal") && l.contains("seal --cluster")),
        "no audit record of the cluster seal"
    );
    // Unsealed again, `seal --cluster` here seals this node and tells the others.
    vault.unseal(&shares[..2]).await;
    vault
        .admin()
        .seal(v1::SealRequest { cluster: true })
        .await
        .unwrap();
    let log = server.psql(
        "vaultd",
        "SELECT convert_from(notice, 'UTF8') FROM vaultd_changes ORDER BY epoch DESC LIMIT 1",
    );
    assert_eq!(log.trim(), "\"seal\"");
    vault.unseal(&shares[..2]).await;
    let (mut broker, session) = vault.session(GATEWAY).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while lease_value(&mut broker, &session, "globex", "live", "byok/openai")
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();

    // The database itself goes away: leases are refused as out of step once the
    // bound has passed, not after the store's own timeout.
    server.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = Instant::now();
    let status = expect_code(
        lease_value(&mut broker, &session, "globex", "live", "byok/openai").await,
        Code::Unavailable,
    );
    assert_eq!(reason(&status), "out-of-step", "{status:?}");
    assert!(refused.elapsed() < Duration::from_secs(1));
}
