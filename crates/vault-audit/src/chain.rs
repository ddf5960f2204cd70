//! The writer's position in the chain, and the lines it produces from there.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::Event;
use crate::keys::ChainKeys;
use crate::record::{Body, GENESIS, Hex, MAX_LINE, Payload, Record, chain_of, checkpoint_message};

/// The next record's seq and `prev`, and how many records no checkpoint covers yet.
/// `Clone` so a batch that could not be written can be undone.
#[derive(Clone)]
pub(crate) struct Chain {
    node: String,
    next_seq: u64,
    prev: [u8; 32],
    unsigned: u64,
}

/// The line for an event would exceed [`MAX_LINE`].
pub(crate) const TOO_LARGE: &str = "the record exceeds the 1 MiB line limit";

impl Chain {
    /// A new segment: the first record is seq 0 with an all-zero `prev`.
    pub(crate) fn genesis(node: String) -> Self {
        Self {
            node,
            next_seq: 0,
            prev: GENESIS,
            unsigned: 0,
        }
    }

    /// Continues after `last`, the final record of an existing log.
    pub(crate) fn resume(node: String, last: &Record) -> Self {
        let signed = matches!(last.body.payload, Payload::Checkpoint);
        Self {
            node,
            next_seq: last.body.seq.saturating_add(1),
            prev: last.chain.0,
            unsigned: u64::from(!signed),
        }
    }

    /// Records since the last checkpoint.
    pub(crate) fn unsigned(&self) -> u64 {
        self.unsigned
    }

    /// The `start` record that opens a segment, saying why.
    pub(crate) fn start(&mut self, reason: &str, keys: &dyn ChainKeys) -> String {
        let detail = BTreeMap::from([("reason".to_owned(), reason.to_owned())]);
        let (record, body_json) = self.seal(Payload::Start { detail }, keys);
        self.advance(&record);
        record.line_after(&body_json)
    }

    /// The `recovery` record written after a torn tail was moved aside.
    pub(crate) fn recovery(
        &mut self,
        detail: BTreeMap<String, String>,
        keys: &dyn ChainKeys,
    ) -> String {
        let (record, body_json) = self.seal(Payload::Recovery { detail }, keys);
        self.advance(&record);
        record.line_after(&body_json)
    }

    /// The `continuation` record that begins a reopened log, and its seq.
    pub(crate) fn continuation(
        &mut self,
        detail: BTreeMap<String, String>,
        keys: &dyn ChainKeys,
    ) -> (u64, String) {
        let (record, body_json) = self.seal(Payload::Continuation { detail }, keys);
        self.advance(&record);
        (record.body.seq, record.line_after(&body_json))
    }

    /// The line for `event`, and its seq.
    pub(crate) fn event(
        &mut self,
        event: Box<Event>,
        keys: &dyn ChainKeys,
    ) -> Result<(u64, String), &'static str> {
        let (record, body_json) = self.seal(Payload::Event(event), keys);
        let line = record.line_after(&body_json);
        if line.len() > MAX_LINE {
            return Err(TOO_LARGE);
        }
        self.advance(&record);
        Ok((record.body.seq, line))
    }

    /// A signed checkpoint line, or `None` if the signing key is unavailable.
    pub(crate) fn checkpoint(&mut self, keys: &dyn ChainKeys) -> Option<String> {
        let (mut record, body_json) = self.seal(Payload::Checkpoint, keys);
        let message = checkpoint_message(record.body.seq, &record.chain.0);
        record.sig = Some(Hex(keys.sign(&message)?));
        self.advance(&record);
        Some(record.line_after(&body_json))
    }

    /// The next record, chained and MAC'd (if the MAC key is available), unsigned,
    /// with its body's canonical JSON (serialised once: for the chain value, then
    /// as the start of the line).
    fn seal(&self, payload: Payload, keys: &dyn ChainKeys) -> (Record, String) {
        let body = Body {
            seq: self.next_seq,
            time_ms: now_ms(),
            node: self.node.clone(),
            payload,
            prev: Hex(self.prev),
        };
        let body_json = body.to_json();
        let chain = chain_of(&body.prev.0, &body_json);
        let record = Record {
            body,
            chain: Hex(chain),
            mac: keys.mac(&chain).map(Hex),
            sig: None,
        };
        (record, body_json)
    }

    /// Moves past `record`, which is about to be written.
    fn advance(&mut self, record: &Record) {
        self.next_seq = record.body.seq.saturating_add(1);
        self.prev = record.chain.0;
        self.unsigned = match record.body.payload {
            Payload::Checkpoint => 0,
            _ => self.unsigned.saturating_add(1),
        };
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
