//! What went wrong, what to do next, and the exit code that says which.

use std::fmt;

use vault_client::{ApiKeyRefusal, CertificateRefusal, Error as ClientError, FileError};

/// Exit codes; documented in `vaultctl --help` and README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Failure = 1,
    Connect = 3,
    Refused = 4,
    State = 5,
    NotFound = 6,
    Invalid = 7,
    CheckFailed = 8,
    Limited = 9,
}

/// A failed command: a message, a hint for what to do next, an exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same failure, told with `message` (which says more, e.g. names the file).
    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(Exit::Invalid, message)
    }

    /// The name of the exit code, for `--json` errors.
    pub(crate) fn kind(&self) -> &'static str {
        match self.exit {
            Exit::Failure => "failure",
            Exit::Connect => "connect",
            Exit::Refused => "refused",
            Exit::State => "state",
            Exit::NotFound => "not_found",
            Exit::Invalid => "invalid",
            Exit::CheckFailed => "check_failed",
            Exit::Limited => "limited",
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code and hint follow from the error's variant alone (never from its
/// message, which is vaultd's prose and may change).
impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        let message = error.to_string();
        match &error {
            // Checked before connecting: vaultd would refuse it.
            ClientError::BadFile {
                reason: FileError::Expired { .. },
                ..
            } => CliError::new(Exit::Refused, message).hint(RENEW),
            ClientError::BadFile {
                reason: FileError::NotYetValid { .. },
                ..
            } => CliError::new(Exit::Refused, message).hint(
                "check this machine's clock; if it is right, wait, or renew it (`vaultctl pki renew`)",
            ),
            ClientError::CertificateRefused { refusal, .. } => {
                CliError::new(Exit::Refused, message).hint(certificate_hint(*refusal))
            }
            ClientError::Read { .. } | ClientError::BadFile { .. } => CliError::new(Exit::Connect, message)
                .hint("check --cacert/--cert/--key (VAULTD_CACERT, VAULTD_CLIENT_CERT, VAULTD_CLIENT_KEY)"),
            ClientError::Config(_) | ClientError::Endpoint(_) => CliError::new(Exit::Connect, message)
                .hint("set VAULTD_ADDR (e.g. https://127.0.0.1:8200) and the certificate variables, or pass --socket for status, init, unseal and seal"),
            ClientError::Unavailable { sealed: true, .. } => CliError::new(Exit::State, message)
                .hint("custodians unseal it with `vaultctl unseal`; `vaultctl status` shows the progress"),
            ClientError::Tls { .. } => {
                CliError::new(Exit::Connect, message).hint(
                    "is VAULTD_CACERT the CA that signed vaultd's certificate, and does VAULTD_ADDR use a name in it?",
                )
            }
            ClientError::Unavailable { .. } => CliError::new(Exit::Connect, message)
                .hint("check VAULTD_ADDR and that vaultd is running (vaultd serve, or vaultd dev)"),
            ClientError::Unauthenticated { .. } => CliError::new(Exit::Refused, message)
                .hint("vaultd needs a certificate with exactly one spiffe:// URI SAN, from its client CA"),
            ClientError::PermissionDenied { .. } => CliError::new(Exit::Refused, message)
                .hint("ask an administrator for a role or grant that allows it; `vaultctl policy check` explains decisions"),
            ClientError::ApiKeyRefused { refusal, .. } => {
                CliError::new(Exit::Refused, message).hint(refusal_hint(*refusal))
            }
            ClientError::Limited { retry_after, .. } => CliError::new(Exit::Limited, message)
                .hint(format!("retry after {} s", retry_after.as_secs().max(1))),
            ClientError::NotFound { .. } => CliError::new(Exit::NotFound, message),
            ClientError::InvalidArgument { .. } => CliError::new(Exit::Invalid, message),
            ClientError::Uninitialised { .. } => {
                CliError::new(Exit::State, message).hint("initialise it with `vaultctl init`")
            }
            ClientError::FailedPrecondition { .. }
            | ClientError::AlreadyExists { .. }
            | ClientError::ResourceExhausted { .. } => CliError::new(Exit::State, message),
            // vaultd's other answers, answers this side could not use, and this side's
            // own failures: unexpected.
            ClientError::Unimplemented { .. }
            | ClientError::Other { .. }
            | ClientError::Protocol(_)
            | ClientError::SealedAnswer { .. }
            | ClientError::LocalCrypto { .. }
            | ClientError::RevokedOnIssue => CliError::new(Exit::Failure, message),
            // Variants added to vault-client later.
            _ => CliError::new(Exit::Failure, message),
        }
    }
}

/// How to renew a client certificate.
const RENEW: &str = "renew it: `vaultctl pki renew --ca-dir CA_DIR \"$VAULTD_CLIENT_CERT\" --out NEW_PREFIX` (with the CA's directory), then point VAULTD_CLIENT_CERT and VAULTD_CLIENT_KEY at the new files";

/// What to do about a client certificate vaultd refused.
fn certificate_hint(refusal: CertificateRefusal) -> &'static str {
    match refusal {
        CertificateRefusal::UnknownCa => {
            "use a certificate from the CA vaultd trusts (its tls.client_ca): `vaultctl pki issue-client --ca-dir CA_DIR --spiffe-id ID --out PREFIX`; if it is from that CA, vaultd's CRL is out of date: `vaultctl pki crl --ca-dir CA_DIR`, then reload vaultd (SIGHUP)"
        }
        CertificateRefusal::Revoked => {
            "ask for a new certificate from the CA vaultd trusts: `vaultctl pki issue-client --ca-dir CA_DIR --spiffe-id ID --out PREFIX` (a revoked certificate is never renewed)"
        }
        CertificateRefusal::Expired => RENEW,
        CertificateRefusal::Missing => {
            "set VAULTD_CLIENT_CERT and VAULTD_CLIENT_KEY (or --cert and --key) to your certificate and key"
        }
        CertificateRefusal::Unusable => {
            "use a client certificate (extended key usage clientAuth, one spiffe:// URI SAN) from `vaultctl pki issue-client`, not a server certificate"
        }
        _ => "vaultd's log says why it refused the certificate",
    }
}

/// What to do about a refused API key.
fn refusal_hint(refusal: ApiKeyRefusal) -> &'static str {
    match refusal {
        ApiKeyRefusal::Invalid => {
            "check that the whole key was copied (vk_live_… or vk_test_…, 51 characters)"
        }
        ApiKeyRefusal::Revoked => {
            "the key was revoked; its owner needs a new one (`vaultctl apikey issue`)"
        }
        ApiKeyRefusal::Expired => {
            "the key expired, or its grace window after a rotation ended; use its successor (`vaultctl apikey list`)"
        }
        ApiKeyRefusal::Environment => {
            "pass --env for the key's own environment; live and test keys never mix"
        }
        ApiKeyRefusal::Scope => {
            "the key does not grant --scope; issue one that does (`vaultctl apikey issue --scope …`)"
        }
        _ => "`vaultctl apikey list` shows where the tenant's keys stand",
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::new(Exit::Failure, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_variant_not_the_message() {
        let uninitialised = CliError::from(ClientError::Uninitialised {
            message: "whatever vaultd says".into(),
        });
        assert_eq!(uninitialised.exit, Exit::State);
        assert_eq!(
            uninitialised.hint.as_deref(),
            Some("initialise it with `vaultctl init`")
        );
        // The words alone decide nothing.
        let other = CliError::from(ClientError::FailedPrecondition {
            message: "vaultd is not initialised".into(),
        });
        assert_eq!(other.exit, Exit::State);
        assert_eq!(other.hint, None);
        let local = CliError::from(ClientError::LocalCrypto {
            doing: "seal the value to its session",
            source: vault_client::CryptoError::Random,
        });
        assert_eq!(local.exit, Exit::Failure);
        assert_eq!(
            CliError::from(ClientError::RevokedOnIssue).exit,
            Exit::Failure
        );
    }
}
