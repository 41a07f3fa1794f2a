//! Verge's embedded SQLite store, for a single node and `verge dev`: Verge
//! KV in one file, the control plane's records in another.
//!
//! One writer thread owns the only writable connection. Writes from every
//! request queue to it; it applies whatever has queued in one transaction
//! (each request's writes inside a savepoint of their own, so they stay
//! atomic and independent) and commits with `synchronous=FULL` before any of
//! them is acknowledged: a write that returned is on disk. Reads run on the
//! caller's thread from a pool of read-only connections; WAL mode keeps them
//! from blocking the writer or each other. Values above [`INLINE_VALUE_MAX`]
//! live in a table of their own so that listing keys never reads them.
//! Expired entries are invisible to every read at once and removed by the
//! writer's sweeper later.
//!
//! [`SqliteStore`] implements [`verge_kv::KvStore`]. [`SqliteControl`]
//! keeps the control plane's records (versions, deployments, components,
//! secrets) in a file of its own and implements [`verge_deploy::DeployStore`]
//! and [`verge_deploy::SecretStore`].

mod control;
mod private;
mod reader;
mod schema;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use async_trait::async_trait;
use verge_kv::{Clock, Entry, KvError, KvStore, ListPage, WriteOp, WriteOutcome};

pub use crate::control::SqliteControl;
pub use crate::private::create_private_dir;
use crate::reader::Readers;
use crate::writer::{Job, Writer};

/// Values up to this many bytes are stored in the entry row; larger ones apart.
pub const INLINE_VALUE_MAX: usize = 4096;

/// Verge KV in a SQLite file.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    readers: Readers,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`. `clock` drives the
    /// sweeper; reads and writes take their time from the caller.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<SqliteStore, KvError> {
        crate::private::create_private_file(path)
            .map_err(|e| KvError::Unavailable(format!("cannot create {}: {e}", path.display())))?;
        let jobs = Writer::start(path, clock)?;
        let readers = Readers::new(path);
        Ok(SqliteStore { jobs, readers })
    }

    /// Removes expired entries now (the writer also does so every 30 s);
    /// returns how many. Reads never return expired entries either way.
    pub async fn sweep_expired(&self) -> Result<usize, KvError> {
        self.submit(|reply| Job::Sweep { reply }).await?
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Job,
    ) -> Result<T, KvError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(make(reply))
            .map_err(|_| KvError::Unavailable("the KV writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| KvError::Unavailable("the KV writer stopped before answering".into()))
    }
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn create_namespace(&self, name: &str) -> Result<bool, KvError> {
        verge_kv::check_namespace_name(name)?;
        let name = name.to_string();
        self.submit(|reply| Job::CreateNamespace { name, reply })
            .await?
    }

    async fn delete_namespace(&self, name: &str) -> Result<bool, KvError> {
        let name = name.to_string();
        self.submit(|reply| Job::DeleteNamespace { name, reply })
            .await?
    }

    async fn namespaces(&self) -> Result<Vec<String>, KvError> {
        self.readers.with(reader::namespaces)
    }

    async fn get(
        &self,
        namespace: &str,
        keys: &[Vec<u8>],
        now: u64,
    ) -> Result<Vec<Option<Entry>>, KvError> {
        self.readers
            .with(|conn| reader::get(conn, namespace, keys, now))
    }

    async fn write(
        &self,
        namespace: &str,
        ops: Vec<WriteOp>,
        now: u64,
    ) -> Result<Vec<Result<WriteOutcome, KvError>>, KvError> {
        let namespace = namespace.to_string();
        self.submit(|reply| Job::Write {
            namespace,
            ops,
            now,
            reply,
        })
        .await?
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        now: u64,
    ) -> Result<ListPage, KvError> {
        self.readers
            .with(|conn| reader::list(conn, namespace, prefix, after, limit, now))
    }
}

/// A SQLite error as the guest sees it.
pub(crate) fn unavailable(e: rusqlite::Error) -> KvError {
    KvError::Unavailable(e.to_string())
}
