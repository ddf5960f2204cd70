//! Lease administration: the selector of `RevokeLeases` and what `ListLeases` shows.

use vault_crypto::clock::unix_ms;
use vault_proto::v1;
use vault_proto::v1::revoke_leases_request::Selector as S;

use super::super::{ApiError, secret_id, secret_ref};
use crate::identity::Identity;
use crate::ids::LeaseId;
use crate::leases::{Lease, Selector};
use crate::names::TenantId;

/// A `RevokeLeases` selector, validated.
pub(super) fn selector(selector: Option<&S>) -> Result<Selector, ApiError> {
    match selector {
        Some(S::LeaseId(id)) => LeaseId::parse(id)
            .map(Selector::Id)
            .ok_or(ApiError::Invalid(LeaseId::FORM)),
        Some(S::Tenant(t)) => TenantId::new(t)
            .map(Selector::Tenant)
            .map_err(ApiError::from),
        Some(S::Secret(s)) => secret_id(Some(s)).map(Selector::Secret),
        Some(S::Identity(i)) => {
            Identity::parse_remote(i)
                .map(Selector::Identity)
                .ok_or(ApiError::Invalid(
                    "identity must be a SPIFFE ID (spiffe://trust-domain/path) or dns:<name>",
                ))
        }
        Some(S::All(true)) => Ok(Selector::All),
        Some(S::All(false)) | None => Err(ApiError::Invalid(
            "name exactly one selector (all must be true)",
        )),
    }
}

/// What `ListLeases` shows of a lease: never its value.
pub(super) fn info(l: &Lease) -> v1::LeaseInfo {
    v1::LeaseInfo {
        lease_id: l.id.to_string(),
        identity: l.identity.to_string(),
        secret: Some(secret_ref(&l.secret)),
        version: l.version,
        expires_unix_ms: unix_ms(l.expires),
    }
}
