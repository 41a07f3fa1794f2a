//! Verge's PostgreSQL store, for nodes that serve together: Verge KV and
//! the control plane's records (with a change log) in one database.
//!
//! Entries live in one table keyed by `(namespace, key)` with keys as
//! `bytea`, which PostgreSQL compares bytewise, so list order is byte order.
//! Large values stay out of listing by PostgreSQL's own TOAST storage: a
//! list query never selects the value column, and values above ~2 KiB are
//! kept out of line, so scanning keys never reads them. Generations come
//! from one sequence, taken only by writes that happen. A batch of writes is
//! one transaction that first locks the rows of its keys, in key order, with
//! a placeholder row for a key that has none (see `write.rs`), so
//! conditional puts and increments are atomic across every node sharing the
//! database, without a slot of the server's lock table per key. Expired entries are invisible to every read
//! and removed by [`PgStore::sweep_expired`].
//!
//! [`PgStore`] implements [`verge_kv::KvStore`]; [`PgControl`], on the same
//! pool, keeps the control plane's records (versions, deployments,
//! components, secrets) and implements [`verge_deploy::DeployStore`] and
//! [`verge_deploy::SecretStore`]. The tables are created (and later
//! migrated) by [`PgStore::connect`], in a PostgreSQL schema of their own so
//! they can share a database.

mod connect;
mod control;
mod schema;
mod tls;
mod write;

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use verge_kv::{Entry, KvError, KvStore, ListKey, ListPage, WriteOp, WriteOutcome, prefix_end};

pub use connect::ConnectError;
pub use control::PgControl;

/// Verge KV in PostgreSQL.
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: tls::Rustls,
    schema: String,
}

/// Connections the pool keeps at most.
const POOL_SIZE: usize = 16;

/// How long connecting, waiting for a pooled connection, or an unanswered
/// write may take before a call fails as unavailable.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub(crate) fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(format!("PostgreSQL: {e}"))
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db` or key=value form),
    /// creating the schema `schema` and its tables if needed. A server
    /// that cannot be reached is [`ConnectError::Unreachable`] (worth a
    /// retry); a missing database, a refused user or a bad name is
    /// [`ConnectError::Refused`], with the fix.
    pub async fn connect(url: &str, schema: &str) -> Result<PgStore, ConnectError> {
        if schema.is_empty()
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ConnectError::refused(
                format!("invalid schema name {schema:?}"),
                "use lowercase letters, digits and `_`, e.g. verge",
            ));
        }
        let tls_request = tls::split(url)?;
        let tls = tls::Rustls::new(&tls_request)?;
        let mut config: tokio_postgres::Config = tls_request.url.parse().map_err(|e| {
            ConnectError::refused(
                format!("the store URL is not a PostgreSQL connection string: {e}"),
                "write it as postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            )
        })?;
        config
            .ssl_mode(tls_request.mode)
            .options(format!("-c search_path={schema}"))
            // When the database goes away, calls fail within seconds instead
            // of waiting on a dead connection: the node answers "store
            // unavailable" and keeps serving what it can.
            .connect_timeout(TIMEOUT)
            .tcp_user_timeout(TIMEOUT)
            .keepalives_idle(TIMEOUT);
        {
            let (client, connection) = config
                .connect(tls.clone())
                .await
                .map_err(|e| ConnectError::classify(&e, &config))?;
            let task = tokio::spawn(connection);
            schema::migrate(&client, schema)
                .await
                .map_err(|e| match e {
                    schema::MigrateError::Postgres(e) => ConnectError::classify(&e, &config),
                    schema::MigrateError::TooNew(message) => {
                        ConnectError::refused(message, "upgrade the node")
                    }
                })?;
            drop(client);
            let _ = task.await;
        }
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .recycle_timeout(Some(TIMEOUT))
            .build()
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        Ok(PgStore {
            pool,
            config,
            tls,
            schema: schema.to_string(),
        })
    }

    /// Whether the pool's connections to the server are encrypted.
    pub async fn encrypted(&self) -> Result<bool, KvError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.get(0))
    }

    /// The control-plane store on the same database and pool.
    pub fn control(&self) -> PgControl {
        PgControl {
            pool: self.pool.clone(),
            config: self.config.clone(),
            tls: self.tls.clone(),
            schema: self.schema.clone(),
        }
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, KvError> {
        self.pool.get().await.map_err(unavailable)
    }

    /// Removes entries that expired by `now`; returns how many.
    pub async fn sweep_expired(&self, now: u64) -> Result<u64, KvError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM kv_entries WHERE expiration IS NOT NULL AND expiration <= $1",
                &[&(now as i64)],
            )
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl KvStore for PgStore {
    async fn create_namespace(&self, name: &str) -> Result<bool, KvError> {
        verge_kv::check_namespace_name(name)?;
        let client = self.client().await?;
        let rows = client
            .execute(
                "INSERT INTO kv_namespaces (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                &[&name],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows == 1)
    }

    async fn delete_namespace(&self, name: &str) -> Result<bool, KvError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let rows = tx
            .execute("DELETE FROM kv_namespaces WHERE name = $1", &[&name])
            .await
            .map_err(unavailable)?;
        if rows == 1 {
            tx.execute(
                "WITH logged AS (
                     INSERT INTO changes (kind, namespace) VALUES ('kv-namespace', $1)
                     RETURNING seq
                 )
                 SELECT pg_notify($2, seq::text) FROM logged",
                &[&name, &control::CHANNEL],
            )
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(rows == 1)
    }

    async fn namespaces(&self) -> Result<Vec<String>, KvError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name FROM kv_namespaces ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn get(
        &self,
        namespace: &str,
        keys: &[Vec<u8>],
        now: u64,
    ) -> Result<Vec<Option<Entry>>, KvError> {
        let client = self.client().await?;
        // One round trip, which also tells a missing namespace from missing
        // keys: the namespace row comes back either way.
        let rows = client
            .query(
                "SELECT n.id, e.key, e.value, e.metadata, e.expiration, e.generation
                 FROM kv_namespaces n
                 LEFT JOIN kv_entries e ON e.ns = n.id AND e.key = ANY($2)
                     AND (e.expiration IS NULL OR e.expiration > $3)
                 WHERE n.name = $1",
                &[&namespace, &keys, &(now as i64)],
            )
            .await
            .map_err(unavailable)?;
        if rows.is_empty() {
            return Err(KvError::NamespaceNotFound(namespace.to_string()));
        }
        let mut found: HashMap<Vec<u8>, Entry> = HashMap::new();
        for row in &rows {
            let Some(key) = row.get::<_, Option<Vec<u8>>>(1) else {
                continue;
            };
            found.insert(
                key,
                Entry {
                    value: Bytes::from(row.get::<_, Vec<u8>>(2)),
                    metadata: row.get(3),
                    expiration: row.get::<_, Option<i64>>(4).map(|e| e as u64),
                    generation: row.get::<_, i64>(5) as u64,
                },
            );
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn write(
        &self,
        namespace: &str,
        ops: Vec<WriteOp>,
        now: u64,
    ) -> Result<Vec<Result<WriteOutcome, KvError>>, KvError> {
        write::apply(self, namespace, ops, now).await
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        now: u64,
    ) -> Result<ListPage, KvError> {
        let client = self.client().await?;
        let end = prefix_end(prefix);
        let rows = client
            .query(
                "SELECT n.id, e.key, e.expiration, e.metadata
                 FROM kv_namespaces n
                 LEFT JOIN LATERAL (
                     SELECT key, expiration, metadata FROM kv_entries
                     WHERE ns = n.id AND key >= $2
                       AND ($3::bytea IS NULL OR key < $3)
                       AND ($4::bytea IS NULL OR key > $4)
                       AND (expiration IS NULL OR expiration > $5)
                     ORDER BY key
                     LIMIT $6
                 ) e ON true
                 WHERE n.name = $1
                 ORDER BY e.key",
                &[
                    &namespace,
                    &prefix,
                    &end,
                    &after,
                    &(now as i64),
                    &(i64::from(limit) + 1),
                ],
            )
            .await
            .map_err(unavailable)?;
        if rows.is_empty() {
            return Err(KvError::NamespaceNotFound(namespace.to_string()));
        }
        let keys: Vec<ListKey> = rows
            .iter()
            .filter_map(|row| {
                let name: Option<Vec<u8>> = row.get(1);
                name.map(|name| ListKey {
                    name,
                    expiration: row.get::<_, Option<i64>>(2).map(|e| e as u64),
                    metadata: row.get(3),
                })
            })
            .collect();
        Ok(ListPage::from_fetched(keys, limit))
    }
}
