//! The tables, created and migrated at connect.

use tokio_postgres::Client;

/// Why the tables could not be brought up to date.
pub(crate) enum MigrateError {
    Postgres(tokio_postgres::Error),
    /// The schema was migrated by a newer node.
    TooNew(String),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> MigrateError {
        MigrateError::Postgres(e)
    }
}

/// Each step runs once, in order; `schema_version` records how far a
/// database has come, so a newer node migrates an older database in place.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE kv_namespaces (
    id   BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE kv_entries (
    ns         BIGINT NOT NULL REFERENCES kv_namespaces (id) ON DELETE CASCADE,
    key        BYTEA NOT NULL,
    generation BIGINT NOT NULL,
    expiration BIGINT,
    metadata   TEXT,
    value      BYTEA NOT NULL,
    PRIMARY KEY (ns, key)
);
CREATE INDEX kv_entries_by_expiration ON kv_entries (expiration) WHERE expiration IS NOT NULL;
CREATE SEQUENCE kv_generation;
",
    "
CREATE TABLE components (
    hash  TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);
CREATE TABLE versions (
    seq        BIGSERIAL PRIMARY KEY,
    worker     TEXT NOT NULL,
    id         TEXT NOT NULL,
    component  TEXT NOT NULL REFERENCES components (hash),
    manifest   TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    author     TEXT NOT NULL,
    UNIQUE (worker, id)
);
CREATE TABLE deployments (
    worker         TEXT PRIMARY KEY,
    stable         TEXT NOT NULL,
    canary         TEXT,
    canary_percent SMALLINT,
    updated_at     BIGINT NOT NULL,
    author         TEXT NOT NULL
);
CREATE TABLE secrets (
    worker TEXT NOT NULL,
    name   TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (worker, name)
);
",
    "
CREATE TABLE changes (
    seq    BIGSERIAL PRIMARY KEY,
    worker TEXT NOT NULL,
    kind   TEXT NOT NULL,
    at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
",
    // KV writes are logged too, so that nodes drop what they cached.
    "
ALTER TABLE changes ALTER COLUMN worker DROP NOT NULL;
ALTER TABLE changes ADD COLUMN namespace TEXT, ADD COLUMN key BYTEA;
CREATE INDEX changes_at ON changes (at);
",
    "
CREATE TABLE cron_runs (
    worker  TEXT NOT NULL,
    cron    TEXT NOT NULL,
    tick    BIGINT NOT NULL,
    node    TEXT NOT NULL,
    status  INTEGER,
    wall_ms BIGINT,
    error   TEXT,
    PRIMARY KEY (worker, cron, tick)
);
",
    // Compiled code, sealed by the node that compiled it, for the others
    // of the same engine; it goes with its component.
    "
CREATE TABLE artifacts (
    component TEXT NOT NULL REFERENCES components (hash) ON DELETE CASCADE,
    engine    TEXT NOT NULL,
    sealed    BYTEA NOT NULL,
    PRIMARY KEY (component, engine)
);
",
];

/// Creates `schema` and brings its tables to the newest version. Nodes
/// starting together serialize on an advisory lock.
pub(crate) async fn migrate(client: &Client, schema: &str) -> Result<(), MigrateError> {
    // `IF NOT EXISTS` on what exists raises a NOTICE each start: only
    // warnings and worse are worth the operator's log.
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning;
             SELECT pg_advisory_lock(hashtext('verge-migrate-{schema}'));
             CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.schema_version (version INTEGER NOT NULL);"
        ))
        .await?;
    let result = run(client, schema).await;
    let unlock = client
        .batch_execute(&format!(
            "SELECT pg_advisory_unlock(hashtext('verge-migrate-{schema}'))"
        ))
        .await
        .map_err(MigrateError::from);
    result.and(unlock)
}

async fn run(client: &Client, schema: &str) -> Result<(), MigrateError> {
    let row = client
        .query_opt(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await?;
    let done = row.map_or(0, |r| r.get::<_, i32>(0) as usize);
    if done > MIGRATIONS.len() {
        return Err(MigrateError::TooNew(format!(
            "schema `{schema}` is at version {done}, newer than this node knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let version = step as i32 + 1;
        client
            .batch_execute(&format!(
                "BEGIN;
                 SET LOCAL search_path = {schema};
                 {sql}
                 DELETE FROM schema_version;
                 INSERT INTO schema_version (version) VALUES ({version});
                 COMMIT;"
            ))
            .await?;
    }
    Ok(())
}
