//! The writer thread: the only connection that writes, batching whatever has
//! queued into one durable commit.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;
use verge_kv::{Clock, Condition, KvError, WriteOp, WriteOutcome};

use crate::reader::{get_one, namespace_id};
use crate::{INLINE_VALUE_MAX, schema, unavailable};

type Reply<T> = oneshot::Sender<Result<T, KvError>>;

/// A request to the writer thread.
pub(crate) enum Job {
    Write {
        namespace: String,
        ops: Vec<WriteOp>,
        now: u64,
        reply: Reply<Vec<Result<WriteOutcome, KvError>>>,
    },
    CreateNamespace {
        name: String,
        reply: Reply<bool>,
    },
    DeleteNamespace {
        name: String,
        reply: Reply<bool>,
    },
    /// Remove expired entries now; answers how many.
    Sweep {
        reply: Reply<usize>,
    },
}

/// Jobs committed together at most.
const MAX_BATCH: usize = 512;
/// How often expired entries are removed, and how many per transaction.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const SWEEP_CHUNK: i64 = 1000;

pub(crate) struct Writer {
    conn: Connection,
    clock: Arc<dyn Clock>,
    /// The last generation handed out (persisted in `meta` at each commit).
    generation: u64,
}

/// A finished job waiting for its batch to commit.
type Pending = Box<dyn FnOnce(Option<&KvError>) + Send>;

impl Writer {
    /// Opens the database, prepares it, and starts the thread.
    pub(crate) fn start(path: &Path, clock: Arc<dyn Clock>) -> Result<mpsc::Sender<Job>, KvError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        schema::prepare_writer(&conn).map_err(unavailable)?;
        let generation: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'generation'",
                [],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        let mut writer = Writer {
            conn,
            clock,
            generation: generation as u64,
        };
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("verge-kv-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| KvError::Unavailable(format!("cannot start the KV writer thread: {e}")))?;
        Ok(jobs)
    }

    fn run(&mut self, queue: mpsc::Receiver<Job>) {
        let mut last_sweep = Instant::now();
        loop {
            let first = match queue.recv_timeout(SWEEP_EVERY) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.sweep();
                    last_sweep = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let (sweeps, batch): (Vec<Job>, Vec<Job>) = batch
                .into_iter()
                .partition(|j| matches!(j, Job::Sweep { .. }));
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            for job in sweeps {
                if let Job::Sweep { reply } = job {
                    let _ = reply.send(self.sweep());
                    last_sweep = Instant::now();
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                let _ = self.sweep();
                last_sweep = Instant::now();
            }
        }
    }

    /// Applies every job in one transaction, each in its own savepoint, then
    /// commits and only then answers.
    fn commit_batch(&mut self, batch: Vec<Job>) {
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let error = unavailable(e);
            for job in batch {
                job_failed(job, &error);
            }
            return;
        }
        // Another process (the CLI beside `verge dev`) may have written since
        // the last batch; the write lock is held now, so this is current.
        match self.conn.query_row(
            "SELECT value FROM meta WHERE name = 'generation'",
            [],
            |r| r.get::<_, i64>(0),
        ) {
            Ok(g) => self.generation = self.generation.max(g as u64),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                let error = unavailable(e);
                for job in batch {
                    job_failed(job, &error);
                }
                return;
            }
        }
        let generation_before = self.generation;
        let pending: Vec<Pending> = batch.into_iter().map(|job| self.apply(job)).collect();
        let committed = self
            .conn
            .execute(
                "UPDATE meta SET value = ?1 WHERE name = 'generation'",
                [self.generation as i64],
            )
            .and_then(|_| self.conn.execute_batch("COMMIT"));
        let failure = match committed {
            Ok(()) => None,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.generation = generation_before;
                tracing::error!("KV commit failed: {e}");
                Some(unavailable(e))
            }
        };
        for answer in pending {
            answer(failure.as_ref());
        }
    }

    fn apply(&mut self, job: Job) -> Pending {
        match job {
            Job::Write {
                namespace,
                ops,
                now,
                reply,
            } => {
                let result = self.in_savepoint(|w| w.write(&namespace, ops, now));
                answer_later(reply, result)
            }
            Job::CreateNamespace { name, reply } => {
                let result = self.in_savepoint(|w| {
                    w.conn
                        .execute(
                            "INSERT OR IGNORE INTO namespaces (name) VALUES (?1)",
                            [&name],
                        )
                        .map(|n| n > 0)
                        .map_err(unavailable)
                });
                answer_later(reply, result)
            }
            Job::DeleteNamespace { name, reply } => {
                let result = self.in_savepoint(|w| w.delete_namespace(&name));
                answer_later(reply, result)
            }
            Job::Sweep { reply } => answer_later(
                reply,
                Err(KvError::Unavailable("sweep inside a batch".into())),
            ),
        }
    }

    fn in_savepoint<T>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        self.conn
            .execute_batch("SAVEPOINT job")
            .map_err(unavailable)?;
        let generation = self.generation;
        match work(self) {
            Ok(value) => {
                self.conn
                    .execute_batch("RELEASE job")
                    .map_err(unavailable)?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK TO job; RELEASE job");
                self.generation = generation;
                Err(e)
            }
        }
    }

    fn delete_namespace(&mut self, name: &str) -> Result<bool, KvError> {
        let id = match namespace_id(&self.conn, name) {
            Ok(id) => id,
            Err(KvError::NamespaceNotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.conn
            .execute("DELETE FROM blobs WHERE ns = ?1", [id])
            .map_err(unavailable)?;
        self.conn
            .execute("DELETE FROM entries WHERE ns = ?1", [id])
            .map_err(unavailable)?;
        self.conn
            .execute("DELETE FROM namespaces WHERE id = ?1", [id])
            .map_err(unavailable)?;
        Ok(true)
    }

    /// A job's writes. Per-write failures (a condition, a non-integer) are
    /// outcomes; a database error fails the whole job.
    fn write(
        &mut self,
        namespace: &str,
        ops: Vec<WriteOp>,
        now: u64,
    ) -> Result<Vec<Result<WriteOutcome, KvError>>, KvError> {
        let ns = namespace_id(&self.conn, namespace)?;
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(self.write_one(ns, op, now)?);
        }
        Ok(outcomes)
    }

    fn write_one(
        &mut self,
        ns: i64,
        op: WriteOp,
        now: u64,
    ) -> Result<Result<WriteOutcome, KvError>, KvError> {
        match op {
            WriteOp::Put {
                key,
                value,
                metadata,
                expiration,
                condition,
            } => {
                let live = self.live_generation(ns, &key, now)?;
                let allowed = match condition {
                    Condition::Always => true,
                    Condition::IfAbsent => live.is_none(),
                    Condition::IfGeneration(g) => live == Some(g),
                };
                if !allowed {
                    return Ok(Err(KvError::ConditionFailed));
                }
                let generation = self.store(ns, &key, &value, metadata.as_deref(), expiration)?;
                Ok(Ok(WriteOutcome::Put { generation }))
            }
            WriteOp::Delete { key } => {
                let existed = self.live_generation(ns, &key, now)?.is_some();
                self.conn
                    .execute(
                        "DELETE FROM blobs WHERE ns = ?1 AND key = ?2",
                        params![ns, key],
                    )
                    .map_err(unavailable)?;
                self.conn
                    .execute(
                        "DELETE FROM entries WHERE ns = ?1 AND key = ?2",
                        params![ns, key],
                    )
                    .map_err(unavailable)?;
                Ok(Ok(WriteOutcome::Deleted(existed)))
            }
            WriteOp::Increment { key, delta } => {
                let current = get_one(&self.conn, ns, &key, now)?;
                let (old, metadata, expiration) = match &current {
                    None => (0, None, None),
                    Some(entry) => {
                        let parsed = std::str::from_utf8(&entry.value)
                            .ok()
                            .and_then(|t| t.trim().parse::<i64>().ok());
                        match parsed {
                            Some(n) => (n, entry.metadata.clone(), entry.expiration),
                            None => {
                                let key = String::from_utf8_lossy(&key).into_owned();
                                return Ok(Err(KvError::NotAnInteger { key }));
                            }
                        }
                    }
                };
                let Some(value) = old.checked_add(delta) else {
                    return Ok(Err(KvError::Overflow));
                };
                let generation = self.store(
                    ns,
                    &key,
                    value.to_string().as_bytes(),
                    metadata.as_deref(),
                    expiration,
                )?;
                Ok(Ok(WriteOutcome::Incremented { value, generation }))
            }
        }
    }

    fn live_generation(&self, ns: i64, key: &[u8], now: u64) -> Result<Option<u64>, KvError> {
        self.conn
            .prepare_cached(
                "SELECT generation FROM entries WHERE ns = ?1 AND key = ?2 AND (expiration IS NULL OR expiration > ?3)",
            )
            .and_then(|mut s| s.query_row(params![ns, key, now as i64], |r| r.get::<_, i64>(0)).optional())
            .map(|g| g.map(|g| g as u64))
            .map_err(unavailable)
    }

    /// Writes an entry with a new generation.
    fn store(
        &mut self,
        ns: i64,
        key: &[u8],
        value: &[u8],
        metadata: Option<&str>,
        expiration: Option<u64>,
    ) -> Result<u64, KvError> {
        let generation = self.generation + 1;
        let inline = (value.len() <= INLINE_VALUE_MAX).then_some(value);
        self.conn
            .prepare_cached(
                "INSERT INTO entries (ns, key, generation, expiration, metadata, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (ns, key) DO UPDATE SET generation = ?3, expiration = ?4, metadata = ?5, value = ?6",
            )
            .and_then(|mut s| s.execute(params![ns, key, generation as i64, expiration.map(|e| e as i64), metadata, inline]))
            .map_err(unavailable)?;
        if inline.is_some() {
            self.conn
                .execute(
                    "DELETE FROM blobs WHERE ns = ?1 AND key = ?2",
                    params![ns, key],
                )
                .map_err(unavailable)?;
        } else {
            self.conn
                .execute(
                    "INSERT INTO blobs (ns, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (ns, key) DO UPDATE SET value = ?3",
                    params![ns, key, value],
                )
                .map_err(unavailable)?;
        }
        self.generation = generation;
        Ok(generation)
    }

    /// Removes expired entries, a chunk per transaction, so writes queued
    /// meanwhile wait at most one chunk.
    fn sweep(&mut self) -> Result<usize, KvError> {
        let now = self.clock.now() as i64;
        let mut total = 0;
        loop {
            let removed = (|| -> rusqlite::Result<usize> {
                self.conn.execute_batch("BEGIN IMMEDIATE")?;
                let expired = "SELECT ns, key FROM entries WHERE expiration <= ?1 LIMIT ?2";
                self.conn.execute(
                    &format!("DELETE FROM blobs WHERE (ns, key) IN ({expired})"),
                    params![now, SWEEP_CHUNK],
                )?;
                let n = self.conn.execute(
                    &format!("DELETE FROM entries WHERE (ns, key) IN ({expired})"),
                    params![now, SWEEP_CHUNK],
                )?;
                self.conn.execute_batch("COMMIT")?;
                Ok(n)
            })();
            match removed {
                Ok(n) => {
                    total += n;
                    if (n as i64) < SWEEP_CHUNK {
                        return Ok(total);
                    }
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    tracing::warn!("sweeping expired KV entries failed: {e}");
                    return Err(unavailable(e));
                }
            }
        }
    }
}

fn answer_later<T: Send + 'static>(reply: Reply<T>, result: Result<T, KvError>) -> Pending {
    Box::new(move |failure| {
        let _ = reply.send(match failure {
            Some(e) => Err(e.clone()),
            None => result,
        });
    })
}

fn job_failed(job: Job, error: &KvError) {
    match job {
        Job::Write { reply, .. } => drop(reply.send(Err(error.clone()))),
        Job::CreateNamespace { reply, .. } | Job::DeleteNamespace { reply, .. } => {
            drop(reply.send(Err(error.clone())))
        }
        Job::Sweep { reply } => drop(reply.send(Err(error.clone()))),
    }
}
