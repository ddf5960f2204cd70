//! `vault.v1.Broker`: sessions, leases and transit for platform services.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vault_crypto::session::SessionAad;
use vault_proto::v1::{self, broker_server::Broker};

use super::transit::{Target, batch_results, batch_size, rewrap, single};
use super::{ApiError, Call, Shared, secret_id};
use crate::authz::LeaseOp;
use crate::ids::LeaseId;
use crate::leases::{Lease, LeaseLimit, RevocationReason, Selector, unix_ms};

/// The latest lease end representable everywhere (year 2262 in Unix nanoseconds).
const MAX_TIME: Duration = Duration::from_secs(i64::MAX as u64 / 1_000_000_000);

/// The broker service.
pub(crate) struct BrokerService {
    shared: Arc<Shared>,
}

impl BrokerService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn lease_inner(
        &self,
        call: &mut Call,
        req: v1::LeaseRequest,
    ) -> Result<v1::LeaseResponse, ApiError> {
        let s = &self.shared;
        let session = s.session(call, &req.session_id)?;
        let id = secret_id(req.secret.as_ref())?;
        call.secret(&id);
        let grant = s
            .policies
            .grant(&call.caller, LeaseOp(id.clone()))
            .map_err(ApiError::Denied)?;
        call.event.grant.clone_from(&grant.rule);
        let max_ttl = grant.max_ttl.unwrap_or(s.limits.default_ttl);
        // Bounded by the policy (at most 30 days); a clock near the end of time saturates.
        let after = |d: Duration| {
            SystemTime::now()
                .checked_add(d)
                .unwrap_or(SystemTime::UNIX_EPOCH + MAX_TIME)
        };
        let ttl = match req.ttl_seconds {
            0 => s.limits.default_ttl,
            n => Duration::from_secs(u64::from(n)),
        }
        .min(max_ttl);
        // Revocations from here on (a seal, an erasure) must cover this lease too.
        let generation = s.leases.generation();
        let (value, version) = s.custody.open_secret(&grant, req.version)?;
        call.event.version = Some(version);
        let lease_id = LeaseId::generate().map_err(|e| ApiError::Vault(e.into()))?;
        let lease = Lease {
            id: lease_id.clone(),
            identity: call.caller.identity().clone(),
            secret: id.clone(),
            version,
            issued: SystemTime::now(),
            expires: after(ttl),
            renewable_until: after(max_ttl),
        };
        let (expires, renewable_until) = (lease.expires, lease.renewable_until);
        let per_identity = grant.max_active_leases.unwrap_or(s.limits.max_per_identity);
        s.leases
            .insert(lease, per_identity, generation)
            .map_err(ApiError::LeaseLimit)?;
        call.event.lease_id = Some(lease_id.to_string());
        let aad = SessionAad::lease(
            id.tenant.as_str(),
            id.environment.as_str(),
            id.name.as_str(),
            version,
            lease_id.as_str(),
        );
        let envelope = session.key.seal(&aad, value.expose_secret()).map_err(|e| {
            s.leases.remove(call.caller.identity(), &lease_id);
            ApiError::Vault(e.into())
        })?;
        Ok(v1::LeaseResponse {
            lease_id: lease_id.to_string(),
            value: Some(v1::SealedPayload { envelope }),
            version,
            expires_unix_ms: unix_ms(expires),
            renewable_until_unix_ms: unix_ms(renewable_until),
        })
    }

    fn renew_inner(
        &self,
        call: &mut Call,
        req: &v1::RenewRequest,
    ) -> Result<v1::RenewResponse, ApiError> {
        let s = &self.shared;
        let id = lease_id(&req.lease_id)?;
        call.event.lease_id = Some(id.to_string());
        let lease = s
            .leases
            .get(call.caller.identity(), &id)
            .ok_or(ApiError::UnknownLease)?;
        call.secret(&lease.secret);
        // The policy may have changed since the lease was issued, and the version may
        // no longer be leasable (sealed, deleted, past its grace window).
        let grant = match s
            .policies
            .grant(&call.caller, LeaseOp(lease.secret.clone()))
        {
            Ok(grant) => grant,
            Err(denied) => {
                s.leases
                    .revoke(&Selector::Id(lease.id), RevocationReason::Revoked);
                return Err(ApiError::Denied(denied));
            }
        };
        if let Err(e) = s.custody.check_leasable(&grant, lease.version) {
            s.leases
                .revoke(&Selector::Id(lease.id), RevocationReason::VersionDisabled);
            return Err(e.into());
        }
        let ttl = match req.ttl_seconds {
            0 => s.limits.default_ttl,
            n => Duration::from_secs(u64::from(n)),
        };
        let max_ttl = grant.max_ttl.unwrap_or(s.limits.default_ttl);
        let expires = s
            .leases
            .renew(call.caller.identity(), &id, ttl, max_ttl)
            .ok_or(ApiError::UnknownLease)?;
        Ok(v1::RenewResponse {
            expires_unix_ms: unix_ms(expires),
        })
    }
}

/// A lease id from a request, if it has the form vaultd gives out.
fn lease_id(text: &str) -> Result<LeaseId, ApiError> {
    LeaseId::parse(text).ok_or(ApiError::Invalid(LeaseId::FORM))
}

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn open_session(
        &self,
        request: Request<v1::OpenSessionRequest>,
    ) -> Result<Response<v1::OpenSessionResponse>, Status> {
        let call = self.shared.call("broker.open_session", &request)?;
        let result = self
            .shared
            .sessions
            .open(call.caller.identity(), &request.get_ref().client_public_key)
            .map(|opened| v1::OpenSessionResponse {
                session_id: opened.id.to_string(),
                server_public_key: opened.server_public.to_vec(),
                expires_unix_ms: opened.expires_unix_ms,
            })
            .map_err(ApiError::Session);
        self.shared.finish(call, result).await
    }

    async fn lease(
        &self,
        request: Request<v1::LeaseRequest>,
    ) -> Result<Response<v1::LeaseResponse>, Status> {
        let mut call = self.shared.call("broker.lease", &request)?;
        let identity = call.caller.identity().clone();
        let result = self.lease_inner(&mut call, request.into_inner());
        let lease_id = result
            .as_ref()
            .ok()
            .and_then(|r| LeaseId::parse(&r.lease_id));
        let answer = self.shared.finish(call, result).await;
        match (answer, lease_id) {
            (Err(status), Some(id)) => {
                // Not audited, so not delivered: the lease must not linger either.
                self.shared.leases.remove(&identity, &id);
                Err(status)
            }
            // Revoked while its record was being written: the revocation notice may
            // reach the client before this answer, so the value must not be delivered.
            (Ok(_), Some(id)) if !self.shared.leases.is_live(&identity, &id) => {
                Err(ApiError::LeaseLimit(LeaseLimit::Revoked).into())
            }
            (answer, _) => answer,
        }
    }

    async fn renew(
        &self,
        request: Request<v1::RenewRequest>,
    ) -> Result<Response<v1::RenewResponse>, Status> {
        let mut call = self.shared.call("broker.renew", &request)?;
        let result = self.renew_inner(&mut call, request.get_ref());
        self.shared.finish(call, result).await
    }

    async fn revoke(
        &self,
        request: Request<v1::RevokeRequest>,
    ) -> Result<Response<v1::RevokeResponse>, Status> {
        let mut call = self.shared.call("broker.revoke", &request)?;
        let result = lease_id(&request.get_ref().lease_id).and_then(|id| {
            // Only a well-formed id enters the record.
            call.event.lease_id = Some(id.to_string());
            let lease = self
                .shared
                .leases
                .get(call.caller.identity(), &id)
                .ok_or(ApiError::UnknownLease)?;
            call.secret(&lease.secret);
            self.shared
                .leases
                .revoke(&Selector::Id(lease.id), RevocationReason::Revoked);
            Ok(v1::RevokeResponse {})
        });
        self.shared.finish(call, result).await
    }

    type WatchRevocationsStream = ReceiverStream<Result<v1::Revocation, Status>>;

    async fn watch_revocations(
        &self,
        request: Request<v1::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let call = self.shared.call("broker.watch_revocations", &request)?;
        let identity = call.caller.identity().clone();
        let held = self.shared.watches.acquire(&identity).ok_or(ApiError::Exhausted(
            "this identity holds limits.watches_per_identity revocation watches; close one first",
        ));
        // Subscribed before answering: nothing revoked after the answer is missed.
        let mut revocations = self.shared.leases.subscribe();
        let held = self.shared.finish(call, held).await?.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let _held = held;
            loop {
                // A client that went away ends the task even if no revocation comes.
                let received = tokio::select! {
                    received = revocations.recv() => received,
                    () = tx.closed() => return,
                };
                let item = match received {
                    Ok(r) if r.identity == identity => Ok(v1::Revocation {
                        lease_id: r.lease_id.to_string(),
                        reason: reason(r.reason) as i32,
                    }),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => Err(Status::data_loss(
                        "revocations were missed: drop every cached value and lease again",
                    )),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn encrypt(
        &self,
        request: Request<v1::EncryptRequest>,
    ) -> Result<Response<v1::EncryptResponse>, Status> {
        let mut call = self.shared.call("broker.encrypt", &request)?;
        let r = request.into_inner();
        let result = self
            .shared
            .blocking(&mut call, move |shared, call| {
                let target = Target::of(shared, call, &r.session_id, &r.tenant, r.environment)?;
                target.encrypt(shared, call, std::iter::once(r.plaintext.as_ref()))
            })
            .await
            .and_then(single)
            .map(|envelope| v1::EncryptResponse { envelope });
        self.shared.finish(call, result).await
    }

    async fn decrypt(
        &self,
        request: Request<v1::DecryptRequest>,
    ) -> Result<Response<v1::DecryptResponse>, Status> {
        let mut call = self.shared.call("broker.decrypt", &request)?;
        let r = request.into_inner();
        let result = self
            .shared
            .blocking(&mut call, move |shared, call| {
                let target = Target::of(shared, call, &r.session_id, &r.tenant, r.environment)?;
                target.decrypt(shared, call, std::iter::once(r.envelope.as_slice()))
            })
            .await
            .and_then(single)
            .map(|plaintext| v1::DecryptResponse {
                plaintext: Some(plaintext),
            });
        self.shared.finish(call, result).await
    }

    async fn batch_encrypt(
        &self,
        request: Request<v1::BatchEncryptRequest>,
    ) -> Result<Response<v1::BatchEncryptResponse>, Status> {
        let mut call = self.shared.call("broker.batch_encrypt", &request)?;
        let r = request.into_inner();
        let result = match batch_size(r.plaintexts.len()) {
            Ok(()) => {
                self.shared
                    .blocking(&mut call, move |shared, call| {
                        let target =
                            Target::of(shared, call, &r.session_id, &r.tenant, r.environment)?;
                        target.encrypt(shared, call, r.plaintexts.iter().map(Some))
                    })
                    .await
            }
            Err(e) => Err(e),
        }
        .map(|items| v1::BatchEncryptResponse {
            results: batch_results(items, v1::batch_item_result::Result::Envelope),
        });
        self.shared.finish(call, result).await
    }

    async fn batch_decrypt(
        &self,
        request: Request<v1::BatchDecryptRequest>,
    ) -> Result<Response<v1::BatchDecryptResponse>, Status> {
        let mut call = self.shared.call("broker.batch_decrypt", &request)?;
        let r = request.into_inner();
        let result = match batch_size(r.envelopes.len()) {
            Ok(()) => {
                self.shared
                    .blocking(&mut call, move |shared, call| {
                        let target =
                            Target::of(shared, call, &r.session_id, &r.tenant, r.environment)?;
                        target.decrypt(shared, call, r.envelopes.iter().map(Vec::as_slice))
                    })
                    .await
            }
            Err(e) => Err(e),
        }
        .map(|items| v1::BatchDecryptResponse {
            results: batch_results(items, v1::batch_item_result::Result::Plaintext),
        });
        self.shared.finish(call, result).await
    }

    async fn rewrap(
        &self,
        request: Request<v1::RewrapRequest>,
    ) -> Result<Response<v1::RewrapResponse>, Status> {
        let mut call = self.shared.call("broker.rewrap", &request)?;
        let r = request.into_inner();
        let result = self
            .shared
            .blocking(&mut call, move |shared, call| {
                rewrap(
                    shared,
                    call,
                    &r.tenant,
                    r.environment,
                    std::iter::once(r.envelope.as_slice()),
                )
            })
            .await
            .and_then(single)
            .map(|envelope| v1::RewrapResponse { envelope });
        self.shared.finish(call, result).await
    }

    async fn batch_rewrap(
        &self,
        request: Request<v1::BatchRewrapRequest>,
    ) -> Result<Response<v1::BatchRewrapResponse>, Status> {
        let mut call = self.shared.call("broker.batch_rewrap", &request)?;
        let r = request.into_inner();
        let result = match batch_size(r.envelopes.len()) {
            Ok(()) => {
                self.shared
                    .blocking(&mut call, move |shared, call| {
                        rewrap(
                            shared,
                            call,
                            &r.tenant,
                            r.environment,
                            r.envelopes.iter().map(Vec::as_slice),
                        )
                    })
                    .await
            }
            Err(e) => Err(e),
        }
        .map(|items| v1::BatchRewrapResponse {
            results: batch_results(items, v1::batch_item_result::Result::Envelope),
        });
        self.shared.finish(call, result).await
    }

    async fn verify_api_key(
        &self,
        request: Request<v1::VerifyApiKeyRequest>,
    ) -> Result<Response<v1::VerifyApiKeyResponse>, Status> {
        let call = self.shared.call("broker.verify_api_key", &request)?;
        drop(call);
        Err(Status::unimplemented(
            "platform API keys are not issued by this vaultd version; VerifyApiKey is not served",
        ))
    }
}

fn reason(r: RevocationReason) -> v1::RevocationReason {
    match r {
        RevocationReason::Revoked => v1::RevocationReason::Revoked,
        RevocationReason::Sealed => v1::RevocationReason::Sealed,
        RevocationReason::VersionDisabled => v1::RevocationReason::VersionDisabled,
        RevocationReason::TenantErased => v1::RevocationReason::TenantErased,
    }
}
