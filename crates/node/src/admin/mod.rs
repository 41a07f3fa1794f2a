//! The admin API: JSON over HTTP on its own address, every `/v1` route
//! behind a bearer token. Health, metrics and the OpenAPI document are open,
//! for load balancers and scrapers; the admin address defaults to loopback.

mod auth;
mod error;
mod observe;
mod secrets;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

pub use auth::{Caller, Tokens};
pub use error::ApiError;
pub use workers::timestamp;

use crate::node::Node;

/// What the admin handlers share.
pub struct AdminState {
    pub node: Arc<Node>,
    /// Where the data plane listens, for the URLs the API returns.
    pub data_addr: SocketAddr,
}

impl AdminState {
    /// Where a worker answers: `http://NAME.<domain>:<port>`.
    pub fn worker_url(&self, worker: &str) -> String {
        let port = self.data_addr.port();
        let domain = &self.node.config.domain;
        if port == 80 {
            format!("http://{worker}.{domain}")
        } else {
            format!("http://{worker}.{domain}:{port}")
        }
    }
}

/// The admin API's routes.
pub fn router(state: Arc<AdminState>) -> Router {
    let tokens = Arc::new(Tokens::new(&state.node.config.admin_tokens));
    let v1 = Router::new()
        .route(
            "/v1/components/{hash}",
            put(workers::put_component)
                .layer(DefaultBodyLimit::max(verge_runtime::MAX_COMPONENT_SIZE + 1)),
        )
        .route("/v1/workers", get(workers::list))
        .route(
            "/v1/workers/{name}",
            get(workers::show).delete(workers::delete),
        )
        .route(
            "/v1/workers/{name}/versions",
            get(workers::versions).post(workers::deploy),
        )
        .route("/v1/workers/{name}/rollback", post(workers::rollback))
        .route("/v1/workers/{name}/tail", get(observe::tail))
        .route("/v1/workers/{name}/secrets", get(secrets::list))
        .route(
            "/v1/workers/{name}/secrets/{secret}",
            put(secrets::put).delete(secrets::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(observe::metrics))
        .merge(v1)
        .fallback(not_found)
        .with_state(state)
}

/// `GET /healthz`.
async fn health(State(state): State<Arc<AdminState>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "workers": state.node.registry.len(),
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        "not_found",
        "no such admin API route",
    )
    .help("GET /openapi.json lists the routes")
}
