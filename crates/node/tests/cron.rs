//! Cron on a node whose stores run on a manual clock: a tick runs once the
//! clock reaches it, once, and not before. No test waits for a real minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use verge_kv::ManualClock;
use verge_node::config::AdminToken;
use verge_node::{ConfigLayer, DeployRequest, Node, NodeConfig};
use verge_runtime::TracingSink;

/// 2026-12-01 12:00:00 UTC.
const NOON: u64 = 1_796_126_400;

/// The runs of `worker`'s schedules that finished.
async fn finished_runs(node: &Node, worker: &str) -> Vec<verge_deploy::CronRun> {
    let (_, runs) = node.schedules(worker).await.unwrap();
    runs.into_iter().filter(|r| r.status.is_some()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_tick_runs_once_when_the_clock_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOON - 3);
    let config = NodeConfig::from_layer(ConfigLayer {
        data_dir: Some(dir.path().to_path_buf()),
        admin_tokens: vec![AdminToken {
            name: "ops".into(),
            token: "0123456789abcdef0123".into(),
            read_only: false,
        }],
        ..ConfigLayer::default()
    })
    .unwrap();
    let stores = verge_node::sqlite_stores(dir.path(), Arc::new(clock.clone())).unwrap();
    let node = Node::start(config, stores, Arc::new(TracingSink))
        .await
        .unwrap();

    let component = std::fs::read(verge_test_programs::KV_FIXTURE).unwrap();
    let hash = verge_runtime::component_hash(&component);
    node.put_component(&hash, Bytes::from(component))
        .await
        .unwrap();
    node.deploy(DeployRequest {
        worker: "daily".into(),
        component: hash,
        manifest: "name = \"daily\"\ncomponent = \"kv_fixture.wasm\"\n\
                   [[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"daily\"\n\
                   [triggers]\ncrons = [\"0 0 12 * * *\"]\n"
            .into(),
        percentage: None,
        author: "ops".into(),
    })
    .await
    .unwrap();

    let (schedules, runs) = node.schedules("daily").await.unwrap();
    assert_eq!(schedules, [("0 0 12 * * *".to_string(), Some(NOON * 1000))]);
    assert!(runs.is_empty());
    // The scheduler looks at least every second of real time; for two of
    // them the clock stays short of noon, and nothing runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(node.schedules("daily").await.unwrap().1.is_empty());

    clock.set(NOON);
    let started = Instant::now();
    let runs = loop {
        let runs = finished_runs(&node, "daily").await;
        if !runs.is_empty() {
            break runs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the noon tick never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((runs[0].tick, runs[0].status), (NOON * 1000, Some(200)));
    let (schedules, _) = node.schedules("daily").await.unwrap();
    assert_eq!(
        schedules[0].1,
        Some((NOON + 86_400) * 1000),
        "next: tomorrow noon"
    );

    // The clock stays at noon: the tick does not run again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(node.schedules("daily").await.unwrap().1.len(), 1);
    let namespace = verge_kv::Namespace::new(
        node.stores().kv.clone(),
        "daily",
        node.stores().clock.clone(),
    );
    let ran = namespace
        .get(format!("tick:{}", NOON * 1000).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        ran.map(|e| e.value),
        Some(Bytes::from("1")),
        "the guest ran once"
    );
}
