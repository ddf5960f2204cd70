//! PKCS#11 auto-unseal: an AES-256 key that never leaves a hardware token wraps the
//! unseal key, so a restarted node unseals itself. Opt-in (`[seal.pkcs11]`), enabled
//! and disabled only by a quorum of custodians' shares, and never the only way in: the
//! shares keep unsealing when the token is gone.
//!
//! Each operation loads the module, logs in, works and finalises, under one lock:
//! PKCS#11 state is per process, and a token that went away is found gone at the next
//! operation rather than through a stale session.

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

/// Where the token and its key are (`[seal.pkcs11]`). The PIN is read from
/// `pin_file` at each use and never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The wrapping key's label; vaultd creates the key in the token if it is missing.
    pub key_label: String,
    /// A file holding the user PIN (owner-only permissions).
    pub pin_file: PathBuf,
}

/// Why the token could not be used. Never carries the PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module did not load or initialise.
    #[error("PKCS#11 module {module}: {reason}")]
    Module {
        /// The module path.
        module: String,
        /// What went wrong.
        reason: String,
    },
    /// No initialised token has the configured label.
    #[error("no PKCS#11 token is labelled {0:?} (is it plugged in and initialised?)")]
    NoToken(String),
    /// The PIN file could not be read or is open to others.
    #[error("seal.pkcs11.pin_file {path}: {reason}")]
    Pin {
        /// The file.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The token refused the PIN.
    #[error("the token refused the PIN in seal.pkcs11.pin_file")]
    WrongPin,
    /// The wrapping key is not in the token.
    #[error("the token holds no AES key labelled {0:?}")]
    NoKey(String),
    /// The token could not unwrap the record: another key, or an altered record.
    #[error(
        "the token could not unwrap the stored unseal key (another key, or the record was altered)"
    )]
    Unwrap,
    /// Another token failure.
    #[error("PKCS#11 {0}")]
    Token(String),
}

impl From<P11Error> for HsmError {
    fn from(e: P11Error) -> Self {
        match e {
            P11Error::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _) => HsmError::WrongPin,
            other => HsmError::Token(other.to_string()),
        }
    }
}

/// A wrapped secret: the IV the token used, and ciphertext with its tag.
pub struct Wrapped {
    /// The 96-bit GCM nonce.
    pub iv: [u8; 12],
    /// Ciphertext and 128-bit tag.
    pub ciphertext: Vec<u8>,
}

/// One token operation at a time in this process.
static TOKEN: Mutex<()> = Mutex::new(());

impl Pkcs11Config {
    /// Encrypts `plain` under the token's key (made if missing) with AES-256-GCM,
    /// binding `aad`, and checks the token opens it again before answering.
    pub fn wrap(&self, plain: &[u8], aad: &[u8]) -> Result<Wrapped, HsmError> {
        self.with_session(|session| {
            let key = match find_key(session, &self.key_label)? {
                Some(key) => key,
                None => generate_key(session, &self.key_label)?,
            };
            let mut iv = [0u8; 12];
            vault_crypto::aead::random_bytes(&mut iv)
                .map_err(|e| HsmError::Token(format!("random IV: {e}")))?;
            let ciphertext = session.encrypt(&gcm(&mut iv.clone(), aad)?, key, plain)?;
            let back = Zeroizing::new(
                session
                    .decrypt(&gcm(&mut iv.clone(), aad)?, key, &ciphertext)
                    .map_err(|_| HsmError::Unwrap)?,
            );
            if back.as_slice() != plain {
                return Err(HsmError::Unwrap);
            }
            Ok(Wrapped { iv, ciphertext })
        })
    }

    /// Decrypts what [`Pkcs11Config::wrap`] made, into a zeroising buffer.
    pub fn unwrap(&self, wrapped: &Wrapped, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.with_session(|session| {
            let key = find_key(session, &self.key_label)?
                .ok_or_else(|| HsmError::NoKey(self.key_label.clone()))?;
            session
                .decrypt(
                    &gcm(&mut wrapped.iv.clone(), aad)?,
                    key,
                    &wrapped.ciphertext,
                )
                .map(Zeroizing::new)
                // Tokens report a failed tag check as a general error: any failure
                // here means the record does not open under this key.
                .map_err(|_| HsmError::Unwrap)
        })
    }

    /// Checks the module loads, the token is present and the PIN opens it.
    pub fn probe(&self) -> Result<(), HsmError> {
        self.with_session(|_| Ok(()))
    }

    /// The PIN file's contents (trimmed), refused if others may read the file.
    fn pin(&self) -> Result<AuthPin, HsmError> {
        let pin = crate::secret_file::read_owner_only(&self.pin_file, 1024, "a PIN").map_err(
            |reason| HsmError::Pin {
                path: self.pin_file.display().to_string(),
                reason,
            },
        )?;
        Ok(AuthPin::new(pin.as_str().into()))
    }

    /// Loads and initialises the module, finds the token, logs in, runs `work`,
    /// and finalises whatever happened.
    fn with_session<T>(
        &self,
        work: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let _one = TOKEN.lock().unwrap_or_else(|p| p.into_inner());
        let pin = self.pin()?;
        let module_error = |reason: String| HsmError::Module {
            module: self.module.display().to_string(),
            reason,
        };
        let context = Pkcs11::new(&self.module).map_err(|e| module_error(e.to_string()))?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(module_error(e.to_string())),
        }
        let result = (|| {
            let slot = context
                .get_slots_with_initialized_token()?
                .into_iter()
                .find(|slot| {
                    context
                        .get_token_info(*slot)
                        .is_ok_and(|info| info.label() == self.token)
                })
                .ok_or_else(|| HsmError::NoToken(self.token.clone()))?;
            let session = context.open_rw_session(slot)?;
            match session.login(UserType::User, Some(&pin)) {
                Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => return Err(e.into()),
            }
            let answer = work(&session);
            let _ = session.logout();
            answer
        })();
        // Finalising ends every session of this process with the token.
        let _ = context.finalize();
        result
    }
}

fn gcm<'a>(iv: &'a mut [u8; 12], aad: &'a [u8]) -> Result<Mechanism<'a>, HsmError> {
    Ok(Mechanism::AesGcm(
        GcmParams::new(iv, aad, 128.into()).map_err(|e| HsmError::Token(e.to_string()))?,
    ))
}

fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    match found.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(*key)),
        _ => Err(HsmError::Token(format!(
            "{} AES keys are labelled {label:?}; vaultd needs exactly one",
            found.len()
        ))),
    }
}

/// An AES-256 key that stays in the token: sensitive, not extractable, for
/// encryption and decryption only.
fn generate_key(session: &Session, label: &str) -> Result<ObjectHandle, HsmError> {
    Ok(session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )?)
}
