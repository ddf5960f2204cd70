//! `[cluster]`: which other nodes on the same PostgreSQL database may join from this
//! one, and where this one joins from.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::StorageConfig;
use super::raw::{SECOND, duration, invalid, required};
use crate::identity::Identity;

/// Joining a cluster without custodians.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterConfig {
    /// Identities of the nodes that may join from this one (they need `node.join` too).
    pub nodes: Vec<Identity>,
    /// Where this node joins from, if it does.
    pub join: Option<JoinConfig>,
}

/// Where and how this node asks another for the root keys (`[cluster.join]`).
#[derive(Debug, Clone, PartialEq)]
pub struct JoinConfig {
    /// The other nodes' gRPC endpoints (`https://host:port`), tried in order.
    pub endpoints: Vec<String>,
    /// The CA their server certificates chain to.
    pub ca: PathBuf,
    /// This node's client certificate (PEM) and key, naming its identity.
    pub cert: PathBuf,
    /// The client certificate's private key.
    pub key: PathBuf,
    /// How long to wait between attempts while no node answers.
    pub retry: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    nodes: Option<Vec<String>>,
    join: Option<RawJoin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoin {
    endpoints: Option<Vec<String>>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    retry: Option<String>,
}

/// The most nodes `[cluster] nodes` may list.
const MAX_NODES: usize = 64;

pub(super) fn cluster(
    raw: RawCluster,
    storage: &StorageConfig,
    at: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<ClusterConfig, ConfigError> {
    if (raw.nodes.is_some() || raw.join.is_some()) && matches!(storage, StorageConfig::Redb(_)) {
        return Err(invalid(
            "cluster",
            "is for nodes sharing one PostgreSQL database; set storage.engine = \"postgres\" \
             or remove [cluster]",
        ));
    }
    let names = raw.nodes.unwrap_or_default();
    if names.len() > MAX_NODES {
        return Err(invalid("cluster.nodes", "lists more than 64 nodes"));
    }
    let nodes = names
        .iter()
        .map(|name| {
            Identity::parse_remote(name).ok_or_else(|| ConfigError::Invalid {
                key: "cluster.nodes",
                reason: format!(
                    "{name:?} is not an identity: give each node's exact SPIFFE ID (or \
                     dns:NAME), no patterns"
                ),
            })
        })
        .collect::<Result<_, _>>()?;
    let join = match raw.join {
        None => None,
        Some(join) => {
            let endpoints = join.endpoints.unwrap_or_default();
            if endpoints.is_empty() || endpoints.len() > MAX_NODES {
                return Err(invalid(
                    "cluster.join.endpoints",
                    "list 1 to 64 other nodes' endpoints, e.g. [\"https://vault-2:8200\"]",
                ));
            }
            if let Some(bad) = endpoints.iter().find(|e| !e.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    key: "cluster.join.endpoints",
                    reason: format!("{bad:?}: a node is reached over mutual TLS (https://)"),
                });
            }
            Some(JoinConfig {
                endpoints,
                ca: at(required(
                    join.ca,
                    "cluster.join.ca",
                    "the CA the other nodes' server certificates chain to",
                )?),
                cert: at(required(
                    join.cert,
                    "cluster.join.cert",
                    "this node's client certificate, naming the identity other nodes list",
                )?),
                key: at(required(
                    join.key,
                    "cluster.join.key",
                    "the private key of cluster.join.cert",
                )?),
                retry: duration(
                    "cluster.join.retry",
                    join.retry.as_deref(),
                    SECOND,
                    (Duration::from_millis(100), 60 * SECOND),
                )?,
            })
        }
    };
    Ok(ClusterConfig { nodes, join })
}
