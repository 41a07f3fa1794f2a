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

/// When the response now being written on a connection must be done:
/// the request's wall deadline, set while a worker's response is sent. A
/// client that stops reading stalls hyper's writes, and with them every
/// check made while polling the body; the connection's writes check this
/// deadline themselves and fail once it passes, which closes the connection
/// and drops the response (and the guest, if it still runs).
#[derive(Clone, Default)]
pub struct ResponseDeadline(Arc<std::sync::Mutex<Option<tokio::time::Instant>>>);

impl ResponseDeadline {
    pub(crate) fn set(&self, at: Option<tokio::time::Instant>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    pub(crate) fn get(&self) -> Option<tokio::time::Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection whose blocked writes give up at the response deadline.
struct Guarded<S> {
    inner: S,
    deadline: ResponseDeadline,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Guarded<S> {
    /// Called when a write could not proceed: an error once the deadline
    /// has passed, else a wake-up for it.
    fn stalled(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Error> {
        let Some(at) = self.deadline.get() else {
            return std::task::Poll::Pending;
        };
        let timer = match &mut self.timer {
            Some(timer) if timer.deadline() == at => timer,
            _ => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the response outlived its wall limit while the client was not reading",
            )),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Pending => self.stalled(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            std::task::Poll::Pending => self.stalled(cx).map(Err),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Pending => self.stalled(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The request header that marks a scheduled run (a cron tick) from the
/// node itself. The server removes it from every client request before
/// routing, so a guest that sees it knows the node sent the request, whatever
/// its path says.
pub const SCHEDULED_HEADER: &str = "verge-scheduled";

/// Finds the worker for a request.
pub trait Dispatch: Send + Sync + 'static {
    /// The worker that serves `request`, or why none does (sent with a 404).
    /// It may add to the request what the node vouches for (as `verge dev`
    /// does with [`SCHEDULED_HEADER`] on its scheduled path).
    fn route(&self, request: &mut Request<Incoming>) -> Result<Arc<Worker>, String>;
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
    fn route(&self, _: &mut Request<Incoming>) -> Result<Arc<Worker>, String> {
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
        let deadline = ResponseDeadline::default();
        let stream = Guarded {
            inner: stream,
            deadline: deadline.clone(),
            timer: None,
        };
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(deadline.clone());
            // Only the node may say a request is a scheduled run.
            request.headers_mut().remove(SCHEDULED_HEADER);
            let worker = dispatch.route(&mut request);
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
