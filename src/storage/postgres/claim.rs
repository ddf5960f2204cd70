//! One vaultd node per database: the node's claim, and the fence on its writes.
//!
//! A node keeps in memory what it must not hold stale (unwrapped tenant keys, leases,
//! revocations), and nothing yet tells one node what another changed. So a node holds
//! the database alone: on opening, it takes a PostgreSQL session advisory lock on a
//! connection of its own and bumps the claim's generation in `vaultd_claim`. A second
//! node is refused while the first holds the lock.
//!
//! The claim lapses with that connection, and PostgreSQL lets another node take the
//! lock once it has noticed. So:
//! - the connection is pinged every [`HEARTBEAT`]; a ping unanswered within two
//!   heartbeats marks the claim lapsed, and every storage operation is refused from
//!   then on;
//! - the node reclaims the lock when it can, and serves again only if the generation is
//!   still its own: if another node held the database meanwhile, this node's memory may
//!   be stale and it refuses for good (restart it);
//! - every write transaction holds the fence ([`FENCE`], shared) from before it reads
//!   the generation until it commits, and commits only if the generation is still this
//!   node's; a node taking the claim moves the generation under the fence held
//!   exclusively, so a write in flight when the claim lapsed cannot land after another
//!   node took over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio_postgres::Client;

use super::Shared;
use crate::storage::StoreError;

/// How often the claim's connection is pinged.
pub(super) const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long opening waits for a claim still held (by this node's previous run, whose
/// connection the server has not yet closed) before refusing.
pub(super) const TAKE_WAIT: Duration = Duration::from_secs(3);

/// The advisory lock key of the claim ("vaultd-n" in ASCII).
const CLAIM_LOCK: i64 = 0x7661_756c_7464_2d6e;

/// The advisory lock key of the fence ("vaultd-f"): every write transaction holds it
/// shared; a node taking the claim holds it exclusively while it moves the generation,
/// so no write of the previous holder is between its generation check and its commit.
pub(super) const FENCE: i64 = 0x7661_756c_7464_2d66;

const HELD: u8 = 0;
const LAPSED: u8 = 1;
const SUPERSEDED: u8 = 2;

/// This node's claim on the database.
pub(super) struct Claim {
    state: AtomicU8,
    /// The generation this node set when it took the claim.
    pub(super) generation: i64,
}

impl Claim {
    /// Refuses unless the claim is held.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        match self.state.load(Ordering::Acquire) {
            HELD => Ok(()),
            LAPSED => Err(lapsed()),
            _ => Err(superseded()),
        }
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
    }
}

pub(super) fn held_elsewhere() -> StoreError {
    StoreError::NodeClaim(
        "another vaultd node is using this PostgreSQL database (vaultd runs one node per \
         database); stop it first",
    )
}

fn lapsed() -> StoreError {
    StoreError::NodeClaim(
        "this node lost the connection that holds its claim on the PostgreSQL database; \
         storage is refused until it reclaims it",
    )
}

pub(super) fn superseded() -> StoreError {
    StoreError::NodeClaim(
        "another vaultd node used the PostgreSQL database while this node was cut off, so \
         this node's memory may be stale; restart it",
    )
}

/// Takes the claim's lock on `client` (a connection of its own), before anything else
/// is done to the database. A lock still held is tried again for a few heartbeats: a
/// node that restarts may find its previous connection not yet gone from the server.
pub(super) async fn lock(client: &Client) -> Result<(), StoreError> {
    if lock_within(client, TAKE_WAIT).await? {
        Ok(())
    } else {
        Err(held_elsewhere())
    }
}

/// Moves the claim's generation on, under the fence held exclusively (so no write of
/// a previous holder is between its generation check and its commit), once [`lock`]
/// holds the lock and the schema is current.
pub(super) async fn bump(client: &Client) -> Result<Claim, StoreError> {
    let failed = |e: tokio_postgres::Error| StoreError::Postgres(e.into());
    client.batch_execute("BEGIN").await.map_err(failed)?;
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&FENCE])
        .await
        .map_err(failed)?;
    let generation = client
        .query_one(
            "UPDATE vaultd_claim SET generation = generation + 1 RETURNING generation",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(failed)?;
    client.batch_execute("COMMIT").await.map_err(failed)?;
    Ok(Claim {
        state: AtomicU8::new(HELD),
        generation,
    })
}

/// Whether another node holds the claim, without keeping it: what `check-config` asks
/// (waiting, as opening would, for a claim whose node has just stopped).
pub(super) async fn held_by_another(client: &Client) -> Result<bool, StoreError> {
    if !lock_within(client, TAKE_WAIT).await? {
        return Ok(true);
    }
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&CLAIM_LOCK])
        .await
        .map_err(|e| StoreError::Unreachable(e.into()))?;
    Ok(false)
}

/// Takes the lock, trying again every heartbeat for up to `wait`; whether it was taken.
async fn lock_within(client: &Client, wait: Duration) -> Result<bool, StoreError> {
    let give_up = tokio::time::Instant::now() + wait;
    loop {
        if try_lock(client).await? {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= give_up {
            return Ok(false);
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

async fn try_lock(client: &Client) -> Result<bool, StoreError> {
    client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&CLAIM_LOCK])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| StoreError::Unreachable(e.into()))
}

/// Keeps the claim on `client` for as long as the store lives: pings it, marks the
/// claim lapsed when it stops answering, and reclaims it (or gives up for good).
pub(super) async fn keep(shared: Arc<Shared>, mut client: Client) {
    let Some(claim) = shared.claim.get() else {
        return;
    };
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let ping = tokio::time::timeout(2 * HEARTBEAT, client.simple_query("SELECT 1")).await;
        if matches!(ping, Ok(Ok(_))) {
            continue;
        }
        claim.set(LAPSED);
        // Closing the old session lets the server release its lock, so that this node
        // can take it again (a session only slow, not lost, would otherwise keep it).
        drop(client);
        tracing::warn!(
            "the connection holding this node's claim on the PostgreSQL database stopped \
             answering; storage is refused until the claim is back"
        );
        client = loop {
            tokio::time::sleep(HEARTBEAT).await;
            let attempt = tokio::time::timeout(shared.timeout, reclaim(&shared, claim.generation));
            match attempt.await {
                Ok(Ok(Reclaim::Held(client))) => break client,
                Ok(Ok(Reclaim::Superseded)) => {
                    claim.set(SUPERSEDED);
                    tracing::error!("{}", superseded());
                    return;
                }
                // The old session is not gone yet, or the server is unreachable.
                Ok(Ok(Reclaim::Busy) | Err(_)) | Err(_) => continue,
            }
        };
        claim.set(HELD);
        tracing::info!("this node's claim on the PostgreSQL database is back");
    }
}

/// What an attempt to reclaim found.
enum Reclaim {
    /// The lock again, on this connection, and the generation is still this node's.
    Held(Client),
    /// The generation moved on: another node held the database meanwhile.
    Superseded,
    /// The lock is still held, by this node's old session or by a node that has not
    /// moved the generation yet; try again.
    Busy,
}

/// The claim again on a new connection: only the generation decides whether another
/// node held the database meanwhile.
async fn reclaim(shared: &Shared, generation: i64) -> Result<Reclaim, StoreError> {
    let client = shared.pool.connect().await?;
    let current = || async {
        client
            .query_one("SELECT generation FROM vaultd_claim", &[])
            .await
            .and_then(|row| row.try_get::<_, i64>(0))
            .map_err(|e| StoreError::Unreachable(e.into()))
    };
    if current().await? != generation {
        return Ok(Reclaim::Superseded);
    }
    if !try_lock(&client).await? {
        return Ok(Reclaim::Busy);
    }
    // A node may have taken the claim and let it go between the two reads.
    if current().await? != generation {
        return Ok(Reclaim::Superseded);
    }
    Ok(Reclaim::Held(client))
}

impl Claim {
    /// Marks the claim superseded for good: a write found the generation moved on.
    pub(super) fn supersede(&self) {
        self.set(SUPERSEDED);
    }
}
