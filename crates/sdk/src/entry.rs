//! The glue `#[verge_sdk::handler]` expands to: read the request, run the
//! handler on wstd's executor, send whatever it returns as the response.

use std::future::Future;

use bytes::Bytes;
use http::header::{self, HeaderName};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

use crate::{Env, Error, Request, Response, context};

/// What a handler may return: a response, or a result whose error becomes
/// one.
pub trait IntoResponse {
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl<E: Into<Error>> IntoResponse for Result<Response, E> {
    fn into_response(self) -> Response {
        self.unwrap_or_else(|e| e.into().into_response())
    }
}

/// Hop-by-hop headers that WASI HTTP refuses in a response; a handler that
/// sets one would otherwise fail the whole response.
const HOP_BY_HOP: [HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

pub fn serve<F, Fut>(request: IncomingRequest, out: ResponseOutparam, handler: F)
where
    F: FnOnce(Request, Env) -> Fut,
    Fut: Future,
    Fut::Output: IntoResponse,
{
    wstd::runtime::block_on(async move {
        let mut head = false;
        let response = match read(request).await {
            Ok(request) => {
                context::begin(&request);
                head = request.method() == http::Method::HEAD;
                handler(request, Env::new()).await.into_response()
            }
            Err(e) => e.into_response(),
        };
        let (mut parts, body) = response.into_parts();
        for name in &HOP_BY_HOP {
            parts.headers.remove(name);
        }
        parts.headers.remove("keep-alive");
        // The body is whole: declare its length rather than chunk it. A
        // HEAD response has no body but describes the GET's, so it is left
        // as the handler made it.
        if !head && !parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        }
        let response = http::Response::from_parts(parts, wstd::http::Body::from(body));
        // A client that went away mid-body is not the worker's failure.
        let _ = wstd::http::server::Responder::new(out)
            .respond(response)
            .await;
    })
}

async fn read(incoming: IncomingRequest) -> Result<Request, Error> {
    let request = wstd::http::request::try_from_incoming(incoming)
        .map_err(|e| Error::bad_request(format!("malformed request: {e:#}")))?;
    let (parts, mut body) = request.into_parts();
    let body: Bytes = body
        .bytes_contents()
        .await
        .map_err(|e| Error::bad_request(format!("cannot read the request body: {e:#}")))?;
    Ok(http::Request::from_parts(parts, body))
}
