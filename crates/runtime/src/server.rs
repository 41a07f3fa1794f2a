//! Accepting connections and handing requests to workers.
//!
//! HTTP/1.1 with keep-alive over hyper. Shutdown is graceful: the listener
//! closes at once, idle keep-alive connections are closed, and requests in
//! flight get up to a drain timeout to finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::body::ResponseBody;
use crate::worker::Worker;

/// Finds the worker for a request.
pub trait Dispatch: Send + Sync + 'static {
    /// The worker that serves `request`, or why none does (sent with a 404).
    fn route(&self, request: &Request<Incoming>) -> Result<Arc<Worker>, String>;
}

/// One worker serving every request (a node routes among many; see
/// verge-node's `Registry`).
pub struct SingleWorker {
    current: Arc<Worker>,
}

impl SingleWorker {
    pub fn new(worker: Worker) -> SingleWorker {
        SingleWorker {
            current: Arc::new(worker),
        }
    }

    /// The worker.
    pub fn current(&self) -> Arc<Worker> {
        self.current.clone()
    }
}

impl Dispatch for SingleWorker {
    fn route(&self, _: &Request<Incoming>) -> Result<Arc<Worker>, String> {
        Ok(self.current())
    }
}

/// How the server behaves around its connections.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// How long requests in flight may take to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves requests from `listener` until `shutdown` resolves, then drains.
/// Returns whether every connection finished within the drain timeout.
pub async fn serve(
    listener: TcpListener,
    dispatch: Arc<dyn Dispatch>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait and retry
                    // rather than take the node down.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let dispatch = dispatch.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let worker = dispatch.route(&request);
            async move {
                Ok::<_, Infallible>(match worker {
                    Ok(worker) => worker.handle(request).await,
                    Err(why) => not_found(why),
                })
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log_connection_error(peer, &e);
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(options.drain_timeout) => {
            tracing::warn!("requests still running after the {:?} drain timeout were cut off", options.drain_timeout);
            false
        }
    }
}

fn log_connection_error(peer: SocketAddr, e: &hyper::Error) {
    // Clients that go away mid-request are routine; a body aborted on a limit
    // was already logged with its request.
    if e.is_incomplete_message() || e.is_canceled() || e.is_body_write_aborted() {
        tracing::debug!(%peer, "connection ended: {e}");
    } else {
        tracing::debug!(%peer, "connection error: {e}");
    }
}

fn not_found(why: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(why + "\n")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
