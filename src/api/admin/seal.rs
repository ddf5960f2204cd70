//! The seal lifecycle: `Init`, `Unseal`, `Seal`, `Rekey`, `VerifyRekey`,
//! `RotateRootKey`, the handlers that carry shares, and `JoinCluster`, the one that
//! carries root keys.

use tonic::{Request, Response, Status};
use vault_crypto::session::op;
use vault_proto::v1;

use super::AdminService;
use super::payload::{open_shares, seal_shares, share_params};
use crate::api::{ApiError, Unrecorded};
use crate::authz::{JoinOp, RekeyOp, RotateRootOp, SealOp, UnsealOp};
use crate::vault::{UnsealNonce, UnsealOutcome};

pub(super) async fn init(
    service: &AdminService,
    request: Request<v1::InitRequest>,
) -> Result<Response<v1::InitResponse>, Status> {
    let mut call = service.shared.call("admin.init", &request)?;
    let r = request.get_ref();
    let prepared = permit!(service, call, UnsealOp).and_then(|grant| {
        let session = service.shared.session(&call, &r.session_id)?;
        let params = share_params(r.threshold, r.share_count)?;
        Ok((grant, session, params))
    });
    service
        .shared
        .apply(
            Unrecorded::Answer,
            call,
            prepared,
            |shared, (grant, session, (threshold, count)), _| {
                let shares = shared.custody.init(&grant, threshold, count)?;
                let shares = seal_shares(&session, op::INIT, &shares)?;
                Ok(v1::InitResponse { shares })
            },
        )
        .await
}

pub(super) async fn unseal(
    service: &AdminService,
    request: Request<v1::UnsealRequest>,
) -> Result<Response<v1::UnsealResponse>, Status> {
    let mut call = service.shared.call("admin.unseal", &request)?;
    let r = request.get_ref();
    // Everything is checked and the share opened before the intent record; the
    // vault changes (progress counted, unsealed, or reset) only after it.
    let prepared = permit!(service, call, UnsealOp).and_then(|grant| {
        if r.reset {
            return Ok((grant, None));
        }
        let session = service.shared.session(&call, &r.session_id)?;
        let share = open_shares(&session, op::UNSEAL, r.share.as_slice())?
            .pop()
            .ok_or(ApiError::Invalid("share is required"))?;
        let nonce = match r.nonce.as_str() {
            "" => None,
            text => Some(UnsealNonce::parse(text).ok_or(ApiError::Invalid(
                "nonce must be the 32 hex digits from the first share's answer",
            ))?),
        };
        call.event
            .detail
            .insert("share_index".into(), share.index().to_string());
        Ok((grant, Some((share, nonce))))
    });
    service
        .shared
        .apply(
            Unrecorded::Refuse,
            call,
            prepared,
            |shared, (grant, submitted), _| match submitted {
                None => {
                    shared.custody.reset_unseal(&grant)?;
                    Ok(v1::UnsealResponse {
                        state: v1::SealState::Sealed as i32,
                        ..Default::default()
                    })
                }
                Some((share, nonce)) => Ok(
                    match shared.custody.unseal(&grant, share, nonce.as_ref())? {
                        UnsealOutcome::InProgress {
                            nonce,
                            submitted,
                            threshold,
                        } => v1::UnsealResponse {
                            state: v1::SealState::Sealed as i32,
                            submitted: u32::from(submitted),
                            threshold: u32::from(threshold),
                            nonce: nonce.to_string(),
                        },
                        UnsealOutcome::Unsealed => v1::UnsealResponse {
                            state: v1::SealState::Unsealed as i32,
                            ..Default::default()
                        },
                    },
                ),
            },
        )
        .await
}

pub(super) async fn seal(
    service: &AdminService,
    request: Request<v1::SealRequest>,
) -> Result<Response<v1::SealResponse>, Status> {
    let mut call = service.shared.call("admin.seal", &request)?;
    let result = match permit!(service, call, SealOp) {
        Ok(grant) => {
            // Sealing is the safe direction, so it goes ahead even when the audit log
            // cannot be written (an attacker filling the disk must not keep keys in
            // memory); the failure is reported, not the seal refused.
            let recorded = service.shared.record_intent(&call).await.is_ok();
            if recorded {
                // Sign what was written while the audit keys still exist.
                let _ = service.shared.audit.checkpoint().await;
            } else {
                tracing::error!("sealing although the audit log cannot be written");
            }
            let sealed = service.shared.custody.seal(&grant);
            call.event
                .detail
                .insert("leases_revoked".into(), sealed.leases_revoked.to_string());
            call.event
                .detail
                .insert("breakglass_ended".into(), sealed.grants_ended.to_string());
            let cluster = request.get_ref().cluster;
            match sealed.vault {
                // This node sealed, or already was: the other nodes are told through
                // the change log, a store write.
                Ok(()) | Err(crate::Error::Sealed) if cluster => {
                    call.event.detail.insert("cluster".into(), "true".into());
                    service
                        .shared
                        .blocking(&mut call, move |shared, _| {
                            Ok(shared.custody.seal_cluster(&grant)?)
                        })
                        .await
                        .map(|()| v1::SealResponse {})
                }
                Ok(()) => Ok(v1::SealResponse {}),
                Err(e) => Err(ApiError::from(e)),
            }
        }
        Err(e) => Err(e),
    };
    service.shared.finish_committed(call, result).await
}

pub(super) async fn rekey(
    service: &AdminService,
    request: Request<v1::RekeyRequest>,
) -> Result<Response<v1::RekeyResponse>, Status> {
    let mut call = service.shared.call("admin.rekey", &request)?;
    let r = request.get_ref();
    let prepared = permit!(service, call, RekeyOp).and_then(|grant| {
        let session = service.shared.session(&call, &r.session_id)?;
        let params = share_params(r.threshold, r.share_count)?;
        let current = open_shares(&session, op::REKEY, &r.current_shares)?;
        Ok((grant, session, params, current))
    });
    service
        .shared
        .apply(
            Unrecorded::Answer,
            call,
            prepared,
            |shared, (grant, session, (threshold, count), current), _| {
                let shares = shared.custody.rekey(&grant, current, threshold, count)?;
                let shares = seal_shares(&session, op::REKEY_NEW, &shares)?;
                Ok(v1::RekeyResponse { shares })
            },
        )
        .await
}

pub(super) async fn verify_rekey(
    service: &AdminService,
    request: Request<v1::VerifyRekeyRequest>,
) -> Result<Response<v1::VerifyRekeyResponse>, Status> {
    let mut call = service.shared.call("admin.verify_rekey", &request)?;
    let r = request.get_ref();
    let prepared = permit!(service, call, RekeyOp).and_then(|grant| {
        let session = service.shared.session(&call, &r.session_id)?;
        Ok((
            grant,
            open_shares(&session, op::VERIFY_REKEY, &r.new_shares)?,
        ))
    });
    service
        .shared
        .apply(
            Unrecorded::Refuse,
            call,
            prepared,
            |shared, (grant, new), event| {
                let (generation, threshold, count) = shared.custody.verify_rekey(&grant, new)?;
                event
                    .detail
                    .insert("generation".into(), generation.to_string());
                Ok(v1::VerifyRekeyResponse {
                    generation,
                    threshold: threshold.into(),
                    share_count: count.into(),
                })
            },
        )
        .await
}

pub(super) async fn rotate_root_key(
    service: &AdminService,
    request: Request<v1::RotateRootKeyRequest>,
) -> Result<Response<v1::RotateRootKeyResponse>, Status> {
    let mut call = service.shared.call("admin.rotate_root_key", &request)?;
    let r = request.get_ref();
    let prepared = permit!(service, call, RotateRootOp).and_then(|grant| {
        let session = service.shared.session(&call, &r.session_id)?;
        Ok((
            grant,
            open_shares(&session, op::ROTATE_ROOT_KEY, &r.shares)?,
        ))
    });
    service
        .shared
        .apply(
            Unrecorded::Refuse,
            call,
            prepared,
            |shared, (grant, shares), _| {
                let root_version = shared.custody.rotate_root_key(&grant, shares)?;
                Ok(v1::RotateRootKeyResponse { root_version })
            },
        )
        .await
}

pub(super) async fn join_cluster(
    service: &AdminService,
    request: Request<v1::JoinClusterRequest>,
) -> Result<Response<v1::JoinClusterResponse>, Status> {
    let mut call = service.shared.call("admin.join_cluster", &request)?;
    let r = request.get_ref();
    let prepared = permit!(service, call, JoinOp).and_then(|grant| {
        let session = service.shared.session(&call, &r.session_id)?;
        Ok((grant, session))
    });
    // Root keys leave only with their intent and outcome both recorded.
    service
        .shared
        .apply(
            Unrecorded::Refuse,
            call,
            prepared,
            |shared, (grant, session), event| {
                let sealed = shared.custody.join_cluster(&grant, &session)?;
                let versions: Vec<String> =
                    sealed.roots.iter().map(|(v, _)| v.to_string()).collect();
                event
                    .detail
                    .insert("root_versions".into(), versions.join(","));
                Ok(v1::JoinClusterResponse {
                    roots: sealed
                        .roots
                        .into_iter()
                        .map(|(version, envelope)| v1::SealedRootKey {
                            version,
                            key: Some(v1::SealedPayload { envelope }),
                        })
                        .collect(),
                    current_root: sealed.current,
                })
            },
        )
        .await
}
