//! A namespace of a store, with every limit checked before the store runs.

use std::sync::Arc;

use bytes::Bytes;

use crate::clock::Clock;
use crate::error::KvError;
use crate::limits::{
    MAX_BULK_GET, MAX_BULK_WRITE, MAX_EXPIRATION, MAX_LIST_LIMIT, MAX_VALUE_BYTES, MIN_TTL_SECONDS,
    check_key, check_metadata,
};
use crate::store::{KvStore, WriteOp, WriteOutcome};
use crate::types::{
    Condition, Entry, Expiration, ListOptions, ListPage, PutOptions, decode_cursor,
};

/// The operations of Workers KV on one namespace.
#[derive(Clone)]
pub struct Namespace {
    store: Arc<dyn KvStore>,
    name: Arc<str>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Namespace {
    pub fn new(store: Arc<dyn KvStore>, name: &str, clock: Arc<dyn Clock>) -> Namespace {
        Namespace {
            store,
            name: name.into(),
            clock,
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live entry of `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Entry>, KvError> {
        check_key(key)?;
        let mut found = self
            .store
            .get(&self.name, &[key.to_vec()], self.clock.now())
            .await?;
        Ok(found.pop().flatten())
    }

    /// The live entries of up to 100 keys, in order.
    pub async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, KvError> {
        if keys.len() > MAX_BULK_GET {
            return Err(KvError::TooManyKeys {
                count: keys.len(),
                limit: MAX_BULK_GET,
            });
        }
        keys.iter().try_for_each(|k| check_key(k))?;
        self.store.get(&self.name, keys, self.clock.now()).await
    }

    /// Stores `value` under `key`; returns the entry's new generation.
    pub async fn put(&self, key: &[u8], value: Bytes, options: PutOptions) -> Result<u64, KvError> {
        let op = self.put_op(key, value, options)?;
        match self.write_one(op).await? {
            WriteOutcome::Put { generation } => Ok(generation),
            other => Err(KvError::Unavailable(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }

    /// Deletes `key`; whether a live entry was there.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, KvError> {
        check_key(key)?;
        match self
            .write_one(WriteOp::Delete { key: key.to_vec() })
            .await?
        {
            WriteOutcome::Deleted(existed) => Ok(existed),
            other => Err(KvError::Unavailable(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }

    /// Adds `delta` to the integer stored under `key` (0 when absent),
    /// atomically; returns the new value.
    pub async fn increment(&self, key: &[u8], delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        match self
            .write_one(WriteOp::Increment {
                key: key.to_vec(),
                delta,
            })
            .await?
        {
            WriteOutcome::Incremented { value, .. } => Ok(value),
            other => Err(KvError::Unavailable(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }

    /// A page of live keys in byte order.
    pub async fn list(&self, options: &ListOptions) -> Result<ListPage, KvError> {
        let limit = options.limit.unwrap_or(MAX_LIST_LIMIT);
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(KvError::BadLimit {
                limit,
                max: MAX_LIST_LIMIT,
            });
        }
        if options.prefix.len() > crate::MAX_KEY_BYTES {
            return Err(KvError::KeyTooLong {
                len: options.prefix.len(),
                limit: crate::MAX_KEY_BYTES,
            });
        }
        let after = options.cursor.as_deref().map(decode_cursor).transpose()?;
        self.store
            .list(
                &self.name,
                &options.prefix,
                after.as_deref(),
                limit,
                self.clock.now(),
            )
            .await
    }

    /// Up to 10,000 puts and deletes, applied together (the admin side's
    /// bulk operations). Every write is validated before any is applied.
    pub async fn bulk(
        &self,
        writes: Vec<BulkWrite>,
    ) -> Result<Vec<Result<WriteOutcome, KvError>>, KvError> {
        if writes.len() > MAX_BULK_WRITE {
            return Err(KvError::TooManyKeys {
                count: writes.len(),
                limit: MAX_BULK_WRITE,
            });
        }
        let ops = writes
            .into_iter()
            .map(|w| match w {
                BulkWrite::Put {
                    key,
                    value,
                    options,
                } => self.put_op(&key, value, options),
                BulkWrite::Delete { key } => check_key(&key).map(|()| WriteOp::Delete { key }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.store.write(&self.name, ops, self.clock.now()).await
    }

    fn put_op(&self, key: &[u8], value: Bytes, options: PutOptions) -> Result<WriteOp, KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::ValueTooLarge {
                len: value.len(),
                limit: MAX_VALUE_BYTES,
            });
        }
        if let Some(metadata) = &options.metadata {
            check_metadata(metadata)?;
        }
        let now = self.clock.now();
        let expiration = match options.expiration {
            Expiration::Never => None,
            Expiration::Ttl(ttl) if ttl < MIN_TTL_SECONDS => {
                return Err(KvError::BadExpiration(format!(
                    "TTL must be at least {MIN_TTL_SECONDS} s"
                )));
            }
            Expiration::Ttl(ttl) if ttl > MAX_EXPIRATION.saturating_sub(now) => {
                return Err(KvError::BadExpiration(format!(
                    "a TTL of {ttl} s reaches past {MAX_EXPIRATION} (9999-12-31T23:59:59Z), the \
                     latest expiration Verge KV keeps; at most {} s from now",
                    MAX_EXPIRATION.saturating_sub(now)
                )));
            }
            Expiration::Ttl(ttl) => Some(now + ttl),
            Expiration::At(at) if at <= now => {
                return Err(KvError::BadExpiration(format!(
                    "{at} is not in the future (now is {now})"
                )));
            }
            Expiration::At(at) if at > MAX_EXPIRATION => {
                return Err(KvError::BadExpiration(format!(
                    "{at} is past {MAX_EXPIRATION} (9999-12-31T23:59:59Z), the latest \
                     expiration Verge KV keeps; expirations are Unix seconds"
                )));
            }
            Expiration::At(at) => Some(at),
        };
        let condition: Condition = options.condition;
        Ok(WriteOp::Put {
            key: key.to_vec(),
            value,
            metadata: options.metadata,
            expiration,
            condition,
        })
    }

    async fn write_one(&self, op: WriteOp) -> Result<WriteOutcome, KvError> {
        let mut outcomes = self
            .store
            .write(&self.name, vec![op], self.clock.now())
            .await?;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(KvError::Unavailable("the store returned no outcome".into())))
    }
}

/// One write of a bulk operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BulkWrite {
    Put {
        key: Vec<u8>,
        value: Bytes,
        options: PutOptions,
    },
    Delete {
        key: Vec<u8>,
    },
}
