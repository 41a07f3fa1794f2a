//! Verge KV through the admin API: namespaces, keys and bulk writes, with
//! the semantics and limits guests get.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use verge_kv::{BulkWrite, Expiration, ListOptions, Namespace, PutOptions};

use super::AdminState;
use super::error::{ApiError, ApiJson};

/// Metadata of a value, as JSON text, in requests and responses.
pub const METADATA_HEADER: &str = "verge-kv-metadata";
/// A value's expiration (Unix seconds) in responses.
pub const EXPIRATION_HEADER: &str = "verge-kv-expiration";
/// A value's generation in responses.
pub const GENERATION_HEADER: &str = "verge-kv-generation";

/// One pair of a bulk put, in the format Workers KV's bulk API takes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BulkPair {
    pub key: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// `value` is base64 (for binary values).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base64: bool,
}

impl BulkPair {
    /// The write this pair asks for; the error says what is wrong with it.
    pub fn into_write(self) -> Result<BulkWrite, String> {
        let value = if self.base64 {
            base64::engine::general_purpose::STANDARD
                .decode(&self.value)
                .map_err(|e| format!("`{}`: value is not base64: {e}", self.key))?
        } else {
            self.value.into_bytes()
        };
        Ok(BulkWrite::Put {
            key: self.key.into_bytes(),
            value: Bytes::from(value),
            options: PutOptions {
                expiration: expiration_of(self.expiration_ttl, self.expiration),
                metadata: self.metadata.map(|m| m.to_string()),
                ..PutOptions::default()
            },
        })
    }
}

/// A TTL wins over an absolute expiration, as in Workers KV.
pub fn expiration_of(ttl: Option<u64>, at: Option<u64>) -> Expiration {
    match (ttl, at) {
        (Some(ttl), _) => Expiration::Ttl(ttl),
        (None, Some(at)) => Expiration::At(at),
        (None, None) => Expiration::Never,
    }
}

fn namespace(state: &AdminState, name: &str) -> Namespace {
    let stores = state.node.stores();
    Namespace::new(stores.kv.clone(), name, stores.clock.clone())
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text()))
}

/// `GET /v1/kv/namespaces`.
pub async fn list_namespaces(
    State(state): State<Arc<AdminState>>,
) -> Result<Json<Value>, ApiError> {
    let names = state.node.stores().kv.namespaces().await?;
    Ok(Json(json!({ "namespaces": names })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNamespace {
    name: String,
}

/// `POST /v1/kv/namespaces` with `{"name"}`: 201 if created, 200 if it existed.
pub async fn create_namespace(
    State(state): State<Arc<AdminState>>,
    ApiJson(body): ApiJson<NewNamespace>,
) -> Result<impl IntoResponse, ApiError> {
    verge_kv::check_namespace_name(&body.name)?;
    let created = state.node.stores().kv.create_namespace(&body.name).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "name": body.name, "created": created })),
    ))
}

/// `DELETE /v1/kv/namespaces/{namespace}`: with every key in it.
pub async fn delete_namespace(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.node.stores().kv.delete_namespace(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("namespace `{name}` does not exist"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/kv/namespaces/{namespace}/keys?prefix=&limit=&cursor=`.
pub async fn list_keys(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let page = namespace(&state, &name)
        .list(&ListOptions {
            prefix: q.prefix.into_bytes(),
            limit: q.limit,
            cursor: q.cursor,
        })
        .await?;
    let keys: Vec<Value> = page
        .keys
        .iter()
        .map(|k| {
            json!({
                "name": String::from_utf8_lossy(&k.name),
                "expiration": k.expiration,
                "metadata": k.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
            })
        })
        .collect();
    Ok(Json(json!({
        "keys": keys,
        "cursor": page.cursor,
        "list_complete": page.list_complete,
    })))
}

/// `GET /v1/kv/namespaces/{namespace}/values/{key}`: the value as the body;
/// metadata, expiration and generation in headers.
pub async fn get_value(
    State(state): State<Arc<AdminState>>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some(entry) = namespace(&state, &name).get(key.as_bytes()).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key `{key}` in namespace `{name}`"),
        ));
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(GENERATION_HEADER, HeaderValue::from(entry.generation));
    if let Some(expiration) = entry.expiration {
        headers.insert(EXPIRATION_HEADER, HeaderValue::from(expiration));
    }
    if let Some(metadata) = entry
        .metadata
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
    {
        headers.insert(METADATA_HEADER, metadata);
    }
    Ok((headers, entry.value).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    expiration: Option<u64>,
    expiration_ttl: Option<u64>,
}

/// `PUT /v1/kv/namespaces/{namespace}/values/{key}?expiration=&expiration_ttl=`
/// with the value as the body and metadata in the `verge-kv-metadata` header.
pub async fn put_value(
    State(state): State<Arc<AdminState>>,
    Path((name, key)): Path<(String, String)>,
    q: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    value: Bytes,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let metadata = match headers.get(METADATA_HEADER) {
        None => None,
        Some(m) => Some(
            m.to_str()
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "metadata must be ASCII JSON",
                    )
                })?
                .to_string(),
        ),
    };
    let generation = namespace(&state, &name)
        .put(
            key.as_bytes(),
            value,
            PutOptions {
                expiration: expiration_of(q.expiration_ttl, q.expiration),
                metadata,
                ..PutOptions::default()
            },
        )
        .await?;
    Ok(Json(json!({ "generation": generation })))
}

/// `DELETE /v1/kv/namespaces/{namespace}/values/{key}`.
pub async fn delete_value(
    State(state): State<Arc<AdminState>>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let existed = namespace(&state, &name).delete(key.as_bytes()).await?;
    Ok(Json(json!({ "deleted": existed })))
}

/// `PUT /v1/kv/namespaces/{namespace}/bulk` with up to 10,000 pairs, all
/// validated before any is written.
pub async fn bulk_put(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    ApiJson(pairs): ApiJson<Vec<BulkPair>>,
) -> Result<Json<Value>, ApiError> {
    let writes = pairs
        .into_iter()
        .map(BulkPair::into_write)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?;
    bulk(&state, &name, writes).await
}

/// `POST /v1/kv/namespaces/{namespace}/bulk/delete` with up to 10,000 keys.
pub async fn bulk_delete(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    ApiJson(keys): ApiJson<Vec<String>>,
) -> Result<Json<Value>, ApiError> {
    let writes = keys
        .into_iter()
        .map(|k| BulkWrite::Delete {
            key: k.into_bytes(),
        })
        .collect();
    bulk(&state, &name, writes).await
}

async fn bulk(
    state: &AdminState,
    name: &str,
    writes: Vec<BulkWrite>,
) -> Result<Json<Value>, ApiError> {
    let count = writes.len();
    let outcomes = namespace(state, name).bulk(writes).await?;
    if let Some(e) = outcomes.into_iter().find_map(Result::err) {
        return Err(ApiError::from(e));
    }
    Ok(Json(json!({ "written": count })))
}
