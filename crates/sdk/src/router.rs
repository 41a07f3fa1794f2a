//! Routing requests to handlers by method and path pattern.
//!
//! Patterns are `/`-separated segments: literals, `:name` parameters (one
//! segment) and a final `*name` wildcard (the rest of the path, possibly
//! empty). A path that matches no route gets 404; one that matches a route
//! under other methods gets 405 with an `Allow` header. `HEAD` is served by
//! the `GET` route, without its body.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::header::{ALLOW, HeaderValue};
use http::{Method, StatusCode};

use crate::error::Error;
use crate::scheduled::{SCHEDULED_PATH, ScheduledEvent};
use crate::{Request, Response};

/// Parameters captured from the path, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The value of `name`, if the route captured it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Response, Error>>>>;
type Handler<S> = Box<dyn Fn(Request, Params, S) -> HandlerFuture>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

struct Route<S> {
    method: Method,
    pattern: Vec<Segment>,
    handler: Handler<S>,
}

/// Routes requests to async handlers; `S` is state every handler receives
/// (an `Env` with KV bindings, say), cloned per request.
pub struct Router<S> {
    routes: Vec<Route<S>>,
}

impl<S: Clone + 'static> Default for Router<S> {
    fn default() -> Self {
        Router::new()
    }
}

fn parse(pattern: &str) -> Vec<Segment> {
    let segments: Vec<&str> = pattern
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let last = segments.len().saturating_sub(1);
    segments
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            if let Some(name) = s.strip_prefix(':') {
                Segment::Param(name.to_string())
            } else if let Some(name) = s.strip_prefix('*') {
                assert!(
                    i == last,
                    "a `*{name}` wildcard must be the last segment of {pattern:?}"
                );
                Segment::Rest(name.to_string())
            } else {
                Segment::Literal(s.to_string())
            }
        })
        .collect()
}

fn matches(pattern: &[Segment], path: &str) -> Option<Params> {
    let mut parts = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .peekable();
    let mut params = Vec::new();
    for segment in pattern {
        match segment {
            Segment::Literal(literal) => {
                if parts.next()? != literal {
                    return None;
                }
            }
            Segment::Param(name) => params.push((name.clone(), parts.next()?.to_string())),
            Segment::Rest(name) => {
                let rest: Vec<&str> = parts.by_ref().collect();
                params.push((name.clone(), rest.join("/")));
            }
        }
    }
    parts.peek().is_none().then_some(Params(params))
}

impl<S: Clone + 'static> Router<S> {
    /// An empty router.
    pub fn new() -> Router<S> {
        Router { routes: Vec::new() }
    }

    /// Adds a route for `method` and `pattern`.
    pub fn on<F, Fut>(mut self, method: Method, pattern: &str, handler: F) -> Self
    where
        F: Fn(Request, Params, S) -> Fut + 'static,
        Fut: Future<Output = Result<Response, Error>> + 'static,
    {
        let handler: Handler<S> =
            Box::new(move |req, params, state| Box::pin(handler(req, params, state)));
        self.routes.push(Route {
            method,
            pattern: parse(pattern),
            handler,
        });
        self
    }

    /// Routes `GET` requests matching `pattern` (e.g. `/todos/:id`) to `handler`.
    pub fn get<F, Fut>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(Request, Params, S) -> Fut + 'static,
        Fut: Future<Output = Result<Response, Error>> + 'static,
    {
        self.on(Method::GET, pattern, handler)
    }

    /// Routes `POST` requests matching `pattern` (e.g. `/todos/:id`) to `handler`.
    pub fn post<F, Fut>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(Request, Params, S) -> Fut + 'static,
        Fut: Future<Output = Result<Response, Error>> + 'static,
    {
        self.on(Method::POST, pattern, handler)
    }

    /// Routes `PUT` requests matching `pattern` (e.g. `/todos/:id`) to `handler`.
    pub fn put<F, Fut>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(Request, Params, S) -> Fut + 'static,
        Fut: Future<Output = Result<Response, Error>> + 'static,
    {
        self.on(Method::PUT, pattern, handler)
    }

    /// Routes `PATCH` requests matching `pattern` (e.g. `/todos/:id`) to `handler`.
    pub fn patch<F, Fut>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(Request, Params, S) -> Fut + 'static,
        Fut: Future<Output = Result<Response, Error>> + 'static,
    {
        self.on(Method::PATCH, pattern, handler)
    }

    /// Routes `DELETE` requests matching `pattern` (e.g. `/todos/:id`) to `handler`.
    pub fn delete<F, Fut>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(Request, Params, S) -> Fut + 'static,
        Fut: Future<Output = Result<Response, Error>> + 'static,
    {
        self.on(Method::DELETE, pattern, handler)
    }

    /// Routes the node's scheduled runs (cron triggers) to `handler`, which
    /// gets the tick; a run that returns `Ok` answers 204. Only requests
    /// the node marked with [`SCHEDULED_HEADER`](crate::SCHEDULED_HEADER)
    /// reach it; a client's request to the same path is a 404.
    ///
    /// ```no_run
    /// use verge_sdk::{Env, Router, ScheduledEvent};
    ///
    /// let router: Router<Env> = Router::new().scheduled(|event: ScheduledEvent, env: Env| async move {
    ///     env.kv("STATS")?
    ///         .put("last-run", event.scheduled_time.to_string())
    ///         .execute()?;
    ///     Ok(())
    /// });
    /// ```
    pub fn scheduled<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(ScheduledEvent, S) -> Fut + 'static,
        Fut: Future<Output = Result<(), Error>> + 'static,
    {
        let handler = std::rc::Rc::new(handler);
        self.on(Method::POST, SCHEDULED_PATH, move |req, _, state| {
            let handler = handler.clone();
            async move {
                if !ScheduledEvent::is_scheduled(&req) {
                    return Err(Error::not_found(format!(
                        "{SCHEDULED_PATH} takes only the node's scheduled runs"
                    )));
                }
                let event = ScheduledEvent::from_request(&req)?;
                handler(event, state).await?;
                let mut response = Response::new(Bytes::new());
                *response.status_mut() = StatusCode::NO_CONTENT;
                Ok(response)
            }
        })
    }

    /// Routes `request`; every outcome, handler errors included, is a
    /// response.
    pub async fn handle(&self, request: Request, state: S) -> Response {
        let path = request.uri().path().to_string();
        let head = request.method() == Method::HEAD;
        let mut allowed = BTreeSet::new();
        for route in &self.routes {
            let Some(params) = matches(&route.pattern, &path) else {
                continue;
            };
            let serves = route.method == request.method() || (head && route.method == Method::GET);
            if !serves {
                allowed.insert(route.method.as_str().to_string());
                continue;
            }
            let mut response = match (route.handler)(request, params, state).await {
                Ok(response) => response,
                Err(error) => error.into_response(),
            };
            if head {
                *response.body_mut() = Bytes::new();
            }
            return response;
        }
        if allowed.is_empty() {
            return Error::not_found(format!("no route for {path}")).into_response();
        }
        if allowed.contains("GET") {
            allowed.insert("HEAD".into());
        }
        let allow = allowed.into_iter().collect::<Vec<_>>().join(", ");
        let mut response = Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed on {path}; allowed: {allow}",
                request.method()
            ),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(ALLOW, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;

    async fn echo_params(
        req: Request,
        params: Params,
        prefix: &'static str,
    ) -> Result<Response, Error> {
        let text = format!("{prefix} {} {:?}", req.method(), params.0);
        Ok(Response::new(Bytes::from(text)))
    }

    async fn fails(_: Request, _: Params, _: &'static str) -> Result<Response, Error> {
        Err(Error::bad_request("nope"))
    }

    fn router() -> Router<&'static str> {
        Router::new()
            .get("/todos", echo_params)
            .post("/todos", echo_params)
            .get("/todos/:id", echo_params)
            .delete("/todos/:id", echo_params)
            .get("/files/*path", echo_params)
            .get("/fail", fails)
    }

    fn call(method: &str, path: &str) -> Response {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(Bytes::new())
            .unwrap();
        block_on(router().handle(request, "state"))
    }

    fn text(response: &Response) -> String {
        String::from_utf8_lossy(response.body()).into_owned()
    }

    #[test]
    fn methods_and_params() {
        assert_eq!(text(&call("GET", "/todos")), "state GET []");
        assert_eq!(text(&call("POST", "/todos/")), "state POST []");
        assert_eq!(
            text(&call("GET", "/todos/42")),
            r#"state GET [("id", "42")]"#
        );
        assert_eq!(
            text(&call("DELETE", "/todos/42?x=1")),
            r#"state DELETE [("id", "42")]"#
        );
    }

    #[test]
    fn wildcards_take_the_rest() {
        assert_eq!(
            text(&call("GET", "/files/a/b/c.txt")),
            r#"state GET [("path", "a/b/c.txt")]"#
        );
        assert_eq!(text(&call("GET", "/files")), r#"state GET [("path", "")]"#);
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405_with_allow() {
        let missing = call("GET", "/todos/1/extra");
        assert_eq!(missing.status(), 404);
        assert!(text(&missing).contains("\"not_found\""));
        let wrong = call("PUT", "/todos/1");
        assert_eq!(wrong.status(), 405);
        assert_eq!(wrong.headers()["allow"], "DELETE, GET, HEAD");
    }

    #[test]
    fn head_uses_get_without_a_body() {
        let head = call("HEAD", "/todos/1");
        assert_eq!(head.status(), 200);
        assert!(head.body().is_empty());
    }

    #[test]
    fn handler_errors_become_their_responses() {
        let response = call("GET", "/fail");
        assert_eq!(response.status(), 400);
        assert_eq!(
            text(&response),
            r#"{"error":{"code":"bad_request","message":"nope"}}"#
        );
    }

    #[test]
    fn scheduled_runs_reach_the_scheduled_handler() {
        use std::cell::RefCell;
        use std::rc::Rc;
        let seen: Rc<RefCell<Vec<ScheduledEvent>>> = Rc::default();
        let router =
            Router::new().scheduled(|event, seen: Rc<RefCell<Vec<ScheduledEvent>>>| async move {
                if event.cron == "0 0 * * *" {
                    return Err(Error::internal("midnight fails"));
                }
                seen.borrow_mut().push(event);
                Ok(())
            });
        let send = |uri: &str, from_node: bool| {
            let mut request = http::Request::post(uri);
            if from_node {
                request = request.header(crate::SCHEDULED_HEADER, "1");
            }
            block_on(router.handle(request.body(Bytes::new()).unwrap(), seen.clone())).status()
        };
        let run = |uri: &str| send(uri, true);
        assert_eq!(
            run("/.well-known/verge/scheduled?cron=*/5+*+*+*+*&time=42"),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            seen.borrow().as_slice(),
            [ScheduledEvent {
                cron: "*/5 * * * *".into(),
                scheduled_time: 42
            }]
        );
        assert_eq!(
            run("/.well-known/verge/scheduled?cron=0+0+*+*+*"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(run("/.well-known/verge/scheduled"), StatusCode::BAD_REQUEST);
        // Without the node's header the path alone reaches nothing, however
        // it is written.
        for forged in [
            "/.well-known/verge/scheduled?cron=*/5+*+*+*+*",
            "//.well-known/verge/scheduled?cron=*/5+*+*+*+*",
        ] {
            assert_eq!(send(forged, false), StatusCode::NOT_FOUND, "{forged}");
        }
        assert_eq!(seen.borrow().len(), 1);
    }
}
