//! Backoff between retries, shared by everything vaultd retries (alert deliveries,
//! PostgreSQL transactions refused for racing another).

use std::time::Duration;

/// How long to wait before retry number `retry` (from 0): at least half of
/// min(cap, base × 2^retry), the rest random, so that callers which failed together do
/// not retry together.
pub(crate) fn jittered(retry: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(1_u32.checked_shl(retry).unwrap_or(u32::MAX))
        .min(cap);
    let half = ceiling / 2;
    let half_us = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
    // Without randomness (it never fails on Linux), the wait is just the lower half.
    let random = ring::rand::generate::<[u8; 8]>(&ring::rand::SystemRandom::new())
        .map_or(0, |r| u64::from_le_bytes(r.expose()));
    half + Duration::from_micros(random % half_us.saturating_add(1))
}
