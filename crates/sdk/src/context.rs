//! What the node tells the guest about the request being served: its id
//! and whether error details may go into responses.
//!
//! A guest instance serves one request at a time, so the context is kept
//! per thread and set by the entry point before the handler runs.

use std::cell::RefCell;

#[derive(Clone, Debug, Default)]
struct Context {
    request_id: Option<String>,
}

thread_local! {
    static CURRENT: RefCell<Context> = RefCell::new(Context::default());
}

/// The request header carrying the node's request id.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// The environment variable with which the node opts into error details in
/// responses (`verge dev` sets it).
pub(crate) const ERROR_DETAIL_VAR: &str = "VERGE_ERROR_DETAIL";

pub(crate) fn begin(request: &http::Request<bytes::Bytes>) {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    CURRENT.with(|c| *c.borrow_mut() = Context { request_id });
}

/// The node's id for the request being served, if there is one (there is
/// none in native unit tests).
pub fn request_id() -> Option<String> {
    CURRENT.with(|c| c.borrow().request_id.clone())
}

/// Whether error responses may carry internal details.
pub(crate) fn show_error_detail() -> bool {
    std::env::var(ERROR_DETAIL_VAR).is_ok_and(|v| v == "1")
}
