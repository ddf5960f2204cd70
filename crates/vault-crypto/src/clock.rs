//! Time, injectable: every expiry, grace window, budget refill and cache lifetime in
//! vaultd and its client reads a [`Clock`] instead of the system's, so production runs on
//! [`SystemClock`] and tests move a [`ManualClock`] to the edges they care about
//! instead of sleeping.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Where the time comes from.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// Wall-clock time: what expiries are expressed in.
    fn now(&self) -> SystemTime;
    /// Monotonic time: what durations are measured with.
    fn instant(&self) -> Instant;
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that stands still until it is moved: the system's time when it was made,
/// plus whatever [`ManualClock::advance`] added since.
#[derive(Debug)]
pub struct ManualClock {
    wall: SystemTime,
    instant: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at the current system time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            wall: SystemTime::now(),
            instant: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *offset = offset.saturating_add(by);
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.wall.checked_add(self.offset()).unwrap_or(self.wall)
    }
    fn instant(&self) -> Instant {
        self.instant
            .checked_add(self.offset())
            .unwrap_or(self.instant)
    }
}

/// Unix milliseconds of `t` (0 before the epoch, saturating far after it): how times
/// cross the wire.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time `ms` Unix milliseconds name (the epoch for a negative value): the inverse
/// of [`unix_ms`] for times after the epoch.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Unix seconds of `t` (0 before the epoch).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let (wall, instant) = (clock.now(), clock.instant());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!((clock.now(), clock.instant()), (wall, instant));
        clock.advance(Duration::from_secs(3600));
        assert_eq!(clock.now(), wall + Duration::from_secs(3600));
        assert_eq!(clock.instant(), instant + Duration::from_secs(3600));
        assert_eq!(unix_ms(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(
            unix_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(7)),
            7
        );
    }
}
