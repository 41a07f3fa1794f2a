//! What the node records about each request, and where it goes.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;

use crate::guest_log::{LogLine, LogStream};
use crate::memory::Refusal;

/// Identifies one request in responses, logs and (later) the tail stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

impl RequestId {
    /// A new id: a counter put through a keyed permutation (a four-round
    /// Feistel network over SipHash, keyed at random per process), so ids
    /// are unique on a node, unlikely to repeat across nodes, and say
    /// nothing about the node's traffic: without the key, one id does not
    /// tell the next or how many requests came between.
    pub fn next() -> RequestId {
        static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let key = KEY.get_or_init(std::collections::hash_map::RandomState::new);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let (mut left, mut right) = ((n >> 32) as u32, n as u32);
        for round in 0..4u32 {
            let f = key.hash_one((round, right)) as u32;
            (left, right) = (right, left ^ f);
        }
        RequestId(u64::from(left) << 32 | u64::from(right))
    }

    /// The id as it is written: 16 lowercase hex digits.
    pub(crate) fn hex(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, digit) in out.iter_mut().enumerate() {
            let nibble = (self.0 >> (60 - 4 * i)) as u8 & 0xf;
            *digit = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
        }
        out
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `hex` holds ASCII hex digits only.
        f.write_str(std::str::from_utf8(&self.hex()).map_err(|_| fmt::Error)?)
    }
}

/// Why a request ended before its worker finished it normally.
#[derive(Clone, Debug, PartialEq)]
pub enum Termination {
    /// The guest spent its CPU budget.
    CpuLimit { used: Duration, limit: Duration },
    /// The request outlived its wall-clock budget.
    WallLimit { limit: Duration },
    /// The guest tried to grow its memory past the limit.
    MemoryLimit { requested: u64, limit: u64 },
    /// The request body was larger than the limit.
    RequestBodyLimit { limit: u64 },
    /// The client stopped sending the request body for the body read
    /// timeout.
    RequestBodyTimeout { timeout: Duration },
    /// The response body was larger than the limit.
    ResponseBodyLimit { limit: u64 },
    /// The guest panicked.
    Panic { message: String },
    /// The guest trapped (or a host call it made failed fatally).
    Trap { message: String },
    /// The guest returned without sending a response, or sent an error.
    NoResponse { detail: String },
    /// The node's memory budget, or the worker's share of it, could not
    /// take what the request needed.
    MemoryBudget(Refusal),
    /// Every instance slot was busy for longer than the queue timeout.
    Overloaded,
    /// The worker had as many requests running as it may, for longer than
    /// the queue timeout: its share of the node, or its manifest's cap.
    WorkerBusy { limit: u32 },
    /// The request could not be handed to the guest (malformed on arrival).
    BadRequest { detail: String },
}

impl Termination {
    /// The status a client sees when this happens before the response.
    pub fn status(&self) -> StatusCode {
        match self {
            Termination::CpuLimit { .. }
            | Termination::Overloaded
            | Termination::WorkerBusy { .. }
            | Termination::MemoryBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
            Termination::WallLimit { .. } => StatusCode::GATEWAY_TIMEOUT,
            Termination::RequestBodyLimit { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Termination::RequestBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Termination::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Termination::MemoryLimit { .. }
            | Termination::ResponseBodyLimit { .. }
            | Termination::Panic { .. }
            | Termination::Trap { .. }
            | Termination::NoResponse { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-friendly name: `cpu`, `wall`, `memory` ...
    pub fn reason(&self) -> &'static str {
        match self {
            Termination::CpuLimit { .. } => "cpu",
            Termination::WallLimit { .. } => "wall",
            Termination::MemoryLimit { .. } => "memory",
            Termination::RequestBodyLimit { .. } => "request-body",
            Termination::RequestBodyTimeout { .. } => "request-body-timeout",
            Termination::ResponseBodyLimit { .. } => "response-body",
            Termination::Panic { .. } => "panic",
            Termination::Trap { .. } => "trap",
            Termination::NoResponse { .. } => "no-response",
            Termination::Overloaded => "overloaded",
            Termination::WorkerBusy { .. } => "worker-concurrency",
            Termination::MemoryBudget(Refusal::Node { .. }) => "node-memory",
            Termination::MemoryBudget(Refusal::Worker { .. }) => "worker-memory",
            Termination::BadRequest { .. } => "bad-request",
        }
    }

    /// What a client is told: the reason, without guest internals.
    pub fn public_message(&self) -> String {
        match self {
            Termination::CpuLimit { limit, .. } => {
                format!("the worker exceeded its CPU time limit ({})", ms(*limit))
            }
            Termination::WallLimit { limit } => {
                format!("the worker exceeded its wall time limit ({})", ms(*limit))
            }
            Termination::MemoryLimit { limit, .. } => {
                format!("the worker exceeded its memory limit ({})", bytes(*limit))
            }
            Termination::RequestBodyLimit { limit } => {
                format!("the request body exceeds the limit of {}", bytes(*limit))
            }
            Termination::RequestBodyTimeout { timeout } => format!(
                "the request body stopped arriving (nothing for {})",
                ms(*timeout)
            ),
            Termination::ResponseBodyLimit { limit } => {
                format!("the response body exceeds the limit of {}", bytes(*limit))
            }
            Termination::Panic { .. } => "the worker panicked".into(),
            Termination::Trap { .. } => "the worker crashed (trap)".into(),
            Termination::NoResponse { .. } => "the worker did not produce a response".into(),
            Termination::Overloaded => "the node is at its instance limit; retry shortly".into(),
            Termination::WorkerBusy { limit } => {
                format!("the worker is at its limit of {limit} requests at once; retry shortly")
            }
            Termination::MemoryBudget(Refusal::Node { .. }) => {
                "the node is at its memory budget; retry shortly".into()
            }
            Termination::MemoryBudget(Refusal::Worker { .. }) => {
                "the worker is at its share of the node's memory; retry shortly".into()
            }
            Termination::BadRequest { detail } => format!("bad request: {detail}"),
        }
    }

    /// Guest internals (panic message, trap backtrace) for logs and for
    /// developers who opted in.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Termination::Panic { message } | Termination::Trap { message } => Some(message),
            Termination::NoResponse { detail } => Some(detail),
            _ => None,
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::CpuLimit { used, limit } => {
                write!(f, "limit=cpu measured={} limit={}", ms(*used), ms(*limit))
            }
            Termination::WallLimit { limit } => write!(f, "limit=wall limit={}", ms(*limit)),
            Termination::MemoryLimit { requested, limit } => write!(
                f,
                "limit=memory requested={} limit={}",
                bytes(*requested),
                bytes(*limit)
            ),
            Termination::RequestBodyLimit { limit } => {
                write!(f, "limit=request-body limit={}", bytes(*limit))
            }
            Termination::RequestBodyTimeout { timeout } => {
                write!(f, "limit=request-body-timeout timeout={}", ms(*timeout))
            }
            Termination::ResponseBodyLimit { limit } => {
                write!(f, "limit=response-body limit={}", bytes(*limit))
            }
            Termination::WorkerBusy { limit } => {
                write!(f, "limit=worker-concurrency limit={limit}")
            }
            Termination::MemoryBudget(Refusal::Node { limit } | Refusal::Worker { limit }) => {
                write!(f, "limit={} limit={}", self.reason(), bytes(*limit))
            }
            other => {
                write!(f, "reason={}", other.reason())?;
                if let Some(detail) = other.detail() {
                    write!(f, " detail={detail:?}")?;
                }
                Ok(())
            }
        }
    }
}

/// Formats a duration as milliseconds with microsecond precision.
pub fn ms(d: Duration) -> String {
    format!("{} ms", millis(d))
}

/// Milliseconds with three decimals (`0.412`).
pub(crate) fn millis(d: Duration) -> String {
    let mut out = Vec::with_capacity(12);
    push_millis(&mut out, d);
    String::from_utf8(out).expect("digits and a dot")
}

/// Appends [`millis`] of `d` to `out` without the formatting machinery,
/// which costs more than the rest of the node's response headers together:
/// this runs on every request, for `Server-Timing`.
pub(crate) fn push_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    push_decimal(out, micros / 1000);
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Appends `n` in decimal to `out`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn bytes(b: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if b >= MIB && b.is_multiple_of(MIB) {
        format!("{} MiB", b / MIB)
    } else {
        format!("{b} bytes")
    }
}

/// Everything the node knows about a finished request.
#[derive(Clone, Debug)]
pub struct RequestSummary {
    pub id: RequestId,
    pub worker: Arc<str>,
    pub method: http::Method,
    pub path: String,
    /// The status sent, or that would have been sent.
    pub status: u16,
    /// Guest CPU time.
    pub cpu: Duration,
    /// From arrival to the end of the response body.
    pub wall: Duration,
    pub termination: Option<Termination>,
    /// KV operations the guest made, and their total time.
    pub kv_ops: u32,
    pub kv_time: Duration,
    /// What the guest wrote to stdout and stderr.
    pub logs: Vec<LogLine>,
    /// Guest output dropped past the per-request cap, in bytes.
    pub logs_dropped: usize,
}

/// `text` with what a terminal would act on escaped: control characters
/// (escape sequences that clear the screen or set the title, carriage
/// returns that overwrite a line) and the bidirectional overrides that
/// reorder what is shown. Guest output and anything else a worker or a
/// client chose goes through this before it is printed or logged; tabs
/// stay.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Receives every request's summary: the request log, and later the tail
/// stream and metrics.
pub trait RequestSink: Send + Sync {
    fn record(&self, summary: &RequestSummary);
}

/// Writes request summaries as `tracing` events under the `verge::request`
/// and `verge::guest` targets.
pub struct TracingSink;

impl RequestSink for TracingSink {
    fn record(&self, s: &RequestSummary) {
        for line in &s.logs {
            let stream = match line.stream {
                LogStream::Stdout => "stdout",
                LogStream::Stderr => "stderr",
            };
            tracing::info!(target: "verge::guest", worker = %s.worker, id = %s.id, stream, "{}", printable(&line.text));
        }
        match &s.termination {
            None => tracing::info!(
                target: "verge::request",
                worker = %s.worker, id = %s.id,
                "{} {} {} cpu={} wall={}", s.method, s.path, s.status, ms(s.cpu), ms(s.wall)
            ),
            Some(t) => tracing::warn!(
                target: "verge::request",
                worker = %s.worker, id = %s.id,
                "{} {} {} cpu={} wall={} {}", s.method, s.path, s.status, ms(s.cpu), ms(s.wall), printable(&t.to_string())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_and_ids_are_written_as_formatting_would() {
        for micros in [0, 7, 999, 1_000, 1_001, 12_345, 50_000_000, u64::MAX] {
            let d = Duration::from_micros(micros);
            assert_eq!(
                millis(d),
                format!("{}.{:03}", micros / 1000, micros % 1000),
                "{micros} µs"
            );
        }
        for raw in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(RequestId(raw).to_string(), format!("{raw:016x}"));
        }
    }

    #[test]
    fn what_a_terminal_would_act_on_is_escaped() {
        assert_eq!(printable("plain\ttext é"), "plain\ttext é");
        assert_eq!(
            printable("\x1b[2J\x1b]0;owned\x07done\r"),
            "\\u{1b}[2J\\u{1b}]0;owned\\u{7}done\\r"
        );
        assert_eq!(printable("a\u{202e}b"), "a\\u{202e}b");
    }

    #[test]
    fn ids_are_unique_fixed_width_and_not_a_count() {
        let ids: Vec<u64> = (0..10_000).map(|_| RequestId::next().0).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert_eq!(RequestId(ids[0]).to_string().len(), 16);
        // Consecutive ids differ in about half their bits, as random ones
        // would; a counter (or a counter under a fixed prefix) differs in
        // one or two.
        let flipped: u32 = ids.windows(2).map(|w| (w[0] ^ w[1]).count_ones()).sum();
        let mean = f64::from(flipped) / (ids.len() - 1) as f64;
        assert!((28.0..36.0).contains(&mean), "{mean}");
    }

    #[test]
    fn statuses_follow_the_limit() {
        let cpu = Termination::CpuLimit {
            used: Duration::from_millis(51),
            limit: Duration::from_millis(50),
        };
        assert_eq!(cpu.status(), 503);
        assert_eq!(
            Termination::WallLimit {
                limit: Duration::from_secs(1)
            }
            .status(),
            504
        );
        assert_eq!(
            Termination::MemoryLimit {
                requested: 1,
                limit: 1
            }
            .status(),
            500
        );
        assert_eq!(Termination::RequestBodyLimit { limit: 1 }.status(), 413);
        assert_eq!(
            cpu.to_string(),
            "limit=cpu measured=51.000 ms limit=50.000 ms"
        );
    }

    #[test]
    fn public_messages_hide_guest_details() {
        let t = Termination::Trap {
            message: "wasm backtrace: secret_fn".into(),
        };
        assert!(!t.public_message().contains("secret_fn"));
        assert_eq!(t.detail(), Some("wasm backtrace: secret_fn"));
    }
}
