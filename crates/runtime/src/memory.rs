//! The node's memory budget.
//!
//! Every request is charged for the memory it makes the node hold, and the
//! charges of all requests together may not pass the node's budget:
//!
//! - at admission, [`REQUEST_BASE`] for its host side (the store, the
//!   connection's buffers, the start of its body);
//! - its guest's linear memory, exactly, as it grows (the store's resource
//!   limiter);
//! - the wasi:http objects its guest keeps in the host (headers, requests,
//!   responses, bodies with their buffers), counted at every epoch tick
//!   while the guest runs ([`host_objects`]).
//!
//! A worker's requests together may also not pass the worker's share of the
//! budget (the same fraction of it as its share of the instances), so one
//! worker that hoards memory leaves the rest of the node to the others.
//! What cannot be charged is refused: admission answers 503, growth fails
//! inside the guest, and a guest past the budget at a tick is stopped; the
//! request ends with `limit=node-memory` (or `worker-memory`), never the
//! node with an out-of-memory kill.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::FieldMap;
use wasmtime_wasi_http::p2::body::HostOutgoingBody;
use wasmtime_wasi_http::p2::types::{
    HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse,
};

const MIB: u64 = 1024 * 1024;

/// What admission charges each request for its host side: its store and
/// instance records, the connection's read and write buffers and the
/// first part of its body.
pub const REQUEST_BASE: u64 = 256 * 1024;

/// The least memory one instance takes (its host side and a small guest's
/// linear memory); `max_instances` of them must fit in the budget.
pub const INSTANCE_FLOOR: u64 = REQUEST_BASE + MIB;

/// Bytes an outgoing body may hold in the host before the guest must wait
/// for them to be sent: the chunk size the node gives wasi:http
/// ([`BODY_CHUNK`]) times the two chunks its channel holds.
pub(crate) const BODY_BUFFER: u64 = 2 * BODY_CHUNK as u64;

/// The largest write a guest may make to an outgoing body at once.
pub(crate) const BODY_CHUNK: usize = 64 * 1024;

/// What any other host object of a guest is counted as (streams,
/// pollables, futures: small records, plus at most one frame in flight; the
/// incoming request, whose headers the node's HTTP server bounds).
const OTHER_OBJECT: u64 = 1024;

/// A pool of bytes that charges are taken from.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
    /// The most charged at once since [`MemoryBudget::take_peak`].
    peak: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        })
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The most charged at once since the last call, which starts the next
    /// period at what is charged now.
    pub fn take_peak(&self) -> u64 {
        self.peak.swap(self.used(), Ordering::Relaxed)
    }

    fn try_take(&self, bytes: u64) -> bool {
        match self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            }) {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Which budget refused a charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The node's budget, all workers together.
    Node { limit: u64 },
    /// The worker's share of it.
    Worker { limit: u64 },
}

/// The budgets one request is charged to: the node's and its worker's share.
#[derive(Clone, Debug)]
pub(crate) struct Budgets {
    pub(crate) node: Arc<MemoryBudget>,
    pub(crate) worker: Arc<MemoryBudget>,
}

/// Bytes held against the budgets; given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budgets: Budgets,
    bytes: u64,
}

impl Charge {
    pub(crate) fn new(budgets: Budgets) -> Charge {
        Charge { budgets, bytes: 0 }
    }

    /// Makes the charge `bytes` in all; a growth neither budget can take is
    /// refused and leaves the charge as it was.
    pub(crate) fn resize(&mut self, bytes: u64) -> Result<(), Refusal> {
        if bytes <= self.bytes {
            let freed = self.bytes - bytes;
            self.budgets.worker.give_back(freed);
            self.budgets.node.give_back(freed);
            self.bytes = bytes;
            return Ok(());
        }
        let more = bytes - self.bytes;
        // The node first: when it is full, that is the reason, whatever
        // the worker's share.
        if !self.budgets.node.try_take(more) {
            return Err(Refusal::Node {
                limit: self.budgets.node.limit,
            });
        }
        if !self.budgets.worker.try_take(more) {
            self.budgets.node.give_back(more);
            return Err(Refusal::Worker {
                limit: self.budgets.worker.limit,
            });
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let _ = self.resize(0);
    }
}

/// Host memory held by the wasi:http objects in a guest's resource table:
/// headers by the size of their names and values, bodies by what they
/// may buffer, anything else as a small record.
pub(crate) fn host_objects(table: &mut ResourceTable) -> u64 {
    table
        .iter_mut()
        .map(|entry| {
            if let Some(fields) = entry.downcast_ref::<FieldMap>() {
                fields_size(fields)
            } else if entry.is::<HostOutgoingBody>() {
                BODY_BUFFER
            } else if let Some(r) = entry.downcast_ref::<HostOutgoingResponse>() {
                fields_size(&r.headers) + body_size(r.body.is_some())
            } else if let Some(r) = entry.downcast_ref::<HostOutgoingRequest>() {
                fields_size(&r.headers) + body_size(r.body.is_some())
            } else if let Some(r) = entry.downcast_ref::<HostIncomingResponse>() {
                fields_size(&r.headers) + OTHER_OBJECT
            } else {
                OTHER_OBJECT
            }
        })
        .sum()
}

fn body_size(present: bool) -> u64 {
    if present { BODY_BUFFER } else { 0 }
}

/// Names and values plus 32 bytes per entry for the map's own records (close
/// to what wasi:http counts against its field size limit).
fn fields_size(fields: &http::HeaderMap) -> u64 {
    fields
        .iter()
        .map(|(name, value)| (name.as_str().len() + value.len() + 32) as u64)
        .sum()
}

/// How far charges must have fallen from their peak before the allocator
/// is asked to return freed memory to the system.
const TRIM_AFTER: u64 = 64 * MIB;

/// Trims made, a second apart, once charges have fallen: the rest of a
/// burst ends (and frees its memory) over the next seconds, by less than
/// [`TRIM_AFTER`] at a time.
const TRIMS_AFTER_A_FALL: u32 = 5;

/// Returns the host memory a burst of requests freed to the system once it
/// is over. glibc's allocator keeps freed memory in its arenas for reuse;
/// after a burst (many requests with large header maps or body buffers,
/// say) that is hundreds of MiB the node holds for nothing. A thread checks
/// every second whether the charges have fallen by [`TRIM_AFTER`] from
/// their peak, and if so calls `malloc_trim`; it stops with the budget.
#[allow(unsafe_code)] // malloc_trim, see SAFETY below
pub(crate) fn start_trimmer(budget: &Arc<MemoryBudget>) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let weak = Arc::downgrade(budget);
        std::thread::Builder::new()
            .name("verge-trim".into())
            .spawn(move || {
                let mut trims_left = 0;
                while let Some(budget) = weak.upgrade() {
                    if budget.take_peak().saturating_sub(budget.used()) >= TRIM_AFTER {
                        trims_left = TRIMS_AFTER_A_FALL;
                    }
                    if trims_left > 0 {
                        trims_left -= 1;
                        // SAFETY: malloc_trim only releases free memory; it
                        // is safe to call from any thread at any time.
                        unsafe { libc::malloc_trim(0) };
                    }
                    drop(budget);
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            })?;
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = budget;
    Ok(())
}

/// The memory this process may use: the machine's RAM, or its control
/// group's limit where that is lower (a container's).
pub fn machine_memory() -> Option<u64> {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .filter_map(|text| text.trim().parse::<u64>().ok())
    .min();
    match (ram, cgroup) {
        (Some(ram), Some(limit)) => Some(ram.min(limit)),
        (ram, limit) => ram.or(limit),
    }
}

/// Three quarters of [`machine_memory`] (the rest is for the compiled code,
/// the KV cache, the kernel's socket buffers and the operating system), or
/// 4 GiB where the machine does not say.
pub fn default_budget() -> u64 {
    machine_memory().map_or(4096 * MIB, |bytes| bytes / 4 * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(node: u64, worker: u64) -> Budgets {
        Budgets {
            node: MemoryBudget::new(node),
            worker: MemoryBudget::new(worker),
        }
    }

    #[test]
    fn charges_are_refused_past_either_budget_and_given_back_on_drop() {
        let b = budgets(100, 60);
        let mut first = Charge::new(b.clone());
        assert_eq!(first.resize(50), Ok(()));
        let mut second = Charge::new(b.clone());
        assert_eq!(second.resize(20), Err(Refusal::Worker { limit: 60 }));
        assert_eq!(b.node.used(), 50, "a refused charge is given back");
        assert_eq!(second.resize(10), Ok(()));
        assert_eq!((b.node.used(), b.worker.used()), (60, 60));

        // Another worker's share, the same node.
        let other = Budgets {
            node: b.node.clone(),
            worker: MemoryBudget::new(60),
        };
        let mut third = Charge::new(other.clone());
        assert_eq!(third.resize(41), Err(Refusal::Node { limit: 100 }));
        assert_eq!(other.worker.used(), 0, "a refused charge is given back");
        assert_eq!(b.node.used(), 60, "a refused charge is given back");
        assert_eq!(third.resize(40), Ok(()));

        first.resize(5).unwrap();
        assert_eq!(b.node.used(), 55);
        assert_eq!(b.node.take_peak(), 100, "the node was full once");
        assert_eq!(
            b.node.take_peak(),
            55,
            "a new period starts at what is used"
        );
        drop((first, second, third));
        assert_eq!((b.node.used(), b.worker.used()), (0, 0));
    }

    #[test]
    fn the_machine_has_memory_and_the_default_leaves_a_quarter() {
        let machine = machine_memory().expect("/proc/meminfo names MemTotal");
        assert!(machine > 64 * MIB);
        assert_eq!(default_budget(), machine / 4 * 3);
    }
}
