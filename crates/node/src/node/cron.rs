//! Cron triggers: each tick of a served worker's schedules runs once in the
//! cluster, on the node that claims it in the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use verge_deploy::{CronRun, RunOutcome, StoreError};

use super::{Node, NodeError, not_deployed};
use crate::registry::SCHEDULED_PATH;
use verge_runtime::server::SCHEDULED_HEADER;

/// Ticks a node catches up on at most after falling behind (a stalled
/// process, a suspended machine); older ones are skipped.
const MAX_LATE_TICKS: usize = 10;

impl Node {
    /// Runs cron triggers: at each tick of a served worker's schedules,
    /// every node asks the store for the run, and the one that gets it
    /// invokes the worker's stable version. A tick no node could claim (the
    /// store was away) is skipped, not run twice later.
    pub(super) fn run_schedules(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        let clock = self.stores.clock.clone();
        tokio::spawn(async move {
            let mut checked = clock.now_ms();
            // Each served schedule's next tick, computed when it is first
            // seen and after it fires: once per tick, not once a second.
            let mut upcoming: HashMap<(String, String), Option<u64>> = HashMap::new();
            loop {
                let Some(this) = node.upgrade() else { return };
                let served: Vec<(String, verge_manifest::Schedule)> = this
                    .registry
                    .all()
                    .into_iter()
                    .flat_map(|(worker, live)| {
                        live.crons
                            .iter()
                            .map(|cron| (worker.clone(), cron.clone()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                drop(this);
                upcoming.retain(|(worker, text), _| {
                    served
                        .iter()
                        .any(|(w, cron)| w == worker && cron.as_str() == text)
                });
                for (worker, cron) in &served {
                    upcoming
                        .entry((worker.clone(), cron.as_str().to_string()))
                        .or_insert_with(|| cron.next_after(checked));
                }
                // Wake for the next tick, or after a second to see new
                // deploys' schedules.
                let next = upcoming
                    .values()
                    .flatten()
                    .min()
                    .copied()
                    .unwrap_or(u64::MAX)
                    .min(checked + 1000);
                let now = clock.now_ms();
                if next > now {
                    tokio::time::sleep(std::time::Duration::from_millis(next - now)).await;
                }
                let Some(this) = node.upgrade() else { return };
                let now = clock.now_ms();
                for (worker, cron) in &served {
                    let key = (worker.clone(), cron.as_str().to_string());
                    let Some(Some(first)) = upcoming.get(&key).copied() else {
                        continue;
                    };
                    let mut due = Vec::new();
                    let mut tick = Some(first);
                    while let Some(t) = tick.filter(|t| *t <= now) {
                        due.push(t);
                        tick = cron.next_after(t);
                    }
                    upcoming.insert(key, tick);
                    if due.len() > MAX_LATE_TICKS {
                        tracing::warn!(
                            worker,
                            cron = cron.as_str(),
                            "{} ticks were missed while the node was stalled; running the last",
                            due.len() - 1
                        );
                        due.drain(..due.len() - 1);
                    }
                    for t in due {
                        let node = this.clone();
                        let (worker, cron) = (worker.clone(), cron.as_str().to_string());
                        tokio::spawn(async move {
                            if let Err(e) = node.run_tick(&worker, &cron, t).await {
                                tracing::warn!(
                                    worker,
                                    cron,
                                    "cannot claim a cron tick, skipping it: {e}"
                                );
                            }
                        });
                    }
                }
                checked = now.max(checked);
            }
        });
    }

    /// Runs `worker`'s tick of `cron` if this node is the one to.
    async fn run_tick(
        &self,
        worker: &str,
        cron: &str,
        tick: u64,
    ) -> Result<Option<CronRun>, StoreError> {
        let claimed = self
            .stores
            .crons
            .claim_tick(worker, cron, tick, &self.node_id)
            .await?;
        if !claimed {
            return Ok(None);
        }
        let outcome = self.invoke_scheduled(worker, cron, tick).await;
        if let Err(e) = self
            .stores
            .crons
            .finish_tick(worker, cron, tick, &outcome)
            .await
        {
            tracing::warn!(worker, cron, "cannot record a cron run: {e}");
        }
        Ok(Some(CronRun {
            cron: cron.to_string(),
            tick,
            node: self.node_id.clone(),
            status: Some(outcome.status),
            wall_ms: Some(outcome.wall_ms),
            error: outcome.error,
        }))
    }

    /// Calls `worker`'s scheduled handler: a `POST` to [`SCHEDULED_PATH`]
    /// with the schedule and the tick in the query and [`SCHEDULED_HEADER`]
    /// (which no client request keeps), through the same path
    /// as any request (limits, request log, metrics, tail).
    async fn invoke_scheduled(&self, worker: &str, cron: &str, tick: u64) -> RunOutcome {
        let failed = |error: String| RunOutcome {
            status: 503,
            wall_ms: 0,
            error: Some(error),
        };
        let Some(live) = self.registry.get(worker) else {
            return failed(format!("worker `{worker}` is not served on this node"));
        };
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("cron", cron)
            .append_pair("time", &tick.to_string())
            .finish();
        let request = http::Request::post(format!("{SCHEDULED_PATH}?{query}"))
            .header(
                http::header::HOST,
                format!("{worker}.{}", self.config.domain),
            )
            .header(SCHEDULED_HEADER, "1")
            .body(Bytes::new());
        let request = match request {
            Ok(request) => request,
            Err(e) => return failed(format!("cannot make the scheduled request: {e}")),
        };
        let started = Instant::now();
        let response = live.stable.clone().handle_bytes(request).await;
        let status = response.status().as_u16();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let error = (status >= 400).then(|| {
            let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
            text.trim().to_string()
        });
        RunOutcome {
            status,
            wall_ms: started.elapsed().as_millis() as u64,
            error,
        }
    }

    /// Runs one of `worker`'s schedules now, as a tick would (the admin
    /// API's manual run): `cron` may be left out when it has one.
    pub async fn run_schedule_now(
        &self,
        worker: &str,
        cron: Option<&str>,
    ) -> Result<CronRun, NodeError> {
        let live = self
            .registry
            .get(worker)
            .ok_or_else(|| not_deployed(worker))?;
        let schedules: Vec<&str> = live.crons.iter().map(|c| c.as_str()).collect();
        let cron = match cron {
            Some(cron) => {
                let cron = cron.split_whitespace().collect::<Vec<_>>().join(" ");
                if !schedules.contains(&cron.as_str()) {
                    return Err(NodeError::Invalid {
                        message: format!("worker `{worker}` has no schedule `{cron}`"),
                        help: format!(
                            "its schedules: {schedules:?} ([triggers] crons in verge.toml)"
                        ),
                    });
                }
                cron
            }
            None => match schedules.as_slice() {
                [one] => one.to_string(),
                _ => {
                    return Err(NodeError::Invalid {
                        message: format!(
                            "worker `{worker}` has {} schedules; say which to run",
                            schedules.len()
                        ),
                        help: format!(
                            "send {{\"cron\": \"...\"}}, one of {schedules:?}; schedules are \
                             [triggers] crons in verge.toml"
                        ),
                    });
                }
            },
        };
        self.run_tick(worker, &cron, self.now_ms())
            .await?
            .ok_or_else(|| NodeError::Conflict("another run took this millisecond; retry".into()))
    }

    /// A worker's schedules with their next ticks, and its latest runs.
    pub async fn schedules(
        &self,
        worker: &str,
    ) -> Result<(Vec<(String, Option<u64>)>, Vec<CronRun>), NodeError> {
        let live = self
            .registry
            .get(worker)
            .ok_or_else(|| not_deployed(worker))?;
        let now = self.now_ms();
        let crons = live
            .crons
            .iter()
            .map(|c| (c.as_str().to_string(), c.next_after(now)))
            .collect();
        let runs = self.stores.crons.cron_runs(worker, 50).await?;
        Ok((crons, runs))
    }
}
