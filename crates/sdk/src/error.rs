//! Errors a handler returns, and the response each becomes.

use std::fmt;

use bytes::Bytes;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};

use crate::context;

/// A failed request: a status, a machine-readable code and a message for the
/// client. Internal errors keep their detail out of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// For the log only (written to stderr, which is the request's log).
    detail: Option<String>,
}

impl Error {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Error {
        Error {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 412 `precondition_failed`.
    pub fn precondition_failed(message: impl Into<String>) -> Error {
        Error::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        )
    }

    /// 503 `unavailable`: try again later.
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 502 `bad_gateway`: an upstream request failed.
    pub fn bad_gateway(message: impl Into<String>) -> Error {
        Error::new(StatusCode::BAD_GATEWAY, "bad_gateway", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500 `internal`: the detail is not sent to the client.
    pub fn internal(detail: impl fmt::Display) -> Error {
        let mut error = Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        );
        error.detail = Some(detail.to_string());
        error
    }

    /// The HTTP status the error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code, e.g. `not_found`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message shown to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The detail kept for the log, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Adds a detail for the log (and for the response when the node opts
    /// in, as `verge dev` does) without changing what the client is told.
    pub fn with_detail(mut self, detail: impl fmt::Display) -> Error {
        self.detail = Some(detail.to_string());
        self
    }

    /// The JSON response: `{"error": {"code": ..., "message": ...}}`, plus
    /// `request_id` when the node gave one, and `detail` only when the node
    /// opts in. The detail is always written to the request's log.
    pub fn into_response(self) -> http::Response<Bytes> {
        let request_id = context::request_id();
        if let Some(detail) = &self.detail {
            eprintln!("ERROR {} {}: {detail}", self.status.as_u16(), self.code);
        }
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(id) = request_id {
            error["request_id"] = id.into();
        }
        if let Some(detail) = self.detail.filter(|_| context::show_error_detail()) {
            error["detail"] = detail.into();
        }
        let body = serde_json::json!({ "error": error });
        let mut response = http::Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for Error {}

impl From<http::Error> for Error {
    fn from(e: http::Error) -> Error {
        Error::internal(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::internal(e)
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Error {
        Error::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_json_responses() {
        let response = Error::bad_request("title is required").into_response();
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "bad_request", "message": "title is required"}})
        );
    }

    #[test]
    fn error_bodies_name_the_request_id_the_node_gave() {
        let request = http::Request::get("/")
            .header("x-request-id", "abc123")
            .body(Bytes::new())
            .unwrap();
        context::begin(&request);
        let response = Error::internal("boom").into_response();
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["request_id"], "abc123");
        assert_eq!(body["error"]["message"], "internal error");
        assert!(body["error"].get("detail").is_none());
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let response = Error::internal("database password is hunter2").into_response();
        assert_eq!(response.status(), 500);
        assert!(!String::from_utf8_lossy(response.body()).contains("hunter2"));
    }
}
