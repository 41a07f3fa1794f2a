//! Prometheus metrics: per-worker request counts, errors, CPU and latency
//! histograms and KV operations, recorded from each request's summary; the
//! node's instances, compile-cache results, deployed workers and KV cache.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use verge_kv::CachedStore;
use verge_runtime::{CompileSource, RequestSummary};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    worker: String,
    /// `2xx`, `4xx` ...
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    worker: String,
    /// Why the request ended early: `cpu`, `wall`, `panic` ...
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: String,
}

type Histograms = Family<WorkerLabel, Histogram, fn() -> Histogram>;

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    cpu: Histograms,
    wall: Histograms,
    kv_ops: Family<WorkerLabel, Counter>,
    compiles: Family<CacheLabels, Counter>,
    instances_busy: Gauge,
    worker_instances_busy: Family<WorkerLabel, Gauge>,
    instances_idle: Gauge,
    memory_used: Gauge,
    memory_budget: Gauge,
    workers: Gauge,
    kv_cache_hits: Counter,
    kv_cache_misses: Counter,
    kv_cache_stale: Counter,
    kv_cache_bytes: Gauge,
    /// Encoding walks every family; one scrape at a time.
    scrape: Mutex<()>,
}

fn cpu_histogram() -> Histogram {
    // 50 µs to ~3.3 s: Workers' 50 ms default sits in the middle.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

fn wall_histogram() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("verge");
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let cpu: Histograms = Family::new_with_constructor(cpu_histogram);
        let wall: Histograms = Family::new_with_constructor(wall_histogram);
        let kv_ops = Family::<WorkerLabel, Counter>::default();
        let compiles = Family::<CacheLabels, Counter>::default();
        let instances_busy = Gauge::default();
        let worker_instances_busy = Family::<WorkerLabel, Gauge>::default();
        let instances_idle = Gauge::default();
        let memory_used = Gauge::default();
        let memory_budget = Gauge::default();
        let workers = Gauge::default();
        registry.register(
            "requests",
            "Requests served, by worker and status class",
            requests.clone(),
        );
        registry.register(
            "request_errors",
            "Requests a worker did not finish normally, by reason (cpu, wall, memory, panic, trap ...)",
            errors.clone(),
        );
        registry.register(
            "request_cpu_seconds",
            "Guest CPU time per request",
            cpu.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Wall time per request, from arrival to the end of the response",
            wall.clone(),
        );
        registry.register(
            "kv_operations",
            "KV operations made by guests",
            kv_ops.clone(),
        );
        registry.register(
            "component_loads",
            "Component loads, by where the code came from (hit: the compile cache; shared: another node, through the store; miss: compiled here)",
            compiles.clone(),
        );
        registry.register(
            "instances_busy",
            "Instances serving a request now",
            instances_busy.clone(),
        );
        registry.register(
            "worker_instances_busy",
            "Instances serving a request now, by worker (its versions together)",
            worker_instances_busy.clone(),
        );
        registry.register(
            "instances_idle",
            "Instances kept for reuse",
            instances_idle.clone(),
        );
        registry.register(
            "memory_used_bytes",
            "Memory requests hold now, guest memory and host side, against the budget",
            memory_used.clone(),
        );
        registry.register(
            "memory_budget_bytes",
            "The node's memory budget for requests",
            memory_budget.clone(),
        );
        registry.register("workers", "Workers deployed on this node", workers.clone());
        let kv_cache_hits = Counter::default();
        let kv_cache_misses = Counter::default();
        let kv_cache_stale = Counter::default();
        let kv_cache_bytes = Gauge::default();
        registry.register(
            "kv_cache_hits",
            "KV reads served from this node's cache (PostgreSQL store)",
            kv_cache_hits.clone(),
        );
        registry.register(
            "kv_cache_misses",
            "KV reads the cache sent to the store",
            kv_cache_misses.clone(),
        );
        registry.register(
            "kv_cache_stale_served",
            "Aged cached KV reads served because the store did not answer",
            kv_cache_stale.clone(),
        );
        registry.register(
            "kv_cache_bytes",
            "Bytes the KV cache holds",
            kv_cache_bytes.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            cpu,
            wall,
            kv_ops,
            compiles,
            instances_busy,
            worker_instances_busy,
            instances_idle,
            memory_used,
            memory_budget,
            workers,
            kv_cache_hits,
            kv_cache_misses,
            kv_cache_stale,
            kv_cache_bytes,
            scrape: Mutex::new(()),
        }
    }

    /// Counts one finished request.
    pub fn record(&self, s: &RequestSummary) {
        let worker = s.worker.to_string();
        self.requests
            .get_or_create(&RequestLabels {
                worker: worker.clone(),
                status: format!("{}xx", s.status / 100),
            })
            .inc();
        if let Some(t) = &s.termination {
            self.errors
                .get_or_create(&ErrorLabels {
                    worker: worker.clone(),
                    reason: t.reason().to_string(),
                })
                .inc();
        }
        let label = WorkerLabel { worker };
        self.cpu.get_or_create(&label).observe(s.cpu.as_secs_f64());
        self.wall
            .get_or_create(&label)
            .observe(s.wall.as_secs_f64());
        if s.kv_ops > 0 {
            self.kv_ops
                .get_or_create(&label)
                .inc_by(u64::from(s.kv_ops));
        }
    }

    /// Counts a component load.
    pub fn record_load(&self, source: CompileSource) {
        let result = match source {
            CompileSource::Cache => "hit",
            CompileSource::Shared => "shared",
            CompileSource::Compiled(_) => "miss",
        };
        self.compiles
            .get_or_create(&CacheLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The text exposition, with the gauges read now.
    pub fn encode(
        &self,
        busy: u32,
        busy_by_worker: &[(String, u32)],
        idle: u32,
        (memory_used, memory_budget): (u64, u64),
        workers: usize,
        kv_cache: Option<&CachedStore>,
    ) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cache) = kv_cache {
            let stats = cache.stats();
            let read = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
            self.kv_cache_hits
                .inner()
                .store(read(&stats.hits), Ordering::Relaxed);
            self.kv_cache_misses
                .inner()
                .store(read(&stats.misses), Ordering::Relaxed);
            self.kv_cache_stale
                .inner()
                .store(read(&stats.stale_served), Ordering::Relaxed);
            self.kv_cache_bytes.set(cache.bytes() as i64);
        }
        self.instances_busy.set(i64::from(busy));
        self.worker_instances_busy.clear();
        for (worker, busy) in busy_by_worker {
            self.worker_instances_busy
                .get_or_create(&WorkerLabel {
                    worker: worker.clone(),
                })
                .set(i64::from(*busy));
        }
        self.instances_idle.set(i64::from(idle));
        self.memory_used.set(memory_used as i64);
        self.memory_budget.set(memory_budget as i64);
        self.workers.set(workers as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
