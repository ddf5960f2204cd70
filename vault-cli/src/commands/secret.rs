//! Secrets (write-only values, readable metadata) and tenants.

use serde_json::{Value, json};
use vault_client::proto::{SecretKind, SecretMetadata, TenantKeys, VersionState};
use vault_client::{Client, SecretPath};

use crate::cli::{Env, Kind, SecretArgs, SecretCommand, TenantCommand};
use crate::error::CliError;
use crate::input;
use crate::output::{Output, env_name, table, time};

fn path(secret: &SecretArgs) -> SecretPath {
    SecretPath {
        tenant: secret.tenant.clone(),
        environment: secret.env.into(),
        name: secret.name.clone(),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match SecretKind::try_from(kind) {
        Ok(SecretKind::Byok) => "byok",
        Ok(SecretKind::System) => "system",
        _ => "?",
    }
}

fn state_name(state: i32) -> &'static str {
    match VersionState::try_from(state) {
        Ok(VersionState::Current) => "current",
        Ok(VersionState::Grace) => "grace",
        Ok(VersionState::Disabled) => "disabled",
        _ => "?",
    }
}

fn unix(seconds: u64) -> String {
    time(i64::try_from(seconds).unwrap_or(i64::MAX))
}

fn metadata_json(m: &SecretMetadata) -> Value {
    let secret = m.secret.clone().unwrap_or_default();
    json!({
        "tenant": secret.tenant,
        "environment": env_name(secret.environment),
        "name": secret.name,
        "kind": kind_name(m.kind),
        "current_version": m.current_version,
        "created_unix": m.created_unix,
        "versions": m.versions.iter().map(|v| json!({
            "version": v.version,
            "state": state_name(v.state),
            "grace_until_unix": (v.grace_until_unix > 0).then_some(v.grace_until_unix),
            "created_unix": v.created_unix,
            "hint": v.hint,
            "fingerprint": v.fingerprint,
        })).collect::<Vec<_>>(),
    })
}

fn describe_text(m: &SecretMetadata) -> String {
    let secret = m.secret.clone().unwrap_or_default();
    let rows: Vec<Vec<String>> = m
        .versions
        .iter()
        .map(|v| {
            let state = match state_name(v.state) {
                "grace" => format!("grace until {}", unix(v.grace_until_unix)),
                other => other.to_owned(),
            };
            vec![
                v.version.to_string(),
                state,
                unix(v.created_unix),
                v.hint.clone(),
                v.fingerprint.clone(),
            ]
        })
        .collect();
    format!(
        "{}/{}/{} ({}), current version {}\n{}",
        secret.tenant,
        env_name(secret.environment),
        secret.name,
        kind_name(m.kind),
        m.current_version,
        table(
            &["VERSION", "STATE", "CREATED", "HINT", "FINGERPRINT"],
            &rows
        )
    )
}

pub(crate) async fn run(
    client: &Client,
    command: &SecretCommand,
    out: Output,
) -> Result<(), CliError> {
    match command {
        SecretCommand::Put {
            secret,
            kind,
            input,
        } => {
            let value = input::value(input.keep_newline)?;
            let kind = match kind {
                Kind::Byok => SecretKind::Byok,
                Kind::System => SecretKind::System,
            };
            let m = client.put_secret(&path(secret), kind, &value).await?;
            out.emit(|| describe_text(&m), || metadata_json(&m));
        }
        SecretCommand::Rotate {
            secret,
            grace,
            input,
        } => {
            let grace = grace.as_deref().map(input::duration).transpose()?;
            let value = input::value(input.keep_newline)?;
            let m = client.rotate_secret(&path(secret), &value, grace).await?;
            out.emit(|| describe_text(&m), || metadata_json(&m));
        }
        SecretCommand::Describe { secret } => {
            let m = client.describe_secret(&path(secret)).await?;
            out.emit(|| describe_text(&m), || metadata_json(&m));
        }
        SecretCommand::List { tenant, env } => {
            let list = client.list_secrets(tenant, env.map(Env::into)).await?;
            out.emit(
                || {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|m| {
                            let secret = m.secret.clone().unwrap_or_default();
                            let current =
                                m.versions.iter().find(|v| v.version == m.current_version);
                            vec![
                                env_name(secret.environment).to_owned(),
                                secret.name,
                                kind_name(m.kind).to_owned(),
                                m.current_version.to_string(),
                                current.map(|v| unix(v.created_unix)).unwrap_or_default(),
                                current.map(|v| v.hint.clone()).unwrap_or_default(),
                            ]
                        })
                        .collect();
                    if rows.is_empty() {
                        format!("tenant {tenant} has no secrets")
                    } else {
                        table(
                            &["ENV", "NAME", "KIND", "VERSION", "UPDATED", "HINT"],
                            &rows,
                        )
                    }
                },
                || json!({ "secrets": list.iter().map(metadata_json).collect::<Vec<_>>() }),
            );
        }
        SecretCommand::Delete { secret } => {
            client.delete_secret(&path(secret)).await?;
            out.emit(
                || {
                    format!(
                        "deleted {}/{}/{} and every version; its leases were revoked",
                        secret.tenant,
                        secret.env_str(),
                        secret.name
                    )
                },
                || json!({ "deleted": true }),
            );
        }
    }
    Ok(())
}

impl SecretArgs {
    fn env_str(&self) -> &'static str {
        self.env.0.as_str()
    }
}

pub(crate) async fn tenant(
    client: &Client,
    command: &TenantCommand,
    out: Output,
) -> Result<(), CliError> {
    match command {
        TenantCommand::Erase { tenant, confirm } => erase(client, tenant, confirm, out).await,
        TenantCommand::RotateKey { tenant } => {
            let keys = client.rotate_tenant_key(tenant).await?;
            print_keys(&keys, Some("rotated: "), out);
            Ok(())
        }
        TenantCommand::Keys { tenant } => {
            print_keys(&client.describe_tenant_keys(tenant).await?, None, out);
            Ok(())
        }
        TenantCommand::RetireKeys { tenant, below } => {
            let keys = client.retire_tenant_keys(tenant, *below).await?;
            print_keys(&keys, Some("retired: "), out);
            Ok(())
        }
        TenantCommand::Export { tenant, out: file } => {
            super::breakglass::export(client, tenant, file.as_deref()).await
        }
    }
}

async fn erase(client: &Client, tenant: &str, confirm: &str, out: Output) -> Result<(), CliError> {
    if confirm != tenant {
        return Err(CliError::invalid(
            "--confirm must repeat the tenant id exactly",
        ));
    }
    let receipt = client.erase_tenant(tenant, confirm).await?;
    out.emit(
        || {
            format!(
                "erased tenant {}: {} secrets, tenant key versions {:?} destroyed at {}; the receipt is in the audit log",
                receipt.tenant,
                receipt.secrets_erased,
                receipt.key_versions,
                unix(receipt.erased_unix)
            )
        },
        || {
            json!({
                "tenant": receipt.tenant,
                "secrets_erased": receipt.secrets_erased,
                "key_versions": receipt.key_versions,
                "erased_unix": receipt.erased_unix,
            })
        },
    );
    Ok(())
}

/// A tenant's key versions: a line of summary, then a table.
fn print_keys(keys: &TenantKeys, done: Option<&str>, out: Output) {
    out.emit(
        || {
            let mut text = format!(
                "{}tenant {}: current key version {}{}",
                done.unwrap_or(""),
                keys.tenant,
                keys.current_version,
                if keys.min_decryption_version > 1 {
                    format!(", versions below {} retired", keys.min_decryption_version)
                } else {
                    String::new()
                }
            );
            let rows: Vec<Vec<String>> = keys
                .versions
                .iter()
                .map(|v| {
                    vec![
                        v.version.to_string(),
                        unix(v.created_unix),
                        v.encryptions.to_string(),
                        v.secret_versions.to_string(),
                    ]
                })
                .collect();
            text.push('\n');
            text.push_str(&table(
                &[
                    "VERSION",
                    "CREATED",
                    "ENCRYPTIONS (AT MOST)",
                    "SECRET VERSIONS",
                ],
                &rows,
            ));
            text
        },
        || {
            json!({
                "tenant": keys.tenant,
                "current_version": keys.current_version,
                "min_decryption_version": keys.min_decryption_version,
                "versions": keys.versions.iter().map(|v| json!({
                    "version": v.version,
                    "created_unix": v.created_unix,
                    "encryptions": v.encryptions,
                    "secret_versions": v.secret_versions,
                })).collect::<Vec<_>>(),
            })
        },
    );
}
