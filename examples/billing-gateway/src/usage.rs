//! The usage ledger: one event per forwarded customer request, appended as a JSON
//! line, and the idempotency keys that make a retried request count once.
//!
//! A request with an `Idempotency-Key` reserves it (per tenant) before anything goes
//! upstream: a repeat while it is in flight or after it was forwarded is refused, so it
//! is neither forwarded nor counted twice. A reservation whose request never reached
//! the provider is released, so the client's retry goes through. Keys are remembered
//! for 24 hours, at most [`MAX_KEYS`] of them.
//!
//! Billing fails closed: once the ledger cannot be written, every later request is
//! refused before it is forwarded.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

/// How long an idempotency key is remembered.
const REMEMBER: Duration = Duration::from_secs(24 * 3600);
/// The most idempotency keys remembered; the oldest are forgotten first.
pub const MAX_KEYS: usize = 100_000;

/// One billable request.
#[derive(Debug, Clone)]
pub struct UsageEvent<'a> {
    /// The tenant billed.
    pub tenant: &'a str,
    /// `live` or `test`.
    pub environment: &'a str,
    /// The provider called.
    pub provider: &'a str,
    /// The API key's id (public).
    pub key_id: &'a str,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<&'a str>,
}

/// Why a request may not go ahead.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The tenant already used this idempotency key.
    Duplicate,
    /// The ledger cannot be written: nothing may go upstream unbilled.
    LedgerDown,
}

#[derive(Default)]
struct Keys {
    order: VecDeque<(Instant, (String, String))>,
    held: HashSet<(String, String)>,
}

impl Keys {
    fn forget_old(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < REMEMBER && self.order.len() <= MAX_KEYS {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.held.remove(&key);
            }
        }
    }
}

/// The ledger.
pub struct UsageLedger {
    file: Mutex<File>,
    keys: Mutex<Keys>,
    down: AtomicBool,
}

/// A reserved idempotency key; [`UsageLedger::release`] gives it back.
#[derive(Debug)]
pub struct Reservation(Option<(String, String)>);

impl UsageLedger {
    /// Opens (appending, creating) the ledger file.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
            keys: Mutex::default(),
            down: AtomicBool::new(false),
        })
    }

    /// Reserves the request's idempotency key (if any) and records the event, before
    /// the request is forwarded.
    pub fn admit(&self, event: &UsageEvent<'_>) -> Result<Reservation, Refusal> {
        if self.down.load(Ordering::Acquire) {
            return Err(Refusal::LedgerDown);
        }
        let reservation = match event.idempotency_key {
            None => Reservation(None),
            Some(key) => {
                let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                keys.forget_old(now);
                let id = (event.tenant.to_owned(), key.to_owned());
                if !keys.held.insert(id.clone()) {
                    return Err(Refusal::Duplicate);
                }
                keys.order.push_back((now, id.clone()));
                Reservation(Some(id))
            }
        };
        let line = json!({
            "time_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "tenant": event.tenant,
            "environment": event.environment,
            "provider": event.provider,
            "key_id": event.key_id,
            "idempotency_key": event.idempotency_key,
        });
        let written = writeln!(
            self.file.lock().unwrap_or_else(|p| p.into_inner()),
            "{line}"
        );
        if written.is_err() {
            self.down.store(true, Ordering::Release);
            self.release(reservation);
            return Err(Refusal::LedgerDown);
        }
        Ok(reservation)
    }

    /// Gives a reservation back: its request never reached the provider.
    pub fn release(&self, reservation: Reservation) {
        if let Reservation(Some(id)) = reservation {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.held.remove(&id);
            keys.order.retain(|(_, k)| *k != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(tenant: &'a str, key: Option<&'a str>) -> UsageEvent<'a> {
        UsageEvent {
            tenant,
            environment: "live",
            provider: "openai",
            key_id: "k",
            idempotency_key: key,
        }
    }

    #[test]
    fn a_key_counts_once_per_tenant_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = UsageLedger::open(&dir.path().join("usage.jsonl")).unwrap();
        let first = ledger.admit(&event("acme", Some("k1"))).unwrap();
        assert_eq!(
            ledger.admit(&event("acme", Some("k1"))).unwrap_err(),
            Refusal::Duplicate
        );
        ledger.admit(&event("globex", Some("k1"))).unwrap();
        ledger.release(first);
        ledger.admit(&event("acme", Some("k1"))).unwrap();
        ledger.admit(&event("acme", None)).unwrap();
        ledger.admit(&event("acme", None)).unwrap();
        let lines = std::fs::read_to_string(dir.path().join("usage.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 5);
    }

    #[test]
    fn the_ledger_fails_closed() {
        let ledger = UsageLedger::open(Path::new("/dev/full")).unwrap();
        assert_eq!(
            ledger.admit(&event("acme", Some("k"))).unwrap_err(),
            Refusal::LedgerDown
        );
        assert_eq!(
            ledger.admit(&event("acme", None)).unwrap_err(),
            Refusal::LedgerDown
        );
    }

    #[test]
    fn remembered_keys_are_bounded() {
        let mut keys = Keys::default();
        let now = Instant::now();
        for i in 0..MAX_KEYS + 10 {
            let id = ("t".to_owned(), i.to_string());
            keys.held.insert(id.clone());
            keys.order.push_back((now, id));
        }
        keys.forget_old(now);
        assert_eq!(keys.order.len(), MAX_KEYS);
        assert!(!keys.held.contains(&("t".to_owned(), "0".to_owned())));
    }
}
