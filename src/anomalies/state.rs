//! The detector's bounded tables: rate baselines, first-access pairs, failure windows.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::Duration;

use super::{AnomalyConfig, Failing, Watched};

/// The per-minute weight of the newest minute for a baseline of half-life `half_life`.
pub(super) fn alpha(half_life: Duration) -> f64 {
    let minutes = (half_life.as_secs_f64() / 60.0).max(1.0);
    1.0 - 0.5f64.powf(1.0 / minutes)
}

/// One (identity, tenant, operation)'s requests per minute.
#[derive(Debug, Clone)]
struct Baseline {
    /// The minute being counted (Unix minutes).
    minute: u64,
    /// Requests in it so far.
    count: u32,
    /// Exponentially weighted mean of the finished minutes, not yet corrected for
    /// starting at zero.
    weighted: f64,
    /// The weight the finished minutes carry in all: 1 - (1 - alpha)^minutes.
    weight: f64,
    /// Finished minutes known.
    minutes: u32,
    /// Levels already raised in this minute.
    raised: usize,
}

impl Baseline {
    fn new(minute: u64) -> Self {
        Self {
            minute,
            count: 0,
            weighted: 0.0,
            weight: 0.0,
            minutes: 0,
            raised: 0,
        }
    }

    /// Moves to `minute`, folding in the finished ones (idle minutes count zero).
    fn roll(&mut self, minute: u64, alpha: f64) {
        if minute <= self.minute {
            return;
        }
        let keep = 1.0 - alpha;
        self.weighted = alpha * f64::from(self.count) + keep * self.weighted;
        self.weight = alpha + keep * self.weight;
        // Idle minutes: each keeps (1 - alpha) of what was there and adds nothing.
        let idle = i32::try_from((minute - self.minute - 1).min(100_000)).unwrap_or(100_000);
        let decay = keep.powi(idle);
        self.weighted *= decay;
        self.weight = 1.0 - (1.0 - self.weight) * decay;
        self.minutes = self
            .minutes
            .saturating_add(u32::try_from(idle).unwrap_or(0) + 1);
        self.minute = minute;
        self.count = 0;
        self.raised = 0;
    }

    /// Requests per minute the finished minutes make usual.
    fn baseline(&self) -> f64 {
        if self.weight > 0.0 {
            self.weighted / self.weight
        } else {
            0.0
        }
    }
}

/// A level crossed by a minute's count.
pub(super) struct Crossed {
    /// The level newly reached, if one was (each is raised once a minute).
    pub(super) raised: Option<f64>,
    /// Whether the count is at or past the highest level.
    pub(super) top: bool,
    pub(super) count: u32,
    pub(super) baseline: f64,
}

/// A table key: a keyed 64-bit digest of what it stands for, so the request path
/// neither allocates nor keeps names. The key is random per process, so nobody can
/// make two keys collide on purpose; by chance, about 2^-64 per pair.
type Digest = u64;

/// Baselines, at most `max` of them; when full, a new key evicts one idle for the
/// longest (or, if none is idle, is not tracked).
pub(super) struct Baselines {
    max: usize,
    alpha: f64,
    keys: std::collections::hash_map::RandomState,
    table: HashMap<Digest, Baseline>,
}

impl Baselines {
    pub(super) fn new(max: usize, alpha: f64) -> Self {
        Self {
            max,
            alpha,
            keys: std::collections::hash_map::RandomState::new(),
            table: HashMap::new(),
        }
    }

    /// Counts `n` requests of `key` in `minute`; the level they reach, if any.
    pub(super) fn count(
        &mut self,
        key: (&str, &str, Watched),
        minute: u64,
        n: u32,
        config: &AnomalyConfig,
    ) -> Option<Crossed> {
        let key = self.keys.hash_one(key);
        if !self.table.contains_key(&key) && !self.make_room(minute) {
            return None;
        }
        let alpha = self.alpha;
        let entry = self
            .table
            .entry(key)
            .or_insert_with(|| Baseline::new(minute));
        entry.roll(minute, alpha);
        entry.count = entry.count.saturating_add(n);
        if entry.minutes < config.warmup_minutes || entry.count < config.min_per_minute {
            return None;
        }
        let baseline = entry.baseline().max(1.0);
        let ratio = f64::from(entry.count) / baseline;
        let reached = config.levels.iter().filter(|l| ratio >= **l).count();
        if reached == 0 {
            return None;
        }
        let raised = if reached > entry.raised {
            config.levels.get(reached - 1).copied()
        } else {
            None
        };
        entry.raised = entry.raised.max(reached);
        Some(Crossed {
            raised,
            top: reached == config.levels.len(),
            count: entry.count,
            baseline,
        })
    }

    /// Frees a slot if the table is full: the entry idle the longest, if it has been
    /// idle an hour. `false` if none could go.
    fn make_room(&mut self, minute: u64) -> bool {
        if self.table.len() < self.max {
            return true;
        }
        let oldest = self
            .table
            .iter()
            .min_by_key(|(_, b)| b.minute)
            .filter(|(_, b)| minute.saturating_sub(b.minute) >= 60)
            .map(|(k, _)| *k);
        match oldest {
            Some(key) => {
                self.table.remove(&key);
                true
            }
            None => false,
        }
    }
}

/// (identity, tenant) pairs seen leasing, at most `max`; once full, no pair is new.
pub(super) struct Seen {
    max: usize,
    keys: std::collections::hash_map::RandomState,
    pairs: HashSet<Digest>,
}

impl Seen {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            keys: std::collections::hash_map::RandomState::new(),
            pairs: HashSet::new(),
        }
    }

    /// Whether this is the pair's first time (and remembers it).
    pub(super) fn first(&mut self, identity: &str, tenant: &str) -> bool {
        let pair = self.keys.hash_one((identity, tenant));
        if self.pairs.contains(&pair) || self.pairs.len() >= self.max {
            return false;
        }
        self.pairs.insert(pair)
    }
}

/// A failure window: when it began, failures in it, whether it was raised.
struct Window {
    start: u64,
    count: u32,
    raised: bool,
}

/// Failure windows per source or identity, at most `max`; when full, the window that
/// began first goes.
pub(super) struct Bursts {
    max: usize,
    table: HashMap<Failing, Window>,
}

impl Bursts {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            table: HashMap::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Counts a failure of `who` at `now` (seconds); the window's count when it
    /// reaches `threshold` for the first time in the window.
    pub(super) fn count(
        &mut self,
        who: Failing,
        now: u64,
        window: u64,
        threshold: u32,
    ) -> Option<u32> {
        if !self.table.contains_key(&who) && self.table.len() >= self.max {
            let oldest = self
                .table
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| k.clone());
            if let Some(key) = oldest {
                self.table.remove(&key);
            }
        }
        let entry = self.table.entry(who).or_insert(Window {
            start: now,
            count: 0,
            raised: false,
        });
        if now.saturating_sub(entry.start) >= window {
            *entry = Window {
                start: now,
                count: 0,
                raised: false,
            };
        }
        entry.count = entry.count.saturating_add(1);
        if entry.count >= threshold && !entry.raised {
            entry.raised = true;
            return Some(entry.count);
        }
        None
    }
}
