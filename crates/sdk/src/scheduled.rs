//! Cron triggers. A worker declares schedules in `verge.toml`
//! (`[triggers] crons = ["*/5 * * * *"]`); at each tick one node of the
//! cluster calls the worker with a `POST` to [`SCHEDULED_PATH`] carrying the
//! schedule and the tick in the query, under the same limits as any request.
//! [`Router::scheduled`](crate::Router::scheduled) routes it to a handler.
//! The node marks the run with the [`SCHEDULED_HEADER`] request header,
//! which it removes from every client's request, and
//! [`Router::scheduled`](crate::Router::scheduled) takes only requests that
//! carry it: a client cannot fire a trigger by writing the path (a worker
//! that reads requests itself should check the header the same way). Under
//! `verge dev` a client may, to fire a trigger by hand:
//!
//! ```text
//! curl -X POST 'http://127.0.0.1:8787/.well-known/verge/scheduled?cron=*/5+*+*+*+*'
//! ```

use crate::{Error, Request};

/// The path scheduled runs arrive on.
pub const SCHEDULED_PATH: &str = "/.well-known/verge/scheduled";

/// The request header that marks a run as the node's own; no client
/// request reaches a worker with it.
pub const SCHEDULED_HEADER: &str = "verge-scheduled";

/// One tick of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledEvent {
    /// The schedule, as written in `verge.toml`.
    pub cron: String,
    /// When the tick was due, in Unix milliseconds (now, for a run fired by
    /// hand without `time`).
    pub scheduled_time: u64,
}

/// Decodes `%XX` escapes and `+` (a space); a `%` not followed by two hex
/// digits stays as it is.
fn unescape(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ScheduledEvent {
    /// Whether the node sent `request` as a scheduled run (it carries
    /// [`SCHEDULED_HEADER`]).
    pub fn is_scheduled(request: &Request) -> bool {
        request.headers().contains_key(SCHEDULED_HEADER)
    }

    /// The event `request` carries: `Err` (a 400) if it names no schedule.
    /// It does not check who sent it: see [`ScheduledEvent::is_scheduled`].
    pub fn from_request(request: &Request) -> Result<ScheduledEvent, Error> {
        let mut cron = None;
        let mut time = None;
        for pair in request.uri().query().unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "cron" => cron = Some(unescape(value)),
                "time" => time = value.parse().ok(),
                _ => {}
            }
        }
        let cron = cron.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
            Error::bad_request(format!(
                "a scheduled run names its schedule: {SCHEDULED_PATH}?cron=*/5+*+*+*+*"
            ))
        })?;
        Ok(ScheduledEvent {
            cron,
            scheduled_time: time.unwrap_or_else(now_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn request(uri: &str) -> Request {
        http::Request::post(uri).body(Bytes::new()).unwrap()
    }

    #[test]
    fn the_node_s_query_and_a_hand_typed_one_both_decode() {
        let event = ScheduledEvent::from_request(&request(
            "/.well-known/verge/scheduled?cron=*/5%20*%20*%20*%20*&time=1800000000000",
        ))
        .unwrap();
        assert_eq!(event.cron, "*/5 * * * *");
        assert_eq!(event.scheduled_time, 1_800_000_000_000);
        let by_hand =
            ScheduledEvent::from_request(&request("/.well-known/verge/scheduled?cron=0+3+*+*+*"))
                .unwrap();
        assert_eq!(by_hand.cron, "0 3 * * *");
        assert!(by_hand.scheduled_time > 1_700_000_000_000, "now");
        let missing = ScheduledEvent::from_request(&request("/.well-known/verge/scheduled"));
        assert_eq!(missing.unwrap_err().status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(unescape("100%+é%2"), "100% é%2");
    }
}
