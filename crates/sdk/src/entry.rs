//! The glue `#[verge_sdk::handler]` expands to: read the request, run the
//! handler on wstd's executor, send whatever it returns as the response.

use std::future::Future;

use bytes::Bytes;
use http::header::{self, HeaderName};
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::{Env, Error, Request, Response, context};

/// What a handler may return: a response, or a result whose error becomes
/// one.
pub trait IntoResponse {
    /// Converts the value into the response the node sends.
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

/// Runs `handler` for one `wasi:http` request and writes its response; the code `#[verge_sdk::handler]` generates calls it.
pub fn serve<F, Fut>(request: IncomingRequest, out: ResponseOutparam, handler: F)
where
    F: FnOnce(Request, Env) -> Fut,
    Fut: Future,
    Fut::Output: IntoResponse,
{
    let mut head = false;
    let response = match read(request) {
        Ok(request) => {
            context::begin(&request);
            head = request.method() == http::Method::HEAD;
            // wstd's executor runs the handler, so that what it awaits
            // (fetch, timers) makes progress.
            wstd::runtime::block_on(handler(request, Env::new())).into_response()
        }
        Err(e) => e.into_response(),
    };
    send(response, head, out);
}

/// Reads the request head and its whole body with plain blocking calls:
/// a handler gets a complete request, and a fresh instance makes as few
/// host calls as it can before its handler runs.
fn read(incoming: IncomingRequest) -> Result<Request, Error> {
    let method = match incoming.method() {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Delete => http::Method::DELETE,
        Method::Connect => http::Method::CONNECT,
        Method::Options => http::Method::OPTIONS,
        Method::Trace => http::Method::TRACE,
        Method::Patch => http::Method::PATCH,
        Method::Other(other) => http::Method::from_bytes(other.as_bytes())
            .map_err(|_| Error::bad_request(format!("invalid method {other:?}")))?,
    };
    let mut uri = http::Uri::builder();
    if let Some(scheme) = incoming.scheme() {
        let scheme = match scheme {
            Scheme::Http => "http".to_string(),
            Scheme::Https => "https".to_string(),
            Scheme::Other(other) => other,
        };
        uri = uri.scheme(scheme.as_str());
    }
    if let Some(authority) = incoming.authority() {
        uri = uri.authority(authority);
    }
    let uri = uri
        .path_and_query(incoming.path_with_query().unwrap_or_else(|| "/".into()))
        .build()
        .map_err(|e| Error::bad_request(format!("malformed request target: {e}")))?;
    let mut request = http::Request::builder().method(method).uri(uri);
    {
        let fields = incoming.headers();
        let headers = request
            .headers_mut()
            .ok_or_else(|| Error::bad_request("malformed request"))?;
        for (name, value) in fields.entries() {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::bad_request(format!("invalid header name {name:?}")))?;
            let value = http::HeaderValue::from_bytes(&value)
                .map_err(|_| Error::bad_request(format!("invalid value for header {name}")))?;
            headers.append(name, value);
        }
    }
    let body = incoming
        .consume()
        .map_err(|()| Error::internal("the request body was already taken"))?;
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| Error::internal("the request body stream was already taken"))?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error::bad_request(format!(
                        "cannot read the request body: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
    drop(IncomingBody::finish(body));
    request
        .body(Bytes::from(bytes))
        .map_err(|e| Error::bad_request(format!("malformed request: {e}")))
}

/// Sends `response`; the body goes out with blocking writes of at most
/// 4 KiB, the most WASI lets one write carry.
fn send(response: Response, head: bool, out: ResponseOutparam) {
    let (mut parts, body) = response.into_parts();
    for name in &HOP_BY_HOP {
        parts.headers.remove(name);
    }
    parts.headers.remove("keep-alive");
    // The body is whole: declare its length rather than chunk it. A HEAD
    // response has no body but describes the GET's, so it is left as the
    // handler made it.
    if !head && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
    }
    let entries: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();
    let fields = match Fields::from_list(&entries) {
        Ok(fields) => fields,
        Err(e) => {
            eprintln!("ERROR the response headers were refused: {e:?}");
            ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some(format!("{e:?}")))));
            return;
        }
    };
    let response = OutgoingResponse::new(fields);
    // `StatusCode` only holds valid codes.
    let _ = response.set_status_code(parts.status.as_u16());
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(WRITE_CHUNK) {
            // A client that went away is not the worker's failure.
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Bytes asked for per read of the request body.
const READ_CHUNK: u64 = 64 * 1024;
/// The largest write `blocking-write-and-flush` takes.
const WRITE_CHUNK: usize = 4096;
