//! Policies: explain a decision and lint offline with the daemon's own engine, or
//! ask the daemon.

use std::path::Path;

use serde_json::json;
use vault_client::Client;
use vault_client::proto::{CheckPolicyRequest, CheckPolicyResponse, RuleTrace};
use vault_policy::PolicySet;

use crate::cli::{Env, PolicyCommand};
use crate::error::{CliError, Exit};
use crate::output::{Output, table};

fn load(dir: &Path) -> Result<PolicySet, CliError> {
    PolicySet::load_dir(dir).map_err(|e| {
        CliError::new(Exit::CheckFailed, format!("policy error: {e}"))
            .hint("fix the file and line named; the daemon would keep its previous policies")
    })
}

/// The same explanation the daemon's CheckPolicy gives, computed here.
fn check_offline(
    dir: &Path,
    identity: &str,
    op: &str,
    tenant: &str,
    secret: Option<&str>,
    env: Env,
) -> Result<CheckPolicyResponse, CliError> {
    let environment = env.0.as_str();
    let decision = load(dir)?
        .explain(identity, op, tenant, environment, secret)
        .ok_or_else(|| {
            CliError::invalid(format!(
                "--op {op:?} is neither an operation nor a permission"
            ))
        })?;
    Ok(CheckPolicyResponse {
        allowed: decision.allowed,
        decided_by: decision.decided_by.map(|r| r.id).unwrap_or_default(),
        trace: decision
            .trace
            .iter()
            .map(|t| RuleTrace {
                kind: t.rule.kind.as_str().to_owned(),
                id: t.rule.id.clone(),
                location: t.rule.location(),
                outcome: t.outcome.to_string(),
            })
            .collect(),
    })
}

fn explain(answer: &CheckPolicyResponse, out: Output) -> Result<(), CliError> {
    out.emit(
        || {
            let verdict = match (answer.allowed, answer.decided_by.as_str()) {
                (true, rule) => format!("allowed by {rule}"),
                (false, "") => "denied: no grant or role matched (default deny)".to_owned(),
                (false, rule) => format!("denied by {rule}"),
            };
            let rows: Vec<Vec<String>> = answer
                .trace
                .iter()
                .map(|t| {
                    vec![
                        t.kind.clone(),
                        t.id.clone(),
                        t.location.clone(),
                        t.outcome.clone(),
                    ]
                })
                .collect();
            format!(
                "{verdict}\n{}",
                table(&["KIND", "RULE", "WHERE", "OUTCOME"], &rows)
            )
        },
        || {
            json!({
                "allowed": answer.allowed,
                "decided_by": (!answer.decided_by.is_empty()).then_some(&answer.decided_by),
                "trace": answer.trace.iter().map(|t| json!({
                    "kind": t.kind, "id": t.id, "location": t.location, "outcome": t.outcome,
                })).collect::<Vec<_>>(),
            })
        },
    );
    if answer.allowed {
        Ok(())
    } else {
        Err(CliError::new(
            Exit::CheckFailed,
            "the request would be denied",
        ))
    }
}

/// Whether the command needs the daemon.
pub(crate) fn needs_daemon(command: &PolicyCommand) -> bool {
    matches!(
        command,
        PolicyCommand::Reload | PolicyCommand::Check { dir: None, .. }
    )
}

pub(crate) async fn run(
    client: Option<&Client>,
    command: &PolicyCommand,
    out: Output,
) -> Result<(), CliError> {
    match (command, client) {
        (PolicyCommand::Lint { dir }, _) => {
            let set = load(dir)?;
            let (grants, denies, roles) = set.counts();
            out.emit(
                || {
                    format!(
                        "{}: ok ({grants} grants, {denies} denies, {roles} roles)",
                        dir.display()
                    )
                },
                || json!({ "ok": true, "grants": grants, "denies": denies, "roles": roles }),
            );
            Ok(())
        }
        (
            PolicyCommand::Check {
                identity,
                op,
                tenant,
                secret,
                env,
                dir: Some(dir),
            },
            _,
        ) => explain(
            &check_offline(dir, identity, op, tenant, secret.as_deref(), *env)?,
            out,
        ),
        (
            PolicyCommand::Check {
                identity,
                op,
                tenant,
                secret,
                env,
                dir: None,
            },
            Some(client),
        ) => {
            let answer = client
                .check_policy(CheckPolicyRequest {
                    identity: identity.clone(),
                    action: op.clone(),
                    tenant: tenant.clone(),
                    environment: env.0.to_proto(),
                    secret: secret.clone().unwrap_or_default(),
                })
                .await?;
            explain(&answer, out)
        }
        (PolicyCommand::Reload, Some(client)) => {
            let counts = client.reload_policies().await?;
            out.emit(
                || format!("reloaded: {} grants, {} denies, {} roles", counts.grants, counts.denies, counts.roles),
                || json!({ "grants": counts.grants, "denies": counts.denies, "roles": counts.roles }),
            );
            Ok(())
        }
        (_, None) => Err(CliError::new(
            Exit::Failure,
            "this command needs a connection to vaultd",
        )),
    }
}
