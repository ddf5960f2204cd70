//! The usage ledger: one event per customer request, appended as a JSON line. A
//! request retried with the same `Idempotency-Key` (per tenant) is counted once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

/// How long an idempotency key is remembered.
const REMEMBER: Duration = Duration::from_secs(24 * 3600);

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
    /// The upstream's status code.
    pub status: u16,
}

struct State {
    file: File,
    seen: HashMap<(String, String), Instant>,
}

/// The ledger.
pub struct UsageLedger {
    state: Mutex<State>,
}

impl UsageLedger {
    /// Opens (appending, creating) the ledger file.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            state: Mutex::new(State {
                file,
                seen: HashMap::new(),
            }),
        })
    }

    /// Records `event` unless its idempotency key was already counted for the tenant.
    /// Returns whether it was counted.
    pub fn record(&self, event: &UsageEvent<'_>) -> std::io::Result<bool> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(key) = event.idempotency_key {
            state
                .seen
                .retain(|_, at| now.duration_since(*at) < REMEMBER);
            let id = (event.tenant.to_owned(), key.to_owned());
            if state.seen.contains_key(&id) {
                return Ok(false);
            }
            state.seen.insert(id, now);
        }
        let line = json!({
            "time_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "tenant": event.tenant,
            "environment": event.environment,
            "provider": event.provider,
            "key_id": event.key_id,
            "idempotency_key": event.idempotency_key,
            "status": event.status,
        });
        writeln!(state.file, "{line}")?;
        Ok(true)
    }
}
