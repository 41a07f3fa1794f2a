//! The engine every worker of a node shares, and the node-wide settings.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::{CompileCache, CompileSource, component_hash};
use crate::cpu::CpuMeter;
use crate::egress::AddressPolicy;
use crate::error::{LoadError, RuntimeError};
use crate::fair::{Fair, Gate, WorkerId};
use crate::limits::Limits;
use crate::log::{RequestSink, TracingSink};
use crate::memory::MemoryBudget;
use crate::state::InstanceState;
use crate::worker::{Worker, WorkerSpec};

/// Largest component a node accepts.
pub const MAX_COMPONENT_SIZE: usize = 10 * 1024 * 1024;

/// Node-wide runtime settings, chosen by the operator.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// The highest limits any worker may ask for.
    pub ceilings: Limits,
    /// Requests running at once on this node, all workers together.
    pub max_instances: u32,
    /// Requests one worker (by name, all its versions together) may run at
    /// once; a worker's manifest may ask for fewer.
    pub max_instances_per_worker: u32,
    /// How long a request waits for a free instance before a 503.
    pub queue_timeout: Duration,
    /// How long a client may send nothing of a request body it announced:
    /// before the guest starts, for the first [`PRE_READ`](crate::body)
    /// bytes in all; after, between two pieces. Then 408.
    pub body_read_timeout: Duration,
    /// Bytes all requests together may hold: guest linear memory plus the
    /// host side of each request (see [`memory`](crate::memory)).
    pub memory_budget: u64,
    /// Use the pooling instance allocator when the machine allows it.
    pub pooling: bool,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The secret every node of a cluster shares, which seals the compiled
    /// code they share through their store ([`Runtime::seal`],
    /// [`Runtime::load_shared`]); `None`: this node shares none.
    pub code_secret: Option<Vec<u8>>,
    /// Period of the epoch ticker, which bounds how far a guest can overrun
    /// its CPU limit and how often a busy guest yields to other requests.
    pub epoch_tick: Duration,
    /// Receives a summary of every request.
    pub sink: Arc<dyn RequestSink>,
    /// Which addresses guests' outbound requests may connect to.
    pub outbound_addresses: AddressPolicy,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            ceilings: Limits::default(),
            max_instances: 1000,
            max_instances_per_worker: 1000,
            queue_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(10),
            memory_budget: crate::memory::default_budget(),
            pooling: true,
            cache_dir: None,
            code_secret: None,
            epoch_tick: Duration::from_millis(1),
            sink: Arc::new(TracingSink),
            outbound_addresses: AddressPolicy::default(),
        }
    }
}

/// A worker's share of the node, by name.
#[derive(Clone)]
pub(crate) struct WorkerShare {
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) memory: Arc<MemoryBudget>,
    /// The worker's name to the background threads' gate.
    pub(crate) gate_id: WorkerId,
}

/// Instances kept idle for workers that reuse them, beyond `max_instances`.
pub(crate) const IDLE_INSTANCE_SLOTS: u32 = 64;

/// The wasmtime engine, the linker with every interface Verge provides, the
/// compile cache, and the node's instance budget.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<InstanceState>,
    pub(crate) cache: CompileCache,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) config: RuntimeConfig,
    /// Instances parked for reuse, all workers together.
    pub(crate) idle_instances: AtomicU32,
    /// The node's memory budget, all requests together.
    pub(crate) memory: Arc<MemoryBudget>,
    /// Each worker's share of the instances and of the memory budget, by
    /// worker name.
    worker_shares: std::sync::Mutex<std::collections::HashMap<String, WorkerShare>>,
    /// Threads for guests that compute for long, started on first use.
    background: std::sync::OnceLock<Option<BackgroundThreads>>,
    pooling: bool,
}

impl Runtime {
    /// Builds the engine (with the pooling allocator if it can reserve its
    /// address space here), links the WASI interfaces and starts the epoch
    /// ticker, which stops when the runtime is dropped.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Runtime>, RuntimeError> {
        if config.max_instances == 0 {
            return Err(RuntimeError::Config(
                "max_instances must be at least 1".into(),
            ));
        }
        let floor = u64::from(config.max_instances).saturating_mul(crate::memory::INSTANCE_FLOOR);
        if config.memory_budget < floor.max(config.ceilings.memory + crate::memory::REQUEST_BASE) {
            return Err(RuntimeError::Config(format!(
                "the memory budget ({} MiB) holds neither {} instances of {} KiB at least nor \
                 one request at the highest memory limit ({} MiB)",
                config.memory_budget >> 20,
                config.max_instances,
                crate::memory::INSTANCE_FLOOR >> 10,
                config.ceilings.memory >> 20,
            )));
        }
        if config.max_instances_per_worker == 0 {
            return Err(RuntimeError::Config(
                "max_instances_per_worker must be at least 1".into(),
            ));
        }
        let (engine, pooling) = build_engine(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| {
                crate::kv::bindings::verge::kv::store::add_to_linker::<
                    _,
                    wasmtime::component::HasSelf<_>,
                >(&mut linker, |state| state)
            })
            .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        let cache = CompileCache::new(
            &engine,
            config.cache_dir.clone(),
            config.code_secret.clone(),
        );
        start_epoch_ticker(&engine, config.epoch_tick)
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        let permits = Arc::new(Semaphore::new(config.max_instances as usize));
        let memory = MemoryBudget::new(config.memory_budget);
        crate::memory::start_trimmer(&memory)
            .map_err(|e| RuntimeError::Engine(format!("cannot start the trim thread: {e}")))?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache,
            permits,
            config,
            idle_instances: AtomicU32::new(0),
            memory,
            worker_shares: std::sync::Mutex::default(),
            background: std::sync::OnceLock::new(),
            pooling,
        }))
    }

    /// Worker `name`'s share of the node: the instances it may hold at once
    /// and the memory its requests may hold together (the same fraction of
    /// the budget), shared by its versions (old and new ones during a
    /// deploy, stable and canary).
    pub(crate) fn worker_share(&self, name: &str) -> WorkerShare {
        let mut shares = self.worker_shares.lock().unwrap_or_else(|p| p.into_inner());
        let config = &self.config;
        // Shares are never removed, so their count is a fresh id.
        let gate_id = shares.len() as WorkerId;
        shares
            .entry(name.to_string())
            .or_insert_with(|| {
                let fraction =
                    f64::from(config.max_instances_per_worker) / f64::from(config.max_instances);
                WorkerShare {
                    slots: Arc::new(Semaphore::new(config.max_instances_per_worker as usize)),
                    memory: MemoryBudget::new((config.memory_budget as f64 * fraction) as u64),
                    gate_id,
                }
            })
            .clone()
    }

    /// Instances serving a request now, by worker name (workers with none
    /// busy included, once they have been loaded).
    pub fn instances_busy_by_worker(&self) -> Vec<(String, u32)> {
        let shares = self.worker_shares.lock().unwrap_or_else(|p| p.into_inner());
        let cap = self.config.max_instances_per_worker;
        let mut busy: Vec<(String, u32)> = shares
            .iter()
            .map(|(name, share)| {
                (
                    name.clone(),
                    cap.saturating_sub(share.slots.available_permits() as u32),
                )
            })
            .collect();
        busy.sort();
        busy
    }

    /// Where guests that have computed for a while run: as many threads as
    /// the machine has cores, each at a low CPU priority ([`BACKGROUND_NICE`]),
    /// so the kernel favours the serving threads over them, and short
    /// requests (new ones, and every connection's I/O) come first.
    /// `None` where the threads cannot be started; such guests then yield
    /// behind all other work on the serving threads instead.
    pub(crate) fn background(&self) -> Option<&BackgroundThreads> {
        self.background
            .get_or_init(|| match BackgroundThreads::start() {
                Ok(background) => Some(background),
                Err(e) => {
                    tracing::warn!("cannot start the background guest threads: {e}");
                    None
                }
            })
            .as_ref()
    }

    /// Bytes the node's requests hold now, and its budget.
    pub fn memory_used(&self) -> (u64, u64) {
        (self.memory.used(), self.memory.limit())
    }

    /// Instances serving a request now, all workers together.
    pub fn instances_busy(&self) -> u32 {
        let free = self.permits.available_permits() as u32;
        self.config.max_instances.saturating_sub(free)
    }

    /// Instances parked for reuse, all workers together.
    pub fn instances_idle(&self) -> u32 {
        self.idle_instances
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The node's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The engine's compatibility key: compiled code is shared between
    /// nodes of the same key only.
    pub fn engine_key(&self) -> &str {
        self.cache.engine_key()
    }

    /// Whether this node shares compiled code (it has a code secret).
    pub fn shares_code(&self) -> bool {
        self.cache.shares_code()
    }

    /// Whether the component of `hash` is compiled on this node already
    /// (in use, or in the compile cache), so a load needs no shared code.
    pub fn compiled_here(&self, hash: &str) -> bool {
        self.cache.has(hash)
    }

    /// The worker's compiled code, sealed for the other nodes of the
    /// cluster; `None` when this node shares no code.
    pub fn seal(&self, worker: &Worker) -> Option<anyhow::Result<Vec<u8>>> {
        self.cache
            .seal(worker.hash(), worker.pre.instance_pre().component())
    }

    /// Compiles (or loads from the cache) and links a component, ready to
    /// serve requests. Nothing about the node changes if this fails.
    pub fn load(self: &Arc<Self>, spec: WorkerSpec) -> Result<(Worker, CompileSource), LoadError> {
        self.load_shared(spec, None)
    }

    /// [`Runtime::load`], taking the compiled code from `shared` when this
    /// node has none of its own: code another node sealed
    /// ([`Runtime::seal`]). Code whose seal does not verify under this
    /// node's secret, or that does not run on this engine, is not used: the
    /// component is compiled here.
    pub fn load_shared(
        self: &Arc<Self>,
        spec: WorkerSpec,
        shared: Option<&[u8]>,
    ) -> Result<(Worker, CompileSource), LoadError> {
        if spec.component.len() > MAX_COMPONENT_SIZE {
            return Err(LoadError::TooLarge {
                size: spec.component.len(),
                limit: MAX_COMPONENT_SIZE,
            });
        }
        spec.limits.check_within(&self.config.ceilings)?;
        let hash = component_hash(&spec.component);
        let (component, source, code) =
            self.cache
                .load_or_compile(&self.engine, &hash, &spec.component, shared)?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            let message = format!("{e:#}");
            // The linker's error names the import it lacks; say so plainly.
            match imports.iter().find(|i| message.contains(&format!("`{i}`"))) {
                Some(import) => LoadError::UnknownImport {
                    import: import.clone(),
                },
                None => LoadError::Link(message),
            }
        })?;
        let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Ok((
            Worker::new(self.clone(), spec, hash, imports, pre, code),
            source,
        ))
    }
}

fn build_engine(config: &RuntimeConfig) -> Result<(Engine, bool), RuntimeError> {
    let mut base = Config::new();
    base.epoch_interruption(true).wasm_component_model(true);
    if config.pooling {
        let mut pooled = base.clone();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(config)));
        // Reserving the pool's address space fails where virtual memory is
        // capped (ulimit -v, some containers); serve without it there.
        match Engine::new(&pooled) {
            Ok(engine) => return Ok((engine, true)),
            Err(e) => tracing::warn!(
                "pooling allocator unavailable, allocating instances on demand: {e:#}"
            ),
        }
    }
    let engine = Engine::new(&base).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    Ok((engine, false))
}

/// Bytes of each memory, table and stack slot kept resident between uses.
const KEEP_RESIDENT: usize = 1024 * 1024;

/// The most linear memories, tables and core instances one component may
/// have: its instance's share of the pool.
pub(crate) const MEMORIES_PER_COMPONENT: u32 = 2;
pub(crate) const TABLES_PER_COMPONENT: u32 = 4;
pub(crate) const CORE_INSTANCES_PER_COMPONENT: u32 = 8;

fn pool_config(config: &RuntimeConfig) -> PoolingAllocationConfig {
    let instances = config.max_instances + IDLE_INSTANCE_SLOTS;
    let mut pool = PoolingAllocationConfig::default();
    // A Rust wasm32-wasip2 component has a handful of core instances (the
    // program and shims), one memory and a table or two. Each instance's
    // share of the pool is also the most one component may use, so that no
    // worker, however its code is shaped, takes the slots of instances
    // meant for others: a component needing more is refused when it loads.
    pool.total_component_instances(instances)
        .total_core_instances(instances * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(instances * MEMORIES_PER_COMPONENT)
        .total_tables(instances * TABLES_PER_COMPONENT)
        .total_stacks(instances)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memory_size(usize::try_from(config.ceilings.memory).unwrap_or(usize::MAX))
        // Zero the first pages of a slot with memset when it is reused rather
        // than returning them to the kernel: a fresh instance then starts
        // without a page fault per page it touches, which otherwise dominates
        // the cost of a request.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 * 1024)
        .async_stack_keep_resident(128 * 1024)
        // Where the kernel supports it, reset only the pages an instance
        // dirtied instead of all of the resident part.
        .pagemap_scan(wasmtime::Enabled::Auto)
        // A slot last used by the same component is reused with its memory
        // image in place; any other slot must map the image afresh, which
        // costs page faults and a TLB shootdown on every core. wasmtime keeps
        // 100 such warm slots by default, fewer than a node with many workers
        // needs (each instance takes several slots), so traffic spread over
        // 100 workers thrashed them; keeping one per instance the pool has
        // cut that case's CPU per request by half in bench/node.py, for
        // little resident memory (a warm slot keeps only what its last
        // instance dirtied, up to the keep-resident sizes above).
        .max_unused_warm_slots(instances);
    pool
}

/// The background threads' own tokio runtime, and the gate that gives
/// their turns to workers fairly.
pub(crate) struct BackgroundThreads {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    gate: Arc<Gate>,
}

impl BackgroundThreads {
    fn start() -> std::io::Result<BackgroundThreads> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("verge-background")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(BackgroundThreads {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            gate: Arc::new(Gate::new(threads)),
        })
    }

    /// Runs a guest on the background threads, in turns its worker shares
    /// fairly with the others there.
    pub(crate) fn spawn<F>(
        &self,
        guest: F,
        worker: WorkerId,
        meter: Arc<CpuMeter>,
    ) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Unpin + Send + 'static,
        F::Output: Send + 'static,
    {
        let fair = Fair::new(guest, self.gate.clone(), worker, meter);
        self.handle.spawn(fair)
    }
}

impl Drop for BackgroundThreads {
    fn drop(&mut self) {
        // The runtime may be dropped from async code (a node shutting down),
        // where a blocking shutdown is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The background threads' nice value. Against a busy serving thread (nice
/// 0) such a thread gets about a tenth of a core (the kernel's weights are
/// 1024 and 110), so long-running guests take little from short requests
/// yet still progress when the machine is busy, whoever else keeps it busy.
/// At nice 19 (weight 15) they all but stopped whenever any other process
/// used the CPU.
const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`]: on Linux
/// the nice value is per thread.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority has no memory effects; `who` 0 is the calling
        // thread on Linux.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
        if rc != 0 {
            tracing::warn!(
                "cannot lower the background guest threads' priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Without this thread no guest is ever interrupted, so failing to start it
/// fails the runtime.
fn start_epoch_ticker(engine: &Engine, tick: Duration) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("verge-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })?;
    Ok(())
}
