//! Transit: encrypt the platform's own data under a tenant's key, keep the envelope in
//! the platform's database, decrypt it later. Plaintext travels sealed to the session
//! both ways.

use std::fmt;

use secrecy::ExposeSecret;
use vault_crypto::SecretValue;
use vault_crypto::session::{Direction, SessionAad};
use vault_proto::v1;
use vault_proto::v1::broker_client::BrokerClient;

use crate::client::Client;
use crate::endpoints::{Retry, SessionAttempt};
use crate::environment::Environment;
use crate::error::Error;
use crate::session::Session;

/// A decrypted plaintext, wiped on drop; reachable only through [`ExposeSecret`].
pub struct Plaintext(SecretValue);

impl ExposeSecret<[u8]> for Plaintext {
    fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext([redacted; {} bytes])", self.0.len())
    }
}

fn seal(
    session: &Session,
    tenant: &str,
    env: Environment,
    items: &[&[u8]],
) -> Result<Vec<v1::SealedPayload>, Error> {
    items
        .iter()
        .enumerate()
        .map(|(i, plaintext)| {
            let aad = SessionAad::transit(Direction::ToDaemon, tenant, env.as_str(), i);
            let envelope =
                session
                    .key
                    .seal(&aad, plaintext)
                    .map_err(|source| Error::LocalCrypto {
                        doing: "seal the plaintext to its session",
                        source,
                    })?;
            Ok(v1::SealedPayload { envelope })
        })
        .collect()
}

fn open(
    session: &Session,
    tenant: &str,
    env: Environment,
    item: usize,
    sealed: &v1::SealedPayload,
) -> Result<Plaintext, Error> {
    let aad = SessionAad::transit(Direction::ToClient, tenant, env.as_str(), item);
    session
        .key
        .open(&aad, &sealed.envelope)
        .map(Plaintext)
        .map_err(|source| Error::SealedAnswer {
            what: "the plaintext",
            source,
        })
}

/// vaultd's verdict on one item of a batch: its code and message, read as if it had
/// answered the whole call so.
fn item_error(e: v1::ItemError) -> Error {
    Error::from(tonic::Status::new(tonic::Code::from_i32(e.code), e.message))
}

impl Client {
    /// Encrypts `plaintext` under `tenant`'s key for `environment`; returns an opaque
    /// envelope to store. It decrypts only for the same tenant and environment.
    pub async fn encrypt(
        &self,
        tenant: &str,
        environment: Environment,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut results = self
            .encrypt_batch(tenant, environment, &[plaintext])
            .await?;
        results
            .pop()
            .unwrap_or(Err(Error::Protocol("an empty batch answer")))
    }

    /// Decrypts an envelope made by [`Client::encrypt`].
    pub async fn decrypt(
        &self,
        tenant: &str,
        environment: Environment,
        envelope: &[u8],
    ) -> Result<Plaintext, Error> {
        let mut results = self.decrypt_batch(tenant, environment, &[envelope]).await?;
        results
            .pop()
            .unwrap_or(Err(Error::Protocol("an empty batch answer")))
    }

    /// Encrypts many plaintexts in one request; each item succeeds or fails on its own.
    pub async fn encrypt_batch(
        &self,
        tenant: &str,
        environment: Environment,
        plaintexts: &[&[u8]],
    ) -> Result<Vec<Result<Vec<u8>, Error>>, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Idempotent, |attempt: SessionAttempt| async move {
                let sealed = seal(&attempt.session, tenant, environment, plaintexts)?;
                let session_id = attempt.session.id.clone();
                let answer = BrokerClient::new(attempt.channel.clone())
                    .batch_encrypt(v1::BatchEncryptRequest {
                        session_id,
                        tenant: tenant.to_owned(),
                        environment: environment.to_proto(),
                        plaintexts: sealed,
                    })
                    .await?
                    .into_inner();
                Ok(answer
                    .results
                    .into_iter()
                    .map(|r| match r.result {
                        Some(v1::batch_item_result::Result::Envelope(e)) => Ok(e),
                        Some(v1::batch_item_result::Result::Error(e)) => Err(item_error(e)),
                        _ => Err(Error::Protocol("an encrypt item without an envelope")),
                    })
                    .collect())
            })
            .await
    }

    /// Decrypts many envelopes in one request; each item succeeds or fails on its own.
    pub async fn decrypt_batch(
        &self,
        tenant: &str,
        environment: Environment,
        envelopes: &[&[u8]],
    ) -> Result<Vec<Result<Plaintext, Error>>, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Idempotent, |attempt: SessionAttempt| async move {
                let session_id = attempt.session.id.clone();
                let answer = BrokerClient::new(attempt.channel.clone())
                    .batch_decrypt(v1::BatchDecryptRequest {
                        session_id,
                        tenant: tenant.to_owned(),
                        environment: environment.to_proto(),
                        envelopes: envelopes.iter().map(|e| e.to_vec()).collect(),
                    })
                    .await?
                    .into_inner();
                Ok(answer
                    .results
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| match r.result {
                        Some(v1::batch_item_result::Result::Plaintext(p)) => {
                            open(&attempt.session, tenant, environment, i, &p)
                        }
                        Some(v1::batch_item_result::Result::Error(e)) => Err(item_error(e)),
                        _ => Err(Error::Protocol("a decrypt item without a plaintext")),
                    })
                    .collect())
            })
            .await
    }

    /// Reseals a transit envelope under the tenant's current key version (unchanged
    /// if it already is), without its plaintext leaving vaultd: move stored envelopes
    /// to the new version before old versions are retired.
    pub async fn rewrap(
        &self,
        tenant: &str,
        environment: Environment,
        envelope: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut results = self.rewrap_batch(tenant, environment, &[envelope]).await?;
        results
            .pop()
            .unwrap_or(Err(Error::Protocol("an empty batch answer")))
    }

    /// Rewraps many envelopes in one request; each item succeeds or fails on its own.
    pub async fn rewrap_batch(
        &self,
        tenant: &str,
        environment: Environment,
        envelopes: &[&[u8]],
    ) -> Result<Vec<Result<Vec<u8>, Error>>, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |attempt| async move {
                let answer = BrokerClient::new(attempt.channel.clone())
                    .batch_rewrap(v1::BatchRewrapRequest {
                        tenant: tenant.to_owned(),
                        environment: environment.to_proto(),
                        envelopes: envelopes.iter().map(|e| e.to_vec()).collect(),
                    })
                    .await?
                    .into_inner();
                Ok(answer
                    .results
                    .into_iter()
                    .map(|r| match r.result {
                        Some(v1::batch_item_result::Result::Envelope(e)) => Ok(e),
                        Some(v1::batch_item_result::Result::Error(e)) => Err(item_error(e)),
                        _ => Err(Error::Protocol("a rewrap item without an envelope")),
                    })
                    .collect())
            })
            .await
    }
}
