//! Every RPC of both services, and how the harness fills placeholders in a fuzzed
//! request before sending it.

use prost::Message;
use vault_crypto::session::{Direction, SessionAad, SessionKey, op};
use vault_proto::v1;

use super::grpc::{
    CANARY_NAME, CANARY_TENANT, LEASE_PLACEHOLDER, SEAL_MARKER, SESSION_PLACEHOLDER,
    TRANSIT_PLACEHOLDER,
};

/// What the fuzzer's request becomes before it is sent.
pub(super) enum Prepared {
    /// Sent as the fuzzer wrote it.
    Raw,
    /// Sent with placeholders filled in.
    Fixed(Vec<u8>),
    /// Not sent: it would spoil the daemon for later inputs.
    Skip,
}

/// A caller's session, from the client's side.
pub(super) struct ClientSession {
    pub(super) id: String,
    pub(super) key: SessionKey,
}

/// What placeholders are filled in with, for one caller.
pub(super) struct Ctx<'a> {
    pub(super) session: Option<&'a ClientSession>,
    pub(super) lease: Option<&'a str>,
    pub(super) transit: &'a [u8],
}

impl Ctx<'_> {
    fn session(&self, id: &mut String) -> bool {
        match self.session {
            Some(session) if id == SESSION_PLACEHOLDER => {
                id.clone_from(&session.id);
                true
            }
            _ => false,
        }
    }

    fn lease(&self, id: &mut String) -> bool {
        match self.lease {
            Some(lease) if id == LEASE_PLACEHOLDER => {
                *id = lease.to_owned();
                true
            }
            _ => false,
        }
    }

    fn transit(&self, envelope: &mut Vec<u8>) -> bool {
        let placeholder = envelope == TRANSIT_PLACEHOLDER;
        if placeholder {
            *envelope = self.transit.to_vec();
        }
        placeholder
    }

    fn seal(&self, payload: Option<&mut v1::SealedPayload>, aad: &SessionAad<'_>) -> bool {
        let (Some(payload), Some(session)) = (payload, self.session) else {
            return false;
        };
        let Some(plaintext) = payload.envelope.strip_prefix(SEAL_MARKER) else {
            return false;
        };
        match session.key.seal(aad, plaintext) {
            Ok(envelope) => {
                payload.envelope = envelope;
                true
            }
            Err(_) => false,
        }
    }
}

fn env_name(env: i32) -> &'static str {
    match v1::Environment::try_from(env) {
        Ok(v1::Environment::Live) => "live",
        Ok(v1::Environment::Test) => "test",
        _ => "",
    }
}

fn is_canary(secret: Option<&v1::SecretRef>) -> bool {
    secret.is_some_and(|s| {
        s.tenant == CANARY_TENANT
            && s.environment == v1::Environment::Live as i32
            && s.name == CANARY_NAME
    })
}

/// One RPC: its path, how placeholders are filled in, and its response type.
pub(super) struct Rpc {
    pub(super) path: &'static str,
    pub(super) prepare: fn(&Ctx<'_>, &[u8]) -> Prepared,
    pub(super) decodes: fn(&[u8]) -> bool,
}

/// Decodes `body` as `M`, as the server will; fills in its placeholders with `fix`,
/// which answers `None` to skip the request, else whether it changed anything.
fn prepare<M: Message + Default>(
    ctx: &Ctx<'_>,
    body: &[u8],
    fix: fn(&mut M, &Ctx<'_>) -> Option<bool>,
) -> Prepared {
    let Ok(mut message) = M::decode(body) else {
        return Prepared::Raw;
    };
    match fix(&mut message, ctx) {
        None => Prepared::Skip,
        Some(true) => Prepared::Fixed(message.encode_to_vec()),
        Some(false) => Prepared::Raw,
    }
}

fn decodes<M: Message + Default>(bytes: &[u8]) -> bool {
    M::decode(bytes).is_ok()
}

macro_rules! rpc {
    ($service:literal, $method:literal, $request:ty => $response:ty, $fix:expr) => {
        Rpc {
            path: concat!("/vault.v1.", $service, "/", $method),
            prepare: |ctx, body| prepare::<$request>(ctx, body, $fix),
            decodes: decodes::<$response>,
        }
    };
}

fn keep<M>(_: &mut M, _: &Ctx<'_>) -> Option<bool> {
    Some(false)
}

fn shares(ctx: &Ctx<'_>, operation: &str, shares: &mut [v1::SealedPayload]) -> bool {
    let mut changed = false;
    for (i, share) in shares.iter_mut().enumerate() {
        changed |= ctx.seal(
            Some(share),
            &SessionAad::share(operation, Direction::ToDaemon, i),
        );
    }
    changed
}

/// Every RPC of both services, in the order the input's first byte picks them (the
/// proto files' order, with RPCs added later appended, so saved inputs keep theirs).
///
/// Skipped after decoding (so the daemon stays useful for later inputs): RotateSecret
/// and DeleteSecret of the canary secret and EraseTenant of its tenant, which would
/// remove the canary and make the leak check vacuous. Everything else is served, Seal
/// included: the harness unseals again after it with the share it kept. Init, Rekey
/// and RotateRootKey are served too; they fail (the vault is initialised, and the
/// fuzzer cannot know the share), which is what their refusal paths need.
pub(super) const RPCS: &[Rpc] = &[
    rpc!("Broker", "OpenSession", v1::OpenSessionRequest => v1::OpenSessionResponse, keep),
    rpc!("Broker", "Lease", v1::LeaseRequest => v1::LeaseResponse,
        |m, ctx| Some(ctx.session(&mut m.session_id))),
    rpc!("Broker", "Renew", v1::RenewRequest => v1::RenewResponse,
        |m, ctx| Some(ctx.lease(&mut m.lease_id))),
    rpc!("Broker", "Revoke", v1::RevokeRequest => v1::RevokeResponse,
        |m, ctx| Some(ctx.lease(&mut m.lease_id))),
    rpc!("Broker", "WatchRevocations", v1::WatchRevocationsRequest => v1::Revocation, keep),
    rpc!("Broker", "Encrypt", v1::EncryptRequest => v1::EncryptResponse, |m, ctx| {
        let aad = SessionAad::transit(Direction::ToDaemon, &m.tenant, env_name(m.environment), 0);
        let sealed = ctx.seal(m.plaintext.as_mut(), &aad);
        Some(ctx.session(&mut m.session_id) | sealed)
    }),
    rpc!("Broker", "Decrypt", v1::DecryptRequest => v1::DecryptResponse,
        |m, ctx| Some(ctx.session(&mut m.session_id) | ctx.transit(&mut m.envelope))),
    rpc!("Broker", "BatchEncrypt", v1::BatchEncryptRequest => v1::BatchEncryptResponse,
    |m, ctx| {
        let env = env_name(m.environment);
        let mut changed = false;
        for (i, p) in m.plaintexts.iter_mut().enumerate() {
            let aad = SessionAad::transit(Direction::ToDaemon, &m.tenant, env, i);
            changed |= ctx.seal(Some(p), &aad);
        }
        Some(ctx.session(&mut m.session_id) | changed)
    }),
    rpc!("Broker", "BatchDecrypt", v1::BatchDecryptRequest => v1::BatchDecryptResponse,
    |m, ctx| {
        let mut changed = ctx.session(&mut m.session_id);
        for envelope in &mut m.envelopes {
            changed |= ctx.transit(envelope);
        }
        Some(changed)
    }),
    rpc!("Broker", "VerifyApiKey", v1::VerifyApiKeyRequest => v1::VerifyApiKeyResponse,
    |m, ctx| {
        let aad = SessionAad::api_key_to_verify(env_name(m.environment));
        let sealed = ctx.seal(m.api_key.as_mut(), &aad);
        Some(ctx.session(&mut m.session_id) | sealed)
    }),
    rpc!("Broker", "Rewrap", v1::RewrapRequest => v1::RewrapResponse,
        |m, ctx| Some(ctx.transit(&mut m.envelope))),
    rpc!("Broker", "BatchRewrap", v1::BatchRewrapRequest => v1::BatchRewrapResponse,
    |m, ctx| {
        let mut changed = false;
        for envelope in &mut m.envelopes {
            changed |= ctx.transit(envelope);
        }
        Some(changed)
    }),
    rpc!("Admin", "Status", v1::StatusRequest => v1::StatusResponse, keep),
    rpc!("Admin", "Init", v1::InitRequest => v1::InitResponse,
        |m, ctx| Some(ctx.session(&mut m.session_id))),
    rpc!("Admin", "Unseal", v1::UnsealRequest => v1::UnsealResponse, |m, ctx| {
        let aad = SessionAad::share(op::UNSEAL, Direction::ToDaemon, 0);
        let sealed = ctx.seal(m.share.as_mut(), &aad);
        Some(ctx.session(&mut m.session_id) | sealed)
    }),
    rpc!("Admin", "Seal", v1::SealRequest => v1::SealResponse, keep),
    rpc!("Admin", "Rekey", v1::RekeyRequest => v1::RekeyResponse, |m, ctx| {
        let sealed = shares(ctx, op::REKEY, &mut m.current_shares);
        Some(ctx.session(&mut m.session_id) | sealed)
    }),
    rpc!("Admin", "VerifyRekey", v1::VerifyRekeyRequest => v1::VerifyRekeyResponse, |m, ctx| {
        let sealed = shares(ctx, op::VERIFY_REKEY, &mut m.new_shares);
        Some(ctx.session(&mut m.session_id) | sealed)
    }),
    rpc!("Admin", "RotateRootKey", v1::RotateRootKeyRequest => v1::RotateRootKeyResponse,
    |m, ctx| {
        let sealed = shares(ctx, op::ROTATE_ROOT_KEY, &mut m.shares);
        Some(ctx.session(&mut m.session_id) | sealed)
    }),
    rpc!("Admin", "PutSecret", v1::PutSecretRequest => v1::SecretMetadata, |m, ctx| {
        let sealed = value(ctx, op::PUT_SECRET, m.secret.as_ref(), m.value.as_mut());
        Some(ctx.session(&mut m.session_id) | sealed)
    }),
    rpc!("Admin", "RotateSecret", v1::RotateSecretRequest => v1::SecretMetadata, |m, ctx| {
        if is_canary(m.secret.as_ref()) {
            return None;
        }
        let sealed = value(ctx, op::ROTATE_SECRET, m.secret.as_ref(), m.value.as_mut());
        Some(ctx.session(&mut m.session_id) | sealed)
    }),
    rpc!("Admin", "DescribeSecret", v1::DescribeSecretRequest => v1::SecretMetadata, keep),
    rpc!("Admin", "ListSecrets", v1::ListSecretsRequest => v1::ListSecretsResponse, keep),
    rpc!("Admin", "DeleteSecret", v1::DeleteSecretRequest => v1::DeleteSecretResponse,
        |m, _| (!is_canary(m.secret.as_ref())).then_some(false)),
    rpc!("Admin", "EraseTenant", v1::EraseTenantRequest => v1::EraseTenantResponse,
        |m, _| (m.tenant != CANARY_TENANT).then_some(false)),
    rpc!("Admin", "RotateTenantKey", v1::RotateTenantKeyRequest => v1::TenantKeys, keep),
    rpc!("Admin", "DescribeTenantKeys", v1::DescribeTenantKeysRequest => v1::TenantKeys, keep),
    rpc!("Admin", "RetireTenantKeys", v1::RetireTenantKeysRequest => v1::TenantKeys, keep),
    rpc!("Admin", "ListLeases", v1::ListLeasesRequest => v1::ListLeasesResponse, keep),
    rpc!("Admin", "RevokeLeases", v1::RevokeLeasesRequest => v1::RevokeLeasesResponse,
    |m, ctx| Some(match &mut m.selector {
        Some(v1::revoke_leases_request::Selector::LeaseId(id)) => ctx.lease(id),
        _ => false,
    })),
    rpc!("Admin", "Reload", v1::ReloadRequest => v1::ReloadResponse, keep),
    rpc!("Admin", "ReloadPolicies", v1::ReloadPoliciesRequest => v1::ReloadPoliciesResponse,
        keep),
    rpc!("Admin", "CheckPolicy", v1::CheckPolicyRequest => v1::CheckPolicyResponse, keep),
    rpc!("Admin", "IssueApiKey", v1::IssueApiKeyRequest => v1::IssueApiKeyResponse,
        |m, ctx| Some(ctx.session(&mut m.session_id))),
    rpc!("Admin", "RotateApiKey", v1::RotateApiKeyRequest => v1::IssueApiKeyResponse,
        |m, ctx| Some(ctx.session(&mut m.session_id))),
    rpc!("Admin", "RevokeApiKey", v1::RevokeApiKeyRequest => v1::ApiKeyInfo, keep),
    rpc!("Admin", "ListApiKeys", v1::ListApiKeysRequest => v1::ListApiKeysResponse, keep),
    rpc!("Admin", "Snapshot", v1::SnapshotRequest => v1::SnapshotChunk, keep),
    rpc!("Admin", "StartCeremony", v1::StartCeremonyRequest => v1::Ceremony, keep),
    rpc!("Admin", "SubmitCeremonyShare", v1::SubmitCeremonyShareRequest => v1::CeremonyProgress,
    |m, ctx| {
        let sealed = ctx.seal(
            m.share.as_mut(),
            &SessionAad::share(op::CEREMONY_SHARE, Direction::ToDaemon, 0),
        );
        Some(ctx.session(&mut m.session_id) | sealed)
    }),
    rpc!("Admin", "GetCeremony", v1::GetCeremonyRequest => v1::CeremonyProgress, keep),
    rpc!("Admin", "CancelCeremony", v1::CancelCeremonyRequest => v1::CancelCeremonyResponse,
        keep),
    rpc!("Admin", "RequestBreakGlass", v1::RequestBreakGlassRequest => v1::BreakGlassGrant,
        keep),
    rpc!("Admin", "ApproveBreakGlass", v1::BreakGlassId => v1::BreakGlassGrant, keep),
    rpc!("Admin", "RevokeBreakGlass", v1::BreakGlassId => v1::BreakGlassGrant, keep),
    rpc!("Admin", "ListBreakGlass", v1::ListBreakGlassRequest => v1::ListBreakGlassResponse,
        keep),
    rpc!("Admin", "ExportTenant", v1::ExportTenantRequest => v1::ExportChunk, keep),
    // A follower never ends: searches the harness sends read to the end and stop.
    rpc!("Admin", "SearchAudit", v1::SearchAuditRequest => v1::AuditEntry, |m, _| {
        let changed = m.follow;
        m.follow = false;
        Some(changed)
    }),
    rpc!("Admin", "JoinCluster", v1::JoinClusterRequest => v1::JoinClusterResponse,
        |m, ctx| Some(ctx.session(&mut m.session_id))),
];

fn value(
    ctx: &Ctx<'_>,
    operation: &str,
    secret: Option<&v1::SecretRef>,
    payload: Option<&mut v1::SealedPayload>,
) -> bool {
    let (tenant, env, name) = secret.map_or(("", "", ""), |s| {
        (s.tenant.as_str(), env_name(s.environment), s.name.as_str())
    });
    ctx.seal(
        payload,
        &SessionAad::secret_value(operation, tenant, env, name),
    )
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::RPCS;

    #[test]
    fn every_rpc_of_the_descriptor_set_is_fuzzed() {
        let set = prost_types::FileDescriptorSet::decode(vault_proto::FILE_DESCRIPTOR_SET).unwrap();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(
                        RPCS.iter().any(|r| r.path == path),
                        "{path} is not in the grpc fuzz target's list"
                    );
                }
            }
        }
    }
}
