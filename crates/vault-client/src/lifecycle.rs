//! The seal lifecycle through `vault.v1.Admin`, for custodians and operators: status,
//! init, unseal, seal (of one node or of every node on its database), rekey, root-key
//! rotation and ceremonies, and a node joining its cluster. Shares and root keys cross
//! only sealed to the session.

use vault_crypto::RootKey;
use vault_crypto::session::{Direction, op};
use vault_crypto::shamir::Share;
use vault_proto::v1;

use crate::admin::{admin, session_id};
use crate::client::Client;
use crate::endpoints::{Retry, SessionAttempt};
use crate::error::Error;

/// Where an unseal attempt stands.
pub type UnsealProgress = v1::UnsealResponse;

/// What a node joining its cluster was handed: every root key the answering node
/// holds, in locked memory (wiped on drop).
pub struct JoinedCluster {
    /// The root keys, opened from the session.
    pub roots: Vec<RootKey>,
    /// The version new keys are wrapped under.
    pub current_root: u32,
    /// The endpoint that answered.
    pub endpoint: String,
}

fn seal_shares(
    attempt: &SessionAttempt,
    operation: &str,
    shares: &[Share],
) -> Result<Vec<v1::SealedPayload>, Error> {
    let sealed = attempt
        .session
        .key
        .seal_shares(operation, Direction::ToDaemon, shares)
        .map_err(|source| Error::LocalCrypto {
            doing: "seal the shares to its session",
            source,
        })?;
    Ok(sealed
        .into_iter()
        .map(|envelope| v1::SealedPayload { envelope })
        .collect())
}

fn open_shares(
    attempt: &SessionAttempt,
    operation: &str,
    sealed: &[v1::SealedPayload],
) -> Result<Vec<Share>, Error> {
    let envelopes = sealed.iter().map(|p| p.envelope.as_slice());
    attempt
        .session
        .key
        .open_shares(operation, Direction::ToClient, envelopes)
        .map_err(|source| Error::SealedAnswer {
            what: "the shares",
            source,
        })
}

impl Client {
    /// Seal state, share-set parameters, unseal progress and the audit public key.
    pub async fn status(&self) -> Result<v1::StatusResponse, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(admin(&a).status(v1::StatusRequest {}).await?.into_inner())
            })
            .await
    }

    /// Initialises an empty vault: `shares` shares, any `threshold` of which unseal it.
    /// The shares are returned once and never stored by vaultd.
    pub async fn init(&self, threshold: u32, shares: u32) -> Result<Vec<Share>, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                let answer = admin(&a)
                    .init(v1::InitRequest {
                        session_id: session_id(&a),
                        threshold,
                        share_count: shares,
                    })
                    .await?
                    .into_inner();
                Ok(open_shares(&a, op::INIT, &answer.shares)?)
            })
            .await
    }

    /// Submits one share. `nonce` is the attempt's nonce from the previous answer (or
    /// [`Client::status`]); `None` for the first share.
    pub async fn unseal(
        &self,
        share: &Share,
        nonce: Option<&str>,
    ) -> Result<UnsealProgress, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                let mut sealed = seal_shares(&a, op::UNSEAL, std::slice::from_ref(share))?;
                Ok(admin(&a)
                    .unseal(v1::UnsealRequest {
                        session_id: session_id(&a),
                        share: sealed.pop(),
                        nonce: nonce.unwrap_or_default().to_owned(),
                        reset: false,
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Discards the unseal attempt in progress.
    pub async fn unseal_reset(&self) -> Result<(), Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                admin(&a)
                    .unseal(v1::UnsealRequest {
                        reset: true,
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            })
            .await
    }

    /// Seals: vaultd wipes every key and session and revokes every lease.
    pub async fn seal(&self) -> Result<(), Error> {
        self.seal_with(false).await
    }

    /// Seals every node sharing the database of the node that answers: that node at
    /// once, the others as they read the cluster's change log (within a second).
    pub async fn seal_cluster(&self) -> Result<(), Error> {
        self.seal_with(true).await
    }

    async fn seal_with(&self, cluster: bool) -> Result<(), Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                admin(&a).seal(v1::SealRequest { cluster }).await?;
                Ok(())
            })
            .await
    }

    /// Makes a new share set, given a quorum of current shares, and returns it. The
    /// set is pending until [`Client::verify_rekey`] is given a quorum of it; until
    /// then the current shares keep working.
    pub async fn rekey(
        &self,
        current: &[Share],
        threshold: u32,
        shares: u32,
    ) -> Result<Vec<Share>, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                let answer = admin(&a)
                    .rekey(v1::RekeyRequest {
                        session_id: session_id(&a),
                        current_shares: seal_shares(&a, op::REKEY, current)?,
                        threshold,
                        share_count: shares,
                    })
                    .await?
                    .into_inner();
                Ok(open_shares(&a, op::REKEY_NEW, &answer.shares)?)
            })
            .await
    }

    /// Puts the pending share set in force, given a quorum of its shares; returns its
    /// generation. From then on the old shares are refused.
    pub async fn verify_rekey(&self, new: &[Share]) -> Result<v1::VerifyRekeyResponse, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .verify_rekey(v1::VerifyRekeyRequest {
                        session_id: session_id(&a),
                        new_shares: seal_shares(&a, op::VERIFY_REKEY, new)?,
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Asks an unsealed node for its root keys, sealed to this client's session: for a
    /// vaultd node joining its cluster, whose identity the other node lists in
    /// `[cluster] nodes` and allows `node.join`. Sealed nodes answer `UNAVAILABLE`, and
    /// the next endpoint is asked.
    pub async fn join_cluster(&self) -> Result<JoinedCluster, Error> {
        let names = &self.inner.endpoints.names;
        self.inner
            .endpoints
            .call_with_session(Retry::Idempotent, |a| async move {
                let answer = admin(&a)
                    .join_cluster(v1::JoinClusterRequest {
                        session_id: session_id(&a),
                    })
                    .await?
                    .into_inner();
                let roots = answer
                    .roots
                    .iter()
                    .map(|root| {
                        let sealed = root.key.as_ref().map_or(&[][..], |p| &p.envelope[..]);
                        a.session
                            .key
                            .open_root_key(sealed, root.version)
                            .map_err(|source| Error::SealedAnswer {
                                what: "a root key",
                                source,
                            })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(JoinedCluster {
                    roots,
                    current_root: answer.current_root,
                    endpoint: names.get(a.node).cloned().unwrap_or_default(),
                })
            })
            .await
    }

    /// Rotates the root key, given a quorum of shares. Returns the new version.
    pub async fn rotate_root_key(&self, shares: &[Share]) -> Result<u32, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .rotate_root_key(v1::RotateRootKeyRequest {
                        session_id: session_id(&a),
                        shares: seal_shares(&a, op::ROTATE_ROOT_KEY, shares)?,
                    })
                    .await?
                    .into_inner()
                    .root_version)
            })
            .await
    }

    /// Starts a ceremony in which custodians submit their shares one at a time
    /// ([`Client::submit_ceremony_share`]). For a rekey, `custodians` are
    /// `(name, age1… key)` pairs, one new share each, and `threshold` the new set's.
    pub async fn start_ceremony(
        &self,
        kind: v1::CeremonyKind,
        threshold: u32,
        custodians: &[(String, String)],
    ) -> Result<v1::Ceremony, Error> {
        let custodians: Vec<v1::CustodianKey> = custodians
            .iter()
            .map(|(name, recipient)| v1::CustodianKey {
                name: name.clone(),
                recipient: recipient.clone(),
            })
            .collect();
        self.inner
            .endpoints
            .call(Retry::Once, |a| {
                let custodians = custodians.clone();
                async move {
                    Ok(admin(&a)
                        .start_ceremony(v1::StartCeremonyRequest {
                            kind: kind as i32,
                            threshold,
                            custodians,
                        })
                        .await?
                        .into_inner())
                }
            })
            .await
    }

    /// Submits one custodian's share to the ceremony named by `nonce` (from
    /// [`Client::ceremony`]). The share that reaches the threshold runs the ceremony,
    /// and the answer says what it did.
    pub async fn submit_ceremony_share(
        &self,
        share: &Share,
        nonce: &str,
    ) -> Result<v1::CeremonyProgress, Error> {
        self.inner
            .endpoints
            .call_with_session(Retry::Once, |a| async move {
                let mut sealed = seal_shares(&a, op::CEREMONY_SHARE, std::slice::from_ref(share))?;
                Ok(admin(&a)
                    .submit_ceremony_share(v1::SubmitCeremonyShareRequest {
                        session_id: session_id(&a),
                        nonce: nonce.to_owned(),
                        share: sealed.pop(),
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// The ceremony in progress, and a ceremony rekey's pending files (encrypted to
    /// their custodians) until the set is verified.
    pub async fn ceremony(&self) -> Result<v1::CeremonyProgress, Error> {
        self.inner
            .endpoints
            .call(Retry::Idempotent, |a| async move {
                Ok(admin(&a)
                    .get_ceremony(v1::GetCeremonyRequest {})
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Discards the ceremony in progress, wiping the shares submitted to it.
    pub async fn cancel_ceremony(&self) -> Result<v1::Ceremony, Error> {
        self.inner
            .endpoints
            .call(Retry::Once, |a| async move {
                Ok(admin(&a)
                    .cancel_ceremony(v1::CancelCeremonyRequest {})
                    .await?
                    .into_inner()
                    .cancelled
                    .unwrap_or_default())
            })
            .await
    }
}
