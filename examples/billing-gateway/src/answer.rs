//! What the customer is told when a request is not forwarded: one JSON error shape,
//! and the one place each failure (a key vaultd refused, a limit, vaultd down, a
//! lease refused, the usage ledger) becomes an HTTP status. Fails closed: a failure
//! not named here is a 502, never a forwarded request. No answer holds a key, a body
//! or vaultd's own message (which may name things the customer should not learn).

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::json;
use vault_client::{ApiKeyRefusal, Error as VaultError};

use crate::usage::Refusal;

/// A response to the customer.
pub(crate) type Answer = Response<Full<Bytes>>;

/// A JSON error answer. Never contains a key or a body.
pub(crate) fn error(status: StatusCode, message: &str) -> Answer {
    let body = json!({ "error": { "status": status.as_u16(), "message": message } });
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error answer with `Retry-After`: whole seconds, rounded up, at least 1, so a
/// client that waits that long is not refused again for the same reason.
fn retry_later(status: StatusCode, message: &str, after: Duration) -> Answer {
    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    let mut response = error(status, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// The answer when vaultd did not verify the request's API key.
pub(crate) fn key_refused(e: &VaultError) -> Answer {
    match e {
        VaultError::ApiKeyRefused { refusal, .. } => match refusal {
            ApiKeyRefusal::Revoked => error(
                StatusCode::UNAUTHORIZED,
                "this API key was revoked; use another",
            ),
            ApiKeyRefusal::Expired => error(
                StatusCode::UNAUTHORIZED,
                "this API key has expired; use its successor or another key",
            ),
            ApiKeyRefusal::Environment => error(
                StatusCode::FORBIDDEN,
                "this API key is not valid in this environment",
            ),
            ApiKeyRefusal::Scope => error(
                StatusCode::FORBIDDEN,
                "this API key's scopes do not include this provider",
            ),
            // Invalid, and any refusal this gateway does not know: not authenticated.
            _ => error(StatusCode::UNAUTHORIZED, "the API key is not valid"),
        },
        other => vault_failure(other),
    }
}

/// A limit vaultd applied. The key's and its tenant's limits are the customer's: 429.
/// The gateway's own identity being held to its rate is the platform's capacity, not
/// anything the customer did: 503.
fn limited(scope: &str, window: &str, retry_after: Duration) -> Answer {
    let message = match (scope, window) {
        ("identity", _) => {
            return retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway is at its request limit; retry later",
                retry_after,
            );
        }
        (_, "quota") => "this API key's daily quota is spent; it renews at 00:00 UTC",
        ("tenant", "burst") => "too many requests for this account in 10 seconds",
        ("tenant", "minute") => "too many requests for this account in a minute",
        ("tenant", "day") => "too many requests for this account today",
        (_, "burst") => "too many requests with this API key in 10 seconds",
        (_, "minute") => "too many requests with this API key in a minute",
        (_, "day") => "too many requests with this API key today",
        _ => "too many requests",
    };
    retry_later(StatusCode::TOO_MANY_REQUESTS, message, retry_after)
}

/// vaultd did not answer the call: sealed, unreachable, holding back a limit, or
/// not allowing this gateway what it needs. Nothing goes upstream either way.
fn vault_failure(e: &VaultError) -> Answer {
    match e {
        VaultError::Unavailable { .. } | VaultError::Uninitialised { .. } => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the key vault is unavailable; retry later",
        ),
        VaultError::Limited {
            scope,
            window,
            retry_after,
            ..
        } => limited(scope, window, *retry_after),
        _ => error(StatusCode::BAD_GATEWAY, "the key vault refused the request"),
    }
}

/// The answer for a lease that failed: fail closed, never forward without a key.
pub(crate) fn lease_failure(e: &VaultError, provider: &str, env: &str) -> Answer {
    match e {
        VaultError::NotFound { .. } => error(
            StatusCode::NOT_FOUND,
            &format!("no {provider} key is configured for this tenant in {env}"),
        ),
        other => vault_failure(other),
    }
}

/// The answer for a request the usage ledger refused.
pub(crate) fn ledger_refused(refusal: &Refusal) -> Answer {
    match refusal {
        Refusal::Duplicate => error(
            StatusCode::CONFLICT,
            "this Idempotency-Key was already used for a request; it was forwarded once",
        ),
        Refusal::AtCapacity => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway cannot take more Idempotency-Keys at the moment; retry later",
        ),
        Refusal::LedgerDown => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "usage cannot be recorded; retry later",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(refusal: ApiKeyRefusal) -> VaultError {
        VaultError::ApiKeyRefused {
            refusal,
            message: "vaultd's words, vk_live_secret".into(),
        }
    }

    fn limit(scope: &str, window: &str, retry_after: Duration) -> VaultError {
        VaultError::Limited {
            scope: scope.into(),
            window: window.into(),
            retry_after,
            message: "vaultd's words".into(),
        }
    }

    fn retry_after(answer: &Answer) -> Option<&str> {
        answer
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap())
    }

    #[test]
    fn refusals_are_401_for_the_key_and_403_for_what_it_may_do() {
        for (refusal, status) in [
            (ApiKeyRefusal::Invalid, StatusCode::UNAUTHORIZED),
            (ApiKeyRefusal::Revoked, StatusCode::UNAUTHORIZED),
            (ApiKeyRefusal::Expired, StatusCode::UNAUTHORIZED),
            (ApiKeyRefusal::Environment, StatusCode::FORBIDDEN),
            (ApiKeyRefusal::Scope, StatusCode::FORBIDDEN),
        ] {
            let answer = key_refused(&refused(refusal));
            assert_eq!(answer.status(), status, "{refusal:?}");
            assert_eq!(retry_after(&answer), None);
        }
    }

    #[test]
    fn limits_are_429_with_retry_after_but_the_gateways_own_is_503() {
        let answer = key_refused(&limit("api_key", "burst", Duration::from_secs(7)));
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after(&answer), Some("7"));
        let answer = key_refused(&limit("api_key", "quota", Duration::from_secs(3600)));
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after(&answer), Some("3600"));
        // Rounded up, never 0: a client that waits that long passes.
        let answer = key_refused(&limit("tenant", "minute", Duration::from_millis(1500)));
        assert_eq!(retry_after(&answer), Some("2"));
        let answer = key_refused(&limit("", "", Duration::ZERO));
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after(&answer), Some("1"));
        let answer = key_refused(&limit("identity", "burst", Duration::from_secs(3)));
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after(&answer), Some("3"));
        // A lease held back by the gateway's own rate: the same 503.
        let answer = lease_failure(
            &limit("identity", "minute", Duration::from_secs(4)),
            "openai",
            "live",
        );
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after(&answer), Some("4"));
    }

    #[test]
    fn vaultd_down_is_503_and_anything_else_fails_closed() {
        for down in [
            VaultError::Unavailable {
                message: "sealed".into(),
                sealed: true,
            },
            VaultError::Unavailable {
                message: "connection refused".into(),
                sealed: false,
            },
            VaultError::Uninitialised {
                message: "run vaultctl init".into(),
            },
        ] {
            assert_eq!(key_refused(&down).status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                lease_failure(&down, "openai", "live").status(),
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
        let denied = VaultError::PermissionDenied {
            message: "no grant".into(),
        };
        assert_eq!(key_refused(&denied).status(), StatusCode::BAD_GATEWAY);
        let missing = VaultError::NotFound {
            message: "no such secret".into(),
        };
        assert_eq!(
            lease_failure(&missing, "openai", "test").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn answers_never_repeat_vaultds_message() {
        let answer = key_refused(&refused(ApiKeyRefusal::Invalid));
        let body = format!("{:?}", answer.body());
        assert!(!body.contains("vk_live_secret") && !body.contains("vaultd's words"));
    }
}
