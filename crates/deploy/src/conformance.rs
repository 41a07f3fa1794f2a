//! What every control-plane backend's tests check, against a fresh store:
//! the same expectations for SQLite and PostgreSQL. Built with the
//! `conformance` feature, for tests only.

use bytes::Bytes;

use crate::{
    CRON_RUNS_KEPT_MS, Canary, CronStore, DeployStore, Deployment, RunOutcome, SecretStore, Version,
};

fn version(worker: &str, id: &str, component: &str) -> Version {
    Version {
        id: id.into(),
        worker: worker.into(),
        component: component.into(),
        manifest: format!("name = \"{worker}\"\n"),
        size: 3,
        created_at: 1,
        author: "ops".into(),
    }
}

async fn version_ids(store: &dyn DeployStore, worker: &str) -> Vec<String> {
    let versions = store.versions(worker).await.unwrap();
    versions.into_iter().map(|v| v.id).collect()
}

/// Compiled code shared between nodes: kept per component and engine,
/// replaced by a later put, never for a component the store does not hold,
/// gone with its component. A store that shares none keeps none.
pub async fn artifact_store(store: &(impl DeployStore + SecretStore)) {
    let code = |text: &'static str| Bytes::from(text);
    store
        .put_blob("art1", Bytes::from("component"))
        .await
        .unwrap();
    store
        .put_artifact("art1", "engine-a", code("a1"))
        .await
        .unwrap();
    if !store.shares_artifacts() {
        assert_eq!(store.artifact("art1", "engine-a").await.unwrap(), None);
        return;
    }
    store
        .put_artifact("art1", "engine-b", code("b1"))
        .await
        .unwrap();
    store
        .put_artifact("missing", "engine-a", code("x"))
        .await
        .unwrap();
    assert_eq!(
        store.artifact("art1", "engine-a").await.unwrap(),
        Some(code("a1"))
    );
    assert_eq!(
        store.artifact("art1", "engine-b").await.unwrap(),
        Some(code("b1"))
    );
    assert_eq!(store.artifact("art1", "engine-c").await.unwrap(), None);
    assert_eq!(store.artifact("missing", "engine-a").await.unwrap(), None);
    store
        .put_artifact("art1", "engine-a", code("a2"))
        .await
        .unwrap();
    assert_eq!(
        store.artifact("art1", "engine-a").await.unwrap(),
        Some(code("a2"))
    );
    // The component goes when the last version using it does, and its code
    // with it.
    assert!(
        store
            .add_version(&version("art", "av1", "art1"))
            .await
            .unwrap()
    );
    let deployment = Deployment {
        worker: "art".into(),
        stable: "av1".into(),
        canary: None,
        updated_at: 1,
        author: "ops".into(),
    };
    store.set_deployment(&deployment).await.unwrap();
    assert!(store.delete_worker("art").await.unwrap());
    assert_eq!(store.blob("art1").await.unwrap(), None);
    assert_eq!(store.artifact("art1", "engine-a").await.unwrap(), None);
}

/// Blobs, versions (idempotent, newest first), deployments with and without
/// a canary, pruning, and deleting a worker (its blobs only when unshared).
/// Panics on the first difference.
pub async fn deploy_store(store: &(impl DeployStore + SecretStore)) {
    for (hash, bytes) in [("c1", "one"), ("c1", "one"), ("c2", "two")] {
        store.put_blob(hash, Bytes::from(bytes)).await.unwrap();
    }
    assert_eq!(store.blob("c2").await.unwrap(), Some(Bytes::from("two")));
    assert_eq!(store.blob("c9").await.unwrap(), None);
    assert!(store.add_version(&version("a", "v1", "c1")).await.unwrap());
    assert!(!store.add_version(&version("a", "v1", "c1")).await.unwrap());
    assert!(store.add_version(&version("a", "v2", "c2")).await.unwrap());
    assert!(store.add_version(&version("b", "v3", "c1")).await.unwrap());
    assert_eq!(version_ids(store, "a").await, ["v2", "v1"], "newest first");
    assert_eq!(
        store.versions("a").await.unwrap()[1],
        version("a", "v1", "c1")
    );

    let mut deployment = Deployment {
        worker: "a".into(),
        stable: "v1".into(),
        canary: Some(Canary {
            version: "v2".into(),
            percent: 10,
        }),
        updated_at: 5,
        author: "ops".into(),
    };
    assert_eq!(store.deployment("a").await.unwrap(), None);
    store.set_deployment(&deployment).await.unwrap();
    assert_eq!(store.deployments().await.unwrap(), [deployment.clone()]);
    assert_eq!(
        store.deployment("a").await.unwrap().as_ref(),
        Some(&deployment)
    );
    assert_eq!(store.deployment("b").await.unwrap(), None);
    deployment.canary = None;
    store.set_deployment(&deployment).await.unwrap();
    assert_eq!(store.deployments().await.unwrap(), [deployment.clone()]);
    assert_eq!(store.deployment("a").await.unwrap(), Some(deployment));

    assert_eq!(store.prune_versions("a", &["v2".into()]).await.unwrap(), 1);
    assert_eq!(version_ids(store, "a").await, ["v2"]);
    assert!(
        store.blob("c1").await.unwrap().is_some(),
        "b's version uses c1"
    );

    store.put_secret("a", "TOKEN", "x").await.unwrap();
    assert!(store.delete_worker("a").await.unwrap());
    assert!(!store.delete_worker("a").await.unwrap());
    assert!(store.deployments().await.unwrap().is_empty());
    assert_eq!(store.deployment("a").await.unwrap(), None);
    assert!(store.versions("a").await.unwrap().is_empty());
    assert!(store.secret_names("a").await.unwrap().is_empty());
    // c1 is still used by worker b; c2 was only a's.
    assert!(store.blob("c1").await.unwrap().is_some());
    assert!(store.blob("c2").await.unwrap().is_none());

    // A deploy stores the version and points the worker at it together;
    // deploying a version again keeps its first record.
    let first = version("c", "v5", "c1");
    let mut deployment = Deployment {
        worker: "c".into(),
        stable: "v5".into(),
        canary: None,
        updated_at: 7,
        author: "ops".into(),
    };
    assert!(store.deploy(&first, &deployment).await.unwrap());
    assert_eq!(
        store.deployment("c").await.unwrap().as_ref(),
        Some(&deployment)
    );
    let again = Version {
        author: "someone else".into(),
        ..first.clone()
    };
    deployment.updated_at = 8;
    assert!(!store.deploy(&again, &deployment).await.unwrap());
    assert_eq!(store.versions("c").await.unwrap(), [first]);
    assert_eq!(store.deployment("c").await.unwrap(), Some(deployment));
    assert!(store.delete_worker("c").await.unwrap());
}

/// Secrets: set, replace, list names sorted, read values, delete.
pub async fn secret_store(store: &impl SecretStore) {
    store.put_secret("w", "B", "1").await.unwrap();
    store.put_secret("w", "A", "2").await.unwrap();
    store.put_secret("w", "A", "3").await.unwrap();
    store.put_secret("other", "C", "4").await.unwrap();
    assert_eq!(store.secret_names("w").await.unwrap(), ["A", "B"]);
    assert_eq!(
        store.secrets("w").await.unwrap(),
        [("A".to_string(), "3".to_string()), ("B".into(), "1".into())]
    );
    assert!(store.delete_secret("w", "A").await.unwrap());
    assert!(!store.delete_secret("w", "A").await.unwrap());
    assert_eq!(store.secret_names("w").await.unwrap(), ["B"]);
}

/// Cron runs: one claim per tick, outcomes recorded, newest first, gone
/// with their worker, forgotten after a day.
pub async fn cron_store(store: &(impl DeployStore + CronStore)) {
    let tick = 1_800_000_000_000;
    assert!(store.claim_tick("w", "* * * * *", tick, "a").await.unwrap());
    assert!(
        !store.claim_tick("w", "* * * * *", tick, "b").await.unwrap(),
        "a tick is taken once"
    );
    assert!(store.claim_tick("w", "0 * * * *", tick, "b").await.unwrap());
    assert!(
        store
            .claim_tick("other", "* * * * *", tick, "b")
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_tick("w", "* * * * *", tick + 60_000, "b")
            .await
            .unwrap()
    );
    let outcome = RunOutcome {
        status: 500,
        wall_ms: 12,
        error: Some("panic".into()),
    };
    store
        .finish_tick("w", "* * * * *", tick, &outcome)
        .await
        .unwrap();
    let runs = store.cron_runs("w", 10).await.unwrap();
    let summary: Vec<(&str, u64, &str, Option<u16>)> = runs
        .iter()
        .map(|r| (r.cron.as_str(), r.tick, r.node.as_str(), r.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("* * * * *", tick + 60_000, "b", None),
            ("* * * * *", tick, "a", Some(500)),
            ("0 * * * *", tick, "b", None),
        ]
    );
    assert_eq!(runs[1].wall_ms, Some(12));
    assert_eq!(runs[1].error.as_deref(), Some("panic"));
    assert_eq!(store.cron_runs("w", 1).await.unwrap().len(), 1);

    // A day later the first runs are forgotten.
    let later = tick + CRON_RUNS_KEPT_MS + 60_000;
    assert!(
        store
            .claim_tick("w", "* * * * *", later, "a")
            .await
            .unwrap()
    );
    let ticks: Vec<u64> = store
        .cron_runs("w", 10)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.cron == "* * * * *")
        .map(|r| r.tick)
        .collect();
    assert_eq!(ticks, [later, tick + 60_000]);

    store.put_blob("c", Bytes::from("x")).await.unwrap();
    store.add_version(&version("w", "v1", "c")).await.unwrap();
    store
        .set_deployment(&Deployment {
            worker: "w".into(),
            stable: "v1".into(),
            canary: None,
            updated_at: 1,
            author: "ops".into(),
        })
        .await
        .unwrap();
    assert!(store.delete_worker("w").await.unwrap());
    assert!(store.cron_runs("w", 10).await.unwrap().is_empty());
    assert_eq!(store.cron_runs("other", 10).await.unwrap().len(), 1);
}
