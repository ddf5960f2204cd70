//! `ExportTenant`: a tenant's data for portability, as one JSON document streamed in
//! chunks. It holds the tenant's secrets' metadata, its API keys' metadata and the
//! records of this node's audit log about it — names, versions, states and times,
//! never a value, a key, a masked hint, a fingerprint or a MAC of one. Each audit
//! record is given with its chain position and its line exactly as written, so the
//! export can be checked against the log (`vaultctl audit verify` on the log, then
//! the lines compared).
//!
//! The request is recorded before anything is read. The audit records are read from
//! the log file in a blocking thread, one line at a time, and sent on through a
//! small channel: a tenant with a long history is never held in memory. Exports
//! share the bound of audit searches (four at once per node).

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vault_audit::{Entry, Filter, Line, Reader};
use vault_proto::v1;

use super::audit_search::RUNNING;
use super::tenant;
use crate::api::{ApiError, Shared};
use crate::authz::ExportTenant;
use crate::names::SecretKind;
use crate::records::{ApiKeyRecord, ApiKeyState, VersionState};
use crate::vault::SecretMetadata;

/// The largest chunk sent.
const CHUNK: usize = 64 * 1024;

/// The answer: the document's bytes in order.
pub(super) type ExportStream = ReceiverStream<Result<v1::ExportChunk, Status>>;

#[derive(Serialize)]
struct Header<'a> {
    format: &'static str,
    tenant: &'a str,
    exported_unix: u64,
}

#[derive(Serialize)]
struct SecretOut<'a> {
    environment: &'static str,
    name: &'a str,
    kind: &'static str,
    created_unix: u64,
    current_version: u64,
    versions: Vec<VersionOut>,
}

#[derive(Serialize)]
struct VersionOut {
    version: u64,
    created_unix: u64,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    grace_until_unix: Option<u64>,
}

#[derive(Serialize)]
struct ApiKeyOut<'a> {
    id: &'a str,
    environment: &'static str,
    scopes: &'a [String],
    tier: &'a str,
    label: &'a str,
    created_unix: u64,
    expires_unix: Option<u64>,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    successor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed_unix: Option<u64>,
}

#[derive(Serialize)]
struct AuditOut<'a> {
    seq: u64,
    line: &'a str,
}

fn secret(m: &SecretMetadata) -> SecretOut<'_> {
    SecretOut {
        environment: m.id.environment.as_str(),
        name: m.id.name.as_str(),
        kind: match m.kind {
            SecretKind::Byok => "byok",
            SecretKind::System => "system",
        },
        created_unix: m.created_unix,
        current_version: m.current_version,
        versions: m
            .versions
            .iter()
            .map(|v| {
                let (state, grace_until_unix) = match v.state {
                    VersionState::Current => ("current", None),
                    VersionState::Grace { until_unix } => ("grace", Some(until_unix)),
                    VersionState::Disabled => ("disabled", None),
                };
                VersionOut {
                    version: v.version,
                    created_unix: v.created_unix,
                    state,
                    grace_until_unix,
                }
            })
            .collect(),
    }
}

fn api_key<'a>(id: &'a str, r: &'a ApiKeyRecord) -> ApiKeyOut<'a> {
    let (state, successor, changed_unix) = match &r.state {
        ApiKeyState::Active => ("active", None, None),
        ApiKeyState::Rotated {
            grace_until,
            successor,
        } => ("rotated", Some(successor.as_str()), Some(*grace_until)),
        ApiKeyState::Revoked { at_unix } => ("revoked", None, Some(*at_unix)),
    };
    ApiKeyOut {
        id,
        environment: r.environment.as_str(),
        scopes: &r.scopes,
        tier: &r.tier,
        label: &r.label,
        created_unix: r.created_unix,
        expires_unix: r.expires_unix,
        state,
        successor,
        changed_unix,
    }
}

pub(super) async fn serve(
    shared: &Arc<Shared>,
    request: Request<v1::ExportTenantRequest>,
) -> Result<Response<ExportStream>, Status> {
    let mut call = shared.call("admin.export_tenant", &request)?;
    let prepared = tenant(&mut call, &request.get_ref().tenant).and_then(|id| {
        let grant = shared
            .policies
            .permit(&call.caller, ExportTenant(id))
            .map_err(ApiError::Denied)?;
        call.allowed_by(&grant);
        let slot = RUNNING.try_acquire().map_err(|_| {
            ApiError::Exhausted("four audit searches or exports are running on this node; retry")
        })?;
        Ok((grant, slot))
    });
    let (grant, slot) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return shared.finish(call, Err(e)).await,
    };
    let metadata = shared
        .blocking(&mut call, move |shared, _| {
            Ok(shared.custody.export_tenant(&grant)?)
        })
        .await;
    let crate::custody::TenantExport {
        tenant,
        secrets,
        api_keys: keys,
    } = match metadata {
        Ok(metadata) => metadata,
        Err(e) => return shared.finish(call, Err(e)).await,
    };
    call.event
        .detail
        .insert("secrets".into(), secrets.len().to_string());
    call.event
        .detail
        .insert("api_keys".into(), keys.len().to_string());
    // Recorded before anything is sent: the export's own record is in the log, and in
    // the export.
    shared.finish(call, Ok(())).await?;
    let header = serde_json::to_vec(&Header {
        format: "vaultd-tenant-export/1",
        tenant: tenant.as_str(),
        exported_unix: shared.custody.now_unix(),
    })
    .unwrap_or_default();
    let path = shared.audit.path().to_path_buf();
    let (answers, stream) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut out = Chunks {
            buffer: Vec::with_capacity(CHUNK),
            answers: &answers,
        };
        let written = (|| {
            // The header's fields (without its closing brace), then the three lists,
            // as one object.
            out.write(header.strip_suffix(b"}").unwrap_or(&header))?;
            out.list("secrets", secrets.iter().map(secret))?;
            out.list("api_keys", keys.iter().map(|(id, r)| api_key(id, r)))?;
            out.write(b",\"audit\":[")?;
            let filter = Filter {
                tenant: Some(tenant.to_string()),
                ..Filter::default()
            };
            let mut reader = Reader::open(&path).map_err(|e| Stop::Failed(e.to_string()))?;
            let mut first = true;
            loop {
                match reader
                    .next_line()
                    .map_err(|e| Stop::Failed(e.to_string()))?
                {
                    Line::Whole(line) => {
                        if let Some(entry) = Entry::parse(line).filter(|e| filter.matches(e)) {
                            out.write(if first { b"" } else { b"," })?;
                            out.json(&AuditOut {
                                seq: entry.seq,
                                line: &entry.line,
                            })?;
                            first = false;
                        }
                    }
                    Line::Skipped => {}
                    Line::End => break,
                }
            }
            out.write(b"]}\n")?;
            out.flush()
        })();
        if let Err(Stop::Failed(e)) = written {
            let _ = answers.blocking_send(Err(Status::failed_precondition(format!(
                "reading the audit log for the export: {e}"
            ))));
        }
    });
    Ok(Response::new(ReceiverStream::new(stream)))
}

/// Why writing the export stopped.
enum Stop {
    /// The client went away.
    Gone,
    /// The log could not be read.
    Failed(String),
}

/// The document, cut into chunks of at most [`CHUNK`] bytes.
struct Chunks<'a> {
    buffer: Vec<u8>,
    answers: &'a mpsc::Sender<Result<v1::ExportChunk, Status>>,
}

impl Chunks<'_> {
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), Stop> {
        while !bytes.is_empty() {
            let room = CHUNK - self.buffer.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = later;
            if self.buffer.len() == CHUNK {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn json(&mut self, value: &impl Serialize) -> Result<(), Stop> {
        // Plain structs of strings and numbers always serialise.
        self.write(&serde_json::to_vec(value).unwrap_or_default())
    }

    /// `,"name":[item,item,…]`
    fn list<T: Serialize>(
        &mut self,
        name: &str,
        items: impl Iterator<Item = T>,
    ) -> Result<(), Stop> {
        self.write(format!(",\"{name}\":[").as_bytes())?;
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.write(b",")?;
            }
            self.json(&item)?;
        }
        self.write(b"]")
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.answers
            .blocking_send(Ok(v1::ExportChunk { data }))
            .map_err(|_| Stop::Gone)
    }
}
