//! Errors of the admin API: `{"error": {"code", "message", "help"}}` with
//! the status that fits.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use verge_api::{ErrorBody, ErrorCode, ErrorDetail};

use crate::node::NodeError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub help: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> ApiError {
        self.help = Some(help.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                help: self.help,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        match e {
            NodeError::Invalid { message, help } => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Invalid, message).help(help)
            }
            NodeError::NotFound(message) => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
            }
            NodeError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
            }
            NodeError::Store(e) => {
                tracing::error!("store error: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StoreUnavailable,
                    e.to_string(),
                )
                .help("the node keeps serving deployed workers; retry when the store is back")
            }
        }
    }
}

impl From<verge_kv::KvError> for ApiError {
    fn from(e: verge_kv::KvError) -> ApiError {
        use verge_kv::KvError as E;
        match e {
            E::NamespaceNotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NamespaceNotFound,
                e.to_string(),
            ),
            E::ConditionFailed => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                ErrorCode::ConditionFailed,
                e.to_string(),
            ),
            E::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                e.to_string(),
            ),
            other => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::Invalid,
                other.to_string(),
            ),
        }
    }
}

/// A JSON body whose problems (wrong content type, bad JSON, a missing or
/// unknown field) are answered as a JSON 400 naming the problem. An empty
/// body reads as `{}`, so every field may be optional.
pub(super) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = bytes::Bytes::from_request(request, state)
            .await
            .map_err(|e| {
                let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::TooLarge
                } else {
                    ErrorCode::Invalid
                };
                ApiError::new(e.status(), code, e.body_text())
            })?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            bytes::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::Invalid,
                format!("bad JSON body: {e}"),
            )
        })
    }
}
