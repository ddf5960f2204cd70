//! The `grpc` target: a request of either service, served by an in-process daemon as
//! the transport hands it over, and the answer checked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use prost::Message;
use tower::ServiceExt;
use vault_crypto::SecretValue;
use vault_crypto::session::{SessionOffer, Transcript};
use vault_crypto::shamir::Share;
use vault_proto::v1::{self, admin_server::AdminServer, broker_server::BrokerServer};
use zeroize::Zeroizing;

use super::rpcs::{ClientSession, Ctx, Prepared, RPCS, Rpc};
use crate::api::Shared;
use crate::api::admin::AdminService;
use crate::api::broker::BrokerService;
use crate::authz::{Authorized, Caller, Peer, SessionsOp};
use crate::config::Config;
use crate::custody::{Custody, Upkeep};
use crate::daemon::{Daemon, StartError, services};
use crate::identity::{Identity, IdentityError};
use crate::names::{Environment, SecretId, SecretKind, TenantId};
use crate::vault::{SealState, UnsealOutcome, Vault};

/// A value stored as a BYOK secret in the [`GrpcHarness`]'s daemon. It must never
/// appear in a response unless the request itself carried it (errors may echo what
/// they were sent): leased values travel sealed to a session.
const CANARY: &[u8] = b"sk-canary-5c0f3e9a71d2b864-never-in-clear";
/// Where the canary is stored; requests that would change or remove it are skipped.
pub(super) const CANARY_TENANT: &str = "acme";
pub(super) const CANARY_NAME: &str = "byok/canary";

/// In a request, a `session_id` equal to this is replaced with the caller's session.
pub const SESSION_PLACEHOLDER: &str = "S";
/// In a request, a lease id equal to this is replaced with the caller's last lease.
pub const LEASE_PLACEHOLDER: &str = "L";
/// In a request, a transit envelope equal to this is replaced with one the daemon
/// made for tenant `acme`, environment live.
pub const TRANSIT_PLACEHOLDER: &[u8] = b"T";
/// In a request, a sealed payload that starts with this has the rest sealed to the
/// caller's session, with the associated data the RPC expects.
pub const SEAL_MARKER: &[u8] = b"seal:";

/// Who calls, by the input's second byte: the billing gateway, an operator holding
/// every permission, an identity no policy names, acme's tenant worker, a user of
/// the local socket, and a certificate that names no identity.
pub const GRPC_PEERS: [&str; 6] = [
    "gateway",
    "operator",
    "outsider",
    "worker",
    "local",
    "no-identity",
];

/// A policy file the harness's fixture adds to the repo's policies: the repo grants
/// `transit.rewrap` to nobody, and the fuzzer should reach Rewrap's handler too.
pub const GRPC_POLICY: (&str, &str) = (
    "fuzz-rewrap.toml",
    "[[grant]]\nid = \"fuzz-rewrap\"\n\
     identities = [\"spiffe://billing.example/tenant/{tenant}/svc/*\"]\n\
     operations = [\"transit.rewrap\"]\ntenants = [\"{tenant}\"]\nenvironments = [\"*\"]\n",
);

const GATEWAY: &str = "spiffe://billing.example/svc/gateway";
const OUTSIDER: &str = "spiffe://billing.example/svc/fuzz-outsider";
const WORKER: &str = "spiffe://billing.example/tenant/acme/svc/worker";

/// An input for the `grpc` target: `rpc` (a path such as `/vault.v1.Admin/Status`),
/// `peer` (one of [`GRPC_PEERS`]) and the protobuf message. For corpus generators.
///
/// # Panics
///
/// If `rpc` or `peer` names nothing.
pub fn grpc_input(rpc: &str, peer: &str, message: &[u8]) -> Vec<u8> {
    let rpc = RPCS
        .iter()
        .position(|r| r.path == rpc)
        .expect("a known RPC path");
    let peer = GRPC_PEERS
        .iter()
        .position(|p| *p == peer)
        .expect("a known peer");
    let mut input = vec![
        u8::try_from(rpc).expect("fewer than 256 RPCs"),
        u8::try_from(peer).expect("6 peers"),
    ];
    input.extend_from_slice(message);
    input
}

/// Why a [`GrpcHarness`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// Opening the store, policies or audit log failed.
    #[error("opening the daemon: {0}")]
    Start(#[from] StartError),
    /// Initialising, unsealing or filling the vault failed.
    #[error("bootstrapping the vault: {0}")]
    Vault(#[from] crate::Error),
    /// The Tokio runtime could not be started.
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The operator identity is not a SPIFFE ID.
    #[error("the operator identity is not a SPIFFE ID")]
    Operator,
}

/// A daemon in this process, unsealed, holding the canary, with a session for each
/// caller that has an identity; and a runtime to serve it on. Build one per process
/// and feed it every input with [`grpc`].
pub struct GrpcHarness {
    runtime: tokio::runtime::Runtime,
    /// Owns the store and audit log the services use.
    _daemon: Daemon,
    shared: Arc<Shared>,
    upkeep: Arc<Upkeep>,
    vault: Arc<Vault>,
    broker: BrokerServer<BrokerService>,
    admin: AdminServer<AdminService>,
    peers: Vec<Peer>,
    /// The one share of the 1-of-1 set, to unseal again after a Seal.
    share: Zeroizing<Vec<u8>>,
    transit: Vec<u8>,
    clients: Mutex<Vec<Client>>,
}

#[derive(Default)]
struct Client {
    session: Option<ClientSession>,
    lease: Option<String>,
}

/// Leases held before the harness revokes them all, so no per-identity bound is
/// reached by leases the fuzzer took and never revoked.
const MAX_LEASES: usize = 256;

impl GrpcHarness {
    /// Opens the daemon `config` describes (as `vaultd serve` does) and takes its gRPC
    /// services (without the TLS listener, which these inputs do not pass through);
    /// initialises the vault with one share, unseals it, stores the canary and opens
    /// sessions. `operator` is an identity holding every admin permission in
    /// `config`'s policies.
    pub fn new(config: Config, operator: &str) -> Result<Self, HarnessError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(HarnessError::Runtime)?;
        let daemon = Daemon::open(config)?;
        let (shared, upkeep, vault) = daemon.parts();
        let (shared, upkeep, vault) = (Arc::clone(shared), Arc::clone(upkeep), Arc::clone(vault));
        let (broker, admin) = services(&shared);
        let share = vault.init(1, 1)?.pop().ok_or(crate::Error::WrongShares)?;
        let share_bytes = share.to_bytes();
        vault.unseal(share, None)?;
        let canary =
            SecretId::parse(CANARY_TENANT, "live", CANARY_NAME).map_err(crate::Error::from)?;
        vault.put_secret(
            &canary,
            SecretKind::Byok,
            &SecretValue::from_vec(CANARY.to_vec()),
        )?;
        let tenant = TenantId::new(CANARY_TENANT).map_err(crate::Error::from)?;
        let transit = vault
            .transit_encrypt(&tenant, Environment::Live, b"transit fuzz value", true)?
            .into_bytes();

        let remote = |id: &str| {
            Identity::parse_remote(id)
                .map(|identity| Peer(Ok(Caller::Remote(identity))))
                .ok_or(HarnessError::Operator)
        };
        let peers = vec![
            remote(GATEWAY)?,
            remote(operator)?,
            remote(OUTSIDER)?,
            remote(WORKER)?,
            Peer(Ok(Caller::Local(Identity::local(0)))),
            Peer(Err(IdentityError::Missing)),
        ];
        let harness = Self {
            runtime,
            broker,
            admin,
            _daemon: daemon,
            clients: Mutex::new(peers.iter().map(|_| Client::default()).collect()),
            shared,
            upkeep,
            vault,
            peers,
            share: share_bytes,
            transit,
        };
        Ok(harness)
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure caller `peer` (if it has an identity) holds a live session: a seal
    /// wipes them, and the fuzzer's own sessions may evict it.
    fn ensure_session(&self, peer: usize) {
        let Some(Peer(Ok(caller))) = self.peers.get(peer) else {
            return;
        };
        let mut clients = self.clients();
        let Some(client) = clients.get_mut(peer) else {
            return;
        };
        let (custody, sessions) = (&self.shared.custody, self.shared.policies.sessions(caller));
        let alive = client
            .session
            .as_ref()
            .is_some_and(|s| custody.session(&sessions, &s.id).is_ok());
        if !alive {
            client.session = open_session(custody, &sessions);
        }
    }

    /// Puts the daemon back as later inputs expect it: unsealed, with few leases.
    fn restore(&self) {
        if self.vault.seal_state() != SealState::Unsealed {
            let _ = self.vault.reset_unseal();
            let share = Share::from_bytes(&self.share).expect("the kept share parses");
            let outcome = self.vault.unseal(share, None);
            assert!(
                matches!(outcome, Ok(UnsealOutcome::Unsealed)),
                "the daemon no longer unseals with its share: an input changed the seal record"
            );
        }
        if self.upkeep.counts().0 > MAX_LEASES {
            self.upkeep.revoke_all_leases();
        }
    }
}

fn open_session(custody: &Custody, sessions: &Authorized<SessionsOp>) -> Option<ClientSession> {
    let identity = sessions.identity();
    let offer = SessionOffer::generate().ok()?;
    let client_public = *offer.public_key();
    let opened = custody.open_session(sessions, &client_public).ok()?;
    let key = offer
        .agree(
            &opened.server_public,
            &Transcript {
                client_public: &client_public,
                server_public: &opened.server_public,
                identity: identity.as_str(),
                session_id: opened.id.as_str(),
            },
        )
        .ok()?;
    Some(ClientSession {
        id: opened.id.to_string(),
        key,
    })
}

/// `grpc`: the first byte of `data` picks the RPC (of both services', in the order of
/// the proto files), the second the caller (of [`GRPC_PEERS`]); the rest is the
/// request message. It is sent as the transport would: a gRPC-framed body with the
/// caller attached, through the generated server. The answer must be well formed (a
/// status; on success exactly one message, which decodes; none on failure) and must
/// not contain the canary.
pub fn grpc(harness: &GrpcHarness, data: &[u8]) {
    let [rpc, peer, body @ ..] = data else {
        return;
    };
    let Some(rpc) = RPCS.get(usize::from(*rpc) % RPCS.len()) else {
        return;
    };
    let peer = usize::from(*peer) % harness.peers.len();
    harness.ensure_session(peer);
    let prepared = {
        let clients = harness.clients();
        let client = clients.get(peer);
        let ctx = Ctx {
            session: client.and_then(|c| c.session.as_ref()),
            lease: client.and_then(|c| c.lease.as_deref()),
            transit: &harness.transit,
        };
        (rpc.prepare)(&ctx, body)
    };
    let message = match prepared {
        Prepared::Raw => body.to_vec(),
        Prepared::Fixed(message) => message,
        Prepared::Skip => return,
    };
    let answer = harness.runtime.block_on(harness.send(rpc, peer, &message));
    if !contains(data, CANARY) {
        assert!(
            !contains(&answer.raw, CANARY),
            "the canary secret appeared in clear in the answer to {}",
            rpc.path
        );
    }
    if rpc.path == "/vault.v1.Broker/Lease"
        && answer.code == 0
        && let Some(lease) = answer
            .messages
            .first()
            .and_then(|m| v1::LeaseResponse::decode(m.as_slice()).ok())
        && let Some(client) = harness.clients().get_mut(peer)
    {
        client.lease = Some(lease.lease_id);
    }
    harness.restore();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What came back: every byte of it (headers, messages, trailers), its status code
/// and its messages.
struct Answer {
    raw: Vec<u8>,
    code: i32,
    messages: Vec<Vec<u8>>,
}

impl GrpcHarness {
    async fn send(&self, rpc: &Rpc, peer: usize, message: &[u8]) -> Answer {
        let mut framed = Vec::with_capacity(message.len() + 5);
        framed.push(0);
        framed.extend_from_slice(
            &u32::try_from(message.len())
                .expect("fuzz inputs are far below 4 GiB")
                .to_be_bytes(),
        );
        framed.extend_from_slice(message);
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(rpc.path)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(framed)))
            .expect("a static path and headers make a request");
        if let Some(peer) = self.peers.get(peer) {
            request.extensions_mut().insert(peer.clone());
        }
        let response = if rpc.path.starts_with("/vault.v1.Admin/") {
            self.admin.clone().oneshot(request).await
        } else {
            self.broker.clone().oneshot(request).await
        };
        let Ok(response) = response;
        let (parts, mut body) = response.into_parts();
        let streaming = rpc.path == "/vault.v1.Broker/WatchRevocations";
        // A snapshot is a stream that ends: read to its end, any number of messages.
        let many = streaming || rpc.path == "/vault.v1.Admin/Snapshot";
        let mut raw = Vec::new();
        let mut headers = parts.headers;
        let mut data = Vec::new();
        loop {
            // A stream stays open: take what is ready, then hang up.
            let frame = if streaming {
                match tokio::time::timeout(Duration::ZERO, body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => break,
                }
            } else {
                body.frame().await
            };
            let Some(frame) = frame else {
                break;
            };
            let frame = frame.expect("a response body does not fail");
            match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        headers.extend(trailers);
                    }
                }
            }
        }
        drop(body);
        if streaming {
            // Let the stream's task see its client leave and give back its watch slot.
            tokio::task::yield_now().await;
        }
        for (name, value) in &headers {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        raw.extend_from_slice(&data);
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok());
        let messages = frames(&data).expect("the response body is gRPC-framed");
        for message in &messages {
            assert!(
                (rpc.decodes)(message),
                "a message of {} does not decode",
                rpc.path
            );
        }
        match code {
            Some(0) => assert!(
                many || messages.len() == 1,
                "{} succeeded with {} messages",
                rpc.path,
                messages.len()
            ),
            Some(_) => assert!(
                many || messages.is_empty(),
                "{} failed with a message",
                rpc.path
            ),
            // A stream that is still open has no status yet.
            None => assert!(streaming, "{} answered without a grpc-status", rpc.path),
        }
        Answer {
            raw,
            code: code.unwrap_or(-1),
            messages,
        }
    }
}

/// Splits a gRPC body into its messages; `None` if it is not whole frames.
fn frames(mut data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while let Some((&[compressed, a, b, c, d], rest)) = data.split_first_chunk::<5>() {
        let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).ok()?;
        if compressed != 0 || rest.len() < len {
            return None;
        }
        let (message, rest) = rest.split_at(len);
        out.push(message.to_vec());
        data = rest;
    }
    data.is_empty().then_some(out)
}
