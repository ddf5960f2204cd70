//! Daily quotas of API keys: units per UTC day, reset at midnight UTC, with an
//! optional cost per request.
//!
//! Usage is counted in memory and added to the stored count by the daemon's
//! housekeeping every second (all changed keys in one durable commit that re-reads
//! what it adds to) and at shutdown, and read back the first time a key is used after
//! a start. A restart therefore never resets a quota; a crash can forget at most the
//! last second's usage. Nodes sharing a database each add their own units to the one
//! stored count and take back the total, so a key's quota holds across nodes to
//! within what each node charged in the last second.

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
    /// The day's units as the store last said: every node's, up to this node's last
    /// write.
    stored: u64,
    /// Units being added to the store now.
    writing: i64,
    /// Units charged (less refunds) since, not yet being written.
    pending: i64,
}

impl Usage {
    fn new(day: u64, stored: u64) -> Self {
        Self {
            day,
            stored,
            writing: 0,
            pending: 0,
        }
    }

    fn used(&self) -> u64 {
        self.stored
            .saturating_add_signed(self.writing)
            .saturating_add_signed(self.pending)
    }

    /// Whether it holds units the store does not have yet.
    fn unwritten(&self) -> bool {
        self.writing != 0 || self.pending != 0
    }
}

/// Units one node charged to a key on a day, to add to the stored count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuotaDelta {
    pub(crate) id: String,
    pub(crate) day: u64,
    pub(crate) units: i64,
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
            usage.retain(|_, u| u.unwritten());
        }
        usage.entry(id.to_owned()).or_insert(Usage::new(
            today,
            stored.filter(|r| r.day == today).map_or(0, |r| r.used),
        ));
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
        let u = usage.entry(id.to_owned()).or_insert(Usage::new(today, 0));
        if u.day != today {
            *u = Usage::new(today, 0);
        }
        let after = u.used().saturating_add(cost);
        if after > quota {
            let midnight = (today + 1) * 86_400;
            return Ok(Err(QuotaExceeded {
                retry_after: Duration::from_secs(midnight.saturating_sub(now)),
            }));
        }
        u.pending = u.pending.saturating_add_unsigned(cost);
        Ok(Ok(quota - after))
    }

    /// Gives back `cost` units charged to `id` for a request refused afterwards.
    pub(crate) fn refund(&self, id: &str, cost: u64) {
        if let Some(u) = self.lock().get_mut(id) {
            u.pending = u.pending.saturating_sub_unsigned(cost);
        }
    }

    /// Units key `id` used today, on every node as far as this one knows.
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
            .map_or(0, Usage::used))
    }

    /// The units charged since the last call, to add to the stored counts; report
    /// the outcome with [`Quotas::written`] or [`Quotas::unwritten`].
    pub(crate) fn take_changed(&self) -> Vec<QuotaDelta> {
        self.lock()
            .iter_mut()
            .filter(|(_, u)| u.pending != 0 && u.writing == 0)
            .map(|(id, u)| {
                u.writing = std::mem::take(&mut u.pending);
                QuotaDelta {
                    id: id.clone(),
                    day: u.day,
                    units: u.writing,
                }
            })
            .collect()
    }

    /// `deltas` were added to the store, which then held `totals` (every node's
    /// units; `None` where the stored day had moved past the delta's).
    pub(crate) fn written(&self, deltas: &[QuotaDelta], totals: &[Option<u64>]) {
        let mut usage = self.lock();
        for (delta, total) in deltas.iter().zip(totals) {
            if let Some(u) = usage.get_mut(&delta.id)
                && u.day == delta.day
            {
                u.writing = 0;
                if let Some(total) = total {
                    u.stored = *total;
                }
            }
        }
    }

    /// `deltas` could not be added to the store: they are taken again next time.
    pub(crate) fn unwritten(&self, deltas: &[QuotaDelta]) {
        let mut usage = self.lock();
        for delta in deltas {
            if let Some(u) = usage.get_mut(&delta.id)
                && u.day == delta.day
            {
                u.pending = u.pending.saturating_add(std::mem::take(&mut u.writing));
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
        changed.sort_by(|x, y| x.id.cmp(&y.id));
        let delta = |id: &str| QuotaDelta {
            id: id.into(),
            day: today,
            units: 1,
        };
        assert_eq!(changed, vec![delta("a"), delta("b")]);
        assert!(quotas.take_changed().is_empty());
        quotas.unwritten(&changed);
        assert_eq!(quotas.take_changed().len(), 2);
    }

    #[test]
    fn each_node_adds_its_units_and_takes_back_every_nodes_total() {
        let clock = ManualClock::new();
        let today = utc_day(unix_seconds(clock.now()));
        let quotas = Quotas::new(10, clock);
        let none = || Ok(None);
        assert_eq!(quotas.charge("k", 10, 3, none).unwrap(), Ok(7));
        let taken = quotas.take_changed();
        assert_eq!(taken[0].units, 3);
        // Charged while the write is under way: kept for the next one.
        assert_eq!(quotas.charge("k", 10, 1, none).unwrap(), Ok(6));
        quotas.refund("k", 2);
        // The store holds 3 from here and 5 from another node.
        quotas.written(&taken, &[Some(8)]);
        assert_eq!(quotas.used_today("k", none).unwrap(), 7);
        assert_eq!(quotas.charge("k", 10, 3, none).unwrap(), Ok(0));
        assert!(quotas.charge("k", 10, 1, none).unwrap().is_err());
        let next = quotas.take_changed();
        assert_eq!(
            next,
            vec![QuotaDelta {
                id: "k".into(),
                day: today,
                units: 2
            }]
        );
    }

    #[test]
    fn unwritten_usage_is_never_evicted() {
        let clock = ManualClock::new();
        let quotas = Quotas::new(2, clock);
        for id in ["a", "b", "c", "d"] {
            quotas.charge(id, 10, 1, || Ok(None)).unwrap().unwrap();
        }
        let taken = quotas.take_changed();
        assert_eq!(taken.len(), 4);
        // Units on their way to the store are kept too.
        quotas.charge("e", 10, 1, || Ok(None)).unwrap().unwrap();
        assert_eq!(quotas.lock().len(), 5);
        quotas.written(&taken, &[Some(1); 4]);
        quotas.charge("f", 10, 1, || Ok(None)).unwrap().unwrap();
        assert!(quotas.lock().len() <= 2);
    }
}
