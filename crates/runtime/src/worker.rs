//! A deployed version of a worker: its compiled component, pre-linked, with
//! the limits and variables its requests run with.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::CodeToken;
use crate::fair::WorkerId;
use crate::invoke::Instance;
use crate::kv::KvBindings;
use crate::limits::Limits;
use crate::memory::Budgets;
use crate::outbound::AllowedHosts;
use crate::runtime::{IDLE_INSTANCE_SLOTS, Runtime};
use crate::state::InstanceState;

/// What a worker version is made of.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// The worker's name, as in its manifest.
    pub name: String,
    /// The component's bytes (a WASI HTTP component).
    pub component: Vec<u8>,
    /// Limits for each request, within the node's ceilings.
    pub limits: Limits,
    /// Environment variables the guest sees.
    pub vars: Vec<(String, String)>,
    /// Requests one instance may serve in sequence before it is discarded.
    /// `1` (the default) gives every request a fresh instance; more trades
    /// isolation between requests for speed, as a Workers isolate does. A
    /// trap or a broken limit always discards the instance.
    pub instance_reuse: u32,
    /// Put guest failure details (panic message, trap backtrace) in error
    /// responses. For development only.
    pub expose_errors: bool,
    /// The KV namespaces the guest may open, by binding name.
    pub kv: KvBindings,
    /// Where the guest may send outbound HTTP requests (nowhere by default).
    pub outbound: AllowedHosts,
    /// Requests this version may run at once, below the node's share per
    /// worker (`None`: that share alone).
    pub concurrency: Option<u32>,
}

impl WorkerSpec {
    /// A spec with default limits, fresh instances and no variables.
    pub fn new(name: impl Into<String>, component: Vec<u8>) -> WorkerSpec {
        WorkerSpec {
            name: name.into(),
            component,
            limits: Limits::default(),
            vars: Vec::new(),
            instance_reuse: 1,
            expose_errors: false,
            kv: KvBindings::default(),
            outbound: AllowedHosts::none(),
            concurrency: None,
        }
    }
}

/// A worker version ready to serve: see [`Worker::handle`](crate::Worker::handle).
pub struct Worker {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) name: Arc<str>,
    pub(crate) hash: String,
    imports: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) vars: Vec<(String, String)>,
    pub(crate) instance_reuse: u32,
    pub(crate) expose_errors: bool,
    pub(crate) kv: KvBindings,
    pub(crate) outbound: AllowedHosts,
    pub(crate) pre: ProxyPre<InstanceState>,
    /// The worker's share of the node's instances, shared with its other
    /// versions, and this version's own cap from its manifest.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// The budgets its requests are charged to: the node's and the
    /// worker's share of it.
    pub(crate) budgets: Budgets,
    pub(crate) own_slots: Option<(Arc<tokio::sync::Semaphore>, u32)>,
    /// The worker's name to the background threads' gate.
    pub(crate) gate_id: WorkerId,
    idle: Mutex<Vec<Instance>>,
    /// Keeps the compiled code shared with other workers of the same bytes.
    _code: CodeToken,
}

impl Worker {
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        spec: WorkerSpec,
        hash: String,
        imports: Vec<String>,
        pre: ProxyPre<InstanceState>,
        code: CodeToken,
    ) -> Worker {
        let share = runtime.worker_share(&spec.name);
        let budgets = Budgets {
            node: runtime.memory.clone(),
            worker: share.memory,
        };
        let own_slots = spec
            .concurrency
            .filter(|n| *n < runtime.config.max_instances_per_worker)
            .map(|n| {
                (
                    Arc::new(tokio::sync::Semaphore::new(n.max(1) as usize)),
                    n.max(1),
                )
            });
        Worker {
            runtime,
            slots: share.slots,
            gate_id: share.gate_id,
            budgets,
            own_slots,
            name: spec.name.into(),
            hash,
            imports,
            limits: spec.limits,
            vars: {
                let mut vars = spec.vars;
                // Tells the guest SDK it may put error details in responses.
                if spec.expose_errors {
                    vars.push(("VERGE_ERROR_DETAIL".into(), "1".into()));
                }
                vars
            },
            instance_reuse: spec.instance_reuse.max(1),
            expose_errors: spec.expose_errors,
            kv: spec.kv,
            outbound: spec.outbound,
            pre,
            idle: Mutex::new(Vec::new()),
            _code: code,
        }
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SHA-256 of the component: the version's content address.
    /// The interfaces the component imports (`wasi:http/types@0.2.3`,
    /// `verge:kv/store@0.1.0` ...), as named in the component.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The limits its requests run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// An idle instance to serve one more request, if reuse is on.
    pub(crate) fn take_idle(&self) -> Option<Instance> {
        if self.instance_reuse <= 1 {
            return None;
        }
        let instance = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        self.runtime.idle_instances.fetch_sub(1, Ordering::Relaxed);
        Some(instance)
    }

    /// Returns an instance that finished a request cleanly, unless it has
    /// served its share or enough instances are idle already.
    pub(crate) fn release(&self, instance: Instance) {
        if instance.served >= self.instance_reuse {
            return;
        }
        // Idle instances hold pool slots beyond `max_instances`; the node
        // has IDLE_INSTANCE_SLOTS of them for all workers together.
        let idle_now = self.runtime.idle_instances.fetch_add(1, Ordering::Relaxed);
        if idle_now >= IDLE_INSTANCE_SLOTS {
            self.runtime.idle_instances.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(instance);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|p| p.into_inner()).len();
        self.runtime
            .idle_instances
            .fetch_sub(idle as u32, Ordering::Relaxed);
    }
}
