//! Random sequences of KV operations against the real SQLite store and the
//! in-memory model (verge-kv's conformance harness), with a manual clock so
//! expiration is exercised without sleeping.

use std::sync::Arc;

use proptest::prelude::*;
use verge_kv::conformance::{agree, ops};
use verge_kv::{KvError, KvStore, ListOptions, ManualClock, Namespace};
use verge_store_sqlite::SqliteStore;

/// Runs `ops` on a fresh SQLite store, seen through `wrap`, and the model.
fn agree_on_sqlite(
    ops: Vec<verge_kv::conformance::Op>,
    wrap: impl FnOnce(Arc<dyn KvStore>) -> Arc<dyn KvStore>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let store = SqliteStore::open(&dir.path().join("kv.db"), Arc::new(clock.clone())).unwrap();
        agree(wrap(Arc::new(store)), clock, ops).await
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_the_model(ops in ops()) {
        agree_on_sqlite(ops, |store| store)?;
    }

    /// The read cache cluster nodes use, over a store it does not need,
    /// since nothing but its own writes change it here: what it serves
    /// agrees with the model, evictions and expirations included.
    #[test]
    fn the_cached_store_agrees_with_the_model(ops in ops()) {
        agree_on_sqlite(ops, |store| {
            Arc::new(verge_kv::CachedStore::new(store, verge_kv::CacheConfig {
                capacity: 16 * 1024,
                ttl: std::time::Duration::from_secs(60),
            }))
        })?;
    }
}

#[test]
fn expirations_are_bounded() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_800_000_000);
        let store = SqliteStore::open(&dir.path().join("kv.db"), Arc::new(clock.clone())).unwrap();
        verge_kv::conformance::expirations_are_bounded(Arc::new(store), clock).await;
    });
}

#[test]
fn a_bad_cursor_is_an_error_value() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1));
        let store: Arc<dyn KvStore> =
            Arc::new(SqliteStore::open(&dir.path().join("kv.db"), clock.clone()).unwrap());
        store.create_namespace("ns").await.unwrap();
        let ns = Namespace::new(store, "ns", clock);
        let options = ListOptions {
            cursor: Some("not-hex".into()),
            ..ListOptions::default()
        };
        assert_eq!(ns.list(&options).await, Err(KvError::BadCursor));
    });
}
