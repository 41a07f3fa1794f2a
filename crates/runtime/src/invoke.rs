//! One request through a worker, from arrival to the last byte of the
//! response.
//!
//! The guest runs inside the connection's own task: the future that
//! instantiates the component and calls its handler is polled by the request
//! future until the guest hands over a response, and after that by the
//! response body, which hyper polls for frames. No task is spawned and no
//! channel crosses threads on the common path; a guest that keeps running
//! after its response body is complete is the one case moved to a task of its
//! own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::oneshot;
use tokio::time::Sleep;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::{HostOutgoingBody, HyperOutgoingBody};

use crate::body::{
    ClientBody, GuestBody, LimitedIncoming, PreReadError, RequestBody, ResponseBody,
};
use crate::cpu::{CpuMeter, Metered};
use crate::fair::Handover;
use crate::guest_log::GuestLog;
use crate::kv::{KvContext, KvStats};
use crate::log::{RequestId, RequestSummary, Termination, push_decimal, push_millis};
use crate::memory::{self, Charge};
use crate::server::ResponseDeadline;
use crate::state::InstanceState;
use crate::worker::Worker;

/// The header carrying the node's request id, to the guest and the client.
const REQUEST_ID: &str = "x-request-id";
/// The node's request id on every response, whatever the guest set: the
/// one to quote to an operator (`x-request-id` is the guest's when it set
/// one, as a proxy forwarding an upstream's does).
const NODE_REQUEST_ID: &str = "verge-request-id";

/// CPU time after which a guest moves to the background threads (or, where
/// they could not start, yields behind all other work at each epoch tick).
/// A typical API handler needs a tenth of this; 2 ms let eight looping
/// connections take more of the serving threads in bench/isolation.py.
const LONG_RUNNING: Duration = Duration::from_millis(1);

/// Raised from the epoch callback to stop a guest that spent its CPU budget.
#[derive(Debug, thiserror::Error)]
#[error("CPU time limit exceeded")]
struct CpuLimitExceeded;

/// Raised from the epoch callback to stop a guest whose host objects pass
/// its memory limit or the budgets.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded by host objects")]
struct MemoryExceeded;

/// A store with (once instantiated) its component instance.
pub(crate) struct Instance {
    store: Store<InstanceState>,
    proxy: Option<Proxy>,
    log: GuestLog,
    /// Requests this instance has served, for the reuse limit.
    pub(crate) served: u32,
}

impl Instance {
    fn new(worker: &Worker, meter: Arc<CpuMeter>, kv_stats: Arc<KvStats>) -> Instance {
        let log = GuestLog::new();
        let kv = KvContext {
            bindings: worker.kv.clone(),
            stats: kv_stats,
        };
        let state = InstanceState::new(worker, &log, meter, kv, worker.budgets.clone());
        let mut store = Store::new(&worker.runtime.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            // What the guest keeps in the host counts against its memory
            // limit and the budgets, as its linear memory does.
            let host = memory::host_objects(&mut state.table);
            if !state.limiter.set_host(host) {
                return Err(wasmtime::Error::new(MemoryExceeded));
            }
            Ok(match state.meter.check_in_poll() {
                None => return Err(wasmtime::Error::new(CpuLimitExceeded)),
                // On the background threads a guest gives its turn over at
                // every tick, to the worker owed most (`fair`).
                Some(_) if state.meter.in_background() => {
                    UpdateDeadline::YieldCustom(1, Box::pin(Handover::new(state.meter.clone())))
                }
                // A guest that has computed for a while and is still on a
                // serving thread goes behind everything else: tokio runs a
                // task that yielded this way only once its worker has no
                // other task to run and has polled the sockets, so new
                // requests and every connection's I/O come first. Its task
                // then moves it to the background threads (`poll_guest`).
                Some(used) if used >= LONG_RUNNING => {
                    UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
                }
                // Yielding at every tick lets other requests on this thread
                // run while a guest computes.
                Some(_) => UpdateDeadline::Yield(1),
            })
        });
        store.set_epoch_deadline(1);
        Instance {
            store,
            proxy: None,
            log,
            served: 0,
        }
    }

    /// Readies a reused instance for its next request.
    fn reset(&mut self, meter: Arc<CpuMeter>, kv_stats: Arc<KvStats>) {
        let state = self.store.data_mut();
        state.meter = meter;
        state.kv.stats = kv_stats;
        state.limiter.reset();
        // What the last request left in the host is gone or counted again.
        let host = memory::host_objects(&mut state.table);
        state.limiter.set_host(host);
        state.hooks.sent = 0;
        self.store.set_epoch_deadline(1);
        let _ = self.log.take();
    }

    async fn call(
        &mut self,
        worker: &Worker,
        request: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostIncomingRequest>,
        outparam: wasmtime::component::Resource<
            wasmtime_wasi_http::p2::types::HostResponseOutparam,
        >,
    ) -> wasmtime::Result<()> {
        let proxy = match &self.proxy {
            Some(proxy) => proxy,
            None => self
                .proxy
                .insert(worker.pre.instantiate_async(&mut self.store).await?),
        };
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut self.store, request, outparam)
            .await
    }
}

type GuestOutput = (Instance, wasmtime::Result<()>);
type GuestFuture = Metered<Pin<Box<dyn Future<Output = GuestOutput> + Send>>>;

/// Where a guest runs: in the connection's task, or (once it has computed
/// for [`LONG_RUNNING`]) on the node's background threads.
enum Placement {
    Here(GuestFuture),
    Background(Background),
}

/// A guest moved to the background threads; stopped when dropped (at its
/// wall deadline, or when its client goes away).
struct Background(tokio::task::JoinHandle<GuestOutput>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running guest of one request and its wall-clock deadline.
pub(crate) struct GuestRun {
    future: Option<Placement>,
    finished: Option<GuestOutput>,
    deadline: Pin<Box<Sleep>>,
    meter: Arc<CpuMeter>,
}

impl GuestRun {
    /// Polls the guest if it is still running; its output is kept in
    /// `finished`. A guest that has computed for a while is moved to the
    /// background threads, which the kernel runs only on the CPU the
    /// serving threads leave (see `Runtime::background`).
    fn poll_guest(&mut self, cx: &mut Context<'_>, worker: &Worker) {
        let output = match &mut self.future {
            None => return,
            Some(Placement::Here(future)) => match Pin::new(future).poll(cx) {
                Poll::Ready(output) => output,
                Poll::Pending => {
                    if self.meter.used() >= LONG_RUNNING
                        && let Some(background) = worker.runtime.background()
                        && let Some(Placement::Here(future)) = self.future.take()
                    {
                        self.meter.moved_to_background();
                        let task = background.spawn(future, worker.gate_id, self.meter.clone());
                        let mut task = Background(task);
                        // Registers this task's waker with the moved guest.
                        if let Poll::Ready(joined) = Pin::new(&mut task.0).poll(cx) {
                            self.settle(joined);
                            return;
                        }
                        self.future = Some(Placement::Background(task));
                    }
                    return;
                }
            },
            Some(Placement::Background(task)) => match Pin::new(&mut task.0).poll(cx) {
                Poll::Ready(joined) => {
                    self.settle(joined);
                    return;
                }
                Poll::Pending => return,
            },
        };
        self.future = None;
        self.finished = Some(output);
    }

    /// The end of a guest moved to the background. It ends there only by
    /// returning or by a panic of the host code it called (a bug, which
    /// ends the request as the same panic would in the connection's task).
    fn settle(&mut self, joined: Result<GuestOutput, tokio::task::JoinError>) {
        self.future = None;
        match joined {
            Ok(output) => self.finished = Some(output),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Aborted only by dropping `Background`, which ended polling.
            Err(_) => {}
        }
    }

    pub(crate) fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// Polls the guest; when it has returned, reports a failure if it had one.
    pub(crate) fn poll_progress(
        &mut self,
        cx: &mut Context<'_>,
        record: &mut Record,
    ) -> Option<Termination> {
        self.poll_guest(cx, &record.worker);
        let output = self.finished.take()?;
        record.guest_finished(output)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.future.is_some()
    }

    /// The body is complete but the guest has not returned: let it finish in
    /// a task of its own, within its wall deadline, so its logs and outcome
    /// are still recorded without holding up the client.
    pub(crate) fn finish_in_background(mut self, mut record: Record) {
        tokio::spawn(async move {
            let outcome = std::future::poll_fn(|cx| {
                if let Some(failure) = self.poll_progress(cx, &mut record) {
                    return Poll::Ready(Some(failure));
                }
                if !self.is_running() {
                    return Poll::Ready(None);
                }
                if self.poll_deadline(cx) {
                    return Poll::Ready(Some(Termination::WallLimit {
                        limit: record.worker.limits.wall,
                    }));
                }
                Poll::Pending
            })
            .await;
            if let Some(termination) = outcome {
                record.terminate(termination);
            }
        });
    }
}

/// What the node knows about a request while it runs; reported to the
/// request sink when dropped, whichever way the request ends.
pub(crate) struct Record {
    worker: Arc<Worker>,
    id: RequestId,
    started: Instant,
    method: http::Method,
    path: String,
    status: u16,
    meter: Arc<CpuMeter>,
    kv: Arc<KvStats>,
    termination: Option<Termination>,
    logs: Option<GuestLog>,
    collected: (Vec<crate::guest_log::LogLine>, usize),
    /// Raised by the request body when it crosses the body limit.
    request_body_exceeded: Arc<AtomicBool>,
    /// Raised by a client's body when it stops arriving.
    request_body_timed_out: Option<Arc<AtomicBool>>,
    /// The guest failed with an outgoing body it had not finished.
    body_unfinished: bool,
    /// Held while the request runs: the node's instance, the worker's share
    /// and this version's cap.
    _permit: Option<OwnedSemaphorePermit>,
    _worker_permit: Option<OwnedSemaphorePermit>,
    _own_permit: Option<OwnedSemaphorePermit>,
    /// The host side of the request, charged to the memory budgets.
    _memory: Option<Charge>,
}

impl Record {
    pub(crate) fn terminate(&mut self, termination: Termination) {
        if self.termination.is_none() {
            self.termination = Some(termination);
        }
    }

    /// Deals with a guest that returned: collects its log lines, classifies a
    /// failure, and gives a clean instance back for reuse.
    fn guest_finished(&mut self, (mut instance, result): GuestOutput) -> Option<Termination> {
        let failure = match result {
            Ok(()) => None,
            Err(error) => Some(classify(&error, &self.meter, &instance)),
        };
        if failure.is_some() {
            // `outgoing-body.finish` takes the body out of the table: one
            // still there was left unfinished (an ended stream would
            // otherwise look whole to the client).
            self.body_unfinished = instance
                .store
                .data_mut()
                .table
                .iter_mut()
                .any(|entry| entry.is::<HostOutgoingBody>());
        }
        self.collect_logs(&instance.log);
        self.logs = None;
        // The sandbox is done: what is left of the response (buffered, and
        // bounded) may drain to a slow client without holding a share of
        // the node.
        self._permit = None;
        self._worker_permit = None;
        self._own_permit = None;
        instance.served += 1;
        if failure.is_none() && self.termination.is_none() {
            self.worker.release(instance);
        }
        failure
    }

    fn collect_logs(&mut self, log: &GuestLog) {
        let (lines, dropped) = log.take();
        self.collected.0.extend(lines);
        self.collected.1 += dropped;
    }

    pub(crate) fn body_limit(&self) -> u64 {
        self.worker.limits.body
    }

    /// The request-body termination, if the request body crossed the limit
    /// or stopped arriving.
    pub(crate) fn request_body_termination(&self) -> Option<Termination> {
        if self.request_body_exceeded.load(Ordering::Relaxed) {
            return Some(Termination::RequestBodyLimit {
                limit: self.worker.limits.body,
            });
        }
        self.request_body_timed_out
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
            .then(|| Termination::RequestBodyTimeout {
                timeout: self.worker.runtime.config.body_read_timeout,
            })
    }
    /// Whether the guest failed before finishing a body it was writing.
    pub(crate) fn body_unfinished(&self) -> bool {
        self.body_unfinished
    }

    pub(crate) fn wall_limit(&self) -> Duration {
        self.worker.limits.wall
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(log) = self.logs.take() {
            self.collect_logs(&log);
        }
        let (logs, logs_dropped) = std::mem::take(&mut self.collected);
        let summary = RequestSummary {
            id: self.id,
            worker: self.worker.name.clone(),
            method: self.method.clone(),
            path: std::mem::take(&mut self.path),
            status: self.status,
            cpu: self.meter.used(),
            wall: self.started.elapsed(),
            termination: self.termination.take(),
            kv_ops: self.kv.ops(),
            kv_time: self.kv.time(),
            logs,
            logs_dropped,
        };
        self.worker.runtime.config.sink.record(&summary);
    }
}

/// Works out why a guest failed.
fn classify(error: &wasmtime::Error, meter: &CpuMeter, instance: &Instance) -> Termination {
    if meter.exceeded() || error.is::<CpuLimitExceeded>() {
        return Termination::CpuLimit {
            used: meter.used(),
            limit: meter.limit(),
        };
    }
    if let Some(refusal) = instance.store.data().limiter.refused {
        return Termination::MemoryBudget(refusal);
    }
    if let Some(requested) = instance.store.data().limiter.exceeded {
        return Termination::MemoryLimit {
            requested,
            limit: instance.store.data().limiter.limit,
        };
    }
    if let Some(message) = instance.log.mentions_panic() {
        return Termination::Panic { message };
    }
    // `{:#}` is the cause chain with the wasm backtrace, without the host
    // stack (which says nothing about the guest).
    Termination::Trap {
        message: format!("{error:#}"),
    }
}

impl Worker {
    /// Serves one HTTP request with a fresh instance (or a reused one, when
    /// the worker allows it), enforcing every limit. Never fails: every
    /// problem becomes a response with a status naming it and a request id.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<ResponseBody> {
        let timeout = self.runtime.config.body_read_timeout;
        self.serve(request.map(|body| RequestBody::Incoming(ClientBody::new(body, timeout))))
            .await
    }

    /// Serves a request the node makes itself (a scheduled run), with its
    /// body whole, exactly as [`Worker::handle`] serves a client's: the same
    /// limits, log line, metrics and tail event.
    pub async fn handle_bytes(self: Arc<Self>, request: Request<Bytes>) -> Response<ResponseBody> {
        self.serve(request.map(|body| RequestBody::Whole(Some(body))))
            .await
    }

    async fn serve(self: Arc<Self>, request: Request<RequestBody>) -> Response<ResponseBody> {
        let started = Instant::now();
        let meter = Arc::new(CpuMeter::new(self.limits.cpu));
        let mut record = Record {
            worker: self.clone(),
            id: RequestId::next(),
            started,
            method: request.method().clone(),
            path: request.uri().path().to_string(),
            status: 0,
            meter: meter.clone(),
            kv: Arc::new(KvStats::default()),
            termination: None,
            logs: None,
            collected: (Vec::new(), 0),
            request_body_exceeded: Arc::new(AtomicBool::new(false)),
            request_body_timed_out: None,
            body_unfinished: false,
            _permit: None,
            _worker_permit: None,
            _own_permit: None,
            _memory: None,
        };

        if declared_length(request.headers()).is_some_and(|n| n > self.limits.body) {
            return host_response(
                record,
                Termination::RequestBodyLimit {
                    limit: self.limits.body,
                },
            );
        }
        let response_deadline = request.extensions().get::<ResponseDeadline>().cloned();
        // The start of the body arrives before anything is taken for it.
        let (parts, mut body) = request.into_parts();
        if let RequestBody::Incoming(client) = &mut body {
            record.request_body_timed_out = Some(client.timed_out());
            match client.pre_read().await {
                Ok(()) => {}
                Err(PreReadError::TimedOut) => {
                    let timeout = self.runtime.config.body_read_timeout;
                    return host_response(record, Termination::RequestBodyTimeout { timeout });
                }
                Err(PreReadError::Client(e)) => {
                    let detail = format!("reading the request body failed: {e}");
                    return host_response(record, Termination::BadRequest { detail });
                }
            }
        }
        let request = Request::from_parts(parts, body);

        // Admission: this version's cap, then the worker's share of the
        // node, then the node's instances, all within one queue timeout. A
        // worker flooded with requests queues on its own share, so other
        // workers' requests still find instances free.
        let queue_until = tokio::time::Instant::now() + self.runtime.config.queue_timeout;
        if let Some((own, limit)) = &self.own_slots {
            match acquire(own, queue_until).await {
                Some(permit) => record._own_permit = Some(permit),
                None => return host_response(record, Termination::WorkerBusy { limit: *limit }),
            }
        }
        match acquire(&self.slots, queue_until).await {
            Some(permit) => record._worker_permit = Some(permit),
            None => {
                let config = &self.runtime.config;
                let limit = config.max_instances_per_worker;
                // A share as large as the node (`verge dev`'s one worker) is
                // the node's limit.
                let termination = if limit >= config.max_instances {
                    Termination::Overloaded
                } else {
                    Termination::WorkerBusy { limit }
                };
                return host_response(record, termination);
            }
        }
        match acquire(&self.runtime.permits, queue_until).await {
            Some(permit) => record._permit = Some(permit),
            None => return host_response(record, Termination::Overloaded),
        }
        // Memory last: refused at once when the budgets are full, rather
        // than taken and overcommitted.
        let mut charge = Charge::new(self.budgets.clone());
        if let Err(refusal) = charge.resize(memory::REQUEST_BASE) {
            return host_response(record, Termination::MemoryBudget(refusal));
        }
        record._memory = Some(charge);

        let mut instance = match self.take_idle() {
            Some(mut instance) => {
                instance.reset(meter.clone(), record.kv.clone());
                instance
            }
            None => Instance::new(&self, meter.clone(), record.kv.clone()),
        };
        record.logs = Some(instance.log.clone());

        let body_exceeded = record.request_body_exceeded.clone();
        let mut request =
            request.map(|body| LimitedIncoming::new(body, self.limits.body, body_exceeded.clone()));
        // The guest sees the node's request id (replacing any the client
        // sent), so its error responses and logs can name it.
        if let Ok(value) = HeaderValue::from_str(&record.id.to_string()) {
            request.headers_mut().insert(NODE_REQUEST_ID, value.clone());
            request.headers_mut().insert(REQUEST_ID, value);
        }
        let (sender, mut receiver) = oneshot::channel();
        let resources = {
            let mut http = instance.store.data_mut().http();
            http.new_incoming_request(Scheme::Http, request)
                .and_then(|req| Ok((req, http.new_response_outparam(sender)?)))
        };
        let (guest_request, outparam) = match resources {
            Ok(resources) => resources,
            Err(e) => {
                return host_response(
                    record,
                    Termination::BadRequest {
                        detail: format!("{e:#}"),
                    },
                );
            }
        };

        let worker = self.clone();
        let future: Pin<Box<dyn Future<Output = GuestOutput> + Send>> = Box::pin(async move {
            let result = instance.call(&worker, guest_request, outparam).await;
            (instance, result)
        });
        let deadline = tokio::time::Instant::from_std(started + self.limits.wall);
        let mut run = GuestRun {
            future: Some(Placement::Here(Metered::new(future, meter.clone()))),
            finished: None,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            meter: meter.clone(),
        };

        // Run the guest until it sets its response, returns, or runs out of
        // wall time.
        let response = std::future::poll_fn(|cx| {
            run.poll_guest(cx, &self);
            // Polled (not just checked) so that a guest running on the
            // background threads wakes this task when it responds.
            match Pin::new(&mut receiver).poll(cx) {
                Poll::Ready(Ok(response)) => return Poll::Ready(Some(response)),
                Poll::Ready(Err(_closed)) => return Poll::Ready(None),
                Poll::Pending if run.finished.is_some() => return Poll::Ready(None),
                Poll::Pending => {}
            }
            if run.poll_deadline(cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;

        let failure = run
            .finished
            .take()
            .and_then(|output| record.guest_finished(output));
        if let Some(termination) = record.request_body_termination() {
            return host_response(record, termination);
        }
        if let Some(failure) = failure {
            return match response {
                Some(Ok(response)) => finished_then_failed(record, response, failure),
                _ => host_response(record, failure),
            };
        }
        match response {
            Some(Ok(response)) => {
                // Writes of the response give up at the wall deadline, even
                // when a client that stopped reading stalls them.
                if let Some(cell) = &response_deadline {
                    cell.set(Some(deadline));
                }
                guest_response(record, response, run, response_deadline)
            }
            Some(Err(code)) => host_response(
                record,
                Termination::NoResponse {
                    detail: format!("the worker responded with an error: {code:?}"),
                },
            ),
            None if run.future.is_some() => host_response(
                record,
                Termination::WallLimit {
                    limit: self.limits.wall,
                },
            ),
            None => host_response(
                record,
                Termination::NoResponse {
                    detail: "the handler returned without setting a response".into(),
                },
            ),
        }
    }
}

/// A permit of `semaphore`, waiting until `until` at the most.
async fn acquire(
    semaphore: &Arc<tokio::sync::Semaphore>,
    until: tokio::time::Instant,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = semaphore.clone().try_acquire_owned() {
        return Some(permit);
    }
    tokio::time::timeout_at(until, semaphore.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A response of the node's own, for a request that ended early.
fn host_response(mut record: Record, termination: Termination) -> Response<ResponseBody> {
    let status = termination.status();
    let mut text = format!(
        "{}\nrequest id: {}\n",
        termination.public_message(),
        record.id
    );
    if record.worker.expose_errors
        && let Some(detail) = termination.detail()
    {
        text.push('\n');
        text.push_str(detail);
        text.push('\n');
    }
    record.status = status.as_u16();
    let mut response = Response::new(ResponseBody::full(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    add_node_headers(response.headers_mut(), &record);
    record.terminate(termination);
    response
}

/// The response of a guest that set it and then failed. Its instance is
/// gone, so the body holds all it ever will: a body the guest finished goes
/// to the client whole, with the guest's status (the failure goes to the
/// log, the tail and the metrics); an unfinished one gets the failure's
/// response instead.
fn finished_then_failed(
    mut record: Record,
    response: hyper::Response<HyperOutgoingBody>,
    failure: Termination,
) -> Response<ResponseBody> {
    if record.body_unfinished() {
        return host_response(record, failure);
    }
    let limit = record.body_limit();
    let (mut parts, mut body) = response.into_parts();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut bytes = Vec::new();
    let complete = loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if bytes.len() as u64 + data.len() as u64 > limit {
                        break false;
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Poll::Ready(None) => break true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => break false,
        }
    };
    if !complete {
        return host_response(record, failure);
    }
    record.status = parts.status.as_u16();
    add_node_headers(&mut parts.headers, &record);
    record.terminate(failure);
    Response::from_parts(parts, ResponseBody::full(Bytes::from(bytes)))
}

/// The guest's response, with its body still being produced by the guest.
fn guest_response(
    mut record: Record,
    response: hyper::Response<HyperOutgoingBody>,
    run: GuestRun,
    deadline: Option<ResponseDeadline>,
) -> Response<ResponseBody> {
    let limit = record.body_limit();
    if declared_length(response.headers()).is_some_and(|n| n > limit) {
        return host_response(record, Termination::ResponseBodyLimit { limit });
    }
    let (mut parts, body) = response.into_parts();
    record.status = parts.status.as_u16();
    add_node_headers(&mut parts.headers, &record);
    let run = run.is_running().then_some(run);
    Response::from_parts(
        parts,
        ResponseBody::guest(GuestBody::new(body, run, record, deadline)),
    )
}

/// `Server-Timing` (guest CPU and time so far) and the request id.
fn add_node_headers(headers: &mut http::HeaderMap, record: &Record) {
    // `cpu;dur=0.412, kv;dur=0.031;desc="2 ops", total;dur=0.655`, written
    // by hand: `format!` made up most of these headers' cost.
    let mut timing = Vec::with_capacity(80);
    timing.extend_from_slice(b"cpu;dur=");
    push_millis(&mut timing, record.meter.used());
    let kv_ops = record.kv.ops();
    if kv_ops > 0 {
        timing.extend_from_slice(b", kv;dur=");
        push_millis(&mut timing, record.kv.time());
        timing.extend_from_slice(b";desc=\"");
        push_decimal(&mut timing, kv_ops.into());
        timing.extend_from_slice(b" ops\"");
    }
    timing.extend_from_slice(b", total;dur=");
    push_millis(&mut timing, record.started.elapsed());
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(timing)) {
        headers.append("server-timing", value);
    }
    if let Ok(value) = HeaderValue::from_bytes(&record.id.hex()) {
        headers.insert(NODE_REQUEST_ID, value.clone());
        if !headers.contains_key(REQUEST_ID) {
            headers.insert(REQUEST_ID, value);
        }
    }
}

impl Worker {
    /// Creates a fresh instance (store, WASI contexts, instantiation) and
    /// drops it without calling the guest: the fixed cost every request pays
    /// before its handler runs. Used by the benchmarks.
    pub async fn instantiate_once(&self) -> wasmtime::Result<()> {
        let meter = Arc::new(CpuMeter::new(self.limits.cpu));
        let mut instance = Instance::new(self, meter.clone(), Arc::new(KvStats::default()));
        let pre = &self.pre;
        let future = Box::pin(async { pre.instantiate_async(&mut instance.store).await.map(drop) });
        Metered::new(future, meter).await
    }
}
