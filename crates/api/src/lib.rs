//! The wire contract of a Verge node's admin API: every JSON body a route
//! takes or answers, as serde types the node serialises and the CLI (or any
//! other Rust client) deserialises, and the OpenAPI document.
//!
//! The crate has no server or client dependencies. The document's
//! `components.schemas` are generated from these types and checked by a
//! test, so the document cannot drift from the code: change a type, run
//! `VERGE_BLESS=1 cargo test -p verge-api`, and review the diff of
//! `openapi.json`.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(test)]
mod schema;

/// The OpenAPI 3.0 document of the admin API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Metadata of a KV value, as JSON text, in requests and responses.
pub const METADATA_HEADER: &str = "verge-kv-metadata";
/// A KV value's expiration (Unix seconds) in responses.
pub const EXPIRATION_HEADER: &str = "verge-kv-expiration";
/// A KV value's generation in responses.
pub const GENERATION_HEADER: &str = "verge-kv-generation";

/// Every error the admin API answers: `{"error": {...}}` with the status
/// that fits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, and what to do about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ErrorDetail {
    /// What kind of error it is; match on this, not on the message.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// How to fix it, when the node can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// The kinds of error the admin API answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or asks for something not allowed (400).
    Invalid,
    /// No token, or not one of the node's (401).
    Unauthorized,
    /// A read-only token asked for a change (403).
    Forbidden,
    /// No such route, worker, version or secret (404).
    NotFound,
    /// No such KV namespace (404).
    NamespaceNotFound,
    /// No such key in a KV namespace that exists (404).
    KeyNotFound,
    /// The change conflicts with the node's state (409).
    Conflict,
    /// A conditional KV write found the value changed (412).
    ConditionFailed,
    /// The body is larger than the route takes (413).
    TooLarge,
    /// The store does not answer; deployed workers are still served (503).
    StoreUnavailable,
    /// A code this client does not know (from a newer node).
    #[serde(other)]
    #[cfg_attr(test, schemars(skip))]
    Unknown,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Health {
    /// Whether the store answers.
    pub status: HealthStatus,
    /// `ok`, or that it does not answer (the cause is in the node's log).
    pub store: String,
    /// Workers deployed on this node.
    pub workers: u64,
}

/// Whether the node's store answers. A degraded node still serves its
/// deployed workers, so `/healthz` stays 200.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// The store answers.
    Ok,
    /// The store does not answer.
    Degraded,
}

/// `GET /v1/whoami`: who the token is, and which node answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct WhoAmI {
    /// The token's name in the node config.
    pub token: String,
    /// Whether the token may only read.
    pub read_only: bool,
    /// The node's id (host:pid).
    pub node: String,
    /// The node's Verge version.
    pub version: String,
    /// `sqlite` or `postgres`.
    pub store: String,
    /// Workers deployed on this node.
    pub workers: u64,
}

/// `PUT /v1/components/{hash}`: the component stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ComponentStored {
    /// SHA-256 of the component, hex.
    pub hash: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A deployed worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Worker {
    /// The worker's name.
    pub name: String,
    /// Where it answers: `http://NAME.<domain>[:port]`.
    pub url: String,
    /// The manifest's `routes`, as patterns.
    pub routes: Vec<String>,
    /// Which versions take its traffic.
    pub deployment: Deployment,
}

/// `GET /v1/workers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct WorkerList {
    /// Every worker the node serves.
    pub workers: Vec<Worker>,
}

/// Which versions of a worker take its traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Deployment {
    /// Version id taking the traffic the canary does not.
    pub stable: String,
    /// A version taking a share of the traffic, during a rollout.
    pub canary: Option<TrafficShare>,
    /// Every version taking traffic, with its share; the shares add up to 100.
    pub traffic: Vec<TrafficShare>,
    /// When the deployment last changed, RFC 3339.
    pub updated_at: String,
    /// The token that changed it.
    pub author: String,
}

/// A version and the percentage of requests it takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct TrafficShare {
    /// A version id.
    pub version: String,
    /// Its share of requests, 0-100.
    pub percent: u8,
}

/// A version of a worker: a component with a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Version {
    /// SHA-256 over the component's hash and the manifest.
    pub id: String,
    /// The id's first 12 characters, as the CLI shows it.
    pub short_id: String,
    /// The component's hash.
    pub component: String,
    /// The component's size in bytes.
    pub size: u64,
    /// When it was first deployed, RFC 3339.
    pub created_at: String,
    /// The token that deployed it.
    pub author: String,
    /// The share of the worker's traffic it takes now.
    pub traffic_percent: u8,
    /// The manifest (verge.toml) it was deployed with.
    pub manifest: String,
}

/// `GET /v1/workers/{name}/versions`: newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct VersionList {
    /// The versions, newest first.
    pub versions: Vec<Version>,
}

/// `POST /v1/workers/{name}/versions`: deploy a component stored with
/// `PUT /v1/components/{hash}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    /// The component's hash.
    pub component: String,
    /// The manifest (verge.toml) as text.
    pub manifest: String,
    /// Roll out gradually: the share of traffic the new version takes
    /// (1-100); 100 or none takes it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<u8>,
}

/// The answer to a deploy: 201 for a new version, 200 when the same
/// component and manifest were deployed before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Deployed {
    /// The version deployed.
    pub version: Version,
    /// The worker's deployment after the deploy.
    pub deployment: Deployment,
    /// Where the worker answers.
    pub url: String,
    /// KV namespaces the manifest binds that the deploy created.
    pub created_namespaces: Vec<String>,
}

/// `POST /v1/workers/{name}/rollback`: to the version named, or the one
/// before the current.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// A version id or its prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The answer to a rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RolledBack {
    /// The version now taking all traffic.
    pub version: Version,
    /// The worker's deployment after the rollback.
    pub deployment: Deployment,
}

/// `GET /v1/workers/{name}/schedules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Schedules {
    /// The schedules with their next ticks.
    pub schedules: Vec<Schedule>,
    /// The latest runs, newest first.
    pub runs: Vec<CronRun>,
}

/// One cron schedule of a worker's `[triggers]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Schedule {
    /// The schedule, as written in `[triggers] crons`.
    pub cron: String,
    /// Its next tick, Unix ms.
    pub next: Option<u64>,
}

/// One run of a cron trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct CronRun {
    /// The schedule, as written in `[triggers] crons`.
    pub cron: String,
    /// The tick it ran for, Unix ms.
    pub tick: u64,
    /// The node that ran it (host:pid).
    pub node: String,
    /// The handler's status; none while it runs (or if its node died).
    pub status: Option<u16>,
    /// How long it ran.
    pub wall_ms: Option<u64>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// `POST /v1/workers/{name}/schedules/run`: run a schedule now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RunSchedule {
    /// Which schedule, when the worker has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

/// The answer to running a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ScheduleRan {
    /// The run that just finished.
    pub run: CronRun,
}

/// `GET /v1/workers/{name}/secrets`: the names, never the values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct SecretList {
    /// The secret names.
    pub secrets: Vec<String>,
}

/// `PUT /v1/workers/{name}/secrets/{secret}`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// The secret's value; never sent back.
    pub value: String,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(..)")
    }
}

/// `GET /v1/kv/namespaces`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct NamespaceList {
    /// The namespace names.
    pub namespaces: Vec<String>,
}

/// `POST /v1/kv/namespaces`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NewNamespace {
    /// The namespace's name.
    #[cfg_attr(test, schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$")))]
    pub name: String,
}

/// The answer to creating a namespace: 201 if created, 200 if it existed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct NamespaceCreated {
    /// The namespace's name.
    pub name: String,
    /// Whether this call created it (false: it existed).
    pub created: bool,
}

/// `GET /v1/kv/namespaces/{namespace}/keys`: a page of keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct KeyPage {
    /// The keys of this page, in order.
    pub keys: Vec<KeyInfo>,
    /// Where the next page starts, unless the list is complete.
    pub cursor: Option<String>,
    /// Whether this page is the last.
    pub list_complete: bool,
}

/// A key in a listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct KeyInfo {
    /// The key (bytes that are not UTF-8 show as U+FFFD).
    pub name: String,
    /// When it expires, Unix seconds.
    pub expiration: Option<u64>,
    /// The metadata written with it.
    pub metadata: Option<Value>,
}

/// `PUT /v1/kv/namespaces/{namespace}/values/{key}`: the value written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ValueWritten {
    /// The value's generation, for conditional writes.
    pub generation: u64,
}

/// `DELETE /v1/kv/namespaces/{namespace}/values/{key}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ValueDeleted {
    /// Whether there was a value to delete.
    pub deleted: bool,
}

/// One pair of `PUT /v1/kv/namespaces/{namespace}/bulk`, in the format
/// Workers KV's bulk API takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkPair {
    /// The key.
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub key: String,
    /// The value: UTF-8 text, or base64 with `base64: true`.
    pub value: String,
    /// When it expires, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    /// Seconds from now until it expires; wins over `expiration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub expiration_ttl: Option<u64>,
    /// JSON stored with the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// `value` is base64 (for binary values).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base64: bool,
}

/// The answer to a bulk put or delete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BulkWritten {
    /// Pairs written or keys deleted.
    pub written: u64,
}

/// The tail's first event (`event: scope`): whose requests it shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(tag = "nodes", rename_all = "snake_case")]
pub enum TailScope {
    /// A node alone on its store.
    One,
    /// Every node sharing the store.
    All,
    /// This node's requests only, though others share the store.
    This {
        /// Why the others' are not shown.
        why: String,
    },
}

/// One request, as the tail shows it (`event: request`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct TailEvent {
    /// When it finished, RFC 3339.
    pub time: String,
    /// Its request id.
    pub id: String,
    /// The node that served it.
    pub node: String,
    /// The worker that served it.
    pub worker: String,
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The response status.
    pub status: u16,
    /// CPU time the guest used, in ms.
    pub cpu_ms: f64,
    /// Wall time from the request to the end of the response, in ms.
    pub wall_ms: f64,
    /// KV calls the guest made, and the time they took.
    pub kv_ops: u32,
    /// Time spent in KV calls, in ms.
    pub kv_ms: f64,
    /// What the guest wrote to stdout and stderr.
    pub logs: Vec<TailLog>,
    /// Bytes of log output left out (past the per-request cap, or to fit a
    /// relayed event in a batch).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub logs_dropped: u64,
    /// Why the node ended the request, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination: Option<TailTermination>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A line a guest wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct TailLog {
    /// Where the guest wrote it.
    pub stream: LogStream,
    /// The line, without its newline.
    pub text: String,
}

/// Where a guest wrote a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Why the node ended a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct TailTermination {
    /// `cpu`, `wall`, `memory`, `panic` ...
    pub reason: String,
    /// What the node says happened.
    pub message: String,
}

/// `event: dropped`: the client fell too far behind and this many
/// requests were skipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct TailDropped {
    /// Requests skipped.
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/admin_json: without serde_json's `float_roundtrip`,
    /// a long number in KV metadata read and written back changed its last
    /// digit.
    #[test]
    fn numbers_in_metadata_survive_a_round_trip() {
        let body = r#"[{"key":"k","value":"v","metadata":{"n":33333333333333333333333333333333333333333333333333333333333333333333335}}]"#;
        let pairs: Vec<BulkPair> = serde_json::from_str(body).unwrap();
        let again: Vec<BulkPair> =
            serde_json::from_str(&serde_json::to_string(&pairs).unwrap()).unwrap();
        assert_eq!(again, pairs);
    }
}
