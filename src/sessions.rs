//! Lease sessions held by the daemon: one X25519-derived key per session, bound to
//! the caller's identity, expiring, bounded per identity and in total, and all wiped
//! on seal. Sessions need no root key, so they work while the vault is sealed.
//!
//! An identity at its bound (`leases.sessions_per_identity`) that opens another loses
//! its least recently used session, so replicas sharing one identity keep the
//! sessions they use and only an idle one goes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vault_crypto::CryptoError;
use vault_crypto::session::{SessionKey, SessionOffer, Transcript};

use crate::identity::Identity;
use crate::ids::SessionId;
use vault_crypto::clock::{SharedClock, unix_ms};

/// A session: its key and whose it is.
pub(crate) struct Session {
    pub(crate) identity: Identity,
    pub(crate) key: SessionKey,
    expires: Instant,
    /// When it was last opened or used, as ticks of [`Sessions::uses`].
    last_used: AtomicU64,
}

/// Why a session could not be used or opened.
#[derive(Debug)]
pub(crate) enum SessionError {
    /// Unknown, expired, or another identity's.
    Unknown,
    /// The client's public key is malformed.
    BadPublicKey,
    /// Every session slot is taken.
    Full,
    /// Randomness or locked memory failed.
    Crypto(CryptoError),
}

/// A newly opened session, for the response.
pub(crate) struct Opened {
    pub(crate) id: SessionId,
    pub(crate) server_public: [u8; 32],
    pub(crate) expires_unix_ms: i64,
}

/// The daemon's sessions.
pub(crate) struct Sessions {
    map: Mutex<HashMap<SessionId, Arc<Session>>>,
    ttl: Duration,
    max_total: usize,
    per_identity: usize,
    clock: SharedClock,
    /// Orders uses: bumped by every open and every use.
    uses: AtomicU64,
}

impl Sessions {
    pub(crate) fn new(
        ttl: Duration,
        max_total: usize,
        per_identity: usize,
        clock: SharedClock,
    ) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            ttl,
            max_total,
            per_identity,
            clock,
            uses: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> u64 {
        self.uses.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
        // Insertions and removals leave the map consistent even if a holder panicked.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `identity` from the client's public key.
    pub(crate) fn open(
        &self,
        identity: &Identity,
        client_public: &[u8],
    ) -> Result<Opened, SessionError> {
        let client_public: [u8; 32] = client_public
            .try_into()
            .map_err(|_| SessionError::BadPublicKey)?;
        let offer = SessionOffer::generate().map_err(SessionError::Crypto)?;
        let server_public = *offer.public_key();
        let id = SessionId::generate().map_err(SessionError::Crypto)?;
        let key = offer
            .agree(
                &client_public,
                &Transcript {
                    client_public: &client_public,
                    server_public: &server_public,
                    identity: identity.as_str(),
                    session_id: id.as_str(),
                },
            )
            .map_err(|e| match e {
                CryptoError::PublicKey => SessionError::BadPublicKey,
                other => SessionError::Crypto(other),
            })?;
        let now = self.clock.instant();
        let session = Arc::new(Session {
            identity: identity.clone(),
            key,
            expires: now + self.ttl,
            last_used: AtomicU64::new(self.tick()),
        });
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        let mut own: Vec<(u64, SessionId)> = map
            .iter()
            .filter(|(_, s)| s.identity == *identity)
            .map(|(id, s)| (s.last_used.load(Ordering::Relaxed), id.clone()))
            .collect();
        if own.len() >= self.per_identity {
            // An identity at its bound only ever evicts its own least recently used.
            own.sort_unstable();
            for (_, idle) in own.iter().take(own.len() + 1 - self.per_identity) {
                map.remove(idle);
            }
        } else if map.len() >= self.max_total {
            return Err(SessionError::Full);
        }
        map.insert(id.clone(), session);
        Ok(Opened {
            id,
            server_public,
            expires_unix_ms: unix_ms(self.clock.now() + self.ttl),
        })
    }

    /// The caller's live session `id`.
    pub(crate) fn get(&self, identity: &Identity, id: &str) -> Result<Arc<Session>, SessionError> {
        let id = SessionId::parse(id).ok_or(SessionError::Unknown)?;
        let map = self.lock();
        match map.get(&id) {
            Some(s) if s.identity == *identity && s.expires > self.clock.instant() => {
                s.last_used.store(self.tick(), Ordering::Relaxed);
                Ok(Arc::clone(s))
            }
            _ => Err(SessionError::Unknown),
        }
    }

    /// Drops expired sessions.
    pub(crate) fn sweep(&self) {
        let now = self.clock.instant();
        self.lock().retain(|_, s| s.expires > now);
    }

    /// Wipes every session (on seal).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_crypto::session::{Direction, SessionAad};

    fn id(s: &str) -> Identity {
        Identity::for_tests(s)
    }

    #[test]
    fn sessions_belong_to_their_identity_and_agree_with_the_client() {
        let sessions = Sessions::new(
            Duration::from_secs(60),
            10,
            2,
            vault_crypto::clock::system(),
        );
        let client = SessionOffer::generate().unwrap();
        let cp = *client.public_key();
        let alice = id("spiffe://t/alice");
        let opened = sessions.open(&alice, &cp).unwrap();
        let client_key = client
            .agree(
                &opened.server_public,
                &Transcript {
                    client_public: &cp,
                    server_public: &opened.server_public,
                    identity: alice.as_str(),
                    session_id: opened.id.as_str(),
                },
            )
            .unwrap();
        let aad = SessionAad::new("t", Direction::ToDaemon);
        let sealed = client_key.seal(&aad, b"x").unwrap();
        let session = sessions.get(&alice, opened.id.as_str()).unwrap();
        assert_eq!(
            session.key.open(&aad, &sealed).unwrap().expose_secret(),
            b"x"
        );
        assert!(matches!(
            sessions.get(&id("spiffe://t/bob"), opened.id.as_str()),
            Err(SessionError::Unknown)
        ));
        sessions.clear();
        assert!(sessions.get(&alice, opened.id.as_str()).is_err());
    }

    #[test]
    fn limits_evict_own_least_recently_used_then_refuse() {
        let sessions = Sessions::new(Duration::from_secs(60), 3, 2, vault_crypto::clock::system());
        let key = |_| *SessionOffer::generate().unwrap().public_key();
        let alice = id("a");
        let first = sessions.open(&alice, &key(0)).unwrap().id;
        let second = sessions.open(&alice, &key(1)).unwrap().id;
        // The older session is the one in use: the idle one goes.
        sessions.get(&alice, first.as_str()).unwrap();
        sessions.open(&alice, &key(2)).unwrap();
        assert!(sessions.get(&alice, first.as_str()).is_ok(), "in use, kept");
        assert!(
            sessions.get(&alice, second.as_str()).is_err(),
            "least recently used evicted"
        );
        assert_eq!(sessions.len(), 2);
        sessions.open(&id("b"), &key(3)).unwrap();
        assert_eq!(
            sessions.open(&id("c"), &key(4)).err().map(|_| ()),
            Some(()),
            "total cap refuses"
        );
        assert_eq!(sessions.open(&alice, &[0u8; 5]).err().map(|_| ()), Some(()));
        assert!(matches!(
            sessions.get(&alice, "not-an-id"),
            Err(SessionError::Unknown)
        ));
    }
}
