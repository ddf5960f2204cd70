//! The client's one error type, and how the retry loop reads vaultd's answers.
//!
//! Every variant says which side failed: vaultd's answers (the gRPC code, with the
//! `vault-error` reason where the code alone does not say what to do), this client's
//! own failures (files, configuration, its half of a session), or an answer from vaultd
//! that this client could not use. Local failures are never dressed up as statuses.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tonic::Code;
use vault_crypto::CryptoError;
use vault_proto::identity::IdentityError;
use vault_proto::reason;

use crate::apikey::ApiKeyRefusal;

/// Why a call failed. Messages from vaultd say what went wrong and what to do; they
/// never contain secrets, and neither does anything here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the client was configured with could not be read.
    #[error("cannot read {what} from {}: {source}", path.display())]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate, key or CA file was read but cannot be used.
    #[error("{what} in {} cannot be used: {reason}", path.display())]
    BadFile {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        reason: FileError,
    },
    /// The builder was not given what a client needs.
    #[error("client configuration: {0}")]
    Config(&'static str),
    /// An endpoint is not `https://host:port` or `unix:/path`.
    #[error("bad endpoint {0:?}: use https://host:port or unix:/path/to/vaultd.sock")]
    Endpoint(String),
    /// vaultd could not be reached, or is sealed, on every endpoint, after retries.
    #[error("vaultd unavailable: {message}")]
    Unavailable {
        /// The last reason.
        message: String,
        /// Whether vaultd answered that it is sealed.
        sealed: bool,
    },
    /// The TLS handshake failed on this side: vaultd's certificate does not verify
    /// against the configured CA, or does not name the endpoint's host.
    #[error("the TLS handshake with vaultd failed: {source}")]
    Tls {
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// vaultd refused this client's certificate at the TLS handshake, with the alert
    /// that names the likely cause. (In TLS 1.3 the alert comes after this side
    /// considers the handshake done, and the HTTP/2 connection loses it; the client
    /// then asks once more with a handshake of its own that only reads, to learn it.)
    #[error("vaultd refused the client certificate: {refusal} (TLS alert {})", alert_name(*alert))]
    CertificateRefused {
        /// The likely cause.
        refusal: CertificateRefusal,
        /// The alert vaultd sent.
        alert: rustls::AlertDescription,
    },
    /// The caller's certificate was accepted but names no identity vaultd accepts.
    #[error("vaultd refused the client certificate: {message}")]
    Unauthenticated {
        /// vaultd's reason.
        message: String,
    },
    /// The policies do not allow this identity the request.
    #[error("{message}")]
    PermissionDenied {
        /// vaultd's reason.
        message: String,
    },
    /// The secret, version or lease does not exist (or is no longer available).
    #[error("{message}")]
    NotFound {
        /// vaultd's reason.
        message: String,
    },
    /// The request was malformed or named something invalid.
    #[error("{message}")]
    InvalidArgument {
        /// vaultd's reason.
        message: String,
    },
    /// vaultd is not initialised yet (`FAILED_PRECONDITION` with the `vault-error`
    /// reason [`reason::UNINITIALISED`]): an operator runs `vaultctl init`.
    #[error("{message}")]
    Uninitialised {
        /// vaultd's reason.
        message: String,
    },
    /// vaultd is not in a state to do this (already initialised, already unsealed, a
    /// key still in use, ...). An uninitialised vault is [`Error::Uninitialised`].
    #[error("{message}")]
    FailedPrecondition {
        /// vaultd's reason.
        message: String,
    },
    /// The thing to create already exists.
    #[error("{message}")]
    AlreadyExists {
        /// vaultd's reason.
        message: String,
    },
    /// A limit was reached (leases, sessions, message size).
    #[error("{message}")]
    ResourceExhausted {
        /// vaultd's reason.
        message: String,
    },
    /// vaultd does not serve this call.
    #[error("{message}")]
    Unimplemented {
        /// vaultd's reason.
        message: String,
    },
    /// Anything else vaultd answered; internal details stay in vaultd's log.
    #[error("vaultd: {message} ({code:?})")]
    Other {
        /// The gRPC code.
        code: Code,
        /// vaultd's message.
        message: String,
    },
    /// An answer from vaultd was malformed (a field missing or of the wrong size).
    #[error("vaultd's answer could not be used: {0}")]
    Protocol(&'static str),
    /// Something vaultd sealed to this client's session did not open, or opened to
    /// something unusable: it was altered on the way, or sealed for another session,
    /// operation or target.
    #[error("vaultd's answer could not be used: {what} did not open with the session key")]
    SealedAnswer {
        /// What was sealed, e.g. "the leased value".
        what: &'static str,
        /// Why (opaque by design for a payload that does not decrypt).
        #[source]
        source: CryptoError,
    },
    /// This client failed at its own half of a lease session (generating its key,
    /// holding the session key in locked memory, sealing a payload): nothing was sent
    /// for it, and vaultd is not at fault.
    #[error("this client could not {doing}: {source}")]
    LocalCrypto {
        /// What it was doing, e.g. "seal the value to its session".
        doing: &'static str,
        /// Why.
        #[source]
        source: CryptoError,
    },
    /// Every lease this client was issued for the secret was revoked before it could be
    /// used (a revocation notice for each arrived first): this client gave up.
    #[error("every lease was revoked as soon as it was issued; try again later")]
    RevokedOnIssue,
    /// An API key does not verify. vaultd's answer, or this client's own where it needs
    /// no lookup: a malformed key ([`ApiKeyRefusal::Invalid`], never sent), and the
    /// environment and scope of a cached verification. The message never holds the key.
    #[error("{message}")]
    ApiKeyRefused {
        /// Why.
        refusal: ApiKeyRefusal,
        /// What vaultd (or this client) said.
        message: String,
    },
    /// A rate limit or a daily quota refused the request (`RESOURCE_EXHAUSTED` with the
    /// reason [`reason::RATE_LIMITED`] or [`reason::QUOTA_EXCEEDED`]). Never retried by
    /// the client: the caller decides whether to wait `retry_after`.
    #[error("{message}")]
    Limited {
        /// Whose limit: `api_key`, `tenant` or `identity` (empty if vaultd did not say).
        scope: String,
        /// Which window: `burst` (10 s), `minute`, `day`, or `quota` for the daily quota
        /// (empty if vaultd did not say).
        window: String,
        /// How long until the request may pass (1 s if vaultd did not say).
        retry_after: Duration,
        /// vaultd's message.
        message: String,
    },
}

/// Why a certificate, key or CA file that was read cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The PEM text does not parse, or holds none of what was expected.
    #[error("{0}")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// The file holds no certificate.
    #[error("no certificate found")]
    NoCertificate,
    /// rustls cannot use it (a CA certificate that is no trust anchor, a certificate
    /// chain rustls refuses).
    #[error("{0}")]
    Rejected(#[source] rustls::Error),
    /// The key does not belong to the client certificate.
    #[error("does not match the certificate: {0}")]
    KeyMismatch(#[source] rustls::Error),
    /// The certificate does not parse as X.509.
    #[error("the certificate does not parse: {0}")]
    Unparsable(#[source] x509_parser::error::X509Error),
    /// The certificate has expired.
    #[error("it expired on {}", asn1_time(*not_after))]
    Expired {
        /// When.
        not_after: SystemTime,
    },
    /// The certificate is not valid yet.
    #[error("it is not valid before {}", asn1_time(*not_before))]
    NotYetValid {
        /// From when it is.
        not_before: SystemTime,
    },
    /// The certificate names no identity vaultd would accept (the rules are
    /// [`vault_proto::identity::identity_of`]'s).
    #[error("{0}")]
    Identity(#[source] IdentityError),
}

/// Why vaultd refused a client certificate, read from the TLS alert it sent. An alert
/// names a class of failure, not the exact one (vaultd's log and its
/// `vaultd_tls_handshakes_refused_total` metric do), so each variant is the likely cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateRefusal {
    /// `unknown_ca`: not issued by a CA vaultd trusts (`tls.client_ca`); or vaultd
    /// cannot tell whether it is revoked, because its CRL for that CA has passed its
    /// next update (or no CRL covers that CA).
    UnknownCa,
    /// `certificate_revoked`: a CRL vaultd holds lists it.
    Revoked,
    /// `certificate_expired`: expired, or not valid yet, by vaultd's clock.
    Expired,
    /// `certificate_required`: no certificate reached vaultd.
    Missing,
    /// `bad_certificate`, `unsupported_certificate`, `certificate_unknown` or
    /// `decrypt_error`: vaultd cannot use it (the wrong extended key usage, such as a
    /// server certificate; a signature that does not verify; a malformed certificate).
    Unusable,
    /// `access_denied`: vaultd's certificate check refused it for its own reasons.
    AccessDenied,
}

impl CertificateRefusal {
    /// The refusal a TLS alert from vaultd means; `None` for alerts that are not
    /// about this side's certificate.
    pub fn from_alert(alert: rustls::AlertDescription) -> Option<Self> {
        use rustls::AlertDescription as A;
        Some(match alert {
            A::UnknownCA => Self::UnknownCa,
            A::CertificateRevoked => Self::Revoked,
            A::CertificateExpired => Self::Expired,
            A::CertificateRequired => Self::Missing,
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateUnknown
            | A::DecryptError => Self::Unusable,
            A::AccessDenied => Self::AccessDenied,
            _ => return None,
        })
    }
}

impl std::fmt::Display for CertificateRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnknownCa => {
                "it is not from a CA vaultd trusts, or vaultd's CRL for its CA is out of date"
            }
            Self::Revoked => "it has been revoked",
            Self::Expired => "it has expired, or is not valid yet, by vaultd's clock",
            Self::Missing => "no client certificate reached vaultd",
            Self::Unusable => {
                "it is not usable as a client certificate: the wrong extended key usage (a server certificate?), a signature that does not verify, or a malformed certificate"
            }
            Self::AccessDenied => "vaultd's certificate check denied it",
        })
    }
}

/// An alert's name as TLS spells it, for the ones a refusal is read from.
fn alert_name(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::UnknownCA => "unknown_ca".into(),
        A::CertificateRevoked => "certificate_revoked".into(),
        A::CertificateExpired => "certificate_expired".into(),
        A::CertificateRequired => "certificate_required".into(),
        A::BadCertificate => "bad_certificate".into(),
        A::UnsupportedCertificate => "unsupported_certificate".into(),
        A::CertificateUnknown => "certificate_unknown".into(),
        A::DecryptError => "decrypt_error".into(),
        A::AccessDenied => "access_denied".into(),
        other => format!("{other:?}"),
    }
}

/// What a failed TLS stream's I/O error says about the handshake: vaultd's refusal of
/// this side's certificate (an alert), or, during the handshake, this side's own
/// refusal of vaultd's ([`Error::Tls`]). `None` for anything else.
pub(crate) fn handshake_failure(error: &std::io::Error, during_handshake: bool) -> Option<Error> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::AlertReceived(alert) => {
            CertificateRefusal::from_alert(*alert).map(|refusal| Error::CertificateRefused {
                refusal,
                alert: *alert,
            })
        }
        other if during_handshake => Some(Error::Tls {
            source: other.clone(),
        }),
        _ => None,
    }
}

/// A certificate time as certificates print it.
fn asn1_time(at: SystemTime) -> String {
    let seconds = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    x509_parser::time::ASN1Time::from_timestamp(seconds)
        .map_or_else(|_| format!("Unix time {seconds}"), |t| t.to_string())
}

impl Error {
    /// The gRPC code of an error vaultd answered with; `None` for this client's own
    /// failures and for answers it could not use. An API-key refusal this client made
    /// itself has the code vaultd would have answered with.
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            Error::ApiKeyRefused { refusal, .. } => refusal.code(),
            Error::Limited { .. } => Code::ResourceExhausted,
            Error::Unavailable { .. } => Code::Unavailable,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::NotFound { .. } => Code::NotFound,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::Uninitialised { .. } | Error::FailedPrecondition { .. } => {
                Code::FailedPrecondition
            }
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::ResourceExhausted { .. } => Code::ResourceExhausted,
            Error::Unimplemented { .. } => Code::Unimplemented,
            Error::Other { code, .. } => *code,
            _ => return None,
        })
    }

    /// Whether vaultd said it is sealed.
    pub fn is_sealed(&self) -> bool {
        matches!(self, Error::Unavailable { sealed: true, .. })
    }

    /// Whether vaultd said it is not initialised yet.
    pub fn is_uninitialised(&self) -> bool {
        matches!(self, Error::Uninitialised { .. })
    }
}

/// How one attempt of a call failed: vaultd's answer (which the retry loop reads), or
/// something on this side that retrying won't fix.
pub(crate) enum Failure {
    Status(tonic::Status),
    Local(Error),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Failure::Status(status)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Local(error)
    }
}

/// What the retry loop should do with a failed call.
pub(crate) enum Disposition {
    /// Give up: the answer is final.
    Final(Error),
    /// The session is unknown to the daemon: open a new one and retry.
    NewSession(Error),
    /// The node is sealed: try another node, without waiting.
    Sealed(Error),
    /// The node is unreachable or overloaded, or the request lost a race (ABORTED):
    /// retry after a backoff, maybe elsewhere.
    Retry(Error),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        classify(status).into_error()
    }
}

impl Disposition {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Disposition::Final(e)
            | Disposition::NewSession(e)
            | Disposition::Sealed(e)
            | Disposition::Retry(e) => e,
        }
    }
}

/// The rustls error behind a failed connection, if that is what failed.
fn tls_failure(status: &tonic::Status) -> Option<rustls::Error> {
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.clone());
        }
        cause = error.source();
    }
    None
}

/// Whether `status` reports a failure of the connection under gRPC rather than an
/// answer from vaultd.
pub(crate) fn broke_below_grpc(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some_and(|cause| cause.is::<tonic::transport::Error>())
}

pub(crate) fn classify(status: tonic::Status) -> Disposition {
    // A handshake this side refused will be refused again: final, and named for
    // what it is. (vaultd's refusal of our certificate arrives only after the client
    // considers the TLS 1.3 handshake done, and reaches here as a closed connection:
    // the endpoints' retry loop asks again to learn why, see `Endpoints::diagnose`.)
    if let Some(source) = tls_failure(&status) {
        return Disposition::Final(Error::Tls { source });
    }
    // The connection broke under the call (vaultd stopped, a reset) and no refusal
    // explains it: vaultd is unreachable, whatever code tonic gave the break.
    if broke_below_grpc(&status) && !matches!(status.code(), Code::Unavailable) {
        return Disposition::Retry(Error::Unavailable {
            message: status.message().to_owned(),
            sealed: false,
        });
    }
    let reason = status
        .metadata()
        .get(reason::KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let message = status.message().to_owned();
    match (status.code(), reason.as_deref()) {
        (Code::FailedPrecondition, Some(reason::UNKNOWN_SESSION)) => {
            Disposition::NewSession(Error::FailedPrecondition { message })
        }
        (Code::FailedPrecondition, Some(reason::UNINITIALISED)) => {
            Disposition::Final(Error::Uninitialised { message })
        }
        (Code::Unavailable, Some(reason::SEALED)) => Disposition::Sealed(Error::Unavailable {
            message,
            sealed: true,
        }),
        // Including reason::AUDIT: this node cannot write its audit log; another may.
        (Code::Unavailable, _) => Disposition::Retry(Error::Unavailable {
            message,
            sealed: false,
        }),
        (Code::Unauthenticated, Some(reason::API_KEY_INVALID)) => {
            refused(ApiKeyRefusal::Invalid, message)
        }
        (Code::Unauthenticated, Some(reason::API_KEY_REVOKED)) => {
            refused(ApiKeyRefusal::Revoked, message)
        }
        (Code::Unauthenticated, Some(reason::API_KEY_EXPIRED)) => {
            refused(ApiKeyRefusal::Expired, message)
        }
        (Code::PermissionDenied, Some(reason::API_KEY_ENVIRONMENT)) => {
            refused(ApiKeyRefusal::Environment, message)
        }
        (Code::PermissionDenied, Some(reason::API_KEY_SCOPE)) => {
            refused(ApiKeyRefusal::Scope, message)
        }
        (Code::ResourceExhausted, Some(reason::RATE_LIMITED | reason::QUOTA_EXCEEDED)) => {
            Disposition::Final(limited(status.metadata(), message))
        }
        (Code::Aborted, _) => Disposition::Retry(Error::Other {
            code: Code::Aborted,
            message,
        }),
        (Code::Unauthenticated, _) => Disposition::Final(Error::Unauthenticated { message }),
        (Code::PermissionDenied, _) => Disposition::Final(Error::PermissionDenied { message }),
        (Code::NotFound, _) => Disposition::Final(Error::NotFound { message }),
        (Code::InvalidArgument | Code::OutOfRange, _) => {
            Disposition::Final(Error::InvalidArgument { message })
        }
        (Code::FailedPrecondition, _) => Disposition::Final(Error::FailedPrecondition { message }),
        (Code::AlreadyExists, _) => Disposition::Final(Error::AlreadyExists { message }),
        (Code::ResourceExhausted, _) => Disposition::Final(Error::ResourceExhausted { message }),
        (Code::Unimplemented, _) => Disposition::Final(Error::Unimplemented { message }),
        (code, _) => Disposition::Final(Error::Other { code, message }),
    }
}

fn refused(refusal: ApiKeyRefusal, message: String) -> Disposition {
    Disposition::Final(Error::ApiKeyRefused { refusal, message })
}

/// A limit's refusal, read from the metadata vaultd sends with it.
fn limited(metadata: &tonic::metadata::MetadataMap, message: String) -> Error {
    let text = |key| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = text(reason::RETRY_AFTER)
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs);
    Error::Limited {
        scope: text(reason::LIMIT_SCOPE).unwrap_or_default(),
        window: text(reason::LIMIT_WINDOW).unwrap_or_default(),
        retry_after,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_reason(code: Code, reason: &'static str) -> tonic::Status {
        with_message_and_reason(code, "m", reason)
    }

    fn with_message_and_reason(code: Code, message: &str, reason: &'static str) -> tonic::Status {
        let mut status = tonic::Status::new(code, message);
        status.metadata_mut().insert(
            reason::KEY,
            tonic::metadata::MetadataValue::from_static(reason),
        );
        status
    }

    #[test]
    fn permission_denied_is_never_retried_and_unavailable_is() {
        assert!(matches!(
            classify(tonic::Status::permission_denied("no")),
            Disposition::Final(Error::PermissionDenied { .. })
        ));
        assert!(matches!(
            classify(tonic::Status::unavailable("down")),
            Disposition::Retry(_)
        ));
        assert!(matches!(
            classify(with_reason(Code::Unavailable, reason::SEALED)),
            Disposition::Sealed(_)
        ));
        assert!(matches!(
            classify(with_reason(
                Code::FailedPrecondition,
                reason::UNKNOWN_SESSION
            )),
            Disposition::NewSession(_)
        ));
        assert!(Error::from(with_reason(Code::Unavailable, reason::SEALED)).is_sealed());
    }

    #[test]
    fn an_uninitialised_vault_is_named_by_its_reason_not_its_message() {
        let error = Error::from(with_message_and_reason(
            Code::FailedPrecondition,
            "anything at all",
            reason::UNINITIALISED,
        ));
        assert!(error.is_uninitialised(), "{error:?}");
        assert_eq!(error.code(), Some(Code::FailedPrecondition));
        let other = Error::from(tonic::Status::failed_precondition(
            "vaultd is not initialised; run `vaultctl init`",
        ));
        assert!(!other.is_uninitialised(), "no reason, no guess: {other:?}");
    }

    #[test]
    fn local_failures_carry_no_status_code() {
        let local = Error::LocalCrypto {
            doing: "seal the value to its session",
            source: CryptoError::Random,
        };
        assert_eq!(local.code(), None);
        assert!(local.to_string().starts_with("this client could not"));
        assert!(std::error::Error::source(&local).is_some());
        assert_eq!(Error::RevokedOnIssue.code(), None);
    }

    #[test]
    fn api_key_refusals_are_typed_by_their_reason() {
        use ApiKeyRefusal as R;
        let (unauthenticated, denied) = (Code::Unauthenticated, Code::PermissionDenied);
        for (code, why, expected) in [
            (unauthenticated, reason::API_KEY_INVALID, R::Invalid),
            (unauthenticated, reason::API_KEY_REVOKED, R::Revoked),
            (unauthenticated, reason::API_KEY_EXPIRED, R::Expired),
            (denied, reason::API_KEY_ENVIRONMENT, R::Environment),
            (denied, reason::API_KEY_SCOPE, R::Scope),
        ] {
            let status = || with_message_and_reason(code, "said", why);
            assert!(matches!(classify(status()), Disposition::Final(_)), "{why}");
            let error = Error::from(status());
            assert!(
                matches!(&error, Error::ApiKeyRefused { refusal, message }
                    if *refusal == expected && message == "said"),
                "{why}: {error:?}"
            );
            assert_eq!(error.code(), Some(code), "{why}");
        }
        // Without a reason the code keeps its meaning: the certificate, or the
        // identity's permission, not the key. Nor is a reason under another code.
        for (status, denied) in [
            (tonic::Status::unauthenticated("no"), false),
            (tonic::Status::permission_denied("no"), true),
            (
                with_reason(Code::PermissionDenied, reason::API_KEY_REVOKED),
                true,
            ),
        ] {
            let error = Error::from(status);
            assert!(
                matches!(&error, Error::Unauthenticated { .. } if !denied)
                    || matches!(&error, Error::PermissionDenied { .. } if denied),
                "{error:?}"
            );
        }
    }

    #[test]
    fn vaultds_certificate_alerts_name_the_likely_cause() {
        use rustls::AlertDescription as A;
        let refused = |alert| {
            let io = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(alert),
            );
            handshake_failure(&io, false)
        };
        for (alert, expected, name) in [
            (A::UnknownCA, CertificateRefusal::UnknownCa, "unknown_ca"),
            (
                A::CertificateRevoked,
                CertificateRefusal::Revoked,
                "certificate_revoked",
            ),
            (
                A::CertificateExpired,
                CertificateRefusal::Expired,
                "certificate_expired",
            ),
            (
                A::CertificateRequired,
                CertificateRefusal::Missing,
                "certificate_required",
            ),
            (
                A::BadCertificate,
                CertificateRefusal::Unusable,
                "bad_certificate",
            ),
            (
                A::UnsupportedCertificate,
                CertificateRefusal::Unusable,
                "unsupported_certificate",
            ),
            (
                A::AccessDenied,
                CertificateRefusal::AccessDenied,
                "access_denied",
            ),
        ] {
            let error = refused(alert).unwrap();
            assert!(
                matches!(&error, Error::CertificateRefused { refusal, .. } if *refusal == expected),
                "{alert:?}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.starts_with("vaultd refused the client certificate: ")
                    && message.ends_with(&format!("(TLS alert {name})")),
                "{message}"
            );
            assert_eq!(error.code(), None, "not a gRPC answer");
        }
        assert!(
            refused(A::CertificateRevoked)
                .unwrap()
                .to_string()
                .contains("revoked")
        );
        // Alerts about something else, and errors that are not TLS, are not refusals.
        assert!(refused(A::CloseNotify).is_none());
        assert!(refused(A::ProtocolVersion).is_none());
        let plain = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream closed");
        assert!(handshake_failure(&plain, true).is_none());
        // This side's own refusal of vaultd's certificate, during the handshake.
        let untrusted = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(matches!(
            handshake_failure(&untrusted, true),
            Some(Error::Tls { .. })
        ));
        assert!(handshake_failure(&untrusted, false).is_none());
    }

    #[test]
    fn limits_carry_their_scope_window_and_wait() {
        let limited = |why, metadata: &[(&'static str, &'static str)]| {
            let mut status = with_message_and_reason(Code::ResourceExhausted, "slow down", why);
            for (key, value) in metadata {
                let value = tonic::metadata::MetadataValue::from_static(value);
                status.metadata_mut().insert(*key, value);
            }
            status
        };
        let (after, scope, window) = (
            reason::RETRY_AFTER,
            reason::LIMIT_SCOPE,
            reason::LIMIT_WINDOW,
        );
        let rate = [(after, "7"), (scope, "identity"), (window, "burst")];
        let quota = [(after, "3600"), (scope, "api_key"), (window, "quota")];
        for (status, expected) in [
            (
                limited(reason::RATE_LIMITED, &rate),
                ("identity", "burst", 7),
            ),
            (
                limited(reason::QUOTA_EXCEEDED, &quota),
                ("api_key", "quota", 3600),
            ),
            // Metadata missing or unreadable: still typed, with a wait of a second.
            (
                limited(reason::RATE_LIMITED, &[(after, "soon")]),
                ("", "", 1),
            ),
        ] {
            assert!(
                matches!(classify(status.clone()), Disposition::Final(_)),
                "never retried"
            );
            let error = Error::from(status);
            let Error::Limited {
                scope,
                window,
                retry_after,
                message,
            } = &error
            else {
                panic!("{error:?}");
            };
            assert_eq!(
                (scope.as_str(), window.as_str(), retry_after.as_secs()),
                expected
            );
            assert_eq!(message, "slow down");
            assert_eq!(error.code(), Some(Code::ResourceExhausted));
        }
        // RESOURCE_EXHAUSTED without a limit's reason stays what it was.
        assert!(matches!(
            Error::from(tonic::Status::resource_exhausted("too many leases")),
            Error::ResourceExhausted { .. }
        ));
    }
}
