//! Deny by default, by construction: every RPC of the descriptor set, called with a
//! well-formed request by an identity that no grant or role names, is refused with
//! `PERMISSION_DENIED` and changes nothing. The few that any identity may call
//! (opening a session, watching and renewing or revoking its own leases) give it
//! nothing of anyone else's. A new RPC without a case here fails the test.

use prost::Message;
use prost_types::FileDescriptorSet;
use tonic::Code;
use tonic::transport::Channel;
use vault_crypto::session::{Direction, SessionAad, op};
use vault_proto::v1::{self, admin_client::AdminClient, broker_client::BrokerClient};
use vault_testkit::grpc::ClientSession;

use crate::harness::{
    ACME_WORKER, GATEWAY, OUTSIDER, TestVault, env_proto, key_request, lease_request, lease_value,
    put_request, secret_ref, unseal_request,
};

/// Every `/package.Service/Method` of vaultd's own services.
fn every_rpc() -> Vec<String> {
    let set = FileDescriptorSet::decode(vault_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                rpcs.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    rpcs
}

/// What the outsider holds: clients, a session of its own, and another identity's
/// lease id and transit envelope to try.
struct Outsider {
    admin: AdminClient<Channel>,
    broker: BrokerClient<Channel>,
    session: ClientSession,
    others_lease: String,
    others_envelope: Vec<u8>,
    others_api_key: String,
    others_api_key_id: String,
    others_grant: String,
}

/// The status code of an answer (`Ok` on success).
fn code<T>(answer: Result<T, tonic::Status>) -> Code {
    answer.map_or_else(|e| e.code(), |_| Code::Ok)
}

fn sealed(session: &ClientSession, aad: &SessionAad, value: &[u8]) -> Option<v1::SealedPayload> {
    Some(v1::SealedPayload {
        envelope: session.key.seal(aad, value).unwrap(),
    })
}

impl Outsider {
    /// Calls `rpc` with a well-formed request; the status code it got (`Ok` on success).
    async fn call(&mut self, rpc: &str) -> Code {
        let s = &self.session;
        let session_id = s.id.clone();
        let share = || {
            sealed(
                s,
                &SessionAad::share(op::REKEY, Direction::ToDaemon, 0),
                &[7; 33],
            )
        };
        let to_daemon = |i| {
            sealed(
                s,
                &SessionAad::transit(Direction::ToDaemon, "acme", "live", i),
                b"plaintext",
            )
        };
        let (a, b) = (&mut self.admin, &mut self.broker);
        match rpc {
            "/vault.v1.Admin/Status" => code(a.status(v1::StatusRequest {}).await),
            "/vault.v1.Admin/Init" => code(
                a.init(v1::InitRequest {
                    session_id,
                    threshold: 1,
                    share_count: 1,
                })
                .await,
            ),
            "/vault.v1.Admin/Unseal" => code(a.unseal(unseal_request(s, &[7; 33], "")).await),
            "/vault.v1.Admin/Seal" => code(a.seal(v1::SealRequest::default()).await),
            "/vault.v1.Admin/Rekey" => code(
                a.rekey(v1::RekeyRequest {
                    session_id,
                    current_shares: vec![share().unwrap(), share().unwrap()],
                    threshold: 2,
                    share_count: 3,
                })
                .await,
            ),
            "/vault.v1.Admin/VerifyRekey" => code(
                a.verify_rekey(v1::VerifyRekeyRequest {
                    session_id,
                    new_shares: vec![share().unwrap(), share().unwrap()],
                })
                .await,
            ),
            "/vault.v1.Admin/RotateRootKey" => code(
                a.rotate_root_key(v1::RotateRootKeyRequest {
                    session_id,
                    shares: vec![share().unwrap(), share().unwrap()],
                })
                .await,
            ),
            "/vault.v1.Admin/StartCeremony" => code(
                a.start_ceremony(v1::StartCeremonyRequest {
                    kind: v1::CeremonyKind::RotateRootKey as i32,
                    ..Default::default()
                })
                .await,
            ),
            "/vault.v1.Admin/SubmitCeremonyShare" => code(
                a.submit_ceremony_share(v1::SubmitCeremonyShareRequest {
                    session_id,
                    nonce: "00".repeat(16),
                    share: sealed(
                        s,
                        &SessionAad::share(op::CEREMONY_SHARE, Direction::ToDaemon, 0),
                        &[7; 33],
                    ),
                })
                .await,
            ),
            "/vault.v1.Admin/JoinCluster" => {
                code(a.join_cluster(v1::JoinClusterRequest { session_id }).await)
            }
            "/vault.v1.Admin/GetCeremony" => code(a.get_ceremony(v1::GetCeremonyRequest {}).await),
            "/vault.v1.Admin/CancelCeremony" => {
                code(a.cancel_ceremony(v1::CancelCeremonyRequest {}).await)
            }
            "/vault.v1.Admin/PutSecret" => code(
                a.put_secret(put_request(s, "acme", "live", "byok/new", b"v"))
                    .await,
            ),
            "/vault.v1.Admin/RotateSecret" => code(
                a.rotate_secret(v1::RotateSecretRequest {
                    session_id,
                    secret: Some(secret_ref("acme", "live", "byok/openai")),
                    value: sealed(
                        s,
                        &SessionAad::secret_value(op::ROTATE_SECRET, "acme", "live", "byok/openai"),
                        b"v2",
                    ),
                    grace_seconds: None,
                })
                .await,
            ),
            "/vault.v1.Admin/DescribeSecret" => code(
                a.describe_secret(v1::DescribeSecretRequest {
                    secret: Some(secret_ref("acme", "live", "byok/openai")),
                })
                .await,
            ),
            "/vault.v1.Admin/ListSecrets" => code(
                a.list_secrets(v1::ListSecretsRequest {
                    tenant: "acme".into(),
                    environment: 0,
                })
                .await,
            ),
            "/vault.v1.Admin/DeleteSecret" => code(
                a.delete_secret(v1::DeleteSecretRequest {
                    secret: Some(secret_ref("acme", "live", "byok/openai")),
                })
                .await,
            ),
            "/vault.v1.Admin/EraseTenant" => code(
                a.erase_tenant(v1::EraseTenantRequest {
                    tenant: "acme".into(),
                    confirm: "acme".into(),
                })
                .await,
            ),
            "/vault.v1.Admin/RotateTenantKey" => code(
                a.rotate_tenant_key(v1::RotateTenantKeyRequest {
                    tenant: "acme".into(),
                })
                .await,
            ),
            "/vault.v1.Admin/DescribeTenantKeys" => code(
                a.describe_tenant_keys(v1::DescribeTenantKeysRequest {
                    tenant: "acme".into(),
                })
                .await,
            ),
            "/vault.v1.Admin/RetireTenantKeys" => code(
                a.retire_tenant_keys(v1::RetireTenantKeysRequest {
                    tenant: "acme".into(),
                    below_version: 1,
                })
                .await,
            ),
            "/vault.v1.Admin/ListLeases" => code(
                a.list_leases(v1::ListLeasesRequest {
                    tenant: None,
                    identity: None,
                })
                .await,
            ),
            "/vault.v1.Admin/RevokeLeases" => code(
                a.revoke_leases(v1::RevokeLeasesRequest {
                    selector: Some(v1::revoke_leases_request::Selector::All(true)),
                })
                .await,
            ),
            "/vault.v1.Admin/Reload" => code(a.reload(v1::ReloadRequest {}).await),
            "/vault.v1.Admin/ReloadPolicies" => {
                code(a.reload_policies(v1::ReloadPoliciesRequest {}).await)
            }
            "/vault.v1.Admin/IssueApiKey" => code(
                a.issue_api_key(v1::IssueApiKeyRequest {
                    session_id,
                    ..key_request("acme", "live", &["usage:read"])
                })
                .await,
            ),
            "/vault.v1.Admin/RotateApiKey" => code(
                a.rotate_api_key(v1::RotateApiKeyRequest {
                    session_id,
                    key_id: self.others_api_key_id.clone(),
                    grace_seconds: None,
                })
                .await,
            ),
            "/vault.v1.Admin/RevokeApiKey" => code(
                a.revoke_api_key(v1::RevokeApiKeyRequest {
                    key_id: self.others_api_key_id.clone(),
                })
                .await,
            ),
            "/vault.v1.Admin/ListApiKeys" => code(
                a.list_api_keys(v1::ListApiKeysRequest {
                    tenant: "acme".into(),
                    environment: 0,
                })
                .await,
            ),
            "/vault.v1.Admin/Snapshot" => code(a.snapshot(v1::SnapshotRequest {}).await),
            "/vault.v1.Admin/RequestBreakGlass" => code(
                a.request_break_glass(v1::RequestBreakGlassRequest {
                    permissions: vec!["secrets.read-metadata".into()],
                    tenants: vec!["acme".into()],
                    duration_seconds: 60,
                    reason: "asking is open to anyone".into(),
                })
                .await,
            ),
            "/vault.v1.Admin/ApproveBreakGlass" => code(
                a.approve_break_glass(v1::BreakGlassId {
                    id: self.others_grant.clone(),
                })
                .await,
            ),
            "/vault.v1.Admin/RevokeBreakGlass" => code(
                a.revoke_break_glass(v1::BreakGlassId {
                    id: self.others_grant.clone(),
                })
                .await,
            ),
            "/vault.v1.Admin/ListBreakGlass" => {
                let listed = a.list_break_glass(v1::ListBreakGlassRequest {}).await;
                // Only its own grant (the one it asked for above, if any).
                if let Ok(listed) = &listed {
                    assert!(
                        listed
                            .get_ref()
                            .grants
                            .iter()
                            .all(|g| g.requester == OUTSIDER),
                        "{listed:?}"
                    );
                }
                code(listed)
            }
            "/vault.v1.Admin/ExportTenant" => code(
                a.export_tenant(v1::ExportTenantRequest {
                    tenant: "acme".into(),
                })
                .await,
            ),
            "/vault.v1.Admin/SearchAudit" => code(
                a.search_audit(v1::SearchAuditRequest {
                    tenant: "acme".into(),
                    ..Default::default()
                })
                .await,
            ),
            "/vault.v1.Admin/CheckPolicy" => code(
                a.check_policy(v1::CheckPolicyRequest {
                    identity: GATEWAY.into(),
                    action: "lease".into(),
                    tenant: "acme".into(),
                    environment: env_proto("live"),
                    secret: "byok/openai".into(),
                })
                .await,
            ),
            "/vault.v1.Broker/OpenSession" => {
                // Any identity may: a session alone gives nothing.
                let mut broker = b.clone();
                code(vault_testkit::grpc::open_session(&mut broker, OUTSIDER).await)
            }
            "/vault.v1.Broker/Lease" => code(
                b.lease(lease_request(s, "acme", "live", "byok/openai"))
                    .await,
            ),
            "/vault.v1.Broker/Renew" => code(
                b.renew(v1::RenewRequest {
                    lease_id: self.others_lease.clone(),
                    ttl_seconds: 60,
                })
                .await,
            ),
            "/vault.v1.Broker/Revoke" => code(
                b.revoke(v1::RevokeRequest {
                    lease_id: self.others_lease.clone(),
                })
                .await,
            ),
            "/vault.v1.Broker/WatchRevocations" => {
                code(b.watch_revocations(v1::WatchRevocationsRequest {}).await)
            }
            "/vault.v1.Broker/Encrypt" => code(
                b.encrypt(v1::EncryptRequest {
                    session_id,
                    tenant: "acme".into(),
                    environment: env_proto("live"),
                    plaintext: to_daemon(0),
                })
                .await,
            ),
            "/vault.v1.Broker/Decrypt" => code(
                b.decrypt(v1::DecryptRequest {
                    session_id,
                    tenant: "acme".into(),
                    environment: env_proto("live"),
                    envelope: self.others_envelope.clone(),
                })
                .await,
            ),
            "/vault.v1.Broker/BatchEncrypt" => code(
                b.batch_encrypt(v1::BatchEncryptRequest {
                    session_id,
                    tenant: "acme".into(),
                    environment: env_proto("live"),
                    plaintexts: vec![to_daemon(0).unwrap(), to_daemon(1).unwrap()],
                })
                .await,
            ),
            "/vault.v1.Broker/BatchDecrypt" => code(
                b.batch_decrypt(v1::BatchDecryptRequest {
                    session_id,
                    tenant: "acme".into(),
                    environment: env_proto("live"),
                    envelopes: vec![self.others_envelope.clone()],
                })
                .await,
            ),
            "/vault.v1.Broker/Rewrap" => code(
                b.rewrap(v1::RewrapRequest {
                    tenant: "acme".into(),
                    environment: env_proto("live"),
                    envelope: self.others_envelope.clone(),
                })
                .await,
            ),
            "/vault.v1.Broker/BatchRewrap" => code(
                b.batch_rewrap(v1::BatchRewrapRequest {
                    tenant: "acme".into(),
                    environment: env_proto("live"),
                    envelopes: vec![self.others_envelope.clone()],
                })
                .await,
            ),
            "/vault.v1.Broker/VerifyApiKey" => code(
                b.verify_api_key(v1::VerifyApiKeyRequest {
                    session_id,
                    api_key: sealed(
                        s,
                        &SessionAad::api_key_to_verify("live"),
                        self.others_api_key.as_bytes(),
                    ),
                    environment: env_proto("live"),
                    scope: String::new(),
                    cost: 1,
                })
                .await,
            ),
            other => panic!(
                "{other} has no case in the deny-by-default test: add one with a well-formed \
                 request, and decide whether an identity without grants may call it"
            ),
        }
    }
}

/// What an identity without grants may get from an RPC.
fn expected(rpc: &str) -> Code {
    match rpc {
        // Its own sessions and its own revocation stream; asking for break-glass
        // (bounded per identity) and seeing its own grants.
        "/vault.v1.Broker/OpenSession"
        | "/vault.v1.Broker/WatchRevocations"
        | "/vault.v1.Admin/RequestBreakGlass"
        | "/vault.v1.Admin/ListBreakGlass" => Code::Ok,
        // Its own leases and grants only: another identity's is not found.
        "/vault.v1.Broker/Renew"
        | "/vault.v1.Broker/Revoke"
        | "/vault.v1.Admin/RevokeBreakGlass" => Code::NotFound,
        _ => Code::PermissionDenied,
    }
}

#[tokio::test]
async fn an_identity_without_grants_is_refused_by_every_rpc() {
    let (mut vault, _) = TestVault::unsealed().await;
    vault
        .put_secret("acme", "live", "byok/openai", b"sk-acme")
        .await;
    // Another identity's lease and transit envelope, for the outsider to try.
    let (mut gateway, gateway_session) = vault.session(GATEWAY).await;
    let (lease, _) = lease_value(
        &mut gateway,
        &gateway_session,
        "acme",
        "live",
        "byok/openai",
    )
    .await
    .unwrap();
    let (mut worker, worker_session) = vault.session(ACME_WORKER).await;
    let envelope = worker
        .encrypt(v1::EncryptRequest {
            session_id: worker_session.id.clone(),
            tenant: "acme".into(),
            environment: env_proto("live"),
            plaintext: sealed(
                &worker_session,
                &SessionAad::transit(Direction::ToDaemon, "acme", "live", 0),
                b"worker data",
            ),
        })
        .await
        .unwrap()
        .into_inner()
        .envelope;

    let (api_key, api_key_info) = vault
        .issue_api_key(key_request("acme", "live", &["usage:read"]))
        .await;

    let others_grant = vault
        .admin_as("spiffe://billing.example/human/secops/bob")
        .request_break_glass(v1::RequestBreakGlassRequest {
            permissions: vec!["tenants.export".into()],
            tenants: vec!["acme".into()],
            duration_seconds: 60,
            reason: "another identity's grant".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let (broker, session) = vault.session(OUTSIDER).await;
    let mut outsider = Outsider {
        others_grant,
        others_api_key: api_key.clone(),
        others_api_key_id: api_key_info.key_id.clone(),
        admin: vault.admin_as(OUTSIDER),
        broker,
        session,
        others_lease: lease.lease_id.clone(),
        others_envelope: envelope,
    };
    let rpcs = every_rpc();
    assert!(rpcs.len() >= 30, "the descriptor set lists {rpcs:?}");
    let mut wrong = Vec::new();
    for rpc in &rpcs {
        let got = outsider.call(rpc).await;
        if got != expected(rpc) {
            wrong.push(format!("{rpc}: {got:?}, expected {:?}", expected(rpc)));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // Nothing changed: still unsealed, the secret and the other identity's lease live,
    // the API key still verifies for the gateway.
    let (mut gw, gw_session) = vault.session(GATEWAY).await;
    gw.verify_api_key(v1::VerifyApiKeyRequest {
        session_id: gw_session.id.clone(),
        api_key: sealed(
            &gw_session,
            &SessionAad::api_key_to_verify("live"),
            api_key.as_bytes(),
        ),
        environment: env_proto("live"),
        scope: "usage:read".into(),
        cost: 1,
    })
    .await
    .unwrap();
    let status = vault.admin().status(v1::StatusRequest {}).await.unwrap();
    assert_eq!(status.into_inner().state, v1::SealState::Unsealed as i32);
    gateway
        .renew(v1::RenewRequest {
            lease_id: lease.lease_id,
            ttl_seconds: 60,
        })
        .await
        .unwrap();
    lease_value(
        &mut gateway,
        &gateway_session,
        "acme",
        "live",
        "byok/openai",
    )
    .await
    .unwrap();
    // Every refusal is in the audit log, naming the default deny.
    let denied = vault
        .audit_lines()
        .iter()
        .filter(|l| l.contains(OUTSIDER) && l.contains("default deny"))
        .count();
    let refused = rpcs
        .iter()
        .filter(|r| expected(r) == Code::PermissionDenied)
        .count();
    assert!(
        denied >= refused,
        "{denied} deny records for {refused} refusals"
    );
}
