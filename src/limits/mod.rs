//! Bounds per caller: how many of something one identity may hold at once
//! (connections, revocation watches). Each held unit is a [`Held`] guard, given back
//! when dropped, so nothing can leak a count.

pub(crate) mod quota;
pub(crate) mod rate;
pub(crate) mod refusals;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::identity::Identity;

/// Counts of what each identity holds, each at most `max`.
pub(crate) struct PerIdentity {
    held: Mutex<HashMap<Identity, usize>>,
    max: usize,
}

/// One unit held by an identity; given back on drop.
pub(crate) struct Held {
    owner: Arc<PerIdentity>,
    identity: Identity,
}

impl PerIdentity {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(HashMap::new()),
            max,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Identity, usize>> {
        // Plain counts: any state a panicking holder left is consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more unit for `identity`, or `None` if it holds its maximum.
    pub(crate) fn acquire(self: &Arc<Self>, identity: &Identity) -> Option<Held> {
        let mut held = self.lock();
        let count = held.entry(identity.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Held {
            owner: Arc::clone(self),
            identity: identity.clone(),
        })
    }

    /// The most one identity may hold.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.owner.lock();
        if let Some(count) = held.get_mut(&self.identity) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_holds_at_most_its_maximum_and_gets_units_back() {
        let limit = PerIdentity::new(2);
        let a = Identity::for_tests("spiffe://t/a");
        let b = Identity::for_tests("spiffe://t/b");
        let first = limit.acquire(&a).unwrap();
        let _second = limit.acquire(&a).unwrap();
        assert!(limit.acquire(&a).is_none());
        assert!(limit.acquire(&b).is_some(), "others are not affected");
        drop(first);
        assert!(limit.acquire(&a).is_some());
        assert!(limit.lock().len() <= 2);
    }
}
