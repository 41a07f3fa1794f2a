//! Request and response bodies as they cross the node: counted against the
//! body limit, streamed frame by frame, never buffered whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use wasmtime_wasi_http::Error as HttpError;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::invoke::{GuestRun, Record};
use crate::log::Termination;

/// The request body handed to the guest: fails with `HTTP-request-body-size`
/// once more than `limit` bytes arrive, and raises `exceeded` so the node
/// answers 413 whatever the guest does with the error.
pub(crate) struct LimitedIncoming {
    inner: RequestBody,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

/// Where a request body comes from: a client's connection, or the node
/// itself (a scheduled run), whole.
pub(crate) enum RequestBody {
    Incoming(ClientBody),
    Whole(Option<Bytes>),
}

/// Bytes of a request body read before an instance is taken for it: a
/// client has to send this much (or its whole body, if smaller) before its
/// request holds anything but a connection and this buffer.
pub(crate) const PRE_READ: usize = 64 * 1024;

/// A client's request body: what was read before the guest started, then
/// the rest from the connection, failing when no data comes for the body
/// read timeout (and raising `timed_out`, so the node answers 408).
pub(crate) struct ClientBody {
    read: std::collections::VecDeque<Frame<Bytes>>,
    incoming: Option<Incoming>,
    timeout: std::time::Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

/// Why the start of a request body could not be read.
pub(crate) enum PreReadError {
    /// No data for the body read timeout.
    TimedOut,
    /// The connection failed (the client went away, or sent bad framing).
    Client(hyper::Error),
}

impl ClientBody {
    pub(crate) fn new(incoming: Incoming, timeout: std::time::Duration) -> ClientBody {
        ClientBody {
            read: std::collections::VecDeque::new(),
            incoming: Some(incoming),
            timeout,
            idle: Box::pin(tokio::time::sleep(timeout)),
            timed_out: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Raised when the client stopped sending the body for the timeout.
    pub(crate) fn timed_out(&self) -> Arc<AtomicBool> {
        self.timed_out.clone()
    }

    /// Reads the body until it ends or [`PRE_READ`] bytes are buffered,
    /// within one body read timeout in all: a client that trickles its body
    /// is answered 408 without ever holding an instance.
    pub(crate) async fn pre_read(&mut self) -> Result<(), PreReadError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut buffered = 0;
        while buffered < PRE_READ {
            let Some(incoming) = &mut self.incoming else {
                break;
            };
            if incoming.is_end_stream() {
                self.incoming = None;
                break;
            }
            let next = std::future::poll_fn(|cx| Pin::new(&mut *incoming).poll_frame(cx));
            match tokio::time::timeout_at(deadline, next).await {
                Err(_) => return Err(PreReadError::TimedOut),
                Ok(None) => self.incoming = None,
                Ok(Some(Err(e))) => return Err(PreReadError::Client(e)),
                Ok(Some(Ok(frame))) => {
                    buffered += frame.data_ref().map_or(0, |d| d.len());
                    self.read.push_back(frame);
                }
            }
        }
        self.idle
            .as_mut()
            .reset(tokio::time::Instant::now() + self.timeout);
        Ok(())
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(incoming) = &mut self.incoming else {
            return Poll::Ready(None);
        };
        match Pin::new(incoming).poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                let deadline = tokio::time::Instant::now() + self.timeout;
                self.idle.as_mut().reset(deadline);
                Poll::Ready(Some(frame.map_err(HttpError::from)))
            }
            Poll::Ready(None) => {
                self.incoming = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if self.idle.as_mut().poll(cx).is_ready() {
                    self.timed_out.store(true, Ordering::Relaxed);
                    self.incoming = None;
                    return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.incoming.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self
            .read
            .iter()
            .map(|f| f.data_ref().map_or(0, |d| d.len() as u64))
            .sum();
        let rest = self
            .incoming
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + read);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}

impl LimitedIncoming {
    pub(crate) fn new(
        inner: RequestBody,
        limit: u64,
        exceeded: Arc<AtomicBool>,
    ) -> LimitedIncoming {
        LimitedIncoming {
            inner,
            remaining: limit,
            limit,
            exceeded,
        }
    }
}

impl Body for LimitedIncoming {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.exceeded.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(self.limit)))));
        }
        let polled = match &mut self.inner {
            RequestBody::Incoming(client) => match client.poll_frame(cx) {
                Poll::Ready(polled) => polled,
                Poll::Pending => return Poll::Pending,
            },
            RequestBody::Whole(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
        };
        match polled {
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > self.remaining {
                    self.exceeded.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(
                        self.limit,
                    )))));
                }
                self.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            RequestBody::Incoming(client) => client.is_end_stream(),
            RequestBody::Whole(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RequestBody::Incoming(client) => client.size_hint(),
            RequestBody::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl Drop for GuestBody {
    /// A body dropped before its end (a HEAD response, whose body is never
    /// read, or a client gone): the guest still running finishes on its own
    /// within its wall limit, so what it does after its response (a panic,
    /// its last log lines) is still recorded. Its writes to the dropped body
    /// fail, which ends most guests at once.
    fn drop(&mut self) {
        if let Some(deadline) = self.deadline.take() {
            // Cut off at the wall limit (the connection's writes gave up on
            // a client that stopped reading): say so in its record.
            let expired = deadline
                .get()
                .is_some_and(|at| at <= tokio::time::Instant::now());
            if expired
                && !self.done
                && let Some(record) = &mut self.record
            {
                let limit = record.wall_limit();
                record.terminate(Termination::WallLimit { limit });
            }
            deadline.set(None);
        }
        if let (Some(run), Some(record)) = (self.run.take(), self.record.take())
            && run.is_running()
        {
            run.finish_in_background(record);
        }
    }
}

/// Why a response body stopped early. Hyper then ends the connection, so a
/// client never mistakes a truncated body for a complete one.
#[derive(Debug, thiserror::Error)]
#[error("response aborted: {0}")]
pub struct BodyAborted(String);

/// The body of every response the node sends.
pub struct ResponseBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Guest(Box<GuestBody>),
}

impl ResponseBody {
    /// A body the node wrote itself.
    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody {
            kind: Kind::Full(Some(bytes).filter(|b| !b.is_empty())),
        }
    }

    pub(crate) fn guest(body: GuestBody) -> ResponseBody {
        ResponseBody {
            kind: Kind::Guest(Box::new(body)),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyAborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Guest(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Guest(body) => body.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Guest(body) => body.inner.size_hint(),
        }
    }
}

/// A guest's response body. Polling it also drives the guest, which may still
/// be writing the body, and enforces the wall deadline and the body limit.
pub(crate) struct GuestBody {
    inner: HyperOutgoingBody,
    run: Option<GuestRun>,
    record: Option<Record>,
    sent: u64,
    done: bool,
    /// The guest failed while the body was being sent; its termination is
    /// recorded.
    failed: bool,
    /// The connection's response deadline, cleared when the body ends.
    deadline: Option<crate::server::ResponseDeadline>,
}

impl GuestBody {
    pub(crate) fn new(
        inner: HyperOutgoingBody,
        run: Option<GuestRun>,
        record: Record,
        deadline: Option<crate::server::ResponseDeadline>,
    ) -> GuestBody {
        GuestBody {
            inner,
            run,
            record: Some(record),
            sent: 0,
            done: false,
            failed: false,
            deadline,
        }
    }

    fn abort(
        &mut self,
        termination: Termination,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        self.done = true;
        let message = termination.to_string();
        if let Some(record) = &mut self.record {
            record.terminate(termination);
        }
        // Dropping the guest here cancels it at its next await point.
        self.run = None;
        Poll::Ready(Some(Err(BodyAborted(message))))
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(exceeded) = self
            .record
            .as_ref()
            .and_then(Record::request_body_termination)
        {
            return self.abort(exceeded);
        }
        let mut guest_failed = false;
        if let (Some(run), Some(record)) = (&mut self.run, &mut self.record) {
            if let Some(failure) = run.poll_progress(cx, record) {
                if let Some(exceeded) = record.request_body_termination() {
                    return self.abort(exceeded);
                }
                if record.body_unfinished() {
                    return self.abort(failure);
                }
                record.terminate(failure);
                guest_failed = true;
            } else if run.is_running() && run.poll_deadline(cx) {
                let limit = record.wall_limit();
                return self.abort(Termination::WallLimit { limit });
            }
        }
        if guest_failed {
            // The guest finished its body before it failed, and is gone (its
            // instance dropped): what the body holds still goes out whole.
            self.run = None;
            self.failed = true;
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
                let limit = self.record.as_ref().map_or(u64::MAX, Record::body_limit);
                if self.sent > limit {
                    return self.abort(Termination::ResponseBodyLimit { limit });
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The guest aborted its body (or dropped it unfinished),
                // perhaps because its request body crossed the limit, or
                // failed before finishing it.
                if let Some(exceeded) = self
                    .record
                    .as_ref()
                    .and_then(Record::request_body_termination)
                {
                    return self.abort(exceeded);
                }
                if self.failed {
                    self.done = true;
                    return Poll::Ready(Some(Err(BodyAborted(format!(
                        "the worker failed before finishing the body: {e}"
                    )))));
                }
                self.done = true;
                self.run = None;
                Poll::Ready(Some(Err(BodyAborted(format!(
                    "the worker aborted the body: {e}"
                )))))
            }
            Poll::Ready(None) => {
                self.done = true;
                if let (Some(run), Some(record)) = (self.run.take(), self.record.take())
                    && run.is_running()
                {
                    run.finish_in_background(record);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
