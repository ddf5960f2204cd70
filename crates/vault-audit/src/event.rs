//! What one audit record says about one request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One audited event. Never holds a value, share, key or API-key secret: every
/// field is a name, an identifier or a short reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The caller's identity, e.g. `spiffe://…` or `local:uid=0`.
    pub identity: String,
    /// The operation, e.g. `broker.lease` or `admin.unseal`.
    pub operation: String,
    /// The tenant the request concerned, if any.
    pub tenant: Option<String>,
    /// The environment the request concerned, if any.
    pub environment: Option<String>,
    /// The secret's name (never its value), if any.
    pub secret: Option<String>,
    /// The secret's version, if any.
    pub version: Option<u64>,
    /// The lease the request created or used, if any.
    pub lease_id: Option<String>,
    /// What was decided.
    pub decision: Decision,
    /// A short reason, e.g. `grant gateway-byok`, `default deny`, `sealed`.
    pub reason: String,
    /// The id of the rule that decided, if any.
    pub grant: Option<String>,
    /// The request's id, to correlate with logs and traces.
    pub request_id: String,
    /// Non-secret extras (erasure receipt fields and the like); omitted from the
    /// JSON when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, String>,
}

/// The outcome of a request, serialised in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The request was allowed.
    #[default]
    Allow,
    /// The request was denied.
    Deny,
    /// The request failed before a decision could take effect.
    Error,
}
