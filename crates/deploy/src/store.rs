//! The traits a storage backend implements for the control plane.

use async_trait::async_trait;
use bytes::Bytes;

use crate::records::{Deployment, Version};

/// A control-plane operation that did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store holds an unreadable record: {0}")]
    Corrupt(String),
}

/// Versions, deployments and the component bytes they point at.
#[async_trait]
pub trait DeployStore: Send + Sync {
    /// Stores a component under its hash; storing it again is a no-op.
    async fn put_blob(&self, hash: &str, bytes: Bytes) -> Result<(), StoreError>;

    /// The component stored under `hash`.
    async fn blob(&self, hash: &str) -> Result<Option<Bytes>, StoreError>;

    /// Keeps compiled code for the component of hash `component`, built by
    /// an engine of compatibility key `engine`, as the compiling node
    /// sealed it (replacing what that pair had: a node whose seal did not
    /// verify compiled it again). Nothing is kept if the component is not
    /// stored; the code goes when the component does. A store only one
    /// node uses keeps none ([`DeployStore::shares_artifacts`]).
    async fn put_artifact(
        &self,
        component: &str,
        engine: &str,
        sealed: Bytes,
    ) -> Result<(), StoreError> {
        let _ = (component, engine, sealed);
        Ok(())
    }

    /// The compiled code kept for `component` and `engine`.
    async fn artifact(&self, component: &str, engine: &str) -> Result<Option<Bytes>, StoreError> {
        let _ = (component, engine);
        Ok(None)
    }

    /// Whether nodes share compiled code through this store: a store that
    /// several nodes use does; one node's own (its compile cache on disk
    /// holds the same) does not.
    fn shares_artifacts(&self) -> bool {
        false
    }

    /// Records a version whose blob is stored; `false` if it was recorded
    /// already (the record is left as it was).
    async fn add_version(&self, version: &Version) -> Result<bool, StoreError>;

    /// A worker's versions, newest first.
    async fn versions(&self, worker: &str) -> Result<Vec<Version>, StoreError>;

    /// Makes `deployment` the worker's current one.
    async fn set_deployment(&self, deployment: &Deployment) -> Result<(), StoreError>;

    /// Adds `version` (as [`DeployStore::add_version`]: `false` if the
    /// worker had it already, which is kept) and makes `deployment` the
    /// worker's current one, in one transaction: both or neither.
    async fn deploy(&self, version: &Version, deployment: &Deployment) -> Result<bool, StoreError>;

    /// Every worker's current deployment, by worker name.
    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError>;

    /// One worker's current deployment, if it is deployed.
    async fn deployment(&self, worker: &str) -> Result<Option<Deployment>, StoreError>;

    /// Forgets a worker's versions other than `keep`, and the blobs no
    /// version uses any more; returns how many versions went.
    async fn prune_versions(&self, worker: &str, keep: &[String]) -> Result<usize, StoreError>;

    /// Forgets a worker: its deployment, versions, secrets, and the blobs no
    /// other version uses. `false` if it had no deployment.
    async fn delete_worker(&self, worker: &str) -> Result<bool, StoreError>;
}

/// Secrets by worker. Values leave the store only towards a guest's
/// environment.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Sets a secret, replacing any value it had.
    async fn put_secret(&self, worker: &str, name: &str, value: &str) -> Result<(), StoreError>;

    /// Deletes a secret; `false` if there was none.
    async fn delete_secret(&self, worker: &str, name: &str) -> Result<bool, StoreError>;

    /// The names of a worker's secrets, sorted.
    async fn secret_names(&self, worker: &str) -> Result<Vec<String>, StoreError>;

    /// A worker's secrets with their values, for its guests' environment.
    async fn secrets(&self, worker: &str) -> Result<Vec<(String, String)>, StoreError>;
}

/// Runs of workers' cron triggers. Every node that serves a worker asks to
/// run each tick; the store lets exactly one of them.
#[async_trait]
pub trait CronStore: Send + Sync {
    /// Takes the run of `worker`'s schedule `cron` at `tick` (Unix ms) for
    /// `node`: of all callers for one tick, exactly one gets `true`. Runs
    /// older than a day are forgotten.
    async fn claim_tick(
        &self,
        worker: &str,
        cron: &str,
        tick: u64,
        node: &str,
    ) -> Result<bool, StoreError>;

    /// Records how a run taken with [`CronStore::claim_tick`] ended.
    async fn finish_tick(
        &self,
        worker: &str,
        cron: &str,
        tick: u64,
        outcome: &RunOutcome,
    ) -> Result<(), StoreError>;

    /// A worker's latest runs, newest first.
    async fn cron_runs(&self, worker: &str, limit: u32) -> Result<Vec<CronRun>, StoreError>;
}

/// One run of a cron trigger.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CronRun {
    pub cron: String,
    /// The tick it ran for, Unix ms.
    pub tick: u64,
    /// The node that ran it.
    pub node: String,
    /// `None` while it runs (or if the node died during it).
    pub status: Option<u16>,
    pub wall_ms: Option<u64>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: u16,
    pub wall_ms: u64,
    pub error: Option<String>,
}

/// A day, in ms: how long runs are remembered.
pub const CRON_RUNS_KEPT_MS: u64 = 24 * 3600 * 1000;

/// One entry of the change log. Nodes that share a store replay the log
/// to stay in step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub subject: Subject,
}

/// What a change touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A worker's deployment changed: a deploy, a rollback, a rollout step
    /// or its deletion.
    Deployment(String),
    /// A worker's secrets changed.
    Secrets(String),
    /// One KV key was written or deleted.
    KvKey { namespace: String, key: Vec<u8> },
    /// A KV namespace was deleted.
    KvNamespace(String),
    /// Someone watches a worker's tail on some node: every node relays the
    /// worker's requests there for [`TAIL_LEASE`].
    TailWatch(String),
}

/// How long nodes relay a worker's tail events after a
/// [`ChangeFeed::watch_tail`]; the watching node renews it well before.
pub const TAIL_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// The largest batch of tail events [`ChangeFeed::relay_tail`] carries
/// (PostgreSQL's NOTIFY takes payloads under 8000 bytes).
pub const TAIL_PAYLOAD_MAX: usize = 7900;

/// Keeps tail batches coming from other nodes while it lives.
pub trait TailReceiver: Send + Sync {}

/// The change log of a store that nodes share. Every write of
/// [`DeployStore::set_deployment`], [`DeployStore::delete_worker`], the
/// secret writes and the KV writes that change something records a change
/// in the same transaction. Sequence numbers increase in the order changes
/// were made, not always in the order they commit, and a transaction that
/// rolls back leaves a gap: read the log through a [`ChangeCursor`].
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// The sequence number of the newest change (0 for none).
    async fn last_change(&self) -> Result<u64, StoreError>;

    /// At most `limit` changes after `seq`, oldest first.
    async fn changes_after(&self, seq: u64, limit: u32) -> Result<Vec<Change>, StoreError>;

    /// Calls `wake` whenever a change may have been recorded (a push from
    /// the store, where it has one); callers poll too, so a store without
    /// pushes loses only latency.
    fn listen(&self, wake: Box<dyn Fn() + Send + Sync>) {
        drop(wake);
    }

    /// Asks every node sharing the store to relay `worker`'s requests to the
    /// nodes receiving tails ([`ChangeFeed::receive_tails`]) for the next
    /// [`TAIL_LEASE`]. `false` where there are no other nodes to ask.
    async fn watch_tail(&self, worker: &str) -> Result<bool, StoreError> {
        let _ = worker;
        Ok(false)
    }

    /// Sends a batch of tail events (at most [`TAIL_PAYLOAD_MAX`] bytes) to
    /// the nodes receiving tails.
    async fn relay_tail(&self, batch: &str) -> Result<(), StoreError> {
        let _ = batch;
        Ok(())
    }

    /// Calls `deliver` with every batch any node relays, for as long as the
    /// returned receiver lives; `None` where the store relays nothing.
    fn receive_tails(
        &self,
        deliver: Box<dyn Fn(String) + Send + Sync>,
    ) -> Option<Box<dyn TailReceiver>> {
        drop(deliver);
        None
    }

    /// Removes changes recorded longer than `keep` ago; returns how many.
    async fn prune_changes(&self, keep: std::time::Duration) -> Result<u64, StoreError> {
        let _ = keep;
        Ok(0)
    }
}
