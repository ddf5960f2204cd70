//! Request rates in three windows (10 s burst, minute, day) for API keys, tenants and
//! service identities: GCRA, one theoretical arrival time per window.
//!
//! Why not a crate such as governor: a request passes only if every window of every
//! scope it counts against (its key, its tenant, its caller) has room, and a refused
//! request must consume nothing anywhere (otherwise a client held back by its daily
//! window would also drain its minute window, and never see it refill). governor keeps
//! one quota per limiter and consumes on a successful check, so several windows
//! cannot be checked first and committed together. GCRA itself is a few lines: a
//! window of `W` with room for `L` requests spaces them `W / L` apart and admits one
//! while its theoretical arrival time is at most `W` ahead of now.
//!
//! State is bounded: an entry whose windows are all idle (arrival times in the past)
//! is exactly a fresh one, so it is dropped without changing any decision; past the
//! bound, the entry nearest to idle is dropped, which can only make that scope more
//! lenient, never let it exceed its limits by more than one window's worth.
//! A single arrival time per window is also what several nodes can share later: the
//! largest one wins.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vault_crypto::clock::SharedClock;

use crate::records::RateWindows;

/// The three windows, in the order they are checked and named.
pub(crate) const WINDOWS: [(&str, Duration); 3] = [
    ("burst", Duration::from_secs(10)),
    ("minute", Duration::from_secs(60)),
    ("day", Duration::from_secs(86_400)),
];

fn limits_of(rates: RateWindows) -> [u32; 3] {
    [rates.burst, rates.per_minute, rates.per_day]
}

/// What a limit counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// A platform API key, by key id.
    ApiKey(String),
    /// Every key of a tenant.
    Tenant(String),
    /// A service identity under one grant.
    Identity { identity: String, grant: String },
}

impl Scope {
    /// The scope's kind, for answers and summary records.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Scope::ApiKey(_) => "api_key",
            Scope::Tenant(_) => "tenant",
            Scope::Identity { .. } => "identity",
        }
    }

    /// Who or what, for summary records.
    pub(crate) fn name(&self) -> &str {
        match self {
            Scope::ApiKey(id) | Scope::Tenant(id) => id,
            Scope::Identity { identity, .. } => identity,
        }
    }
}

/// A refusal: which scope and window, and when a request would pass again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exceeded {
    pub(crate) scope: Scope,
    pub(crate) window: &'static str,
    pub(crate) retry_after: Duration,
}

/// Theoretical arrival times, one per window (`None`: never used).
type Cell = [Option<Instant>; 3];

/// Rate limiters for every scope, bounded to `max_entries` scopes.
pub(crate) struct Rates {
    cells: Mutex<HashMap<Scope, Cell>>,
    max_entries: usize,
    clock: SharedClock,
}

impl Rates {
    pub(crate) fn new(max_entries: usize, clock: SharedClock) -> Self {
        Self {
            cells: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Scope, Cell>> {
        // Arrival times only: any state a panicking holder left is a valid one.
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a request of `cost` units if every window of every scope has room, and
    /// then counts it in all of them; otherwise counts it nowhere and says which
    /// window of which scope refused (the one that frees up last).
    pub(crate) fn admit(&self, scopes: &[(Scope, RateWindows)], cost: u32) -> Result<(), Exceeded> {
        let now = self.clock.instant();
        let cost = cost.max(1);
        let mut cells = self.lock();
        let mut next: Vec<(usize, usize, Instant)> = Vec::with_capacity(scopes.len() * 3);
        let mut refused: Option<Exceeded> = None;
        for (i, (scope, rates)) in scopes.iter().enumerate() {
            let cell = cells.get(scope).copied().unwrap_or_default();
            for (w, ((window, period), limit)) in WINDOWS.iter().zip(limits_of(*rates)).enumerate()
            {
                if limit == 0 {
                    continue;
                }
                let spacing = *period / limit;
                let tat = cell.get(w).copied().flatten().map_or(now, |t| t.max(now));
                // A cost no window could ever hold is as far ahead as can be.
                let new_tat = tat.checked_add(spacing.saturating_mul(cost));
                let ahead = new_tat.map_or(Duration::MAX, |t| t.saturating_duration_since(now));
                if ahead > *period {
                    let retry_after = ahead - *period;
                    if refused.as_ref().is_none_or(|r| retry_after > r.retry_after) {
                        refused = Some(Exceeded {
                            scope: scope.clone(),
                            window,
                            retry_after,
                        });
                    }
                } else if let Some(new_tat) = new_tat {
                    next.push((i, w, new_tat));
                }
            }
        }
        if let Some(refused) = refused {
            return Err(refused);
        }
        if cells.len() + scopes.len() > self.max_entries {
            make_room(&mut cells, now, scopes.len(), self.max_entries);
        }
        for (i, w, tat) in next {
            if let Some((scope, _)) = scopes.get(i) {
                let cell = cells.entry(scope.clone()).or_default();
                if let Some(slot) = cell.get_mut(w) {
                    *slot = Some(tat);
                }
            }
        }
        Ok(())
    }

    /// Drops every idle scope (all its windows' arrival times in the past): each is
    /// exactly a fresh one. Returns how many remain.
    pub(crate) fn sweep(&self) -> usize {
        let now = self.clock.instant();
        let mut cells = self.lock();
        cells.retain(|_, cell| !idle(cell, now));
        cells.len()
    }
}

fn idle(cell: &Cell, now: Instant) -> bool {
    cell.iter().all(|t| t.is_none_or(|t| t <= now))
}

/// Frees room for `wanted` scopes: idle ones first, then those nearest to idle.
fn make_room(cells: &mut HashMap<Scope, Cell>, now: Instant, wanted: usize, max: usize) {
    cells.retain(|_, cell| !idle(cell, now));
    let excess = (cells.len() + wanted).saturating_sub(max);
    if excess == 0 {
        return;
    }
    let mut by_last: Vec<(Instant, Scope)> = cells
        .iter()
        .map(|(scope, cell)| {
            let last = cell.iter().flatten().copied().max().unwrap_or(now);
            (last, scope.clone())
        })
        .collect();
    by_last.sort_unstable_by_key(|(last, _)| *last);
    for (_, scope) in by_last.into_iter().take(excess) {
        cells.remove(&scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_crypto::clock::ManualClock;

    fn rates(burst: u32, per_minute: u32, per_day: u32) -> RateWindows {
        RateWindows {
            burst,
            per_minute,
            per_day,
        }
    }

    fn key(id: &str) -> Scope {
        Scope::ApiKey(id.to_owned())
    }

    #[test]
    fn a_burst_window_admits_its_limit_then_refills_at_its_rate() {
        let clock = ManualClock::new();
        let limiter = Rates::new(100, clock.clone());
        let scopes = [(key("a"), rates(10, 0, 0))];
        for _ in 0..10 {
            limiter.admit(&scopes, 1).unwrap();
        }
        let refused = limiter.admit(&scopes, 1).unwrap_err();
        assert_eq!(refused.window, "burst");
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        limiter.admit(&scopes, 1).unwrap();
        assert!(limiter.admit(&scopes, 1).is_err());
        clock.advance(Duration::from_secs(10));
        for _ in 0..10 {
            limiter.admit(&scopes, 1).unwrap();
        }
    }

    #[test]
    fn a_refusal_consumes_nothing_in_any_window_or_scope() {
        let clock = ManualClock::new();
        let limiter = Rates::new(100, clock.clone());
        let tenant = (Scope::Tenant("acme".into()), rates(0, 0, 3));
        let a = [(key("a"), rates(100, 100, 0)), tenant.clone()];
        for _ in 0..3 {
            limiter.admit(&a, 1).unwrap();
        }
        // The tenant's day window is full: key a's windows are not charged for the
        // refusals, and key b (same tenant) is refused too, naming the tenant.
        for _ in 0..50 {
            let refused = limiter.admit(&a, 1).unwrap_err();
            assert_eq!((refused.scope.kind(), refused.window), ("tenant", "day"));
        }
        let alone = [(key("a"), rates(100, 100, 0))];
        for _ in 0..97 {
            limiter.admit(&alone, 1).unwrap();
        }
        // Both of its windows are full now; the one that frees up last is named.
        assert_eq!(limiter.admit(&alone, 1).unwrap_err().window, "minute");
        let b = [(key("b"), rates(10, 0, 0)), tenant];
        assert_eq!(limiter.admit(&b, 1).unwrap_err().scope.kind(), "tenant");
    }

    #[test]
    fn cost_counts_as_that_many_requests() {
        let clock = ManualClock::new();
        let limiter = Rates::new(100, clock);
        let scopes = [(key("a"), rates(0, 60, 0))];
        limiter.admit(&scopes, 50).unwrap();
        assert!(limiter.admit(&scopes, 11).is_err());
        limiter.admit(&scopes, 10).unwrap();
    }

    #[test]
    fn state_is_bounded_and_idle_scopes_are_forgotten_exactly() {
        let clock = ManualClock::new();
        let limiter = Rates::new(3, clock.clone());
        for id in ["a", "b", "c", "d", "e"] {
            limiter.admit(&[(key(id), rates(1, 0, 0))], 1).unwrap();
            assert!(limiter.lock().len() <= 3);
        }
        // "e" is still held back; the oldest were dropped to make room.
        assert!(limiter.admit(&[(key("e"), rates(1, 0, 0))], 1).is_err());
        clock.advance(Duration::from_secs(10));
        assert_eq!(limiter.sweep(), 0, "all idle after a window");
        limiter.admit(&[(key("e"), rates(1, 0, 0))], 1).unwrap();
    }
}
