//! Snapshots through custody: a consistent view of the store for a caller allowed to
//! take one, at most [`MAX_SNAPSHOTS`] at a time on this node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Custody;
use crate::authz::{Authorized, SnapshotOp};
use crate::error::Result;
use crate::storage::snapshot::{Header, Snapshot, WriteError, Written};

/// Snapshots a node streams at once. Each holds a read transaction (which keeps the
/// pages of its view from being reused) and a blocking thread, so one is the bound.
pub(crate) const MAX_SNAPSHOTS: usize = 1;

/// Snapshots in progress on this node.
#[derive(Default)]
pub(super) struct SnapshotSlots(Arc<AtomicUsize>);

/// One snapshot's place among [`MAX_SNAPSHOTS`]; given back when dropped.
pub(crate) struct SnapshotSlot(Arc<AtomicUsize>);

impl Drop for SnapshotSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A snapshot under way: its view and header, and its slot until it is written.
pub(crate) struct SnapshotJob {
    snapshot: Snapshot,
    _slot: SnapshotSlot,
}

impl SnapshotJob {
    /// What its header says.
    pub(crate) fn header(&self) -> &Header {
        self.snapshot.header()
    }

    /// Writes it all but the trailer (see [`Snapshot::write_to`]); the view and the slot
    /// are given back when this returns, before the trailer goes out.
    pub(crate) fn write_to(self, out: impl std::io::Write) -> Result<Written, WriteError> {
        self.snapshot.write_to(out)
    }
}

impl Custody {
    /// A slot for a snapshot, if fewer than [`MAX_SNAPSHOTS`] are under way on this node.
    pub(crate) fn snapshot_slot(&self, _: &Authorized<SnapshotOp>) -> Option<SnapshotSlot> {
        let slots = &self.held.snapshots.0;
        slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SNAPSHOTS).then_some(n + 1)
            })
            .ok()
            .map(|_| SnapshotSlot(Arc::clone(slots)))
    }

    /// Takes the consistent view a snapshot is read from, in `slot`. Reads storage (the
    /// seal record), so it belongs on the blocking pool. Sealed or not: it needs no key.
    pub(crate) fn snapshot(
        &self,
        _: &Authorized<SnapshotOp>,
        slot: SnapshotSlot,
    ) -> Result<SnapshotJob> {
        Ok(SnapshotJob {
            snapshot: self.vault().snapshot()?,
            _slot: slot,
        })
    }

    /// Whether the daemon is stopping, as it changes: a snapshot stream ends then rather
    /// than hold its connection through the drain.
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.held.stopping.subscribe()
    }
}
