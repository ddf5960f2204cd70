//! The mutual-TLS boundary: who gets a connection, and who gets an identity.

use std::sync::Arc;

use rustls::AlertDescription;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use vault_proto::v1::{self, admin_client::AdminClient};
use vault_testkit::grpc::{channel, client_config};
use vault_testkit::{ClientSpec, Pki};

use crate::harness::{OPERATOR, Options, TestVault, expect_code};

/// Handshakes with `config` and reads once: a refused certificate shows up as the
/// server's alert on that read (TLS 1.3 checks the client's certificate after the
/// client considers the handshake done).
async fn handshake(vault: &TestVault, config: rustls::ClientConfig) -> Result<(), rustls::Error> {
    handshake_at(vault.grpc, config).await
}

/// A TLS handshake with the listener at `addr`, then the HTTP/2 preface: a refused
/// client certificate shows as the alert the server sent.
pub(crate) async fn handshake_at(
    addr: std::net::SocketAddr,
    config: rustls::ClientConfig,
) -> Result<(), rustls::Error> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(rustls_error)?;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .map_err(rustls_error)?;
    let mut buf = [0u8; 64];
    tls.read(&mut buf).await.map_err(rustls_error)?;
    Ok(())
}

fn rustls_error(e: std::io::Error) -> rustls::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not a TLS error: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_must_be_refused_are_refused_at_the_handshake() {
    let mut vault = TestVault::start().await;
    let ca = vault.fixture.pki.ca_pem.clone();

    let good = vault.cert(OPERATOR);
    assert_eq!(
        handshake(&vault, client_config(&ca, Some(&good))).await,
        Ok(())
    );

    let no_cert = handshake(&vault, client_config(&ca, None)).await;
    assert_eq!(
        no_cert,
        Err(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
        ))
    );

    let mut other_ca = Pki::generate("some other CA");
    let foreign = other_ca.spiffe_client(OPERATOR);
    assert_eq!(
        handshake(&vault, client_config(&ca, Some(&foreign))).await,
        Err(rustls::Error::AlertReceived(AlertDescription::UnknownCA))
    );

    let expired = vault.fixture.pki.client(&ClientSpec {
        uris: vec![OPERATOR.into()],
        expired: true,
        ..ClientSpec::default()
    });
    assert_eq!(
        handshake(&vault, client_config(&ca, Some(&expired))).await,
        Err(rustls::Error::AlertReceived(
            AlertDescription::CertificateExpired
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_new_crl_refuses_and_disconnects_only_the_revoked_certificate() {
    let mut vault = TestVault::start_with(Options {
        crl: true,
        ..Options::default()
    })
    .await;
    let ca = vault.fixture.pki.ca_pem.clone();
    let victim = vault.cert(OPERATOR);
    assert_eq!(
        handshake(&vault, client_config(&ca, Some(&victim))).await,
        Ok(())
    );
    let mut victims_connection = vault.admin();
    victims_connection
        .status(v1::StatusRequest {})
        .await
        .unwrap();
    // Anyone may open a session: a request that shows the connection works.
    let mut others_connection = vault.broker("spiffe://billing.example/svc/other");
    let open = || v1::OpenSessionRequest {
        client_public_key: vec![9; 32],
    };
    others_connection.open_session(open()).await.unwrap();

    // A new CRL naming the certificate, then a reload (what SIGHUP does).
    std::fs::write(
        vault.path("clients.crl"),
        vault.fixture.pki.crl(&[victim.serial]),
    )
    .unwrap();
    let report = vault.running.as_ref().unwrap().reload().await;
    assert!(report.tls.is_ok() && report.policies.is_ok(), "{report:?}");
    assert_eq!(
        handshake(&vault, client_config(&ca, Some(&victim))).await,
        Err(rustls::Error::AlertReceived(
            AlertDescription::CertificateRevoked
        ))
    );
    let other = vault.cert("spiffe://billing.example/svc/other");
    assert_eq!(
        handshake(&vault, client_config(&ca, Some(&other))).await,
        Ok(())
    );
    // Connections made before the reload stay open, unless their certificate was revoked.
    others_connection.open_session(open()).await.unwrap();
    let mut closed = false;
    for _ in 0..50 {
        if victims_connection
            .status(v1::StatusRequest {})
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(closed, "the revoked certificate's connection kept working");

    // A broken CRL is refused and the previous configuration stays in force.
    std::fs::write(vault.path("clients.crl"), b"not a CRL").unwrap();
    let report = vault.running.as_ref().unwrap().reload().await;
    assert!(report.tls.is_err());
    assert_eq!(
        handshake(&vault, client_config(&ca, Some(&victim))).await,
        Err(rustls::Error::AlertReceived(
            AlertDescription::CertificateRevoked
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_1_2_only_client_is_refused() {
    let mut vault = TestVault::start().await;
    let cert = vault.cert(OPERATOR);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates({
        let mut roots = rustls::RootCertStore::empty();
        roots.add(vault.fixture.pki.ca_der.clone().into()).unwrap();
        roots
    })
    .with_client_auth_cert(
        vec![cert.cert_der.clone().into()],
        rustls::pki_types::PrivateKeyDer::try_from(cert.key_der.clone()).unwrap(),
    )
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    assert_eq!(
        handshake(&vault, config).await,
        Err(rustls::Error::AlertReceived(
            AlertDescription::ProtocolVersion
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_exactly_one_spiffe_id_gets_no_identity() {
    let mut vault = TestVault::start().await;
    let ca = vault.fixture.pki.ca_pem.clone();
    for (spec, why) in [
        (
            ClientSpec {
                uris: vec![
                    OPERATOR.into(),
                    "spiffe://billing.example/svc/gateway".into(),
                ],
                ..ClientSpec::default()
            },
            "2 URI SANs",
        ),
        (
            ClientSpec {
                dns: vec!["worker.internal".into()],
                ..ClientSpec::default()
            },
            "names no identity",
        ),
        (
            ClientSpec {
                uris: vec!["spiffe://billing.example/human/admin/..".into()],
                ..ClientSpec::default()
            },
            "SPIFFE ID is invalid",
        ),
        (
            ClientSpec {
                uris: vec!["spiffe://billing.example/human/admin/x?role=root".into()],
                ..ClientSpec::default()
            },
            "SPIFFE ID is invalid",
        ),
    ] {
        let cert = vault.fixture.pki.client(&spec);
        // The certificate chains, so the handshake completes; the request is refused.
        assert_eq!(
            handshake(&vault, client_config(&ca, Some(&cert))).await,
            Ok(())
        );
        let mut admin = AdminClient::new(channel(vault.grpc, client_config(&ca, Some(&cert))));
        let status = expect_code(
            admin.status(v1::StatusRequest {}).await,
            Code::Unauthenticated,
        );
        assert!(status.message().contains(why), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_to_start_without_a_client_ca() {
    let vault = TestVault::start().await;
    let text = std::fs::read_to_string(vault.path("vaultd.toml")).unwrap();
    let broken = vault.path("no-ca.toml");
    std::fs::write(&broken, text.replace("client_ca = \"ca.pem\"\n", "")).unwrap();
    let err = vaultd::config::Config::load(&broken)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("tls.client_ca is required"), "{err}");

    // A client CA file that holds no certificate is refused too.
    std::fs::write(vault.path("empty-ca.pem"), "").unwrap();
    let empty = vault.path("empty-ca.toml");
    std::fs::write(
        &empty,
        text.replace("client_ca = \"ca.pem\"", "client_ca = \"empty-ca.pem\""),
    )
    .unwrap();
    let config = vaultd::config::Config::load(&empty).unwrap();
    let err = vaultd::daemon::Daemon::open(config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("empty-ca.pem"), "{err}");
}

/// Raises the open-files limit to its hard maximum (this test process only).
fn more_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_slot_exhaustion_a_good_client_connects_past_1000_idle_sockets() {
    more_files();
    let mut vault = TestVault::start().await;
    // A thousand sockets that connect and say nothing: no certificate needed.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(vault.grpc).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await; // all accepted
    let started = std::time::Instant::now();
    let mut admin = vault.admin();
    admin.status(v1::StatusRequest {}).await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_dropped_after_the_first_byte_deadline() {
    let vault = TestVault::start_with(Options {
        limits: "first_byte_timeout = \"300ms\"".into(),
        ..Options::default()
    })
    .await;
    let mut silent = TcpStream::connect(vault.grpc).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("dropped within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_identity_are_bounded() {
    let mut vault = TestVault::start_with(Options {
        limits: "connections_per_identity = 2".into(),
        ..Options::default()
    })
    .await;
    let mut first = vault.admin();
    let mut second = vault.admin();
    first.status(v1::StatusRequest {}).await.unwrap();
    second.status(v1::StatusRequest {}).await.unwrap();
    let mut third = vault.admin();
    third.status(v1::StatusRequest {}).await.unwrap_err();
    // Another identity is not affected.
    let mut other = vault.broker("spiffe://billing.example/svc/other");
    other
        .open_session(v1::OpenSessionRequest {
            client_public_key: vec![9; 32],
        })
        .await
        .unwrap();
    // A connection given back makes room.
    drop(first);
    let mut retried = false;
    for _ in 0..50 {
        if vault.admin().status(v1::StatusRequest {}).await.is_ok() {
            retried = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(retried, "a closed connection did not give its slot back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_resumption_is_never_offered() {
    let mut vault = TestVault::start().await;
    let ca = vault.fixture.pki.ca_pem.clone();
    let cert = vault.cert(OPERATOR);
    // One client configuration, with rustls' in-memory session cache, used twice.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, Some(&cert))));
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(vault.grpc).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        // Reading takes in any session tickets the server sent after the handshake.
        assert!(tls.read(&mut buf).await.unwrap() > 0);
        kinds.push(tls.get_ref().1.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Full)
        ],
        "a resumed session would skip the client certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_when_its_client_certificate_expires() {
    let mut vault = TestVault::start().await;
    let ca = vault.fixture.pki.ca_pem.clone();
    let short = vault.fixture.pki.client(&ClientSpec {
        uris: vec![OPERATOR.into()],
        valid_for: Some(std::time::Duration::from_secs(3)),
        ..ClientSpec::default()
    });
    let tcp = TcpStream::connect(vault.grpc).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, Some(&short))));
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // Reads frames until the daemon closes the connection (GOAWAY, then EOF).
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection outlived its certificate");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "closed before the certificate expired: {:?}",
        started.elapsed()
    );
    // And it cannot come back: a new handshake is refused as expired.
    assert_eq!(
        handshake(&vault, client_config(&ca, Some(&short))).await,
        Err(rustls::Error::AlertReceived(
            AlertDescription::CertificateExpired
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_past_its_next_update_is_enforced_by_default() {
    for (setting, refused) in [("", true), ("crl_expiry = \"ignore\"", false)] {
        let mut vault = TestVault::start_with(Options {
            crl: true,
            tls: setting.into(),
            ..Options::default()
        })
        .await;
        let ca = vault.fixture.pki.ca_pem.clone();
        let cert = vault.cert(OPERATOR);
        let mut before = vault.admin();
        before.status(v1::StatusRequest {}).await.unwrap();
        std::fs::write(
            vault.path("clients.crl"),
            vault.fixture.pki.expired_crl(&[]),
        )
        .unwrap();
        let report = vault.running.as_ref().unwrap().reload().await;
        assert!(report.tls.is_ok(), "{report:?}");
        let outcome = handshake(&vault, client_config(&ca, Some(&cert))).await;
        assert_eq!(outcome.is_err(), refused, "{setting:?}: {outcome:?}");
        // The connection made before the stale CRL went the same way.
        let mut closed = false;
        for _ in 0..50 {
            if before.status(v1::StatusRequest {}).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(closed, refused, "{setting:?}");
    }
}
