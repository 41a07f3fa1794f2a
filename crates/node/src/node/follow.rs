//! Following the store's change log: what other nodes sharing the store
//! changed (deploys, rollbacks, secrets, KV writes) reaches this one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use verge_deploy::{Change, ChangeCursor, Settled, Subject, short_id};

use super::{Node, NodeError};

/// How often a node reads the change log when the store pushes nothing.
pub(super) const CHANGE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Changes read from the log at once.
const CHANGE_BATCH: u32 = 5000;

/// How long change log entries are kept. A node away for longer restarts
/// (and reads everything) or finds the gap and reloads everything.
pub(super) const CHANGE_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

/// How often a node removes entries older than [`CHANGE_RETENTION`].
const CHANGE_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Node {
    /// Replays the store's change log after `position`, on every push from
    /// the store and at least every [`CHANGE_POLL`], so deploys, rollbacks,
    /// secret changes and KV writes made through other nodes reach this
    /// one; stops with the node.
    pub(super) fn follow_changes(self: &Arc<Self>, position: u64) {
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
        let deployment = self.stores.deploys.deployment(worker).await?;
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
}
