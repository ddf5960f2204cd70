//! Transit on behalf of `vault.v1.Broker`: plaintexts open from and seal to the
//! caller's session, envelopes come and go as they are; batches of up to 1000 items,
//! each succeeding or failing on its own. Runs on the blocking pool (bulk AES-GCM, and
//! the occasional durable write of a key's encryption budget).

use std::sync::Arc;

use tonic::Status;
use vault_crypto::session::{Direction, SessionAad};
use vault_proto::v1;

use super::{ApiError, Call, Shared, environment, sealed};
use crate::anomalies::Watched;
use crate::authz::{DecryptOp, EncryptOp, RewrapOp};
use crate::names::{Environment, TenantId};
use crate::sessions::Session;

/// Items one batch call may carry.
const MAX_BATCH: usize = 1000;

/// Where transit plaintexts go to and come from: a session, a tenant, an environment.
pub(super) struct Target {
    session: Arc<Session>,
    tenant: TenantId,
    env: Environment,
}

/// The validated tenant and environment of a transit request, named in its record.
fn tenant_env(
    call: &mut Call,
    tenant: &str,
    env: i32,
) -> Result<(TenantId, Environment), ApiError> {
    let tenant = TenantId::new(tenant)?;
    let env = environment(env)?;
    call.event.tenant = Some(tenant.to_string());
    call.event.environment = Some(env.to_string());
    Ok((tenant, env))
}

impl Target {
    pub(super) fn of(
        shared: &Shared,
        call: &mut Call,
        session_id: &str,
        tenant: &str,
        env: i32,
    ) -> Result<Self, ApiError> {
        let session = shared.session(call, session_id)?;
        let (tenant, env) = tenant_env(call, tenant, env)?;
        Ok(Self {
            session,
            tenant,
            env,
        })
    }

    pub(super) fn encrypt<'a>(
        &self,
        shared: &Shared,
        call: &mut Call,
        items: impl Iterator<Item = Option<&'a v1::SealedPayload>>,
    ) -> Result<Vec<Result<Vec<u8>, ApiError>>, ApiError> {
        let grant = shared
            .policies
            .grant(&call.caller, EncryptOp(self.tenant.clone(), self.env))
            .map_err(ApiError::Denied)?;
        call.event.grant.clone_from(&grant.rule);
        shared.custody.admit_grant(&grant)?;
        Ok(items
            .enumerate()
            .map(|(i, item)| {
                let aad = SessionAad::transit(
                    Direction::ToDaemon,
                    self.tenant.as_str(),
                    self.env.as_str(),
                    i,
                );
                let plaintext = self
                    .session
                    .key
                    .open(&aad, sealed(item, "plaintext is required")?)
                    .map_err(|_| ApiError::Sealed("plaintext"))?;
                let envelope = shared
                    .custody
                    .transit_encrypt(&grant, plaintext.expose_secret())?;
                Ok(envelope.into_bytes())
            })
            .collect())
    }

    pub(super) fn decrypt<'a>(
        &self,
        shared: &Shared,
        call: &mut Call,
        items: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Result<Vec<Result<v1::SealedPayload, ApiError>>, ApiError> {
        let grant = shared
            .policies
            .grant(&call.caller, DecryptOp(self.tenant.clone(), self.env))
            .map_err(ApiError::Denied)?;
        call.event.grant.clone_from(&grant.rule);
        shared.custody.admit_grant(&grant)?;
        let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
        shared.watch(&grant, Watched::TransitDecrypt, &self.tenant, count)?;
        let mut results = Vec::with_capacity(items.len());
        let mut i = 0;
        shared
            .custody
            .transit_decrypt_each(&grant, items, |opened| {
                let aad = SessionAad::transit(
                    Direction::ToClient,
                    self.tenant.as_str(),
                    self.env.as_str(),
                    i,
                );
                i += 1;
                results.push(opened.map_err(ApiError::from).and_then(|plaintext| {
                    let envelope = self
                        .session
                        .key
                        .seal(&aad, plaintext.expose_secret())
                        .map_err(|e| ApiError::Vault(e.into()))?;
                    Ok(v1::SealedPayload { envelope })
                }));
            })?;
        Ok(results)
    }
}

/// Reseals envelopes under the tenant's current key; nothing crosses the wire but
/// envelopes, so no session is needed.
pub(super) fn rewrap<'a>(
    shared: &Shared,
    call: &mut Call,
    tenant: &str,
    env: i32,
    items: impl Iterator<Item = &'a [u8]>,
) -> Result<Vec<Result<Vec<u8>, ApiError>>, ApiError> {
    let (tenant, env) = tenant_env(call, tenant, env)?;
    let grant = shared
        .policies
        .grant(&call.caller, RewrapOp(tenant, env))
        .map_err(ApiError::Denied)?;
    call.event.grant.clone_from(&grant.rule);
    shared.custody.admit_grant(&grant)?;
    Ok(items
        .map(|envelope| {
            let rewrapped = shared.custody.transit_rewrap(&grant, envelope)?;
            Ok(rewrapped.into_bytes())
        })
        .collect())
}

pub(super) fn batch_size(len: usize) -> Result<(), ApiError> {
    if len > MAX_BATCH {
        return Err(ApiError::Invalid("a batch holds at most 1000 items"));
    }
    Ok(())
}

/// One result per item, in order: its output, or why it failed.
pub(super) fn batch_results<T>(
    items: Vec<Result<T, ApiError>>,
    output: fn(T) -> v1::batch_item_result::Result,
) -> Vec<v1::BatchItemResult> {
    items
        .into_iter()
        .map(|item| v1::BatchItemResult {
            result: Some(match item {
                Ok(value) => output(value),
                Err(e) => v1::batch_item_result::Result::Error(item_error(e)),
            }),
        })
        .collect()
}

fn item_error(e: ApiError) -> v1::ItemError {
    let status = Status::from(e);
    v1::ItemError {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}

pub(super) fn single<T>(mut items: Vec<Result<T, ApiError>>) -> Result<T, ApiError> {
    items
        .pop()
        .unwrap_or(Err(ApiError::Invalid("empty request")))
}
