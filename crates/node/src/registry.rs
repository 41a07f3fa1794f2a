//! The workers a node serves now, and which one a request goes to.
//!
//! The table is copied on write and swapped whole: a deploy builds the new
//! table beside the old and puts it in place with one pointer store, so a
//! request sees either the old version or the new, never a mix, and routing
//! takes a read lock only long enough to clone an `Arc`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use http::Request;
use verge_deploy::Deployment;
use verge_manifest::{RoutePattern, Schedule, request_host};
use verge_runtime::Worker;
use verge_runtime::server::{Dispatch, SCHEDULED_HEADER};

/// A worker taking traffic: its deployment and the loaded versions in it.
pub struct Live {
    pub deployment: Deployment,
    pub routes: Vec<RoutePattern>,
    /// The stable version's cron triggers.
    pub crons: Vec<Schedule>,
    pub stable: Arc<Worker>,
    /// The version in gradual rollout and its percentage.
    pub canary: Option<(Arc<Worker>, u8)>,
    counter: AtomicU64,
}

impl Live {
    pub fn new(
        deployment: Deployment,
        routes: Vec<RoutePattern>,
        crons: Vec<Schedule>,
        stable: Arc<Worker>,
        canary: Option<(Arc<Worker>, u8)>,
    ) -> Live {
        Live {
            deployment,
            routes,
            crons,
            stable,
            canary,
            counter: AtomicU64::new(0),
        }
    }

    /// The version that serves the next request. The split follows a
    /// counter rather than a coin: request `n` goes to the canary when
    /// `n * 37 mod 100` is below its percentage, and 37 is coprime with 100,
    /// so every 100 consecutive requests give the canary exactly its share,
    /// spread out instead of in one run.
    pub fn pick(&self) -> &Arc<Worker> {
        match &self.canary {
            None => &self.stable,
            Some((canary, percent)) => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                if (n % 100) * 37 % 100 < u64::from(*percent) {
                    canary
                } else {
                    &self.stable
                }
            }
        }
    }
}

#[derive(Clone, Default)]
struct Table {
    workers: HashMap<String, Arc<Live>>,
    /// Every worker's routes, most specific first.
    routes: Vec<(RoutePattern, String)>,
}

/// The workers of a node, by name and by route.
pub struct Registry {
    table: RwLock<Arc<Table>>,
    /// Workers answer at `NAME.<domain>`; stored with a leading dot.
    domain_suffix: String,
    /// The worker that takes requests nothing else matches (`verge dev`).
    fallback: RwLock<Option<String>>,
    /// Clients may reach the node's reserved paths ([`NodeConfig::dev`](crate::NodeConfig::dev)).
    dev: bool,
}

impl Registry {
    /// The workers of a node whose workers answer at `NAME.<domain>`; on a
    /// `dev` node, clients may fire cron triggers at [`SCHEDULED_PATH`].
    pub fn new(domain: &str, dev: bool) -> Registry {
        Registry {
            table: RwLock::new(Arc::default()),
            domain_suffix: format!(".{domain}"),
            fallback: RwLock::new(None),
            dev,
        }
    }

    /// Sends requests no route or name matches to `worker` (as `verge dev`
    /// does with its one worker), or to nobody.
    pub fn set_fallback(&self, worker: Option<String>) {
        *self.fallback.write().unwrap_or_else(|p| p.into_inner()) = worker;
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut Table)) {
        let mut slot = self.table.write().unwrap_or_else(|p| p.into_inner());
        let mut table = Table::clone(&slot);
        change(&mut table);
        let mut routes = Vec::new();
        for (name, live) in &table.workers {
            for route in &live.routes {
                // Refused at deploy; a version deployed before that check
                // does not get another worker's traffic either.
                match self.foreign_host(name, route) {
                    Some(why) => tracing::warn!(worker = %name, "route ignored: {why}"),
                    None => routes.push((route.clone(), name.clone())),
                }
            }
        }
        // Most specific first. Two different patterns that match one request
        // never have the same specificity, so the order between them does
        // not depend on the map's; names break ties for a stable table.
        routes.sort_by(|(a, a_name), (b, b_name)| {
            b.specificity()
                .cmp(&a.specificity())
                .then_with(|| a.to_string().cmp(&b.to_string()))
                .then_with(|| a_name.cmp(b_name))
        });
        table.routes = routes;
        *slot = Arc::new(table);
    }

    /// Puts `live` in place of the worker's current entry, if any.
    pub fn insert(&self, name: &str, live: Live) {
        let live = Arc::new(live);
        self.update(|table| {
            table.workers.insert(name.to_string(), live);
        });
    }

    /// Stops serving a worker; `false` if it was not served.
    pub fn remove(&self, name: &str) -> bool {
        let mut removed = false;
        self.update(|table| removed = table.workers.remove(name).is_some());
        removed
    }

    pub fn get(&self, name: &str) -> Option<Arc<Live>> {
        self.table().workers.get(name).cloned()
    }

    /// How many workers are served.
    pub fn len(&self) -> usize {
        self.table().workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every worker, by name.
    pub fn all(&self) -> Vec<(String, Arc<Live>)> {
        let mut all: Vec<_> = self
            .table()
            .workers
            .iter()
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Why `route` may not be `worker`'s: it reaches hosts under the node's
    /// domain other than the worker's own `NAME.<domain>` (and its
    /// subdomains), which belong to other workers, present or future.
    pub fn foreign_host(&self, worker: &str, route: &RoutePattern) -> Option<String> {
        let domain = &self.domain_suffix[1..];
        let own = format!(".{worker}{}", self.domain_suffix);
        let under_own = |host: &str| host.ends_with(&own) || host == &own[1..];
        let (wildcard, host) = route.host();
        let foreign = if wildcard {
            // `*.x` matches hosts ending in `.x`: all of the domain when the
            // domain ends with it, a part when it ends with the domain.
            self.domain_suffix.ends_with(host)
                || (host.ends_with(&self.domain_suffix) && !under_own(host))
        } else {
            (host == domain || host.ends_with(&self.domain_suffix)) && !under_own(host)
        };
        foreign.then(|| {
            format!(
                "route `{route}` reaches hosts under this node's domain `{domain}`, where each \
                 worker answers at NAME.{domain}; a worker's routes may use only its own \
                 `{}` and names under it",
                &own[1..]
            )
        })
    }

    /// A route of another worker identical to one of `routes`, with that
    /// worker's name.
    pub fn route_conflict(
        &self,
        worker: &str,
        routes: &[RoutePattern],
    ) -> Option<(RoutePattern, String)> {
        self.table()
            .routes
            .iter()
            .find(|(route, owner)| owner != worker && routes.contains(route))
            .cloned()
    }

    /// The worker for `host` (lowercase, no port) and `path`, or why none.
    pub fn find(&self, host: &str, path: &str) -> Result<Arc<Live>, String> {
        let table = self.table();
        if let Some((_, name)) = table.routes.iter().find(|(r, _)| r.matches(host, path))
            && let Some(live) = table.workers.get(name)
        {
            return Ok(live.clone());
        }
        if let Some(name) = host.strip_suffix(&self.domain_suffix)
            && let Some(live) = table.workers.get(name)
        {
            return Ok(live.clone());
        }
        let fallback = self.fallback.read().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = fallback.as_ref().and_then(|name| table.workers.get(name)) {
            return Ok(live.clone());
        }
        if let Some(name) = host.strip_suffix(&self.domain_suffix) {
            return Err(format!("no worker named `{name}` is deployed on this node"));
        }
        Err(format!(
            "no worker serves {host}{path}: workers answer at NAME{} and at the routes in their verge.toml",
            self.domain_suffix
        ))
    }
}

/// Where a node sends its scheduled runs. Clients cannot reach it, except
/// on `verge dev`'s node, where firing a trigger by hand is the point.
pub const SCHEDULED_PATH: &str = "/.well-known/verge/scheduled";

/// The path's segments as a guest's router may read them: unescaped,
/// lowercase, without empty or `.` segments (`//.WELL-KNOWN/%76erge/` is
/// `.well-known/verge`).
fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .to_lowercase()
        })
        .filter(|s| !s.is_empty() && s != ".")
        .collect()
}

/// Whether `path` is under `/.well-known/verge/`, however it is written.
fn is_reserved(path: &str) -> bool {
    let segments = segments(path);
    segments.len() >= 2 && segments[0] == ".well-known" && segments[1] == "verge"
}

impl Dispatch for Registry {
    fn route(&self, request: &mut Request<hyper::body::Incoming>) -> Result<Arc<Worker>, String> {
        let path = request.uri().path();
        if is_reserved(path) {
            if !self.dev {
                return Err(format!(
                    "{path} is reserved for the node's own cron triggers; \
                     run one by hand with `verge cron run` (the admin API's POST /v1/workers/NAME/schedules/run)"
                ));
            }
            // `verge dev`: firing a trigger by hand is a scheduled run.
            if path == SCHEDULED_PATH {
                request
                    .headers_mut()
                    .insert(SCHEDULED_HEADER, http::HeaderValue::from_static("1"));
            }
        }
        let host = request_host(request);
        let live = self.find(&host, request.uri().path())?;
        Ok(live.pick().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cannot_reach_other_workers_hosts_under_the_domain() {
        let registry = Registry::new("workers.example.com", false);
        let foreign = |worker: &str, route: &str| {
            registry
                .foreign_host(worker, &route.parse().unwrap())
                .is_some()
        };
        for route in [
            "victim.workers.example.com/*",
            "victim.workers.example.com/admin",
            "workers.example.com",
            "*.workers.example.com",
            "*.example.com/*",
            "*.com",
            "*.victim.workers.example.com",
            "api.victim.workers.example.com",
        ] {
            assert!(foreign("app", route), "{route}");
        }
        for route in [
            "app.workers.example.com/api/*",
            "api.app.workers.example.com",
            "*.app.workers.example.com/*",
            "api.example.com/*",
            "*.other.example.com",
            "example.com",
        ] {
            assert!(!foreign("app", route), "{route}");
        }
    }

    #[test]
    fn the_reserved_prefix_is_found_however_the_path_is_written() {
        for path in [
            "/.well-known/verge/scheduled",
            "//.well-known/verge/scheduled",
            "/./.well-known//verge/scheduled",
            "/.WELL-KNOWN/Verge/scheduled",
            "/%2ewell-known/%76erge/scheduled",
            "/.well-known/verge",
        ] {
            assert!(is_reserved(path), "{path}");
        }
        for path in [
            "/",
            "/.well-known/other",
            "/verge/.well-known",
            "/.well-known-verge/x",
        ] {
            assert!(!is_reserved(path), "{path}");
        }
    }
}
