//! Components, versions, deployments and rollbacks.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use bytes::Bytes;
use http::StatusCode;
use verge_api::{
    ComponentStored, Deployed, ErrorCode, NewVersion, Rollback, RolledBack, RunSchedule, Schedule,
    ScheduleRan, Schedules, TrafficShare, VersionList, WorkerList,
};
use verge_deploy::{Deployment, Version, short_id};

use super::AdminState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use crate::node::DeployRequest;
use crate::registry::Live;

/// `PUT /v1/components/{hash}`: the component's bytes as the body.
pub(super) async fn put_component(
    State(state): State<Arc<AdminState>>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let size = body.len();
    let hash = state.node.put_component(&hash, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(ComponentStored {
            hash,
            size: size as u64,
        }),
    ))
}

/// `POST /v1/workers/{name}/versions`: deploy a version.
pub(super) async fn deploy(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(body): ApiJson<NewVersion>,
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
        Json(Deployed {
            version: version_of(&deployed.version, Some(&deployed.deployment)),
            deployment: deployment_of(&deployed.deployment),
            url: state.worker_url(&worker),
            created_namespaces: deployed.created_namespaces,
        }),
    ))
}

/// `GET /v1/workers`.
pub(super) async fn list(State(state): State<Arc<AdminState>>) -> Json<WorkerList> {
    let workers = state
        .node
        .registry
        .all()
        .iter()
        .map(|(name, live)| worker_of(&state, name, live))
        .collect();
    Json(WorkerList { workers })
}

/// `GET /v1/workers/{name}`.
pub(super) async fn show(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
) -> Result<Json<verge_api::Worker>, ApiError> {
    let live = state
        .node
        .registry
        .get(&worker)
        .ok_or_else(|| not_deployed(&worker))?;
    Ok(Json(worker_of(&state, &worker, &live)))
}

/// `DELETE /v1/workers/{name}`.
pub(super) async fn delete(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.node.delete_worker(&worker).await?;
    tracing::info!(worker, "deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/workers/{name}/versions`: newest first.
pub(super) async fn versions(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    let versions = state.node.versions(&worker).await?;
    let live = state.node.registry.get(&worker);
    let deployment = live.as_ref().map(|l| &l.deployment);
    let versions = versions.iter().map(|v| version_of(v, deployment)).collect();
    Ok(Json(VersionList { versions }))
}

/// `POST /v1/workers/{name}/rollback`: to the version named, or the one
/// before the current.
pub(super) async fn rollback(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(body): ApiJson<Rollback>,
) -> Result<Json<RolledBack>, ApiError> {
    let wanted = body.version;
    let (deployment, version) = state
        .node
        .rollback(&worker, wanted.as_deref(), &caller.name)
        .await?;
    tracing::info!(worker, version = short_id(&version.id), "rolled back");
    Ok(Json(RolledBack {
        version: version_of(&version, Some(&deployment)),
        deployment: deployment_of(&deployment),
    }))
}

/// `GET /v1/workers/{name}/schedules`: the cron schedules with their next
/// ticks, and the latest runs.
pub(super) async fn schedules(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
) -> Result<Json<Schedules>, ApiError> {
    let (crons, runs) = state.node.schedules(&worker).await?;
    Ok(Json(Schedules {
        schedules: crons
            .into_iter()
            .map(|(cron, next)| Schedule { cron, next })
            .collect(),
        runs: runs.into_iter().map(run_of).collect(),
    }))
}

/// `POST /v1/workers/{name}/schedules/run`: runs the scheduled handler now.
pub(super) async fn run_schedule(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
    ApiJson(body): ApiJson<RunSchedule>,
) -> Result<Json<ScheduleRan>, ApiError> {
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
    Ok(Json(ScheduleRan { run: run_of(run) }))
}

fn not_deployed(worker: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no worker named `{worker}` is deployed on this node"),
    )
}

fn worker_of(state: &AdminState, name: &str, live: &Live) -> verge_api::Worker {
    verge_api::Worker {
        name: name.to_string(),
        url: state.worker_url(name),
        routes: live.routes.iter().map(ToString::to_string).collect(),
        deployment: deployment_of(&live.deployment),
    }
}

fn deployment_of(d: &Deployment) -> verge_api::Deployment {
    verge_api::Deployment {
        stable: d.stable.clone(),
        canary: d.canary.as_ref().map(|c| TrafficShare {
            version: c.version.clone(),
            percent: c.percent,
        }),
        traffic: d
            .shares()
            .into_iter()
            .map(|(version, percent)| TrafficShare {
                version: version.to_string(),
                percent,
            })
            .collect(),
        updated_at: timestamp(d.updated_at),
        author: d.author.clone(),
    }
}

/// A version, with the share of traffic it takes under `deployment`.
fn version_of(v: &Version, deployment: Option<&Deployment>) -> verge_api::Version {
    let traffic_percent = deployment
        .and_then(|d| d.shares().into_iter().find(|(id, _)| *id == v.id))
        .map_or(0, |(_, p)| p);
    verge_api::Version {
        id: v.id.clone(),
        short_id: short_id(&v.id).to_string(),
        component: v.component.clone(),
        size: v.size,
        created_at: timestamp(v.created_at),
        author: v.author.clone(),
        traffic_percent,
        manifest: v.manifest.clone(),
    }
}

fn run_of(run: verge_deploy::CronRun) -> verge_api::CronRun {
    verge_api::CronRun {
        cron: run.cron,
        tick: run.tick,
        node: run.node,
        status: run.status,
        wall_ms: run.wall_ms,
        error: run.error,
    }
}

/// Milliseconds since the epoch as RFC 3339.
pub fn timestamp(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}
