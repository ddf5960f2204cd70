//! The client's one error type.

use std::path::PathBuf;

use tonic::Code;

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
        reason: String,
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
    #[error("the TLS handshake with vaultd failed: {message}")]
    Tls {
        /// rustls's reason.
        message: String,
    },
    /// The caller's certificate was refused or names no identity.
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
    /// vaultd is not in a state to do this (uninitialised, already initialised, ...).
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
    /// A sealed payload from vaultd did not open, or an answer was malformed.
    #[error("vaultd's answer could not be used: {0}")]
    Protocol(&'static str),
}

/// The metadata key vaultd uses for a machine-readable reason.
const REASON_KEY: &str = "vault-error";

impl Error {
    /// The gRPC code of an error vaultd answered with, if it was one.
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            Error::Unavailable { .. } => Code::Unavailable,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::NotFound { .. } => Code::NotFound,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
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

pub(crate) fn classify(status: tonic::Status) -> Disposition {
    // A handshake this side refused will be refused again: final, and named for
    // what it is. (vaultd's refusal of our certificate arrives only after the client
    // considers the TLS 1.3 handshake done, as a closed connection.)
    if let Some(tls) = tls_failure(&status) {
        return Disposition::Final(Error::Tls {
            message: tls.to_string(),
        });
    }
    let reason = status
        .metadata()
        .get(REASON_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let message = status.message().to_owned();
    match (status.code(), reason.as_deref()) {
        (Code::FailedPrecondition, Some("unknown-session")) => {
            Disposition::NewSession(Error::FailedPrecondition { message })
        }
        (Code::Unavailable, Some("sealed")) => Disposition::Sealed(Error::Unavailable {
            message,
            sealed: true,
        }),
        (Code::Unavailable, _) => Disposition::Retry(Error::Unavailable {
            message,
            sealed: false,
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_reason(code: Code, reason: &'static str) -> tonic::Status {
        let mut status = tonic::Status::new(code, "m");
        status.metadata_mut().insert(
            REASON_KEY,
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
            classify(with_reason(Code::Unavailable, "sealed")),
            Disposition::Sealed(_)
        ));
        assert!(matches!(
            classify(with_reason(Code::FailedPrecondition, "unknown-session")),
            Disposition::NewSession(_)
        ));
        assert!(Error::from(with_reason(Code::Unavailable, "sealed")).is_sealed());
    }
}
