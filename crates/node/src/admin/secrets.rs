//! Secrets: names are listed, values only ever go in.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use verge_api::{SecretList, SecretValue};

use super::AdminState;
use super::error::{ApiError, ApiJson};

/// `GET /v1/workers/{name}/secrets`: the names, never the values.
pub(super) async fn list(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
) -> Result<Json<SecretList>, ApiError> {
    verge_manifest::check_worker_name(&worker).map_err(|why| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            verge_api::ErrorCode::Invalid,
            format!("invalid worker name {worker:?}: {why}"),
        )
    })?;
    let names = state
        .node
        .stores()
        .secrets
        .secret_names(&worker)
        .await
        .map_err(crate::node::NodeError::from)?;
    Ok(Json(SecretList { secrets: names }))
}

/// `PUT /v1/workers/{name}/secrets/{secret}` with `{"value": ...}`.
pub(super) async fn put(
    State(state): State<Arc<AdminState>>,
    Path((worker, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<SecretValue>,
) -> Result<StatusCode, ApiError> {
    state.node.put_secret(&worker, &name, &body.value).await?;
    // The name is logged, the value never.
    tracing::info!(worker, secret = name, "secret set");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/workers/{name}/secrets/{secret}`.
pub(super) async fn delete(
    State(state): State<Arc<AdminState>>,
    Path((worker, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.node.delete_secret(&worker, &name).await?;
    tracing::info!(worker, secret = name, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}
