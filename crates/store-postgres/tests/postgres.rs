//! The PostgreSQL store against a real server (127.0.0.1:5432, or the URL in
//! VERGE_TEST_POSTGRES), each test in a schema of its own that it drops:
//! the conformance property test every backend runs, and what only a shared
//! database shows (two stores as two nodes, racing writers, migrations).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use proptest::prelude::*;
use verge_kv::conformance::{agree, ops};
use verge_kv::{Condition, KvError, KvStore, ManualClock, Namespace, PutOptions, SystemClock};
use verge_store_postgres::{ConnectError, PgStore};

fn url() -> String {
    std::env::var("VERGE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// A schema no other test or run uses.
fn fresh_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "verge_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn drop_schema(schema: &str) {
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is reachable");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

/// Runs `test` with a store in a fresh schema, then drops the schema.
fn with_store<F, T>(test: impl FnOnce(Arc<PgStore>, String) -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let schema = fresh_schema();
        let store = Arc::new(
            PgStore::connect(&url(), &schema)
                .await
                .expect("PostgreSQL is reachable (set VERGE_TEST_POSTGRES to another URL)"),
        );
        let result = test(store, schema.clone()).await;
        drop_schema(&schema).await;
        result
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_the_model(ops in ops()) {
        with_store(|store, _| async move {
            agree(store, ManualClock::new(1_000_000), ops).await
        })?;
    }

    /// The read cache a cluster node puts in front of the store changes
    /// nothing a guest can observe.
    #[test]
    fn the_cached_store_agrees_with_the_model(ops in ops()) {
        with_store(|store, _| async move {
            let cached = verge_kv::CachedStore::new(store, verge_kv::CacheConfig {
                capacity: 64 * 1024,
                ttl: std::time::Duration::from_secs(60),
            });
            agree(Arc::new(cached), ManualClock::new(1_000_000), ops).await
        })?;
    }
}

#[test]
fn expirations_are_bounded() {
    with_store(|store, _| async move {
        let clock = ManualClock::new(1_800_000_000);
        verge_kv::conformance::expirations_are_bounded(store, clock).await;
    });
}

#[test]
fn two_stores_on_one_database_act_as_one() {
    with_store(|a, schema| async move {
        let b = Arc::new(PgStore::connect(&url(), &schema).await.unwrap());
        assert!(a.create_namespace("shared").await.unwrap());
        assert!(!b.create_namespace("shared").await.unwrap());
        let clock = Arc::new(SystemClock);
        let on_a = Namespace::new(a.clone(), "shared", clock.clone());
        let on_b = Namespace::new(b.clone(), "shared", clock.clone());

        // Concurrent increments through both: none lost.
        let mut tasks = Vec::new();
        for n in 0..8 {
            let ns = if n % 2 == 0 {
                on_a.clone()
            } else {
                on_b.clone()
            };
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    ns.increment(b"hits", 1).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let hits = on_b.get(b"hits").await.unwrap().unwrap();
        assert_eq!(hits.value, Bytes::from("200"));

        // Racing put-if-absent: exactly one wins.
        let mut tasks = Vec::new();
        for n in 0..10 {
            let ns = if n % 2 == 0 {
                on_a.clone()
            } else {
                on_b.clone()
            };
            tasks.push(tokio::spawn(async move {
                let options = PutOptions {
                    condition: Condition::IfAbsent,
                    ..PutOptions::default()
                };
                ns.put(b"lock", Bytes::from(format!("owner {n}")), options)
                    .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(e) => assert_eq!(e, KvError::ConditionFailed),
            }
        }
        assert_eq!(won, 1);

        // A write on one is read on the other at once (no cache here).
        on_a.put(b"k", Bytes::from("v"), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(
            on_b.get(b"k").await.unwrap().unwrap().value,
            Bytes::from("v")
        );
        assert_eq!(b.namespaces().await.unwrap(), ["shared"]);
        assert!(b.delete_namespace("shared").await.unwrap());
        assert_eq!(
            on_a.get(b"k").await,
            Err(KvError::NamespaceNotFound("shared".into()))
        );
    });
}

#[test]
fn large_values_round_trip_and_connecting_again_keeps_the_data() {
    with_store(|store, schema| async move {
        store.create_namespace("ns").await.unwrap();
        let clock = Arc::new(SystemClock);
        let ns = Namespace::new(store.clone(), "ns", clock.clone());
        let big = Bytes::from(vec![7u8; 5 * 1024 * 1024]);
        ns.put(b"big", big.clone(), PutOptions::default())
            .await
            .unwrap();
        // A second connect runs the migrations again: a no-op.
        let again = Arc::new(PgStore::connect(&url(), &schema).await.unwrap());
        let ns = Namespace::new(again, "ns", clock);
        assert_eq!(ns.get(b"big").await.unwrap().unwrap().value, big);
    });
}

#[test]
fn cron_runs_conform_and_each_tick_is_claimed_once_across_nodes() {
    use verge_deploy::CronStore;
    with_store(|store, schema| async move {
        verge_deploy::conformance::cron_store(&store.control()).await;
        // Eight nodes race for each of twenty ticks: one wins every time.
        let mut nodes = Vec::new();
        for _ in 0..8 {
            nodes.push(PgStore::connect(&url(), &schema).await.unwrap().control());
        }
        for tick in 0..20u64 {
            let claims = nodes.iter().enumerate().map(|(n, node)| {
                let name = format!("node-{n}");
                async move {
                    node.claim_tick("race", "* * * * * *", tick * 1000, &name)
                        .await
                }
            });
            let won = futures_util::future::join_all(claims)
                .await
                .into_iter()
                .filter(|claimed| *claimed.as_ref().unwrap())
                .count();
            assert_eq!(won, 1, "tick {tick}");
        }
    });
}

#[test]
fn a_bad_schema_name_or_an_unreachable_server_is_a_clear_error() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bad = PgStore::connect(&url(), "Bad-Name").await.err().unwrap();
        assert!(bad.to_string().contains("schema name"), "{bad}");
        assert!(bad.help().is_some(), "a bad name is not worth a retry");
        let down = PgStore::connect("postgres://root@127.0.0.1:1/test", "verge")
            .await
            .err()
            .unwrap();
        assert!(matches!(down, ConnectError::Unreachable(_)), "{down}");
        assert!(down.to_string().contains("PostgreSQL"), "{down}");
        // A database that does not exist: said once, with how to create it.
        let base = url();
        let missing = match base.rfind('/') {
            Some(at) if base.starts_with("postgres") => {
                format!("{}/verge_no_such_database", &base[..at])
            }
            _ => format!("{base} dbname=verge_no_such_database"),
        };
        let refused = PgStore::connect(&missing, "verge").await.err().unwrap();
        assert!(
            refused
                .to_string()
                .contains("`verge_no_such_database` does not exist"),
            "{refused}"
        );
        assert!(
            refused.help().unwrap().contains("CREATE DATABASE"),
            "{refused:?}"
        );
    });
}

#[test]
fn the_control_store_conforms() {
    with_store(|store, _| async move {
        let control = store.control();
        verge_deploy::conformance::deploy_store(&control).await;
        verge_deploy::conformance::artifact_store(&control).await;
        verge_deploy::conformance::secret_store(&control).await;
    });
}

#[test]
fn changes_are_logged_in_order_and_pushed_to_listeners() {
    use verge_deploy::{ChangeFeed, DeployStore, Deployment, SecretStore, Subject};
    with_store(|store, _| async move {
        let control = store.control();
        let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
        control.listen(Box::new(move || {
            let _ = wake.send(());
        }));
        // The listener says so once it listens.
        tokio::time::timeout(std::time::Duration::from_secs(10), woken.recv())
            .await
            .expect("the LISTEN connection is up");
        assert_eq!(control.last_change().await.unwrap(), 0);

        control.put_blob("c", Bytes::from("x")).await.unwrap();
        let deployment = Deployment {
            worker: "w".into(),
            stable: "v1".into(),
            canary: None,
            updated_at: 1,
            author: "ops".into(),
        };
        control.set_deployment(&deployment).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), woken.recv())
            .await
            .expect("a notification after the commit");
        control.put_secret("w", "S", "v").await.unwrap();
        assert!(!control.delete_secret("w", "missing").await.unwrap());
        assert!(control.delete_worker("w").await.unwrap());

        let changes = control.changes_after(0, 100).await.unwrap();
        let subjects: Vec<Subject> = changes.iter().map(|c| c.subject.clone()).collect();
        assert_eq!(
            subjects,
            [
                Subject::Deployment("w".into()),
                Subject::Secrets("w".into()),
                Subject::Deployment("w".into()),
            ],
            "a delete of nothing records nothing"
        );
        assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(control.last_change().await.unwrap(), changes[2].seq);
        assert_eq!(
            control.changes_after(changes[1].seq, 100).await.unwrap(),
            changes[2..]
        );
        assert_eq!(control.changes_after(0, 2).await.unwrap(), changes[..2]);
    });
}

#[test]
fn kv_writes_that_change_something_are_logged_for_other_nodes_caches() {
    use verge_deploy::{ChangeFeed, Subject};
    with_store(|store, _| async move {
        let control = store.control();
        let clock = Arc::new(SystemClock);
        store.create_namespace("ns").await.unwrap();
        let ns = Namespace::new(store.clone(), "ns", clock);
        ns.put(b"a", Bytes::from("1"), PutOptions::default())
            .await
            .unwrap();
        let refused = PutOptions {
            condition: Condition::IfAbsent,
            ..PutOptions::default()
        };
        assert_eq!(
            ns.put(b"a", Bytes::from("2"), refused).await,
            Err(KvError::ConditionFailed)
        );
        assert!(!ns.delete(b"missing").await.unwrap());
        ns.increment(b"n", 5).await.unwrap();
        assert!(ns.delete(b"a").await.unwrap());
        assert!(store.delete_namespace("ns").await.unwrap());

        let kv = |key: &[u8]| Subject::KvKey {
            namespace: "ns".into(),
            key: key.to_vec(),
        };
        let subjects: Vec<Subject> = control
            .changes_after(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.subject)
            .collect();
        assert_eq!(
            subjects,
            [
                kv(b"a"),
                kv(b"n"),
                kv(b"a"),
                Subject::KvNamespace("ns".into())
            ],
            "a refused put and a delete of nothing change nothing"
        );
    });
}

#[test]
fn a_cache_on_another_node_sees_a_write_once_the_change_log_is_applied() {
    use verge_deploy::{ChangeFeed, Subject};
    use verge_kv::{CacheConfig, CachedStore};
    with_store(|a, schema| async move {
        let b = Arc::new(PgStore::connect(&url(), &schema).await.unwrap());
        let cached = Arc::new(CachedStore::new(
            b.clone(),
            CacheConfig {
                capacity: 1 << 20,
                ttl: std::time::Duration::from_secs(60),
            },
        ));
        let clock = Arc::new(SystemClock);
        a.create_namespace("ns").await.unwrap();
        let on_a = Namespace::new(a.clone(), "ns", clock.clone());
        let on_b = Namespace::new(cached.clone(), "ns", clock);
        let seen = b.control().last_change().await.unwrap();

        assert_eq!(on_b.get(b"k").await.unwrap(), None);
        on_a.put(b"k", Bytes::from("1"), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(
            on_b.get(b"k").await.unwrap(),
            None,
            "B's cache holds its read until it hears of the write"
        );
        for change in b.control().changes_after(seen, 100).await.unwrap() {
            if let Subject::KvKey { namespace, key } = change.subject {
                cached.invalidate(&namespace, &key);
            }
        }
        assert_eq!(on_b.get(b"k").await.unwrap().unwrap().value, "1");

        // B's own write is visible to B's next read at once.
        on_b.put(b"k", Bytes::from("2"), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(on_b.get(b"k").await.unwrap().unwrap().value, "2");
        let stats = cached.stats();
        assert!(stats.hits.load(Ordering::Relaxed) >= 1);
        assert_eq!(stats.misses.load(Ordering::Relaxed), 3);
    });
}

/// Bulk writes lock rows, not a slot of the server's shared lock table per
/// key: eight bulks of 10,000 keys at once (80,000 keys) would exhaust the
/// default table (64 slots per connection) if they did, with "out of shared
/// memory" for them and for every other database on the server.
#[test]
fn concurrent_bulk_writes_do_not_take_a_server_lock_per_key() {
    with_store(|store, schema| async move {
        assert!(store.create_namespace("bulk").await.unwrap());
        let put = |key: String, condition| verge_kv::WriteOp::Put {
            key: key.into_bytes(),
            value: Bytes::from_static(b"v"),
            metadata: None,
            expiration: None,
            condition,
        };
        let mut tasks = Vec::new();
        for bulk in 0..8 {
            let store = store.clone();
            let ops: Vec<_> = (0..10_000)
                .map(|n| put(format!("{bulk}/{n:05}"), Condition::Always))
                .collect();
            tasks.push(tokio::spawn(async move {
                store.write("bulk", ops, 1_000).await
            }));
        }
        for task in tasks {
            let outcomes = task.await.unwrap().expect("the bulk went through");
            assert_eq!(outcomes.len(), 10_000);
            assert!(outcomes.iter().all(|o| o.is_ok()));
        }
        let page = store.list("bulk", b"7/", None, 1000, 1_000).await.unwrap();
        assert_eq!(page.keys.len(), 1000);

        // Writes that change nothing leave no row behind: a refused
        // condition on an absent key's neighbour, a delete of an absent key.
        let outcomes = store
            .write(
                "bulk",
                vec![
                    put("0/00000".into(), Condition::IfAbsent),
                    verge_kv::WriteOp::Delete {
                        key: b"absent".to_vec(),
                    },
                    put("fresh".into(), Condition::IfGeneration(1)),
                    verge_kv::WriteOp::Increment {
                        key: b"counter".to_vec(),
                        delta: 2,
                    },
                    verge_kv::WriteOp::Increment {
                        key: b"counter".to_vec(),
                        delta: 3,
                    },
                ],
                1_000,
            )
            .await
            .unwrap();
        assert_eq!(outcomes[0], Err(KvError::ConditionFailed));
        assert_eq!(outcomes[1], Ok(verge_kv::WriteOutcome::Deleted(false)));
        assert_eq!(outcomes[2], Err(KvError::ConditionFailed));
        assert!(
            matches!(
                outcomes[4],
                Ok(verge_kv::WriteOutcome::Incremented { value: 5, .. })
            ),
            "{outcomes:?}"
        );
        let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {schema}.kv_entries"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 80_001, "8 bulks and the counter, nothing else");
    });
}

/// The URL of the test server with `params` added.
fn url_with(params: &str) -> String {
    let base = url();
    let joiner = if base.contains('?') { '&' } else { '?' };
    format!("{base}{joiner}{params}")
}

/// The test server's own certificate (Debian's snakeoil one, which its
/// PostgreSQL packages serve with `ssl = on`).
const SERVER_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

#[test]
fn tls_follows_sslmode_as_libpq_does() {
    with_store(|_, schema| async move {
        let connect = |params: &str| {
            let url = url_with(params);
            let schema = schema.clone();
            async move { PgStore::connect(&url, &schema).await }
        };
        // The test server offers TLS: the default (prefer) and require use
        // it, disable does not.
        for params in ["application_name=verge-test", "sslmode=require"] {
            let store = connect(params).await.expect(params);
            assert!(store.encrypted().await.unwrap(), "{params}");
        }
        let plain = connect("sslmode=disable").await.unwrap();
        assert!(!plain.encrypted().await.unwrap());

        // Verifying: against its own certificate the chain holds; by the
        // address it is reached at the name does not, and without that
        // root nothing does. Both are refusals with a fix, not retries.
        let ca = format!("sslmode=verify-ca&sslrootcert={SERVER_CERT}");
        let store = connect(&ca)
            .await
            .expect("verify-ca with the server's certificate");
        assert!(store.encrypted().await.unwrap());
        let full = format!("sslmode=verify-full&sslrootcert={SERVER_CERT}");
        for params in [full.as_str(), "sslmode=verify-full"] {
            match connect(params).await {
                Err(e @ ConnectError::Refused { .. }) => {
                    assert!(
                        e.to_string().contains("certificate was not accepted"),
                        "{e}"
                    );
                    assert!(e.help().unwrap().contains("sslrootcert"), "{e}");
                }
                Err(e) => panic!("{params}: {e}"),
                Ok(_) => panic!("{params}: connected"),
            }
        }
        let missing = connect("sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem").await;
        assert!(matches!(missing, Err(ConnectError::Refused { .. })));
    });
}
