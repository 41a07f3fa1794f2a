//! A minimal Verge worker: a standard WASI HTTP component (written with the
//! `wstd` crate), so it also runs on any other `wasi:http/proxy` host.

use wstd::http::body::Body;
use wstd::http::{Error, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
    match request.uri().path() {
        "/" => Ok(Response::new(format!("{greeting}!\n").into())),
        "/hello" => {
            let name = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
                .unwrap_or("world");
            println!("greeting {name}");
            Ok(Response::new(format!("{greeting}, {name}!\n").into()))
        }
        _ => Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body("not found\n".to_string().into())?),
    }
}
