//! `VerifyApiKey`, the hot path of every customer request: the key opened from the
//! caller's session, its format and checksum checked without a lookup, then looked up
//! by id for a caller some grant lets verify keys, then the caller's grant for the
//! key's tenant and environment, the key's MAC, state and scope, and its limits.

use vault_crypto::session::SessionAad;
use vault_proto::{apikey, v1};

use super::convert::environment_to_proto;
use super::status::KeyAnswer;
use super::{ApiError, Call, Shared, environment, sealed};
use crate::anomalies::Watched;
use crate::authz::VerifyApiKeyOp;
use crate::error::Error;

/// The longest scope, in bytes.
const MAX_SCOPE: usize = 64;

/// Whether `scope` is a scope name: 1-64 characters of `a-z 0-9 . - _ : *` (`*` is
/// only a character here; vaultd matches scopes exactly, a client may treat it as a
/// wildcard among the scopes it is given).
pub(crate) fn valid_scope(scope: &str) -> bool {
    (1..=MAX_SCOPE).contains(&scope.len())
        && scope.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'-' | b'_' | b':' | b'*')
        })
}

pub(super) fn verify(
    shared: &Shared,
    call: &mut Call,
    request: &v1::VerifyApiKeyRequest,
) -> Result<v1::VerifyApiKeyResponse, ApiError> {
    let session = shared.session(call, &request.session_id)?;
    let env = environment(request.environment)?;
    call.event.environment = Some(env.to_string());
    let scope = match request.scope.as_str() {
        "" => None,
        s if valid_scope(s) => Some(s),
        _ => {
            return Err(ApiError::Invalid(
                "scope must be 1-64 characters a-z, 0-9, '.', '-', '_', ':' or '*'",
            ));
        }
    };
    let key = session
        .key
        .open(
            &SessionAad::api_key_to_verify(env.as_str()),
            sealed(request.api_key.as_ref(), "api_key is required")?,
        )
        .map_err(|_| ApiError::Sealed("api_key"))?;
    let text = std::str::from_utf8(key.expose_secret())
        .map_err(|_| ApiError::ApiKey(KeyAnswer::Invalid))?;
    // Typos and random strings end here, without a lookup.
    let parsed = apikey::parse(text).map_err(|_| ApiError::ApiKey(KeyAnswer::Invalid))?;
    call.event
        .detail
        .insert("key_id".into(), parsed.id.to_owned());
    if parsed.environment != environment_to_proto_enum(env) {
        return Err(ApiError::ApiKey(KeyAnswer::Environment));
    }
    // Only a caller that may verify keys learns whether this id exists.
    let verifier = shared
        .policies
        .verifier(&call.caller)
        .map_err(ApiError::Denied)?;
    let record = match shared.custody.find_api_key(&verifier, parsed.id) {
        Ok(record) => record,
        Err(Error::NotFound) => return Err(ApiError::ApiKey(KeyAnswer::Invalid)),
        Err(e) => return Err(e.into()),
    };
    call.event.tenant = Some(record.tenant.to_string());
    let grant = shared
        .policies
        .grant(&call.caller, VerifyApiKeyOp(record.tenant.clone(), env))
        .map_err(ApiError::Denied)?;
    call.event.grant.clone_from(&grant.rule);
    shared.watch(&grant, Watched::ApiKeyVerify, &record.tenant, 1)?;
    let verified = shared.custody.verify_api_key(
        &grant,
        parsed.id,
        &record,
        key.expose_secret(),
        scope,
        request.cost,
    )?;
    Ok(v1::VerifyApiKeyResponse {
        key_id: parsed.id.to_owned(),
        tenant: record.tenant.to_string(),
        environment: environment_to_proto(record.environment),
        scopes: record.scopes.clone(),
        quota_remaining: verified.quota_remaining,
        cache_until_unix_ms: verified.cache_until_unix_ms,
    })
}

fn environment_to_proto_enum(env: crate::names::Environment) -> v1::Environment {
    match env {
        crate::names::Environment::Live => v1::Environment::Live,
        crate::names::Environment::Test => v1::Environment::Test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_short_lower_case_words() {
        for good in ["usage:read", "billing.write", "a", "x-y_z", "proxy:*"] {
            assert!(valid_scope(good), "{good}");
        }
        for bad in ["", "Usage", "a b", "a/b", &"x".repeat(65), "é"] {
            assert!(!valid_scope(bad), "{bad}");
        }
    }
}
