//! Reading policy documents: TOML in, validated rules out, or an error naming the
//! file, the line and the reason.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::action::{Action, Operation, Permission, operation_names};
use crate::pattern::{Pattern, PatternError};
use crate::{Deny, Grant, PolicySet, Rate, Role, RuleKind, RuleRef, TenantRule};

/// Why a policy file was rejected. The whole set is rejected with it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}{}: {kind}",
    file.display(),
    match line { 0 => String::new(), n => format!(":{n}") }
)]
pub struct PolicyError {
    /// The file (or directory) at fault.
    pub file: PathBuf,
    /// 1-based line of the offending rule or value; 0 when it concerns the whole file.
    pub line: usize,
    /// What is wrong.
    #[source]
    pub kind: PolicyErrorKind,
}

/// What is wrong with a policy file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// The file or directory could not be read.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// The directory holds no `*.toml` file; with no policy every request would be
    /// denied, which is refused rather than assumed.
    #[error("no *.toml policy files found")]
    NoPolicies,
    /// Not valid TOML, or a field is unknown, missing or of the wrong type.
    #[error("{}", .0.message())]
    Syntax(#[source] toml::de::Error),
    /// An operation name that does not exist.
    #[error("unknown operation {0:?}; grants may name: {ops}", ops = operation_names().collect::<Vec<_>>().join(", "))]
    UnknownOperation(String),
    /// A permission name that does not exist.
    #[error("unknown permission {0:?}; roles may name: {perms}", perms = Permission::names().collect::<Vec<_>>().join(", "))]
    UnknownPermission(String),
    /// A role limited to tenants names a permission that acts on no one tenant, which
    /// it could therefore never give.
    #[error(
        "permission {0:?} does not act on one tenant, so a role limited to tenants never gives it; \
         such a role may name: {perms}",
        perms = Permission::PER_TENANT.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
    )]
    NotPerTenant(String),
    /// A deny names neither an operation nor a permission.
    #[error("unknown action {0:?}: name an operation or a permission")]
    UnknownAction(String),
    /// A pattern does not compile.
    #[error("bad pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// Why.
        #[source]
        source: PatternError,
    },
    /// An environment other than `live`, `test` or `*`.
    #[error("unknown environment {0:?}: use live, test or *")]
    Environment(String),
    /// `tenants` refers to a capture that some identity pattern does not define.
    #[error("tenant {{{capture}}} is not captured by identity pattern {identity:?}")]
    UnboundCapture {
        /// The capture name.
        capture: String,
        /// The identity pattern lacking it.
        identity: String,
    },
    /// A grant of `lease` without `secrets`.
    #[error("a grant of \"lease\" must list the secrets it covers in `secrets`")]
    MissingSecrets,
    /// A duration that does not parse.
    #[error("bad duration {0:?}: use a number followed by s, m, h or d, e.g. \"90s\" or \"5m\"")]
    Duration(String),
    /// A `max_ttl` beyond [`MAX_TTL`].
    #[error("max_ttl {0:?} is longer than 30 days; leases are meant to be short")]
    TtlTooLong(String),
    /// Two rules share an id.
    #[error("rule id {0:?} is used twice")]
    DuplicateId(String),
    /// A list that must not be empty is empty.
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    grant: Vec<Spanned<GrantDoc>>,
    #[serde(default)]
    deny: Vec<Spanned<DenyDoc>>,
    #[serde(default)]
    role: Vec<Spanned<RoleDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantDoc {
    id: String,
    identities: Vec<String>,
    operations: Vec<String>,
    tenants: Vec<String>,
    environments: Vec<String>,
    secrets: Option<Vec<String>>,
    max_ttl: Option<String>,
    max_active_leases: Option<u32>,
    #[serde(default)]
    create_tenant_keys: bool,
    rate: Option<Rate>,
    #[serde(default)]
    throttle_anomalies: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyDoc {
    id: String,
    identities: Vec<String>,
    actions: Vec<String>,
    tenants: Option<Vec<String>>,
    environments: Option<Vec<String>>,
    secrets: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleDoc {
    id: String,
    identities: Vec<String>,
    permissions: Vec<String>,
    tenants: Option<Vec<String>>,
}

/// Parses one file's text into `set`.
pub(crate) fn parse_into(set: &mut PolicySet, file: &Path, text: &str) -> Result<(), PolicyError> {
    let at = |line: usize| {
        move |kind: PolicyErrorKind| PolicyError {
            file: file.to_path_buf(),
            line,
            kind,
        }
    };
    let line_of = |offset: usize| {
        text.get(..offset).map_or(1, |before| {
            before.bytes().filter(|b| *b == b'\n').count() + 1
        })
    };
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(s.start));
        at(line)(PolicyErrorKind::Syntax(e))
    })?;
    for grant in doc.grant {
        let line = line_of(grant.span().start);
        let rule = compile_grant(grant.into_inner(), file, line).map_err(at(line))?;
        set.push_grant(rule).map_err(at(line))?;
    }
    for deny in doc.deny {
        let line = line_of(deny.span().start);
        let rule = compile_deny(deny.into_inner(), file, line).map_err(at(line))?;
        set.push_deny(rule).map_err(at(line))?;
    }
    for role in doc.role {
        let line = line_of(role.span().start);
        let rule = compile_role(role.into_inner(), file, line).map_err(at(line))?;
        set.push_role(rule).map_err(at(line))?;
    }
    Ok(())
}

/// Reads every `*.toml` file of `dir`, in name order.
pub(crate) fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
    let whole = |kind| PolicyError {
        file: dir.to_path_buf(),
        line: 0,
        kind,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| whole(PolicyErrorKind::Read(e)))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(whole(PolicyErrorKind::NoPolicies));
    }
    let mut set = PolicySet::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| PolicyError {
            file: file.clone(),
            line: 0,
            kind: PolicyErrorKind::Read(e),
        })?;
        parse_into(&mut set, &file, &text)?;
    }
    Ok(set)
}

fn rule_ref(kind: RuleKind, id: String, file: &Path, line: usize) -> RuleRef {
    RuleRef {
        kind,
        id,
        file: file.to_path_buf(),
        line,
    }
}

fn patterns(list: &[String], field: &'static str) -> Result<Vec<Pattern>, PolicyErrorKind> {
    if list.is_empty() {
        return Err(PolicyErrorKind::Empty(field));
    }
    list.iter()
        .map(|p| {
            Pattern::parse(p).map_err(|source| PolicyErrorKind::Pattern {
                pattern: p.clone(),
                source,
            })
        })
        .collect()
}

/// Parses a non-empty list of operation or permission names.
fn names<T: Ord>(
    list: &[String],
    field: &'static str,
    parse: impl Fn(&str) -> Option<T>,
    unknown: impl Fn(String) -> PolicyErrorKind,
) -> Result<BTreeSet<T>, PolicyErrorKind> {
    if list.is_empty() {
        return Err(PolicyErrorKind::Empty(field));
    }
    list.iter()
        .map(|name| parse(name).ok_or_else(|| unknown(name.clone())))
        .collect()
}

fn environments(list: &[String]) -> Result<BTreeSet<String>, PolicyErrorKind> {
    if list.is_empty() {
        return Err(PolicyErrorKind::Empty("environments"));
    }
    let mut out = BTreeSet::new();
    for env in list {
        match env.as_str() {
            "*" => {
                out.insert("live".to_owned());
                out.insert("test".to_owned());
            }
            "live" | "test" => {
                out.insert(env.clone());
            }
            other => return Err(PolicyErrorKind::Environment(other.to_owned())),
        }
    }
    Ok(out)
}

fn tenants(list: &[String], identities: &[Pattern]) -> Result<Vec<TenantRule>, PolicyErrorKind> {
    patterns(list, "tenants")?
        .into_iter()
        .map(|p| match p.as_capture_reference() {
            Some(capture) => {
                if let Some(identity) = identities
                    .iter()
                    .find(|i| !i.capture_names().any(|n| n == capture))
                {
                    return Err(PolicyErrorKind::UnboundCapture {
                        capture: capture.to_owned(),
                        identity: identity.as_str().to_owned(),
                    });
                }
                Ok(TenantRule::Capture(capture.to_owned()))
            }
            None => Ok(TenantRule::Pattern(p)),
        })
        .collect()
}

/// Parses `90s`, `5m`, `2h`, `1d`.
/// The longest `max_ttl` a grant may set.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

fn compile_grant(doc: GrantDoc, file: &Path, line: usize) -> Result<Grant, PolicyErrorKind> {
    let identities = patterns(&doc.identities, "identities")?;
    let operations = names(
        &doc.operations,
        "operations",
        Operation::parse,
        PolicyErrorKind::UnknownOperation,
    )?;
    let secrets = match &doc.secrets {
        Some(list) => Some(patterns(list, "secrets")?),
        None if operations.contains(&Operation::Lease) => {
            return Err(PolicyErrorKind::MissingSecrets);
        }
        None => None,
    };
    let max_ttl = doc
        .max_ttl
        .as_deref()
        .map(|t| match humantime::parse_duration(t) {
            Err(_) => Err(PolicyErrorKind::Duration(t.to_owned())),
            Ok(d) if d > MAX_TTL => Err(PolicyErrorKind::TtlTooLong(t.to_owned())),
            Ok(d) => Ok(d),
        })
        .transpose()?;
    Ok(Grant {
        tenants: tenants(&doc.tenants, &identities)?,
        environments: environments(&doc.environments)?,
        rule: rule_ref(RuleKind::Grant, doc.id, file, line),
        identities,
        operations,
        secrets,
        max_ttl,
        max_active_leases: doc.max_active_leases,
        create_tenant_keys: doc.create_tenant_keys,
        rate: doc.rate,
        throttle_anomalies: doc.throttle_anomalies,
    })
}

fn compile_deny(doc: DenyDoc, file: &Path, line: usize) -> Result<Deny, PolicyErrorKind> {
    let identities = patterns(&doc.identities, "identities")?;
    let actions = names(
        &doc.actions,
        "actions",
        Action::parse,
        PolicyErrorKind::UnknownAction,
    )?;
    Ok(Deny {
        tenants: doc
            .tenants
            .as_deref()
            .map(|t| tenants(t, &identities))
            .transpose()?,
        environments: doc.environments.as_deref().map(environments).transpose()?,
        secrets: doc
            .secrets
            .as_deref()
            .map(|s| patterns(s, "secrets"))
            .transpose()?,
        rule: rule_ref(RuleKind::Deny, doc.id, file, line),
        identities,
        actions,
    })
}

fn compile_role(doc: RoleDoc, file: &Path, line: usize) -> Result<Role, PolicyErrorKind> {
    let identities = patterns(&doc.identities, "identities")?;
    let permissions = names(
        &doc.permissions,
        "permissions",
        Permission::parse,
        PolicyErrorKind::UnknownPermission,
    )?;
    let tenants = doc
        .tenants
        .as_deref()
        .map(|t| tenants(t, &identities))
        .transpose()?;
    if tenants.is_some()
        && let Some(global) = permissions.iter().find(|p| !p.per_tenant())
    {
        return Err(PolicyErrorKind::NotPerTenant(global.as_str().to_owned()));
    }
    Ok(Role {
        rule: rule_ref(RuleKind::Role, doc.id, file, line),
        identities,
        permissions,
        tenants,
    })
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleKind::Grant => "grant",
            RuleKind::Deny => "deny",
            RuleKind::Role => "role",
        })
    }
}
