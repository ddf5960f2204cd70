//! The one place errors become gRPC statuses. Messages say what went wrong and what
//! to do; they never carry internals, values, or whether a refused target exists.

use tonic::Status;
use tonic::metadata::MetadataValue;
use vault_audit::AuditError;
use vault_crypto::CryptoError;
use vault_proto::reason;

use crate::authz::Denied;
use crate::error::Error;
use crate::identity::IdentityError;
use crate::leases::LeaseLimit;
use crate::names::InvalidName;
use crate::sessions::SessionError;
use crate::storage::StoreError;

/// Why a request failed.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The peer's certificate names no usable identity.
    Unauthenticated(IdentityError),
    /// The policy refused.
    Denied(Denied),
    /// A request field is missing or malformed.
    Invalid(&'static str),
    /// A name failed validation.
    Name(InvalidName),
    /// The session is unknown, expired or not the caller's, or could not be opened.
    Session(SessionError),
    /// A sealed payload did not open with the session key.
    Sealed(&'static str),
    /// A lease limit was reached.
    LeaseLimit(LeaseLimit),
    /// The lease is unknown, expired or not the caller's.
    UnknownLease,
    /// The caller holds as many of something as it may (the message says what).
    Exhausted(&'static str),
    /// The audit record could not be written.
    Audit(AuditError),
    /// The vault refused or failed.
    Vault(Error),
    /// A policy reload failed; the old set stays.
    Policy(vault_policy::PolicyError),
    /// The work panicked on the blocking pool (a bug; the cause is in the log).
    Panicked,
    /// The daemon is starting or stopping: what was asked needs it serving.
    NotServing,
    /// An API key did not verify.
    ApiKey(KeyAnswer),
    /// A break-glass request was refused (the message says why).
    BreakGlass(crate::breakglass::BreakGlassError),
    /// A rate limit or quota refused; counted for a summary record, not recorded alone.
    Limited {
        /// `api_key`, `tenant` or `identity`.
        scope: &'static str,
        /// `burst`, `minute`, `day` or `quota`.
        window: &'static str,
        /// When a request may pass again.
        retry_after: std::time::Duration,
    },
}

/// Why an API key did not verify, as the caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyAnswer {
    /// Malformed, unknown, or not the key its id names.
    Invalid,
    /// Revoked.
    Revoked,
    /// Expired, or past its grace window after a rotation.
    Expired,
    /// A key of the other environment.
    Environment,
    /// Without the scope asked for.
    Scope,
}

impl From<crate::custody::VerifyError> for ApiError {
    fn from(e: crate::custody::VerifyError) -> Self {
        use crate::custody::VerifyError as V;
        use crate::vault::apikeys::KeyRefusal as R;
        match e {
            V::Vault(e) => e.into(),
            V::Invalid => ApiError::ApiKey(KeyAnswer::Invalid),
            V::Refused(R::Revoked) => ApiError::ApiKey(KeyAnswer::Revoked),
            V::Refused(R::Expired) => ApiError::ApiKey(KeyAnswer::Expired),
            V::Refused(R::Environment) => ApiError::ApiKey(KeyAnswer::Environment),
            V::Refused(R::Scope) => ApiError::ApiKey(KeyAnswer::Scope),
            V::Rate(exceeded) => exceeded.into(),
            V::Quota(exceeded) => ApiError::Limited {
                scope: "api_key",
                window: "quota",
                retry_after: exceeded.retry_after,
            },
        }
    }
}

impl From<crate::limits::rate::Exceeded> for ApiError {
    fn from(e: crate::limits::rate::Exceeded) -> Self {
        ApiError::Limited {
            scope: e.scope.kind(),
            window: e.window,
            retry_after: e.retry_after,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidName(n) => ApiError::Name(n),
            other => ApiError::Vault(other),
        }
    }
}

impl From<crate::custody::LeaseError> for ApiError {
    fn from(e: crate::custody::LeaseError) -> Self {
        match e {
            crate::custody::LeaseError::Vault(e) => e.into(),
            crate::custody::LeaseError::Limit { limit, .. } => ApiError::LeaseLimit(limit),
        }
    }
}

impl From<InvalidName> for ApiError {
    fn from(e: InvalidName) -> Self {
        ApiError::Name(e)
    }
}

impl ApiError {
    /// Whether the caller is told only "internal error": the cause is for the log.
    pub(crate) fn is_internal(&self) -> bool {
        status(self).code() == tonic::Code::Internal
    }

    /// Whether the request was refused for what it asked or who asked (not because
    /// vaultd failed): such answers count against the caller's audit budget.
    pub(crate) fn is_refusal(&self) -> bool {
        !self.is_internal() && !matches!(self, ApiError::Audit(_))
    }

    /// The whole cause, for vaultd's log (never for the caller). Errors carry names,
    /// paths and reasons, never secret values.
    pub(crate) fn detail(&self) -> String {
        let mut text = match self {
            ApiError::Vault(e) => e.to_string(),
            ApiError::Session(SessionError::Crypto(e)) => format!("opening a lease session: {e}"),
            other => status(other).message().to_owned(),
        };
        if let ApiError::Vault(e) = self {
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
        }
        text
    }

    /// The short reason written to the audit log.
    pub(crate) fn audit_reason(&self) -> String {
        let status = status(self);
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// The metadata key that tells clients, in a machine-readable word, why a request
/// failed where the code alone does not (`vault_proto::reason`).
pub(crate) const REASON_KEY: &str = reason::KEY;

impl ApiError {
    fn reason(&self) -> Option<&'static str> {
        match self {
            ApiError::Session(SessionError::Unknown) => Some(reason::UNKNOWN_SESSION),
            ApiError::Vault(Error::Sealed | Error::RootMoved) => Some(reason::SEALED),
            ApiError::Vault(Error::OutOfStep { .. }) => Some(reason::OUT_OF_STEP),
            ApiError::Vault(Error::Uninitialised) => Some(reason::UNINITIALISED),
            ApiError::Audit(_) => Some(reason::AUDIT),
            ApiError::ApiKey(KeyAnswer::Invalid) => Some(reason::API_KEY_INVALID),
            ApiError::ApiKey(KeyAnswer::Revoked) => Some(reason::API_KEY_REVOKED),
            ApiError::ApiKey(KeyAnswer::Expired) => Some(reason::API_KEY_EXPIRED),
            ApiError::ApiKey(KeyAnswer::Environment) => Some(reason::API_KEY_ENVIRONMENT),
            ApiError::ApiKey(KeyAnswer::Scope) => Some(reason::API_KEY_SCOPE),
            ApiError::Limited {
                window: "quota", ..
            } => Some(reason::QUOTA_EXCEEDED),
            ApiError::Limited { .. } => Some(reason::RATE_LIMITED),
            _ => None,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let mut status = status(&e);
        let metadata = status.metadata_mut();
        if let Some(reason) = e.reason() {
            metadata.insert(REASON_KEY, MetadataValue::from_static(reason));
        }
        if let ApiError::Limited {
            scope,
            window,
            retry_after,
        } = e
        {
            // Whole seconds, rounded up: a client that waits this long passes.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            metadata.insert(reason::RETRY_AFTER, MetadataValue::from(seconds));
            metadata.insert(reason::LIMIT_SCOPE, MetadataValue::from_static(scope));
            metadata.insert(reason::LIMIT_WINDOW, MetadataValue::from_static(window));
        }
        status
    }
}

fn vault_status(e: &Error) -> Status {
    match e {
        Error::Uninitialised | Error::NoPendingRekey | Error::StaleRekey => {
            Status::failed_precondition(e.to_string())
        }
        Error::Sealed | Error::OutOfStep { .. } | Error::RootMoved => {
            Status::unavailable(e.to_string())
        }
        Error::NotClusterNode(_) => Status::permission_denied(e.to_string()),
        Error::JoinMismatch { .. } => Status::failed_precondition(e.to_string()),
        Error::AlreadyInitialised
        | Error::AlreadyUnsealed
        | Error::UnsealNonceMismatch
        | Error::CeremonyInProgress(_)
        | Error::NoCeremony
        | Error::CeremonyNonceMismatch => Status::failed_precondition(e.to_string()),
        Error::Custodians(_) => Status::invalid_argument(e.to_string()),
        Error::NoTokenConfigured | Error::AutoUnsealNotEnabled | Error::StaleTokenSeal { .. } => {
            Status::failed_precondition(e.to_string())
        }
        // The token's own failures name no secret (the PIN never enters them).
        Error::Token(_) => Status::unavailable(e.to_string()),
        Error::InvalidName(n) => Status::invalid_argument(n.to_string()),
        Error::NotFound => Status::not_found(e.to_string()),
        Error::AlreadyExists => Status::already_exists(e.to_string()),
        Error::VersionUnavailable(_) => Status::not_found(e.to_string()),
        Error::TransitEnvelope => Status::invalid_argument(e.to_string()),
        Error::StaleShare { .. } | Error::DuplicateShare(_) | Error::WrongShares => {
            Status::invalid_argument(e.to_string())
        }
        Error::Shares(inner) => Status::invalid_argument(inner.to_string()),
        Error::Crypto(CryptoError::KeyExhausted { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        Error::Crypto(CryptoError::Shares(inner)) => Status::invalid_argument(inner.to_string()),
        Error::CounterExhausted(_) => Status::failed_precondition(e.to_string()),
        Error::TenantErasing => Status::unavailable(e.to_string()),
        Error::NoTenantKey => Status::failed_precondition(e.to_string()),
        Error::GraceTooLong { .. } => Status::invalid_argument(e.to_string()),
        Error::RetireCurrent { .. } => Status::invalid_argument(e.to_string()),
        Error::KeysInUse { .. } => Status::failed_precondition(e.to_string()),
        Error::ApiKeyLimit(_) => Status::resource_exhausted(e.to_string()),
        Error::ApiKeyNotActive => Status::failed_precondition(e.to_string()),
        Error::UnknownTier(_) => Status::invalid_argument(e.to_string()),
        Error::Crypto(CryptoError::PoolExhausted { .. }) => {
            Status::resource_exhausted(e.to_string())
        }
        Error::Contention(_) => Status::aborted(e.to_string()),
        Error::Store(StoreError::Conflict { .. }) => Status::aborted("concurrent update; retry"),
        Error::Store(StoreError::Unreachable(_)) => Status::unavailable(
            "the vault's database cannot be reached; nothing was changed; retry, or use another node",
        ),
        Error::Store(StoreError::Unsupported(_)) => Status::failed_precondition(e.to_string()),
        Error::Store(StoreError::Timeout(_)) => Status::unavailable(
            "the vault's database did not answer in time; nothing was changed; retry, or use \
             another node",
        ),
        Error::Store(StoreError::Indeterminate(_) | StoreError::WriteTimedOut(_)) => {
            Status::unknown(
                "the vault's database connection was lost while committing: the change may or may \
             not have been made; read it back before trying again",
            )
        }
        // Integrity failures of stored data, I/O and the like: the operator reads the
        // daemon's log; the caller learns only that it was internal.
        _ => Status::internal("internal error; the operator can find details in vaultd's log"),
    }
}

fn status(e: &ApiError) -> Status {
    match e {
        ApiError::Unauthenticated(inner) => Status::unauthenticated(inner.to_string()),
        ApiError::Denied(d) => Status::permission_denied(format!(
            "permission denied: your identity is not allowed {:?} on this target",
            d.action
        )),
        ApiError::Invalid(what) => Status::invalid_argument(format!("invalid request: {what}")),
        ApiError::Name(n) => Status::invalid_argument(n.to_string()),
        ApiError::Session(SessionError::Unknown) => Status::failed_precondition(
            "unknown or expired session: open a new one with OpenSession",
        ),
        ApiError::Session(SessionError::BadPublicKey) => {
            Status::invalid_argument("client_public_key must be a 32-byte X25519 public key")
        }
        ApiError::Session(SessionError::Full) => {
            Status::resource_exhausted("too many open sessions; retry later")
        }
        ApiError::Session(SessionError::Crypto(_)) => Status::internal("cannot open a session"),
        ApiError::Sealed(field) => Status::invalid_argument(format!(
            "{field} does not open with the session key (wrong session, operation or target)"
        )),
        ApiError::LeaseLimit(LeaseLimit::Identity(n)) => Status::resource_exhausted(format!(
            "max_active_leases ({n}) reached for this identity; revoke or let leases expire"
        )),
        ApiError::LeaseLimit(LeaseLimit::Total(n)) => Status::resource_exhausted(format!(
            "the daemon holds its maximum of {n} leases; retry later"
        )),
        ApiError::LeaseLimit(LeaseLimit::Revoked) => Status::aborted(
            "the secret's leases were revoked while this one was being issued; lease again",
        ),
        ApiError::UnknownLease => Status::not_found("unknown or expired lease"),
        ApiError::Exhausted(what) => Status::resource_exhausted(*what),
        ApiError::BreakGlass(inner) => super::admin::breakglass_status(inner),
        ApiError::NotServing => {
            Status::unavailable("vaultd is starting or stopping; try again in a moment")
        }
        ApiError::Audit(inner) => Status::unavailable(format!(
            "the audit log cannot be written, so the request was refused: {inner}"
        )),
        ApiError::Vault(inner) => vault_status(inner),
        ApiError::Panicked => {
            Status::internal("internal error; the operator can find details in vaultd's log")
        }
        ApiError::Policy(inner) => Status::invalid_argument(format!(
            "policy reload refused, the previous policies stay in force: {inner}"
        )),
        ApiError::ApiKey(KeyAnswer::Invalid) => Status::unauthenticated("the API key is not valid"),
        ApiError::ApiKey(KeyAnswer::Revoked) => Status::unauthenticated("the API key was revoked"),
        ApiError::ApiKey(KeyAnswer::Expired) => Status::unauthenticated(
            "the API key has expired (or its grace window after a rotation ended)",
        ),
        ApiError::ApiKey(KeyAnswer::Environment) => Status::permission_denied(
            "the API key belongs to the other environment (live and test never mix)",
        ),
        ApiError::ApiKey(KeyAnswer::Scope) => {
            Status::permission_denied("the API key lacks the scope this request needs")
        }
        ApiError::Limited {
            scope,
            window: "quota",
            ..
        } => Status::resource_exhausted(format!(
            "the {} daily quota is spent; it resets at midnight UTC",
            scope.replace('_', " ")
        )),
        ApiError::Limited { scope, window, .. } => Status::resource_exhausted(format!(
            "the {} rate limit ({window} window) is reached; retry after the time in retry-after",
            scope.replace('_', " ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn permission_denied_does_not_name_the_target() {
        let s = Status::from(ApiError::Denied(Denied {
            action: "lease",
            rule: Some("gateway".into()),
        }));
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(!s.message().contains("gateway"));
    }

    #[test]
    fn reasons_travel_in_metadata() {
        let s = Status::from(ApiError::Vault(Error::Sealed));
        assert_eq!(s.metadata().get(REASON_KEY).unwrap(), "sealed");
        let s = Status::from(ApiError::Session(SessionError::Unknown));
        assert_eq!(s.metadata().get(REASON_KEY).unwrap(), "unknown-session");
        assert!(
            Status::from(ApiError::UnknownLease)
                .metadata()
                .get(REASON_KEY)
                .is_none()
        );
    }

    #[test]
    fn internal_errors_reveal_nothing() {
        let s = Status::from(ApiError::Vault(Error::Crypto(CryptoError::Decrypt)));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("decrypt"));
        assert_eq!(
            Status::from(ApiError::Vault(Error::Sealed)).code(),
            Code::Unavailable
        );
    }
}
