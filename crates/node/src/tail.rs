//! The live tail: every finished request of a worker, sent to whoever
//! watches it, filtered on the node.
//!
//! Each watched worker has a broadcast channel holding the last
//! [`TAIL_BUFFER`] events. Nothing is sampled: a client that keeps up sees
//! every request. A client that falls more than the buffer behind loses the
//! oldest events and is told how many, in a `dropped` event, then carries on
//! from the newest. Workers nobody watches cost one map lookup per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::broadcast;
use verge_runtime::RequestSummary;
use verge_runtime::guest_log::LogStream;

/// Events a slow client may fall behind by before it loses some.
pub const TAIL_BUFFER: usize = 1024;

/// One request, as the tail shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TailEvent {
    pub time: String,
    pub id: String,
    pub worker: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub cpu_ms: f64,
    pub wall_ms: f64,
    pub kv_ops: u32,
    pub kv_ms: f64,
    pub logs: Vec<TailLog>,
    #[serde(skip_serializing_if = "is_zero")]
    pub logs_dropped: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination: Option<TailTermination>,
}

/// Milliseconds to the microsecond.
fn millis(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Serialize)]
pub struct TailLog {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub text: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct TailTermination {
    pub reason: &'static str,
    pub message: String,
}

impl TailEvent {
    pub fn from_summary(s: &RequestSummary) -> TailEvent {
        TailEvent {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            id: s.id.to_string(),
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
                        LogStream::Stdout => "stdout",
                        LogStream::Stderr => "stderr",
                    },
                    text: l.text.clone(),
                })
                .collect(),
            logs_dropped: s.logs_dropped,
            termination: s.termination.as_ref().map(|t| TailTermination {
                reason: t.reason(),
                message: t.to_string(),
            }),
        }
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

/// The tail channels, by worker.
#[derive(Default)]
pub struct TailHub {
    channels: RwLock<HashMap<String, broadcast::Sender<Arc<TailEvent>>>>,
}

impl TailHub {
    /// Starts watching `worker`.
    pub fn subscribe(&self, worker: &str) -> broadcast::Receiver<Arc<TailEvent>> {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(worker.to_string())
            .or_insert_with(|| broadcast::channel(TAIL_BUFFER).0)
            .subscribe()
    }

    /// Sends a finished request to the worker's watchers, if it has any.
    pub fn publish(&self, summary: &RequestSummary) {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = channels.get(&*summary.worker) else {
            return;
        };
        if sender
            .send(Arc::new(TailEvent::from_summary(summary)))
            .is_ok()
        {
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
        let event = TailEvent::from_summary(&summary("w", "POST", "/api/todos", 201));
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
        let hub = TailHub::default();
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
}
