//! Joining: a node that starts sealed, or that another node's root-key rotation
//! sealed, asks the nodes `[cluster.join]` lists for their root keys, sealed to a
//! session over mutual TLS, and unseals with them, without custodians. A node sealed
//! on purpose (`vaultctl seal`, `seal --cluster`) does not ask: it stays sealed until
//! custodians unseal it.
//!
//! Before asking, a node must have read the change log to its end, so that a
//! `seal --cluster` announced before it joined reaches it after. The answering node
//! checks that the caller is one of its `[cluster] nodes` and holds `node.join`; both
//! nodes audit the transfer (`admin.join_cluster` there, `system.join` here).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vault_audit::{AuditLog, Decision, Event};

use crate::config::JoinConfig;
use crate::custody::Upkeep;

/// The client a node joins through: this node's certificate, the other nodes as
/// endpoints in order. Fails if the files cannot be read.
pub(crate) fn client(config: &JoinConfig) -> Result<vault_client::Client, vault_client::Error> {
    config
        .endpoints
        .iter()
        .fold(vault_client::Client::builder(), |builder, endpoint| {
            builder.endpoint(endpoint)
        })
        .ca_cert(&config.ca)
        .client_cert(&config.cert, &config.key)
        .revocation_watch(false)
        .auto_renew(false)
        .build()
}

/// Joins whenever this node should (see [`Upkeep::should_join`]), asking again every
/// `retry` while no node answers, until `stopped`.
pub(crate) async fn join(
    retry: Duration,
    client: vault_client::Client,
    upkeep: Arc<Upkeep>,
    audit: AuditLog,
    mut stopped: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        let asking = Arc::clone(&upkeep);
        let should = tokio::task::spawn_blocking(move || asking.should_join())
            .await
            .unwrap_or(false);
        if should {
            match attempt(&client, &upkeep, &audit).await {
                Ok(()) => failing = false,
                Err(why) if !failing => {
                    tracing::warn!("joining the cluster: {why}; asking again");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Asks for the root keys and unseals with them, once the audit log holds the record
/// of it: a node that cannot audit its unsealing stays sealed.
async fn attempt(
    client: &vault_client::Client,
    upkeep: &Arc<Upkeep>,
    audit: &AuditLog,
) -> Result<(), String> {
    let joined = client.join_cluster().await.map_err(|e| e.to_string())?;
    let versions: Vec<String> = joined
        .roots
        .iter()
        .map(|r| r.version().to_string())
        .collect();
    let endpoint = joined.endpoint;
    let record = |decision, reason: String| {
        let mut event = Event {
            decision,
            reason,
            ..Event::default()
        };
        event.detail.insert("from".into(), endpoint.clone());
        event
            .detail
            .insert("root_versions".into(), versions.join(","));
        crate::audit::system_event(audit, "system.join", event)
    };
    record(
        Decision::Allow,
        format!("unsealing with the root keys of {endpoint}, without custodians"),
    )
    .await
    .map_err(|e| format!("not unsealing: the audit log cannot record it ({e})"))?;
    let joining = Arc::clone(upkeep);
    let roots = joined.roots;
    let unsealed = tokio::task::spawn_blocking(move || joining.join(roots))
        .await
        .map_err(|_| "unsealing stopped with a panic".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match unsealed {
        Ok(()) => {
            tracing::info!("unsealed: joined the cluster through {endpoint}");
            Ok(())
        }
        Err(why) => {
            let _ = record(Decision::Error, format!("not unsealed: {why}")).await;
            Err(why)
        }
    }
}
