//! Audit glue: the vault's keys for the chain, records the daemon writes on its own
//! behalf, and the refusal budget.
//!
//! Every allowed request is recorded on its own, before it is answered. Refused
//! requests are recorded on their own too, up to a budget per caller
//! (`audit.refusals_per_second`, with bursts of five times that); beyond it they are
//! counted, and one summary record per caller and second says how many of which
//! operation were refused. A caller that floods vaultd with requests it may not make
//! therefore cannot grow the audit log faster than the budget allows, nor crowd out
//! the records of everyone else; nothing it was refused is hidden, only aggregated.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use vault_audit::{AuditError, AuditLog, ChainKeys, Decision, Event};
use vault_crypto::clock::SharedClock;

use crate::identity::Identity;
use crate::vault::Vault;

/// The audit chain's keys: the vault's system keys, unavailable while sealed.
pub(crate) struct VaultChainKeys(pub(crate) Arc<Vault>);

impl ChainKeys for VaultChainKeys {
    fn mac(&self, message: &[u8]) -> Option<[u8; 32]> {
        self.0.audit_mac(message)
    }
    fn sign(&self, message: &[u8]) -> Option<[u8; 64]> {
        self.0.audit_sign(message)
    }
    fn public_key(&self) -> Option<[u8; 32]> {
        self.0.audit_public_key()
    }
}

/// The identity of records vaultd writes about its own actions.
pub(crate) const SYSTEM: &str = "vaultd";

/// Records an action the daemon took on its own (not a request).
pub(crate) async fn system_event(
    audit: &AuditLog,
    operation: &str,
    mut event: Event,
) -> Result<(), AuditError> {
    event.identity = SYSTEM.to_owned();
    event.operation = operation.to_owned();
    audit.append(event).await.map(|_| ())
}

/// The operation of a summary record.
pub(crate) const SUPPRESSED: &str = "audit.refusals_suppressed";
/// Callers whose budgets are tracked at once; refusals of callers beyond them are
/// counted together.
const MAX_CALLERS: usize = 4096;
/// Who a summary of refusals beyond [`MAX_CALLERS`] is recorded under.
const OTHER_CALLERS: &str = "(other callers)";
/// A caller's burst, in seconds of its budget.
const BURST_SECONDS: f64 = 5.0;

/// Per-caller budgets of refused requests recorded one by one.
pub(crate) struct RefusalBudget {
    per_second: f64,
    clock: SharedClock,
    state: Mutex<Budgets>,
}

#[derive(Default)]
struct Budgets {
    callers: HashMap<Identity, Budget>,
    other: Counted,
}

struct Budget {
    tokens: f64,
    refilled: Instant,
    counted: Counted,
}

/// Refusals counted instead of recorded, by operation.
#[derive(Default)]
struct Counted {
    total: u64,
    by_rpc: BTreeMap<&'static str, u64>,
}

impl Counted {
    fn add(&mut self, rpc: &'static str) {
        self.total += 1;
        *self.by_rpc.entry(rpc).or_insert(0) += 1;
    }

    fn summary(&mut self, identity: String, per_second: f64) -> Option<Event> {
        if self.total == 0 {
            return None;
        }
        let counted = std::mem::take(self);
        Some(Event {
            identity,
            operation: SUPPRESSED.to_owned(),
            decision: Decision::Deny,
            reason: format!(
                "{} refused requests beyond the audit budget of {per_second}/s were counted, \
                 not recorded one by one",
                counted.total
            ),
            detail: counted
                .by_rpc
                .into_iter()
                .map(|(rpc, n)| (rpc.to_owned(), n.to_string()))
                .collect(),
            ..Event::default()
        })
    }
}

impl RefusalBudget {
    pub(crate) fn new(per_second: u32, clock: SharedClock) -> Self {
        Self {
            per_second: f64::from(per_second),
            clock,
            state: Mutex::new(Budgets::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Budgets> {
        // Counters only: any state a panicking holder left is still a valid count.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a refusal of `identity`'s `rpc` is recorded on its own. If not, it is
    /// counted for the next summary.
    pub(crate) fn admit(&self, identity: &Identity, rpc: &'static str) -> bool {
        let burst = self.per_second * BURST_SECONDS;
        let now = self.clock.instant();
        let mut state = self.lock();
        let state = &mut *state;
        if !state.callers.contains_key(identity) && state.callers.len() >= MAX_CALLERS {
            state.other.add(rpc);
            return false;
        }
        let budget = state
            .callers
            .entry(identity.clone())
            .or_insert_with(|| Budget {
                tokens: burst,
                refilled: now,
                counted: Counted::default(),
            });
        let elapsed = now.duration_since(budget.refilled).as_secs_f64();
        budget.tokens = (budget.tokens + elapsed * self.per_second).min(burst);
        budget.refilled = now;
        if budget.tokens >= 1.0 {
            budget.tokens -= 1.0;
            true
        } else {
            budget.counted.add(rpc);
            false
        }
    }

    /// One summary record per caller with refusals counted since the last call, and
    /// forgets callers whose budget is full again.
    pub(crate) fn drain(&self) -> Vec<Event> {
        let burst = self.per_second * BURST_SECONDS;
        let now = self.clock.instant();
        let per_second = self.per_second;
        let mut state = self.lock();
        let mut summaries: Vec<Event> = state
            .callers
            .iter_mut()
            .filter_map(|(identity, budget)| {
                budget
                    .counted
                    .summary(identity.as_str().to_owned(), per_second)
            })
            .collect();
        summaries.extend(state.other.summary(OTHER_CALLERS.to_owned(), per_second));
        state.callers.retain(|_, budget| {
            let elapsed = now.duration_since(budget.refilled).as_secs_f64();
            budget.tokens + elapsed * per_second < burst
        });
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vault_crypto::clock::ManualClock;

    #[test]
    fn refusals_beyond_the_budget_are_counted_per_caller_and_summarised() {
        let clock = ManualClock::new();
        let budget = RefusalBudget::new(2, clock.clone()); // bursts of 10
        let flood = Identity::for_tests("spiffe://t/flood");
        let quiet = Identity::for_tests("spiffe://t/quiet");
        let admitted = (0..1000)
            .filter(|i| {
                let rpc = if i % 2 == 0 {
                    "broker.revoke"
                } else {
                    "broker.lease"
                };
                budget.admit(&flood, rpc)
            })
            .count();
        assert_eq!(
            admitted, 10,
            "the burst, and no refill while the clock stands"
        );
        assert!(budget.admit(&quiet, "broker.lease"), "others keep theirs");

        let summaries = budget.drain();
        assert_eq!(summaries.len(), 1);
        let summary = &summaries[0];
        assert_eq!(summary.identity, "spiffe://t/flood");
        assert_eq!(summary.operation, SUPPRESSED);
        assert_eq!(summary.decision, Decision::Deny);
        let counted: u64 = summary
            .detail
            .values()
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted as usize, 1000 - admitted);
        assert!(summary.detail.contains_key("broker.revoke"));
        assert!(budget.drain().is_empty(), "each refusal is summarised once");

        // The budget refills at its rate: two more a second later, not three.
        clock.advance(Duration::from_secs(1));
        let refilled = (0..10).filter(|_| budget.admit(&flood, "x")).count();
        assert_eq!(refilled, 2);
    }

    #[test]
    fn the_table_of_callers_is_bounded() {
        let budget = RefusalBudget::new(1, vault_crypto::clock::system());
        for i in 0..MAX_CALLERS {
            assert!(budget.admit(&Identity::for_tests(&format!("spiffe://t/{i}")), "x"));
        }
        let late = Identity::for_tests("spiffe://t/late");
        assert!(!budget.admit(&late, "x"));
        let summaries = budget.drain();
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].identity, OTHER_CALLERS);
        assert!(budget.lock().callers.len() <= MAX_CALLERS);
    }
}
