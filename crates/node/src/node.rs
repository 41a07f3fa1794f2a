//! A node: the runtime, the stores, the workers it serves, and the
//! operations that change them. Every change is validated in full before
//! anything is stored or swapped in, so a failed deploy leaves the running
//! version untouched.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use verge_deploy::{
    Canary, Change, ChangeCursor, ChangeFeed, CronRun, CronStore, DeployStore, Deployment,
    RunOutcome, SecretStore, Settled, StoreError, Subject, TailReceiver, Version, short_id,
    version_id,
};
use verge_kv::{CachedStore, Clock, KvStore, Namespace};
use verge_manifest::Manifest;
use verge_runtime::{
    CompileSource, KvBindings, LoadError, MAX_COMPONENT_SIZE, RequestSink, Runtime, RuntimeConfig,
    Worker, component_hash,
};

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::registry::{Live, Registry, SCHEDULED_PATH};
use crate::spec::worker_spec;
use crate::tail::TailHub;

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

/// How often a node reads the change log when the store pushes nothing.
pub const CHANGE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Changes read from the log at once.
const CHANGE_BATCH: u32 = 5000;

/// How long change log entries are kept. A node away for longer restarts
/// (and reads everything) or finds the gap and reloads everything.
pub const CHANGE_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

/// How often a node removes entries older than [`CHANGE_RETENTION`].
const CHANGE_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

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

/// Ticks a node catches up on at most after falling behind (a stalled
/// process, a suspended machine); older ones are skipped.
const MAX_LATE_TICKS: usize = 10;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
            sink,
            ..RuntimeConfig::default()
        })?;
        let node = Arc::new(Node {
            registry: Arc::new(Registry::new(&config.domain)),
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

    /// Replays the store's change log after `position`, on every push from
    /// the store and at least every [`CHANGE_POLL`], so deploys, rollbacks,
    /// secret changes and KV writes made through other nodes reach this
    /// one; stops with the node.
    fn follow_changes(self: &Arc<Self>, position: u64) {
        let (wake, mut woken) = tokio::sync::mpsc::channel::<()>(1);
        if self.config.store_listen {
            self.stores.changes.listen(Box::new(move || {
                let _ = wake.try_send(());
            }));
        } else {
            drop(wake);
        }
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut cursor = ChangeCursor::new(position);
            let mut pushes = true;
            let mut last_prune = Instant::now();
            loop {
                tokio::select! {
                    pushed = woken.recv(), if pushes => pushes = pushed.is_some(),
                    () = tokio::time::sleep(CHANGE_POLL) => {}
                }
                let Some(node) = node.upgrade() else { return };
                node.catch_up(&mut cursor).await;
                if last_prune.elapsed() >= CHANGE_PRUNE_EVERY {
                    last_prune = Instant::now();
                    match node.stores.changes.prune_changes(CHANGE_RETENTION).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!("pruned {n} old change log entries"),
                        Err(e) => tracing::debug!("cannot prune the change log: {e}"),
                    }
                }
            }
        });
    }

    /// Applies what the change log holds after `cursor`.
    async fn catch_up(&self, cursor: &mut ChangeCursor) {
        loop {
            let changes = match self
                .stores
                .changes
                .changes_after(cursor.position(), CHANGE_BATCH)
                .await
            {
                Ok(changes) => changes,
                Err(e) => {
                    tracing::warn!("cannot read the change log: {e}");
                    return;
                }
            };
            let full = changes.len() == CHANGE_BATCH as usize;
            let before = cursor.position();
            for change in changes {
                if !cursor.is_new(change.seq) {
                    continue;
                }
                if let Err(e) = self.apply_change(&change).await {
                    // Try again on the next round, from this change.
                    tracing::warn!(change = ?change.subject, "cannot apply a change: {e}");
                    return;
                }
                cursor.applied(change.seq);
            }
            if let Settled::GaveUp { below } = cursor.settle(Instant::now()) {
                tracing::warn!(
                    "change log entries before {below} never appeared; \
                     reloading every worker and dropping the KV cache"
                );
                if let Err(e) = self.resync().await {
                    tracing::warn!("cannot reload from the store: {e}");
                }
            }
            // A full batch may have more behind it; a batch that moved
            // nothing forward (its head is a gap) is read again next round.
            if !full || cursor.position() == before {
                return;
            }
        }
    }

    /// Brings this node in line with a change made elsewhere: a worker's
    /// new version loads before it takes traffic; KV changes drop what the
    /// cache holds.
    async fn apply_change(&self, change: &Change) -> Result<(), NodeError> {
        match &change.subject {
            Subject::Deployment(worker) => self.reload_worker(worker, false).await,
            Subject::Secrets(worker) => self.reload_worker(worker, true).await,
            Subject::KvKey { namespace, key } => {
                if let Some(cache) = &self.stores.kv_cache {
                    cache.invalidate(namespace, key);
                }
                Ok(())
            }
            Subject::KvNamespace(namespace) => {
                if let Some(cache) = &self.stores.kv_cache {
                    cache.invalidate_namespace(namespace);
                }
                Ok(())
            }
            Subject::TailWatch(worker) => {
                self.tail.relay_for(worker);
                Ok(())
            }
        }
    }

    /// Serves what the store says `worker` is; `restart` when its secrets
    /// changed, so that every version starts again with them.
    async fn reload_worker(&self, worker: &str, restart: bool) -> Result<(), NodeError> {
        let _changing = self.changing.lock().await;
        let deployment = self
            .stores
            .deploys
            .deployments()
            .await?
            .into_iter()
            .find(|d| d.worker == worker);
        let current = self.registry.get(worker);
        match deployment {
            None => {
                if self.registry.remove(worker) {
                    tracing::info!(worker, "deleted on another node");
                }
            }
            Some(deployment) => {
                let unchanged = current.as_ref().is_some_and(|l| l.deployment == deployment);
                if unchanged && !restart {
                    return Ok(());
                }
                let reuse = if restart { None } else { current.as_deref() };
                let live = self.activate(&deployment, reuse, HashMap::new()).await?;
                self.registry.insert(worker, live);
                tracing::info!(
                    worker,
                    version = short_id(&deployment.stable),
                    "applied a change made on another node"
                );
            }
        }
        Ok(())
    }

    /// Reloads every worker from the store and empties the KV cache: for
    /// when changes may have been missed.
    async fn resync(&self) -> Result<(), NodeError> {
        if let Some(cache) = &self.stores.kv_cache {
            cache.clear();
        }
        let deployed: Vec<String> = self
            .stores
            .deploys
            .deployments()
            .await?
            .into_iter()
            .map(|d| d.worker)
            .collect();
        for (worker, _) in self.registry.all() {
            if !deployed.contains(&worker) {
                self.reload_worker(&worker, true).await?;
            }
        }
        for worker in deployed {
            self.reload_worker(&worker, true).await?;
        }
        Ok(())
    }

    /// Runs cron triggers: at each tick of a served worker's schedules,
    /// every node asks the store for the run, and the one that gets it
    /// invokes the worker's stable version. A tick no node could claim (the
    /// store was away) is skipped, not run twice later.
    fn run_schedules(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut checked = now_ms();
            // Each served schedule's next tick, computed when it is first
            // seen and after it fires: once per tick, not once a second.
            let mut upcoming: HashMap<(String, String), Option<u64>> = HashMap::new();
            loop {
                let Some(this) = node.upgrade() else { return };
                let served: Vec<(String, verge_manifest::Schedule)> = this
                    .registry
                    .all()
                    .into_iter()
                    .flat_map(|(worker, live)| {
                        live.crons
                            .iter()
                            .map(|cron| (worker.clone(), cron.clone()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                drop(this);
                upcoming.retain(|(worker, text), _| {
                    served
                        .iter()
                        .any(|(w, cron)| w == worker && cron.as_str() == text)
                });
                for (worker, cron) in &served {
                    upcoming
                        .entry((worker.clone(), cron.as_str().to_string()))
                        .or_insert_with(|| cron.next_after(checked));
                }
                // Wake for the next tick, or after a second to see new
                // deploys' schedules.
                let next = upcoming
                    .values()
                    .flatten()
                    .min()
                    .copied()
                    .unwrap_or(u64::MAX)
                    .min(checked + 1000);
                let now = now_ms();
                if next > now {
                    tokio::time::sleep(std::time::Duration::from_millis(next - now)).await;
                }
                let Some(this) = node.upgrade() else { return };
                let now = now_ms();
                for (worker, cron) in &served {
                    let key = (worker.clone(), cron.as_str().to_string());
                    let Some(Some(first)) = upcoming.get(&key).copied() else {
                        continue;
                    };
                    let mut due = Vec::new();
                    let mut tick = Some(first);
                    while let Some(t) = tick.filter(|t| *t <= now) {
                        due.push(t);
                        tick = cron.next_after(t);
                    }
                    upcoming.insert(key, tick);
                    if due.len() > MAX_LATE_TICKS {
                        tracing::warn!(
                            worker,
                            cron = cron.as_str(),
                            "{} ticks were missed while the node was stalled; running the last",
                            due.len() - 1
                        );
                        due.drain(..due.len() - 1);
                    }
                    for t in due {
                        let node = this.clone();
                        let (worker, cron) = (worker.clone(), cron.as_str().to_string());
                        tokio::spawn(async move {
                            if let Err(e) = node.run_tick(&worker, &cron, t).await {
                                tracing::warn!(
                                    worker,
                                    cron,
                                    "cannot claim a cron tick, skipping it: {e}"
                                );
                            }
                        });
                    }
                }
                checked = now.max(checked);
            }
        });
    }

    /// Runs `worker`'s tick of `cron` if this node is the one to.
    async fn run_tick(
        &self,
        worker: &str,
        cron: &str,
        tick: u64,
    ) -> Result<Option<CronRun>, StoreError> {
        let claimed = self
            .stores
            .crons
            .claim_tick(worker, cron, tick, &self.node_id)
            .await?;
        if !claimed {
            return Ok(None);
        }
        let outcome = self.invoke_scheduled(worker, cron, tick).await;
        if let Err(e) = self
            .stores
            .crons
            .finish_tick(worker, cron, tick, &outcome)
            .await
        {
            tracing::warn!(worker, cron, "cannot record a cron run: {e}");
        }
        Ok(Some(CronRun {
            cron: cron.to_string(),
            tick,
            node: self.node_id.clone(),
            status: Some(outcome.status),
            wall_ms: Some(outcome.wall_ms),
            error: outcome.error,
        }))
    }

    /// Calls `worker`'s scheduled handler: a `POST` to [`SCHEDULED_PATH`]
    /// with the schedule and the tick in the query, through the same path
    /// as any request (limits, request log, metrics, tail).
    async fn invoke_scheduled(&self, worker: &str, cron: &str, tick: u64) -> RunOutcome {
        let failed = |error: String| RunOutcome {
            status: 503,
            wall_ms: 0,
            error: Some(error),
        };
        let Some(live) = self.registry.get(worker) else {
            return failed(format!("worker `{worker}` is not served on this node"));
        };
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("cron", cron)
            .append_pair("time", &tick.to_string())
            .finish();
        let request = http::Request::post(format!("{SCHEDULED_PATH}?{query}"))
            .header(
                http::header::HOST,
                format!("{worker}.{}", self.config.domain),
            )
            .body(Bytes::new());
        let request = match request {
            Ok(request) => request,
            Err(e) => return failed(format!("cannot make the scheduled request: {e}")),
        };
        let started = Instant::now();
        let response = live.stable.clone().handle_bytes(request).await;
        let status = response.status().as_u16();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let error = (status >= 400).then(|| {
            let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
            text.trim().to_string()
        });
        RunOutcome {
            status,
            wall_ms: started.elapsed().as_millis() as u64,
            error,
        }
    }

    /// Runs one of `worker`'s schedules now, as a tick would (the admin
    /// API's manual run): `cron` may be left out when it has one.
    pub async fn run_schedule_now(
        &self,
        worker: &str,
        cron: Option<&str>,
    ) -> Result<CronRun, NodeError> {
        let live = self
            .registry
            .get(worker)
            .ok_or_else(|| not_deployed(worker))?;
        let schedules: Vec<&str> = live.crons.iter().map(|c| c.as_str()).collect();
        let cron = match cron {
            Some(cron) => {
                let cron = cron.split_whitespace().collect::<Vec<_>>().join(" ");
                if !schedules.contains(&cron.as_str()) {
                    return Err(NodeError::Invalid {
                        message: format!("worker `{worker}` has no schedule `{cron}`"),
                        help: format!(
                            "its schedules: {schedules:?} ([triggers] crons in verge.toml)"
                        ),
                    });
                }
                cron
            }
            None => match schedules.as_slice() {
                [one] => one.to_string(),
                _ => {
                    return Err(NodeError::Invalid {
                        message: format!(
                            "worker `{worker}` has {} schedules; say which to run",
                            schedules.len()
                        ),
                        help: format!(
                            "send {{\"cron\": \"...\"}}, one of {schedules:?}; schedules are \
                             [triggers] crons in verge.toml"
                        ),
                    });
                }
            },
        };
        self.run_tick(worker, &cron, now_ms())
            .await?
            .ok_or_else(|| NodeError::Conflict("another run took this millisecond; retry".into()))
    }

    /// A worker's schedules with their next ticks, and its latest runs.
    pub async fn schedules(
        &self,
        worker: &str,
    ) -> Result<(Vec<(String, Option<u64>)>, Vec<CronRun>), NodeError> {
        let live = self
            .registry
            .get(worker)
            .ok_or_else(|| not_deployed(worker))?;
        let now = now_ms();
        let crons = live
            .crons
            .iter()
            .map(|c| (c.as_str().to_string(), c.next_after(now)))
            .collect();
        let runs = self.stores.crons.cron_runs(worker, 50).await?;
        Ok((crons, runs))
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

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Stores an uploaded component under its hash, checking `expected` if
    /// the uploader named one.
    pub async fn put_component(&self, expected: &str, bytes: Bytes) -> Result<String, NodeError> {
        if bytes.len() > MAX_COMPONENT_SIZE {
            return Err(invalid(
                format!(
                    "the component is {} bytes, above the limit of {MAX_COMPONENT_SIZE}",
                    bytes.len()
                ),
                "build in release mode and strip it (`[profile.release] strip = true`)",
            ));
        }
        let hash = component_hash(&bytes);
        if hash != expected {
            return Err(invalid(
                format!("the uploaded bytes hash to {hash}, not {expected}"),
                "upload to /v1/components/{SHA-256 of the bytes}; the upload may have been cut short",
            ));
        }
        self.stores.deploys.put_blob(&hash, bytes).await?;
        Ok(hash)
    }

    /// Validates and deploys a version: see [`DeployRequest`].
    pub async fn deploy(&self, request: DeployRequest) -> Result<Deployed, NodeError> {
        let _changing = self.changing.lock().await;
        let manifest = parse_manifest(&request.manifest)?;
        if manifest.name != request.worker {
            return Err(invalid(
                format!(
                    "the manifest names worker `{}`, but this deploy is for `{}`",
                    manifest.name, request.worker
                ),
                "deploy to the worker the manifest names, or change `name` in verge.toml",
            ));
        }
        if let Some((route, owner)) = self
            .registry
            .route_conflict(&request.worker, &manifest.routes)
        {
            return Err(NodeError::Conflict(format!(
                "route `{route}` is already served by worker `{owner}`; \
                 remove it from one of the two manifests"
            )));
        }
        let percentage = match request.percentage {
            None | Some(100) => None,
            Some(p @ 1..=99) => Some(p),
            Some(p) => {
                return Err(invalid(
                    format!("percentage {p} is outside 1..=100"),
                    "give the share of requests the new version takes, e.g. 10",
                ));
            }
        };
        let Some(bytes) = self.stores.deploys.blob(&request.component).await? else {
            return Err(invalid(
                format!("no component with hash {} was uploaded", request.component),
                "upload it first: PUT /v1/components/{hash} with the .wasm as the body",
            ));
        };
        let version = Version {
            id: version_id(&request.component, &request.manifest),
            worker: request.worker.clone(),
            component: request.component.clone(),
            manifest: request.manifest.clone(),
            size: bytes.len() as u64,
            created_at: now_ms(),
            author: request.author.clone(),
        };
        let current = self.registry.get(&request.worker);
        let deployment = match (&current, percentage) {
            (Some(live), Some(percent)) => {
                if live.deployment.stable == version.id {
                    return Err(invalid(
                        format!(
                            "version {} already takes the traffic the canary does not",
                            short_id(&version.id)
                        ),
                        "deploy a different version as the canary, or without --percentage",
                    ));
                }
                Deployment {
                    worker: request.worker.clone(),
                    stable: live.deployment.stable.clone(),
                    canary: Some(Canary {
                        version: version.id.clone(),
                        percent,
                    }),
                    updated_at: now_ms(),
                    author: request.author.clone(),
                }
            }
            (None, Some(_)) => {
                return Err(invalid(
                    format!(
                        "worker `{}` has no version deployed to share traffic with",
                        request.worker
                    ),
                    "deploy the first version without --percentage",
                ));
            }
            (_, None) => Deployment {
                worker: request.worker.clone(),
                stable: version.id.clone(),
                canary: None,
                updated_at: now_ms(),
                author: request.author.clone(),
            },
        };
        // Load first: nothing is stored or swapped unless it can serve.
        // Bound namespaces that do not exist yet are created once it can.
        let missing = self.missing_namespaces(&manifest).await?;
        let (loaded, compile) = self
            .load_version_with(&version, &manifest, bytes.to_vec(), &missing)
            .await?;
        let fresh = HashMap::from([(version.id.clone(), (loaded, manifest))]);
        let live = self
            .activate(&deployment, current.as_deref(), fresh)
            .await?;
        for namespace in &missing {
            self.stores.kv.create_namespace(namespace).await?;
        }
        let new_version = self.stores.deploys.add_version(&version).await?;
        let version = if new_version {
            version
        } else {
            // Keep the first deploy's record (its time and author).
            self.find_version(&request.worker, &version.id).await?
        };
        self.stores.deploys.set_deployment(&deployment).await?;
        self.registry.insert(&request.worker, live);
        Ok(Deployed {
            version,
            new_version,
            deployment,
            compile,
            created_namespaces: missing,
        })
    }

    /// Makes `version` (an id or a unique prefix of one) take all of a
    /// worker's traffic, ending any gradual rollout. By default: the stable
    /// version if a rollout is under way, else the version deployed before
    /// the current one.
    pub async fn rollback(
        &self,
        worker: &str,
        version: Option<&str>,
        author: &str,
    ) -> Result<(Deployment, Version), NodeError> {
        let _changing = self.changing.lock().await;
        let current = self
            .registry
            .get(worker)
            .ok_or_else(|| not_deployed(worker))?;
        let versions = self.stores.deploys.versions(worker).await?;
        let target = match version {
            Some(wanted) => resolve(&versions, wanted)?,
            // During a rollout, rolling back ends it: the stable version
            // takes all traffic again.
            None if current.deployment.canary.is_some() => {
                resolve(&versions, &current.deployment.stable)?
            }
            None => {
                let position = versions
                    .iter()
                    .position(|v| v.id == current.deployment.stable)
                    .ok_or_else(|| {
                        NodeError::NotFound("the current version is not recorded".into())
                    })?;
                versions.get(position + 1).cloned().ok_or_else(|| {
                    invalid(
                        format!(
                            "version {} is the oldest of `{worker}`; there is nothing before it",
                            short_id(&current.deployment.stable)
                        ),
                        "name a version to roll to: `verge versions` lists them",
                    )
                })?
            }
        };
        let deployment = Deployment {
            worker: worker.to_string(),
            stable: target.id.clone(),
            canary: None,
            updated_at: now_ms(),
            author: author.to_string(),
        };
        let live = self
            .activate(&deployment, Some(&current), HashMap::new())
            .await?;
        self.stores.deploys.set_deployment(&deployment).await?;
        self.registry.insert(worker, live);
        Ok((deployment, target))
    }

    /// Stops serving a worker and forgets its versions and secrets.
    pub async fn delete_worker(&self, worker: &str) -> Result<(), NodeError> {
        let _changing = self.changing.lock().await;
        if !self.stores.deploys.delete_worker(worker).await? {
            return Err(not_deployed(worker));
        }
        self.registry.remove(worker);
        Ok(())
    }

    /// Forgets a worker's versions that take no traffic, and their
    /// components (`verge dev` does so after each rebuild).
    pub async fn prune_versions(&self, worker: &str) -> Result<usize, NodeError> {
        let _changing = self.changing.lock().await;
        let Some(live) = self.registry.get(worker) else {
            return Ok(0);
        };
        let keep: Vec<String> = live
            .deployment
            .shares()
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect();
        Ok(self.stores.deploys.prune_versions(worker, &keep).await?)
    }

    /// A worker's versions, newest first.
    pub async fn versions(&self, worker: &str) -> Result<Vec<Version>, NodeError> {
        let versions = self.stores.deploys.versions(worker).await?;
        if versions.is_empty() {
            return Err(not_deployed(worker));
        }
        Ok(versions)
    }

    /// Sets a secret and restarts the worker's versions with it.
    pub async fn put_secret(&self, worker: &str, name: &str, value: &str) -> Result<(), NodeError> {
        check_secret_name(name)?;
        verge_manifest::check_worker_name(worker).map_err(|why| {
            invalid(
                format!("invalid worker name {worker:?}: {why}"),
                "use lowercase letters, digits and `-`",
            )
        })?;
        let _changing = self.changing.lock().await;
        self.stores.secrets.put_secret(worker, name, value).await?;
        self.reload_env(worker).await
    }

    /// Deletes a secret and restarts the worker's versions without it.
    pub async fn delete_secret(&self, worker: &str, name: &str) -> Result<(), NodeError> {
        let _changing = self.changing.lock().await;
        if !self.stores.secrets.delete_secret(worker, name).await? {
            return Err(NodeError::NotFound(format!(
                "worker `{worker}` has no secret named `{name}`"
            )));
        }
        self.reload_env(worker).await
    }

    /// Rebuilds a served worker's instances' environment after a secret
    /// changed. The compiled code comes from the cache, so this is quick.
    async fn reload_env(&self, worker: &str) -> Result<(), NodeError> {
        if let Some(current) = self.registry.get(worker) {
            let live = self
                .activate(&current.deployment, None, HashMap::new())
                .await?;
            self.registry.insert(worker, live);
        }
        Ok(())
    }

    async fn find_version(&self, worker: &str, id: &str) -> Result<Version, NodeError> {
        let versions = self.stores.deploys.versions(worker).await?;
        resolve(&versions, id)
    }

    /// Loads every version `deployment` sends traffic to. `current` is the
    /// worker's entry now, whose loaded versions are reused (the caller
    /// passes it only when their environment cannot have changed);
    /// `fresh` holds versions just loaded, with their manifests.
    async fn activate(
        &self,
        deployment: &Deployment,
        current: Option<&Live>,
        mut fresh: HashMap<String, (Arc<Worker>, Manifest)>,
    ) -> Result<Live, NodeError> {
        let mut reusable = HashMap::new();
        if let Some(live) = current {
            reusable.insert(live.deployment.stable.clone(), live.stable.clone());
            if let (Some(canary), Some((worker, _))) = (&live.deployment.canary, &live.canary) {
                reusable.insert(canary.version.clone(), worker.clone());
            }
        }
        let mut get = async |id: &str| -> Result<(Arc<Worker>, Manifest), NodeError> {
            if let Some(loaded) = fresh.remove(id) {
                return Ok(loaded);
            }
            let version = self.find_version(&deployment.worker, id).await?;
            let manifest = parse_manifest(&version.manifest)?;
            if let Some(worker) = reusable.remove(id) {
                return Ok((worker, manifest));
            }
            let bytes = self
                .stores
                .deploys
                .blob(&version.component)
                .await?
                .ok_or_else(|| {
                    NodeError::NotFound(format!(
                        "the component of version {} is missing from the store",
                        short_id(id)
                    ))
                })?;
            let (worker, _) = self
                .load_version(&version, &manifest, bytes.to_vec())
                .await?;
            Ok((worker, manifest))
        };
        let (stable, manifest) = get(&deployment.stable).await?;
        let canary = match &deployment.canary {
            Some(c) => Some((get(&c.version).await?.0, c.percent)),
            None => None,
        };
        // Routes follow the stable version's manifest; a canary that changes
        // routes takes them over when it is promoted.
        Ok(Live::new(
            deployment.clone(),
            manifest.routes,
            manifest.crons,
            stable,
            canary,
        ))
    }

    /// Compiles (or takes from the cache) and links one version, with the
    /// worker's secrets and KV bindings.
    async fn load_version(
        &self,
        version: &Version,
        manifest: &Manifest,
        component: Vec<u8>,
    ) -> Result<(Arc<Worker>, CompileSource), NodeError> {
        self.load_version_with(version, manifest, component, &[])
            .await
    }

    /// [`Node::load_version`], with the namespaces in `to_create` bound
    /// though they do not exist yet (a deploy creates them once the
    /// version loads).
    async fn load_version_with(
        &self,
        version: &Version,
        manifest: &Manifest,
        component: Vec<u8>,
        to_create: &[String],
    ) -> Result<(Arc<Worker>, CompileSource), NodeError> {
        let kv = self.kv_bindings(manifest, to_create).await?;
        let secrets = self.stores.secrets.secrets(&version.worker).await?;
        let spec = worker_spec(manifest, component, &secrets, kv, self.config.error_detail);
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(spec))
            .await
            .map_err(|e| invalid(format!("loading the component failed: {e}"), "retry"))?;
        match loaded {
            Ok((worker, source)) => {
                self.metrics.record_load(source);
                Ok((Arc::new(worker), source))
            }
            Err(e) => Err(load_error(e)),
        }
    }

    /// The namespaces a manifest binds that do not exist, in order, once
    /// each.
    async fn missing_namespaces(&self, manifest: &Manifest) -> Result<Vec<String>, NodeError> {
        if manifest.kv_namespaces.is_empty() {
            return Ok(Vec::new());
        }
        let existing = self.stores.kv.namespaces().await?;
        let mut missing: Vec<String> = Vec::new();
        for kv in &manifest.kv_namespaces {
            if !existing.contains(&kv.namespace) && !missing.contains(&kv.namespace) {
                missing.push(kv.namespace.clone());
            }
        }
        Ok(missing)
    }

    /// The namespaces a manifest binds, which must exist unless they are
    /// in `to_create`.
    async fn kv_bindings(
        &self,
        manifest: &Manifest,
        to_create: &[String],
    ) -> Result<KvBindings, NodeError> {
        if manifest.kv_namespaces.is_empty() {
            return Ok(KvBindings::default());
        }
        let existing = self.stores.kv.namespaces().await?;
        let mut bindings = HashMap::new();
        for kv in &manifest.kv_namespaces {
            if !existing.contains(&kv.namespace) && !to_create.contains(&kv.namespace) {
                return Err(invalid(
                    format!(
                        "KV namespace `{}` (binding {}) does not exist on this node",
                        kv.namespace, kv.binding
                    ),
                    format!(
                        "create it (`verge kv namespace create {} --remote`) or deploy the \
                         worker again, which creates the namespaces it binds",
                        kv.namespace
                    ),
                ));
            }
            bindings.insert(
                kv.binding.clone(),
                Namespace::new(
                    self.stores.kv.clone(),
                    &kv.namespace,
                    self.stores.clock.clone(),
                ),
            );
        }
        Ok(Arc::new(bindings))
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

/// The version `wanted` names: a full id or a unique prefix of at least 4.
fn resolve(versions: &[Version], wanted: &str) -> Result<Version, NodeError> {
    let wanted = wanted.to_ascii_lowercase();
    if wanted.len() < 4 {
        return Err(invalid(
            format!("version `{wanted}` is too short to name one"),
            "give at least 4 characters of the id `verge versions` shows",
        ));
    }
    let mut matches = versions.iter().filter(|v| v.id.starts_with(&wanted));
    match (matches.next(), matches.next()) {
        (Some(v), None) => Ok(v.clone()),
        (None, _) => Err(NodeError::NotFound(format!("no version `{wanted}`"))),
        (Some(_), Some(_)) => Err(invalid(
            format!("`{wanted}` names more than one version"),
            "give more characters of the id",
        )),
    }
}

/// How to name a secret, for the errors that refuse a name.
pub const SECRET_NAME_HELP: &str =
    "use letters, digits and `_`, not starting with a digit, e.g. API_TOKEN";

/// Whether `name` can name a secret (it becomes an environment variable):
/// 1 to 128 letters, digits and `_`, not starting with a digit.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

fn check_secret_name(name: &str) -> Result<(), NodeError> {
    if is_secret_name(name) {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid secret name {name:?}"),
            SECRET_NAME_HELP,
        ))
    }
}

fn load_error(e: LoadError) -> NodeError {
    let help = match &e {
        LoadError::Compile(_) => "upload the .wasm that `verge build` produced",
        LoadError::UnknownImport { .. } | LoadError::Link(_) => {
            "build the worker for wasm32-wasip2 against the wasi:http/proxy world"
        }
        LoadError::TooLarge { .. } => "strip the component or trim its dependencies",
        LoadError::Limits(_) => {
            "lower the limit in verge.toml [limits], or ask the operator to raise the ceiling"
        }
    };
    invalid(e.to_string(), help)
}
