//! Running a node: open the stores, bind both addresses, serve until told
//! to stop, then drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use verge_runtime::server::{ServeOptions, serve as serve_data};

use crate::admin::{self, AdminState};
use crate::config::{NodeConfig, StoreConfig};
use crate::node::{Node, Stores};

/// How long a cached KV read is served before the store is asked again,
/// whatever the change log says: the bound on staleness should a change
/// ever be missed (as Workers KV's default `cacheTtl`).
pub(crate) const KV_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The node's stores, as its config names them.
pub async fn open_stores(config: &NodeConfig) -> anyhow::Result<Stores> {
    let clock: Arc<dyn verge_kv::Clock> = Arc::new(verge_kv::SystemClock);
    // Owner-only, whichever store: compiled tenants' code lives here too.
    verge_store_sqlite::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    match &config.store {
        StoreConfig::Sqlite => sqlite_stores(&config.data_dir, clock),
        StoreConfig::Postgres { url, schema } => {
            // A node may start before its database server: it says so and
            // waits. What waiting cannot mend (no such database, a refused
            // user) stops it, with the fix.
            let store = loop {
                match verge_store_postgres::PgStore::connect(url, schema).await {
                    Ok(store) => break store,
                    Err(e @ verge_store_postgres::ConnectError::Unreachable(_)) => {
                        tracing::warn!(
                            "cannot reach the PostgreSQL store (`store`, schema `{schema}`): {e}; \
                             retrying in 2 s"
                        );
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    }
                    Err(e) => {
                        let help = e.help().unwrap_or_default().to_string();
                        anyhow::bail!(
                            "cannot use the PostgreSQL store (`store`, --store, VERGE_STORE): \
                             {e}\n  help: {help}"
                        );
                    }
                }
            };
            match store.encrypted().await {
                Ok(true) => tracing::info!("connected to the PostgreSQL store over TLS"),
                Ok(false) => tracing::warn!(
                    "connected to the PostgreSQL store without TLS (sslmode=disable, or a \
                     server that does not offer it); add ?sslmode=verify-full to require it"
                ),
                Err(e) => {
                    tracing::warn!("cannot tell whether the store connection is encrypted: {e}")
                }
            }
            let control = store.control();
            let store: Arc<dyn verge_kv::KvStore> = Arc::new(store);
            let (kv, kv_cache) = if config.kv_cache > 0 {
                let cache = Arc::new(verge_kv::CachedStore::new(
                    store,
                    verge_kv::CacheConfig {
                        capacity: config.kv_cache,
                        ttl: KV_CACHE_TTL,
                    },
                ));
                (cache.clone() as Arc<dyn verge_kv::KvStore>, Some(cache))
            } else {
                (store, None)
            };
            Ok(Stores {
                deploys: Arc::new(control.clone()),
                secrets: Arc::new(control.clone()),
                crons: Arc::new(control.clone()),
                changes: Arc::new(control),
                kv,
                kv_cache,
                clock,
            })
        }
    }
}

/// The embedded stores in `data_dir` (`kv.db` and `control.db`), on
/// `clock` (a manual one in tests).
pub fn sqlite_stores(
    data_dir: &std::path::Path,
    clock: Arc<dyn verge_kv::Clock>,
) -> anyhow::Result<Stores> {
    let kv_path = data_dir.join("kv.db");
    let kv = verge_store_sqlite::SqliteStore::open(&kv_path, clock.clone())
        .with_context(|| format!("cannot open the KV store {}", kv_path.display()))?;
    let control_path = data_dir.join("control.db");
    let control = verge_store_sqlite::SqliteControl::open(&control_path).with_context(|| {
        format!(
            "cannot open the deployment store {}",
            control_path.display()
        )
    })?;
    Ok(Stores {
        deploys: Arc::new(control.clone()),
        secrets: Arc::new(control.clone()),
        crons: Arc::new(control.clone()),
        changes: Arc::new(control),
        kv: Arc::new(kv),
        kv_cache: None,
        clock,
    })
}

/// The node's listeners: the data plane, and the admin API unless the node
/// has none.
pub struct Bound {
    pub data: TcpListener,
    pub admin: Option<TcpListener>,
}

impl Bound {
    pub fn data_addr(&self) -> SocketAddr {
        self.data
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(|admin| admin.local_addr().expect("a bound listener has an address"))
    }
}

/// Binds the data-plane and admin addresses.
pub async fn bind(config: &NodeConfig) -> anyhow::Result<Bound> {
    let data = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (`listen`, --listen); is another process using it?",
            config.listen
        )
    })?;
    let admin = match config.admin_listen {
        None => None,
        Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
            format!(
                "cannot listen on {address} (`admin_listen`, --admin-listen); \
                 is another process using it?"
            )
        })?),
    };
    Ok(Bound { data, admin })
}

/// Serves the data plane and the admin API until `shutdown` resolves, then
/// lets requests in flight finish. Returns whether they all did in time.
pub async fn serve(node: Arc<Node>, bound: Bound, shutdown: impl Future<Output = ()>) -> bool {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let state = Arc::new(AdminState {
        node: node.clone(),
        data_addr: bound.data_addr(),
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin = bound.admin.map(|listener| {
        let admin = axum::serve(listener, admin::router(state))
            .with_graceful_shutdown(wait(stopped.clone()));
        tokio::spawn(async move {
            if let Err(e) = admin.await {
                tracing::error!("the admin API stopped: {e}");
            }
        })
    });
    let options = ServeOptions {
        drain_timeout: node.config.drain_timeout,
        header_read_timeout: node.config.header_read_timeout,
    };
    let data = serve_data(bound.data, node.registry.clone(), options, wait(stopped));
    tokio::pin!(data);
    let drained = tokio::select! {
        () = shutdown => {
            let _ = stop.send(true);
            (&mut data).await
        }
        drained = &mut data => drained,
    };
    let _ = stop.send(true);
    if let Some(admin) = admin {
        let _ = tokio::time::timeout(node.config.drain_timeout, admin).await;
    }
    drained
}
