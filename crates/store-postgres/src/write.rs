//! Writes: one transaction per batch, an advisory lock per key.

use bytes::Bytes;
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;
use verge_kv::{Condition, KvError, WriteOp, WriteOutcome};

use crate::control::CHANNEL;
use crate::{PgStore, unavailable};

enum Failure {
    Pg(tokio_postgres::Error),
    Kv(KvError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure::Pg(e)
    }
}

/// How many times a batch is retried when PostgreSQL aborts it to break a
/// deadlock (two batches locking the same keys in different orders).
const ATTEMPTS: usize = 3;

pub(crate) async fn apply(
    store: &PgStore,
    namespace: &str,
    ops: Vec<WriteOp>,
    now: u64,
) -> Result<Vec<Result<WriteOutcome, KvError>>, KvError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = store.client().await?;
        let result = async {
            let tx = client.transaction().await?;
            let outcomes = apply_in(&tx, namespace, &ops, now).await?;
            tx.commit().await?;
            Ok(outcomes)
        }
        .await;
        match result {
            Ok(outcomes) => return Ok(outcomes),
            Err(Failure::Kv(e)) => return Err(e),
            Err(Failure::Pg(e))
                if attempt < ATTEMPTS
                    && matches!(
                        e.code(),
                        Some(
                            &SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE
                        )
                    ) =>
            {
                continue;
            }
            Err(Failure::Pg(e)) => return Err(unavailable(e)),
        }
    }
}

/// A stable 64-bit id for the lock of `key` in namespace `ns` (FNV-1a):
/// the same on every node.
fn lock_id(ns: i64, key: &[u8]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in ns.to_le_bytes().iter().chain(key) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

struct Current {
    value: Vec<u8>,
    metadata: Option<String>,
    expiration: Option<i64>,
    generation: i64,
}

async fn apply_in(
    tx: &Transaction<'_>,
    namespace: &str,
    ops: &[WriteOp],
    now: u64,
) -> Result<Vec<Result<WriteOutcome, KvError>>, Failure> {
    // FOR SHARE keeps the namespace from being deleted under the batch.
    let ns: i64 = tx
        .query_opt(
            "SELECT id FROM kv_namespaces WHERE name = $1 FOR SHARE",
            &[&namespace],
        )
        .await?
        .ok_or_else(|| Failure::Kv(KvError::NamespaceNotFound(namespace.to_string())))?
        .get(0);
    let now = now as i64;
    let mut outcomes = Vec::with_capacity(ops.len());
    // Keys this batch changed, for the change log.
    let mut changed: Vec<&[u8]> = Vec::new();
    for op in ops {
        let key = match op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } | WriteOp::Increment { key, .. } => {
                key
            }
        };
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_id(ns, key)])
            .await?;
        let current = tx
            .query_opt(
                "SELECT value, metadata, expiration, generation FROM kv_entries
                 WHERE ns = $1 AND key = $2",
                &[&ns, key],
            )
            .await?
            .map(|row| Current {
                value: row.get(0),
                metadata: row.get(1),
                expiration: row.get(2),
                generation: row.get(3),
            });
        let exists = current.is_some();
        let live = current.filter(|c| c.expiration.is_none_or(|e| e > now));
        let outcome = match op {
            WriteOp::Put {
                value,
                metadata,
                expiration,
                condition,
                ..
            } => {
                let allowed = match condition {
                    Condition::Always => true,
                    Condition::IfAbsent => live.is_none(),
                    Condition::IfGeneration(g) => {
                        live.as_ref().map(|c| c.generation as u64) == Some(*g)
                    }
                };
                if allowed {
                    let expiration = expiration.map(|e| e as i64);
                    let generation =
                        upsert(tx, ns, key, value, metadata.as_deref(), expiration).await?;
                    Ok(WriteOutcome::Put { generation })
                } else {
                    Err(KvError::ConditionFailed)
                }
            }
            WriteOp::Delete { .. } => {
                if exists {
                    tx.execute(
                        "DELETE FROM kv_entries WHERE ns = $1 AND key = $2",
                        &[&ns, key],
                    )
                    .await?;
                }
                Ok(WriteOutcome::Deleted(live.is_some()))
            }
            WriteOp::Increment { delta, .. } => {
                let parsed = match &live {
                    None => Ok((0, None, None)),
                    Some(c) => std::str::from_utf8(&c.value)
                        .ok()
                        .and_then(|t| t.trim().parse::<i64>().ok())
                        .map(|n| (n, c.metadata.clone(), c.expiration))
                        .ok_or_else(|| KvError::NotAnInteger {
                            key: String::from_utf8_lossy(key).into_owned(),
                        }),
                };
                match parsed.and_then(|(old, metadata, expiration)| {
                    old.checked_add(*delta)
                        .map(|value| (value, metadata, expiration))
                        .ok_or(KvError::Overflow)
                }) {
                    Ok((value, metadata, expiration)) => {
                        let text = Bytes::from(value.to_string());
                        let generation =
                            upsert(tx, ns, key, &text, metadata.as_deref(), expiration).await?;
                        Ok(WriteOutcome::Incremented { value, generation })
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let wrote = match (&outcome, op) {
            (Ok(WriteOutcome::Deleted(_)), _) => exists,
            (Ok(_), _) => true,
            (Err(_), _) => false,
        };
        if wrote {
            changed.push(key);
        }
        outcomes.push(outcome);
    }
    if !changed.is_empty() {
        // One row per key, one NOTIFY for the batch, in one round trip.
        tx.execute(
            "WITH logged AS (
                 INSERT INTO changes (kind, namespace, key)
                 SELECT 'kv', $1, k FROM unnest($2::bytea[]) AS k RETURNING seq
             )
             SELECT pg_notify($3, max(seq)::text) FROM logged",
            &[&namespace, &changed, &CHANNEL],
        )
        .await?;
    }
    Ok(outcomes)
}

/// Writes an entry with the next generation, which it returns.
async fn upsert(
    tx: &Transaction<'_>,
    ns: i64,
    key: &[u8],
    value: &Bytes,
    metadata: Option<&str>,
    expiration: Option<i64>,
) -> Result<u64, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "INSERT INTO kv_entries (ns, key, generation, expiration, metadata, value)
             VALUES ($1, $2, nextval('kv_generation'), $3, $4, $5)
             ON CONFLICT (ns, key) DO UPDATE SET generation = EXCLUDED.generation,
                 expiration = EXCLUDED.expiration, metadata = EXCLUDED.metadata,
                 value = EXCLUDED.value
             RETURNING generation",
            &[&ns, &key, &expiration, &metadata, &&value[..]],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lock_ids_are_stable_and_spread() {
        assert_eq!(super::lock_id(1, b"a"), super::lock_id(1, b"a"));
        assert_ne!(super::lock_id(1, b"a"), super::lock_id(2, b"a"));
        assert_ne!(super::lock_id(1, b"a"), super::lock_id(1, b"b"));
    }
}
