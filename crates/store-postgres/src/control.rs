//! The control plane's records in PostgreSQL: versions, deployments,
//! component blobs, secrets, cron runs and the change log, beside the KV
//! tables in the same schema.

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::Pool;
use verge_deploy::{
    CRON_RUNS_KEPT_MS, Canary, Change, ChangeFeed, CronRun, CronStore, DeployStore, Deployment,
    RunOutcome, SecretStore, StoreError, Subject, TAIL_PAYLOAD_MAX, TailReceiver, Version,
};

/// Versions, deployments, components and secrets in PostgreSQL. Made by
/// [`PgStore::control`](crate::PgStore::control); shares its pool.
#[derive(Clone)]
pub struct PgControl {
    pub(crate) pool: Pool,
    /// For the dedicated LISTEN connections.
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: crate::tls::Rustls,
    /// The schema Verge's tables are in, which also names this cluster's
    /// tail channel.
    pub(crate) schema: String,
}

/// Removes the components no version uses any more, after versions went.
const DROP_UNUSED_COMPONENTS: &str =
    "DELETE FROM components WHERE hash NOT IN (SELECT component FROM versions)";

/// The channel NOTIFY carries change sequence numbers on.
pub(crate) const CHANNEL: &str = "verge_changes";

/// What a control-plane change touched.
#[derive(Clone, Copy)]
enum Kind {
    Deployment,
    Secrets,
    TailWatch,
}

/// Records a change of `worker` in the transaction `tx` and notifies
/// listeners, which PostgreSQL delivers only if the transaction commits.
async fn record(
    tx: &tokio_postgres::Transaction<'_>,
    worker: &str,
    kind: Kind,
) -> Result<(), StoreError> {
    let kind = match kind {
        Kind::Deployment => "deployment",
        Kind::Secrets => "secret",
        Kind::TailWatch => "tail",
    };
    let row = tx
        .query_one(
            "INSERT INTO changes (worker, kind) VALUES ($1, $2) RETURNING seq",
            &[&worker, &kind],
        )
        .await
        .map_err(unavailable)?;
    let seq: i64 = row.get(0);
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// A change log row as a [`Change`]; `None` for a kind this node does not
/// know (written by a newer node), which it skips.
fn change_from_row(row: &tokio_postgres::Row) -> Option<Change> {
    let seq = row.get::<_, i64>(0) as u64;
    let worker: Option<String> = row.get(1);
    let kind: String = row.get(2);
    let namespace: Option<String> = row.get(3);
    let key: Option<Vec<u8>> = row.get(4);
    let subject = match (kind.as_str(), worker, namespace, key) {
        ("deployment", Some(worker), _, _) => Subject::Deployment(worker),
        ("secret", Some(worker), _, _) => Subject::Secrets(worker),
        ("kv", _, Some(namespace), Some(key)) => Subject::KvKey { namespace, key },
        ("kv-namespace", _, Some(namespace), _) => Subject::KvNamespace(namespace),
        ("tail", Some(worker), _, _) => Subject::TailWatch(worker),
        _ => return None,
    };
    Some(Change { seq, subject })
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL: {e}"))
}

impl PgControl {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }
}

fn version_from_row(row: &tokio_postgres::Row) -> Version {
    Version {
        id: row.get(0),
        worker: row.get(1),
        component: row.get(2),
        manifest: row.get(3),
        size: row.get::<_, i64>(4) as u64,
        created_at: row.get::<_, i64>(5) as u64,
        author: row.get(6),
    }
}

#[async_trait]
impl DeployStore for PgControl {
    async fn put_blob(&self, hash: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO components (hash, bytes) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                &[&hash, &&bytes[..]],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn blob(&self, hash: &str) -> Result<Option<Bytes>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT bytes FROM components WHERE hash = $1", &[&hash])
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
    }

    async fn put_artifact(
        &self,
        component: &str,
        engine: &str,
        sealed: Bytes,
    ) -> Result<(), StoreError> {
        // The component may have been deleted meanwhile: then there is
        // nothing to attach the code to, and nothing is stored.
        self.client()
            .await?
            .execute(
                "INSERT INTO artifacts (component, engine, sealed)
                 SELECT hash, $2, $3 FROM components WHERE hash = $1
                 ON CONFLICT (component, engine) DO UPDATE SET sealed = EXCLUDED.sealed",
                &[&component, &engine, &&sealed[..]],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn artifact(&self, component: &str, engine: &str) -> Result<Option<Bytes>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT sealed FROM artifacts WHERE component = $1 AND engine = $2",
                &[&component, &engine],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
    }

    fn shares_artifacts(&self) -> bool {
        true
    }

    async fn add_version(&self, v: &Version) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let added = insert_version(&tx, v).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(added)
    }

    async fn deploy(&self, v: &Version, d: &Deployment) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let added = insert_version(&tx, v).await?;
        upsert_deployment(&tx, d).await?;
        record(&tx, &d.worker, Kind::Deployment).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(added)
    }

    async fn versions(&self, worker: &str) -> Result<Vec<Version>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, worker, component, manifest, size, created_at, author
                 FROM versions WHERE worker = $1 ORDER BY seq DESC",
                &[&worker],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(version_from_row).collect())
    }

    async fn set_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        upsert_deployment(&tx, d).await?;
        record(&tx, &d.worker, Kind::Deployment).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT worker, stable, canary, canary_percent, updated_at, author
                 FROM deployments ORDER BY worker COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(deployment_from_row).collect())
    }

    async fn deployment(&self, worker: &str) -> Result<Option<Deployment>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT worker, stable, canary, canary_percent, updated_at, author
                 FROM deployments WHERE worker = $1",
                &[&worker],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(deployment_from_row))
    }

    async fn prune_versions(&self, worker: &str, keep: &[String]) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let removed = tx
            .execute(
                "DELETE FROM versions WHERE worker = $1 AND NOT (id = ANY($2))",
                &[&worker, &keep],
            )
            .await
            .map_err(unavailable)?;
        tx.execute(DROP_UNUSED_COMPONENTS, &[])
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(removed as usize)
    }

    async fn delete_worker(&self, worker: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let existed = tx
            .execute("DELETE FROM deployments WHERE worker = $1", &[&worker])
            .await
            .map_err(unavailable)?
            == 1;
        for table in ["versions", "secrets", "cron_runs"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE worker = $1"),
                &[&worker],
            )
            .await
            .map_err(unavailable)?;
        }
        tx.execute(DROP_UNUSED_COMPONENTS, &[])
            .await
            .map_err(unavailable)?;
        if existed {
            record(&tx, worker, Kind::Deployment).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(existed)
    }
}

#[async_trait]
impl SecretStore for PgControl {
    async fn put_secret(&self, worker: &str, name: &str, value: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute(
            "INSERT INTO secrets (worker, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (worker, name) DO UPDATE SET value = $3",
            &[&worker, &name, &value],
        )
        .await
        .map_err(unavailable)?;
        record(&tx, worker, Kind::Secrets).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn delete_secret(&self, worker: &str, name: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let rows = tx
            .execute(
                "DELETE FROM secrets WHERE worker = $1 AND name = $2",
                &[&worker, &name],
            )
            .await
            .map_err(unavailable)?;
        if rows == 1 {
            record(&tx, worker, Kind::Secrets).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(rows == 1)
    }

    async fn secret_names(&self, worker: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name FROM secrets WHERE worker = $1 ORDER BY name COLLATE \"C\"",
                &[&worker],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn secrets(&self, worker: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name, value FROM secrets WHERE worker = $1 ORDER BY name COLLATE \"C\"",
                &[&worker],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[async_trait]
impl CronStore for PgControl {
    async fn claim_tick(
        &self,
        worker: &str,
        cron: &str,
        tick: u64,
        node: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        // The primary key decides: one insert per tick succeeds.
        let claimed = client
            .execute(
                "INSERT INTO cron_runs (worker, cron, tick, node) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&worker, &cron, &(tick as i64), &node],
            )
            .await
            .map_err(unavailable)?
            == 1;
        if claimed {
            client
                .execute(
                    "DELETE FROM cron_runs WHERE worker = $1 AND cron = $2 AND tick < $3",
                    &[
                        &worker,
                        &cron,
                        &(tick.saturating_sub(CRON_RUNS_KEPT_MS) as i64),
                    ],
                )
                .await
                .map_err(unavailable)?;
        }
        Ok(claimed)
    }

    async fn finish_tick(
        &self,
        worker: &str,
        cron: &str,
        tick: u64,
        outcome: &RunOutcome,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE cron_runs SET status = $4, wall_ms = $5, error = $6
                 WHERE worker = $1 AND cron = $2 AND tick = $3",
                &[
                    &worker,
                    &cron,
                    &(tick as i64),
                    &i32::from(outcome.status),
                    &(outcome.wall_ms as i64),
                    &outcome.error,
                ],
            )
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn cron_runs(&self, worker: &str, limit: u32) -> Result<Vec<CronRun>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT cron, tick, node, status, wall_ms, error FROM cron_runs
                 WHERE worker = $1 ORDER BY tick DESC, cron LIMIT $2",
                &[&worker, &i64::from(limit)],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| CronRun {
                cron: row.get(0),
                tick: row.get::<_, i64>(1) as u64,
                node: row.get(2),
                status: row.get::<_, Option<i32>>(3).map(|s| s as u16),
                wall_ms: row.get::<_, Option<i64>>(4).map(|n| n as u64),
                error: row.get(5),
            })
            .collect())
    }
}

#[async_trait]
impl ChangeFeed for PgControl {
    async fn last_change(&self) -> Result<u64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM changes", &[])
            .await
            .map_err(unavailable)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn changes_after(&self, seq: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, worker, kind, namespace, key FROM changes
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(seq as i64), &i64::from(limit)],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().filter_map(change_from_row).collect())
    }

    async fn prune_changes(&self, keep: std::time::Duration) -> Result<u64, StoreError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM changes WHERE at < now() - make_interval(secs => $1)",
                &[&keep.as_secs_f64()],
            )
            .await
            .map_err(unavailable)
    }

    /// Keeps a connection LISTENing on the change channel, reconnecting
    /// after a second whenever it drops; every notification calls `wake`
    /// (and once each time it starts listening, for what it missed).
    fn listen(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let config = self.config.clone();
        // Every notification, and each (re)start, means "read the log".
        let tls = self.tls.clone();
        tokio::spawn(listen_loop(config, tls, CHANNEL.to_string(), move |_| {
            wake()
        }));
    }

    async fn watch_tail(&self, worker: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        record(&tx, worker, Kind::TailWatch).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn relay_tail(&self, batch: &str) -> Result<(), StoreError> {
        if batch.len() > TAIL_PAYLOAD_MAX {
            return Err(StoreError::Unavailable(format!(
                "a tail batch of {} bytes is above the limit of {TAIL_PAYLOAD_MAX}",
                batch.len()
            )));
        }
        self.client()
            .await?
            .execute("SELECT pg_notify($1, $2)", &[&self.tail_channel(), &batch])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// A connection of its own LISTENs on this schema's tail channel while
    /// the receiver lives; nodes nobody tails on hold no such connection.
    fn receive_tails(
        &self,
        deliver: Box<dyn Fn(String) + Send + Sync>,
    ) -> Option<Box<dyn TailReceiver>> {
        let task = tokio::spawn(listen_loop(
            self.config.clone(),
            self.tls.clone(),
            self.tail_channel(),
            move |payload| {
                if let Some(payload) = payload {
                    deliver(payload);
                }
            },
        ));
        Some(Box::new(Listening(task)))
    }
}

impl PgControl {
    /// The channel tail batches travel on: one per schema, so clusters
    /// sharing a database do not see each other's requests.
    fn tail_channel(&self) -> String {
        format!("verge_tail_{}", self.schema)
    }
}

/// A LISTEN connection's task, ended when this is dropped.
struct Listening(tokio::task::JoinHandle<()>);

impl TailReceiver for Listening {}

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// LISTENs on `channel` for as long as the task runs, reconnecting a
/// second after the connection drops. `on` gets each notification's
/// payload, and `None` whenever listening (re)starts, since notifications
/// sent meanwhile were lost.
async fn listen_loop(
    config: tokio_postgres::Config,
    tls: crate::tls::Rustls,
    channel: String,
    on: impl Fn(Option<String>) + Send + Sync + 'static,
) {
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async { client.batch_execute(&format!("LISTEN {channel}")).await };
                tokio::pin!(messages);
                // The connection must be polled for LISTEN to finish.
                let mut listening = std::pin::pin!(listening);
                let mut listened = false;
                loop {
                    tokio::select! {
                        done = &mut listening, if !listened => {
                            listened = true;
                            if done.is_err() { break; }
                            on(None);
                        }
                        message = futures_util::StreamExt::next(&mut messages) => match message {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                on(Some(n.payload().to_string()));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        },
                    }
                }
                tracing::warn!("lost the PostgreSQL LISTEN connection ({channel}); reconnecting");
            }
            Err(e) => tracing::debug!("cannot LISTEN on PostgreSQL ({channel}): {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn deployment_from_row(row: &tokio_postgres::Row) -> Deployment {
    let canary: Option<String> = row.get(2);
    let percent: Option<i16> = row.get(3);
    Deployment {
        worker: row.get(0),
        stable: row.get(1),
        canary: canary.zip(percent).map(|(version, percent)| Canary {
            version,
            percent: percent.clamp(0, 100) as u8,
        }),
        updated_at: row.get::<_, i64>(4) as u64,
        author: row.get(5),
    }
}

/// Adds a version unless the worker has it; whether it was added.
async fn insert_version(
    tx: &tokio_postgres::Transaction<'_>,
    v: &Version,
) -> Result<bool, StoreError> {
    let rows = tx
        .execute(
            "INSERT INTO versions (worker, id, component, manifest, size, created_at, author)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (worker, id) DO NOTHING",
            &[
                &v.worker,
                &v.id,
                &v.component,
                &v.manifest,
                &(v.size as i64),
                &(v.created_at as i64),
                &v.author,
            ],
        )
        .await
        .map_err(unavailable)?;
    Ok(rows == 1)
}

async fn upsert_deployment(
    tx: &tokio_postgres::Transaction<'_>,
    d: &Deployment,
) -> Result<(), StoreError> {
    let canary = d.canary.as_ref().map(|c| c.version.as_str());
    let percent = d.canary.as_ref().map(|c| i16::from(c.percent));
    tx.execute(
        "INSERT INTO deployments (worker, stable, canary, canary_percent, updated_at, author)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (worker) DO UPDATE SET stable = $2, canary = $3,
             canary_percent = $4, updated_at = $5, author = $6",
        &[
            &d.worker,
            &d.stable,
            &canary,
            &percent,
            &(d.updated_at as i64),
            &d.author,
        ],
    )
    .await
    .map_err(unavailable)?;
    Ok(())
}
