//! `SearchAudit`: this node's audit log read back, filtered, streamed; with `follow`,
//! kept open for new records (`vaultctl audit search`, `vaultctl audit tail`).
//!
//! The search reads the log file on its own descriptor in a blocking thread and never
//! touches the writer, so reading does not slow writing. Bounded: at most
//! [`SEARCHES`] at once per node (another is `RESOURCE_EXHAUSTED`), at most
//! [`MAX_LIMIT`] records per search, lines over the record limit skipped unread, a
//! small channel to the client (the reader waits for it). A follower polls for growth
//! and ends when the client goes away, reopening the log when it is rotated.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vault_audit::{Decision, Entry, Filter, Line, Reader};
use vault_proto::v1;

use crate::api::{ApiError, Shared};
use crate::authz::AuditReadOp;

/// Searches one node runs at once.
const SEARCHES: usize = 4;
/// Records one search returns at most.
const MAX_LIMIT: u32 = 100_000;
/// Records returned when the request names no limit.
const DEFAULT_LIMIT: u32 = 1_000;
/// How often a follower looks for new records.
const POLL: Duration = Duration::from_millis(200);

/// Searches and exports under way (they read the log the same way).
pub(super) static RUNNING: Semaphore = Semaphore::const_new(SEARCHES);

/// The answer: matching records, oldest first.
pub(super) type AuditStream = ReceiverStream<Result<v1::AuditEntry, Status>>;

pub(super) async fn serve(
    shared: &Arc<Shared>,
    request: Request<v1::SearchAuditRequest>,
) -> Result<Response<AuditStream>, Status> {
    let mut call = shared.call("admin.search_audit", &request)?;
    let r = request.into_inner();
    let prepared = match shared.policies.permit(&call.caller, AuditReadOp) {
        Ok(grant) => {
            call.allowed_by(&grant);
            filter(&r).and_then(|filter| {
                let slot = RUNNING.try_acquire().map_err(|_| {
                    ApiError::Exhausted("four audit searches are running on this node; retry")
                })?;
                Ok((filter, slot))
            })
        }
        Err(denied) => Err(ApiError::Denied(denied)),
    };
    let detail = &mut call.event.detail;
    for (key, value) in [
        ("tenant", &r.tenant),
        ("identity", &r.identity),
        ("operation", &r.operation),
        ("decision", &r.decision),
    ] {
        if !value.is_empty() {
            detail.insert(format!("filter_{key}"), value.clone());
        }
    }
    detail.insert("follow".into(), r.follow.to_string());
    call.event.tenant = (!r.tenant.is_empty()).then(|| r.tenant.clone());
    let (filter, slot) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return shared.finish(call, Err(e)).await,
    };
    // The search is recorded before anything is read: what an auditor looked for is
    // in the log whatever the stream then does.
    shared.finish(call, Ok(())).await?;
    let limit = match r.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let path = shared.audit.path().to_path_buf();
    let (answers, stream) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        if let Err(e) = read(&path, &filter, limit, r.follow, &answers) {
            let _ = answers.blocking_send(Err(Status::failed_precondition(e.to_string())));
        }
    });
    Ok(Response::new(ReceiverStream::new(stream)))
}

/// The request's filters, checked.
fn filter(r: &v1::SearchAuditRequest) -> Result<Filter, ApiError> {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let time = |t: u64| (t != 0).then_some(t);
    if [&r.tenant, &r.identity, &r.operation]
        .iter()
        .any(|s| s.len() > vault_audit::MAX_FIELD)
    {
        return Err(ApiError::Invalid("a filter is longer than any audit field"));
    }
    Ok(Filter {
        tenant: text(&r.tenant),
        identity: text(&r.identity),
        operation: text(&r.operation),
        decision: match r.decision.as_str() {
            "" => None,
            "allow" => Some(Decision::Allow),
            "deny" => Some(Decision::Deny),
            "error" => Some(Decision::Error),
            _ => return Err(ApiError::Invalid("decision must be allow, deny or error")),
        },
        since_ms: time(r.since_unix_ms),
        until_ms: time(r.until_unix_ms),
    })
}

/// Sends the matching records of the log at `path` until `limit`, the end (unless
/// following) or the client going away.
fn read(
    path: &std::path::Path,
    filter: &Filter,
    limit: u32,
    follow: bool,
    answers: &mpsc::Sender<Result<v1::AuditEntry, Status>>,
) -> std::io::Result<()> {
    let mut reader = Reader::open(path)?;
    let mut sent = 0;
    loop {
        match reader.next_line()? {
            Line::Whole(line) => {
                if let Some(entry) = Entry::parse(line).filter(|e| filter.matches(e)) {
                    let answer = v1::AuditEntry {
                        seq: entry.seq,
                        line: entry.line,
                    };
                    if answers.blocking_send(Ok(answer)).is_err() {
                        return Ok(());
                    }
                    sent += 1;
                    if sent >= limit {
                        return Ok(());
                    }
                }
            }
            Line::Skipped => {}
            Line::End if !follow => return Ok(()),
            Line::End => {
                if answers.is_closed() {
                    return Ok(());
                }
                if reader.replaced(path) {
                    reader = Reader::open(path)?;
                } else {
                    std::thread::sleep(POLL);
                }
            }
        }
    }
}
