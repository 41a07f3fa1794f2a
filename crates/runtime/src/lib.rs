//! The Verge node runtime: runs WASI HTTP components (the `wasi:http/proxy`
//! world) with wasmtime, a fresh sandboxed instance per request, under
//! Cloudflare Workers' limits.
//!
//! [`Runtime`] owns what every worker shares: the engine (pooling allocator,
//! epoch interruption), the linker, the compiled-component cache and the
//! node's instance budget. [`Runtime::load`] turns a component into a
//! [`Worker`]; [`Worker::handle`] serves one request; [`server`] accepts
//! connections and shuts down gracefully. This crate knows nothing of
//! manifests, the CLI or storage.

mod body;
mod cache;
pub mod cpu;
mod egress;
mod error;
mod fair;
pub mod guest_log;
mod invoke;
mod kv;
mod limits;
mod log;
pub mod memory;
mod outbound;
mod runtime;
pub mod server;
mod state;
mod worker;

pub use body::{BodyAborted, ResponseBody};
pub use cache::{CompileCache, CompileSource, component_hash};
pub use egress::{AddressPolicy, IpNet, SpecialPurpose};
pub use error::{LoadError, RuntimeError};
pub use kv::{KvBindings, KvStats};
pub use limits::{LimitAboveCeiling, LimitUnits, Limits};
pub use log::{RequestId, RequestSink, RequestSummary, Termination, TracingSink, ms, printable};
pub use outbound::AllowedHosts;
pub use runtime::{MAX_COMPONENT_SIZE, Runtime, RuntimeConfig};
pub use worker::{Worker, WorkerSpec};
