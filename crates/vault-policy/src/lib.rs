//! vaultd's policy language: TOML documents of grants, denies and roles; parsed,
//! validated and evaluated here, purely, by both the daemon and `vaultctl policy`.
//!
//! - A **grant** lets service identities perform broker operations on tenants,
//!   environments and secrets, with limits (`max_ttl`, `max_active_leases`).
//! - A **deny** names identities and actions (operations or permissions) that are
//!   refused whatever any grant or role says: deny wins.
//! - A **role** gives admin permissions to identities.
//!
//! No match is a denial. Evaluation is deterministic: rules are considered in file
//! name order, then in order within a file, and the first matching grant supplies the
//! limits. The reference of the language is `policies/README.md`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod action;
mod eval;
// For the fuzz targets in fuzz/ and the corpus replay tests only; not an API.
#[doc(hidden)]
pub mod fuzzing;
mod load;
pub mod pattern;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use action::{Action, Operation, Permission};
pub use eval::{Decision, Outcome, PermissionRequest, Request, Trace};
pub use load::{MAX_TTL, PolicyError, PolicyErrorKind};
use pattern::Pattern;

/// Which kind of rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// `[[grant]]`
    Grant,
    /// `[[deny]]`
    Deny,
    /// `[[role]]`
    Role,
}

impl RuleKind {
    /// `grant`, `deny` or `role`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Grant => "grant",
            RuleKind::Deny => "deny",
            RuleKind::Role => "role",
        }
    }
}

/// Where a rule was written, to explain decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// Grant, deny or role.
    pub kind: RuleKind,
    /// The rule's id.
    pub id: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Its line.
    pub line: usize,
}

impl RuleRef {
    /// `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// How a grant or deny restricts tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TenantRule {
    /// A glob over the tenant id.
    Pattern(Pattern),
    /// The tenant must equal this capture of the caller's identity.
    Capture(String),
}

#[derive(Debug, Clone)]
struct Grant {
    rule: RuleRef,
    identities: Vec<Pattern>,
    operations: BTreeSet<Operation>,
    tenants: Vec<TenantRule>,
    environments: BTreeSet<String>,
    secrets: Option<Vec<Pattern>>,
    max_ttl: Option<Duration>,
    max_active_leases: Option<u32>,
    create_tenant_keys: bool,
    rate: Option<Rate>,
    throttle_anomalies: bool,
}

/// Request rates a grant allows its identity, in three windows; a zero leaves that
/// window unlimited. Counted per identity and grant over every request the grant
/// decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests in any 10 seconds.
    #[serde(default)]
    pub burst: u32,
    /// Requests in any minute.
    #[serde(default)]
    pub per_minute: u32,
    /// Requests in any 24 hours.
    #[serde(default)]
    pub per_day: u32,
}

#[derive(Debug, Clone)]
struct Deny {
    rule: RuleRef,
    identities: Vec<Pattern>,
    actions: BTreeSet<Action>,
    tenants: Option<Vec<TenantRule>>,
    environments: Option<BTreeSet<String>>,
    secrets: Option<Vec<Pattern>>,
}

#[derive(Debug, Clone)]
struct Role {
    rule: RuleRef,
    identities: Vec<Pattern>,
    permissions: BTreeSet<Permission>,
    /// `None`: every tenant, and permissions that concern none. `Some`: only these
    /// tenants (globs or a capture of the identity), and only per-tenant permissions.
    tenants: Option<Vec<TenantRule>>,
}

/// A validated set of policies.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    grants: Vec<Grant>,
    denies: Vec<Deny>,
    roles: Vec<Role>,
    files: BTreeSet<PathBuf>,
}

impl PolicySet {
    /// Loads every `*.toml` file in `dir`. Any error rejects the whole set.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        load::load_dir(dir)
    }

    /// Parses one document; `file` names it in errors and explanations.
    pub fn parse(file: &Path, text: &str) -> Result<Self, PolicyError> {
        let mut set = Self::default();
        load::parse_into(&mut set, file, text)?;
        Ok(set)
    }

    /// Decides `action`, an operation (`lease`, …) or a permission (`seal`, …) named
    /// as text, the way `vaultctl policy check` and the daemon's `CheckPolicy` explain
    /// it: `environment` and `secret` matter to operations, `tenant` to both (an empty
    /// tenant means none, for permissions). `None` if the action names nothing.
    pub fn explain(
        &self,
        identity: &str,
        action: &str,
        tenant: &str,
        environment: &str,
        secret: Option<&str>,
    ) -> Option<Decision> {
        Some(match Action::parse(action)? {
            Action::Operation(operation) => self.evaluate(&Request {
                identity,
                operation,
                tenant,
                environment,
                secret,
            }),
            Action::Permission(permission) => self.authorize(&PermissionRequest {
                identity,
                permission,
                tenant: (!tenant.is_empty()).then_some(tenant),
                any_tenant: false,
            }),
        })
    }

    /// Number of rules of each kind: grants, denies, roles.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.grants.len(), self.denies.len(), self.roles.len())
    }

    fn check_unique(&mut self, rule: &RuleRef) -> Result<(), PolicyErrorKind> {
        let taken = self
            .grants
            .iter()
            .map(|g| &g.rule)
            .chain(self.denies.iter().map(|d| &d.rule))
            .chain(self.roles.iter().map(|r| &r.rule))
            .any(|r| r.id == rule.id);
        if taken {
            return Err(PolicyErrorKind::DuplicateId(rule.id.clone()));
        }
        self.files.insert(rule.file.clone());
        Ok(())
    }

    fn push_grant(&mut self, grant: Grant) -> Result<(), PolicyErrorKind> {
        self.check_unique(&grant.rule)?;
        self.grants.push(grant);
        Ok(())
    }

    fn push_deny(&mut self, deny: Deny) -> Result<(), PolicyErrorKind> {
        self.check_unique(&deny.rule)?;
        self.denies.push(deny);
        Ok(())
    }

    fn push_role(&mut self, role: Role) -> Result<(), PolicyErrorKind> {
        self.check_unique(&role.rule)?;
        self.roles.push(role);
        Ok(())
    }
}
