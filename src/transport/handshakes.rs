//! Handshakes in progress, bounded in total and per source address.
//!
//! A TLS handshake needs no certificate to begin, so anyone who can reach the port can
//! hold one open. Refusing the newest when all slots are taken would let 256 idle
//! sockets shut everyone out; instead a new handshake takes the slot of the oldest one
//! in progress (from its own source address first), and a connection that has not
//! sent its first byte within a short deadline is dropped. A real client's handshake
//! takes milliseconds, so it completes long before it is the oldest.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The handshakes in progress.
pub(crate) struct Handshakes {
    state: Mutex<State>,
    max_total: usize,
    max_per_source: usize,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Oldest first; dropping an entry's sender tells its handshake to stop.
    pending: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    per_source: HashMap<IpAddr, VecDeque<u64>>,
}

impl State {
    fn evict(&mut self, id: u64) {
        if let Some((source, _cancel)) = self.pending.remove(&id)
            && let Some(queue) = self.per_source.get_mut(&source)
        {
            queue.retain(|&other| other != id);
            if queue.is_empty() {
                self.per_source.remove(&source);
            }
        }
    }
}

/// One handshake's slot; gives it back when dropped.
pub(crate) struct Slot {
    id: u64,
    handshakes: Arc<Handshakes>,
    /// Resolves when a newer handshake took this slot.
    pub(crate) evicted: oneshot::Receiver<()>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.handshakes.lock().evict(self.id);
    }
}

impl Handshakes {
    pub(crate) fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each update leaves both indexes consistent before anything can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a handshake from `source`, evicting the oldest handshake of the
    /// same source if it has its share, else the oldest of all if every slot is taken.
    pub(crate) fn admit(self: &Arc<Self>, source: IpAddr) -> Slot {
        let mut state = self.lock();
        let own = state.per_source.get(&source).map_or(0, VecDeque::len);
        let victim = if own >= self.max_per_source {
            state
                .per_source
                .get(&source)
                .and_then(|q| q.front().copied())
        } else if state.pending.len() >= self.max_total {
            state.pending.keys().next().copied()
        } else {
            None
        };
        if let Some(victim) = victim {
            state.evict(victim);
        }
        let id = state.next;
        state.next += 1;
        let (cancel, evicted) = oneshot::channel();
        state.pending.insert(id, (source, cancel));
        state.per_source.entry(source).or_default().push_back(id);
        Slot {
            id,
            handshakes: Arc::clone(self),
            evicted,
        }
    }

    #[cfg(test)]
    fn in_progress(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_gives_way_first_from_its_own_source() {
        use oneshot::error::TryRecvError::{Closed, Empty};
        let handshakes = Handshakes::new(4, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut a1 = handshakes.admit(a);
        let mut a2 = handshakes.admit(a);
        let mut a3 = handshakes.admit(a);
        // `a` has its share: its own oldest goes.
        let _a4 = handshakes.admit(a);
        assert_eq!(a1.evicted.try_recv(), Err(Closed));
        assert_eq!(a2.evicted.try_recv(), Err(Empty));
        let mut b1 = handshakes.admit(b);
        assert_eq!(handshakes.in_progress(), 4);
        // Every slot is taken: the oldest of all goes, whoever's it is.
        let _b2 = handshakes.admit(b);
        assert_eq!(a2.evicted.try_recv(), Err(Closed));
        assert_eq!(a3.evicted.try_recv(), Err(Empty));
        assert_eq!(b1.evicted.try_recv(), Err(Empty));
        assert_eq!(handshakes.in_progress(), 4);
        drop((a1, a2, a3, b1));
        assert_eq!(handshakes.in_progress(), 2);
    }
}
