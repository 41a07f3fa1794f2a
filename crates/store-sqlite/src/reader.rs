//! Reads, on the caller's thread, from a pool of read-only connections.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use verge_kv::{Entry, KvError, ListKey, ListPage, prefix_end};

use crate::{schema, unavailable};

/// Idle read connections; one is opened when none is free.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Connections kept idle at most.
const MAX_IDLE: usize = 16;

impl Readers {
    pub(crate) fn new(path: &Path) -> Readers {
        Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&self.path, flags).map_err(unavailable)?;
                schema::configure(&conn).map_err(unavailable)?;
                conn
            }
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        result
    }
}

pub(crate) fn namespace_id(conn: &Connection, name: &str) -> Result<i64, KvError> {
    conn.prepare_cached("SELECT id FROM namespaces WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(unavailable)?
        .ok_or_else(|| KvError::NamespaceNotFound(name.to_string()))
}

pub(crate) fn namespaces(conn: &Connection) -> Result<Vec<String>, KvError> {
    let mut statement = conn
        .prepare_cached("SELECT name FROM namespaces ORDER BY name")
        .map_err(unavailable)?;
    let rows = statement.query_map([], |r| r.get(0)).map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}

/// The live entry of one key in namespace `ns`. A value kept apart is read
/// by its own primary-key lookup, never through a join the planner could
/// turn into a scan of every large value.
pub(crate) fn get_one(
    conn: &Connection,
    ns: i64,
    key: &[u8],
    now: u64,
) -> Result<Option<Entry>, KvError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT value, metadata, expiration, generation FROM entries
             WHERE ns = ?1 AND key = ?2 AND (expiration IS NULL OR expiration > ?3)",
        )
        .map_err(unavailable)?;
    let row = statement
        .query_row(params![ns, key, now as i64], |r| {
            Ok((
                r.get::<_, Option<Vec<u8>>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()
        .map_err(unavailable)?;
    let Some((inline, metadata, expiration, generation)) = row else {
        return Ok(None);
    };
    let value = match inline {
        Some(value) => value,
        None => conn
            .prepare_cached("SELECT value FROM blobs WHERE ns = ?1 AND key = ?2")
            .and_then(|mut s| s.query_row(params![ns, key], |r| r.get::<_, Vec<u8>>(0)))
            .map_err(unavailable)?,
    };
    Ok(Some(Entry {
        value: Bytes::from(value),
        metadata,
        expiration: expiration.map(|e| e as u64),
        generation: generation as u64,
    }))
}

pub(crate) fn get(
    conn: &Connection,
    namespace: &str,
    keys: &[Vec<u8>],
    now: u64,
) -> Result<Vec<Option<Entry>>, KvError> {
    let ns = namespace_id(conn, namespace)?;
    keys.iter().map(|key| get_one(conn, ns, key, now)).collect()
}

pub(crate) fn list(
    conn: &Connection,
    namespace: &str,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: u32,
    now: u64,
) -> Result<ListPage, KvError> {
    let ns = namespace_id(conn, namespace)?;
    let end = prefix_end(prefix);
    let mut statement = conn
        .prepare_cached(
            "SELECT key, expiration, metadata FROM entries
             WHERE ns = ?1 AND key >= ?2 AND (?3 IS NULL OR key > ?3) AND (?4 IS NULL OR key < ?4)
               AND (expiration IS NULL OR expiration > ?5)
             ORDER BY key LIMIT ?6",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map(
            params![ns, prefix, after, end, now as i64, i64::from(limit) + 1],
            |r| {
                Ok(ListKey {
                    name: r.get(0)?,
                    expiration: r.get::<_, Option<i64>>(1)?.map(|e| e as u64),
                    metadata: r.get(2)?,
                })
            },
        )
        .map_err(unavailable)?;
    let keys: Vec<ListKey> = rows.collect::<Result<_, _>>().map_err(unavailable)?;
    Ok(ListPage::from_fetched(keys, limit))
}
