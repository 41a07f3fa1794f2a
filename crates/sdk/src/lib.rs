//! The guest side of Verge: what a worker written in Rust builds on.
//!
//! Requests and responses are the [`http`] crate's types with a [`Bytes`]
//! body. A [`Router`] maps methods and path patterns to async handlers,
//! answering 404 and 405 (with `Allow`) by itself. Handlers return
//! `Result<Response, Error>`; an [`Error`] becomes a JSON error response
//! (`{"error": {"code", "message"}}`) with its status, so a handler can use
//! `?` on bad input and still answer properly. [`json`] and
//! [`RequestExt::json`] move serde values in and out, a malformed body
//! becoming a 400 that says what is wrong.
//!
//! The router runs on any target, so it is tested natively:
//!
//! ```
//! use verge_sdk::{Router, Request, Response, Error, json};
//!
//! async fn show(_req: Request, params: verge_sdk::Params, _: ()) -> Result<Response, Error> {
//!     let id = params.get("id").unwrap_or_default();
//!     Ok(json(200, &serde_json::json!({ "id": id }))?)
//! }
//!
//! let router = Router::new().get("/todos/:id", show);
//! let request = http::Request::get("/todos/7").body(bytes::Bytes::new()).unwrap();
//! let response = futures_executor::block_on(router.handle(request, ()));
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.body(), r#"{"id":"7"}"#);
//! ```

mod error;
mod json;
mod router;

pub use bytes::Bytes;
pub use error::Error;
pub use http;
pub use json::{RequestExt, json};
pub use router::{Params, Router};

/// A request as a handler sees it.
pub type Request = http::Request<Bytes>;
/// A response as a handler returns it.
pub type Response = http::Response<Bytes>;
