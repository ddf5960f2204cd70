//! Leases: get (services), list and revoke (admins).

use std::io::{IsTerminal, Write};

use serde_json::json;
use vault_client::proto::revoke_leases_request::Selector;
use vault_client::{Client, ExposeSecret};

use crate::cli::{LeaseCommand, RevokeArgs};
use crate::error::CliError;
use crate::output::{Output, env_name, table, time};

/// The lease as JSON, written through a zeroising buffer sized up front (so no
/// reallocation leaves a copy behind). A value that is not UTF-8 is given in hex.
fn print_json(lease: &vault_client::Lease) -> Result<(), CliError> {
    let value = lease.expose_secret();
    let expires = vault_crypto::clock::unix_seconds(lease.expires_at());
    let mut json = zeroize::Zeroizing::new(Vec::with_capacity(value.len() * 6 + 256));
    write!(
        json,
        "{{\"lease_id\":\"{}\",\"version\":{},\"expires_unix\":{expires},",
        lease.lease_id(),
        lease.version()
    )?;
    match std::str::from_utf8(value) {
        Ok(text) => {
            json.extend_from_slice(b"\"value\":");
            serde_json::to_writer(&mut *json, text).map_err(std::io::Error::from)?;
        }
        Err(_) => {
            let hex = vault_crypto::hex::encode(value);
            write!(json, "\"value_hex\":\"{}\"", hex.as_str())?;
        }
    }
    json.extend_from_slice(b"}\n");
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&json)?;
    stdout.flush()?;
    Ok(())
}

fn selector(args: &RevokeArgs) -> Result<Selector, CliError> {
    Ok(match args {
        RevokeArgs { id: Some(id), .. } => Selector::LeaseId(id.clone()),
        RevokeArgs {
            tenant: Some(t), ..
        } => Selector::Tenant(t.clone()),
        RevokeArgs {
            identity: Some(i), ..
        } => Selector::Identity(i.clone()),
        RevokeArgs {
            secret: Some(s),
            secret_env,
            ..
        } => {
            let (tenant, name) = s.split_once('/').ok_or_else(|| {
                CliError::invalid(format!(
                    "--secret {s:?}: use TENANT/NAME, e.g. acme/byok/openai"
                ))
            })?;
            Selector::Secret(vault_client::proto::SecretRef {
                tenant: tenant.to_owned(),
                environment: secret_env.0.to_proto(),
                name: name.to_owned(),
            })
        }
        RevokeArgs { all: true, .. } => Selector::All(true),
        _ => {
            return Err(CliError::invalid(
                "name one of --id, --tenant, --secret, --identity, --all",
            ));
        }
    })
}

pub(crate) async fn run(
    client: &Client,
    command: &LeaseCommand,
    out: Output,
) -> Result<(), CliError> {
    match command {
        LeaseCommand::Get { secret, .. } => {
            // The lifetime (--ttl) was given to the client when it was built.
            let lease = client
                .lease(&secret.tenant, secret.env.into(), &secret.name)
                .await?;
            if out.json {
                print_json(&lease)?;
            } else {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(lease.expose_secret())?;
                if stdout.is_terminal() {
                    stdout.write_all(b"\n")?;
                }
                stdout.flush()?;
                eprintln!("lease {} (version {})", lease.lease_id(), lease.version());
            }
        }
        LeaseCommand::List { tenant, identity } => {
            let leases = client
                .list_leases(tenant.as_deref(), identity.as_deref())
                .await?;
            out.emit(
                || {
                    if leases.is_empty() {
                        return "no active leases".to_owned();
                    }
                    let rows: Vec<Vec<String>> = leases
                        .iter()
                        .map(|l| {
                            let s = l.secret.clone().unwrap_or_default();
                            let env = env_name(s.environment);
                            vec![
                                l.lease_id.clone(),
                                l.identity.clone(),
                                format!("{}/{env}/{}", s.tenant, s.name),
                                l.version.to_string(),
                                time(l.expires_unix_ms / 1000),
                            ]
                        })
                        .collect();
                    table(
                        &["LEASE", "IDENTITY", "SECRET", "VERSION", "EXPIRES"],
                        &rows,
                    )
                },
                || {
                    json!({ "leases": leases.iter().map(|l| {
                        let s = l.secret.clone().unwrap_or_default();
                        json!({
                            "lease_id": l.lease_id,
                            "identity": l.identity,
                            "tenant": s.tenant,
                            "environment": env_name(s.environment),
                            "name": s.name,
                            "version": l.version,
                            "expires_unix_ms": l.expires_unix_ms,
                        })
                    }).collect::<Vec<_>>() })
                },
            );
        }
        LeaseCommand::Revoke(args) => {
            let revoked = client.revoke_leases(selector(args)?).await?;
            out.emit(
                || {
                    format!(
                        "revoked {revoked} lease{}",
                        if revoked == 1 { "" } else { "s" }
                    )
                },
                || json!({ "revoked": revoked }),
            );
        }
    }
    Ok(())
}
