//! The cache behind `Client::verify_api_key`: recent positive verifications, so that
//! a gateway does not ask vaultd about the same key on every request of a customer.
//!
//! - **Keyed by an HMAC, never by the key.** An entry is found by HMAC-SHA256 of the
//!   key text under a random 32-byte key made for this client and held in vault-crypto's
//!   locked arena (never swapped, never in a core dump). A plain SHA-256 would find
//!   entries as well, but it is the same function everywhere: a digest left in a heap
//!   dump or a swap file would confirm a guessed or leaked key offline, and link one
//!   key's use across processes. A tag under a per-client key means nothing outside
//!   this process. The key text itself is never stored.
//! - **Only what vaultd lets be reused**: until the answer's `cache_until_unix_ms`
//!   (vaultd caps it by `[apikeys] cache` and by the key's expiry or grace end), read on
//!   the client's clock and never longer than [`MAX_FRESH`] whatever the clocks' skew;
//!   never an answer for a key with a daily quota (each verification of one is charged
//!   by vaultd); and only while the revocation watch of the endpoint that answered has
//!   been connected without a break since before the question was sent. (Which calls
//!   may be answered from here at all is `verify`'s rule: those of cost 1 or less.)
//! - **Environment and scope are judged again** on every hit, against what vaultd said
//!   about the key.
//! - **Revocation**: a notice evicts the key at once and its id is remembered, in case
//!   the answer that would cache it is still on its way (they travel on different
//!   streams); a watch that breaks, or says it missed notices, clears every entry.
//! - **Bounded**: at most `capacity` entries; when full, stale entries go first, then
//!   the one that would go stale soonest.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use vault_crypto::clock::SharedClock;
use vault_crypto::{CryptoError, MacKey, SystemKey};

use crate::apikey::{ApiKeyRefusal, ApiKeyText, VerifiedKey};
use crate::cache::Tombstones;
use crate::environment::Environment;
use crate::error::Error;

/// The longest an answer is reused, whatever vaultd's time and this client's say.
pub(crate) const MAX_FRESH: Duration = Duration::from_secs(60);

/// An entry's name: HMAC-SHA256 of the key text under the cache's own key.
pub(crate) type Tag = [u8; 32];

struct Entry {
    verified: VerifiedKey,
    /// The endpoint that answered; its watch vouches for the entry.
    node: usize,
    /// That watch's epoch when the question was sent.
    epoch: u64,
    fresh_until: Instant,
}

/// Where and when an answer to cache came from.
pub(crate) struct Answered {
    pub(crate) node: usize,
    /// The answering endpoint's watch epoch before the question was sent (0: down).
    pub(crate) epoch: u64,
    /// vaultd's `cache_until_unix_ms`.
    pub(crate) cache_until: SystemTime,
}

/// Recent verifications, by tag.
pub(crate) struct KeyCache {
    clock: SharedClock,
    /// `None`: nothing is cached (no revocation watch, or a capacity of 0).
    tagger: Option<MacKey>,
    capacity: usize,
    entries: RwLock<HashMap<Tag, Entry>>,
    /// Recently revoked key ids.
    revoked: Mutex<Tombstones>,
}

impl KeyCache {
    /// A cache of at most `capacity` entries (0: none), fresh by `clock`; its tag key
    /// is generated now.
    pub(crate) fn new(clock: SharedClock, capacity: usize) -> Result<Self, CryptoError> {
        let tagger = match capacity {
            0 => None,
            _ => Some(SystemKey::generate()?.mac_key()?),
        };
        Ok(Self {
            clock,
            tagger,
            capacity,
            entries: RwLock::default(),
            revoked: Mutex::default(),
        })
    }

    /// The entry name of `key`; `None` when the cache is off.
    pub(crate) fn tag(&self, key: &ApiKeyText) -> Option<Tag> {
        let tagger = self.tagger.as_ref()?;
        Some(tagger.sign(key.expose_secret().as_bytes()))
    }

    /// The cached verdict on the key tagged `tag` for a request in `environment`
    /// needing `scope`, if an entry is fresh and its watch vouches for it:
    /// `watch_epoch` says what epoch an endpoint's revocation watch is in now.
    pub(crate) fn lookup(
        &self,
        tag: &Tag,
        environment: Environment,
        scope: Option<&str>,
        watch_epoch: impl Fn(usize) -> u64,
    ) -> Option<Result<VerifiedKey, Error>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(tag)?;
        let vouched = entry.epoch != 0
            && watch_epoch(entry.node) == entry.epoch
            && self.clock.instant() < entry.fresh_until;
        if !vouched {
            return None;
        }
        // vaultd's own words for the same refusals.
        if entry.verified.environment != environment {
            return Some(Err(Error::ApiKeyRefused {
                refusal: ApiKeyRefusal::Environment,
                message: "the API key belongs to the other environment (live and test never mix)"
                    .to_owned(),
            }));
        }
        if let Some(scope) = scope
            && !entry.verified.scopes.iter().any(|s| s == scope)
        {
            return Some(Err(Error::ApiKeyRefused {
                refusal: ApiKeyRefusal::Scope,
                message: "the API key lacks the scope this request needs".to_owned(),
            }));
        }
        Some(Ok(entry.verified.clone()))
    }

    /// Caches what vaultd answered for the key tagged `tag`, if it may be reused (see
    /// the module's rules). Returns whether it was cached.
    pub(crate) fn insert(
        &self,
        tag: Tag,
        verified: &VerifiedKey,
        answered: &Answered,
        watch_epoch: impl Fn(usize) -> u64,
    ) -> bool {
        if self.tagger.is_none() || verified.quota_remaining.is_some() {
            return false;
        }
        let left = answered
            .cache_until
            .duration_since(self.clock.now())
            .unwrap_or_default()
            .min(MAX_FRESH);
        if left.is_zero() {
            return false;
        }
        let now = self.clock.instant();
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock the revocation path takes first: a notice handled
        // before this point is seen here, one handled after evicts the entry.
        let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        let watched = answered.epoch != 0 && watch_epoch(answered.node) == answered.epoch;
        if !watched || revoked.contains(&verified.key_id) {
            return false;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&tag) {
            entries.retain(|_, e| e.fresh_until > now);
            let soonest = entries
                .iter()
                .min_by_key(|(_, e)| e.fresh_until)
                .map(|(t, _)| *t);
            if entries.len() >= self.capacity
                && let Some(soonest) = soonest
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(
            tag,
            Entry {
                verified: verified.clone(),
                node: answered.node,
                epoch: answered.epoch,
                fresh_until: now + left,
            },
        );
        true
    }

    /// Handles a revocation notice for key `key_id`: evicts its entries and remembers
    /// it. Returns how many entries went.
    pub(crate) fn evict_key(&self, key_id: &str) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(key_id);
        let before = entries.len();
        entries.retain(|_, e| e.verified.key_id != key_id);
        before - entries.len()
    }

    /// Drops every entry (a watch broke: revocations may have been missed).
    pub(crate) fn clear(&self) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let gone = entries.len();
        entries.clear();
        gone
    }

    /// Entries, fresh or not.
    pub(crate) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vault_crypto::clock::{Clock, ManualClock};
    use vault_proto::apikey;

    use super::*;

    fn key(id: &str) -> ApiKeyText {
        let mut text = String::with_capacity(apikey::MAX_LEN);
        apikey::compose("live", id, "hV3kP9sQ2wE5rT7yU1iO3pAs", &mut text);
        ApiKeyText::from(text)
    }

    fn verified(id: &str) -> VerifiedKey {
        VerifiedKey {
            key_id: id.into(),
            tenant: "acme".into(),
            environment: Environment::Live,
            scopes: vec!["usage:read".into()],
            quota_remaining: None,
        }
    }

    fn answered(clock: &dyn Clock, for_: Duration) -> Answered {
        Answered {
            node: 0,
            epoch: 1,
            cache_until: clock.now() + for_,
        }
    }

    const WATCHING: fn(usize) -> u64 = |_| 1;

    fn cache(clock: &Arc<ManualClock>, capacity: usize) -> KeyCache {
        KeyCache::new(clock.clone(), capacity).unwrap()
    }

    #[test]
    fn entries_are_named_by_a_per_client_hmac_not_by_the_key() {
        let clock = ManualClock::new();
        let (a, b) = (cache(&clock, 8), cache(&clock, 8));
        let k = key("4f9XbQ2mT0aZ");
        let tag = a.tag(&k).unwrap();
        assert_eq!(tag, a.tag(&k).unwrap(), "stable within one client");
        assert_ne!(tag, b.tag(&k).unwrap(), "meaningless in another");
        let text = k.expose_secret().as_bytes();
        assert!(!tag.windows(8).any(|w| text.windows(8).any(|t| t == w)));
        assert!(cache(&clock, 0).tag(&k).is_none(), "capacity 0: no cache");
    }

    #[test]
    fn a_hit_is_served_until_vaultd_said_and_judged_again() {
        let clock = ManualClock::new();
        let cache = cache(&clock, 8);
        let tag = cache.tag(&key("4f9XbQ2mT0aZ")).unwrap();
        let ok = verified("4f9XbQ2mT0aZ");
        assert!(cache.insert(
            tag,
            &ok,
            &answered(&*clock, Duration::from_secs(5)),
            WATCHING
        ));
        let hit = |env, scope| cache.lookup(&tag, env, scope, WATCHING);
        assert_eq!(hit(Environment::Live, None).unwrap().unwrap(), ok);
        assert!(hit(Environment::Live, Some("usage:read")).unwrap().is_ok());
        assert!(matches!(
            hit(Environment::Live, Some("admin")),
            Some(Err(Error::ApiKeyRefused {
                refusal: ApiKeyRefusal::Scope,
                ..
            }))
        ));
        assert!(matches!(
            hit(Environment::Test, None),
            Some(Err(Error::ApiKeyRefused {
                refusal: ApiKeyRefusal::Environment,
                ..
            }))
        ));
        // A broken or reconnected watch vouches for nothing.
        assert!(cache.lookup(&tag, Environment::Live, None, |_| 0).is_none());
        assert!(cache.lookup(&tag, Environment::Live, None, |_| 2).is_none());
        clock.advance(Duration::from_millis(4_999));
        assert!(hit(Environment::Live, None).is_some());
        clock.advance(Duration::from_millis(1));
        assert!(
            hit(Environment::Live, None).is_none(),
            "served past cache_until"
        );
    }

    #[test]
    fn what_may_not_be_reused_is_not_cached() {
        let clock = ManualClock::new();
        let cache = cache(&clock, 8);
        let tag = cache.tag(&key("4f9XbQ2mT0aZ")).unwrap();
        let five = answered(&*clock, Duration::from_secs(5));
        let metered = VerifiedKey {
            quota_remaining: Some(9),
            ..verified("4f9XbQ2mT0aZ")
        };
        assert!(!cache.insert(tag, &metered, &five, WATCHING), "a quota key");
        let now = answered(&*clock, Duration::ZERO);
        assert!(!cache.insert(tag, &verified("4f9XbQ2mT0aZ"), &now, WATCHING));
        let unwatched = Answered {
            epoch: 0,
            ..answered(&*clock, Duration::from_secs(5))
        };
        assert!(!cache.insert(tag, &verified("4f9XbQ2mT0aZ"), &unwatched, |_| 0));
        // The watch reconnected while the question was out: a notice may be lost.
        assert!(!cache.insert(tag, &verified("4f9XbQ2mT0aZ"), &five, |_| 2));
        // A skewed clock cannot stretch an answer past a minute.
        let far = answered(&*clock, Duration::from_secs(3600));
        assert!(cache.insert(tag, &verified("4f9XbQ2mT0aZ"), &far, WATCHING));
        clock.advance(MAX_FRESH);
        assert!(
            cache
                .lookup(&tag, Environment::Live, None, WATCHING)
                .is_none()
        );
    }

    #[test]
    fn a_revocation_evicts_and_keeps_a_late_answer_out() {
        let clock = ManualClock::new();
        let cache = cache(&clock, 8);
        let five = answered(&*clock, Duration::from_secs(5));
        let (a, b) = (key("AAAAAAAAAAAA"), key("BBBBBBBBBBBB"));
        let (ta, tb) = (cache.tag(&a).unwrap(), cache.tag(&b).unwrap());
        assert!(cache.insert(ta, &verified("AAAAAAAAAAAA"), &five, WATCHING));
        assert!(cache.insert(tb, &verified("BBBBBBBBBBBB"), &five, WATCHING));
        assert_eq!(cache.evict_key("AAAAAAAAAAAA"), 1);
        assert!(
            cache
                .lookup(&ta, Environment::Live, None, WATCHING)
                .is_none()
        );
        assert!(
            cache
                .lookup(&tb, Environment::Live, None, WATCHING)
                .is_some()
        );
        // The answer that verified it arrives after the notice: not cached.
        assert!(!cache.insert(ta, &verified("AAAAAAAAAAAA"), &five, WATCHING));
        assert_eq!(cache.clear(), 1);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_cache_is_bounded_and_drops_what_goes_stale_first() {
        let clock = ManualClock::new();
        let cache = cache(&clock, 2);
        let ids = ["AAAAAAAAAAAA", "BBBBBBBBBBBB", "CCCCCCCCCCCC"];
        let tags: Vec<Tag> = ids.iter().map(|id| cache.tag(&key(id)).unwrap()).collect();
        let until = |s| answered(&*clock, Duration::from_secs(s));
        assert!(cache.insert(tags[0], &verified(ids[0]), &until(3), WATCHING));
        assert!(cache.insert(tags[1], &verified(ids[1]), &until(5), WATCHING));
        assert!(cache.insert(tags[2], &verified(ids[2]), &until(5), WATCHING));
        assert_eq!(cache.len(), 2);
        let cached = |i: usize| {
            cache
                .lookup(&tags[i], Environment::Live, None, WATCHING)
                .is_some()
        };
        assert!(
            !cached(0) && cached(1) && cached(2),
            "the soonest stale went"
        );
    }
}
