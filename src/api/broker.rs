//! `vault.v1.Broker`: sessions, leases and transit for platform services.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vault_proto::v1::{self, broker_server::Broker};

use super::transit::{Target, batch_results, batch_size, rewrap, single};
use super::{ApiError, Call, Shared, secret_id};
use crate::anomalies::Watched;
use crate::authz::{Authorized, LeaseOp};
use crate::custody::{LeaseError, Notice};
use crate::ids::LeaseId;
use crate::leases::{LeaseLimit, RevocationReason};
use vault_crypto::clock::unix_ms;

/// The broker service.
pub(crate) struct BrokerService {
    shared: Arc<Shared>,
}

impl BrokerService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Issues a lease; also returns the grant it was issued under and its id, so a
    /// lease whose answer cannot be given is taken back.
    fn lease_inner(
        &self,
        call: &mut Call,
        req: v1::LeaseRequest,
    ) -> Result<(v1::LeaseResponse, Authorized<LeaseOp>, LeaseId), ApiError> {
        let s = &self.shared;
        let session = s.session(call, &req.session_id)?;
        let id = secret_id(req.secret.as_ref())?;
        call.secret(&id);
        let grant = s
            .policies
            .grant(&call.caller, LeaseOp(id))
            .map_err(ApiError::Denied)?;
        call.event.grant.clone_from(&grant.rule);
        s.custody.admit_grant(&grant)?;
        s.watch(&grant, Watched::Lease, &grant.op().0.tenant, 1)?;
        let issued = s
            .custody
            .lease(&grant, &session, req.ttl_seconds, req.version);
        if let Err(LeaseError::Limit { version, .. }) = &issued {
            // The version was opened: it belongs in the record of the refusal too.
            call.event.version = Some(*version);
        }
        let issued = issued?;
        let lease = issued.lease;
        call.event.version = Some(lease.version);
        call.event.lease_id = Some(lease.id.to_string());
        Ok((
            v1::LeaseResponse {
                lease_id: lease.id.to_string(),
                value: Some(v1::SealedPayload {
                    envelope: issued.envelope,
                }),
                version: lease.version,
                expires_unix_ms: unix_ms(lease.expires),
                renewable_until_unix_ms: unix_ms(lease.renewable_until),
            },
            grant,
            lease.id,
        ))
    }

    fn renew_inner(
        &self,
        call: &mut Call,
        req: &v1::RenewRequest,
    ) -> Result<v1::RenewResponse, ApiError> {
        let s = &self.shared;
        let id = lease_id(&req.lease_id)?;
        call.event.lease_id = Some(id.to_string());
        let own = s
            .policies
            .own_leases(&call.caller)
            .map_err(ApiError::Denied)?;
        let lease = s
            .custody
            .own_lease(&own, &id)
            .ok_or(ApiError::UnknownLease)?;
        call.secret(&lease.secret);
        // The policy may have changed since the lease was issued, and the version may
        // no longer be leasable (sealed, deleted, past its grace window).
        let grant = match s.policies.grant(&call.caller, LeaseOp(lease.secret)) {
            Ok(grant) => grant,
            Err(denied) => {
                s.custody.revoke_own(&own, &id, RevocationReason::Revoked);
                return Err(ApiError::Denied(denied));
            }
        };
        if let Err(e) = s.custody.check_leasable(&grant, lease.version) {
            s.custody
                .revoke_own(&own, &id, RevocationReason::VersionDisabled);
            return Err(e.into());
        }
        let expires = s
            .custody
            .renew(&grant, &id, req.ttl_seconds)
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
        let sessions = self.shared.policies.sessions(&call.caller);
        let result = self
            .shared
            .custody
            .open_session(&sessions, &request.get_ref().client_public_key)
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
        let (result, issued) = match self.lease_inner(&mut call, request.into_inner()) {
            Ok((response, grant, id)) => (Ok(response), Some((grant, id))),
            Err(e) => (Err(e), None),
        };
        let answer = self.shared.finish(call, result).await;
        let custody = &self.shared.custody;
        match (answer, issued) {
            (Err(status), Some((grant, id))) => {
                // Not audited, so not delivered: the lease must not linger either.
                custody.withdraw_lease(&grant, &id);
                Err(status)
            }
            // Revoked while its record was being written: the revocation notice may
            // reach the client before this answer, so the value must not be delivered.
            (Ok(_), Some((grant, id))) if !custody.lease_is_live(&grant, &id) => {
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
        let custody = &self.shared.custody;
        let prepared = lease_id(&request.get_ref().lease_id).and_then(|id| {
            // Only a well-formed id enters the record.
            call.event.lease_id = Some(id.to_string());
            let own = self
                .shared
                .policies
                .own_leases(&call.caller)
                .map_err(ApiError::Denied)?;
            Ok(match custody.own_lease(&own, &id) {
                Some(lease) => {
                    call.secret(&lease.secret);
                    custody.revoke_own(&own, &id, RevocationReason::Revoked);
                    None
                }
                None => Some((own, id)),
            })
        });
        let result = match prepared {
            Ok(None) => Ok(v1::RevokeResponse {}),
            // Not issued here: another node sharing the store may hold it, and ends it
            // when it reads the change log (a store write, off the async workers).
            Ok(Some((own, id))) => {
                call.event
                    .detail
                    .insert("through".into(), "change log".into());
                self.shared
                    .blocking(&mut call, move |shared, _| {
                        match shared.custody.revoke_own_elsewhere(&own, &id)? {
                            true => Ok(v1::RevokeResponse {}),
                            false => Err(ApiError::UnknownLease),
                        }
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        self.shared.finish(call, result).await
    }

    type WatchRevocationsStream = ReceiverStream<Result<v1::Revocation, Status>>;

    async fn watch_revocations(
        &self,
        request: Request<v1::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let call = self.shared.call("broker.watch_revocations", &request)?;
        // Subscribed before answering: nothing revoked after the answer is missed.
        let watch = self
            .shared
            .policies
            .own_leases(&call.caller)
            .map_err(ApiError::Denied)
            .and_then(|own| {
                let verifier = self.shared.policies.verifier(&call.caller).ok();
                self.shared
                    .custody
                    .watch(&own, verifier.as_ref())
                    .ok_or(ApiError::Exhausted(
                        "this identity holds limits.watches_per_identity revocation watches; \
                     close one first",
                    ))
            });
        let mut watch = self.shared.finish(call, watch).await?.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                // A client that went away ends the task even if no revocation comes.
                let received = tokio::select! {
                    received = watch.next() => received,
                    () = tx.closed() => return,
                };
                let item = match received {
                    Ok(Notice::Lease(r)) => Ok(v1::Revocation {
                        lease_id: r.lease_id.to_string(),
                        reason: reason(r.reason) as i32,
                        api_key_id: String::new(),
                    }),
                    Ok(Notice::ApiKey(id)) => Ok(v1::Revocation {
                        lease_id: String::new(),
                        reason: v1::RevocationReason::ApiKeyRevoked as i32,
                        api_key_id: id,
                    }),
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
        let mut call = self.shared.call("broker.verify_api_key", &request)?;
        let result = super::verify::verify(&self.shared, &mut call, request.get_ref());
        self.shared.finish(call, result).await
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
