//! Paths to the guest components Verge's tests run, built from `guests/` by
//! this crate's build script.
//!
//! - [`FIXTURES`]: one route per behaviour under test (`/hello`, `/echo`,
//!   `/loop`, `/sleep?ms=`, `/alloc?mib=`, `/panic`, `/trap`, ...), written
//!   with the plain `wasip2` bindings.
//! - [`KV_FIXTURE`]: a route per `verge:kv/store` operation (`/put`, `/get`,
//!   `/list`, `/incr` ...), answering with the result or the error value.
//! - [`WSTD_HELLO`]: a hello world written with `wstd`, another toolchain's
//!   bindings, to show Verge runs standard WASI HTTP components unmodified.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Reads a guest component's bytes.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read guest component {path}: {e}"))
}
