//! The todo-api benchmark: the example served on the Verge runtime over a
//! SQLite KV store, and its native twin (axum + rusqlite) for the ceiling.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use verge_kv::{Clock, KvStore, Namespace, SystemClock};
use verge_runtime::KvBindings;
use verge_store_sqlite::SqliteStore;

/// A store in `dir` with the `todos` namespace bound as `TODOS`, as
/// examples/todo-api's manifest asks.
pub(crate) async fn bindings(dir: &Path) -> anyhow::Result<KvBindings> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn KvStore> = Arc::new(SqliteStore::open(&dir.join("kv.db"), clock.clone())?);
    store.create_namespace("todos").await?;
    let ns = Namespace::new(store, "todos", clock);
    Ok(Arc::new(HashMap::from([("TODOS".to_string(), ns)])))
}

thread_local! {
    /// One read connection per server thread, as Verge's readers are.
    static READER: std::cell::RefCell<Option<rusqlite::Connection>> = const { std::cell::RefCell::new(None) };
}

fn read(db: &Path, id: i64) -> rusqlite::Result<Option<(String, i64)>> {
    READER.with(|reader| {
        let mut reader = reader.borrow_mut();
        if reader.is_none() {
            let conn = rusqlite::Connection::open(db)?;
            conn.pragma_update(None, "journal_mode", "wal")?;
            *reader = Some(conn);
        }
        let conn = reader.as_ref().expect("opened above");
        let mut stmt = conn.prepare_cached("SELECT json, generation FROM todos WHERE id = ?1")?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => Ok(Some((row.get(0)?, row.get(1)?))),
            None => Ok(None),
        }
    })
}

async fn show(State(db): State<Arc<PathBuf>>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return (StatusCode::NOT_FOUND, "no such todo").into_response();
    };
    match read(&db, id) {
        Ok(Some((json, generation))) => (
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::ETAG, format!("\"{generation}\"")),
            ],
            json,
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such todo").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves `GET /todos/:id` natively from `todos` rows seeded in `dir`, the
/// same JSON the example stores.
pub(crate) async fn twin(addr: &str, dir: &Path, count: i64) -> anyhow::Result<()> {
    let db = dir.join("twin.db");
    let conn = rusqlite::Connection::open(&db)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS todos (id INTEGER PRIMARY KEY, json TEXT NOT NULL, generation INTEGER NOT NULL)",
    )?;
    for id in 1..=count {
        let json = format!(
            r#"{{"id":"{id}","title":"todo {id}","done":false,"created_at":"2026-11-28T21:30:05.123Z","updated_at":"2026-11-28T21:30:05.123Z"}}"#
        );
        conn.execute(
            "INSERT OR REPLACE INTO todos (id, json, generation) VALUES (?1, ?2, ?3)",
            rusqlite::params![id, json, id],
        )?;
    }
    drop(conn);
    let app = axum::Router::new()
        .route("/todos/{id}", axum::routing::get(show))
        .with_state(Arc::new(db));
    let addr: SocketAddr = addr.parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
