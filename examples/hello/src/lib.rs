//! The smallest useful Verge worker: a greeting from a manifest variable,
//! a route with a query parameter, a log line.

use verge_sdk::{Env, Error, Params, Request, RequestExt, Response, Router};

fn text(body: String) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        "content-type",
        verge_sdk::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn greeting(env: &Env) -> String {
    env.var("GREETING").unwrap_or_else(|_| "Hello".into())
}

async fn index(_req: Request, _: Params, env: Env) -> Result<Response, Error> {
    Ok(text(format!("{}!\n", greeting(&env))))
}

async fn hello(req: Request, _: Params, env: Env) -> Result<Response, Error> {
    let name = req.query("name").unwrap_or_else(|| "world".into());
    verge_sdk::info!("greeting {name}");
    Ok(text(format!("{}, {name}!\n", greeting(&env))))
}

#[verge_sdk::handler]
async fn fetch(req: Request, env: Env) -> Response {
    Router::new()
        .get("/", index)
        .get("/hello", hello)
        .handle(req, env)
        .await
}
