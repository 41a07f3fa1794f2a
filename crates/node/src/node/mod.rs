//! A node: the runtime, the stores, the workers it serves, and the
//! operations that change them. Every change is validated in full before
//! anything is stored or swapped in, so a failed deploy leaves the running
//! version untouched.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use verge_deploy::{
    ChangeFeed, CronStore, DeployStore, Deployment, SecretStore, StoreError, TailReceiver, Version,
};
use verge_kv::{CachedStore, Clock, KvStore};
use verge_manifest::Manifest;
use verge_runtime::{AddressPolicy, CompileSource, RequestSink, Runtime, RuntimeConfig};

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::tail::TailHub;

mod cron;
mod follow;
mod load;
mod ops;

pub use ops::{SECRET_NAME_HELP, is_secret_name};

/// Why a change to the node was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request itself is wrong; `help` says how to fix it.
    #[error("{message}")]
    Invalid { message: String, help: String },
    /// Something the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with another worker.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(message: impl Into<String>, help: impl Into<String>) -> NodeError {
    NodeError::Invalid {
        message: message.into(),
        help: help.into(),
    }
}

impl From<verge_kv::KvError> for NodeError {
    fn from(e: verge_kv::KvError) -> NodeError {
        NodeError::Store(StoreError::Unavailable(e.to_string()))
    }
}

/// What the node's stores are.
pub struct Stores {
    pub deploys: Arc<dyn DeployStore>,
    pub secrets: Arc<dyn SecretStore>,
    /// Who runs each cron tick.
    pub crons: Arc<dyn CronStore>,
    /// What other nodes sharing the store changed.
    pub changes: Arc<dyn ChangeFeed>,
    pub kv: Arc<dyn KvStore>,
    /// The read cache in front of `kv`, when the store is shared: changes
    /// other nodes make invalidate it.
    pub kv_cache: Option<Arc<CachedStore>>,
    pub clock: Arc<dyn Clock>,
}

/// A deploy as the admin API receives it.
pub struct DeployRequest {
    pub worker: String,
    /// The hash of a component uploaded before.
    pub component: String,
    /// The `verge.toml` text.
    pub manifest: String,
    /// Send this share of requests to the new version and the rest to the
    /// current one; `None` or 100 makes it take all traffic.
    pub percentage: Option<u8>,
    pub author: String,
}

/// What a deploy did.
pub struct Deployed {
    pub version: Version,
    /// `false` when this exact version had been deployed before.
    pub new_version: bool,
    pub deployment: Deployment,
    /// Whether the new version's code came from the compile cache.
    pub compile: CompileSource,
    /// KV namespaces the manifest binds that did not exist and were
    /// created by this deploy.
    pub created_namespaces: Vec<String>,
}

pub struct Node {
    pub config: NodeConfig,
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub tail: Arc<TailHub>,
    stores: Stores,
    /// Deploys, rollbacks and secret changes happen one at a time, so each
    /// validates against the state it will replace.
    changing: tokio::sync::Mutex<()>,
    /// Names this node in cron runs and tail events: host and process.
    node_id: String,
    /// Batches of other nodes' tail events arrive while tails are watched
    /// here (see `relay.rs`).
    pub(crate) tail_receiver: std::sync::Mutex<std::sync::Weak<Box<dyn TailReceiver>>>,
}

/// This node's name in cron runs.
fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}:{}", std::process::id())
}

impl Node {
    /// Starts the runtime and serves every worker the stores hold. A worker
    /// that can no longer load (its component does not compile on this
    /// build, say) is logged and left out; the others serve. Each request's
    /// summary goes to the metrics, the tail and `log`.
    pub async fn start(
        config: NodeConfig,
        stores: Stores,
        log: Arc<dyn RequestSink>,
    ) -> anyhow::Result<Arc<Node>> {
        let metrics = Arc::new(Metrics::new());
        let node_id = node_id();
        let tail = Arc::new(TailHub::new(&node_id));
        let sink = Arc::new(NodeSink {
            metrics: metrics.clone(),
            tail: tail.clone(),
            log,
        });
        let runtime = Runtime::new(RuntimeConfig {
            ceilings: config.ceilings,
            max_instances: config.max_instances,
            max_instances_per_worker: config.max_instances_per_worker,
            memory_budget: config.memory_budget,
            queue_timeout: config.queue_timeout,
            body_read_timeout: config.body_read_timeout,
            pooling: config.pooling,
            cache_dir: Some(config.data_dir.join("compiled")),
            // Code is shared only where other nodes can read it.
            code_secret: config
                .cluster_secret
                .as_ref()
                .filter(|_| stores.deploys.shares_artifacts())
                .map(|secret| secret.as_bytes().to_vec()),
            sink,
            outbound_addresses: AddressPolicy::new(
                config.outbound_allow_networks.clone(),
                config.dev,
            ),
            ..RuntimeConfig::default()
        })?;
        if stores.deploys.shares_artifacts() && config.cluster_secret.is_none() && !config.dev {
            tracing::info!(
                "each node compiles the workers it runs: set the same `cluster_secret` \
                 (VERGE_CLUSTER_SECRET) on every node to share compiled code through the store"
            );
        }
        let node = Arc::new(Node {
            registry: Arc::new(Registry::new(&config.domain, config.dev)),
            config,
            runtime,
            metrics,
            tail,
            stores,
            changing: tokio::sync::Mutex::new(()),
            node_id,
            tail_receiver: std::sync::Mutex::new(std::sync::Weak::new()),
        });
        // Read the log's position first: a change made while the workers
        // load is then replayed, not missed.
        let last_change = node.stores.changes.last_change().await?;
        for deployment in node.stores.deploys.deployments().await? {
            let worker = deployment.worker.clone();
            match node.activate(&deployment, None, HashMap::new()).await {
                Ok(live) => node.registry.insert(&worker, live),
                Err(e) => tracing::error!(worker, "cannot serve the deployed version: {e}"),
            }
        }
        node.follow_changes(last_change);
        node.relay_tails();
        node.run_schedules();
        Ok(node)
    }

    /// Whether the store answers: `Err` with why when it does not (the
    /// node then serves deployed workers and refuses changes).
    pub async fn store_health(&self) -> Result<(), String> {
        let check = self.stores.changes.last_change();
        match tokio::time::timeout(std::time::Duration::from_secs(2), check).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the store did not answer within 2 s".into()),
        }
    }

    /// This node's name in cron runs and relayed tail events.
    pub fn id(&self) -> &str {
        &self.node_id
    }

    /// Now, in milliseconds, by the stores' clock (a manual one in tests).
    fn now_ms(&self) -> u64 {
        self.stores.clock.now_ms()
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }
}

/// Where every request's summary goes on a node.
struct NodeSink {
    metrics: Arc<Metrics>,
    tail: Arc<TailHub>,
    log: Arc<dyn RequestSink>,
}

impl RequestSink for NodeSink {
    fn record(&self, summary: &verge_runtime::RequestSummary) {
        self.metrics.record(summary);
        self.tail.publish(summary);
        self.log.record(summary);
    }
}

fn not_deployed(worker: &str) -> NodeError {
    NodeError::NotFound(format!(
        "no worker named `{worker}` is deployed on this node"
    ))
}

/// A manifest as deployed: its text alone, with no directory around it.
fn parse_manifest(text: &str) -> Result<Manifest, NodeError> {
    Manifest::parse(text, Path::new(verge_manifest::FILE_NAME)).map_err(|e| NodeError::Invalid {
        message: e.to_string(),
        help: e
            .help
            .clone()
            .unwrap_or_else(|| "fix verge.toml and deploy again".into()),
    })
}
