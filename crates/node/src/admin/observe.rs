//! Metrics and the live tail.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use http::{StatusCode, header};
use tokio::sync::broadcast::error::RecvError;
use verge_api::{ErrorCode, TailDropped};

use super::AdminState;
use super::error::ApiError;
use crate::relay::TailScope;
use crate::tail::TailFilter;

/// `GET /metrics`: Prometheus text exposition.
pub(super) async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let node = &state.node;
    let text = node.metrics.encode(
        node.runtime.instances_busy(),
        &node.runtime.instances_busy_by_worker(),
        node.runtime.instances_idle(),
        node.runtime.memory_used(),
        node.registry.len(),
        node.stores().kv_cache.as_deref(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// `GET /v1/workers/{name}/tail?status=&method=&path=&search=`: first
/// `event: scope` with `{"nodes": "one"}` (a node alone on its store),
/// `{"nodes": "all"}` (every node sharing the store) or
/// `{"nodes": "this", "why": ...}` (this node's, though others share the
/// store); then a server-sent event per request
/// finished after the client connected (`event: request`), and
/// `event: dropped` with `{"dropped": N}` when the client fell too far
/// behind and N requests were skipped.
pub(super) async fn tail(
    State(state): State<Arc<AdminState>>,
    Path(worker): Path<String>,
    filter: Result<Query<TailFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = super::query(filter)?;
    filter
        .validate()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Invalid, e))?;
    if state.node.registry.get(&worker).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no worker named `{worker}` is deployed on this node"),
        ));
    }
    let receiver = state.node.tail.subscribe(&worker);
    let watch = state.node.watch_tail(&worker);
    let scope = match &watch.scope {
        TailScope::OnlyNode => verge_api::TailScope::One,
        TailScope::AllNodes => verge_api::TailScope::All,
        TailScope::ThisNode(why) => verge_api::TailScope::This {
            why: why.to_string(),
        },
    };
    let first = futures_util::stream::once(async move { Ok(sse("scope", &scope)) });
    // The watch lives as long as the stream, which ends with the client.
    let stream = futures_util::stream::unfold(
        (receiver, filter, watch),
        |(mut receiver, filter, watch)| async move {
            loop {
                let event = match receiver.recv().await {
                    Ok(event) if filter.matches(&event) => sse("request", &*event),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(dropped)) => sse("dropped", &TailDropped { dropped }),
                    // The worker's channel closes only with the node.
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (receiver, filter, watch)));
            }
        },
    );
    let stream = futures_util::StreamExt::chain(first, stream);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A server-sent event named `name` with `data` as JSON.
fn sse(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
}
