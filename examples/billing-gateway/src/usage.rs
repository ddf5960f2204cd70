//! The usage ledger: one event per forwarded customer request, appended as a JSON
//! line, and the idempotency keys that make a retried request count once.
//!
//! A request with an `Idempotency-Key` reserves it (per tenant) before anything goes
//! upstream: a repeat while it is in flight or after it was sent is refused, so it is
//! neither forwarded nor counted twice. The event is recorded once a connection to the
//! provider is open, just before the request is sent. A [`Reservation`] dropped without
//! being recorded gives its key back: when the provider could not be reached, and when
//! the client went away and its request was abandoned mid-way. Either way nothing was
//! sent or counted, so the client's retry goes through.
//!
//! Sent keys are remembered for 24 hours, in a window per tenant, so that one tenant's
//! traffic never makes the gateway forget another tenant's keys:
//!
//! - a tenant holds at most [`MAX_KEYS_PER_TENANT`] keys, in flight or sent. A tenant
//!   at its cap forgets its own oldest sent key to take a new one: its window is 24
//!   hours or its last [`MAX_KEYS_PER_TENANT`] keys, whichever is shorter.
//! - all tenants together hold at most [`MAX_KEYS`] keys, which bounds memory (under
//!   300 bytes a key for the longest, 128-byte, keys). Once that many are held, a new
//!   key from a tenant below its own cap is refused ([`Refusal::AtCapacity`], a 503)
//!   until old keys expire. No key of another tenant is forgotten to make room: the
//!   client can retry a refused request, but a retry whose key was forgotten would be
//!   forwarded and billed twice. Requests without an `Idempotency-Key` are not affected.
//!
//! Billing fails closed: once the ledger cannot be written, every later request is
//! refused before it is forwarded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

/// How long an idempotency key is remembered.
const REMEMBER: Duration = Duration::from_secs(24 * 3600);
/// The most idempotency keys one tenant holds; its oldest sent ones are forgotten
/// first, and never another tenant's.
pub const MAX_KEYS_PER_TENANT: usize = 100_000;
/// The most idempotency keys held over all tenants; beyond it new keys are refused.
pub const MAX_KEYS: usize = 1_000_000;

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
    /// The gateway holds [`MAX_KEYS`] idempotency keys and will not forget another
    /// tenant's to take this one.
    AtCapacity,
    /// The ledger cannot be written: nothing may go upstream unbilled.
    LedgerDown,
}

/// One tenant's idempotency keys: those of its requests in flight, and those of its
/// requests sent, oldest first.
#[derive(Default)]
struct Window {
    in_flight: HashSet<String>,
    sent: HashSet<Arc<str>>,
    order: VecDeque<(Instant, Arc<str>)>,
}

impl Window {
    fn holds(&self, key: &str) -> bool {
        self.in_flight.contains(key) || self.sent.contains(key)
    }

    fn len(&self) -> usize {
        self.in_flight.len() + self.order.len()
    }

    fn is_empty(&self) -> bool {
        self.in_flight.is_empty() && self.order.is_empty()
    }

    /// Forgets the keys sent a day or more before `now`; returns how many.
    fn forget_expired(&mut self, now: Instant) -> usize {
        let mut forgotten = 0;
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= REMEMBER)
        {
            self.forget_oldest();
            forgotten += 1;
        }
        forgotten
    }

    /// Forgets the oldest sent key, if there is one. Keys in flight are never
    /// forgotten: their requests may yet be sent.
    fn forget_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_front() else {
            return false;
        };
        self.sent.remove(&key);
        true
    }
}

/// The idempotency keys of all tenants, each in its own [`Window`].
struct Keys {
    tenants: HashMap<String, Window>,
    /// Keys in all windows, in flight or sent.
    held: usize,
    per_tenant: usize,
    total: usize,
}

impl Keys {
    fn new(per_tenant: usize, total: usize) -> Self {
        Self {
            tenants: HashMap::new(),
            held: 0,
            per_tenant,
            total,
        }
    }

    /// Reserves `tenant`'s `key` at `now`: refused if the tenant holds it already, or
    /// if taking it would need another tenant's key forgotten.
    fn reserve(&mut self, tenant: &str, key: &str, now: Instant) -> Result<(), Refusal> {
        if let Some(window) = self.tenants.get_mut(tenant) {
            self.held -= window.forget_expired(now);
            if window.holds(key) {
                return Err(Refusal::Duplicate);
            }
            if window.len() >= self.per_tenant {
                // A full window makes room by forgetting its own oldest sent key.
                if !window.forget_oldest() {
                    return Err(Refusal::AtCapacity);
                }
                window.in_flight.insert(key.to_owned());
                return Ok(());
            }
        }
        if self.held >= self.total {
            self.forget_expired_everywhere(now);
            if self.held >= self.total {
                return Err(Refusal::AtCapacity);
            }
        }
        self.tenants
            .entry(tenant.to_owned())
            .or_default()
            .in_flight
            .insert(key.to_owned());
        self.held += 1;
        Ok(())
    }

    /// Gives back `tenant`'s `key`, reserved but never sent.
    fn release(&mut self, tenant: &str, key: &str) {
        if let Some(window) = self.tenants.get_mut(tenant)
            && window.in_flight.remove(key)
        {
            self.held -= 1;
            if window.is_empty() {
                self.tenants.remove(tenant);
            }
        }
    }

    /// Marks `tenant`'s reserved `key` sent at `now`.
    fn mark_sent(&mut self, tenant: &str, key: &str, now: Instant) {
        if let Some(window) = self.tenants.get_mut(tenant)
            && window.in_flight.remove(key)
        {
            let key: Arc<str> = Arc::from(key);
            window.sent.insert(Arc::clone(&key));
            window.order.push_back((now, key));
        }
    }

    fn forget_expired_everywhere(&mut self, now: Instant) {
        let mut forgotten = 0;
        self.tenants.retain(|_, window| {
            forgotten += window.forget_expired(now);
            !window.is_empty()
        });
        self.held -= forgotten;
    }
}

/// The ledger.
pub struct UsageLedger {
    file: Mutex<File>,
    keys: Mutex<Keys>,
    down: AtomicBool,
}

/// A tenant's reserved idempotency key.
#[derive(Debug)]
struct TenantKey {
    tenant: String,
    key: String,
}

/// A reserved idempotency key (or none), held while its request is on its way.
///
/// [`Reservation::record`] consumes it as the request is sent. Dropped unrecorded, it
/// gives its key back: when the provider cannot be reached, and when the client goes
/// away and hyper drops the request's future.
#[must_use = "a reservation dropped at once gives its key back"]
pub struct Reservation<'l> {
    ledger: &'l UsageLedger,
    key: Option<TenantKey>,
}

impl std::fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(TenantKey { tenant, key }) = self.key.take() {
            self.ledger.keys().release(&tenant, &key);
        }
    }
}

impl Reservation<'_> {
    /// Records `event` as the request is about to be sent on an open connection, and
    /// marks its idempotency key sent. If the ledger cannot be written the request
    /// must not be sent: the key is given back and every later request refused.
    pub fn record(mut self, event: &UsageEvent<'_>) -> Result<(), Refusal> {
        debug_assert!(
            self.key.as_ref().is_none_or(|reserved| {
                reserved.tenant == event.tenant
                    && Some(reserved.key.as_str()) == event.idempotency_key
            }),
            "the event is the reserved request's"
        );
        self.ledger.append(event)?;
        if let Some(TenantKey { tenant, key }) = self.key.take() {
            self.ledger.keys().mark_sent(&tenant, &key, Instant::now());
        }
        Ok(())
    }
}

impl UsageLedger {
    /// Opens (appending, creating) the ledger file.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
            keys: Mutex::new(Keys::new(MAX_KEYS_PER_TENANT, MAX_KEYS)),
            down: AtomicBool::new(false),
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `tenant`'s idempotency key, if the request has one: refused if a
    /// request with it is in flight or was sent, or if no key can be taken without
    /// forgetting another tenant's. Refused too once the ledger failed.
    pub fn reserve(&self, tenant: &str, key: Option<&str>) -> Result<Reservation<'_>, Refusal> {
        if self.down.load(Ordering::Acquire) {
            return Err(Refusal::LedgerDown);
        }
        let Some(key) = key else {
            return Ok(Reservation {
                ledger: self,
                key: None,
            });
        };
        self.keys().reserve(tenant, key, Instant::now())?;
        Ok(Reservation {
            ledger: self,
            key: Some(TenantKey {
                tenant: tenant.to_owned(),
                key: key.to_owned(),
            }),
        })
    }

    /// Appends `event`; on failure, refuses every later request.
    fn append(&self, event: &UsageEvent<'_>) -> Result<(), Refusal> {
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
            return Err(Refusal::LedgerDown);
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

    /// `held` counts exactly the keys in the windows, and no window is over its cap.
    fn assert_consistent(keys: &Keys) {
        let windows: usize = keys.tenants.values().map(Window::len).sum();
        assert_eq!(keys.held, windows);
        assert!(keys.held <= keys.total);
        for window in keys.tenants.values() {
            assert!(window.len() <= keys.per_tenant);
            assert_eq!(window.sent.len(), window.order.len());
        }
    }

    fn send(keys: &mut Keys, tenant: &str, key: &str, now: Instant) {
        keys.reserve(tenant, key, now).unwrap();
        keys.mark_sent(tenant, key, now);
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
        drop(first); // never sent: the retry may go
        let retry = ledger.reserve("acme", Some("k1")).unwrap();
        retry.record(&event("acme", Some("k1"))).unwrap();
        assert_eq!(
            ledger.reserve("acme", Some("k1")).unwrap_err(),
            Refusal::Duplicate
        );
        let other = ledger.reserve("globex", Some("k1")).unwrap();
        other.record(&event("globex", Some("k1"))).unwrap();
        for _ in 0..2 {
            let none = ledger.reserve("acme", None).unwrap();
            none.record(&event("acme", None)).unwrap();
        }
        let lines = std::fs::read_to_string(dir.path().join("usage.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 4, "only sent requests are recorded");
    }

    #[test]
    fn a_request_dropped_mid_flight_gives_its_key_back() {
        let ledger = UsageLedger::open(Path::new("/dev/null")).unwrap();
        // The request reserves its key, then waits on the provider.
        let mut request = Box::pin(async {
            let _reservation = ledger.reserve("acme", Some("k1")).unwrap();
            std::future::pending::<()>().await;
        });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(request.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            ledger.reserve("acme", Some("k1")).unwrap_err(),
            Refusal::Duplicate,
            "refused while in flight"
        );
        // The client goes away: hyper drops the request's future.
        drop(request);
        let _retry = ledger
            .reserve("acme", Some("k1"))
            .expect("the client's retry is accepted");
    }

    #[test]
    fn a_tenant_cannot_push_another_tenants_keys_out() {
        let ledger = UsageLedger::open(Path::new("/dev/null")).unwrap();
        let globex = ledger.reserve("globex", Some("g1")).unwrap();
        globex.record(&event("globex", Some("g1"))).unwrap();
        for i in 0..=MAX_KEYS_PER_TENANT {
            let key = i.to_string();
            let acme = ledger.reserve("acme", Some(&key)).unwrap();
            acme.record(&event("acme", Some(&key))).unwrap();
        }
        assert_eq!(
            ledger.reserve("globex", Some("g1")).unwrap_err(),
            Refusal::Duplicate,
            "globex's retry must still be refused, not billed twice"
        );
        let _forgotten = ledger
            .reserve("acme", Some("0"))
            .expect("acme's own oldest key made room for its newest");
    }

    #[test]
    fn the_ledger_fails_closed() {
        let ledger = UsageLedger::open(Path::new("/dev/full")).unwrap();
        let reservation = ledger.reserve("acme", Some("k")).unwrap();
        assert_eq!(
            reservation.record(&event("acme", Some("k"))).unwrap_err(),
            Refusal::LedgerDown
        );
        assert_eq!(
            ledger.reserve("acme", None).unwrap_err(),
            Refusal::LedgerDown
        );
        assert!(ledger.keys().tenants.is_empty(), "the key was given back");
    }

    #[test]
    fn a_full_window_forgets_only_its_own_oldest_sent_keys() {
        let mut keys = Keys::new(3, 100);
        let now = Instant::now();
        send(&mut keys, "globex", "g1", now);
        keys.reserve("acme", "flying", now).unwrap();
        for i in 0..5 {
            send(&mut keys, "acme", &i.to_string(), now);
        }
        assert_consistent(&keys);
        for (key, remembered) in [("0", false), ("1", false), ("2", false), ("3", true)] {
            assert_eq!(keys.tenants["acme"].holds(key), remembered, "{key}");
        }
        assert!(keys.tenants["acme"].holds("flying"), "in flight: kept");
        assert!(keys.tenants["globex"].holds("g1"));

        // A window of keys all in flight has nothing it may forget.
        let mut keys = Keys::new(2, 100);
        keys.reserve("acme", "a", now).unwrap();
        keys.reserve("acme", "b", now).unwrap();
        assert_eq!(
            keys.reserve("acme", "c", now).unwrap_err(),
            Refusal::AtCapacity
        );
        assert_consistent(&keys);
    }

    #[test]
    fn at_capacity_new_keys_are_refused_and_nobody_is_forgotten() {
        let mut keys = Keys::new(2, 4);
        let now = Instant::now();
        for (tenant, key) in [("acme", "a1"), ("acme", "a2"), ("globex", "g1")] {
            send(&mut keys, tenant, key, now);
        }
        keys.reserve("globex", "g2", now).unwrap(); // in flight: held too
        assert_eq!(
            keys.reserve("initech", "i1", now).unwrap_err(),
            Refusal::AtCapacity
        );
        assert!(!keys.tenants.contains_key("initech"));
        // A tenant at its own cap still takes new keys, in place of its own oldest.
        send(&mut keys, "acme", "a3", now);
        assert!(!keys.tenants["acme"].holds("a1"));
        assert!(keys.tenants["globex"].holds("g1") && keys.tenants["globex"].holds("g2"));
        assert_consistent(&keys);
        // A key given back frees its place.
        keys.release("globex", "g2");
        send(&mut keys, "initech", "i1", now);
        assert_consistent(&keys);
        // So do keys a day old.
        assert_eq!(
            keys.reserve("initech", "i2", now).unwrap_err(),
            Refusal::AtCapacity
        );
        send(&mut keys, "umbrella", "u1", now + REMEMBER);
        assert!(!keys.tenants.contains_key("acme"), "its keys expired");
        assert_consistent(&keys);
    }

    #[test]
    fn sent_keys_are_remembered_for_a_day_and_in_flight_ones_until_given_back() {
        let mut keys = Keys::new(10, 100);
        let now = Instant::now();
        send(&mut keys, "acme", "sent", now);
        keys.reserve("acme", "flying", now).unwrap();
        let almost = now + REMEMBER - Duration::from_secs(1);
        assert_eq!(
            keys.reserve("acme", "sent", almost).unwrap_err(),
            Refusal::Duplicate
        );
        let tomorrow = now + REMEMBER;
        assert_eq!(
            keys.reserve("acme", "flying", tomorrow).unwrap_err(),
            Refusal::Duplicate
        );
        keys.reserve("acme", "sent", tomorrow).unwrap();
        assert_consistent(&keys);
        keys.release("acme", "sent");
        keys.release("acme", "flying");
        assert!(keys.tenants.is_empty());
        assert_consistent(&keys);
    }
}
