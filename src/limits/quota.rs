//! Daily quotas of API keys: units per UTC day, reset at midnight UTC, with an
//! optional cost per request.
//!
//! Usage is counted in memory and written to the store by the daemon's housekeeping
//! every second (all changed keys in one durable commit) and at shutdown, and read
//! back the first time a key is used after a start. A restart therefore never resets
//! a quota; a crash can forget at most the last second's usage. Several nodes can
//! later share a quota by adding their deltas to one stored count.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use vault_crypto::clock::{SharedClock, unix_seconds};

use crate::error::Result;
use crate::records::QuotaRecord;
use crate::vault::apikeys::utc_day;

/// A quota refusal: the day's units are spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaExceeded {
    /// Until midnight UTC.
    pub(crate) retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    day: u64,
    used: u64,
    /// Changed since it was last written.
    dirty: bool,
}

/// Every key's usage today, bounded to `max_entries` keys in memory.
pub(crate) struct Quotas {
    usage: Mutex<HashMap<String, Usage>>,
    max_entries: usize,
    clock: SharedClock,
}

impl Quotas {
    pub(crate) fn new(max_entries: usize, clock: SharedClock) -> Self {
        Self {
            usage: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Usage>> {
        // Counters only: any state a panicking holder left is a valid one.
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn today(&self) -> u64 {
        utc_day(unix_seconds(self.clock.now()))
    }

    /// Makes sure key `id`'s usage is in memory, reading it with `load` if not.
    fn ensure(&self, id: &str, load: impl FnOnce() -> Result<Option<QuotaRecord>>) -> Result<()> {
        if self.lock().contains_key(id) {
            return Ok(());
        }
        let stored = load()?;
        let today = self.today();
        let mut usage = self.lock();
        if usage.len() >= self.max_entries {
            // Written usage can be read again; unwritten usage is never dropped.
            usage.retain(|_, u| u.dirty);
        }
        usage.entry(id.to_owned()).or_insert(Usage {
            day: today,
            used: stored.filter(|r| r.day == today).map_or(0, |r| r.used),
            dirty: false,
        });
        Ok(())
    }

    /// Charges `cost` units to key `id` with `quota` units a day, if they fit; returns
    /// the units left. `load` reads the key's stored usage the first time.
    pub(crate) fn charge(
        &self,
        id: &str,
        quota: u64,
        cost: u64,
        load: impl FnOnce() -> Result<Option<QuotaRecord>>,
    ) -> Result<std::result::Result<u64, QuotaExceeded>> {
        self.ensure(id, load)?;
        let now = unix_seconds(self.clock.now());
        let today = utc_day(now);
        let mut usage = self.lock();
        let u = usage.entry(id.to_owned()).or_insert(Usage {
            day: today,
            used: 0,
            dirty: false,
        });
        if u.day != today {
            *u = Usage {
                day: today,
                used: 0,
                dirty: true,
            };
        }
        let after = u.used.saturating_add(cost);
        if after > quota {
            let midnight = (today + 1) * 86_400;
            return Ok(Err(QuotaExceeded {
                retry_after: Duration::from_secs(midnight.saturating_sub(now)),
            }));
        }
        u.used = after;
        u.dirty = true;
        Ok(Ok(quota - after))
    }

    /// Gives back `cost` units charged to `id` for a request refused afterwards.
    pub(crate) fn refund(&self, id: &str, cost: u64) {
        if let Some(u) = self.lock().get_mut(id) {
            u.used = u.used.saturating_sub(cost);
            u.dirty = true;
        }
    }

    /// Units key `id` used today.
    pub(crate) fn used_today(
        &self,
        id: &str,
        load: impl FnOnce() -> Result<Option<QuotaRecord>>,
    ) -> Result<u64> {
        self.ensure(id, load)?;
        let today = self.today();
        Ok(self
            .lock()
            .get(id)
            .filter(|u| u.day == today)
            .map_or(0, |u| u.used))
    }

    /// Usage changed since it was last taken, marked written; give it back with
    /// [`Quotas::unwritten`] if writing it fails.
    pub(crate) fn take_changed(&self) -> Vec<(String, QuotaRecord)> {
        self.lock()
            .iter_mut()
            .filter(|(_, u)| u.dirty)
            .map(|(id, u)| {
                u.dirty = false;
                (
                    id.clone(),
                    QuotaRecord {
                        day: u.day,
                        used: u.used,
                    },
                )
            })
            .collect()
    }

    /// Marks usage that could not be written as changed again.
    pub(crate) fn unwritten(&self, failed: &[(String, QuotaRecord)]) {
        let mut usage = self.lock();
        for (id, _) in failed {
            if let Some(u) = usage.get_mut(id) {
                u.dirty = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_crypto::clock::{Clock, ManualClock};

    #[test]
    fn a_quota_refuses_past_its_units_and_resets_at_midnight_utc() {
        let clock = ManualClock::new();
        let quotas = Quotas::new(10, clock.clone());
        let none = || Ok(None);
        assert_eq!(quotas.charge("k", 5, 3, none).unwrap(), Ok(2));
        assert_eq!(quotas.charge("k", 5, 2, none).unwrap(), Ok(0));
        let refused = quotas.charge("k", 5, 1, none).unwrap().unwrap_err();
        assert!(refused.retry_after <= Duration::from_secs(86_400));
        clock.advance(refused.retry_after);
        assert_eq!(quotas.charge("k", 5, 1, none).unwrap(), Ok(4));
    }

    #[test]
    fn stored_usage_of_today_is_resumed_and_of_another_day_is_not() {
        let clock = ManualClock::new();
        let today = utc_day(unix_seconds(clock.now()));
        let quotas = Quotas::new(10, clock);
        let stored = |day| move || Ok(Some(QuotaRecord { day, used: 4 }));
        assert_eq!(quotas.charge("a", 5, 1, stored(today)).unwrap(), Ok(0));
        assert_eq!(quotas.charge("b", 5, 1, stored(today - 1)).unwrap(), Ok(4));
        let mut changed = quotas.take_changed();
        changed.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            changed,
            vec![
                (
                    "a".to_owned(),
                    QuotaRecord {
                        day: today,
                        used: 5
                    }
                ),
                (
                    "b".to_owned(),
                    QuotaRecord {
                        day: today,
                        used: 1
                    }
                ),
            ]
        );
        assert!(quotas.take_changed().is_empty());
        quotas.unwritten(&changed);
        assert_eq!(quotas.take_changed().len(), 2);
    }

    #[test]
    fn unwritten_usage_is_never_evicted() {
        let clock = ManualClock::new();
        let quotas = Quotas::new(2, clock);
        for id in ["a", "b", "c", "d"] {
            quotas.charge(id, 10, 1, || Ok(None)).unwrap().unwrap();
        }
        assert_eq!(quotas.take_changed().len(), 4);
        quotas.charge("e", 10, 1, || Ok(None)).unwrap().unwrap();
        assert!(quotas.lock().len() <= 2);
    }
}
