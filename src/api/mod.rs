//! The gRPC services: `vault.v1.Broker` ([`broker`]) and `vault.v1.Admin` ([`admin`]).
//!
//! Every handler follows one shape: identify the caller (from the connection, never
//! from the request), validate input, ask the policy for an [`Authorized`] proof,
//! act through [`Custody`], write the audit record, and only then answer. A request
//! whose audit record cannot be written within the deadline fails `UNAVAILABLE`;
//! operations that change state also write an intent record before acting, so a
//! dead audit sink stops them before anything happens.
//!
//! [`Authorized`]: crate::authz::Authorized
//! [`Custody`]: crate::custody::Custody

pub(crate) mod admin;
pub(crate) mod broker;
mod convert;
mod status;
mod transit;
mod verify;

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Status};
use vault_audit::{AuditLog, Decision, Event};

use crate::audit::RefusalBudget;
use crate::authz::{Caller, Peer, Policies};
use crate::custody::Custody;
use crate::metrics::Metrics;
use crate::names::SecretId;
use crate::sessions::Session;
pub(crate) use convert::{environment, sealed, secret_id, secret_ref};
pub(crate) use status::ApiError;
use status::KeyAnswer;

/// State shared by both services. The vault, sessions and leases are reached only
/// through [`Custody`], one [`Authorized`](crate::authz::Authorized) proof per
/// operation.
pub(crate) struct Shared {
    pub(crate) policies: Policies,
    pub(crate) custody: Custody,
    pub(crate) audit: AuditLog,
    pub(crate) refusals: RefusalBudget,
    pub(crate) metrics: Arc<Metrics>,
    /// Where security alerts go (besides the audit log, a counter and a log line).
    pub(crate) alerts: crate::alerts::Alerts,
    /// Rate baselines and failure bursts.
    pub(crate) anomalies: Arc<crate::anomalies::Anomalies>,
    /// What `Admin.Reload` runs: installed by the daemon when it serves.
    pub(crate) reloader: std::sync::OnceLock<std::sync::Weak<dyn Reload>>,
}

/// Reloads the daemon as SIGHUP does (the daemon implements it).
pub(crate) trait Reload: Send + Sync {
    /// Reloads; the report as the API answers it.
    fn reload(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = vault_proto::v1::ReloadResponse> + Send + '_>,
    >;
}

/// The largest decoded request: generous for batches, small enough to bound memory.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// One request in flight: caller, audit event under construction, start time.
#[derive(Clone)]
pub(crate) struct Call {
    pub(crate) caller: Caller,
    pub(crate) event: Event,
    rpc: &'static str,
    started: Instant,
}

impl Call {
    /// Names in the record what allowed the request: the rule, and the break-glass
    /// grant when it was one.
    pub(crate) fn allowed_by<O>(&mut self, grant: &crate::authz::Authorized<O>) {
        self.event.grant.clone_from(&grant.rule);
        if let Some(id) = &grant.breakglass {
            self.event.detail.insert("breakglass".into(), id.clone());
        }
    }

    pub(crate) fn secret(&mut self, id: &SecretId) {
        self.event.tenant = Some(id.tenant.to_string());
        self.event.environment = Some(id.environment.to_string());
        self.event.secret = Some(id.name.to_string());
    }
}

impl Shared {
    /// Identifies the caller of `request` for `rpc` (the audit operation name).
    pub(crate) fn call<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<Call, Status> {
        let caller = match request.extensions().get::<Peer>() {
            Some(Peer(Ok(caller))) => caller.clone(),
            Some(Peer(Err(e))) => {
                self.metrics
                    .observe(rpc, tonic::Code::Unauthenticated, Instant::now());
                return Err(ApiError::Unauthenticated(e.clone()).into());
            }
            None => return Err(Status::internal("connection has no verified peer")),
        };
        let mut request_id = [0u8; 8];
        // A request id is for correlation only; a failed RNG leaves it zero.
        let _ = vault_crypto::aead::public_random_bytes(&mut request_id);
        Ok(Call {
            event: Event {
                identity: caller.identity().to_string(),
                operation: rpc.to_owned(),
                request_id: vault_crypto::hex::encode(&request_id).to_string(),
                ..Event::default()
            },
            caller,
            rpc,
            started: Instant::now(),
        })
    }

    /// Counts `count` allowed requests for anomaly detection; refuses them when they
    /// reach the highest level under a grant that throttles.
    pub(crate) fn watch<O>(
        &self,
        grant: &crate::authz::Authorized<O>,
        operation: crate::anomalies::Watched,
        tenant: &crate::names::TenantId,
        count: u32,
    ) -> Result<(), ApiError> {
        match self.anomalies.observe(
            operation,
            grant.identity().as_str(),
            tenant.as_str(),
            count,
            grant.throttle_anomalies,
        ) {
            crate::anomalies::Verdict::Pass => Ok(()),
            crate::anomalies::Verdict::Throttle => Err(ApiError::Exhausted(
                "requests at the highest anomaly level ([anomalies] levels) of this \
                 identity's usual rate for this tenant; its grant throttles them until the \
                 minute ends",
            )),
        }
    }

    /// The caller's session `id`.
    pub(crate) fn session(&self, call: &Call, id: &str) -> Result<Arc<Session>, ApiError> {
        self.custody
            .session(&self.policies.sessions(&call.caller), id)
            .map_err(ApiError::Session)
    }

    /// Writes an intent record before a state change; fails closed.
    pub(crate) async fn intent(&self, call: &Call) -> Result<(), Status> {
        match self.record_intent(call).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics
                    .observe(call.rpc, tonic::Code::Unavailable, call.started);
                Err(ApiError::Audit(e).into())
            }
        }
    }

    /// Carries out a state-changing request: once `prepared` (validation,
    /// authorisation, opened payloads) succeeded, the intent record is written, and
    /// only then does `act` run, so a dead audit sink stops the change before anything
    /// happens. `act` runs on the blocking pool (it writes storage). The outcome is
    /// then finished as `unrecorded` says.
    pub(crate) async fn apply<P, T>(
        self: &Arc<Self>,
        unrecorded: Unrecorded,
        mut call: Call,
        prepared: Result<P, ApiError>,
        act: impl FnOnce(&Shared, P, &mut Event) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<tonic::Response<T>, Status>
    where
        P: Send + 'static,
        T: Send + 'static,
    {
        let result = match prepared {
            Ok(prepared) => {
                self.intent(&call).await?;
                self.blocking(&mut call, move |shared, call| {
                    act(shared, prepared, &mut call.event)
                })
                .await
            }
            Err(e) => Err(e),
        };
        self.finish_as(call, result, unrecorded).await
    }

    /// Runs `work` on the blocking pool, with the call moved there and back: storage
    /// writes (fsynced), bulk cryptography and waits for the vault's exclusive lock
    /// must never hold one of the few async workers that serve every connection.
    pub(crate) async fn blocking<R: Send + 'static>(
        self: &Arc<Self>,
        call: &mut Call,
        work: impl FnOnce(&Shared, &mut Call) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let shared = Arc::clone(self);
        let mut moved = call.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let result = work(&shared, &mut moved);
            (result, moved)
        })
        .await;
        match ran {
            Ok((result, moved)) => {
                *call = moved;
                result
            }
            Err(_) => Err(ApiError::Panicked),
        }
    }

    /// Counts a refusal that looks like a failed authentication towards its burst.
    fn count_failure<T>(&self, call: &Call, result: &Result<T, ApiError>) {
        use crate::anomalies::Failing;
        let identity = || call.caller.identity().to_string();
        let failing = match result {
            Err(ApiError::Denied(_)) => Failing::Denied(identity()),
            Err(ApiError::ApiKey(KeyAnswer::Environment)) => Failing::KeyEnvironment(
                call.event.detail.get("key_id").cloned().unwrap_or_default(),
            ),
            Err(ApiError::ApiKey(KeyAnswer::Invalid | KeyAnswer::Revoked | KeyAnswer::Expired)) => {
                Failing::BadApiKeys(identity())
            }
            _ => return,
        };
        self.anomalies.failure(failing);
    }

    /// Writes the intent record of `call`, leaving what to do on failure to the caller.
    pub(crate) async fn record_intent(&self, call: &Call) -> Result<(), vault_audit::AuditError> {
        let event = Event {
            decision: Decision::Allow,
            reason: "intent".to_owned(),
            ..call.event.clone()
        };
        self.audit.append(event).await.map(|_| ())
    }

    /// Audits the outcome of `call` and turns it into the answer. Nothing is
    /// answered unless its record was written.
    pub(crate) async fn finish<T>(
        &self,
        call: Call,
        result: Result<T, ApiError>,
    ) -> Result<tonic::Response<T>, Status> {
        self.finish_as(call, result, Unrecorded::Refuse).await
    }

    /// As [`Shared::finish`], for changes that have taken effect and whose answer
    /// cannot be had again (new shares; a seal): if the outcome record cannot be
    /// written, the answer is still given and the failure logged. Withholding it
    /// would lose the shares, or tell the caller a seal failed that happened.
    pub(crate) async fn finish_committed<T>(
        &self,
        call: Call,
        result: Result<T, ApiError>,
    ) -> Result<tonic::Response<T>, Status> {
        self.finish_as(call, result, Unrecorded::Answer).await
    }

    async fn finish_as<T>(
        &self,
        mut call: Call,
        result: Result<T, ApiError>,
        unrecorded: Unrecorded,
    ) -> Result<tonic::Response<T>, Status> {
        let (decision, reason) = match &result {
            Ok(_) => (Decision::Allow, call.event.reason.clone()),
            Err(ApiError::Denied(d)) => (
                Decision::Deny,
                match &d.rule {
                    Some(rule) => format!("denied by {rule}"),
                    None => "no grant or role matched (default deny)".to_owned(),
                },
            ),
            Err(e) => (Decision::Error, e.audit_reason()),
        };
        if let Err(e) = &result
            && e.is_internal()
        {
            // The caller learns only the request id; the operator reads the cause here.
            tracing::error!(
                request = %call.event.request_id,
                rpc = call.rpc,
                "request failed: {}",
                e.detail()
            );
        }
        let (rpc, started) = (call.rpc, call.started);
        self.count_failure(&call, &result);
        // A refusal beyond the caller's budget is counted for a summary record instead
        // of recorded on its own: refusals cannot amplify the log.
        let result = match result {
            // Counted by the limits for a summary record per scope and window.
            Err(e @ ApiError::Limited { .. }) => {
                let status = Status::from(e);
                self.metrics.observe(rpc, status.code(), started);
                return Err(status);
            }
            Err(e) if e.is_refusal() && !self.refusals.admit(call.caller.identity(), rpc) => {
                self.metrics.refusals_suppressed.inc();
                let status = Status::from(e);
                self.metrics.observe(rpc, status.code(), started);
                return Err(status);
            }
            result => result,
        };
        let request_id = call.event.request_id.clone();
        call.event.decision = decision;
        call.event.reason = reason;
        let alert = crate::alerts::critical(rpc, &call.event);
        let recorded = self.audit.append(call.event).await;
        // Raised only once its audit record is written: an alert never tells of
        // something the log does not hold.
        if let (Some(alert), Ok(_)) = (alert, &recorded) {
            self.alerts.raise(alert);
        }
        let answer = match (recorded, result, unrecorded) {
            (Ok(_), result, _) => result
                .map(tonic::Response::new)
                .map_err(|e| with_request_id(e.into(), &request_id)),
            (Err(e), Ok(value), Unrecorded::Answer) => {
                tracing::error!(
                    rpc,
                    "took effect but its audit record could not be written: {e}"
                );
                Ok(tonic::Response::new(value))
            }
            (Err(e), _, _) => Err(ApiError::Audit(e).into()),
        };
        let code = answer
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe(rpc, code, started);
        answer
    }
}

/// What to do with an answer whose outcome record could not be written.
#[derive(Clone, Copy)]
pub(crate) enum Unrecorded {
    /// Refuse it (`UNAVAILABLE`): the rule for every request.
    Refuse,
    /// Give it anyway: the change happened and its answer exists once.
    Answer,
}

/// Names the request in an internal error, so the operator can find it in the log.
fn with_request_id(status: Status, request_id: &str) -> Status {
    if status.code() != tonic::Code::Internal {
        return status;
    }
    Status::with_metadata(
        status.code(),
        format!("{} (request {request_id})", status.message()),
        status.metadata().clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_name_their_request_and_keep_their_metadata() {
        let mut status = Status::internal("internal error");
        status.metadata_mut().insert(
            "vault-error",
            tonic::metadata::MetadataValue::from_static("audit"),
        );
        let named = with_request_id(status, "0a1b");
        assert_eq!(named.message(), "internal error (request 0a1b)");
        assert_eq!(named.metadata().get("vault-error").unwrap(), "audit");
        let denied = with_request_id(Status::permission_denied("no"), "0a1b");
        assert_eq!(denied.message(), "no");
    }
}
