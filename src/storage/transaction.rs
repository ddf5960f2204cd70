//! The atomic unit of writing: compare-and-set conditions plus the writes they guard.

use super::StoredValue;

/// An atomic multi-key write: conditions that must all hold, and writes applied only if they do.
///
/// ```
/// # use vaultd::storage::Transaction;
/// // Create `secret/acme/live/openai` only if nobody else has.
/// let txn = Transaction::new().require_absent("secret/acme/live/openai");
/// # let _ = txn;
/// ```
///
/// Submit it with [`Store::transact`](super::Store::transact).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    conditions: Vec<Condition>,
    writes: Vec<Write>,
    notices: Vec<Vec<u8>>,
}

/// A compare-and-set condition on one key, checked before any write of its transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `key` must hold no value.
    Absent {
        /// The key checked.
        key: Vec<u8>,
    },
    /// `key` must hold exactly `value`.
    Equals {
        /// The key checked.
        key: Vec<u8>,
        /// The value it must hold.
        value: StoredValue,
    },
    /// `key` must hold some value.
    Present {
        /// The key checked.
        key: Vec<u8>,
    },
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Store `value` under `key`, replacing any previous value.
    Put {
        /// The key written.
        key: Vec<u8>,
        /// The value stored.
        value: StoredValue,
    },
    /// Remove `key`; removing an absent key is not an error.
    Delete {
        /// The key removed.
        key: Vec<u8>,
    },
}

impl Transaction {
    /// An empty transaction: no conditions, no writes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `key` to hold no value.
    #[must_use]
    pub fn require_absent(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.conditions.push(Condition::Absent { key: key.into() });
        self
    }

    /// Requires `key` to hold exactly `value`.
    #[must_use]
    pub fn require_eq(mut self, key: impl Into<Vec<u8>>, value: StoredValue) -> Self {
        self.conditions.push(Condition::Equals {
            key: key.into(),
            value,
        });
        self
    }

    /// Requires `key` to hold some value.
    #[must_use]
    pub fn require_present(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.conditions.push(Condition::Present { key: key.into() });
        self
    }

    /// Stores `value` under `key` if every condition holds.
    #[must_use]
    pub fn put(mut self, key: impl Into<Vec<u8>>, value: StoredValue) -> Self {
        self.writes.push(Write::Put {
            key: key.into(),
            value,
        });
        self
    }

    /// Removes `key` if every condition holds.
    #[must_use]
    pub fn delete(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.writes.push(Write::Delete { key: key.into() });
        self
    }

    /// Tells the other nodes sharing the store `notice` (non-secret bytes: what to
    /// revoke or forget), in the store's change log, if and only if the transaction
    /// commits. An engine only one node uses keeps no change log and drops notices:
    /// the node acted on them itself.
    #[must_use]
    pub fn announce(mut self, notice: impl Into<Vec<u8>>) -> Self {
        self.notices.push(notice.into());
        self
    }

    /// The conditions, in the order they were added.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// The writes, in the order they were added.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// The notices for other nodes, in the order they were added.
    pub fn notices(&self) -> &[Vec<u8>] {
        &self.notices
    }
}

impl Condition {
    /// The key this condition checks.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Absent { key } | Self::Equals { key, .. } | Self::Present { key } => key,
        }
    }

    /// Whether the condition holds when its key currently holds `current`.
    pub fn holds(&self, current: Option<&[u8]>) -> bool {
        match (self, current) {
            (Self::Absent { .. }, current) => current.is_none(),
            (Self::Present { .. }, current) => current.is_some(),
            (Self::Equals { value, .. }, Some(current)) => value.as_bytes() == current,
            (Self::Equals { .. }, None) => false,
        }
    }
}

impl Write {
    /// The key this write changes.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: &[u8]) -> StoredValue {
        StoredValue::from_encoded_record(bytes.to_vec())
    }

    #[test]
    fn builder_keeps_order() {
        let txn = Transaction::new()
            .require_present("b")
            .require_absent("a")
            .put("z", value(b"1"))
            .delete("y");
        let condition_keys: Vec<&[u8]> = txn.conditions().iter().map(Condition::key).collect();
        let write_keys: Vec<&[u8]> = txn.writes().iter().map(Write::key).collect();
        assert_eq!(condition_keys, [b"b".as_slice(), b"a"]);
        assert_eq!(write_keys, [b"z".as_slice(), b"y"]);
    }

    #[test]
    fn condition_semantics() {
        let absent = Condition::Absent { key: b"k".to_vec() };
        let present = Condition::Present { key: b"k".to_vec() };
        let equals = Condition::Equals {
            key: b"k".to_vec(),
            value: value(b"v1"),
        };
        assert!(absent.holds(None));
        assert!(!absent.holds(Some(b"")));
        assert!(present.holds(Some(b"")));
        assert!(!present.holds(None));
        assert!(equals.holds(Some(b"v1")));
        assert!(!equals.holds(Some(b"v2")));
        assert!(!equals.holds(Some(b"v1\0")));
        assert!(!equals.holds(None));
    }
}
