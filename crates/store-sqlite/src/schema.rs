//! Tables and connection settings.

use rusqlite::Connection;

/// Entries keep small values inline; `blobs` holds the rest, so a scan of
/// keys never pages through large values. `blobs` is a rowid table on
/// purpose: in a WITHOUT ROWID table the row is the index entry, and every
/// seek that compares against a spilled row reads the whole row, 1 MiB
/// values included. Keys are BLOBs, which SQLite
/// compares bytewise: list order is byte order. `meta.generation` is the last
/// generation handed out, persisted so a generation is never reused even
/// after the entry holding it is deleted.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS namespaces (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS entries (
    ns         INTEGER NOT NULL,
    key        BLOB NOT NULL,
    generation INTEGER NOT NULL,
    expiration INTEGER,
    metadata   TEXT,
    value      BLOB,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_expiration ON entries (expiration) WHERE expiration IS NOT NULL;
CREATE TABLE IF NOT EXISTS blobs (
    ns    INTEGER NOT NULL,
    key   BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, key)
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('generation', 0);
";

/// Settings every connection shares.
pub(crate) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Readers wait briefly for a checkpoint rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// Prepares the writer's connection: WAL, durable commits, the schema.
pub(crate) fn prepare_writer(conn: &Connection) -> rusqlite::Result<()> {
    configure(conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: every commit is fsynced before it returns, so an acknowledged
    // write survives a crash of the process or the machine.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)
}
