//! Errors at the runtime's boundary.

use crate::limits::LimitAboveCeiling;

/// Starting the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot link the WASI interfaces: {0}")]
    Link(String),
    #[error("invalid runtime configuration: {0}")]
    Config(String),
}

/// A component could not become a worker.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// wasmtime's error is the source: report the chain (`{:#}` with
    /// anyhow) to show why.
    #[error("the component is not valid WebAssembly or failed to compile")]
    Compile(#[source] wasmtime::Error),
    #[error(
        "the component cannot run on Verge: {0}\n\
         A Verge worker is a WASI HTTP component (the `wasi:http/proxy` world) \
         built for wasm32-wasip2; it may import only WASI interfaces."
    )]
    Link(String),
    #[error(
        "the component imports `{import}`, which Verge does not provide; a worker may \
         import the WASI 0.2 interfaces of the `wasi:http/proxy` world and \
         `verge:kv/store@0.1.0`. Remove the dependency that brings `{import}` in, or \
         build for wasm32-wasip2 with a WASI HTTP toolchain (verge-sdk, wstd, wasip2)"
    )]
    UnknownImport { import: String },
    #[error("the component is {size} bytes, above the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Limits(#[from] LimitAboveCeiling),
}
