//! What a `Store` holds for one request: WASI contexts, the resource table,
//! the memory limiter and the CPU meter.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::cpu::CpuMeter;
use crate::guest_log::{GuestLog, LogStream};
use crate::kv::KvContext;
use crate::memory::{Budgets, Charge, Refusal};
use crate::outbound::OutboundPolicy;
use crate::worker::Worker;

/// Handles a guest may hold at once (wasmtime allows a million): far more
/// than any real handler keeps, and few enough to count at each epoch tick.
const MAX_RESOURCES: usize = 10_000;

/// Store data of one instance.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) kv: KvContext,
    pub(crate) hooks: OutboundPolicy,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) meter: Arc<CpuMeter>,
}

impl InstanceState {
    pub(crate) fn new(
        worker: &Worker,
        log: &GuestLog,
        meter: Arc<CpuMeter>,
        kv: KvContext,
        budgets: Budgets,
    ) -> InstanceState {
        // No preopens, no sockets, no name lookups: the builder's defaults
        // deny them. Outbound HTTP goes through `OutboundPolicy`.
        let wasi = WasiCtx::builder()
            .envs(&worker.vars)
            .stdout(log.stream(LogStream::Stdout))
            .stderr(log.stream(LogStream::Stderr))
            .build();
        InstanceState {
            wasi,
            http: WasiHttpCtx::new(),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            kv,
            hooks: OutboundPolicy {
                log: log.clone(),
                allowed: worker.outbound.clone(),
                addresses: worker.runtime.config.outbound_addresses.clone(),
                budget: worker.limits.subrequests,
                sent: 0,
            },
            limiter: MemoryLimiter::new(worker.limits.memory, budgets),
            meter,
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Caps what an instance holds (its linear memory plus its wasi:http
/// objects in the host) at its worker's memory limit, and charges the same
/// to the node's memory budget and the worker's share of it. Remembers
/// which limit the guest hit, so that the trap which usually follows is
/// reported as that limit.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: u64,
    /// The instance's own limit: the size it asked for.
    pub(crate) exceeded: Option<u64>,
    /// The node's budget or the worker's share of it.
    pub(crate) refused: Option<Refusal>,
    linear: u64,
    host: u64,
    charge: Charge,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64, budgets: Budgets) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            exceeded: None,
            refused: None,
            linear: 0,
            host: 0,
            charge: Charge::new(budgets),
        }
    }

    /// Takes `linear` bytes of linear memory and `host` bytes of host
    /// objects, if the limit and the budgets allow; otherwise remembers why
    /// not and changes nothing.
    fn hold(&mut self, linear: u64, host: u64) -> bool {
        let total = linear.saturating_add(host);
        if total > self.limit {
            self.exceeded = Some(total);
            return false;
        }
        if let Err(refusal) = self.charge.resize(total) {
            self.refused = Some(refusal);
            return false;
        }
        self.linear = linear;
        self.host = host;
        true
    }

    /// Counts the guest's host objects anew (at an epoch tick, and before
    /// an instance is reused); false once they do not fit.
    pub(crate) fn set_host(&mut self, host: u64) -> bool {
        self.hold(self.linear, host)
    }

    /// Forgets the previous request's outcome before the instance is reused.
    pub(crate) fn reset(&mut self) {
        self.exceeded = None;
        self.refused = None;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        Ok(self.hold(self.linear.saturating_add(growth), self.host))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real
        // component and keeps a malicious one from exhausting host memory.
        Ok(desired <= 1_000_000)
    }
}
