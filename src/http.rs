//! Plain HTTP, bound to localhost by default: `GET /v1/health` and `GET /metrics`.
//! Nothing secret is reachable here: the health body is the seal state and the
//! metrics carry RPC names, codes and counts only.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use vault_audit::AuditLog;

use crate::custody::Upkeep;
use crate::metrics::Metrics;
use crate::transport::{ConnectionTask, accept_loop, backoff};
use crate::vault::SealState;

/// A request that has not sent its headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; health checkers and scrapers need few.
const MAX_CONNECTIONS: usize = 64;

/// What health and metrics are read from.
pub(crate) struct Observed {
    /// The seal state.
    pub(crate) upkeep: Arc<Upkeep>,
    /// Whether the audit log can be written.
    pub(crate) audit: AuditLog,
    /// The daemon's metrics.
    pub(crate) metrics: Arc<Metrics>,
}

/// Serves health and metrics on `listener` until the daemon stops.
pub(crate) async fn serve(
    listener: TcpListener,
    observed: Observed,
    stopped: watch::Receiver<bool>,
) {
    let shared = Arc::new(observed);
    let accept = |_| async {
        let Ok((tcp, _)) = listener.accept().await else {
            return backoff().await;
        };
        let shared = Arc::clone(&shared);
        let service = hyper::service::service_fn(move |request| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(answer(&shared, &request)) }
        });
        let task: ConnectionTask = Box::pin(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
        });
        Some(task)
    };
    accept_loop(accept, MAX_CONNECTIONS, stopped).await;
}

fn answer(shared: &Observed, request: &http::Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/v1/health") => match ProbeCodes::parse(request.uri().query()) {
            Ok(codes) => health(shared, &codes),
            Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        },
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.render(),
        ),
        (_, "/v1/health" | "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is served\n".to_owned(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: vaultd serves GET /v1/health and GET /metrics here\n".to_owned(),
        ),
    }
}

/// The status codes a probe asked for instead of the defaults: `sealedcode`,
/// `uninitcode` and `auditcode` (unsealed, but the audit log is failing or short of
/// space), each 100-599. A liveness probe can ask for 200 for every state, so a
/// sealed node is not restarted (which would need the quorum again); a readiness probe
/// keeps the defaults.
#[derive(Debug, PartialEq, Eq)]
struct ProbeCodes {
    sealed: StatusCode,
    uninitialised: StatusCode,
    audit: StatusCode,
}

impl ProbeCodes {
    fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut codes = Self {
            sealed: StatusCode::SERVICE_UNAVAILABLE,
            uninitialised: StatusCode::NOT_IMPLEMENTED,
            audit: StatusCode::SERVICE_UNAVAILABLE,
        };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "sealedcode" => &mut codes.sealed,
                "uninitcode" => &mut codes.uninitialised,
                "auditcode" => &mut codes.audit,
                _ => {
                    return Err(
                        "unknown query parameter: /v1/health takes sealedcode, uninitcode and auditcode"
                            .to_owned(),
                    );
                }
            };
            *slot = value
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| format!("{name} must be an HTTP status code, 100-599"))?;
        }
        Ok(codes)
    }
}

/// 200 unsealed and able to audit; 503 sealed, or unsealed with an audit sink that
/// failed or is short of space (every request would fail); 501 uninitialised; each
/// changeable by [`ProbeCodes`]. Reads no storage: checkers may call it often.
fn health(shared: &Observed, codes: &ProbeCodes) -> Response<Full<Bytes>> {
    let audit_ok = shared.audit.is_healthy();
    let audit = if audit_ok {
        "ok"
    } else if shared.audit.failure().is_none() && shared.audit.low_space() {
        "low-space"
    } else {
        "failing"
    };
    let (code, state, initialized, sealed) = match shared.upkeep.seal_state() {
        SealState::Unsealed if audit_ok => (StatusCode::OK, "unsealed", true, false),
        SealState::Unsealed => (codes.audit, "unsealed", true, false),
        SealState::Sealed => (codes.sealed, "sealed", true, true),
        SealState::Uninitialised => (codes.uninitialised, "uninitialised", false, true),
    };
    let body = serde_json::json!({
        "state": state,
        "initialized": initialized,
        "sealed": sealed,
        "audit": audit,
        "audit_free_bytes": shared.audit.free_bytes(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    reply(code, "application/json", format!("{body}\n"))
}

fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_choose_their_codes_and_bad_ones_are_refused() {
        let defaults = ProbeCodes::parse(None).unwrap();
        assert_eq!(defaults.sealed, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(defaults.uninitialised, StatusCode::NOT_IMPLEMENTED);
        let live = ProbeCodes::parse(Some("sealedcode=200&uninitcode=204&auditcode=299")).unwrap();
        assert_eq!(live.sealed, StatusCode::OK);
        assert_eq!(live.uninitialised, StatusCode::NO_CONTENT);
        assert_eq!(live.audit.as_u16(), 299);
        for bad in [
            "sealedcode=99",
            "sealedcode=600",
            "sealedcode=x",
            "sealedcode",
            "standbyok=true",
        ] {
            assert!(ProbeCodes::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
