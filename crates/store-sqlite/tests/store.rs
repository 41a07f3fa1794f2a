//! The SQLite store's own promises: limits at their boundaries, large values
//! kept apart, atomic increments under concurrency, durability across a
//! reopen, generations never reused, the sweeper, namespaces.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use verge_kv::{
    BulkWrite, Condition, Expiration, KvError, KvStore, ListOptions, MAX_VALUE_BYTES, ManualClock,
    Namespace, PutOptions,
};
use verge_store_sqlite::SqliteStore;

struct Fixture {
    dir: tempfile::TempDir,
    clock: ManualClock,
    store: Arc<SqliteStore>,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000);
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("kv.db"), Arc::new(clock.clone())).unwrap(),
        );
        store.create_namespace("ns").await.unwrap();
        Fixture { dir, clock, store }
    }

    fn ns(&self, name: &str) -> Namespace {
        Namespace::new(self.store.clone(), name, Arc::new(self.clock.clone()))
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("kv.db")).unwrap()
    }
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn limits_hold_at_their_boundaries() {
    let f = Fixture::new().await;
    let ns = f.ns("ns");
    assert!(
        ns.put(&[b'k'; 512], Bytes::from("v"), PutOptions::default())
            .await
            .is_ok()
    );
    assert_eq!(
        ns.put(&[b'k'; 513], Bytes::from("v"), PutOptions::default())
            .await,
        Err(KvError::KeyTooLong {
            len: 513,
            limit: 512
        })
    );
    let metadata = |n: usize| PutOptions {
        metadata: Some(format!("\"{}\"", "m".repeat(n - 2))),
        ..Default::default()
    };
    assert!(ns.put(b"m", Bytes::new(), metadata(1024)).await.is_ok());
    assert_eq!(
        ns.put(b"m", Bytes::new(), metadata(1025)).await,
        Err(KvError::MetadataTooLarge {
            len: 1025,
            limit: 1024
        })
    );
    let list = |limit| ListOptions {
        limit: Some(limit),
        ..Default::default()
    };
    assert!(ns.list(&list(1000)).await.is_ok());
    assert_eq!(
        ns.list(&list(1001)).await,
        Err(KvError::BadLimit {
            limit: 1001,
            max: 1000
        })
    );
    assert_eq!(
        ns.list(&list(0)).await,
        Err(KvError::BadLimit {
            limit: 0,
            max: 1000
        })
    );
    let ttl = |t| PutOptions {
        expiration: Expiration::Ttl(t),
        ..Default::default()
    };
    assert!(ns.put(b"t", Bytes::new(), ttl(1)).await.is_ok());
    assert!(matches!(
        ns.put(b"t", Bytes::new(), ttl(0)).await,
        Err(KvError::BadExpiration(_))
    ));
    let at = PutOptions {
        expiration: Expiration::At(1_700_000_000),
        ..Default::default()
    };
    assert!(matches!(
        ns.put(b"t", Bytes::new(), at).await,
        Err(KvError::BadExpiration(_))
    ));
}

#[tokio::test]
async fn a_25_mib_value_is_stored_apart_and_one_byte_more_is_refused() {
    let f = Fixture::new().await;
    let ns = f.ns("ns");
    let big = Bytes::from(vec![0xabu8; MAX_VALUE_BYTES]);
    ns.put(b"big", big.clone(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(ns.get(b"big").await.unwrap().unwrap().value, big);
    let over = Bytes::from(vec![0u8; MAX_VALUE_BYTES + 1]);
    assert_eq!(
        ns.put(b"over", over, PutOptions::default()).await,
        Err(KvError::ValueTooLarge {
            len: MAX_VALUE_BYTES + 1,
            limit: MAX_VALUE_BYTES
        })
    );
    let db = f.db();
    assert_eq!(count(&db, "SELECT count(*) FROM blobs"), 1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM entries WHERE value IS NULL"),
        1
    );
    // Overwriting with a small value moves it back inline.
    ns.put(b"big", Bytes::from("small"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM blobs"), 0);
    assert_eq!(
        ns.get(b"big").await.unwrap().unwrap().value,
        Bytes::from("small")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_lose_nothing() {
    let f = Fixture::new().await;
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let ns = f.ns("ns");
            tokio::spawn(async move {
                for _ in 0..10 {
                    ns.increment(b"counter", 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        f.ns("ns").get(b"counter").await.unwrap().unwrap().value,
        Bytes::from("400")
    );
}

#[tokio::test]
async fn increments_keep_metadata_and_refuse_non_integers() {
    let f = Fixture::new().await;
    let ns = f.ns("ns");
    let options = PutOptions {
        metadata: Some("{\"kind\":\"hits\"}".into()),
        ..Default::default()
    };
    ns.put(b"n", Bytes::from("41"), options).await.unwrap();
    assert_eq!(ns.increment(b"n", 1).await, Ok(42));
    assert_eq!(
        ns.get(b"n").await.unwrap().unwrap().metadata.as_deref(),
        Some("{\"kind\":\"hits\"}")
    );
    ns.put(b"text", Bytes::from("hello"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        ns.increment(b"text", 1).await,
        Err(KvError::NotAnInteger { key: "text".into() })
    );
    ns.put(
        b"max",
        Bytes::from(i64::MAX.to_string()),
        PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(ns.increment(b"max", 1).await, Err(KvError::Overflow));
}

#[tokio::test]
async fn compare_and_swap() {
    let f = Fixture::new().await;
    let ns = f.ns("ns");
    let if_absent = PutOptions {
        condition: Condition::IfAbsent,
        ..Default::default()
    };
    let first = ns
        .put(b"k", Bytes::from("1"), if_absent.clone())
        .await
        .unwrap();
    assert_eq!(
        ns.put(b"k", Bytes::from("2"), if_absent).await,
        Err(KvError::ConditionFailed)
    );
    let cas = |g| PutOptions {
        condition: Condition::IfGeneration(g),
        ..Default::default()
    };
    let second = ns.put(b"k", Bytes::from("2"), cas(first)).await.unwrap();
    assert!(second > first);
    assert_eq!(
        ns.put(b"k", Bytes::from("3"), cas(first)).await,
        Err(KvError::ConditionFailed)
    );
    assert_eq!(ns.get(b"k").await.unwrap().unwrap().value, Bytes::from("2"));
}

#[tokio::test]
async fn writes_survive_a_reopen_and_generations_are_never_reused() {
    let f = Fixture::new().await;
    let path = f.dir.path().join("kv.db");
    let generation = {
        let ns = f.ns("ns");
        for i in 0..50 {
            ns.put(
                format!("k{i}").as_bytes(),
                Bytes::from(i.to_string()),
                PutOptions::default(),
            )
            .await
            .unwrap();
        }
        let g = ns
            .put(b"last", Bytes::from("x"), PutOptions::default())
            .await
            .unwrap();
        ns.delete(b"last").await.unwrap();
        g
    };
    drop(f.store);
    let reopened = Arc::new(open(&path, &f.clock));
    let ns = Namespace::new(reopened, "ns", Arc::new(f.clock.clone()));
    for i in 0..50 {
        let value = ns
            .get(format!("k{i}").as_bytes())
            .await
            .unwrap()
            .expect("acknowledged write lost");
        assert_eq!(value.value, Bytes::from(i.to_string()));
    }
    let next = ns
        .put(b"last", Bytes::from("y"), PutOptions::default())
        .await
        .unwrap();
    assert!(
        next > generation,
        "generation {next} reused (was {generation})"
    );
}

fn open(path: &Path, clock: &ManualClock) -> SqliteStore {
    SqliteStore::open(path, Arc::new(clock.clone())).unwrap()
}

#[tokio::test]
async fn expired_entries_vanish_at_once_and_the_sweeper_removes_them() {
    let f = Fixture::new().await;
    let ns = f.ns("ns");
    let ttl = PutOptions {
        expiration: Expiration::Ttl(10),
        ..Default::default()
    };
    ns.put(b"short", Bytes::from(vec![1u8; 10_000]), ttl)
        .await
        .unwrap();
    ns.put(b"long", Bytes::from("stays"), PutOptions::default())
        .await
        .unwrap();
    f.clock.advance(9);
    assert!(ns.get(b"short").await.unwrap().is_some());
    f.clock.advance(1);
    assert_eq!(ns.get(b"short").await.unwrap(), None);
    assert_eq!(
        ns.list(&ListOptions::default()).await.unwrap().keys.len(),
        1
    );
    assert_eq!(
        count(&f.db(), "SELECT count(*) FROM entries"),
        2,
        "still on disk until swept"
    );
    assert_eq!(f.store.sweep_expired().await, Ok(1));
    assert_eq!(count(&f.db(), "SELECT count(*) FROM entries"), 1);
    assert_eq!(count(&f.db(), "SELECT count(*) FROM blobs"), 0);
}

#[tokio::test]
async fn namespaces_are_separate_and_must_exist() {
    let f = Fixture::new().await;
    f.store.create_namespace("other").await.unwrap();
    assert_eq!(f.store.create_namespace("other").await, Ok(false));
    f.ns("ns")
        .put(b"k", Bytes::from("mine"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(f.ns("other").get(b"k").await.unwrap(), None);
    assert_eq!(
        f.ns("missing").get(b"k").await,
        Err(KvError::NamespaceNotFound("missing".into()))
    );
    assert_eq!(f.store.namespaces().await.unwrap(), ["ns", "other"]);
    assert_eq!(f.store.delete_namespace("ns").await, Ok(true));
    assert_eq!(
        f.ns("ns").get(b"k").await,
        Err(KvError::NamespaceNotFound("ns".into()))
    );
    assert_eq!(count(&f.db(), "SELECT count(*) FROM entries"), 0);
    assert!(matches!(
        f.store.create_namespace("bad name").await,
        Err(KvError::NamespaceInvalid(_))
    ));
}

#[tokio::test]
async fn bulk_writes_apply_together_and_validate_first() {
    let f = Fixture::new().await;
    let ns = f.ns("ns");
    let puts: Vec<BulkWrite> = (0..10_000)
        .map(|i| BulkWrite::Put {
            key: format!("{i:05}").into_bytes(),
            value: Bytes::from("v"),
            options: Default::default(),
        })
        .collect();
    let outcomes = ns.bulk(puts).await.unwrap();
    assert!(outcomes.iter().all(Result::is_ok));
    let page = ns
        .list(&ListOptions {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((page.keys.len(), page.list_complete), (1000, false));
    assert_eq!(page.keys[0].name, b"00000");

    let too_many: Vec<BulkWrite> = (0..10_001)
        .map(|i| BulkWrite::Delete {
            key: format!("{i:05}").into_bytes(),
        })
        .collect();
    assert_eq!(
        ns.bulk(too_many).await,
        Err(KvError::TooManyKeys {
            count: 10_001,
            limit: 10_000
        })
    );
    // One bad key refuses the whole bulk before anything is deleted.
    let mixed = vec![
        BulkWrite::Delete {
            key: b"00001".to_vec(),
        },
        BulkWrite::Delete { key: Vec::new() },
    ];
    assert_eq!(ns.bulk(mixed).await, Err(KvError::KeyEmpty));
    assert!(ns.get(b"00001").await.unwrap().is_some());
}
