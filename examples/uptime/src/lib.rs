//! Checks URLs from the edge: `POST /check` `{"urls": [...]}` fetches each
//! one and answers with its status and how long it took, or why it failed
//! (a host not under `[outbound] allow`, the subrequest limit, a refused
//! connection ...).
//!
//! It also checks on a schedule (`[triggers] crons` in verge.toml): `PUT
//! /targets` `{"urls": [...]}` keeps the list in KV, each tick checks it, and
//! `GET /latest` answers with the last tick's results.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use verge_sdk::{
    Bytes, Env, Error, FetchError, Params, Request, RequestExt, Response, Router, ScheduledEvent,
    json,
};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    urls: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Outcome {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    ms: f64,
}

async fn probe(url: &str) -> Result<u16, FetchError> {
    let request = verge_sdk::http::Request::get(url)
        .header("user-agent", "verge-uptime")
        .body(Bytes::new())
        .map_err(|e| FetchError::Invalid(e.to_string()))?;
    Ok(verge_sdk::fetch(request).await?.status().as_u16())
}

async fn check(req: Request, _: Params, _env: Env) -> Result<Response, Error> {
    let check: Check = req.json()?;
    let results = probe_all(check.urls).await;
    json(200, &serde_json::json!({ "results": results }))
}

async fn probe_all(urls: Vec<String>) -> Vec<Outcome> {
    let mut results = Vec::with_capacity(urls.len());
    for url in urls {
        let started = Instant::now();
        let outcome = probe(&url).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Err(e) = &outcome {
            verge_sdk::warn!("{url}: {e}");
        }
        results.push(Outcome {
            url,
            status: outcome.as_ref().ok().copied(),
            error: outcome.err().map(|e| e.to_string()),
            ms,
        });
    }
    results
}

/// The KV key of the scheduled check's URLs, and of its last results.
const TARGETS: &str = "targets";
const LATEST: &str = "latest";

#[derive(Serialize, Deserialize)]
struct Latest {
    /// The tick, Unix ms.
    checked_at: u64,
    results: Vec<Outcome>,
}

/// `PUT /targets`: the URLs each scheduled tick checks.
async fn set_targets(req: Request, _: Params, env: Env) -> Result<Response, Error> {
    let targets: Check = req.json()?;
    env.kv("UPTIME")?.put_json(TARGETS, &targets).execute()?;
    json(200, &serde_json::json!({ "urls": targets.urls }))
}

/// `GET /latest`: what the last tick found.
async fn latest(_: Request, _: Params, env: Env) -> Result<Response, Error> {
    let latest: Latest = env
        .kv("UPTIME")?
        .get(LATEST)
        .json()?
        .ok_or_else(|| Error::not_found("no scheduled check has run yet"))?;
    json(200, &latest)
}

/// A cron tick: checks the targets and keeps the results.
async fn scheduled(event: ScheduledEvent, env: Env) -> Result<(), Error> {
    let kv = env.kv("UPTIME")?;
    let Some(targets) = kv.get(TARGETS).json::<Check>()? else {
        verge_sdk::info!("no targets yet: PUT /targets {{\"urls\": [...]}}");
        return Ok(());
    };
    let results = probe_all(targets.urls).await;
    let down = results.iter().filter(|r| r.status.is_none_or(|s| s >= 500)).count();
    verge_sdk::info!("checked {} URLs at {}: {down} down", results.len(), event.scheduled_time);
    let latest = Latest {
        checked_at: event.scheduled_time,
        results,
    };
    kv.put_json(LATEST, &latest).execute()?;
    Ok(())
}

#[verge_sdk::handler]
async fn fetch(req: Request, env: Env) -> Response {
    Router::new()
        .post("/check", check)
        .put("/targets", set_targets)
        .get("/latest", latest)
        .scheduled(scheduled)
        .handle(req, env)
        .await
}
