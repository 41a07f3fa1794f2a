//! Checks URLs from the edge: `POST /check` `{"urls": [...]}` fetches each
//! one and answers with its status and how long it took, or why it failed
//! (a host not under `[outbound] allow`, the subrequest limit, a refused
//! connection ...).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use verge_sdk::{
    Bytes, Env, Error, FetchError, Params, Request, RequestExt, Response, Router, json,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    urls: Vec<String>,
}

#[derive(Serialize)]
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
    let mut results = Vec::with_capacity(check.urls.len());
    for url in check.urls {
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
    json(200, &serde_json::json!({ "results": results }))
}

#[verge_sdk::handler]
async fn fetch(req: Request, env: Env) -> Response {
    Router::new().post("/check", check).handle(req, env).await
}
