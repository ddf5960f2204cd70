//! The admin side of platform API keys: `IssueApiKey`, `RotateApiKey`, `RevokeApiKey`
//! and `ListApiKeys`; what an issue request asks for, validated; what is shown of a key
//! (metadata and a hint, never the key); the new key sealed to the caller's session,
//! the only time it leaves vaultd.

use std::time::Duration;

use tonic::{Request, Response, Status};
use vault_crypto::session::SessionAad;
use vault_proto::{apikey, v1};

use super::super::convert::environment_to_proto;
use super::super::verify::valid_scope;
use super::super::{ApiError, Call, Unrecorded, environment};
use super::{AdminService, tenant};
use crate::authz::{IssueApiKeys, ReadMetadata, RevokeApiKeys};
use crate::custody::KeyRequest;
use crate::names::TenantId;
use crate::records::{ApiKeyRecord, ApiKeyState, RateWindows};
use crate::sessions::Session;
use crate::vault::apikeys::IssuedKey;

/// Scopes one key may carry.
const MAX_SCOPES: usize = 32;
/// The longest label, in characters.
const MAX_LABEL: usize = 64;
/// The longest grace window a rotation may ask for.
const MAX_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// The validated tenant and request of `IssueApiKey`, named in the record.
pub(super) fn issue_request(
    call: &mut Call,
    r: &v1::IssueApiKeyRequest,
) -> Result<(TenantId, KeyRequest), ApiError> {
    let tenant = TenantId::new(&r.tenant)?;
    let env = environment(r.environment)?;
    call.event.tenant = Some(tenant.to_string());
    call.event.environment = Some(env.to_string());
    if r.scopes.len() > MAX_SCOPES {
        return Err(ApiError::Invalid("a key carries at most 32 scopes"));
    }
    if !r.scopes.iter().all(|s| valid_scope(s)) {
        return Err(ApiError::Invalid(
            "scopes are 1-64 characters a-z, 0-9, '.', '-', '_', ':' or '*'",
        ));
    }
    let mut scopes = r.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let tier = match r.tier.as_str() {
        "" => None,
        t if t.len() <= 32
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Some(t.to_owned())
        }
        _ => {
            return Err(ApiError::Invalid(
                "tier must name a tier of [apikeys.tiers]",
            ));
        }
    };
    if tier.is_some() && r.limits.is_some() {
        return Err(ApiError::Invalid(
            "give a tier or explicit limits, not both",
        ));
    }
    if r.label.chars().count() > MAX_LABEL || r.label.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "label must be at most 64 characters, without control characters",
        ));
    }
    let expires_unix = match r.expires_unix {
        None => None,
        Some(at) => Some(
            u64::try_from(at)
                .ok()
                .filter(|&at| at > 0)
                .ok_or(ApiError::Invalid("expires_unix must be a time after 1970"))?,
        ),
    };
    if let Some(tier) = &tier {
        call.event.detail.insert("tier".into(), tier.clone());
    }
    Ok((
        tenant,
        KeyRequest {
            environment: env,
            scopes,
            tier,
            limits: r.limits.map(|l| RateWindows {
                burst: l.burst,
                per_minute: l.per_minute,
                per_day: l.per_day,
            }),
            daily_quota: r.daily_quota,
            expires_unix,
            label: r.label.clone(),
        },
    ))
}

/// A key id from a request, named in the record once it has the form of one.
pub(super) fn key_id(call: &mut Call, text: &str) -> Result<String, ApiError> {
    if !apikey::is_key_id(text) {
        return Err(ApiError::Invalid(
            "key_id must be the 12-character id of an API key",
        ));
    }
    call.event.detail.insert("key_id".into(), text.to_owned());
    Ok(text.to_owned())
}

/// A rotation's grace window, if asked for.
pub(super) fn grace(seconds: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match seconds.map(Duration::from_secs) {
        Some(g) if g > MAX_GRACE => Err(ApiError::Invalid(
            "grace_seconds is at most 30 days (2592000)",
        )),
        g => Ok(g),
    }
}

/// What is shown of key `id`: metadata and a hint, never the key.
pub(super) fn info(
    id: &str,
    record: &ApiKeyRecord,
    used_today: u64,
    now_unix: u64,
) -> v1::ApiKeyInfo {
    let expired = record.expires_unix.is_some_and(|at| now_unix >= at);
    let (state, grace_until, successor) = match &record.state {
        ApiKeyState::Revoked { .. } => (v1::ApiKeyState::Revoked, 0, String::new()),
        ApiKeyState::Rotated {
            grace_until,
            successor,
        } => (
            if expired || now_unix >= *grace_until {
                v1::ApiKeyState::Expired
            } else {
                v1::ApiKeyState::Rotated
            },
            *grace_until,
            successor.clone(),
        ),
        ApiKeyState::Active if expired => (v1::ApiKeyState::Expired, 0, String::new()),
        ApiKeyState::Active => (v1::ApiKeyState::Active, 0, String::new()),
    };
    let seconds = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    v1::ApiKeyInfo {
        key_id: id.to_owned(),
        tenant: record.tenant.to_string(),
        environment: environment_to_proto(record.environment),
        scopes: record.scopes.clone(),
        hint: apikey::hint(record.environment.as_str(), id),
        tier: record.tier.clone(),
        limits: Some(v1::RateLimits {
            burst: record.limits.burst,
            per_minute: record.limits.per_minute,
            per_day: record.limits.per_day,
        }),
        daily_quota: record.daily_quota,
        used_today,
        state: state as i32,
        created_unix: seconds(record.created_unix),
        expires_unix: record.expires_unix.map_or(0, seconds),
        grace_until_unix: seconds(grace_until),
        successor,
        label: record.label.clone(),
    }
}

/// The answer to an issue or a rotation: the key sealed to `session`, bound to its
/// tenant, environment and id.
pub(super) fn issued(
    session: &Session,
    key: &IssuedKey,
    now_unix: u64,
) -> Result<v1::IssueApiKeyResponse, ApiError> {
    let record = &key.record;
    let aad =
        SessionAad::issued_api_key(record.tenant.as_str(), record.environment.as_str(), &key.id);
    let envelope = session
        .key
        .seal(&aad, key.key.expose_secret())
        .map_err(|e| ApiError::Vault(e.into()))?;
    Ok(v1::IssueApiKeyResponse {
        info: Some(info(&key.id, record, 0, now_unix)),
        api_key: Some(v1::SealedPayload { envelope }),
    })
}

pub(super) async fn issue(
    service: &AdminService,
    request: Request<v1::IssueApiKeyRequest>,
) -> Result<Response<v1::IssueApiKeyResponse>, Status> {
    let mut call = service.shared.call("admin.issue_api_key", &request)?;
    let r = request.get_ref();
    let prepared = issue_request(&mut call, r).and_then(|(tenant, wanted)| {
        let grant = permit!(service, call, IssueApiKeys(Some(tenant)))?;
        Ok((grant, wanted, service.shared.session(&call, &r.session_id)?))
    });
    // The key exists once: given even if its outcome record cannot be written.
    service
        .shared
        .apply(
            Unrecorded::Answer,
            call,
            prepared,
            |shared, (grant, wanted, session), event| {
                let key = shared.custody.issue_api_key(&grant, wanted)?;
                event.detail.insert("key_id".into(), key.id.clone());
                issued(&session, &key, shared.custody.now_unix())
            },
        )
        .await
}

pub(super) async fn rotate(
    service: &AdminService,
    request: Request<v1::RotateApiKeyRequest>,
) -> Result<Response<v1::IssueApiKeyResponse>, Status> {
    let mut call = service.shared.call("admin.rotate_api_key", &request)?;
    let r = request.get_ref();
    let prepared = key_id(&mut call, &r.key_id).and_then(|id| {
        let grace = grace(r.grace_seconds)?;
        let any = permit!(service, call, IssueApiKeys(None))?;
        let record = service.shared.custody.find_api_key(&any, &id)?;
        call.event.tenant = Some(record.tenant.to_string());
        let grant = permit!(service, call, IssueApiKeys(Some(record.tenant)))?;
        Ok((
            grant,
            id,
            grace,
            service.shared.session(&call, &r.session_id)?,
        ))
    });
    service
        .shared
        .apply(
            Unrecorded::Answer,
            call,
            prepared,
            |shared, (grant, id, grace, session), event| {
                let (key, _) = shared.custody.rotate_api_key(&grant, &id, grace)?;
                event.detail.insert("successor".into(), key.id.clone());
                issued(&session, &key, shared.custody.now_unix())
            },
        )
        .await
}

pub(super) async fn revoke(
    service: &AdminService,
    request: Request<v1::RevokeApiKeyRequest>,
) -> Result<Response<v1::ApiKeyInfo>, Status> {
    let mut call = service.shared.call("admin.revoke_api_key", &request)?;
    let result = key_id(&mut call, &request.get_ref().key_id).and_then(|id| {
        let any = permit!(service, call, RevokeApiKeys(None))?;
        let record = service.shared.custody.find_api_key(&any, &id)?;
        call.event.tenant = Some(record.tenant.to_string());
        let grant = permit!(service, call, RevokeApiKeys(Some(record.tenant)))?;
        // Revoking is the safe direction, like sealing: it takes effect without an
        // intent record, so a failing audit log cannot keep a key alive.
        let record = service.shared.custody.revoke_api_key(&grant, &id)?;
        Ok(info(&id, &record, 0, service.shared.custody.now_unix()))
    });
    service.shared.finish_committed(call, result).await
}

pub(super) async fn list(
    service: &AdminService,
    request: Request<v1::ListApiKeysRequest>,
) -> Result<Response<v1::ListApiKeysResponse>, Status> {
    let mut call = service.shared.call("admin.list_api_keys", &request)?;
    let r = request.into_inner();
    let result = match tenant(&mut call, &r.tenant).and_then(|tenant| {
        let env = match r.environment {
            0 => None,
            e => Some(environment(e)?),
        };
        Ok((permit!(service, call, ReadMetadata(tenant))?, env))
    }) {
        Ok((grant, env)) => {
            service
                .shared
                .blocking(&mut call, move |shared, _| {
                    let now = shared.custody.now_unix();
                    let keys = shared.custody.list_api_keys(&grant, env)?;
                    Ok(v1::ListApiKeysResponse {
                        keys: keys
                            .iter()
                            .map(|(id, record, used)| info(id, record, *used, now))
                            .collect(),
                    })
                })
                .await
        }
        Err(e) => Err(e),
    };
    service.shared.finish(call, result).await
}
