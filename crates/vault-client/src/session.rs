//! Lease sessions: the X25519 + HKDF-SHA256 key that every secret to or from this
//! client is sealed with, bound to the identity vaultd sees. One per endpoint, opened
//! on first use and reopened before it expires.

use std::time::{Duration, SystemTime};

use tonic::transport::Channel;
use vault_crypto::clock::from_unix_ms;
use vault_crypto::session::{SessionKey, SessionOffer, Transcript};
use vault_proto::v1::OpenSessionRequest;
use vault_proto::v1::broker_client::BrokerClient;

use crate::error::{Error, Failure};

/// A lease session: the key secrets to and from this client are sealed with.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) key: SessionKey,
    expires: SystemTime,
}

/// Sessions are reopened this long before they expire.
const SESSION_MARGIN: Duration = Duration::from_secs(60);

impl Session {
    /// Whether the session can still be used at `now` (read on the client's clock):
    /// more than the margin is left.
    pub(crate) fn usable_at(&self, now: SystemTime) -> bool {
        self.expires
            .duration_since(now)
            .is_ok_and(|left| left > SESSION_MARGIN)
    }
}

/// Opens a lease session on `channel` as `identity`. vaultd's refusals come back as
/// its status; this client's own failures, and a server key that cannot be used, as
/// errors that say which side failed.
pub(crate) async fn open(channel: Channel, identity: &str) -> Result<Session, Failure> {
    let offer = SessionOffer::generate().map_err(|source| Error::LocalCrypto {
        doing: "generate an ephemeral session key",
        source,
    })?;
    let client_public = *offer.public_key();
    let response = BrokerClient::new(channel)
        .open_session(OpenSessionRequest {
            client_public_key: client_public.to_vec(),
        })
        .await?
        .into_inner();
    let server_public: [u8; 32] = response
        .server_public_key
        .as_slice()
        .try_into()
        .map_err(|_| Error::Protocol("vaultd sent a session key that is not 32 bytes"))?;
    let key = offer
        .agree(
            &server_public,
            &Transcript {
                client_public: &client_public,
                server_public: &server_public,
                identity,
                session_id: &response.session_id,
            },
        )
        .map_err(|source| match source {
            // A low-order or malformed point: what vaultd sent is unusable.
            vault_crypto::CryptoError::PublicKey => {
                Error::Protocol("vaultd sent a session key that does not agree")
            }
            // Locked memory for the key, or the like: this side's failure.
            source => Error::LocalCrypto {
                doing: "derive the session key",
                source,
            },
        })?;
    Ok(Session {
        id: response.session_id,
        key,
        expires: from_unix_ms(response.expires_unix_ms),
    })
}

#[cfg(test)]
mod tests {
    use vault_crypto::clock::{Clock, ManualClock};

    use super::*;

    /// A session key agreed between two local offers: a real key, no daemon.
    fn key() -> SessionKey {
        let (ours, theirs) = (
            SessionOffer::generate().unwrap(),
            SessionOffer::generate().unwrap(),
        );
        let (client_public, server_public) = (*ours.public_key(), *theirs.public_key());
        ours.agree(
            &server_public,
            &Transcript {
                client_public: &client_public,
                server_public: &server_public,
                identity: "spiffe://test.example/svc/t",
                session_id: "s-1",
            },
        )
        .unwrap()
    }

    #[test]
    fn a_session_is_reopened_a_margin_before_it_expires_on_the_clients_clock() {
        let clock = ManualClock::new();
        let session = Session {
            id: "s-1".into(),
            key: key(),
            expires: clock.now() + Duration::from_secs(3600),
        };
        assert!(session.usable_at(clock.now()));
        clock.advance(Duration::from_secs(3600) - SESSION_MARGIN);
        assert!(!session.usable_at(clock.now()));
        assert_eq!(from_unix_ms(-1), SystemTime::UNIX_EPOCH);
        assert_eq!(
            from_unix_ms(1_500),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)
        );
    }
}
