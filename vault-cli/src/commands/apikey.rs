//! Platform API keys: issue and rotate (the new key shown once), verify (the key read
//! from stdin or a hidden prompt, never an argument), revoke, list.
//!
//! Output rule for a new key: the key is written exactly once, alone, to stdout (the
//! key and a newline, nothing else) or to a new --out file created with mode 0600.
//! Everything else — what vaultd keeps of the key — goes to stderr, as JSON with
//! --json. So `KEY=$(vaultctl apikey issue …)` and `… > key.txt` capture the key and
//! nothing but the key, and no JSON document, log line or error ever holds it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};
use vault_client::proto::{ApiKeyInfo, ApiKeyState};
use vault_client::{
    ApiKeyRate, ApiKeySpec, ApiKeyText, Client, Environment, ExposeSecret, VerifiedKey,
};
use zeroize::Zeroizing;

use crate::cli::{ApiKeyCommand, Env, Global, IssueKeyArgs, KeyOutput};
use crate::error::{CliError, Exit};
use crate::input;
use crate::output::{Output, env_name, table, time};

pub(crate) async fn run(
    client: &Client,
    command: &ApiKeyCommand,
    out: Output,
) -> Result<(), CliError> {
    match command {
        ApiKeyCommand::Issue(args) => {
            let spec = spec(args)?;
            let sink = KeySink::prepare(&args.output)?;
            let issued = client.issue_api_key(&spec).await;
            deliver(sink, issued, "issued", out)
        }
        ApiKeyCommand::Rotate {
            key_id,
            grace,
            output,
        } => {
            let grace = grace.as_deref().map(input::duration).transpose()?;
            let sink = KeySink::prepare(output)?;
            let issued = client.rotate_api_key(key_id, grace).await;
            deliver(sink, issued, "rotated: issued the successor", out)
        }
        ApiKeyCommand::Verify { env, scope, cost } => {
            let key = read_key()?;
            // The environment the request is for; by default the key's own, so a key
            // is checked as it would be used.
            let environment = env
                .map(Environment::from)
                .or_else(|| key.environment())
                .unwrap_or(Environment::Live);
            let verified = client
                .verify_api_key(&key, environment, scope.as_deref(), *cost)
                .await?;
            out.emit(|| verified_text(&verified), || verified_json(&verified));
            Ok(())
        }
        ApiKeyCommand::Revoke { key_id } => {
            let info = client.revoke_api_key(key_id).await?;
            out.emit(
                || {
                    format!(
                        "revoked key {} of tenant {} ({}): vaultd refuses it from now on, and verifiers were told",
                        info.key_id,
                        info.tenant,
                        env_name(info.environment)
                    )
                },
                || info_json(&info),
            );
            Ok(())
        }
        ApiKeyCommand::List { tenant, env } => {
            let keys = client.list_api_keys(tenant, env.map(Env::into)).await?;
            out.emit(
                || list_text(tenant, &keys),
                || json!({ "keys": keys.iter().map(info_json).collect::<Vec<_>>() }),
            );
            Ok(())
        }
    }
}

/// Refuses an API key given where the client key file goes (`--key`, the global
/// option for the TLS key): it would be read as a path and echoed in the error. The
/// key is not repeated here.
pub(crate) fn refuse_key_as_argument(global: &Global) -> Result<(), CliError> {
    let looks_like_a_key = global
        .key
        .as_deref()
        .and_then(Path::to_str)
        .is_some_and(|k| k.starts_with("vk_live_") || k.starts_with("vk_test_"));
    if looks_like_a_key {
        return Err(CliError::invalid(
            "--key names your client key file (VAULTD_CLIENT_KEY), not an API key",
        )
        .hint("an API key is read from stdin or a hidden prompt; the one on the command line is visible to other users: rotate it (`vaultctl apikey rotate`)"));
    }
    Ok(())
}

/// What `apikey issue` asks vaultd for.
fn spec(args: &IssueKeyArgs) -> Result<ApiKeySpec, CliError> {
    let mut spec = ApiKeySpec::new(args.tenant.clone(), args.env.into());
    spec.scopes.clone_from(&args.scopes);
    spec.rate = match (&args.tier, args.burst, args.per_minute, args.per_day) {
        (Some(tier), ..) => ApiKeyRate::Tier(tier.clone()),
        (None, Some(burst), Some(per_minute), Some(per_day)) => ApiKeyRate::Limits {
            burst,
            per_minute,
            per_day,
        },
        // The command line takes the three limits together or not at all.
        _ => ApiKeyRate::DefaultTier,
    };
    spec.daily_quota = args.daily_quota.unwrap_or(0);
    if let Some(text) = &args.expires_in {
        let after = input::duration(text)?;
        spec.expires_at = Some(SystemTime::now().checked_add(after).ok_or_else(|| {
            CliError::invalid(format!("--expires-in {text:?} is too far in the future"))
        })?);
    }
    spec.label = args.label.clone().unwrap_or_default();
    Ok(spec)
}

/// Where a new key goes, settled before vaultd makes it: the key exists once, so a
/// file that cannot be created fails the command before a key is issued.
enum KeySink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl KeySink {
    fn prepare(output: &KeyOutput) -> Result<Self, CliError> {
        let Some(path) = &output.out else {
            return Ok(KeySink::Stdout);
        };
        let file = input::create_private(path, "a key file")?;
        Ok(KeySink::File {
            path: path.clone(),
            file,
        })
    }

    /// No key was issued: the empty file goes.
    fn abandon(self) {
        if let KeySink::File { path, file } = self {
            drop(file);
            let _ = std::fs::remove_file(path);
        }
    }

    /// Writes the key, once, straight from its zeroising buffer. A key that cannot be
    /// written is not shown anywhere else: it is revoked and issued again instead.
    fn write(self, key: &ApiKeyText, key_id: &str) -> Result<Option<PathBuf>, CliError> {
        let lost = |e: std::io::Error| {
            CliError::new(
                Exit::Failure,
                format!("the new key {key_id} could not be written: {e}"),
            )
            .hint(format!(
                "nobody holds it: revoke it (`vaultctl apikey revoke {key_id}`) and issue another"
            ))
        };
        let text = key.expose_secret().as_bytes();
        match self {
            KeySink::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(text)
                    .and_then(|()| stdout.write_all(b"\n"))
                    .and_then(|()| stdout.flush())
                    .map_err(lost)?;
                Ok(None)
            }
            KeySink::File { path, mut file } => {
                let written = file
                    .write_all(text)
                    .and_then(|()| file.write_all(b"\n"))
                    .and_then(|()| file.sync_all());
                if let Err(e) = written {
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                    return Err(lost(e));
                }
                Ok(Some(path))
            }
        }
    }
}

/// Hands out a key vaultd issued (or cleans up if it did not), then reports what is
/// kept of it on stderr.
fn deliver(
    sink: KeySink,
    issued: Result<(ApiKeyText, ApiKeyInfo), vault_client::Error>,
    done: &str,
    out: Output,
) -> Result<(), CliError> {
    let (key, info) = match issued {
        Ok(issued) => issued,
        Err(e) => {
            sink.abandon();
            return Err(e.into());
        }
    };
    let written_to = sink.write(&key, &info.key_id)?;
    drop(key);
    if out.json {
        let mut body = info_json(&info);
        if let Some(fields) = body.as_object_mut() {
            fields.insert("written_to".into(), json!(written_to));
        }
        eprintln!("{body}");
    } else {
        eprintln!("{}", issued_text(&info, done, written_to.as_deref()));
    }
    Ok(())
}

/// Reads the key to verify: one line from stdin, or typed at a hidden prompt.
fn read_key() -> Result<ApiKeyText, CliError> {
    let line = input::hidden_line("API key (input hidden): ")?;
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Err(CliError::invalid("no API key was given").hint(
            "pipe it on stdin, e.g. `vaultctl apikey verify < key.txt`, or type it at the prompt",
        ));
    }
    if trimmed.len() == line.len() {
        return Ok(ApiKeyText::new(line));
    }
    // Copied once, into a buffer sized up front; the line is wiped when it drops.
    let mut key = Zeroizing::new(String::with_capacity(trimmed.len()));
    key.push_str(trimmed);
    Ok(ApiKeyText::new(key))
}

fn state_name(state: i32) -> &'static str {
    match ApiKeyState::try_from(state) {
        Ok(ApiKeyState::Active) => "active",
        Ok(ApiKeyState::Rotated) => "rotated",
        Ok(ApiKeyState::Revoked) => "revoked",
        Ok(ApiKeyState::Expired) => "expired",
        _ => "?",
    }
}

fn positive(seconds: i64) -> Option<i64> {
    (seconds > 0).then_some(seconds)
}

fn info_json(info: &ApiKeyInfo) -> Value {
    let limits = info.limits.unwrap_or_default();
    json!({
        "key_id": info.key_id,
        "tenant": info.tenant,
        "environment": env_name(info.environment),
        "scopes": info.scopes,
        "hint": info.hint,
        "tier": (!info.tier.is_empty()).then_some(&info.tier),
        "limits": {
            "burst": limits.burst,
            "per_minute": limits.per_minute,
            "per_day": limits.per_day,
        },
        "daily_quota": (info.daily_quota > 0).then_some(info.daily_quota),
        "used_today": info.used_today,
        "state": state_name(info.state),
        "created_unix": info.created_unix,
        "expires_unix": positive(info.expires_unix),
        "grace_until_unix": positive(info.grace_until_unix),
        "successor": (!info.successor.is_empty()).then_some(&info.successor),
        "label": (!info.label.is_empty()).then_some(&info.label),
    })
}

fn scopes_text(scopes: &[String]) -> String {
    match scopes.is_empty() {
        true => "none".to_owned(),
        false => scopes.join(", "),
    }
}

fn limits_text(info: &ApiKeyInfo) -> String {
    let limits = info.limits.unwrap_or_default();
    let n = |v: u32| match v {
        0 => "unlimited".to_owned(),
        v => v.to_string(),
    };
    let windows = format!(
        "{} per 10 s, {} per minute, {} per day",
        n(limits.burst),
        n(limits.per_minute),
        n(limits.per_day)
    );
    match info.tier.is_empty() {
        true => windows,
        false => format!("tier {} ({windows})", info.tier),
    }
}

fn issued_text(info: &ApiKeyInfo, done: &str, written_to: Option<&Path>) -> String {
    let quota = match info.daily_quota {
        0 => "none".to_owned(),
        units => format!("{units} units per UTC day"),
    };
    let expires = positive(info.expires_unix).map_or("never".to_owned(), time);
    let mut text = format!(
        "{done} {} (key id {}) for tenant {} in {}\n  scopes: {}\n  limits: {}\n  daily quota: {quota}\n  expires: {expires}\n",
        info.hint,
        info.key_id,
        info.tenant,
        env_name(info.environment),
        scopes_text(&info.scopes),
        limits_text(info),
    );
    if !info.label.is_empty() {
        text.push_str(&format!("  label: {}\n", info.label));
    }
    text.push_str(&match written_to {
        Some(path) => format!(
            "the key is in {} (mode 0600), and nowhere else: vaultd keeps only a MAC of it",
            path.display()
        ),
        None => "the key above is shown once and stored nowhere: vaultd keeps only a MAC of it"
            .to_owned(),
    });
    text
}

fn verified_text(v: &VerifiedKey) -> String {
    let quota = v
        .quota_remaining
        .map_or("no daily quota".to_owned(), |left| {
            format!("{left} quota units left today")
        });
    format!(
        "valid: key {} of tenant {} ({})\n  scopes: {}\n  {quota}",
        v.key_id,
        v.tenant,
        v.environment,
        scopes_text(&v.scopes)
    )
}

fn verified_json(v: &VerifiedKey) -> Value {
    json!({
        "valid": true,
        "key_id": v.key_id,
        "tenant": v.tenant,
        "environment": v.environment.as_str(),
        "scopes": v.scopes,
        "quota_remaining": v.quota_remaining,
    })
}

fn list_text(tenant: &str, keys: &[ApiKeyInfo]) -> String {
    if keys.is_empty() {
        return format!("tenant {tenant} has no API keys");
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let state = match (state_name(k.state), positive(k.grace_until_unix)) {
                ("rotated", Some(until)) => {
                    format!("rotated to {}, valid until {}", k.successor, time(until))
                }
                (state, _) => state.to_owned(),
            };
            let quota = match k.daily_quota {
                0 => "-".to_owned(),
                daily => format!("{}/{daily}", k.used_today),
            };
            vec![
                k.key_id.clone(),
                env_name(k.environment).to_owned(),
                state,
                scopes_text(&k.scopes),
                quota,
                time(k.created_unix),
                positive(k.expires_unix).map_or("never".to_owned(), time),
                k.label.clone(),
            ]
        })
        .collect();
    table(
        &[
            "KEY ID",
            "ENV",
            "STATE",
            "SCOPES",
            "QUOTA TODAY",
            "CREATED",
            "EXPIRES",
            "LABEL",
        ],
        &rows,
    )
}
