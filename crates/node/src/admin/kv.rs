//! Verge KV through the admin API: namespaces, keys and bulk writes, with
//! the semantics and limits guests get.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use verge_api::{
    BulkPair, BulkWritten, EXPIRATION_HEADER, ErrorCode, GENERATION_HEADER, KeyPage,
    METADATA_HEADER, NamespaceCreated, NamespaceList, NewNamespace, ValueDeleted, ValueWritten,
};
use verge_kv::{BulkWrite, Expiration, ListOptions, Namespace, PutOptions};

use super::AdminState;
use super::error::{ApiError, ApiJson};

fn namespace(state: &AdminState, name: &str) -> Namespace {
    let stores = state.node.stores();
    Namespace::new(stores.kv.clone(), name, stores.clock.clone())
}

/// `GET /v1/kv/namespaces`.
pub(super) async fn list_namespaces(
    State(state): State<Arc<AdminState>>,
) -> Result<Json<NamespaceList>, ApiError> {
    let namespaces = state.node.stores().kv.namespaces().await?;
    Ok(Json(NamespaceList { namespaces }))
}

/// `POST /v1/kv/namespaces` with `{"name"}`: 201 if created, 200 if it existed.
pub(super) async fn create_namespace(
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
        Json(NamespaceCreated {
            name: body.name,
            created,
        }),
    ))
}

/// `DELETE /v1/kv/namespaces/{namespace}`: with every key in it.
pub(super) async fn delete_namespace(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.node.stores().kv.delete_namespace(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NamespaceNotFound,
            format!("namespace `{name}` does not exist"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/kv/namespaces/{namespace}/keys?prefix=&limit=&cursor=`.
pub(super) async fn list_keys(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<KeyPage>, ApiError> {
    let q = super::query(q)?;
    let page = namespace(&state, &name)
        .list(&ListOptions {
            prefix: q.prefix.into_bytes(),
            limit: q.limit,
            cursor: q.cursor,
        })
        .await?;
    Ok(Json(crate::key_page(page)))
}

/// `GET /v1/kv/namespaces/{namespace}/values/{key}`: the value as the body;
/// metadata, expiration and generation in headers.
pub(super) async fn get_value(
    State(state): State<Arc<AdminState>>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some(entry) = namespace(&state, &name).get(key.as_bytes()).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::KeyNotFound,
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
pub(super) struct PutQuery {
    expiration: Option<u64>,
    expiration_ttl: Option<u64>,
}

/// `PUT /v1/kv/namespaces/{namespace}/values/{key}?expiration=&expiration_ttl=`
/// with the value as the body and metadata in the `verge-kv-metadata` header.
pub(super) async fn put_value(
    State(state): State<Arc<AdminState>>,
    Path((name, key)): Path<(String, String)>,
    q: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    value: Bytes,
) -> Result<Json<ValueWritten>, ApiError> {
    let q = super::query(q)?;
    let metadata = match headers.get(METADATA_HEADER) {
        None => None,
        Some(m) => Some(
            m.to_str()
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::Invalid,
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
                expiration: Expiration::from_ttl_or_at(q.expiration_ttl, q.expiration),
                metadata,
                ..PutOptions::default()
            },
        )
        .await?;
    Ok(Json(ValueWritten { generation }))
}

/// `DELETE /v1/kv/namespaces/{namespace}/values/{key}`.
pub(super) async fn delete_value(
    State(state): State<Arc<AdminState>>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<ValueDeleted>, ApiError> {
    let existed = namespace(&state, &name).delete(key.as_bytes()).await?;
    Ok(Json(ValueDeleted { deleted: existed }))
}

/// `PUT /v1/kv/namespaces/{namespace}/bulk` with up to 10,000 pairs, all
/// validated before any is written.
pub(super) async fn bulk_put(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    ApiJson(pairs): ApiJson<Vec<BulkPair>>,
) -> Result<Json<BulkWritten>, ApiError> {
    let writes = pairs
        .into_iter()
        .map(crate::bulk_write)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Invalid, e))?;
    bulk(&state, &name, writes).await
}

/// `POST /v1/kv/namespaces/{namespace}/bulk/delete` with up to 10,000 keys.
pub(super) async fn bulk_delete(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    ApiJson(keys): ApiJson<Vec<String>>,
) -> Result<Json<BulkWritten>, ApiError> {
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
) -> Result<Json<BulkWritten>, ApiError> {
    let count = writes.len();
    let outcomes = namespace(state, name).bulk(writes).await?;
    if let Some(e) = outcomes.into_iter().find_map(Result::err) {
        return Err(ApiError::from(e));
    }
    Ok(Json(BulkWritten {
        written: count as u64,
    }))
}
