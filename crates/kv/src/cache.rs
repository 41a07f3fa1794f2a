//! A read cache in front of a store that several nodes share.
//!
//! Reads are kept in memory, absent keys included, up to a bound on bytes,
//! least recently used out first. The node's own writes drop the keys they
//! touch before they are acknowledged, so its next read sees them; writes
//! made through other nodes arrive as invalidations from the store's change
//! log ([`CachedStore::invalidate`]). An entry also ages out after
//! [`CacheConfig::ttl`], which bounds staleness should an invalidation ever
//! be missed. While the store does not answer, aged entries are served
//! rather than failing the read: nobody can write then either.
//!
//! A read that misses fetches from the store and fills the cache only if no
//! invalidation happened meanwhile, so an invalidation racing a fill can
//! never leave the older value behind. Lists are not cached.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hashlink::LruCache;

use crate::error::KvError;
use crate::store::{KvStore, WriteOp, WriteOutcome};
use crate::types::{Entry, ListPage};

/// How big and how fresh the cache is.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Bytes of keys, values and metadata held at most.
    pub capacity: usize,
    /// How long an entry is served without asking the store again.
    pub ttl: Duration,
}

/// Bookkeeping per cached entry beyond its bytes.
const OVERHEAD: usize = 96;

/// A cached read: an entry, or `None` for a key that was absent.
struct Cached {
    entry: Option<Entry>,
    filled: Instant,
    cost: usize,
}

struct State {
    lru: LruCache<Vec<u8>, Cached>,
    bytes: usize,
    /// Increases with every invalidation; a fill that started before one
    /// is dropped.
    epoch: u64,
}

impl State {
    /// Drops `keys` and moves the epoch on, so that fills which started
    /// before are not kept.
    fn forget(&mut self, keys: impl IntoIterator<Item = Vec<u8>>) {
        self.epoch += 1;
        for key in keys {
            if let Some(gone) = self.lru.remove(&key) {
                self.bytes -= gone.cost;
            }
        }
    }
}

/// Counters for the node's metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Aged entries served because the store did not answer.
    pub stale_served: AtomicU64,
}

/// A [`KvStore`] that keeps reads of `inner` in memory.
pub struct CachedStore {
    inner: Arc<dyn KvStore>,
    config: CacheConfig,
    state: Mutex<State>,
    stats: CacheStats,
}

/// The cache's key for `key` in `namespace` (namespace names are shorter
/// than 256 bytes).
fn cache_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + namespace.len() + key.len());
    k.push(namespace.len() as u8);
    k.extend_from_slice(namespace.as_bytes());
    k.extend_from_slice(key);
    k
}

fn in_namespace(cache_key: &[u8], namespace: &str) -> bool {
    cache_key.first() == Some(&(namespace.len() as u8))
        && cache_key[1..].starts_with(namespace.as_bytes())
}

/// `entry` as a read at `now` sees it: expired entries are absent.
fn live(entry: &Option<Entry>, now: u64) -> Option<Entry> {
    entry
        .as_ref()
        .filter(|e| e.expiration.is_none_or(|at| at > now))
        .cloned()
}

impl CachedStore {
    pub fn new(inner: Arc<dyn KvStore>, config: CacheConfig) -> CachedStore {
        CachedStore {
            inner,
            config,
            state: Mutex::new(State {
                lru: LruCache::new_unbounded(),
                bytes: 0,
                epoch: 0,
            }),
            stats: CacheStats::default(),
        }
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops what is cached for `key` in `namespace`: it changed.
    pub fn invalidate(&self, namespace: &str, key: &[u8]) {
        self.lock().forget([cache_key(namespace, key)]);
    }

    /// Drops everything cached for `namespace`: it was deleted.
    pub fn invalidate_namespace(&self, namespace: &str) {
        let mut state = self.lock();
        let keys: Vec<Vec<u8>> = state
            .lru
            .iter()
            .filter(|(k, _)| in_namespace(k, namespace))
            .map(|(k, _)| k.clone())
            .collect();
        state.forget(keys);
    }

    /// Drops everything: changes may have been missed.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.lru.clear();
        state.bytes = 0;
    }

    fn fill(&self, state: &mut State, key: Vec<u8>, entry: Option<Entry>) {
        let cost = OVERHEAD
            + key.len()
            + entry.as_ref().map_or(0, |e| {
                e.value.len() + e.metadata.as_ref().map_or(0, String::len)
            });
        // One entry may take a small share of the cache, so that a large
        // value does not push out everything else.
        if cost > self.config.capacity / 64 {
            return;
        }
        let cached = Cached {
            entry,
            filled: Instant::now(),
            cost,
        };
        state.bytes += cost;
        if let Some(old) = state.lru.insert(key, cached) {
            state.bytes -= old.cost;
        }
        while state.bytes > self.config.capacity {
            match state.lru.remove_lru() {
                Some((_, gone)) => state.bytes -= gone.cost,
                None => break,
            }
        }
    }
}

#[async_trait]
impl KvStore for CachedStore {
    async fn create_namespace(&self, name: &str) -> Result<bool, KvError> {
        self.inner.create_namespace(name).await
    }

    async fn delete_namespace(&self, name: &str) -> Result<bool, KvError> {
        let result = self.inner.delete_namespace(name).await;
        self.invalidate_namespace(name);
        result
    }

    async fn namespaces(&self) -> Result<Vec<String>, KvError> {
        self.inner.namespaces().await
    }

    async fn get(
        &self,
        namespace: &str,
        keys: &[Vec<u8>],
        now: u64,
    ) -> Result<Vec<Option<Entry>>, KvError> {
        let mut found = vec![None; keys.len()];
        // Keys to fetch, with what was cached for them if it aged.
        let mut missing: Vec<(usize, Option<Option<Entry>>)> = Vec::new();
        let epoch = {
            let mut state = self.lock();
            for (i, key) in keys.iter().enumerate() {
                match state.lru.get(&cache_key(namespace, key)) {
                    Some(c) if c.filled.elapsed() < self.config.ttl => {
                        found[i] = live(&c.entry, now);
                    }
                    Some(c) => missing.push((i, Some(c.entry.clone()))),
                    None => missing.push((i, None)),
                }
            }
            state.epoch
        };
        let hits = (keys.len() - missing.len()) as u64;
        self.stats.hits.fetch_add(hits, Ordering::Relaxed);
        if missing.is_empty() {
            return Ok(found);
        }
        self.stats
            .misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        let wanted: Vec<Vec<u8>> = missing.iter().map(|(i, _)| keys[*i].clone()).collect();
        match self.inner.get(namespace, &wanted, now).await {
            Ok(entries) => {
                let mut state = self.lock();
                let fresh = state.epoch == epoch;
                for ((i, _), entry) in missing.into_iter().zip(entries) {
                    found[i] = live(&entry, now);
                    if fresh {
                        self.fill(&mut state, cache_key(namespace, &keys[i]), entry);
                    }
                }
                Ok(found)
            }
            // The store is away: what was read before is the best there is,
            // if every key was read before.
            Err(KvError::Unavailable(why)) => {
                if missing.iter().any(|(_, aged)| aged.is_none()) {
                    return Err(KvError::Unavailable(why));
                }
                self.stats
                    .stale_served
                    .fetch_add(missing.len() as u64, Ordering::Relaxed);
                for (i, aged) in missing {
                    found[i] = live(&aged.flatten(), now);
                }
                Ok(found)
            }
            Err(e) => Err(e),
        }
    }

    async fn write(
        &self,
        namespace: &str,
        ops: Vec<WriteOp>,
        now: u64,
    ) -> Result<Vec<Result<WriteOutcome, KvError>>, KvError> {
        let keys: Vec<Vec<u8>> = ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { key, .. }
                | WriteOp::Delete { key }
                | WriteOp::Increment { key, .. } => key.clone(),
            })
            .collect();
        let result = self.inner.write(namespace, ops, now).await;
        // Whatever the outcome (a failure may still have committed), the
        // next read of these keys asks the store.
        self.lock()
            .forget(keys.iter().map(|key| cache_key(namespace, key)));
        result
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        now: u64,
    ) -> Result<ListPage, KvError> {
        self.inner.list(namespace, prefix, after, limit, now).await
    }
}
