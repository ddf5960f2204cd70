//! Evaluation: deny wins, then the first matching grant or role; no match is deny.

use std::fmt;
use std::time::Duration;

use crate::pattern::{Captures, Pattern};
use crate::{Action, Deny, Operation, Permission, PolicySet, Rate, RuleRef, TenantRule};

/// A service's request for a broker operation.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The caller's verified identity (SPIFFE ID).
    pub identity: &'a str,
    /// The operation.
    pub operation: Operation,
    /// The tenant concerned.
    pub tenant: &'a str,
    /// `live` or `test`.
    pub environment: &'a str,
    /// The secret's name, for `lease`.
    pub secret: Option<&'a str>,
}

/// An admin's use of a permission, optionally about one tenant.
#[derive(Debug, Clone, Copy)]
pub struct PermissionRequest<'a> {
    /// The caller's verified identity.
    pub identity: &'a str,
    /// The permission used.
    pub permission: Permission,
    /// The tenant concerned, if any (tenant-scoped denies apply only then).
    pub tenant: Option<&'a str>,
    /// With no `tenant`: whether the request is about some tenant not known yet (a
    /// lookup before the target's tenant is read), which a role limited to tenants
    /// covers; the decision about the tenant itself follows. Otherwise the request
    /// concerns no tenant, and only roles for every tenant cover it.
    pub any_tenant: bool,
}

/// Why a rule did or did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The rule applied.
    Matched,
    /// No identity pattern matched the caller.
    Identity,
    /// The rule does not cover the operation or permission.
    Action,
    /// The rule does not cover the tenant.
    Tenant,
    /// The rule does not cover the environment.
    Environment,
    /// The rule does not cover the secret.
    Secret,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Matched => "matched",
            Self::Identity => "identity does not match",
            Self::Action => "does not cover this operation or permission",
            Self::Tenant => "does not cover this tenant",
            Self::Environment => "does not cover this environment",
            Self::Secret => "does not cover this secret",
        })
    }
}

/// One rule's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The rule.
    pub rule: RuleRef,
    /// Whether it applied, or the first reason it did not.
    pub outcome: Outcome,
}

/// The answer to a request, with the reasoning behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// The rule that decided: the matching deny, or the grant or role that allowed.
    /// `None` when nothing matched (default deny).
    pub decided_by: Option<RuleRef>,
    /// The deciding grant's `max_ttl`, if allowed by one that sets it.
    pub max_ttl: Option<Duration>,
    /// The deciding grant's `max_active_leases`, if set.
    pub max_active_leases: Option<u32>,
    /// Whether the deciding grant lets transit create a tenant's key on first use.
    pub create_tenant_keys: bool,
    /// The deciding grant's request rates, if it sets them.
    pub rate: Option<Rate>,
    /// Whether the deciding grant refuses requests at the highest anomaly level.
    pub throttle_anomalies: bool,
    /// Every rule considered, in order, and why it did or did not apply.
    pub trace: Vec<Trace>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.decided_by, self.allowed) {
            (Some(rule), true) => writeln!(f, "ALLOW by {} {:?}", rule.kind, rule.id)?,
            (Some(rule), false) => writeln!(f, "DENY by {} {:?}", rule.kind, rule.id)?,
            (None, _) => writeln!(f, "DENY: no grant or role matched (default deny)")?,
        }
        for t in &self.trace {
            writeln!(
                f,
                "  {} {:?} ({}:{}): {}",
                t.rule.kind,
                t.rule.id,
                t.rule.file.display(),
                t.rule.line,
                t.outcome
            )?;
        }
        Ok(())
    }
}

fn identity_captures(patterns: &[Pattern], identity: &str) -> Option<Captures> {
    patterns.iter().find_map(|p| p.matches(identity))
}

fn tenant_ok(rules: &[TenantRule], tenant: &str, captures: &Captures) -> bool {
    rules.iter().any(|r| match r {
        TenantRule::Pattern(p) => p.matches(tenant).is_some(),
        TenantRule::Capture(name) => captures.get(name).is_some_and(|c| c == tenant),
    })
}

fn secret_ok(patterns: &[Pattern], secret: Option<&str>) -> bool {
    secret.is_some_and(|s| patterns.iter().any(|p| p.matches(s).is_some()))
}

impl Deny {
    /// Whether this deny applies. Unset filters cover everything; a tenant, environment
    /// or secret filter applies only when the request has that attribute.
    fn check(
        &self,
        identity: &str,
        action: Action,
        tenant: Option<&str>,
        environment: Option<&str>,
        secret: Option<&str>,
    ) -> Outcome {
        let Some(captures) = identity_captures(&self.identities, identity) else {
            return Outcome::Identity;
        };
        if !self.actions.contains(&action) {
            return Outcome::Action;
        }
        if let (Some(rules), Some(t)) = (&self.tenants, tenant)
            && !tenant_ok(rules, t, &captures)
        {
            return Outcome::Tenant;
        }
        if let (Some(envs), Some(e)) = (&self.environments, environment)
            && !envs.contains(e)
        {
            return Outcome::Environment;
        }
        if let (Some(patterns), Some(_)) = (&self.secrets, secret)
            && !secret_ok(patterns, secret)
        {
            return Outcome::Secret;
        }
        Outcome::Matched
    }
}

impl PolicySet {
    fn denies_for(
        &self,
        trace: &mut Vec<Trace>,
        identity: &str,
        action: Action,
        (tenant, environment, secret): (Option<&str>, Option<&str>, Option<&str>),
    ) -> Option<Decision> {
        for deny in &self.denies {
            let outcome = deny.check(identity, action, tenant, environment, secret);
            trace.push(Trace {
                rule: deny.rule.clone(),
                outcome,
            });
            if outcome == Outcome::Matched {
                return Some(Decision {
                    allowed: false,
                    decided_by: Some(deny.rule.clone()),
                    max_ttl: None,
                    max_active_leases: None,
                    create_tenant_keys: false,
                    rate: None,
                    throttle_anomalies: false,
                    trace: std::mem::take(trace),
                });
            }
        }
        None
    }

    /// Whether `identity` may make `operation` for some tenant and environment: a
    /// grant names it and no deny covers it everywhere. Tells a caller that may verify
    /// API keys at all from one that may not, before the key's tenant is known.
    pub fn grants_somewhere(&self, identity: &str, operation: Operation) -> bool {
        let action = Action::Operation(operation);
        let denied_everywhere = self.denies.iter().any(|d| {
            d.tenants.is_none()
                && d.environments.is_none()
                && d.secrets.is_none()
                && d.check(identity, action, None, None, None) == Outcome::Matched
        });
        !denied_everywhere
            && self.grants.iter().any(|g| {
                g.operations.contains(&operation)
                    && identity_captures(&g.identities, identity).is_some()
            })
    }

    /// Decides a broker request.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let mut trace = Vec::new();
        let context = (Some(req.tenant), Some(req.environment), req.secret);
        let action = Action::Operation(req.operation);
        if let Some(denied) = self.denies_for(&mut trace, req.identity, action, context) {
            return denied;
        }
        for grant in &self.grants {
            let outcome = match identity_captures(&grant.identities, req.identity) {
                None => Outcome::Identity,
                Some(_) if !grant.operations.contains(&req.operation) => Outcome::Action,
                Some(c) if !tenant_ok(&grant.tenants, req.tenant, &c) => Outcome::Tenant,
                Some(_) if !grant.environments.contains(req.environment) => Outcome::Environment,
                Some(_) => match &grant.secrets {
                    Some(patterns)
                        if req.operation == Operation::Lease
                            && !secret_ok(patterns, req.secret) =>
                    {
                        Outcome::Secret
                    }
                    _ => Outcome::Matched,
                },
            };
            trace.push(Trace {
                rule: grant.rule.clone(),
                outcome,
            });
            if outcome == Outcome::Matched {
                return Decision {
                    allowed: true,
                    decided_by: Some(grant.rule.clone()),
                    max_ttl: grant.max_ttl,
                    max_active_leases: grant.max_active_leases,
                    create_tenant_keys: grant.create_tenant_keys,
                    rate: grant.rate,
                    throttle_anomalies: grant.throttle_anomalies,
                    trace,
                };
            }
        }
        denied_by_default(trace)
    }

    /// Decides an admin's use of a permission.
    pub fn authorize(&self, req: &PermissionRequest<'_>) -> Decision {
        let mut trace = Vec::new();
        let action = Action::Permission(req.permission);
        let context = (req.tenant, None, None);
        if let Some(denied) = self.denies_for(&mut trace, req.identity, action, context) {
            return denied;
        }
        for role in &self.roles {
            let outcome = match identity_captures(&role.identities, req.identity) {
                None => Outcome::Identity,
                Some(_) if !role.permissions.contains(&req.permission) => Outcome::Action,
                Some(captures) => match (&role.tenants, req.tenant) {
                    (None, _) => Outcome::Matched,
                    (Some(rules), Some(tenant)) if tenant_ok(rules, tenant, &captures) => {
                        Outcome::Matched
                    }
                    (Some(_), None) if req.any_tenant => Outcome::Matched,
                    (Some(_), _) => Outcome::Tenant,
                },
            };
            trace.push(Trace {
                rule: role.rule.clone(),
                outcome,
            });
            if outcome == Outcome::Matched {
                return Decision {
                    allowed: true,
                    decided_by: Some(role.rule.clone()),
                    max_ttl: None,
                    max_active_leases: None,
                    create_tenant_keys: false,
                    rate: None,
                    throttle_anomalies: false,
                    trace,
                };
            }
        }
        denied_by_default(trace)
    }
}

fn denied_by_default(trace: Vec<Trace>) -> Decision {
    Decision {
        allowed: false,
        decided_by: None,
        max_ttl: None,
        max_active_leases: None,
        create_tenant_keys: false,
        rate: None,
        throttle_anomalies: false,
        trace,
    }
}
