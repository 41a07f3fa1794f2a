//! The control plane's records in a SQLite file of their own: versions,
//! deployments, component blobs and secrets.
//!
//! Deploys are rare and small next to KV traffic, so one connection behind a
//! mutex serves them, on tokio's blocking pool; keeping them out of the KV
//! file keeps them out of the KV writer's queue. The file is created readable
//! by its owner only, since it holds secrets.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use verge_deploy::{
    CRON_RUNS_KEPT_MS, Canary, Change, ChangeFeed, CronRun, CronStore, DeployStore, Deployment,
    RunOutcome, SecretStore, StoreError, Version,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS components (
    hash  TEXT PRIMARY KEY,
    bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    worker     TEXT NOT NULL,
    id         TEXT NOT NULL,
    component  TEXT NOT NULL REFERENCES components (hash),
    manifest   TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    author     TEXT NOT NULL,
    UNIQUE (worker, id)
);
CREATE TABLE IF NOT EXISTS deployments (
    worker         TEXT PRIMARY KEY,
    stable         TEXT NOT NULL,
    canary         TEXT,
    canary_percent INTEGER,
    updated_at     INTEGER NOT NULL,
    author         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    worker TEXT NOT NULL,
    name   TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (worker, name)
);
CREATE TABLE IF NOT EXISTS cron_runs (
    worker  TEXT NOT NULL,
    cron    TEXT NOT NULL,
    tick    INTEGER NOT NULL,
    node    TEXT NOT NULL,
    status  INTEGER,
    wall_ms INTEGER,
    error   TEXT,
    PRIMARY KEY (worker, cron, tick)
);
";

/// Removes the components no version uses any more, after versions went.
const DROP_UNUSED_COMPONENTS: &str =
    "DELETE FROM components WHERE hash NOT IN (SELECT component FROM versions)";

/// Versions, deployments, components and secrets in a SQLite file.
#[derive(Clone)]
pub struct SqliteControl {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteControl {
    /// Opens (creating if needed) the control file at `path`.
    pub fn open(path: &Path) -> Result<SqliteControl, StoreError> {
        let unavailable =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("{}: {e}", path.display()));
        crate::private::create_private_file(path).map_err(|e| unavailable(&e))?;
        let conn = Connection::open(path).map_err(|e| unavailable(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|()| conn.pragma_update(None, "foreign_keys", "ON"))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(|e| unavailable(&e))?;
        Ok(SqliteControl {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
        .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Version> {
    Ok(Version {
        id: row.get(0)?,
        worker: row.get(1)?,
        component: row.get(2)?,
        manifest: row.get(3)?,
        size: row.get::<_, i64>(4)? as u64,
        created_at: row.get::<_, i64>(5)? as u64,
        author: row.get(6)?,
    })
}

/// Adds a version unless the worker has it; whether it was added.
fn insert_version(conn: &Connection, v: &Version) -> rusqlite::Result<bool> {
    conn.execute(
        "INSERT OR IGNORE INTO versions
         (worker, id, component, manifest, size, created_at, author)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            v.worker,
            v.id,
            v.component,
            v.manifest,
            v.size as i64,
            v.created_at as i64,
            v.author
        ],
    )
    .map(|n| n == 1)
}

fn upsert_deployment(conn: &Connection, d: &Deployment) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO deployments (worker, stable, canary, canary_percent, updated_at, author)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (worker) DO UPDATE SET stable = ?2, canary = ?3,
             canary_percent = ?4, updated_at = ?5, author = ?6",
        params![
            d.worker,
            d.stable,
            d.canary.as_ref().map(|c| &c.version),
            d.canary.as_ref().map(|c| c.percent),
            d.updated_at as i64,
            d.author
        ],
    )
    .map(drop)
}

fn deployment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Deployment> {
    let canary: Option<String> = row.get(2)?;
    let percent: Option<u8> = row.get(3)?;
    Ok(Deployment {
        worker: row.get(0)?,
        stable: row.get(1)?,
        canary: canary
            .zip(percent)
            .map(|(version, percent)| Canary { version, percent }),
        updated_at: row.get::<_, i64>(4)? as u64,
        author: row.get(5)?,
    })
}

#[async_trait]
impl DeployStore for SqliteControl {
    async fn put_blob(&self, hash: &str, bytes: Bytes) -> Result<(), StoreError> {
        let hash = hash.to_string();
        self.call(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO components (hash, bytes) VALUES (?1, ?2)",
                params![hash, &bytes[..]],
            )
            .map(drop)
        })
        .await
    }

    async fn blob(&self, hash: &str) -> Result<Option<Bytes>, StoreError> {
        let hash = hash.to_string();
        self.call(move |conn| {
            conn.query_row(
                "SELECT bytes FROM components WHERE hash = ?1",
                [hash],
                |row| row.get::<_, Vec<u8>>(0),
            )
            .optional()
        })
        .await
        .map(|bytes| bytes.map(Bytes::from))
    }

    async fn add_version(&self, version: &Version) -> Result<bool, StoreError> {
        let v = version.clone();
        self.call(move |conn| insert_version(conn, &v)).await
    }

    async fn deploy(&self, version: &Version, d: &Deployment) -> Result<bool, StoreError> {
        let (v, d) = (version.clone(), d.clone());
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let added = insert_version(&tx, &v)?;
            upsert_deployment(&tx, &d)?;
            tx.commit()?;
            Ok(added)
        })
        .await
    }

    async fn versions(&self, worker: &str) -> Result<Vec<Version>, StoreError> {
        let worker = worker.to_string();
        self.call(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, worker, component, manifest, size, created_at, author
                 FROM versions WHERE worker = ?1 ORDER BY seq DESC",
            )?;
            statement.query_map([worker], version_from_row)?.collect()
        })
        .await
    }

    async fn set_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        let d = d.clone();
        self.call(move |conn| upsert_deployment(conn, &d)).await
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.call(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT worker, stable, canary, canary_percent, updated_at, author
                 FROM deployments ORDER BY worker",
            )?;
            statement.query_map([], deployment_from_row)?.collect()
        })
        .await
    }

    async fn deployment(&self, worker: &str) -> Result<Option<Deployment>, StoreError> {
        let worker = worker.to_string();
        self.call(move |conn| {
            conn.prepare_cached(
                "SELECT worker, stable, canary, canary_percent, updated_at, author
                 FROM deployments WHERE worker = ?1",
            )?
            .query_row([worker], deployment_from_row)
            .optional()
        })
        .await
    }

    async fn prune_versions(&self, worker: &str, keep: &[String]) -> Result<usize, StoreError> {
        let worker = worker.to_string();
        let keep = keep.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let ids: Vec<String> = {
                let mut statement = tx.prepare("SELECT id FROM versions WHERE worker = ?1")?;
                statement
                    .query_map([&worker], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let mut removed = 0;
            for id in ids.iter().filter(|id| !keep.contains(id)) {
                removed += tx.execute(
                    "DELETE FROM versions WHERE worker = ?1 AND id = ?2",
                    params![worker, id],
                )?;
            }
            tx.execute(DROP_UNUSED_COMPONENTS, [])?;
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    async fn delete_worker(&self, worker: &str) -> Result<bool, StoreError> {
        let worker = worker.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let existed = tx.execute("DELETE FROM deployments WHERE worker = ?1", [&worker])? == 1;
            tx.execute("DELETE FROM versions WHERE worker = ?1", [&worker])?;
            tx.execute("DELETE FROM secrets WHERE worker = ?1", [&worker])?;
            tx.execute("DELETE FROM cron_runs WHERE worker = ?1", [&worker])?;
            tx.execute(DROP_UNUSED_COMPONENTS, [])?;
            tx.commit()?;
            Ok(existed)
        })
        .await
    }
}

#[async_trait]
impl SecretStore for SqliteControl {
    async fn put_secret(&self, worker: &str, name: &str, value: &str) -> Result<(), StoreError> {
        let (worker, name, value) = (worker.to_string(), name.to_string(), value.to_string());
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO secrets (worker, name, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (worker, name) DO UPDATE SET value = ?3",
                params![worker, name, value],
            )
            .map(drop)
        })
        .await
    }

    async fn delete_secret(&self, worker: &str, name: &str) -> Result<bool, StoreError> {
        let (worker, name) = (worker.to_string(), name.to_string());
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM secrets WHERE worker = ?1 AND name = ?2",
                params![worker, name],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn secret_names(&self, worker: &str) -> Result<Vec<String>, StoreError> {
        let worker = worker.to_string();
        self.call(move |conn| {
            let mut statement =
                conn.prepare_cached("SELECT name FROM secrets WHERE worker = ?1 ORDER BY name")?;
            statement.query_map([worker], |row| row.get(0))?.collect()
        })
        .await
    }

    async fn secrets(&self, worker: &str) -> Result<Vec<(String, String)>, StoreError> {
        let worker = worker.to_string();
        self.call(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT name, value FROM secrets WHERE worker = ?1 ORDER BY name",
            )?;
            statement
                .query_map([worker], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .await
    }
}

#[async_trait]
impl CronStore for SqliteControl {
    async fn claim_tick(
        &self,
        worker: &str,
        cron: &str,
        tick: u64,
        node: &str,
    ) -> Result<bool, StoreError> {
        let (worker, cron, node) = (worker.to_string(), cron.to_string(), node.to_string());
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let claimed = tx.execute(
                "INSERT INTO cron_runs (worker, cron, tick, node) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![worker, cron, tick as i64, node],
            )? == 1;
            tx.execute(
                "DELETE FROM cron_runs WHERE worker = ?1 AND cron = ?2 AND tick < ?3",
                params![worker, cron, tick.saturating_sub(CRON_RUNS_KEPT_MS) as i64],
            )?;
            tx.commit()?;
            Ok(claimed)
        })
        .await
    }

    async fn finish_tick(
        &self,
        worker: &str,
        cron: &str,
        tick: u64,
        outcome: &RunOutcome,
    ) -> Result<(), StoreError> {
        let (worker, cron, outcome) = (worker.to_string(), cron.to_string(), outcome.clone());
        self.call(move |conn| {
            conn.execute(
                "UPDATE cron_runs SET status = ?4, wall_ms = ?5, error = ?6
                 WHERE worker = ?1 AND cron = ?2 AND tick = ?3",
                params![
                    worker,
                    cron,
                    tick as i64,
                    outcome.status,
                    outcome.wall_ms as i64,
                    outcome.error
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn cron_runs(&self, worker: &str, limit: u32) -> Result<Vec<CronRun>, StoreError> {
        let worker = worker.to_string();
        self.call(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT cron, tick, node, status, wall_ms, error FROM cron_runs
                 WHERE worker = ?1 ORDER BY tick DESC, cron LIMIT ?2",
            )?;
            statement
                .query_map(params![worker, limit], |row| {
                    Ok(CronRun {
                        cron: row.get(0)?,
                        tick: row.get::<_, i64>(1)? as u64,
                        node: row.get(2)?,
                        status: row.get(3)?,
                        wall_ms: row.get::<_, Option<i64>>(4)?.map(|n| n as u64),
                        error: row.get(5)?,
                    })
                })?
                .collect()
        })
        .await
    }
}

/// A SQLite file serves one node, which makes every change itself: there is
/// nothing to replay.
#[async_trait]
impl ChangeFeed for SqliteControl {
    async fn last_change(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn changes_after(&self, _seq: u64, _limit: u32) -> Result<Vec<Change>, StoreError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verge_deploy::conformance;

    #[tokio::test]
    async fn the_control_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteControl::open(&dir.path().join("control.db")).unwrap();
        conformance::deploy_store(&store).await;
        conformance::artifact_store(&store).await;
        conformance::secret_store(&store).await;
    }

    #[tokio::test]
    async fn cron_runs_conform() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteControl::open(&dir.path().join("control.db")).unwrap();
        conformance::cron_store(&store).await;
    }

    #[tokio::test]
    async fn secrets_persist_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.db");
        {
            let store = SqliteControl::open(&path).unwrap();
            store.put_secret("w", "A", "1").await.unwrap();
        }
        let store = SqliteControl::open(&path).unwrap();
        assert_eq!(
            store.secrets("w").await.unwrap(),
            [("A".to_string(), "1".to_string())]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }
}
