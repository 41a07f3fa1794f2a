//! The host side of `verge:kv/store`: a guest's KV calls, against the
//! namespaces bound to its worker, timed for `Server-Timing`.
//!
//! A guest can open only the bindings its manifest declares; the namespace
//! behind a binding is never visible to it, so guessing names gets nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use verge_kv::{KvError, Namespace};
use wasmtime::component::Resource;

use crate::state::InstanceState;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        // The one copy of the WIT, which the SDK owns and publishes.
        path: "../sdk/wit",
        world: "verge:kv/kv-guest",
        imports: { default: async | trappable },
        with: { "verge:kv/store.bucket": super::Bucket },
    });
}

use bindings::verge::kv::store::{self as wit, Error};

/// An open namespace, as a guest holds it.
#[allow(unreachable_pub)] // named by the bindings bindgen! generates
pub struct Bucket {
    namespace: Namespace,
}

/// KV operations and their time, for one request.
#[derive(Debug, Default)]
pub struct KvStats {
    ops: AtomicU32,
    nanos: AtomicU64,
}

impl KvStats {
    pub fn ops(&self) -> u32 {
        self.ops.load(Ordering::Relaxed)
    }

    pub fn time(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    fn record(&self, started: Instant) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// The namespaces a worker is bound to, by binding name.
pub type KvBindings = Arc<HashMap<String, Namespace>>;

/// What an instance's store holds for KV.
pub(crate) struct KvContext {
    pub(crate) bindings: KvBindings,
    pub(crate) stats: Arc<KvStats>,
}

fn to_wit(e: KvError) -> Error {
    let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    match e {
        KvError::KeyEmpty => Error::KeyEmpty,
        KvError::KeyTooLong { len, .. } => Error::KeyTooLong(u32_of(len)),
        KvError::KeyInvalid => Error::KeyInvalid,
        KvError::ValueTooLarge { len, .. } => Error::ValueTooLarge(len as u64),
        KvError::MetadataTooLarge { len, .. } => Error::MetadataTooLarge(u32_of(len)),
        KvError::MetadataNotJson(m) => Error::MetadataNotJson(m),
        KvError::BadExpiration(m) => Error::BadExpiration(m),
        KvError::BadLimit { limit, .. } => Error::BadLimit(limit),
        KvError::BadCursor => Error::BadCursor,
        KvError::TooManyKeys { count, .. } => Error::TooManyKeys(u32_of(count)),
        KvError::ConditionFailed => Error::ConditionFailed,
        KvError::NotAnInteger { .. } => Error::NotAnInteger,
        KvError::Overflow => Error::Overflow,
        // A namespace deleted under a running worker looks, to the guest,
        // like a binding that is gone.
        KvError::NamespaceNotFound(ns) => Error::NamespaceNotBound(ns),
        KvError::NamespaceInvalid(ns) => Error::NamespaceNotBound(ns),
        // The cause (a database's error text, its address) is the
        // operator's: it goes to the node's log, and the guest learns only
        // that the store did not answer.
        KvError::Unavailable(m) => {
            tracing::warn!(target: "verge::kv", "a KV call failed: {m}");
            Error::Unavailable(
                "the KV store is unavailable; try again shortly (the node's log has the cause)"
                    .into(),
            )
        }
    }
}

fn entry_to_wit(e: verge_kv::Entry) -> wit::Entry {
    wit::Entry {
        value: e.value.to_vec(),
        metadata: e.metadata,
        expiration: e.expiration,
        generation: e.generation,
    }
}

type KvResult<T> = wasmtime::Result<Result<T, Error>>;

impl InstanceState {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Namespace> {
        Ok(self.table.get(bucket)?.namespace.clone())
    }
}

/// Runs one KV operation, timing it and turning its error into a value.
async fn kv_op<T>(
    stats: Arc<KvStats>,
    op: impl Future<Output = Result<T, KvError>>,
) -> KvResult<T> {
    let started = Instant::now();
    let result = op.await;
    stats.record(started);
    Ok(result.map_err(to_wit))
}

impl wit::Host for InstanceState {}

impl wit::HostBucket for InstanceState {
    async fn open(&mut self, binding: String) -> KvResult<Resource<Bucket>> {
        let Some(namespace) = self.kv.bindings.get(&binding).cloned() else {
            return Ok(Err(Error::NamespaceNotBound(binding)));
        };
        Ok(Ok(self.table.push(Bucket { namespace })?))
    }

    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: Vec<u8>,
    ) -> KvResult<Option<wit::Entry>> {
        let ns = self.bucket(&bucket)?;
        Ok(kv_op(self.kv.stats.clone(), ns.get(&key))
            .await?
            .map(|e| e.map(entry_to_wit)))
    }

    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<Vec<u8>>,
    ) -> KvResult<Vec<Option<wit::Entry>>> {
        let ns = self.bucket(&bucket)?;
        Ok(kv_op(self.kv.stats.clone(), ns.get_many(&keys))
            .await?
            .map(|es| es.into_iter().map(|e| e.map(entry_to_wit)).collect()))
    }

    async fn put(
        &mut self,
        bucket: Resource<Bucket>,
        key: Vec<u8>,
        value: Vec<u8>,
        options: wit::PutOptions,
    ) -> KvResult<u64> {
        let ns = self.bucket(&bucket)?;
        let options = verge_kv::PutOptions {
            expiration: match options.expiration {
                wit::Expiration::Never => verge_kv::Expiration::Never,
                wit::Expiration::At(at) => verge_kv::Expiration::At(at),
                wit::Expiration::Ttl(ttl) => verge_kv::Expiration::Ttl(ttl),
            },
            metadata: options.metadata,
            condition: match options.condition {
                wit::Condition::Always => verge_kv::Condition::Always,
                wit::Condition::IfAbsent => verge_kv::Condition::IfAbsent,
                wit::Condition::IfGeneration(g) => verge_kv::Condition::IfGeneration(g),
            },
        };
        kv_op(
            self.kv.stats.clone(),
            ns.put(&key, Bytes::from(value), options),
        )
        .await
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: Vec<u8>) -> KvResult<bool> {
        let ns = self.bucket(&bucket)?;
        kv_op(self.kv.stats.clone(), ns.delete(&key)).await
    }

    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: Vec<u8>,
        delta: i64,
    ) -> KvResult<i64> {
        let ns = self.bucket(&bucket)?;
        kv_op(self.kv.stats.clone(), ns.increment(&key, delta)).await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        options: wit::ListOptions,
    ) -> KvResult<wit::ListPage> {
        let ns = self.bucket(&bucket)?;
        let options = verge_kv::ListOptions {
            prefix: options.prefix,
            limit: options.limit,
            cursor: options.cursor,
        };
        Ok(kv_op(self.kv.stats.clone(), ns.list(&options))
            .await?
            .map(|page| wit::ListPage {
                keys: page
                    .keys
                    .into_iter()
                    .map(|k| wit::ListKey {
                        name: k.name,
                        expiration: k.expiration,
                        metadata: k.metadata,
                    })
                    .collect(),
                cursor: page.cursor,
                list_complete: page.list_complete,
            }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
