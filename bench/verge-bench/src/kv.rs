//! The KV benchmark's store setup and its native baseline.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use verge_kv::{Clock, KvStore, Namespace, PutOptions, SystemClock};
use verge_runtime::KvBindings;
use verge_store_sqlite::SqliteStore;

/// A fresh store in `dir` with `bench` (1000 keys of 100 B) and `large`
/// (10 keys of 1 MiB), bound as KV and LARGE.
pub(crate) async fn prefilled_bindings(dir: &Path) -> anyhow::Result<KvBindings> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn KvStore> = Arc::new(SqliteStore::open(&dir.join("kv.db"), clock.clone())?);
    let mut bindings = HashMap::new();
    for (binding, name, keys, size) in [("KV", "bench", 1000, 100), ("LARGE", "large", 10, 1 << 20)]
    {
        store.create_namespace(name).await?;
        let ns = Namespace::new(store.clone(), name, clock.clone());
        let writes = (0..keys)
            .map(|i| verge_kv::BulkWrite::Put {
                key: format!("bench:{i}").into_bytes(),
                value: Bytes::from(vec![b'x'; size]),
                options: PutOptions::default(),
            })
            .collect();
        ns.bulk(writes).await?;
        bindings.insert(binding.to_string(), ns);
    }
    Ok(Arc::new(bindings))
}

fn percentiles(mut times: Vec<u64>) -> (u64, u64) {
    times.sort_unstable();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (p(0.50), p(0.99))
}

/// Gets and puts straight through rusqlite, with the store's pragmas: the
/// ceiling for the same work done through a guest.
pub(crate) fn native(dir: &Path) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(dir.join("native.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    anyhow::ensure!(synchronous == 2, "synchronous is {synchronous}, not FULL");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    )?;
    for (label, keys, size, n) in [
        ("small", 1000usize, 100usize, 20_000usize),
        ("large", 10, 1 << 20, 200),
    ] {
        let value = vec![b'x'; size];
        conn.execute_batch("BEGIN")?;
        for i in 0..keys {
            conn.execute(
                "INSERT OR REPLACE INTO kv VALUES (?1, ?2)",
                (format!("bench:{i}").as_bytes(), &value),
            )?;
        }
        conn.execute_batch("COMMIT")?;
        let mut get = conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")?;
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let key = format!("bench:{}", i % keys);
            let t0 = Instant::now();
            let v: Vec<u8> = get.query_row([key.as_bytes()], |r| r.get(0))?;
            times.push(t0.elapsed().as_nanos() as u64);
            assert_eq!(v.len(), size);
        }
        let (p50, p99) = percentiles(times);
        println!("native get {label} p50={p50} p99={p99}");
        let puts = if size > 1000 { 50 } else { 500 };
        let mut times = Vec::with_capacity(puts);
        let started = Instant::now();
        for i in 0..puts {
            let t0 = Instant::now();
            conn.execute_batch("BEGIN IMMEDIATE")?;
            conn.execute(
                "INSERT OR REPLACE INTO kv VALUES (?1, ?2)",
                (format!("bench:{}", i % keys).as_bytes(), &value),
            )?;
            conn.execute_batch("COMMIT")?;
            times.push(t0.elapsed().as_nanos() as u64);
        }
        let per_second = puts as f64 / started.elapsed().as_secs_f64();
        let (p50, p99) = percentiles(times);
        println!("native put {label} p50={p50} p99={p99} ops_per_s={per_second:.0}");
    }
    Ok(())
}

/// Group-commit throughput of the store alone: 64 tasks each putting 200
/// values of 100 B, next to 10 values of 1 MiB; prints puts per second.
pub(crate) async fn store_throughput(dir: &Path) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn KvStore> = Arc::new(SqliteStore::open(&dir.join("kv.db"), clock.clone())?);
    store.create_namespace("bench").await?;
    let ns = Namespace::new(store, "bench", clock);
    for i in 0..10 {
        ns.put(
            format!("large:{i}").as_bytes(),
            Bytes::from(vec![b'x'; 1 << 20]),
            PutOptions::default(),
        )
        .await?;
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let ns = ns.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    let key = format!("small:{task}:{i}");
                    ns.put(
                        key.as_bytes(),
                        Bytes::from(vec![b'x'; 100]),
                        PutOptions::default(),
                    )
                    .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    println!(
        "store puts_per_s={:.0}",
        64.0 * 200.0 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
