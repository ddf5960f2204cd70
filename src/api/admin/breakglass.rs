//! `RequestBreakGlass`, `ApproveBreakGlass`, `RevokeBreakGlass`, `ListBreakGlass`:
//! the requests around break-glass grants. What a grant then allows is decided in
//! `authz`, and each request made under one names it in its audit record.

use std::time::Duration;

use tonic::{Request, Response, Status};
use vault_proto::v1;

use super::AdminService;
use crate::api::{ApiError, Call, Unrecorded};
use crate::authz::ApproveBreakGlassOp;
use crate::breakglass::{Ask, BreakGlassError, Revoker};
use crate::ids::BreakGlassId;
use crate::records::{BreakGlassGrant, BreakGlassState};

impl From<BreakGlassError> for ApiError {
    fn from(e: BreakGlassError) -> Self {
        match e {
            BreakGlassError::Vault(e) => e.into(),
            other => ApiError::BreakGlass(other),
        }
    }
}

/// The status a refused break-glass request gets.
pub(crate) fn status(e: &BreakGlassError) -> Status {
    let message = e.to_string();
    match e {
        BreakGlassError::Invalid(_) => Status::invalid_argument(message),
        BreakGlassError::NotFound => Status::not_found(message),
        BreakGlassError::SelfApproval => Status::permission_denied(message),
        BreakGlassError::Changed => Status::aborted(message),
        BreakGlassError::TooMany(_) => Status::resource_exhausted(message),
        BreakGlassError::NotPending(_)
        | BreakGlassError::Ended
        | BreakGlassError::AlreadyApproved
        | BreakGlassError::Tampered => Status::failed_precondition(message),
        // Converted to ApiError::Vault before it gets here.
        BreakGlassError::Vault(_) => Status::internal("internal error"),
    }
}

/// The grant's id from a request, named in its record.
fn grant_id(call: &mut Call, text: &str) -> Result<BreakGlassId, ApiError> {
    let id = BreakGlassId::parse(text).ok_or(ApiError::Invalid(
        "id must be 'bg-' followed by 32 lower-case hex digits",
    ))?;
    call.event
        .detail
        .insert("breakglass".into(), id.to_string());
    Ok(id)
}

/// Names the grant's scope and state in the record (never more than names).
fn describe(call_detail: &mut std::collections::BTreeMap<String, String>, g: &BreakGlassGrant) {
    call_detail.insert("breakglass".into(), g.id.clone());
    call_detail.insert("requester".into(), g.requester.clone());
    call_detail.insert("permissions".into(), g.permissions.join(","));
    call_detail.insert("tenants".into(), g.tenants.join(","));
    call_detail.insert(
        "approvals".into(),
        format!("{}/{}", g.approvals.len(), g.required),
    );
    call_detail.insert("state".into(), state_name(&g.state).into());
}

fn state_name(state: &BreakGlassState) -> &'static str {
    match state {
        BreakGlassState::Pending => "pending",
        BreakGlassState::Active { .. } => "active",
        BreakGlassState::Ended { .. } => "ended",
    }
}

/// A grant as the API shows it.
fn view(g: &BreakGlassGrant) -> v1::BreakGlassGrant {
    let mut out = v1::BreakGlassGrant {
        id: g.id.clone(),
        requester: g.requester.clone(),
        permissions: g.permissions.clone(),
        tenants: g.tenants.clone(),
        duration_seconds: g.duration_secs,
        reason: g.reason.clone(),
        requested_unix: g.requested_unix,
        approvals: g
            .approvals
            .iter()
            .map(|(identity, at)| v1::BreakGlassApproval {
                identity: identity.clone(),
                at_unix: *at,
            })
            .collect(),
        approvals_required: g.required,
        ..Default::default()
    };
    let state = match &g.state {
        BreakGlassState::Pending => v1::BreakGlassState::Pending,
        BreakGlassState::Active { since, until } => {
            out.active_since_unix = *since;
            out.expires_unix = *until;
            v1::BreakGlassState::Active
        }
        BreakGlassState::Ended { at, why, by } => {
            out.ended_unix = *at;
            out.end_reason = why.clone();
            out.ended_by = by.clone();
            v1::BreakGlassState::Ended
        }
    };
    out.set_state(state);
    out
}

pub(super) async fn request(
    service: &AdminService,
    request: Request<v1::RequestBreakGlassRequest>,
) -> Result<Response<v1::BreakGlassGrant>, Status> {
    let shared = &service.shared;
    let mut call = shared.call("admin.request_break_glass", &request)?;
    let r = request.into_inner();
    let ask = Ask {
        permissions: r.permissions,
        tenants: r.tenants,
        duration: Duration::from_secs(r.duration_seconds),
        reason: r.reason,
    };
    let prepared = shared
        .policies
        .breakglass_requester(&call.caller)
        .map_err(ApiError::Denied)
        .and_then(|(proof, _)| {
            let ask = shared.custody.breakglass().validate(ask)?;
            let detail = &mut call.event.detail;
            detail.insert("permissions".into(), ask.permissions.join(","));
            detail.insert("tenants".into(), ask.tenants.join(","));
            detail.insert("duration_s".into(), ask.duration.as_secs().to_string());
            detail.insert("reason".into(), ask.reason.clone());
            Ok((proof, ask))
        });
    shared
        .apply(
            Unrecorded::Refuse,
            call,
            prepared,
            |shared, (proof, ask), event| {
                let grant = shared.custody.breakglass().request(&proof, ask)?;
                describe(&mut event.detail, &grant);
                Ok(view(&grant))
            },
        )
        .await
}

pub(super) async fn approve(
    service: &AdminService,
    request: Request<v1::BreakGlassId>,
) -> Result<Response<v1::BreakGlassGrant>, Status> {
    let shared = &service.shared;
    let mut call = shared.call("admin.approve_break_glass", &request)?;
    let prepared = grant_id(&mut call, &request.get_ref().id)
        .and_then(|id| Ok((permit!(service, call, ApproveBreakGlassOp)?, id)));
    shared
        .apply(
            Unrecorded::Refuse,
            call,
            prepared,
            |shared, (proof, id), event| {
                let grant = shared.custody.breakglass().approve(&proof, id.as_str())?;
                describe(&mut event.detail, &grant);
                Ok(view(&grant))
            },
        )
        .await
}

pub(super) async fn revoke(
    service: &AdminService,
    request: Request<v1::BreakGlassId>,
) -> Result<Response<v1::BreakGlassGrant>, Status> {
    let shared = &service.shared;
    let mut call = shared.call("admin.revoke_break_glass", &request)?;
    let id = match grant_id(&mut call, &request.get_ref().id) {
        Ok(id) => id,
        Err(e) => return shared.finish(call, Err(e)).await,
    };
    let approver = shared.policies.permit(&call.caller, ApproveBreakGlassOp);
    let own = shared.policies.breakglass_requester(&call.caller);
    if let Ok(proof) = &approver {
        call.allowed_by(proof);
    }
    // Ending a grant is the safe direction, like sealing: it takes effect without an
    // intent record, so a failing audit log cannot keep a grant alive.
    let result = shared
        .blocking(&mut call, move |shared, call| {
            let by = match (&approver, &own) {
                (Ok(proof), _) => Revoker::Approver(proof),
                (Err(_), Ok((_, proof))) => Revoker::Requester(proof),
                (Err(denied), Err(_)) => return Err(ApiError::Denied(denied.clone())),
            };
            let grant = shared.custody.breakglass().revoke(by, id.as_str())?;
            describe(&mut call.event.detail, &grant);
            Ok(view(&grant))
        })
        .await;
    shared.finish_committed(call, result).await
}

pub(super) async fn list(
    service: &AdminService,
    request: Request<v1::ListBreakGlassRequest>,
) -> Result<Response<v1::ListBreakGlassResponse>, Status> {
    let shared = &service.shared;
    let mut call = shared.call("admin.list_break_glass", &request)?;
    let grants = match shared.policies.permit(&call.caller, ApproveBreakGlassOp) {
        Ok(proof) => {
            call.allowed_by(&proof);
            Ok(shared.custody.breakglass().list_all(&proof))
        }
        Err(denied) => match shared.policies.breakglass_requester(&call.caller) {
            Ok((_, own)) => Ok(shared.custody.breakglass().list_own(&own)),
            Err(_) => Err(ApiError::Denied(denied)),
        },
    };
    let result = grants.map(|grants| v1::ListBreakGlassResponse {
        grants: grants.iter().map(view).collect(),
    });
    shared.finish(call, result).await
}
