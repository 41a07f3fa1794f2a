//! A REST API for todos, stored in Verge KV.
//!
//! | route | does |
//! | --- | --- |
//! | `POST /todos` `{"title"}` | creates: 201, `Location`, `ETag` |
//! | `GET /todos?limit=&cursor=` | lists in creation order: `{"items", "cursor"}` |
//! | `GET /todos/:id` | reads: 200 with `ETag` (304 on `If-None-Match`) |
//! | `PUT /todos/:id` `{"title", "done"}` | replaces; `If-Match` → 412 when stale |
//! | `PATCH /todos/:id` `{"title"?, "done"?}` | merges; `If-Match` as for PUT |
//! | `DELETE /todos/:id` | 204 |
//!
//! Each todo is one KV entry, `todo:<id>`, with ids from an atomic counter
//! zero-padded so that key order is creation order. The entry's generation,
//! which changes on every write, is the ETag; writes are conditional on the
//! generation they read, so two clients never overwrite each other silently.

mod time;
mod todo;

use verge_sdk::{Env, Response, Router};

#[verge_sdk::handler]
async fn fetch(req: verge_sdk::Request, env: Env) -> Response {
    Router::new()
        .post("/todos", todo::create)
        .get("/todos", todo::list)
        .get("/todos/:id", todo::show)
        .put("/todos/:id", todo::replace)
        .patch("/todos/:id", todo::update)
        .delete("/todos/:id", todo::remove)
        .handle(req, env)
        .await
}
