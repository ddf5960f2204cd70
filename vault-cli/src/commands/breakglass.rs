//! `vaultctl breakglass request|approve|revoke|list` and `vaultctl tenant export`.

use std::io::Write;
use std::path::Path;

use clap::Subcommand;
use serde_json::json;
use vault_client::proto::{BreakGlassGrant, BreakGlassState};
use vault_client::{BreakGlassAsk, Client};

use crate::error::CliError;
use crate::output::{Output, table};

/// Break-glass access: extra admin permissions on some tenants, for a bounded time,
/// once enough security officers approve.
#[derive(Subcommand, Debug)]
pub(crate) enum BreakGlassCommand {
    /// Asks for a grant; it takes effect once approved by as many distinct holders of
    /// `breakglass.approve` as vaultd requires (never the requester).
    Request {
        /// A permission that acts on one tenant (repeat for more), e.g.
        /// secrets.read-metadata, tenants.export, apikeys.revoke.
        #[arg(long = "permission", required = true, value_name = "PERMISSION")]
        permissions: Vec<String>,
        /// A tenant id or glob (repeat for more), e.g. acme or acme-*.
        #[arg(long = "tenant", required = true, value_name = "TENANT")]
        tenants: Vec<String>,
        /// How long it lasts once approved, e.g. 30m or 2h.
        #[arg(long, value_name = "DURATION")]
        duration: String,
        /// Why: recorded and shown to approvers.
        #[arg(long)]
        reason: String,
    },
    /// Approves a pending grant (needs `breakglass.approve`).
    Approve {
        /// The grant's id (bg-…).
        id: String,
    },
    /// Ends a pending or active grant now (an approver's, or your own).
    Revoke {
        /// The grant's id (bg-…).
        id: String,
    },
    /// Lists grants, newest first: every grant for an approver, your own otherwise.
    List,
}

pub(crate) async fn run(
    client: &Client,
    command: &BreakGlassCommand,
    out: Output,
) -> Result<(), CliError> {
    let grant = match command {
        BreakGlassCommand::Request {
            permissions,
            tenants,
            duration,
            reason,
        } => {
            let ask = BreakGlassAsk {
                permissions: permissions.clone(),
                tenants: tenants.clone(),
                duration: crate::input::duration(duration)?,
                reason: reason.clone(),
            };
            client.request_break_glass(&ask).await?
        }
        BreakGlassCommand::Approve { id } => client.approve_break_glass(id).await?,
        BreakGlassCommand::Revoke { id } => client.revoke_break_glass(id).await?,
        BreakGlassCommand::List => {
            let grants = client.list_break_glass().await?;
            out.emit(
                || {
                    let rows: Vec<Vec<String>> = grants.iter().map(row).collect();
                    table(
                        &[
                            "ID",
                            "STATE",
                            "REQUESTER",
                            "PERMISSIONS",
                            "TENANTS",
                            "APPROVALS",
                        ],
                        &rows,
                    )
                },
                || json!({ "grants": grants.iter().map(grant_json).collect::<Vec<_>>() }),
            );
            return Ok(());
        }
    };
    out.emit(|| describe(&grant), || grant_json(&grant));
    Ok(())
}

fn state(g: &BreakGlassGrant) -> String {
    match g.state() {
        BreakGlassState::Pending => "pending".into(),
        BreakGlassState::Active => "active".into(),
        BreakGlassState::Ended => format!("ended ({})", g.end_reason),
        BreakGlassState::Unspecified => "?".into(),
    }
}

fn row(g: &BreakGlassGrant) -> Vec<String> {
    vec![
        g.id.clone(),
        state(g),
        g.requester.clone(),
        g.permissions.join(","),
        g.tenants.join(","),
        format!("{}/{}", g.approvals.len(), g.approvals_required),
    ]
}

fn describe(g: &BreakGlassGrant) -> String {
    let mut lines = vec![
        format!("{} {}", g.id, state(g)),
        format!("requester:   {}", g.requester),
        format!("permissions: {}", g.permissions.join(", ")),
        format!("tenants:     {}", g.tenants.join(", ")),
        format!("duration:    {} s", g.duration_seconds),
        format!("reason:      {}", g.reason),
        format!(
            "approvals:   {}/{}{}",
            g.approvals.len(),
            g.approvals_required,
            g.approvals
                .iter()
                .map(|a| format!("\n  {}", a.identity))
                .collect::<String>()
        ),
    ];
    if g.state() == BreakGlassState::Active {
        lines.push(format!("active until {} (Unix seconds)", g.expires_unix));
    }
    if !g.ended_by.is_empty() {
        lines.push(format!("ended by {}", g.ended_by));
    }
    lines.join("\n")
}

fn grant_json(g: &BreakGlassGrant) -> serde_json::Value {
    json!({
        "id": g.id,
        "state": match g.state() {
            BreakGlassState::Pending => "pending",
            BreakGlassState::Active => "active",
            BreakGlassState::Ended => "ended",
            BreakGlassState::Unspecified => "unspecified",
        },
        "requester": g.requester,
        "permissions": g.permissions,
        "tenants": g.tenants,
        "duration_seconds": g.duration_seconds,
        "reason": g.reason,
        "requested_unix": g.requested_unix,
        "approvals": g.approvals.iter().map(|a| json!({
            "identity": a.identity, "at_unix": a.at_unix,
        })).collect::<Vec<_>>(),
        "approvals_required": g.approvals_required,
        "active_since_unix": g.active_since_unix,
        "expires_unix": g.expires_unix,
        "ended_unix": g.ended_unix,
        "end_reason": g.end_reason,
        "ended_by": g.ended_by,
    })
}

/// `vaultctl tenant export TENANT [--out FILE]`: the export's JSON, written as it
/// arrives, to stdout or to a new file (mode 0600, never an existing one).
pub(crate) async fn export(
    client: &Client,
    tenant: &str,
    file: Option<&Path>,
) -> Result<(), CliError> {
    let mut sink: Box<dyn Write> = match file {
        None => Box::new(std::io::stdout().lock()),
        Some(path) => Box::new(crate::input::create_private(path, "an export")?),
    };
    let written = async {
        let mut stream = client.export_tenant(tenant).await?;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|status| CliError::from(vault_client::Error::from(status)))?
        {
            sink.write_all(&chunk.data)
                .map_err(|e| CliError::invalid(format!("cannot write the export: {e}")))?;
        }
        sink.flush()
            .map_err(|e| CliError::invalid(format!("cannot write the export: {e}")))
    }
    .await;
    if let (Err(_), Some(path)) = (&written, file) {
        // A partial export is no export.
        drop(sink);
        let _ = std::fs::remove_file(path);
    }
    written
}
