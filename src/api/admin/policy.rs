//! `CheckPolicy`: how the loaded policies decide a request, rule by rule.

use vault_proto::v1;

use super::super::{ApiError, environment};
use crate::authz::{Authorized, Policies, PoliciesOp};

/// Explains the decision `req` asks about.
pub(super) fn check(
    policies: &Policies,
    grant: &Authorized<PoliciesOp>,
    req: &v1::CheckPolicyRequest,
) -> Result<v1::CheckPolicyResponse, ApiError> {
    // Permissions have no environment; an operation without one matches no grant.
    let env = match req.environment {
        0 => "",
        env => environment(env)?.as_str(),
    };
    let secret = (!req.secret.is_empty()).then_some(req.secret.as_str());
    let decision = policies
        .loaded(grant)
        .explain(&req.identity, &req.action, &req.tenant, env, secret)
        .ok_or(ApiError::Invalid(
            "action must name an operation or a permission",
        ))?;
    Ok(v1::CheckPolicyResponse {
        allowed: decision.allowed,
        decided_by: decision.decided_by.map(|r| r.id).unwrap_or_default(),
        trace: decision
            .trace
            .iter()
            .map(|t| v1::RuleTrace {
                kind: t.rule.kind.as_str().to_owned(),
                id: t.rule.id.clone(),
                location: t.rule.location(),
                outcome: t.outcome.to_string(),
            })
            .collect(),
    })
}
