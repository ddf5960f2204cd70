//! What the admin service receives and answers: shares and secret values opened from
//! (and sealed to) the caller's session, and vault answers turned into messages.

use vault_crypto::session::{Direction, SessionAad};
use vault_crypto::shamir::Share;
use vault_crypto::{CryptoError, SecretValue};
use vault_proto::v1;

use crate::api::{ApiError, sealed, secret_ref};
use crate::names::SecretKind;
use crate::records::VersionState;
use crate::sessions::Session;
use crate::vault::{SecretMetadata, Status as VaultStatus, TenantKeys};

pub(super) fn open_shares(
    session: &Session,
    operation: &str,
    payloads: &[v1::SealedPayload],
) -> Result<Vec<Share>, ApiError> {
    let envelopes = payloads.iter().map(|p| p.envelope.as_slice());
    match session
        .key
        .open_shares(operation, Direction::ToDaemon, envelopes)
    {
        Ok(shares) => Ok(shares),
        // The caller's fault: a payload that does not open, or a share that is not one.
        Err(CryptoError::Decrypt | CryptoError::Envelope(_)) => Err(ApiError::Sealed("share")),
        Err(CryptoError::Shares(e)) => Err(ApiError::Vault(e.into())),
        // Ours: locked memory for the share, and the like.
        Err(e) => Err(ApiError::Vault(e.into())),
    }
}

pub(super) fn seal_shares(
    session: &Session,
    operation: &str,
    shares: &[Share],
) -> Result<Vec<v1::SealedPayload>, ApiError> {
    let sealed = session
        .key
        .seal_shares(operation, Direction::ToClient, shares)
        .map_err(|e| ApiError::Vault(e.into()))?;
    Ok(sealed
        .into_iter()
        .map(|envelope| v1::SealedPayload { envelope })
        .collect())
}

pub(super) fn share_params(threshold: u32, count: u32) -> Result<(usize, usize), ApiError> {
    if threshold == 0 || count == 0 || threshold > count || count > 255 {
        return Err(ApiError::Invalid(
            "need 1 <= threshold <= share_count <= 255",
        ));
    }
    Ok((threshold as usize, count as usize))
}

/// Opens a secret value sealed to the session for `operation` on `secret`.
pub(super) fn open_value(
    session: &Session,
    operation: &str,
    secret: &crate::names::SecretId,
    payload: Option<&v1::SealedPayload>,
) -> Result<SecretValue, ApiError> {
    let aad = SessionAad::secret_value(
        operation,
        secret.tenant.as_str(),
        secret.environment.as_str(),
        secret.name.as_str(),
    );
    session
        .key
        .open(&aad, sealed(payload, "value is required")?)
        .map_err(|_| ApiError::Sealed("value"))
}

pub(super) fn metadata(m: &SecretMetadata) -> v1::SecretMetadata {
    v1::SecretMetadata {
        secret: Some(secret_ref(&m.id)),
        kind: match m.kind {
            SecretKind::Byok => v1::SecretKind::Byok as i32,
            SecretKind::System => v1::SecretKind::System as i32,
        },
        current_version: m.current_version,
        versions: m
            .versions
            .iter()
            .map(|v| {
                let (state, grace) = match v.state {
                    VersionState::Current => (v1::VersionState::Current, 0),
                    VersionState::Grace { until_unix } => (v1::VersionState::Grace, until_unix),
                    VersionState::Disabled => (v1::VersionState::Disabled, 0),
                };
                v1::SecretVersion {
                    version: v.version,
                    state: state as i32,
                    grace_until_unix: grace,
                    created_unix: v.created_unix,
                    hint: v.hint.clone(),
                    fingerprint: v.fingerprint.clone(),
                }
            })
            .collect(),
        created_unix: m.created_unix,
    }
}

/// The node's alert counts and latest alerts, for `Status`.
pub(super) fn alerts_into(status: &mut v1::StatusResponse, alerts: &crate::alerts::Alerts) {
    status.alerts = alerts
        .raised_total()
        .into_iter()
        .map(|(kind, count)| v1::AlertCount { kind, count })
        .collect();
    status.recent_alerts = alerts
        .recent()
        .iter()
        .map(|a| v1::RecentAlert {
            kind: a.kind.clone(),
            severity: match a.severity {
                crate::alerts::Severity::Warning => "warning".into(),
                crate::alerts::Severity::Critical => "critical".into(),
            },
            at_unix_ms: a.at_unix_ms,
            identity: a.identity.clone().unwrap_or_default(),
            tenant: a.tenant.clone().unwrap_or_default(),
        })
        .collect();
}

pub(super) fn status_response(status: &VaultStatus) -> v1::StatusResponse {
    let mut out = v1::StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    match status {
        VaultStatus::Uninitialised => out.state = v1::SealState::Uninitialised as i32,
        VaultStatus::Sealed {
            threshold,
            shares,
            generation,
            progress,
        } => {
            out.state = v1::SealState::Sealed as i32;
            out.threshold = u32::from(*threshold);
            out.share_count = u32::from(*shares);
            out.generation = *generation;
            if let Some((n, nonce)) = progress {
                out.progress = u32::from(*n);
                out.unseal_nonce = nonce.to_string();
            }
        }
        VaultStatus::Unsealed {
            threshold,
            shares,
            generation,
            root_version,
        } => {
            out.state = v1::SealState::Unsealed as i32;
            out.threshold = u32::from(*threshold);
            out.share_count = u32::from(*shares);
            out.generation = *generation;
            out.root_version = *root_version;
        }
    }
    out
}

pub(super) fn tenant_keys(keys: &TenantKeys) -> v1::TenantKeys {
    v1::TenantKeys {
        tenant: keys.tenant.to_string(),
        current_version: keys.current,
        min_decryption_version: keys.min_decrypt,
        versions: keys
            .versions
            .iter()
            .map(|v| v1::TenantKeyVersion {
                version: v.version,
                created_unix: v.created_unix,
                encryptions: v.encryptions,
                secret_versions: v.secret_versions as u64,
            })
            .collect(),
    }
}
