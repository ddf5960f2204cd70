//! Ceremonies: `StartCeremony`, `SubmitCeremonyShare`, `GetCeremony` and
//! `CancelCeremony`. Custodians submit their shares one at a time, each over their
//! own session; a rekey's new shares leave vaultd only encrypted to their custodians.

use tonic::{Request, Response, Status};
use vault_crypto::session::op;
use vault_proto::v1;

use super::AdminService;
use super::payload::open_shares;
use crate::api::{ApiError, Unrecorded};
use crate::authz::{RekeyOp, RotateRootOp, StatusOp, UnsealOp};
use crate::error::Error;
use crate::vault::{
    CeremonyKind, CeremonyOutcome, CeremonyView, Custodian, MAX_CUSTODIANS, SealedShareSet,
    UnsealNonce,
};

pub(super) async fn start(
    service: &AdminService,
    request: Request<v1::StartCeremonyRequest>,
) -> Result<Response<v1::Ceremony>, Status> {
    let mut call = service.shared.call("admin.start_ceremony", &request)?;
    let r = request.get_ref();
    let kind = v1::CeremonyKind::try_from(r.kind).unwrap_or(v1::CeremonyKind::Unspecified);
    call.event
        .detail
        .insert("ceremony".into(), kind_label(kind).into());
    // Checked before the intent record: a refused or malformed request changes nothing.
    let prepared = match kind {
        v1::CeremonyKind::Rekey => permit!(service, call, RekeyOp).and_then(|grant| {
            let threshold = u8::try_from(r.threshold)
                .map_err(|_| ApiError::Invalid("threshold must be 1..=255"))?;
            Ok(Start::Rekey(
                grant,
                CeremonyKind::Rekey {
                    threshold,
                    custodians: custodians(r)?,
                },
            ))
        }),
        v1::CeremonyKind::VerifyRekey => permit!(service, call, RekeyOp)
            .map(|grant| Start::Rekey(grant, CeremonyKind::VerifyRekey)),
        v1::CeremonyKind::RotateRootKey => {
            permit!(service, call, RotateRootOp).map(Start::Rotation)
        }
        // Changing how the vault unseals is a change of its seal: the rekey permission.
        v1::CeremonyKind::EnableAutoUnseal => permit!(service, call, RekeyOp)
            .map(|grant| Start::Rekey(grant, CeremonyKind::EnableAutoUnseal)),
        v1::CeremonyKind::DisableAutoUnseal => permit!(service, call, RekeyOp)
            .map(|grant| Start::Rekey(grant, CeremonyKind::DisableAutoUnseal)),
        v1::CeremonyKind::Unspecified => Err(ApiError::Invalid(
            "kind must be rekey, verify-rekey, rotate-root-key, enable-auto-unseal or \
             disable-auto-unseal",
        )),
    };
    service
        .shared
        .apply(Unrecorded::Refuse, call, prepared, |shared, start, _| {
            let view = match start {
                Start::Rekey(grant, kind) => shared.custody.start_rekey_ceremony(&grant, kind)?,
                Start::Rotation(grant) => shared.custody.start_rotation_ceremony(&grant)?,
            };
            Ok(ceremony(&view))
        })
        .await
}

/// What the starter was allowed.
enum Start {
    Rekey(crate::authz::Authorized<RekeyOp>, CeremonyKind),
    Rotation(crate::authz::Authorized<RotateRootOp>),
}

pub(super) async fn submit(
    service: &AdminService,
    request: Request<v1::SubmitCeremonyShareRequest>,
) -> Result<Response<v1::CeremonyProgress>, Status> {
    let mut call = service
        .shared
        .call("admin.submit_ceremony_share", &request)?;
    let r = request.get_ref();
    let prepared = permit!(service, call, UnsealOp).and_then(|grant| {
        let nonce = UnsealNonce::parse(&r.nonce).ok_or(ApiError::Invalid(
            "nonce must be the ceremony's 32 hex digits (`vaultctl ceremony status`)",
        ))?;
        let session = service.shared.session(&call, &r.session_id)?;
        let share = open_shares(&session, op::CEREMONY_SHARE, r.share.as_slice())?
            .pop()
            .ok_or(ApiError::Invalid("share is required"))?;
        call.event
            .detail
            .insert("share_index".into(), share.index().to_string());
        Ok((grant, share, nonce))
    });
    service
        .shared
        .apply(
            Unrecorded::Refuse,
            call,
            prepared,
            |shared, (grant, share, nonce), event| {
                let outcome = shared
                    .custody
                    .submit_ceremony_share(&grant, share, &nonce)?;
                let mut progress = v1::CeremonyProgress::default();
                let completed = match outcome {
                    CeremonyOutcome::InProgress(view) => {
                        progress.ceremony = Some(ceremony(&view));
                        return Ok(progress);
                    }
                    CeremonyOutcome::Rekeyed(set) => {
                        progress.pending = Some(share_set(set));
                        v1::CeremonyKind::Rekey
                    }
                    CeremonyOutcome::Verified(generation, threshold, count) => {
                        progress.verified = Some(v1::VerifyRekeyResponse {
                            generation,
                            threshold: threshold.into(),
                            share_count: count.into(),
                        });
                        v1::CeremonyKind::VerifyRekey
                    }
                    CeremonyOutcome::Rotated(version) => {
                        progress.root_version = version;
                        v1::CeremonyKind::RotateRootKey
                    }
                    CeremonyOutcome::AutoUnseal(enabled) => {
                        progress.auto_unseal = enabled;
                        if enabled {
                            v1::CeremonyKind::EnableAutoUnseal
                        } else {
                            v1::CeremonyKind::DisableAutoUnseal
                        }
                    }
                };
                event
                    .detail
                    .insert("completed".into(), kind_label(completed).into());
                progress.completed = completed as i32;
                Ok(progress)
            },
        )
        .await
}

pub(super) async fn get(
    service: &AdminService,
    request: Request<v1::GetCeremonyRequest>,
) -> Result<Response<v1::CeremonyProgress>, Status> {
    let mut call = service.shared.call("admin.get_ceremony", &request)?;
    let result = permit!(service, call, StatusOp).and_then(|grant| {
        let (running, pending) = service.shared.custody.ceremony(&grant)?;
        Ok(v1::CeremonyProgress {
            ceremony: running.as_ref().map(ceremony),
            pending: pending.map(share_set),
            ..Default::default()
        })
    });
    service.shared.finish(call, result).await
}

pub(super) async fn cancel(
    service: &AdminService,
    request: Request<v1::CancelCeremonyRequest>,
) -> Result<Response<v1::CancelCeremonyResponse>, Status> {
    let mut call = service.shared.call("admin.cancel_ceremony", &request)?;
    let prepared = permit!(service, call, UnsealOp);
    service
        .shared
        .apply(
            Unrecorded::Refuse,
            call,
            prepared,
            |shared, grant, event| {
                let cancelled = shared
                    .custody
                    .cancel_ceremony(&grant)
                    .ok_or(ApiError::Vault(Error::NoCeremony))?;
                event
                    .detail
                    .insert("ceremony".into(), cancelled.kind.label().into());
                Ok(v1::CancelCeremonyResponse {
                    cancelled: Some(ceremony(&cancelled)),
                })
            },
        )
        .await
}

/// The rekey's custodians, checked (names, keys, count; duplicates by the vault).
fn custodians(r: &v1::StartCeremonyRequest) -> Result<Vec<Custodian>, ApiError> {
    if r.custodians.len() > MAX_CUSTODIANS {
        return Err(ApiError::Invalid("a rekey names at most 255 custodians"));
    }
    r.custodians
        .iter()
        .map(|c| Custodian::parse(&c.name, &c.recipient).map_err(|e| Error::Custodians(e).into()))
        .collect()
}

fn kind_label(kind: v1::CeremonyKind) -> &'static str {
    match kind {
        v1::CeremonyKind::Rekey => "rekey",
        v1::CeremonyKind::VerifyRekey => "verify-rekey",
        v1::CeremonyKind::RotateRootKey => "rotate-root-key",
        v1::CeremonyKind::EnableAutoUnseal => "enable-auto-unseal",
        v1::CeremonyKind::DisableAutoUnseal => "disable-auto-unseal",
        v1::CeremonyKind::Unspecified => "unspecified",
    }
}

fn ceremony(view: &CeremonyView) -> v1::Ceremony {
    let mut message = v1::Ceremony {
        nonce: view.nonce.to_string(),
        started_by: view.started_by.clone(),
        submitted: view.submitted.into(),
        threshold: view.needed.into(),
        expires_unix: view.expires_unix,
        generation: view.generation,
        ..Default::default()
    };
    message.kind = match &view.kind {
        CeremonyKind::Rekey {
            threshold,
            custodians,
        } => {
            message.new_threshold = (*threshold).into();
            message.custodians = custodians
                .iter()
                .map(|c| v1::CustodianKey {
                    name: c.name().to_owned(),
                    recipient: c.recipient(),
                })
                .collect();
            v1::CeremonyKind::Rekey
        }
        CeremonyKind::VerifyRekey => v1::CeremonyKind::VerifyRekey,
        CeremonyKind::RotateRootKey => v1::CeremonyKind::RotateRootKey,
        CeremonyKind::EnableAutoUnseal => v1::CeremonyKind::EnableAutoUnseal,
        CeremonyKind::DisableAutoUnseal => v1::CeremonyKind::DisableAutoUnseal,
    } as i32;
    message
}

fn share_set(set: SealedShareSet) -> v1::PendingShareSet {
    v1::PendingShareSet {
        generation: set.generation,
        threshold: set.threshold.into(),
        shares: set
            .shares
            .into_iter()
            .map(|s| v1::CustodianShare {
                name: s.name,
                recipient: s.recipient,
                sealed: s.sealed,
            })
            .collect(),
    }
}
