//! `verge-bench kv-latency DIR POSTGRES_URL`: small KV gets, one at a time,
//! through the same `Namespace` guests use, on SQLite (in DIR) and on
//! PostgreSQL (in a fresh schema, dropped after): the uncached read latency
//! of each store, and PostgreSQL behind the read cache cluster nodes keep
//! (warmed by one read of every key first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use verge_kv::{CacheConfig, CachedStore, KvStore, Namespace, PutOptions, SystemClock};

const KEYS: usize = 1000;
const GETS: usize = 20_000;

pub(crate) async fn run(dir: &std::path::Path, url: &str) -> anyhow::Result<()> {
    let clock = Arc::new(SystemClock);
    let sqlite: Arc<dyn KvStore> = Arc::new(verge_store_sqlite::SqliteStore::open(
        &dir.join("latency.db"),
        clock.clone(),
    )?);
    let schema = format!("verge_bench_{}", std::process::id());
    let postgres = verge_store_postgres::PgStore::connect(url, &schema)
        .await
        .context("connecting to PostgreSQL")?;
    let result = async {
        let postgres: Arc<dyn KvStore> = Arc::new(postgres);
        let cached: Arc<dyn KvStore> = Arc::new(CachedStore::new(
            postgres.clone(),
            CacheConfig {
                capacity: 64 << 20,
                ttl: Duration::from_secs(60),
            },
        ));
        for (name, store, namespace) in [
            ("sqlite", sqlite, "bench"),
            ("postgres", postgres, "bench"),
            ("postgres, cached", cached, "cached"),
        ] {
            let (p50, p99) = measure(store, namespace, clock.clone()).await?;
            println!("{name}: small get p50 {p50:?} p99 {p99:?} over {GETS} gets");
        }
        anyhow::Ok(())
    }
    .await;
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    result
}

async fn measure(
    store: Arc<dyn KvStore>,
    namespace: &str,
    clock: Arc<SystemClock>,
) -> anyhow::Result<(Duration, Duration)> {
    store.create_namespace(namespace).await?;
    let ns = Namespace::new(store, namespace, clock);
    for n in 0..KEYS {
        let value = Bytes::from(vec![b'v'; 100]);
        ns.put(format!("key-{n}").as_bytes(), value, PutOptions::default())
            .await?;
    }
    for n in 0..KEYS {
        ns.get(format!("key-{n}").as_bytes()).await?;
    }
    let mut times = Vec::with_capacity(GETS);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..GETS {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let key = format!("key-{}", (seed >> 33) as usize % KEYS);
        let started = Instant::now();
        let entry = ns.get(key.as_bytes()).await?;
        times.push(started.elapsed());
        anyhow::ensure!(entry.is_some(), "{key} missing");
    }
    times.sort();
    Ok((times[GETS / 2], times[GETS * 99 / 100]))
}
