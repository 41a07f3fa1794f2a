//! Writes: one transaction per batch, which locks the rows of its keys
//! first (placeholders for absent keys), in key order.

use std::collections::HashMap;

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

#[derive(Clone)]
struct Current {
    value: Vec<u8>,
    metadata: Option<String>,
    expiration: Option<i64>,
    generation: i64,
}

/// The generation of a placeholder row: real ones come from
/// `kv_generation`, which starts at 1.
const PLACEHOLDER: i64 = 0;

/// Locks the rows of `keys` (sorted, distinct) for the transaction and
/// returns what each holds (`None`: absent). A key without a row gets a
/// placeholder (generation 0, expired at once) inserted by this
/// transaction: other writers of that key wait on it like on a row lock,
/// and no reader sees it, since it is either replaced or deleted before the
/// commit. Row locks live in the rows themselves, so a batch of 10,000 keys
/// takes no slot of PostgreSQL's shared lock table per key.
async fn lock_rows<'k>(
    tx: &Transaction<'_>,
    ns: i64,
    keys: &[&'k [u8]],
) -> Result<HashMap<&'k [u8], Option<Current>>, Failure> {
    // A row another writer deletes between the insert and the lock is
    // missing from the lock's result; another round gives it a placeholder.
    for _ in 0..ATTEMPTS {
        tx.execute(
            "INSERT INTO kv_entries (ns, key, generation, expiration, metadata, value)
             SELECT $1, k, $3, 0, NULL, ''::bytea FROM unnest($2::bytea[]) AS k ORDER BY k
             ON CONFLICT (ns, key) DO NOTHING",
            &[&ns, &keys, &PLACEHOLDER],
        )
        .await?;
        let rows = tx
            .query(
                "SELECT key, value, metadata, expiration, generation FROM kv_entries
                 WHERE ns = $1 AND key = ANY($2) ORDER BY key FOR UPDATE",
                &[&ns, &keys],
            )
            .await?;
        if rows.len() < keys.len() {
            continue;
        }
        let mut current = HashMap::with_capacity(keys.len());
        for row in rows {
            let key: Vec<u8> = row.get(0);
            let Ok(at) = keys.binary_search(&key.as_slice()) else {
                continue;
            };
            let key = &keys[at];
            let generation: i64 = row.get(4);
            let entry = (generation != PLACEHOLDER).then(|| Current {
                value: row.get(1),
                metadata: row.get(2),
                expiration: row.get(3),
                generation,
            });
            current.insert(*key, entry);
        }
        return Ok(current);
    }
    Err(Failure::Kv(KvError::Unavailable(
        "the batch's keys kept being deleted under it; try again".into(),
    )))
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
    let op_keys: Vec<&[u8]> = ops
        .iter()
        .map(|op| match op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } | WriteOp::Increment { key, .. } => {
                &key[..]
            }
        })
        .collect();
    let mut keys = op_keys.clone();
    keys.sort_unstable();
    keys.dedup();
    let mut rows = lock_rows(tx, ns, &keys).await?;
    // Keys holding this batch's placeholder until a write fills them.
    let mut placeholders: std::collections::HashSet<&[u8]> = rows
        .iter()
        .filter(|(_, entry)| entry.is_none())
        .map(|(key, _)| *key)
        .collect();
    let mut outcomes = Vec::with_capacity(ops.len());
    // Keys this batch changed, for the change log.
    let mut changed: Vec<&[u8]> = Vec::new();
    for (op, &key) in ops.iter().zip(&op_keys) {
        let current = rows.get(key).cloned().flatten();
        let exists = current.is_some();
        let live = current.filter(|c| c.expiration.is_none_or(|e| e > now));
        let (outcome, after) = match op {
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
                    let after = Current {
                        value: value.to_vec(),
                        metadata: metadata.clone(),
                        expiration,
                        generation: generation as i64,
                    };
                    (Ok(WriteOutcome::Put { generation }), Some(Some(after)))
                } else {
                    (Err(KvError::ConditionFailed), None)
                }
            }
            WriteOp::Delete { .. } => {
                if exists {
                    tx.execute(
                        "DELETE FROM kv_entries WHERE ns = $1 AND key = $2",
                        &[&ns, &key],
                    )
                    .await?;
                }
                (Ok(WriteOutcome::Deleted(live.is_some())), Some(None))
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
                        let after = Current {
                            value: text.to_vec(),
                            metadata,
                            expiration,
                            generation: generation as i64,
                        };
                        (
                            Ok(WriteOutcome::Incremented { value, generation }),
                            Some(Some(after)),
                        )
                    }
                    Err(e) => (Err(e), None),
                }
            }
        };
        let wrote = match &outcome {
            Ok(WriteOutcome::Deleted(_)) => exists,
            Ok(_) => true,
            Err(_) => false,
        };
        if wrote {
            changed.push(key);
        }
        if let Some(after) = after {
            if after.is_some() {
                placeholders.remove(key);
            }
            rows.insert(key, after);
        }
        outcomes.push(outcome);
    }
    // Placeholders of keys no write filled (a refused condition, a delete of
    // an absent key) go before the commit.
    if !placeholders.is_empty() {
        let left: Vec<&[u8]> = placeholders.into_iter().collect();
        tx.execute(
            "DELETE FROM kv_entries WHERE ns = $1 AND key = ANY($2) AND generation = $3",
            &[&ns, &left, &PLACEHOLDER],
        )
        .await?;
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
