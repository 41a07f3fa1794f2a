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
use crate::outbound::OutboundPolicy;
use crate::worker::Worker;

/// Store data of one instance.
pub struct InstanceState {
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
            table: ResourceTable::new(),
            kv,
            hooks: OutboundPolicy {
                log: log.clone(),
                allowed: worker.outbound.clone(),
                budget: worker.limits.subrequests,
                sent: 0,
            },
            limiter: MemoryLimiter::new(worker.limits.memory),
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

/// Caps an instance's linear memory and remembers whether the guest hit the
/// cap, so that the trap which usually follows is reported as a memory limit.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: u64,
    pub(crate) exceeded: Option<u64>,
}

impl MemoryLimiter {
    fn new(limit: u64) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            exceeded: None,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.exceeded = Some(desired as u64);
            return Ok(false);
        }
        Ok(true)
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
