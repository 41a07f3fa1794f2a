//! The admin API: JSON over HTTP on its own address, every `/v1` route
//! behind a bearer token. Health, metrics and the OpenAPI document are open,
//! for load balancers and scrapers; the admin address defaults to loopback.

mod auth;
mod error;
mod kv;
mod observe;
mod secrets;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use verge_api::{ErrorCode, Health, HealthStatus, OPENAPI, WhoAmI};

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

/// Declares routes once, for the router and for [`ROUTES`], which the
/// OpenAPI document must match exactly (a test checks both ways).
macro_rules! routes {
    (
        public { $($pm:ident $pp:literal => $ph:path,)* }
        token { $($m:ident $p:literal => $h:path,)* }
    ) => {
        /// Every route the admin API serves, as (method, path).
        pub const ROUTES: &[(&str, &str)] = &[
            $((stringify!($pm), $pp),)*
            $((stringify!($m), $p),)*
        ];

        fn public_routes() -> Router<Arc<AdminState>> {
            Router::new()$(.route($pp, axum::routing::$pm($ph)))*
        }

        fn token_routes() -> Router<Arc<AdminState>> {
            Router::new()$(.route(
                $p,
                axum::routing::$m($h).layer(DefaultBodyLimit::max(body_limit($p))),
            ))*
        }
    };
}

routes! {
    public {
        get "/healthz" => health,
        get "/metrics" => observe::metrics,
        get "/openapi.json" => openapi,
    }
    token {
        get "/v1/whoami" => whoami,
        put "/v1/components/{hash}" => workers::put_component,
        get "/v1/workers" => workers::list,
        get "/v1/workers/{name}" => workers::show,
        delete "/v1/workers/{name}" => workers::delete,
        get "/v1/workers/{name}/versions" => workers::versions,
        post "/v1/workers/{name}/versions" => workers::deploy,
        post "/v1/workers/{name}/rollback" => workers::rollback,
        get "/v1/workers/{name}/schedules" => workers::schedules,
        post "/v1/workers/{name}/schedules/run" => workers::run_schedule,
        get "/v1/workers/{name}/tail" => observe::tail,
        get "/v1/workers/{name}/secrets" => secrets::list,
        put "/v1/workers/{name}/secrets/{secret}" => secrets::put,
        delete "/v1/workers/{name}/secrets/{secret}" => secrets::delete,
        get "/v1/kv/namespaces" => kv::list_namespaces,
        post "/v1/kv/namespaces" => kv::create_namespace,
        delete "/v1/kv/namespaces/{namespace}" => kv::delete_namespace,
        get "/v1/kv/namespaces/{namespace}/keys" => kv::list_keys,
        get "/v1/kv/namespaces/{namespace}/values/{key}" => kv::get_value,
        put "/v1/kv/namespaces/{namespace}/values/{key}" => kv::put_value,
        delete "/v1/kv/namespaces/{namespace}/values/{key}" => kv::delete_value,
        put "/v1/kv/namespaces/{namespace}/bulk" => kv::bulk_put,
        post "/v1/kv/namespaces/{namespace}/bulk/delete" => kv::bulk_delete,
    }
}

/// The largest body a route reads: room for the largest component, KV
/// value (one byte over, so that KV itself refuses it with its reason) or
/// bulk write, and 1 MiB for the JSON of everything else. A body is read
/// only once the token was checked.
fn body_limit(path: &str) -> usize {
    const MIB: usize = 1024 * 1024;
    if path.starts_with("/v1/components/") {
        verge_runtime::MAX_COMPONENT_SIZE + 1
    } else if path.ends_with("/values/{key}") {
        verge_kv::MAX_VALUE_BYTES + 1
    } else if path.ends_with("/bulk") {
        BULK_BODY_LIMIT
    } else {
        MIB
    }
}

/// The largest bulk write body, as Workers KV's.
pub const BULK_BODY_LIMIT: usize = 100 * 1024 * 1024;

/// The admin API's routes.
pub fn router(state: Arc<AdminState>) -> Router {
    let tokens = Arc::new(Tokens::new(&state.node.config.admin_tokens));
    let v1 = token_routes().route_layer(axum::middleware::from_fn_with_state(
        tokens,
        auth::require_token,
    ));
    public_routes()
        .merge(v1)
        .fallback(not_found)
        .with_state(state)
}

pub(super) fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|axum::extract::Query(q)| q).map_err(|e| {
        ApiError::new(
            http::StatusCode::BAD_REQUEST,
            ErrorCode::Invalid,
            e.body_text(),
        )
    })
}

/// `GET /openapi.json`.
async fn openapi() -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// `GET /healthz`: `ok`, or `degraded` when the store does not answer (the
/// node still serves its deployed workers, so the status stays 200).
async fn health(State(state): State<Arc<AdminState>>) -> Json<Health> {
    let store = state.node.store_health().await;
    Json(Health {
        status: if store.is_ok() {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        },
        // Anyone may ask: the cause stays in the log.
        store: match store {
            Ok(()) => "ok".to_string(),
            Err(why) => {
                tracing::warn!("health check: the store does not answer: {why}");
                "unavailable: the node's log has the cause".to_string()
            }
        },
        workers: state.node.registry.len() as u64,
    })
}

/// `GET /v1/whoami`: the caller's token and the node it reached, so a
/// client can check both before it changes anything.
async fn whoami(
    State(state): State<Arc<AdminState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Json<WhoAmI> {
    let store = match &state.node.config.store {
        crate::config::StoreConfig::Sqlite => "sqlite",
        crate::config::StoreConfig::Postgres { .. } => "postgres",
    };
    Json(WhoAmI {
        token: caller.name,
        read_only: caller.read_only,
        node: state.node.id().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        store: store.to_string(),
        workers: state.node.registry.len() as u64,
    })
}

async fn not_found() -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such admin API route",
    )
    .help("GET /openapi.json lists the routes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_served() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .filter(|k| *k != "parameters")
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }
}
