//! The usage ledger: one event per forwarded customer request, appended as a JSON
//! line, and the idempotency keys that make a retried request count once.
//!
//! A request with an `Idempotency-Key` reserves it (per tenant) before anything goes
//! upstream: a repeat while it is in flight or after it was sent is refused, so it is
//! neither forwarded nor counted twice. The event is recorded once a connection to the
//! provider is open, just before the request is sent; a request that could not reach
//! the provider is not recorded and releases its key, so the client's retry goes
//! through. Sent keys are remembered for 24 hours, at most [`MAX_KEYS`] of them.
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

/// Idempotency keys: those of requests in flight, and those of requests sent,
/// remembered for a day (at most [`MAX_KEYS`]; only sent ones are ever forgotten).
#[derive(Default)]
struct Keys {
    in_flight: HashSet<(String, String)>,
    sent: HashSet<(String, String)>,
    order: VecDeque<(Instant, (String, String))>,
}

impl Keys {
    fn forget_old(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < REMEMBER && self.order.len() <= MAX_KEYS {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.sent.remove(&key);
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

/// A reserved idempotency key (or none), held while its request is on its way.
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

    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `tenant`'s idempotency key, if the request has one: refused if a
    /// request with it is in flight or was sent. Refused too once the ledger failed.
    pub fn reserve(&self, tenant: &str, key: Option<&str>) -> Result<Reservation, Refusal> {
        if self.down.load(Ordering::Acquire) {
            return Err(Refusal::LedgerDown);
        }
        let Some(key) = key else {
            return Ok(Reservation(None));
        };
        let id = (tenant.to_owned(), key.to_owned());
        let mut keys = self.keys();
        keys.forget_old(Instant::now());
        if keys.sent.contains(&id) || !keys.in_flight.insert(id.clone()) {
            return Err(Refusal::Duplicate);
        }
        Ok(Reservation(Some(id)))
    }

    /// Gives a reservation back: its request was not sent.
    pub fn release(&self, reservation: Reservation) {
        if let Reservation(Some(id)) = reservation {
            self.keys().in_flight.remove(&id);
        }
    }

    /// Records `event` as the request is about to be sent on an open connection, and
    /// marks its idempotency key sent. If the ledger cannot be written the request
    /// must not be sent: the reservation is released and every later request refused.
    pub fn record(&self, reservation: Reservation, event: &UsageEvent<'_>) -> Result<(), Refusal> {
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
        if let Reservation(Some(id)) = reservation {
            let mut keys = self.keys();
            keys.in_flight.remove(&id);
            keys.sent.insert(id.clone());
            keys.order.push_back((Instant::now(), id));
        }
        Ok(())
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
    fn a_key_counts_once_per_tenant_unless_its_request_was_never_sent() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = UsageLedger::open(&dir.path().join("usage.jsonl")).unwrap();
        let first = ledger.reserve("acme", Some("k1")).unwrap();
        assert_eq!(
            ledger.reserve("acme", Some("k1")).unwrap_err(),
            Refusal::Duplicate
        );
        ledger.release(first); // never sent: the retry may go
        let retry = ledger.reserve("acme", Some("k1")).unwrap();
        ledger.record(retry, &event("acme", Some("k1"))).unwrap();
        assert_eq!(
            ledger.reserve("acme", Some("k1")).unwrap_err(),
            Refusal::Duplicate
        );
        let other = ledger.reserve("globex", Some("k1")).unwrap();
        ledger.record(other, &event("globex", Some("k1"))).unwrap();
        for _ in 0..2 {
            let none = ledger.reserve("acme", None).unwrap();
            ledger.record(none, &event("acme", None)).unwrap();
        }
        let lines = std::fs::read_to_string(dir.path().join("usage.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 4, "only sent requests are recorded");
    }

    #[test]
    fn the_ledger_fails_closed() {
        let ledger = UsageLedger::open(Path::new("/dev/full")).unwrap();
        let reservation = ledger.reserve("acme", Some("k")).unwrap();
        assert_eq!(
            ledger
                .record(reservation, &event("acme", Some("k")))
                .unwrap_err(),
            Refusal::LedgerDown
        );
        assert_eq!(
            ledger.reserve("acme", None).unwrap_err(),
            Refusal::LedgerDown
        );
    }

    #[test]
    fn remembered_keys_are_bounded() {
        let mut keys = Keys::default();
        let now = Instant::now();
        for i in 0..MAX_KEYS + 10 {
            let id = ("t".to_owned(), i.to_string());
            keys.sent.insert(id.clone());
            keys.order.push_back((now, id));
        }
        keys.in_flight.insert(("t".to_owned(), "flying".to_owned()));
        keys.forget_old(now);
        assert_eq!(keys.order.len(), MAX_KEYS);
        assert!(!keys.sent.contains(&("t".to_owned(), "0".to_owned())));
        assert!(
            keys.in_flight
                .contains(&("t".to_owned(), "flying".to_owned()))
        );
    }
}
