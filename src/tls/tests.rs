//! Real TLS handshakes over loopback TCP against the server configuration.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use vault_testkit::{ClientSpec, Issued, Pki};

use super::*;
use crate::identity::{IdentitySource, identity_of};

struct Setup {
    pki: Pki,
    dir: tempfile::TempDir,
    files: TlsFiles,
}

fn setup(revoked: &[u64]) -> Setup {
    let mut pki = Pki::generate("vaultd test CA");
    let server = pki.server(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    let files = TlsFiles {
        cert: write("server.pem", server.cert_pem.as_bytes()),
        key: write("server.key", server.key_pem.as_bytes()),
        client_ca: Some(write("ca.pem", pki.ca_pem.as_bytes())),
        crls: vec![write("ca.crl", &pki.crl(revoked))],
        crl_expiry: CrlExpiry::Enforce,
    };
    Setup { pki, dir, files }
}

/// Runs one handshake; returns what the server saw (the caller's identity or an
/// error) and whether the client could exchange data.
fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> (Result<String, String>, bool) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(server).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        let der = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no client certificate")?
            .to_vec();
        let identity = identity_of(&der, IdentitySource::SpiffeOnly).map_err(|e| e.to_string())?;
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        tls.write_all(b"hello").map_err(|e| e.to_string())?;
        Ok(identity.to_string())
    });
    let mut tcp = TcpStream::connect(addr).unwrap();
    let mut conn =
        rustls::ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut buf = [0u8; 5];
    let talked = tls.read_exact(&mut buf).is_ok() && &buf == b"hello";
    drop(tcp);
    (server_side.join().unwrap(), talked)
}

fn client_config(
    ca_pem: &str,
    cert: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(c.cert_der.clone())],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

#[test]
fn a_valid_client_is_identified_by_its_spiffe_id() {
    let mut s = setup(&[]);
    let client = s.pki.spiffe_client("spiffe://billing.example/svc/gateway");
    let server = server_config(&s.files).unwrap();
    let (seen, talked) = handshake(server, client_config(&s.pki.ca_pem, Some(&client), TLS13));
    assert_eq!(seen.unwrap(), "spiffe://billing.example/svc/gateway");
    assert!(talked);
    drop(s.dir);
}

#[test]
fn refused_clients() {
    let mut s = setup(&[]);
    let revoked_client = s.pki.spiffe_client("spiffe://billing.example/svc/stolen");
    let mut other = Pki::generate("another CA");
    let cases: Vec<(&str, Option<Issued>, Option<TlsFiles>)> = vec![
        ("no client certificate", None, None),
        (
            "certificate from another CA",
            Some(other.spiffe_client("spiffe://billing.example/svc/x")),
            None,
        ),
        (
            "expired certificate",
            Some(s.pki.client(&ClientSpec {
                uris: vec!["spiffe://billing.example/svc/old".into()],
                expired: true,
                ..ClientSpec::default()
            })),
            None,
        ),
        ("revoked certificate", Some(revoked_client.clone()), {
            let mut files = s.files.clone();
            let crl = s.dir.path().join("revoking.crl");
            std::fs::write(&crl, s.pki.crl(&[revoked_client.serial])).unwrap();
            files.crls = vec![crl];
            Some(files)
        }),
    ];
    for (case, cert, files) in cases {
        let server = server_config(files.as_ref().unwrap_or(&s.files)).unwrap();
        let (seen, talked) = handshake(server, client_config(&s.pki.ca_pem, cert.as_ref(), TLS13));
        assert!(
            seen.is_err() && !talked,
            "{case} must be refused, server saw {seen:?}"
        );
    }
}

#[test]
fn two_uri_sans_are_refused_as_ambiguous() {
    let mut s = setup(&[]);
    let two = s.pki.client(&ClientSpec {
        uris: vec![
            "spiffe://billing.example/a".into(),
            "spiffe://billing.example/b".into(),
        ],
        ..ClientSpec::default()
    });
    let (seen, talked) = handshake(
        server_config(&s.files).unwrap(),
        client_config(&s.pki.ca_pem, Some(&two), TLS13),
    );
    assert!(seen.unwrap_err().contains("2 URI SANs"));
    assert!(!talked);
}

#[test]
fn a_tls12_only_client_is_refused() {
    let mut s = setup(&[]);
    let client = s.pki.spiffe_client("spiffe://billing.example/svc/gateway");
    let (seen, talked) = handshake(
        server_config(&s.files).unwrap(),
        client_config(&s.pki.ca_pem, Some(&client), &[&rustls::version::TLS12]),
    );
    assert!(seen.is_err() && !talked, "{seen:?}");
}

#[test]
fn configuration_fails_closed_with_clear_errors() {
    let s = setup(&[]);
    let mut no_ca = s.files.clone();
    no_ca.client_ca = None;
    let e = server_config(&no_ca).unwrap_err();
    assert!(e.to_string().contains("no client CA configured"), "{e}");
    let mut missing = s.files.clone();
    missing.key = s.dir.path().join("nope.key");
    let e = server_config(&missing).unwrap_err();
    assert!(e.to_string().contains("nope.key"), "{e}");
    assert!(format!("{:?}", s.files).contains("[redacted]"));
}
