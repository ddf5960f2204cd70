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
    let tcp = TcpStream::connect(vault.grpc).await.unwrap();
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
