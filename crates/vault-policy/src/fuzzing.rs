//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay tests: not
//! an API. [`policy`] takes the fuzzer's bytes as a policy document, loads it the way
//! a file of the policy directory is loaded, and evaluates requests against it,
//! panicking only when a property the language promises is broken (deny wins, no
//! match denies, the deciding rule is the one the trace ends with).

use std::path::Path;

use crate::action::operation_names;
use crate::load::parse_into;
use crate::{
    Decision, MAX_TTL, Operation, Outcome, Permission, PermissionRequest, PolicySet, Request,
    RuleKind,
};

/// Identities evaluated against every document: the repo's example services and
/// admins, a test worker the example denies, and one that no document is likely to
/// name.
const IDENTITIES: [&str; 5] = [
    "spiffe://billing.example/svc/gateway",
    "spiffe://billing.example/tenant/acme/svc/worker",
    "spiffe://billing.example/tenant/acme/svc/worker-test",
    "spiffe://billing.example/human/admin/alice",
    "",
];
const TENANTS: [&str; 2] = ["acme", "globex"];
const ENVIRONMENTS: [&str; 2] = ["live", "test"];
const SECRETS: [Option<&str>; 2] = [Some("byok/openai"), None];
/// Requests read from the input after the document, at most.
const MAX_EXTRA_REQUESTS: usize = 8;

/// `policy`: the document is `data` up to its first NUL byte (a TOML document cannot
/// contain one). What follows, if anything, is up to eight more requests, one per line:
/// `identity tenant environment secret`, separated by single spaces.
///
/// The document is parsed as one file, then as two files of the same directory (so
/// every rule id collides), and, if it loaded, every fixed and extra request is
/// evaluated as an operation and every permission authorised.
pub fn policy(data: &[u8]) {
    let (document, requests) = match data.iter().position(|b| *b == 0) {
        Some(at) => (data.get(..at).unwrap_or(&[]), data.get(at + 1..)),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(document) else {
        return;
    };
    let set = match PolicySet::parse(Path::new("fuzz.toml"), text) {
        Ok(set) => set,
        Err(error) => {
            // Messages name the file and line; making them must not fail either.
            let _ = error.to_string();
            let _ = std::error::Error::source(&error).map(ToString::to_string);
            return;
        }
    };
    twice(&set, text);

    for identity in IDENTITIES {
        for_each_request(&set, identity, &TENANTS, &ENVIRONMENTS, &SECRETS);
    }
    let extra = requests
        .and_then(|r| std::str::from_utf8(r).ok())
        .unwrap_or("");
    for line in extra.lines().take(MAX_EXTRA_REQUESTS) {
        let mut fields = line.split(' ');
        let identity = fields.next().unwrap_or("");
        let tenant = fields.next().unwrap_or("");
        let environment = fields.next().unwrap_or("");
        let secret = fields.next();
        for_each_request(&set, identity, &[tenant], &[environment], &[secret]);
        for action in fields {
            if let Some(decision) = set.explain(identity, action, tenant, environment, secret) {
                let _ = decision.to_string();
            }
        }
    }
}

/// Loads `text` as two files of one directory, as `load_dir` would: every rule id of
/// the second is then taken, so a document with rules must be refused.
fn twice(set: &PolicySet, text: &str) {
    let mut both = PolicySet::default();
    parse_into(&mut both, Path::new("a.toml"), text).expect("a document that parsed parses");
    let second = parse_into(&mut both, Path::new("b.toml"), text);
    let (grants, denies, roles) = set.counts();
    assert_eq!(
        second.is_ok(),
        grants + denies + roles == 0,
        "the same rule ids in two files are refused, and only then"
    );
}

fn for_each_request(
    set: &PolicySet,
    identity: &str,
    tenants: &[&str],
    environments: &[&str],
    secrets: &[Option<&str>],
) {
    for &tenant in tenants {
        for operation in operation_names().filter_map(Operation::parse) {
            for &environment in environments {
                for &secret in secrets {
                    let decision = set.evaluate(&Request {
                        identity,
                        operation,
                        tenant,
                        environment,
                        secret,
                    });
                    check(&decision, RuleKind::Grant);
                }
            }
        }
        for name in Permission::names() {
            let permission = Permission::parse(name).expect("every listed permission parses");
            for (scope, any_tenant) in [(Some(tenant), false), (None, false), (None, true)] {
                let decision = set.authorize(&PermissionRequest {
                    identity,
                    permission,
                    tenant: scope,
                    any_tenant,
                });
                check(&decision, RuleKind::Role);
            }
        }
    }
}

/// What every decision must satisfy: it is decided by the last rule of its trace,
/// which matched; an allow comes from a grant (or role), a refusal from a deny or from
/// nothing at all; a matched deny is never overridden.
fn check(decision: &Decision, allowing: RuleKind) {
    let last = decision.trace.last();
    match &decision.decided_by {
        Some(rule) => {
            let last = last.expect("a deciding rule is in the trace");
            assert_eq!(&last.rule, rule, "the trace ends with the deciding rule");
            assert_eq!(last.outcome, Outcome::Matched);
            let expected = if decision.allowed {
                allowing
            } else {
                RuleKind::Deny
            };
            assert_eq!(rule.kind, expected);
        }
        None => {
            assert!(!decision.allowed, "no match is a denial");
            assert!(
                decision.trace.iter().all(|t| t.outcome != Outcome::Matched),
                "nothing matched when nothing decided"
            );
        }
    }
    let denied = decision
        .trace
        .iter()
        .any(|t| t.rule.kind == RuleKind::Deny && t.outcome == Outcome::Matched);
    assert!(!(denied && decision.allowed), "deny wins");
    if let Some(ttl) = decision.max_ttl {
        assert!(decision.allowed && ttl <= MAX_TTL);
    }
    assert!(
        decision.allowed || !decision.create_tenant_keys,
        "a refusal creates nothing"
    );
    let _ = decision.to_string();
}
