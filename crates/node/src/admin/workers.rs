//! Components, versions, deployments and rollbacks.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use verge_deploy::{Deployment, Version, short_id};

use super::AdminState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use crate::node::DeployRequest;
use crate::registry::Live;

/// `PUT /v1/components/{hash}`: the component's bytes as the body.
pub async fn put_component(
    State(state): State<Arc<AdminState>>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let size = body.len();
    let hash = state.node.put_component(&hash, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "hash": hash, "size": size })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    component: String,
    manifest: String,
    percentage: Option<u8>,
}

/// `POST /v1/workers/{name}/versions`: deploy a version.
pub async fn deploy(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(body): ApiJson<DeployBody>,
) -> Result<impl IntoResponse, ApiError> {
    let deployed = state
        .node
        .deploy(DeployRequest {
            worker: worker.clone(),
            component: body.component,
            manifest: body.manifest,
            percentage: body.percentage,
            author: caller.name,
        })
        .await?;
    tracing::info!(worker, version = short_id(&deployed.version.id), "deployed");
    let status = if deployed.new_version {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "version": version_json(&deployed.version, Some(&deployed.deployment)),
            "deployment": deployment_json(&deployed.deployment),
            "url": state.worker_url(&worker),
            "created_namespaces": deployed.created_namespaces,
        })),
    ))
}

/// `GET /v1/workers`.
pub async fn list(State(state): State<Arc<AdminState>>) -> Json<Value> {
    let workers: Vec<Value> = state
        .node
        .registry
        .all()
        .iter()
        .map(|(name, live)| worker_json(&state, name, live))
        .collect();
    Json(json!({ "workers": workers }))
}

/// `GET /v1/workers/{name}`.
pub async fn show(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let live = state
        .node
        .registry
        .get(&worker)
        .ok_or_else(|| not_deployed(&worker))?;
    Ok(Json(worker_json(&state, &worker, &live)))
}

/// `DELETE /v1/workers/{name}`.
pub async fn delete(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.node.delete_worker(&worker).await?;
    tracing::info!(worker, "deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/workers/{name}/versions`: newest first.
pub async fn versions(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let versions = state.node.versions(&worker).await?;
    let live = state.node.registry.get(&worker);
    let deployment = live.as_ref().map(|l| &l.deployment);
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| version_json(v, deployment))
        .collect();
    Ok(Json(json!({ "versions": versions })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    version: Option<String>,
}

/// `POST /v1/workers/{name}/rollback`: to the version named, or the one
/// before the current.
pub async fn rollback(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(body): ApiJson<RollbackBody>,
) -> Result<Json<Value>, ApiError> {
    let wanted = body.version;
    let (deployment, version) = state
        .node
        .rollback(&worker, wanted.as_deref(), &caller.name)
        .await?;
    tracing::info!(worker, version = short_id(&version.id), "rolled back");
    Ok(Json(json!({
        "version": version_json(&version, Some(&deployment)),
        "deployment": deployment_json(&deployment),
    })))
}

/// `GET /v1/workers/{name}/schedules`: the cron schedules with their next
/// ticks, and the latest runs.
pub async fn schedules(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (crons, runs) = state.node.schedules(&worker).await?;
    let schedules: Vec<Value> = crons
        .into_iter()
        .map(|(cron, next)| json!({ "cron": cron, "next": next }))
        .collect();
    Ok(Json(json!({ "schedules": schedules, "runs": runs })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    #[serde(default)]
    cron: Option<String>,
}

/// `POST /v1/workers/{name}/schedules/run`: runs the scheduled handler now.
pub async fn run_schedule(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<Json<Value>, ApiError> {
    let run = state
        .node
        .run_schedule_now(&worker, body.cron.as_deref())
        .await?;
    tracing::info!(
        worker,
        cron = run.cron,
        status = run.status,
        "ran a schedule by hand"
    );
    Ok(Json(json!({ "run": run })))
}

fn not_deployed(worker: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no worker named `{worker}` is deployed on this node"),
    )
}

fn worker_json(state: &AdminState, name: &str, live: &Live) -> Value {
    json!({
        "name": name,
        "url": state.worker_url(name),
        "routes": live.routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "deployment": deployment_json(&live.deployment),
    })
}

fn deployment_json(d: &Deployment) -> Value {
    let traffic: Vec<Value> = d
        .shares()
        .into_iter()
        .map(|(version, percent)| json!({ "version": version, "percent": percent }))
        .collect();
    json!({
        "stable": d.stable,
        "canary": d.canary.as_ref().map(|c| json!({ "version": c.version, "percent": c.percent })),
        "traffic": traffic,
        "updated_at": timestamp(d.updated_at),
        "author": d.author,
    })
}

/// A version, with the share of traffic it takes under `deployment`.
fn version_json(v: &Version, deployment: Option<&Deployment>) -> Value {
    let percent = deployment
        .and_then(|d| d.shares().into_iter().find(|(id, _)| *id == v.id))
        .map_or(0, |(_, p)| p);
    json!({
        "id": v.id,
        "short_id": short_id(&v.id),
        "component": v.component,
        "size": v.size,
        "created_at": timestamp(v.created_at),
        "author": v.author,
        "traffic_percent": percent,
        "manifest": v.manifest,
    })
}

/// Milliseconds since the epoch as RFC 3339.
pub fn timestamp(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}
