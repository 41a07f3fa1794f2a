//! The guest side of Verge: what a worker written in Rust builds on.
//!
//! A worker is one async function marked [`#[verge_sdk::handler]`](handler)
//! that takes a [`Request`] and an [`Env`] and returns a [`Response`].
//! Requests and responses are the [`http`] crate's types with a [`Bytes`]
//! body. A [`Router`] maps methods and path patterns to handlers, answering
//! 404 and 405 (with `Allow`) by itself. Handlers return
//! `Result<Response, Error>`; an [`Error`] becomes a JSON error response
//! (`{"error": {"code", "message", "request_id"}}`) with its status, so `?`
//! works on bad input, KV and fetch failures alike. [`Env`] reaches the
//! worker's KV namespaces ([`Env::kv`]), variables and secrets; [`fetch`]
//! sends outbound requests; [`info!`] and friends write to the request log.
//! [`Router::scheduled`] takes the worker's cron triggers ([`ScheduledEvent`]).
//!
//! ```no_run
//! use verge_sdk::{Env, Error, Params, Request, RequestExt, Response, Router, json};
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct Note { text: String }
//!
//! async fn show(_req: Request, params: Params, env: Env) -> Result<Response, Error> {
//!     let id = params.get("id").unwrap_or_default();
//!     let note: Note = env.kv("NOTES")?.get(id).json()?
//!         .ok_or_else(|| Error::not_found(format!("no note {id}")))?;
//!     json(200, &note)
//! }
//!
//! async fn save(req: Request, params: Params, env: Env) -> Result<Response, Error> {
//!     let note: Note = req.json()?; // a 400 saying why if the body is not a Note
//!     env.kv("NOTES")?.put_json(params.get("id").unwrap_or_default(), &note).execute()?;
//!     json(200, &note)
//! }
//!
//! #[verge_sdk::handler]
//! async fn fetch(req: Request, env: Env) -> Response {
//!     Router::new()
//!         .get("/notes/:id", show)
//!         .put("/notes/:id", save)
//!         .handle(req, env)
//!         .await
//! }
//! ```
//!
//! The router runs on any target, so routes are tested natively:
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

#![warn(missing_docs)]

mod context;
mod entry;
mod env;
mod error;
mod fetch;
mod json;
pub mod kv;
#[doc(hidden)]
pub mod log;
mod router;
mod scheduled;

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "verge:kv/kv-guest",
    });
}

pub use bytes::Bytes;
pub use context::request_id;
pub use entry::IntoResponse;
pub use env::Env;
pub use error::Error;
pub use fetch::{FetchError, fetch};
pub use http;
pub use json::{RequestExt, json};
pub use kv::{Kv, KvError};
pub use router::{Params, Router};
pub use scheduled::{SCHEDULED_HEADER, SCHEDULED_PATH, ScheduledEvent};
pub use verge_sdk_macros::handler;

/// A request as a handler sees it, its body read whole.
pub type Request = http::Request<Bytes>;
/// A response as a handler returns it.
pub type Response = http::Response<Bytes>;
/// `Result<T, verge_sdk::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// 64 bits from the node's cryptographically secure random source
/// (`wasi:random`), e.g. for ids that must not be guessed.
pub fn random_u64() -> u64 {
    wasip2::random::random::get_random_u64()
}

/// For the `#[handler]` expansion only.
#[doc(hidden)]
pub mod __private {
    pub use crate::entry::serve;
    pub use wasip2;
    pub use wasip2::exports::http::incoming_handler::Guest;
    pub use wasip2::http::types::{IncomingRequest, ResponseOutparam};
}

#[cfg(test)]
mod tests {
    /// The WIT ships with this crate; its package carries a version.
    #[test]
    fn the_wit_package_is_versioned() {
        let text = include_str!("../wit/kv.wit");
        assert!(text.starts_with("package verge:kv@0.1.0;"));
    }
}
