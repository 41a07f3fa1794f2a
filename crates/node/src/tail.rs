//! The live tail: every finished request of a worker, sent to whoever
//! watches it, filtered on the node.
//!
//! Each watched worker has a broadcast channel holding the last
//! [`TAIL_BUFFER`] events. Nothing is sampled: a client that keeps up sees
//! every request. A client that falls more than the buffer behind loses the
//! oldest events and is told how many, in a `dropped` event, then carries on
//! from the newest. Workers nobody watches cost one map lookup per request.
//!
//! Nodes that share a PostgreSQL store show each other's requests: a node
//! whose client tails a worker asks the others, through the change log, to
//! relay that worker's events for a lease it renews ([`TAIL_LEASE`]). They
//! send them in batches over NOTIFY, and the watching node feeds them into
//! the same channel as its own. Workers nobody tails anywhere cost the
//! other nodes nothing but the lookup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use verge_deploy::{TAIL_LEASE, TAIL_PAYLOAD_MAX};
use verge_runtime::RequestSummary;
use verge_runtime::guest_log::LogStream;

/// Events a slow client may fall behind by before it loses some.
pub const TAIL_BUFFER: usize = 1024;

pub use verge_api::{TailEvent, TailLog, TailTermination};

/// Milliseconds to the microsecond.
fn millis(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// The tail's view of a finished request served by `node`.
pub fn event_of(s: &RequestSummary, node: &str) -> TailEvent {
    TailEvent {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        id: s.id.to_string(),
        node: node.to_string(),
        worker: s.worker.to_string(),
        method: s.method.to_string(),
        path: s.path.clone(),
        status: s.status,
        cpu_ms: millis(s.cpu),
        wall_ms: millis(s.wall),
        kv_ops: s.kv_ops,
        kv_ms: millis(s.kv_time),
        logs: s
            .logs
            .iter()
            .map(|l| TailLog {
                stream: match l.stream {
                    LogStream::Stdout => verge_api::LogStream::Stdout,
                    LogStream::Stderr => verge_api::LogStream::Stderr,
                },
                text: l.text.clone(),
            })
            .collect(),
        logs_dropped: s.logs_dropped as u64,
        termination: s.termination.as_ref().map(|t| TailTermination {
            reason: t.reason().to_string(),
            message: t.to_string(),
        }),
    }
}

/// The event's JSON in at most `max` bytes: log lines dropped from the end
/// until it fits, counted in `logs_dropped`; `None` if even the bare event
/// is larger.
fn fit(mut event: TailEvent, max: usize) -> Option<String> {
    loop {
        let json = serde_json::to_string(&event).ok()?;
        if json.len() <= max {
            return Some(json);
        }
        let line = event.logs.pop()?;
        event.logs_dropped += line.text.len() as u64 + 1;
    }
}

/// What a client wants to see; every set filter must match.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailFilter {
    /// A status class: `2xx`, `4xx`, `5xx` ... (comma-separated for several).
    pub status: Option<String>,
    /// A method, e.g. `POST` (comma-separated for several).
    pub method: Option<String>,
    /// A path prefix, e.g. `/api/`.
    pub path: Option<String>,
    /// Text to find in the path, a log line or the termination reason.
    pub search: Option<String>,
}

impl TailFilter {
    /// Checks the filter's values; the error names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(status) = &self.status {
            for class in status.split(',') {
                let valid = class.len() == 3
                    && class.as_bytes()[0].is_ascii_digit()
                    && class[1..].eq_ignore_ascii_case("xx");
                if !valid {
                    return Err(format!(
                        "status filter {class:?} is not a status class like 2xx or 5xx"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn matches(&self, e: &TailEvent) -> bool {
        let status_ok = self.status.as_ref().is_none_or(|classes| {
            classes
                .split(',')
                .any(|c| c.as_bytes().first() == Some(&(b'0' + (e.status / 100) as u8)))
        });
        let method_ok = self.method.as_ref().is_none_or(|methods| {
            methods
                .split(',')
                .any(|m| m.eq_ignore_ascii_case(&e.method))
        });
        let path_ok = self
            .path
            .as_ref()
            .is_none_or(|p| e.path.starts_with(p.as_str()));
        let search_ok = self.search.as_ref().is_none_or(|needle| {
            e.path.contains(needle.as_str())
                || e.logs.iter().any(|l| l.text.contains(needle.as_str()))
                || e.termination
                    .as_ref()
                    .is_some_and(|t| t.message.contains(needle.as_str()))
        });
        status_ok && method_ok && path_ok && search_ok
    }
}

/// The tail channels, by worker, and what this node relays to others.
pub struct TailHub {
    /// This node's name, in its events.
    node: String,
    channels: RwLock<HashMap<String, broadcast::Sender<Arc<TailEvent>>>>,
    /// Workers other nodes tail, and until when this node relays theirs.
    relayed: Mutex<HashMap<String, Instant>>,
    /// Whether `relayed` has entries: the request path checks only this.
    relaying: AtomicBool,
    /// Events on their way to other nodes, once relaying is set up.
    outbox: std::sync::OnceLock<mpsc::Sender<Arc<TailEvent>>>,
    /// Events not relayed because the outbox was full.
    relay_dropped: AtomicU64,
}

/// Events waiting to be relayed at most; past it they are dropped (and
/// counted) rather than slowing requests down.
const OUTBOX: usize = 4096;

impl TailHub {
    pub fn new(node: &str) -> TailHub {
        TailHub {
            node: node.to_string(),
            channels: RwLock::default(),
            relayed: Mutex::default(),
            relaying: AtomicBool::new(false),
            outbox: std::sync::OnceLock::new(),
            relay_dropped: AtomicU64::new(0),
        }
    }

    /// Starts watching `worker`.
    pub fn subscribe(&self, worker: &str) -> broadcast::Receiver<Arc<TailEvent>> {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(worker.to_string())
            .or_insert_with(|| broadcast::channel(TAIL_BUFFER).0)
            .subscribe()
    }

    /// Whether anyone on this node watches a tail.
    pub fn watched(&self) -> bool {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        channels.values().any(|s| s.receiver_count() > 0)
    }

    /// Sends a finished request to the worker's watchers, here and (while
    /// another node tails the worker) there.
    pub fn publish(&self, summary: &RequestSummary) {
        let relay = self.relaying.load(Ordering::Relaxed) && self.relays(&summary.worker);
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let sender = channels.get(&*summary.worker);
        if sender.is_none() && !relay {
            return;
        }
        let event = Arc::new(event_of(summary, &self.node));
        if relay
            && let Some(outbox) = self.outbox.get()
            && outbox.try_send(event.clone()).is_err()
        {
            self.relay_dropped.fetch_add(1, Ordering::Relaxed);
        }
        let Some(sender) = sender else { return };
        if sender.send(event).is_ok() {
            return;
        }
        drop(channels);
        // Nobody listens any more: forget the channel, unless someone
        // subscribed in between.
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if channels
            .get(&*summary.worker)
            .is_some_and(|s| s.receiver_count() == 0)
        {
            channels.remove(&*summary.worker);
        }
    }

    /// Passes on events another node relayed, to this node's watchers of
    /// their workers.
    pub fn deliver(&self, batch: &str) {
        let Ok(batch) = serde_json::from_str::<RelayBatch>(batch) else {
            tracing::debug!("ignored a tail batch this node cannot read");
            return;
        };
        if batch.node == self.node {
            return;
        }
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        for event in batch.events {
            if let Some(sender) = channels.get(&event.worker) {
                let _ = sender.send(Arc::new(event));
            }
        }
    }

    /// Relays `worker`'s events to other nodes for the next [`TAIL_LEASE`].
    pub fn relay_for(&self, worker: &str) {
        let mut relayed = self.relayed.lock().unwrap_or_else(|p| p.into_inner());
        relayed.insert(worker.to_string(), Instant::now() + TAIL_LEASE);
        self.relaying.store(true, Ordering::Relaxed);
    }

    /// Whether `worker`'s events go to other nodes now; forgets leases that
    /// ran out.
    fn relays(&self, worker: &str) -> bool {
        let mut relayed = self.relayed.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        relayed.retain(|_, until| *until > now);
        if relayed.is_empty() {
            self.relaying.store(false, Ordering::Relaxed);
        }
        relayed.contains_key(worker)
    }

    /// Sets up relaying: the events to send come out of the receiver.
    pub fn relay_outbox(&self) -> Option<mpsc::Receiver<Arc<TailEvent>>> {
        let (sender, receiver) = mpsc::channel(OUTBOX);
        self.outbox.set(sender).ok()?;
        Some(receiver)
    }

    /// Events not relayed since the last call because too many waited.
    pub fn take_relay_dropped(&self) -> u64 {
        self.relay_dropped.swap(0, Ordering::Relaxed)
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

/// What one NOTIFY carries between nodes.
#[derive(Serialize, Deserialize)]
struct RelayBatch {
    node: String,
    events: Vec<TailEvent>,
}

/// Packs events into batches of at most [`TAIL_PAYLOAD_MAX`] bytes of JSON,
/// trimming log lines off an event that would not fit alone.
pub fn relay_batches(node: &str, events: Vec<Arc<TailEvent>>) -> Vec<String> {
    let head = serde_json::to_string(&RelayBatch {
        node: node.to_string(),
        events: Vec::new(),
    })
    .unwrap_or_default();
    // `{"node":"…","events":[` + events joined by `,` + `]}`
    let room = TAIL_PAYLOAD_MAX.saturating_sub(head.len());
    let mut batches = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = 0;
    for event in events {
        let Some(json) = fit(TailEvent::clone(&event), room) else {
            continue;
        };
        if !current.is_empty() && size + 1 + json.len() > room {
            batches.push(std::mem::take(&mut current));
            size = 0;
        }
        size += json.len() + usize::from(!current.is_empty());
        current.push(json);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    let prefix = &head[..head.len() - 2];
    batches
        .into_iter()
        .map(|events| format!("{prefix}{}]}}", events.join(",")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use verge_runtime::RequestId;

    fn summary(worker: &str, method: &str, path: &str, status: u16) -> RequestSummary {
        RequestSummary {
            id: RequestId::next(),
            worker: worker.into(),
            method: method.parse().unwrap(),
            path: path.into(),
            status,
            cpu: Duration::from_micros(700),
            wall: Duration::from_millis(2),
            termination: None,
            kv_ops: 1,
            kv_time: Duration::from_micros(9),
            logs: Vec::new(),
            logs_dropped: 0,
        }
    }

    #[test]
    fn filters_combine() {
        let event = event_of(&summary("w", "POST", "/api/todos", 201), "n");
        let filter = |status: Option<&str>,
                      method: Option<&str>,
                      path: Option<&str>,
                      search: Option<&str>| TailFilter {
            status: status.map(Into::into),
            method: method.map(Into::into),
            path: path.map(Into::into),
            search: search.map(Into::into),
        };
        assert!(filter(None, None, None, None).matches(&event));
        assert!(filter(Some("2xx"), Some("post"), Some("/api/"), Some("todos")).matches(&event));
        assert!(filter(Some("4xx,2xx"), None, None, None).matches(&event));
        assert!(!filter(Some("5xx"), None, None, None).matches(&event));
        assert!(!filter(None, Some("GET"), None, None).matches(&event));
        assert!(!filter(None, None, Some("/web"), None).matches(&event));
        assert!(!filter(None, None, None, Some("users")).matches(&event));
        assert!(filter(Some("2XX"), None, None, None).validate().is_ok());
        assert!(
            filter(Some("200"), None, None, None)
                .validate()
                .unwrap_err()
                .contains("\"200\"")
        );
    }

    #[tokio::test]
    async fn watchers_get_their_worker_only_and_a_slow_one_learns_what_it_lost() {
        let hub = TailHub::new("n");
        let mut rx = hub.subscribe("a");
        hub.publish(&summary("b", "GET", "/other", 200));
        hub.publish(&summary("a", "GET", "/mine", 200));
        assert_eq!(rx.recv().await.unwrap().path, "/mine");

        for n in 0..TAIL_BUFFER + 10 {
            hub.publish(&summary("a", "GET", &format!("/{n}"), 200));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(lost)) => assert_eq!(lost, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(rx.recv().await.unwrap().path, "/10");

        // With no watcher left, the channel goes away.
        drop(rx);
        hub.publish(&summary("a", "GET", "/x", 200));
        assert!(hub.channels.read().unwrap().is_empty());
    }

    #[test]
    fn relayed_events_fit_in_batches_and_reach_another_hub() {
        let a = TailHub::new("a");
        let b = TailHub::new("b");
        let mut outbox = a.relay_outbox().unwrap();
        // Nobody on b tails `w` yet: a relays nothing.
        a.publish(&summary("w", "GET", "/before", 200));
        assert!(outbox.try_recv().is_err());

        let mut watcher = b.subscribe("w");
        a.relay_for("w");
        let mut chatty = summary("w", "GET", "/chatty", 500);
        chatty.logs = (0..200)
            .map(|n| verge_runtime::guest_log::LogLine {
                stream: LogStream::Stdout,
                text: format!("line {n} {}", "x".repeat(80)),
            })
            .collect();
        a.publish(&chatty);
        for n in 0..100 {
            a.publish(&summary("w", "GET", &format!("/{n}"), 200));
        }
        a.publish(&summary("other", "GET", "/not-relayed", 200));
        let mut events = Vec::new();
        while let Ok(event) = outbox.try_recv() {
            events.push(event);
        }
        assert_eq!(events.len(), 101, "w's events only");
        let batches = relay_batches("a", events);
        assert!(batches.len() > 1);
        for batch in &batches {
            assert!(batch.len() <= TAIL_PAYLOAD_MAX, "{}", batch.len());
            b.deliver(batch);
            // A node ignores its own batches.
            a.deliver(batch);
        }
        let first = watcher.try_recv().unwrap();
        assert_eq!((first.path.as_str(), first.node.as_str()), ("/chatty", "a"));
        assert!(first.logs.len() < 200 && first.logs_dropped > 0);
        for n in 0..100 {
            assert_eq!(watcher.try_recv().unwrap().path, format!("/{n}"));
        }
        assert!(watcher.try_recv().is_err());
    }
}
