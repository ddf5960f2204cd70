//! Between the wire and the domain: proto enums and references to validated names,
//! sealed payload fields to their envelopes.

use vault_proto::v1;

use super::ApiError;
use crate::names::{Environment, SecretId};

/// Proto environment → domain environment.
pub(crate) fn environment(value: i32) -> Result<Environment, ApiError> {
    match v1::Environment::try_from(value) {
        Ok(v1::Environment::Live) => Ok(Environment::Live),
        Ok(v1::Environment::Test) => Ok(Environment::Test),
        _ => Err(ApiError::Invalid(
            "environment must be ENVIRONMENT_LIVE or ENVIRONMENT_TEST",
        )),
    }
}

pub(crate) fn environment_to_proto(env: Environment) -> i32 {
    match env {
        Environment::Live => v1::Environment::Live as i32,
        Environment::Test => v1::Environment::Test as i32,
    }
}

/// Proto secret reference → validated secret id.
pub(crate) fn secret_id(secret: Option<&v1::SecretRef>) -> Result<SecretId, ApiError> {
    let secret = secret.ok_or(ApiError::Invalid("secret is required"))?;
    let environment = environment(secret.environment)?;
    Ok(SecretId {
        tenant: crate::names::TenantId::new(&secret.tenant)?,
        environment,
        name: crate::names::SecretName::new(&secret.name)?,
    })
}

pub(crate) fn secret_ref(id: &SecretId) -> v1::SecretRef {
    v1::SecretRef {
        tenant: id.tenant.to_string(),
        environment: environment_to_proto(id.environment),
        name: id.name.to_string(),
    }
}

/// The envelope bytes of a sealed payload field.
pub(crate) fn sealed<'a>(
    payload: Option<&'a v1::SealedPayload>,
    field: &'static str,
) -> Result<&'a [u8], ApiError> {
    payload
        .map(|p| p.envelope.as_slice())
        .ok_or(ApiError::Invalid(field))
}
