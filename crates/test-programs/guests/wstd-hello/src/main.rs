//! A WASI HTTP component written with `wstd`, a toolchain that knows nothing
//! of Verge: Verge must run it unmodified.

use wstd::http::body::Body;
use wstd::http::{Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_string();
    Ok(Response::new(format!("hello from wstd at {path}\n").into()))
}
