//! Outbound HTTP requests (`wasi:http/outgoing-handler`).
//!
//! The node lets a worker reach only the hosts under `[outbound] allow` in
//! its `verge.toml`, and at most 50 requests per incoming request unless
//! `[limits] subrequests` says otherwise.

use std::fmt;

use bytes::Bytes;
use wstd::http::{Client, ErrorCode};

use crate::{Error, Response};

/// Why an outbound request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The host is not under `[outbound] allow` in `verge.toml`.
    Denied {
        /// The host the guest asked for.
        host: String,
    },
    /// The host resolves to an address the node keeps workers from
    /// (loopback, private, link-local, other special-purpose ranges) unless
    /// its operator allows that network.
    Prohibited {
        /// The host the guest asked for.
        host: String,
    },
    /// The request's subrequest budget is spent.
    LimitReached(String),
    /// The request could not be built (bad URI, forbidden header ...).
    Invalid(String),
    /// Connecting, sending or receiving failed.
    Failed(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Denied { host } => write!(
                f,
                "outbound request to {host} denied: add \"{host}\" to `allow` under [outbound] in verge.toml"
            ),
            FetchError::Prohibited { host } => write!(
                f,
                "outbound request to {host} denied: it resolves to an address the node does not \
                 let workers reach (loopback, private, link-local or special-purpose; the \
                 worker's log has which)"
            ),
            FetchError::LimitReached(why) => f.write_str(why),
            FetchError::Invalid(why) => write!(f, "invalid outbound request: {why}"),
            FetchError::Failed(why) => write!(f, "outbound request failed: {why}"),
        }
    }
}

impl std::error::Error for FetchError {}

impl From<FetchError> for Error {
    /// An upstream that failed is a 502; a request the worker may not make
    /// is the worker's fault: a 500 with the reason in the log.
    fn from(e: FetchError) -> Error {
        match e {
            FetchError::Failed(_) => {
                Error::bad_gateway("an upstream request failed").with_detail(e)
            }
            e => Error::internal(e),
        }
    }
}

/// Sends `request` and reads the whole response.
///
/// ```no_run
/// # async fn demo() -> Result<(), verge_sdk::Error> {
/// let request = http::Request::get("https://api.example.com/v1/items").body(bytes::Bytes::new())?;
/// let response = verge_sdk::fetch(request).await?;
/// # Ok(()) }
/// ```
pub async fn fetch(mut request: http::Request<Bytes>) -> Result<Response, FetchError> {
    // A declared length lets the node frame the body plainly instead of
    // chunking it (which some servers refuse on a GET).
    if !request.headers().contains_key(http::header::CONTENT_LENGTH) {
        let length = http::HeaderValue::from(request.body().len());
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, length);
    }
    let host = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let client = Client::new();
    let response = client.send(request).await.map_err(|e| classify(e, &host))?;
    let (parts, mut body) = response.into_parts();
    let body = body
        .bytes_contents()
        .await
        .map_err(|e| classify(e, &host))?;
    Ok(http::Response::from_parts(parts, body))
}

fn classify(error: wstd::http::Error, host: &str) -> FetchError {
    match error.downcast_ref::<ErrorCode>() {
        Some(ErrorCode::HttpRequestDenied) => FetchError::Denied {
            host: host.to_string(),
        },
        Some(ErrorCode::DestinationIpProhibited) => FetchError::Prohibited {
            host: host.to_string(),
        },
        Some(ErrorCode::InternalError(Some(why))) if why.starts_with("subrequest limit") => {
            FetchError::LimitReached(why.clone())
        }
        Some(ErrorCode::HttpRequestUriInvalid) => FetchError::Invalid(format!("{error:#}")),
        Some(code) => FetchError::Failed(format!("{code:?}")),
        None => FetchError::Failed(format!("{error:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_fix_and_upstream_failures_are_502() {
        let denied = FetchError::Denied {
            host: "api.example.com".into(),
        };
        assert!(
            denied
                .to_string()
                .contains(r#"add "api.example.com" to `allow` under [outbound]"#)
        );
        assert_eq!(Error::from(denied).status(), 500);
        assert_eq!(
            Error::from(FetchError::Failed("refused".into())).status(),
            502
        );
        let budget = classify(
            ErrorCode::InternalError(Some(
                "subrequest limit reached: 50 outbound requests per request".into(),
            ))
            .into(),
            "x",
        );
        assert!(matches!(budget, FetchError::LimitReached(_)));
        assert!(matches!(
            classify(ErrorCode::HttpRequestDenied.into(), "h"),
            FetchError::Denied { .. }
        ));
        assert!(matches!(
            classify(ErrorCode::DestinationIpProhibited.into(), "h"),
            FetchError::Prohibited { .. }
        ));
        assert!(matches!(
            classify(ErrorCode::ConnectionRefused.into(), "h"),
            FetchError::Failed(_)
        ));
    }
}
