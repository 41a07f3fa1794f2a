//! Load-test helper for Verge.
//!
//! - `verge-bench serve COMPONENT ADDR [REUSE]`: serves COMPONENT on the
//!   Verge runtime at ADDR with no request log, one worker, default limits;
//!   REUSE > 1 turns on instance reuse.
//! - `verge-bench instantiate COMPONENT [N]`: creates and drops N fresh
//!   instances and prints the mean cost of one, in microseconds.
//! - `verge-bench kv-serve COMPONENT ADDR DIR`: serves COMPONENT with KV
//!   bindings `KV` (1000 keys of 100 B prefilled) and `LARGE` (10 keys of
//!   1 MiB) on a SQLite store in DIR, with generous CPU limits.
//! - `verge-bench kv-native DIR`: the same reads and writes done directly
//!   with rusqlite (same pragmas), printing percentiles in nanoseconds.
//! - `verge-bench kv-store DIR`: puts per second into the SQLite store from
//!   64 concurrent writers, without HTTP or guests.
//! - `verge-bench todo-serve COMPONENT ADDR DIR [REUSE]`: serves
//!   examples/todo-api's component with `TODOS` bound on a SQLite store in
//!   DIR; REUSE > 1 turns on instance reuse.
//! - `verge-bench todo-twin ADDR DIR [N]`: the native twin of its
//!   `GET /todos/:id` (axum + rusqlite), N todos seeded.

mod kv;
mod latency;
mod todo;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use verge_runtime::server::{ServeOptions, SingleWorker, serve};
use verge_runtime::{RequestSink, RequestSummary, Runtime, RuntimeConfig, WorkerSpec};

struct Quiet;

impl RequestSink for Quiet {
    fn record(&self, _: &RequestSummary) {}
}

/// Loads `spec` and serves it on `addr` until Ctrl-C.
async fn serve_until_ctrl_c(
    runtime: &Arc<Runtime>,
    spec: WorkerSpec,
    addr: &str,
) -> anyhow::Result<()> {
    let (worker, _) = runtime.load(spec)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(
        listener,
        Arc::new(SingleWorker::new(worker)),
        ServeOptions::default(),
        shutdown,
    )
    .await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, component) = match args.as_slice() {
        [command, component, ..] => (command.as_str(), component),
        _ => bail!("usage: verge-bench serve COMPONENT ADDR [REUSE] | instantiate COMPONENT [N]"),
    };
    if command == "kv-native" {
        return kv::native(std::path::Path::new(component));
    }
    if command == "todo-twin" {
        let dir = args.get(2).context("todo-twin needs ADDR DIR")?;
        let count = args.get(3).map(|n| n.parse()).transpose()?.unwrap_or(100);
        return todo::twin(component, std::path::Path::new(dir), count).await;
    }
    if command == "kv-latency" {
        let url = args.get(2).context("kv-latency needs DIR POSTGRES_URL")?;
        return latency::run(std::path::Path::new(component), url).await;
    }
    if command == "kv-store" {
        return kv::store_throughput(std::path::Path::new(component)).await;
    }
    let bytes = std::fs::read(component).with_context(|| format!("reading {component}"))?;
    let runtime = Runtime::new(RuntimeConfig {
        sink: Arc::new(Quiet),
        ..RuntimeConfig::default()
    })?;
    eprintln!("pooling allocator: {}", runtime.pooling());
    let mut spec = WorkerSpec::new("bench", bytes);
    match command {
        "serve" => {
            let addr = args.get(2).map_or("127.0.0.1:18792", String::as_str);
            spec.instance_reuse = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(1);
            serve_until_ctrl_c(&runtime, spec, addr).await?;
        }
        "kv-serve" => {
            let addr = args.get(2).context("kv-serve needs ADDR")?;
            let dir = std::path::PathBuf::from(args.get(3).context("kv-serve needs DIR")?);
            spec.kv = kv::prefilled_bindings(&dir).await?;
            spec.limits.cpu = std::time::Duration::from_secs(120);
            spec.limits.wall = std::time::Duration::from_secs(300);
            let mut config = RuntimeConfig {
                sink: Arc::new(Quiet),
                ..RuntimeConfig::default()
            };
            config.ceilings.cpu = spec.limits.cpu;
            config.ceilings.wall = spec.limits.wall;
            serve_until_ctrl_c(&Runtime::new(config)?, spec, addr).await?;
        }
        "todo-serve" => {
            let addr = args.get(2).context("todo-serve needs ADDR")?;
            let dir = std::path::PathBuf::from(args.get(3).context("todo-serve needs DIR")?);
            spec.kv = todo::bindings(&dir).await?;
            spec.instance_reuse = args.get(4).map(|r| r.parse()).transpose()?.unwrap_or(1);
            serve_until_ctrl_c(&runtime, spec, addr).await?;
        }
        "instantiate" => {
            let n: u32 = args
                .get(2)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(20_000);
            let (worker, _) = runtime.load(spec)?;
            for _ in 0..n / 10 {
                worker.instantiate_once().await?;
            }
            let started = Instant::now();
            for _ in 0..n {
                worker.instantiate_once().await?;
            }
            let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
            println!("{micros:.2}");
        }
        other => bail!("unknown command {other}"),
    }
    Ok(())
}
