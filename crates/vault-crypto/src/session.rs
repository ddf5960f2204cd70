//! Lease sessions: the key every secret crossing the wire is sealed to.
//!
//! The client sends an ephemeral X25519 public key; the daemon answers with its own
//! and a session id. Both derive the session key with HKDF-SHA256 over the shared
//! secret, salted with a domain label, with the transcript as info:
//!
//! ```text
//! info = "vaultd session v1" || lp(client_public) || lp(server_public)
//!        || lp(identity) || lp(session_id)          lp(x) = u32 BE length || x
//! ```
//!
//! so a session key is bound to both public keys, the caller's verified identity and
//! the session. Messages are AES-256-GCM [envelopes](crate::envelope) with purpose
//! [`Session`](crate::envelope::Purpose::Session); their associated data names the
//! session, the operation, the direction and the target ([`SessionAad`]), so a sealed
//! value cannot be replayed into another operation, direction, lease or secret.

use ring::agreement::{EphemeralPrivateKey, UnparsedPublicKey, X25519, agree_ephemeral};
use ring::rand::SystemRandom;

use crate::CryptoError;
use crate::aead::{AeadKey, KEY_LEN};
use crate::arena::{Locked, Pool, scrub_stack};
use crate::envelope::{Aad, Envelope, Purpose};
use crate::kdf::hkdf_sha256;
use crate::keys::RootKey;
use crate::secret::SecretValue;
use crate::shamir::Share;

/// Length of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

const SALT: &[u8] = b"vaultd session v1";

/// One side's ephemeral half of a session exchange. Used once.
pub struct SessionOffer {
    private: EphemeralPrivateKey,
    public: [u8; PUBLIC_KEY_LEN],
}

/// What both sides bind the session key to.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// The client's public key.
    pub client_public: &'a [u8; PUBLIC_KEY_LEN],
    /// The daemon's public key.
    pub server_public: &'a [u8; PUBLIC_KEY_LEN],
    /// The caller's verified identity, as the daemon sees it.
    pub identity: &'a str,
    /// The session id the daemon assigned.
    pub session_id: &'a str,
}

impl Transcript<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SALT.len() + 4 * 4 + 64 + self.identity.len() + 64);
        out.extend_from_slice(SALT);
        for part in [
            &self.client_public[..],
            &self.server_public[..],
            self.identity.as_bytes(),
            self.session_id.as_bytes(),
        ] {
            put_len_prefixed(&mut out, part);
        }
        out
    }
}

fn put_len_prefixed(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

impl SessionOffer {
    /// Generates a fresh ephemeral key pair.
    pub fn generate() -> Result<Self, CryptoError> {
        let private = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new())
            .map_err(|_| CryptoError::Random)?;
        let computed = private
            .compute_public_key()
            .map_err(|_| CryptoError::Random)?;
        let public = computed
            .as_ref()
            .try_into()
            .map_err(|_| CryptoError::Random)?;
        Ok(Self { private, public })
    }

    /// This side's public key, to send to the peer.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// Completes the exchange with the peer's public key. Fails with
    /// [`CryptoError::PublicKey`] for a malformed or low-order peer key.
    pub fn agree(
        self,
        peer_public: &[u8],
        transcript: &Transcript<'_>,
    ) -> Result<SessionKey, CryptoError> {
        let raw = derive(self.private, peer_public, &transcript.encode());
        // The shared secret and HKDF state passed through frames below this one.
        scrub_stack();
        Ok(SessionKey {
            key: AeadKey::from_raw(raw?, 0, Pool::Sessions)?,
            session_id: transcript.session_id.as_bytes().to_vec(),
        })
    }
}

#[inline(never)]
fn derive(
    private: EphemeralPrivateKey,
    peer_public: &[u8],
    info: &[u8],
) -> Result<Locked<[u8; KEY_LEN]>, CryptoError> {
    let mut raw = Locked::new_in(Pool::Sessions, [0u8; KEY_LEN])?;
    let peer = UnparsedPublicKey::new(&X25519, peer_public);
    agree_ephemeral(private, &peer, |shared| {
        hkdf_sha256(SALT, shared, &[info], &mut raw[..])
    })
    .map_err(|_| CryptoError::PublicKey)??;
    Ok(raw)
}

/// Which way a sealed message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// From the client to the daemon (secret values, shares, transit plaintext).
    ToDaemon = 1,
    /// From the daemon to the client (leased values, shares at init, decrypted plaintext).
    ToClient = 2,
}

/// Where a sealed session message belongs. Both sides build the same value; any
/// difference makes the message undecryptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionAad<'a> {
    /// The RPC, e.g. `lease`, `put-secret`, `unseal`.
    pub operation: &'a str,
    /// Which way the message travels.
    pub direction: Direction,
    /// Target tenant; empty where none applies.
    pub tenant: &'a str,
    /// Target environment; empty where none applies.
    pub environment: &'a str,
    /// Target secret name; empty where none applies.
    pub name: &'a str,
    /// Secret version, share index or item index; 0 where none applies.
    pub version: u64,
    /// Further binding, such as the lease id; empty where none applies.
    pub context: &'a str,
}

impl<'a> SessionAad<'a> {
    /// Associated data naming only an operation and a direction.
    pub const fn new(operation: &'a str, direction: Direction) -> Self {
        Self {
            operation,
            direction,
            tenant: "",
            environment: "",
            name: "",
            version: 0,
            context: "",
        }
    }
}

/// The operation names of the `vault.v1` API's sealed payloads. The daemon and every
/// client build associated data from these, through [`SessionAad`]'s constructors.
pub mod op {
    /// Init: the new shares, to the client.
    pub const INIT: &str = "init";
    /// Unseal: one share, to the daemon.
    pub const UNSEAL: &str = "unseal";
    /// Rekey: the current quorum, to the daemon.
    pub const REKEY: &str = "rekey";
    /// Rekey: the new shares, to the client.
    pub const REKEY_NEW: &str = "rekey-new";
    /// VerifyRekey: a quorum of the pending set's shares, to the daemon.
    pub const VERIFY_REKEY: &str = "verify-rekey";
    /// RotateRootKey: the quorum, to the daemon.
    pub const ROTATE_ROOT_KEY: &str = "rotate-root-key";
    /// SubmitCeremonyShare: one custodian's share, to the daemon.
    pub const CEREMONY_SHARE: &str = "ceremony-share";
    /// PutSecret: the value, to the daemon.
    pub const PUT_SECRET: &str = "put-secret";
    /// RotateSecret: the new value, to the daemon.
    pub const ROTATE_SECRET: &str = "rotate-secret";
    /// Lease: the value, to the client.
    pub const LEASE: &str = "lease";
    /// Encrypt and BatchEncrypt: plaintexts, to the daemon.
    pub const TRANSIT_ENCRYPT: &str = "transit.encrypt";
    /// Decrypt and BatchDecrypt: plaintexts, to the client.
    pub const TRANSIT_DECRYPT: &str = "transit.decrypt";
    /// VerifyApiKey: the key, to the daemon.
    pub const VERIFY_API_KEY: &str = "apikeys.verify";
    /// IssueApiKey and RotateApiKey: the new key, to the client.
    pub const ISSUE_API_KEY: &str = "apikeys.issue";
    /// JoinCluster: each root key, to the joining node.
    pub const JOIN_CLUSTER: &str = "join-cluster";
}

impl<'a> SessionAad<'a> {
    /// Share number `index` (0-based, in message order) of `operation` ([`op::INIT`],
    /// [`op::UNSEAL`], [`op::REKEY`], [`op::REKEY_NEW`], [`op::ROTATE_ROOT_KEY`],
    /// [`op::CEREMONY_SHARE`]).
    pub const fn share(operation: &'a str, direction: Direction, index: usize) -> Self {
        Self {
            version: index as u64,
            ..Self::new(operation, direction)
        }
    }

    /// A secret value sent to the daemon by [`op::PUT_SECRET`] or [`op::ROTATE_SECRET`].
    pub const fn secret_value(
        operation: &'a str,
        tenant: &'a str,
        environment: &'a str,
        name: &'a str,
    ) -> Self {
        Self {
            tenant,
            environment,
            name,
            ..Self::new(operation, Direction::ToDaemon)
        }
    }

    /// A leased value: bound to the lease id, tenant, environment, name and version.
    pub const fn lease(
        tenant: &'a str,
        environment: &'a str,
        name: &'a str,
        version: u64,
        lease_id: &'a str,
    ) -> Self {
        Self {
            tenant,
            environment,
            name,
            version,
            context: lease_id,
            ..Self::new(op::LEASE, Direction::ToClient)
        }
    }

    /// An API key sent for verification in `environment`, the one the request is for.
    pub const fn api_key_to_verify(environment: &'a str) -> Self {
        Self {
            environment,
            ..Self::new(op::VERIFY_API_KEY, Direction::ToDaemon)
        }
    }

    /// A newly issued API key, to the client: bound to its tenant, environment and id.
    pub const fn issued_api_key(tenant: &'a str, environment: &'a str, key_id: &'a str) -> Self {
        Self {
            tenant,
            environment,
            context: key_id,
            ..Self::new(op::ISSUE_API_KEY, Direction::ToClient)
        }
    }

    /// Transit plaintext number `item` of a request (0 for the single forms):
    /// [`op::TRANSIT_ENCRYPT`] to the daemon, [`op::TRANSIT_DECRYPT`] to the client.
    pub const fn transit(
        direction: Direction,
        tenant: &'a str,
        environment: &'a str,
        item: usize,
    ) -> Self {
        let operation = match direction {
            Direction::ToDaemon => op::TRANSIT_ENCRYPT,
            Direction::ToClient => op::TRANSIT_DECRYPT,
        };
        Self {
            tenant,
            environment,
            version: item as u64,
            ..Self::new(operation, direction)
        }
    }
}

/// A session's AES-256-GCM key, in locked memory; wiped on drop.
pub struct SessionKey {
    key: AeadKey,
    session_id: Vec<u8>,
}

impl SessionKey {
    fn binding(&self, aad: &SessionAad<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.session_id.len() + aad.operation.len() + 16);
        put_len_prefixed(&mut out, &self.session_id);
        out.push(aad.direction as u8);
        put_len_prefixed(&mut out, aad.operation.as_bytes());
        put_len_prefixed(&mut out, aad.context.as_bytes());
        out
    }

    /// Seals `plaintext` for the peer. Returns the envelope bytes.
    pub fn seal(&self, aad: &SessionAad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let binding = self.binding(aad);
        let envelope = self.key.seal(&envelope_aad(aad, &binding), plaintext)?;
        Ok(envelope.into_bytes())
    }

    /// Seals `shares` for `operation` travelling in `direction`, one envelope each, the
    /// associated data naming each share's position.
    pub fn seal_shares(
        &self,
        operation: &str,
        direction: Direction,
        shares: &[Share],
    ) -> Result<Vec<Vec<u8>>, CryptoError> {
        shares
            .iter()
            .enumerate()
            .map(|(i, share)| {
                self.seal(
                    &SessionAad::share(operation, direction, i),
                    &share.to_bytes(),
                )
            })
            .collect()
    }

    /// Opens shares sealed by the peer's [`SessionKey::seal_shares`]: fails with
    /// [`CryptoError::Decrypt`] if one does not open, [`CryptoError::Shares`] if one
    /// opens to something that is not a share.
    pub fn open_shares<'e>(
        &self,
        operation: &str,
        direction: Direction,
        envelopes: impl IntoIterator<Item = &'e [u8]>,
    ) -> Result<Vec<Share>, CryptoError> {
        envelopes
            .into_iter()
            .enumerate()
            .map(|(i, envelope)| {
                let bytes = self.open(&SessionAad::share(operation, direction, i), envelope)?;
                Share::from_bytes(bytes.expose_secret())
            })
            .collect()
    }

    /// Opens envelope bytes sealed by the peer with the same associated data.
    pub fn open(&self, aad: &SessionAad<'_>, envelope: &[u8]) -> Result<SecretValue, CryptoError> {
        let envelope = Envelope::from_bytes(envelope.to_vec()).map_err(CryptoError::Envelope)?;
        let binding = self.binding(aad);
        self.key.open(&envelope, &envelope_aad(aad, &binding))
    }

    /// Seals `root` to a node joining the cluster ([`op::JOIN_CLUSTER`], to the
    /// client), the associated data naming its version. Its bytes go from locked
    /// memory into the envelope, nowhere else.
    pub fn seal_root_key(&self, root: &RootKey) -> Result<Vec<u8>, CryptoError> {
        let aad = root_key_aad(root.version());
        let binding = self.binding(&aad);
        Ok(self
            .key
            .wrap(root.raw(), &envelope_aad(&aad, &binding))?
            .into_bytes())
    }

    /// Opens root key `version` sealed by [`SessionKey::seal_root_key`] straight into
    /// locked memory. Fails with [`CryptoError::Decrypt`] if the envelope was sealed
    /// for another session or version.
    pub fn open_root_key(&self, envelope: &[u8], version: u32) -> Result<RootKey, CryptoError> {
        let envelope = Envelope::from_bytes(envelope.to_vec()).map_err(CryptoError::Envelope)?;
        let aad = root_key_aad(version);
        let binding = self.binding(&aad);
        let raw = self
            .key
            .unwrap(&envelope, &envelope_aad(&aad, &binding), Pool::Vault)?;
        RootKey::from_raw(raw, version)
    }
}

fn root_key_aad(version: u32) -> SessionAad<'static> {
    SessionAad {
        version: u64::from(version),
        ..SessionAad::new(op::JOIN_CLUSTER, Direction::ToClient)
    }
}

fn envelope_aad<'a>(aad: &SessionAad<'a>, binding: &'a [u8]) -> Aad<'a> {
    Aad {
        purpose: Purpose::Session,
        tenant: aad.tenant,
        environment: aad.environment,
        name: aad.name,
        version: aad.version,
        binding,
    }
}

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_order_peer_key_is_blamed_on_the_peer() {
        let ours = SessionOffer::generate().unwrap();
        let public = *ours.public_key();
        let zero = [0u8; 32];
        let transcript = Transcript {
            client_public: &public,
            server_public: &zero,
            identity: "spiffe://t/a",
            session_id: "s1",
        };
        assert!(matches!(
            ours.agree(&zero, &transcript),
            Err(CryptoError::PublicKey)
        ));
    }

    fn pair(identity: &str) -> (SessionKey, SessionKey) {
        let client = SessionOffer::generate().unwrap();
        let server = SessionOffer::generate().unwrap();
        let (cp, sp) = (*client.public_key(), *server.public_key());
        let transcript = Transcript {
            client_public: &cp,
            server_public: &sp,
            identity,
            session_id: "s1",
        };
        let server_key = server.agree(&cp, &transcript).unwrap();
        let client_key = client.agree(&sp, &transcript).unwrap();
        (client_key, server_key)
    }

    #[test]
    fn a_root_key_crosses_a_session_bound_to_its_version() {
        let (client, server) = pair("spiffe://a/vaultd/node-b");
        let root = RootKey::generate(7).unwrap();
        let sealed = server.seal_root_key(&root).unwrap();
        let opened = client.open_root_key(&sealed, 7).unwrap();
        assert_eq!(opened.version(), 7);
        assert_eq!(opened.raw_for_tests(), root.raw_for_tests());
        // Relabelled as another version, or opened in another session, it does not
        // open.
        assert!(matches!(
            client.open_root_key(&sealed, 8),
            Err(CryptoError::Decrypt)
        ));
        let (other, _) = pair("spiffe://a/vaultd/node-b");
        assert!(matches!(
            other.open_root_key(&sealed, 7),
            Err(CryptoError::Decrypt)
        ));
        // Not a share's or a lease's envelope either.
        assert!(
            client
                .open(
                    &SessionAad::new(op::JOIN_CLUSTER, Direction::ToClient),
                    &sealed
                )
                .is_err()
        );
    }

    #[test]
    fn both_sides_derive_the_same_key() {
        let (client, server) = pair("spiffe://a/svc");
        let aad = SessionAad {
            tenant: "acme",
            name: "byok/openai",
            version: 3,
            context: "lease-1",
            ..SessionAad::new("lease", Direction::ToClient)
        };
        let sealed = server.seal(&aad, b"sk-canary").unwrap();
        assert_eq!(
            client.open(&aad, &sealed).unwrap().expose_secret(),
            b"sk-canary"
        );
    }

    #[test]
    fn any_change_of_binding_fails() {
        let (client, server) = pair("spiffe://a/svc");
        let aad = SessionAad {
            tenant: "acme",
            environment: "live",
            name: "n",
            version: 1,
            context: "lease-1",
            ..SessionAad::new("lease", Direction::ToClient)
        };
        let sealed = server.seal(&aad, b"v").unwrap();
        let variants = [
            SessionAad {
                direction: Direction::ToDaemon,
                ..aad
            },
            SessionAad {
                operation: "decrypt",
                ..aad
            },
            SessionAad {
                tenant: "other",
                ..aad
            },
            SessionAad {
                environment: "test",
                ..aad
            },
            SessionAad { name: "m", ..aad },
            SessionAad { version: 2, ..aad },
            SessionAad {
                context: "lease-2",
                ..aad
            },
        ];
        for variant in variants {
            assert!(client.open(&variant, &sealed).is_err(), "{variant:?}");
        }
    }

    #[test]
    fn identity_is_part_of_the_key() {
        let client = SessionOffer::generate().unwrap();
        let server = SessionOffer::generate().unwrap();
        let (cp, sp) = (*client.public_key(), *server.public_key());
        let t = |identity| Transcript {
            client_public: &cp,
            server_public: &sp,
            identity,
            session_id: "s1",
        };
        let server_key = server.agree(&cp, &t("spiffe://a/real")).unwrap();
        let client_key = client.agree(&sp, &t("spiffe://a/other")).unwrap();
        let aad = SessionAad::new("x", Direction::ToDaemon);
        let sealed = client_key.seal(&aad, b"v").unwrap();
        assert!(server_key.open(&aad, &sealed).is_err());
    }

    #[test]
    fn bad_peer_keys_are_refused() {
        let transcript = Transcript {
            client_public: &[0; 32],
            server_public: &[0; 32],
            identity: "i",
            session_id: "s",
        };
        for peer in [&[][..], &[1u8; 31][..], &[0u8; 32][..]] {
            let offer = SessionOffer::generate().unwrap();
            assert!(offer.agree(peer, &transcript).is_err());
        }
        let (client, _) = pair("i");
        let aad = SessionAad::new("x", Direction::ToDaemon);
        for garbage in [&[][..], &[1u8; 10][..], &[1u8; 100][..]] {
            assert!(client.open(&aad, garbage).is_err());
        }
    }
}
