//! Refusals by rate limits and quotas, counted instead of recorded one by one: a
//! summary record per scope and window per housekeeping interval, with the count, so
//! a flood cannot amplify the audit log.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use vault_audit::{Decision, Event};

/// Scopes and windows counted at once; beyond this, refusals are counted together.
const MAX_COUNTED: usize = 4096;

/// The operation of a summary record.
pub(crate) const LIMITED: &str = "limits.refused";

/// Counted refusals since the last summary.
#[derive(Default)]
pub(crate) struct LimitRefusals {
    counts: Mutex<HashMap<(&'static str, String, &'static str), u64>>,
}

impl LimitRefusals {
    fn lock(&self) -> MutexGuard<'_, HashMap<(&'static str, String, &'static str), u64>> {
        // Counts only: any state a panicking holder left is a valid one.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one refusal of `scope` (`api_key`, `tenant`, `identity`) named `name`
    /// in `window`.
    pub(crate) fn count(&self, scope: &'static str, name: &str, window: &'static str) {
        let mut counts = self.lock();
        let key = if counts.len() < MAX_COUNTED
            || counts.contains_key(&(scope, name.to_owned(), window))
        {
            (scope, name.to_owned(), window)
        } else {
            (scope, "(others)".to_owned(), window)
        };
        *counts.entry(key).or_insert(0) += 1;
    }

    /// One summary record per scope and window counted since the last call.
    pub(crate) fn drain(&self) -> Vec<Event> {
        let counted = std::mem::take(&mut *self.lock());
        counted
            .into_iter()
            .map(|((scope, name, window), count)| {
                let mut event = Event {
                    operation: LIMITED.to_owned(),
                    decision: Decision::Deny,
                    reason: format!(
                        "{count} requests refused by the {window} limit of {scope} {name}"
                    ),
                    ..Event::default()
                };
                event.detail.insert("scope".into(), scope.to_owned());
                event.detail.insert("name".into(), name);
                event.detail.insert("window".into(), window.to_owned());
                event.detail.insert("count".into(), count.to_string());
                event
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_becomes_one_record_per_scope_and_window() {
        let refusals = LimitRefusals::default();
        for _ in 0..10_000 {
            refusals.count("api_key", "k1", "burst");
        }
        refusals.count("tenant", "acme", "day");
        let mut summaries = refusals.drain();
        summaries.sort_by_key(|e| std::cmp::Reverse(e.detail["count"].parse::<u64>().unwrap()));
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0].detail["count"], "10000");
        assert_eq!(summaries[0].detail["window"], "burst");
        assert!(refusals.drain().is_empty());
        for i in 0..(MAX_COUNTED + 100) {
            refusals.count("api_key", &format!("k{i}"), "minute");
        }
        let summaries = refusals.drain();
        assert_eq!(
            summaries.len(),
            MAX_COUNTED + 1,
            "the rest counted together"
        );
    }
}
