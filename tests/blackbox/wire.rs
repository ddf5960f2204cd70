//! What crosses the wire: secrets only ever sealed to a session, and malformed or
//! oversized messages answered cleanly. Requests here are raw protobuf bytes, and
//! responses are read as the raw bytes the daemon sent.

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use vault_crypto::session::{Direction, SessionAad, op};
use vault_proto::v1;
use vault_testkit::grpc::open_session;

use crate::harness::{
    GATEWAY, OPERATOR, TestVault, expect_code, lease_request, open_lease, put_request,
    unseal_request,
};

/// Passes message bytes through untouched, both ways.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        *self
    }
    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Calls `path` with `body` as the message bytes; returns the response's bytes.
async fn raw_call(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    Ok(grpc
        .unary(tonic::Request::new(body), path, RawCodec)
        .await?
        .into_inner())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_and_values_cross_the_wire_only_sealed_to_their_session() {
    const CANARY: &[u8] = b"sk-CANARY-7f3a9c1e5b2d8046";
    let mut vault = TestVault::start().await;
    let shares = vault.init(1, 1).await;

    // Unseal: the request's bytes hold no trace of the share.
    let (mut broker, session) = vault.session(OPERATOR).await;
    let unseal = unseal_request(&session, &shares[0], "").encode_to_vec();
    assert!(
        !contains(&unseal, &shares[0][4..]),
        "share bytes in the Unseal request"
    );
    let share_hex = vault_crypto::hex::encode(&shares[0]);
    assert!(!contains(&unseal, share_hex.as_bytes()));
    raw_call(vault.channel_as(OPERATOR), "/vault.v1.Admin/Unseal", unseal)
        .await
        .unwrap();

    // PutSecret: the request's bytes hold no trace of the value.
    let put = put_request(&session, "acme", "live", "byok/openai", CANARY).encode_to_vec();
    assert!(!contains(&put, CANARY));
    assert!(!contains(&put, &CANARY[3..15]));
    raw_call(vault.channel_as(OPERATOR), "/vault.v1.Admin/PutSecret", put)
        .await
        .unwrap();

    // Lease: the response's bytes hold no trace of the value, and only the session
    // that asked can open it.
    let (_, gateway) = vault.session(GATEWAY).await;
    let request = lease_request(&gateway, "acme", "live", "byok/openai");
    let raw = raw_call(
        vault.channel_as(GATEWAY),
        "/vault.v1.Broker/Lease",
        request.encode_to_vec(),
    )
    .await
    .unwrap();
    assert!(!contains(&raw, CANARY));
    assert!(!contains(&raw, &CANARY[3..15]));
    let response = v1::LeaseResponse::decode(raw.as_slice()).unwrap();
    assert_eq!(open_lease(&gateway, &request, &response), CANARY);

    let other = open_session(&mut broker, OPERATOR).await.unwrap();
    let envelope = &response.value.as_ref().unwrap().envelope;
    let aad = SessionAad::lease(
        "acme",
        "live",
        "byok/openai",
        response.version,
        &response.lease_id,
    );
    assert!(
        other.key.open(&aad, envelope).is_err(),
        "another session opened the lease"
    );
    // The right session, but another lease id or version: no.
    let moved = SessionAad::lease("acme", "live", "byok/openai", response.version, "l-other");
    assert!(gateway.key.open(&moved, envelope).is_err());
    let other_version = SessionAad::lease("acme", "live", "byok/openai", 2, &response.lease_id);
    assert!(gateway.key.open(&other_version, envelope).is_err());

    // A share sealed to one session does not unseal through another.
    vault.seal().await;
    let (_, first) = vault.session(OPERATOR).await;
    let (_, second) = vault.session(OPERATOR).await;
    let mut request = unseal_request(&first, &shares[0], "");
    request.session_id = second.id.clone();
    expect_code(vault.admin().unseal(request).await, Code::InvalidArgument);
    // The audit log never holds the share or the value.
    let audit = std::fs::read(vault.path("audit.jsonl")).unwrap();
    assert!(!contains(&audit, CANARY));
    assert!(!contains(&audit, share_hex.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_get_clean_errors() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault.put_secret("acme", "live", "byok/openai", b"sk").await;
    let channel = vault.channel_as(GATEWAY);
    for (path, body) in [
        ("/vault.v1.Broker/Lease", vec![0xff; 64]),
        (
            "/vault.v1.Broker/Lease",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        ("/vault.v1.Broker/OpenSession", vec![0x0a, 0x80]),
        ("/vault.v1.Admin/Unseal", vec![0x12, 0x03, 0x0a, 0x7f]),
    ] {
        let status = raw_call(channel.clone(), path, body).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::Internal | Code::InvalidArgument),
            "{path}: {status:?}"
        );
    }
    // A message over the 1 MiB limit.
    let (_, session) = vault.session(OPERATOR).await;
    let huge = put_request(&session, "acme", "live", "byok/huge", &vec![b'x'; 2 << 20]);
    let status = expect_code(vault.admin().put_secret(huge).await, Code::OutOfRange);
    assert!(status.message().contains("too large"), "{status:?}");
    // Unknown services and methods.
    let status = raw_call(channel.clone(), "/vault.v1.Nope/Lease", vec![])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let status = raw_call(channel.clone(), "/vault.v1.Broker/Nope", vec![])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    // Missing fields and garbage sealed payloads.
    let (mut broker, session) = vault.session(GATEWAY).await;
    let mut no_secret = lease_request(&session, "acme", "live", "byok/openai");
    no_secret.secret = None;
    expect_code(broker.lease(no_secret).await, Code::InvalidArgument);
    let mut no_env = lease_request(&session, "acme", "live", "byok/openai");
    no_env.secret.as_mut().unwrap().environment = 0;
    expect_code(broker.lease(no_env).await, Code::InvalidArgument);
    let mut bad_name = lease_request(&session, "acme", "live", "byok/openai");
    bad_name.secret.as_mut().unwrap().name = "../../etc/passwd".into();
    expect_code(broker.lease(bad_name).await, Code::InvalidArgument);
    let (_, operator) = vault.session(OPERATOR).await;
    let mut garbage = put_request(&operator, "acme", "live", "byok/g", b"v");
    garbage.value = Some(v1::SealedPayload {
        envelope: vec![1, 2, 3],
    });
    expect_code(
        vault.admin().put_secret(garbage).await,
        Code::InvalidArgument,
    );
    // A share sealed in the daemon's direction instead of the client's does not open.
    let mut backwards = unseal_request(&operator, b"x", "");
    backwards.share = Some(v1::SealedPayload {
        envelope: operator
            .key
            .seal(&SessionAad::share(op::UNSEAL, Direction::ToClient, 0), b"x")
            .unwrap(),
    });
    expect_code(vault.admin().unseal(backwards).await, Code::InvalidArgument);

    // The daemon still serves.
    let (_, value) =
        crate::harness::lease_value(&mut broker, &session, "acme", "live", "byok/openai")
            .await
            .unwrap();
    assert_eq!(value, b"sk");
}
