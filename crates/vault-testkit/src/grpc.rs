//! Mutual-TLS gRPC clients for tests: a rustls client configuration from generated
//! certificates, a tonic channel over it, and a client's half of a lease session.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use vault_crypto::session::{SessionKey, SessionOffer, Transcript};
use vault_proto::v1::OpenSessionRequest;
use vault_proto::v1::broker_client::BrokerClient;

use crate::Issued;

/// A TLS 1.3 client configuration trusting `ca_pem`, presenting `client` if given.
pub fn client_config(ca_pem: &str, client: Option<&Issued>) -> rustls::ClientConfig {
    client_config_pem(
        ca_pem,
        client.map(|issued| (issued.cert_pem.as_str(), issued.key_pem.as_str())),
    )
}

/// As [`client_config`], from a PEM certificate chain and key.
pub fn client_config_pem(ca_pem: &str, client: Option<(&str, &str)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots);
    let mut config = match client {
        Some((cert_pem, key_pem)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client certificate PEM"),
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("client key"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// A gRPC channel to `addr` over TLS with `config`, verifying the server as `localhost`.
/// Connects lazily: a refused handshake shows up as the first call's error.
pub fn channel(addr: SocketAddr, config: rustls::ClientConfig) -> Channel {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let endpoint =
        Endpoint::from_shared(format!("http://localhost:{}", addr.port())).expect("endpoint URI");
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("localhost").expect("server name");
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    }))
}

/// The client's half of a lease session.
pub struct ClientSession {
    /// The session id.
    pub id: String,
    /// The session key.
    pub key: SessionKey,
}

/// Opens a lease session as `identity` (which must be the channel's certificate's).
pub async fn open_session(
    broker: &mut BrokerClient<Channel>,
    identity: &str,
) -> Result<ClientSession, tonic::Status> {
    let offer = SessionOffer::generate().expect("ephemeral key");
    let client_public = *offer.public_key();
    let response = broker
        .open_session(OpenSessionRequest {
            client_public_key: client_public.to_vec(),
        })
        .await?
        .into_inner();
    let server_public: [u8; 32] = response
        .server_public_key
        .as_slice()
        .try_into()
        .expect("32-byte server key");
    let key = offer
        .agree(
            &server_public,
            &Transcript {
                client_public: &client_public,
                server_public: &server_public,
                identity,
                session_id: &response.session_id,
            },
        )
        .expect("key agreement");
    Ok(ClientSession {
        id: response.session_id,
        key,
    })
}
