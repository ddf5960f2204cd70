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

/// The most bytes any string field of a record holds, truncation marker included:
/// what a caller sends can never make a record, or the log, grow past this per field.
pub const MAX_FIELD: usize = 256;
/// The most `detail` entries a record keeps; the rest are counted, not written.
pub const MAX_DETAIL: usize = 16;
const DETAIL_KEY: usize = 64;
const MARKER: &str = "…[truncated]";

impl Event {
    /// The event with every string cut to [`MAX_FIELD`] bytes (at a character
    /// boundary, ending in `…[truncated]`) and at most [`MAX_DETAIL`] detail entries
    /// (plus one, `truncated`, counting those dropped). Every append goes through
    /// this, so no caller's input can amplify the log.
    pub(crate) fn bounded(mut self) -> Self {
        for field in [
            &mut self.identity,
            &mut self.operation,
            &mut self.reason,
            &mut self.request_id,
        ] {
            truncate(field, MAX_FIELD);
        }
        for field in [
            &mut self.tenant,
            &mut self.environment,
            &mut self.secret,
            &mut self.lease_id,
            &mut self.grant,
        ]
        .into_iter()
        .flatten()
        {
            truncate(field, MAX_FIELD);
        }
        if self.detail.len() > MAX_DETAIL
            || self
                .detail
                .iter()
                .any(|(k, v)| k.len() > DETAIL_KEY || v.len() > MAX_FIELD)
        {
            let dropped = self.detail.len().saturating_sub(MAX_DETAIL);
            let mut kept: BTreeMap<String, String> = std::mem::take(&mut self.detail)
                .into_iter()
                .take(MAX_DETAIL)
                .map(|(mut k, mut v)| {
                    truncate(&mut k, DETAIL_KEY);
                    truncate(&mut v, MAX_FIELD);
                    (k, v)
                })
                .collect();
            if dropped > 0 {
                kept.insert("truncated".to_owned(), format!("{dropped} entries dropped"));
            }
            self.detail = kept;
        }
        self
    }
}

/// Cuts `text` to at most `max` bytes, marking the cut.
fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(MARKER.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARKER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_is_bounded_and_marked() {
        let long = "é".repeat(10_000); // two bytes a character: cuts must respect them
        let event = Event {
            identity: long.clone(),
            operation: long.clone(),
            tenant: Some(long.clone()),
            environment: Some(long.clone()),
            secret: Some(long.clone()),
            lease_id: Some(long.clone()),
            reason: long.clone(),
            grant: Some(long.clone()),
            request_id: long.clone(),
            detail: (0..100)
                .map(|i| (format!("{i:03}{long}"), long.clone()))
                .collect(),
            ..Event::default()
        }
        .bounded();
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.len() < 16 * 1024, "{}", json.len());
        for field in [
            &event.identity,
            &event.reason,
            event.tenant.as_ref().unwrap(),
        ] {
            assert!(field.len() <= MAX_FIELD);
            assert!(field.ends_with(MARKER));
        }
        assert_eq!(event.detail.len(), MAX_DETAIL + 1);
        assert_eq!(event.detail["truncated"], "84 entries dropped");
        assert!(event.detail.keys().all(|k| k.len() <= DETAIL_KEY));

        let short = Event {
            identity: "spiffe://a/b".into(),
            ..Event::default()
        };
        assert_eq!(short.clone().bounded(), short);
    }
}
