//! `verge`: the command line and the node in one binary. This file parses
//! the command line and dispatches; each subcommand lives in `commands/`.

mod build;
mod commands;
mod term;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build, run and deploy Rust serverless workers on WebAssembly.
#[derive(Parser)]
#[command(name = "verge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a worker project from a template.
    New(commands::new::NewArgs),
    /// Build a worker's component and check that it can run on Verge.
    Build(commands::build::BuildArgs),
    /// Build a worker and serve it locally, with a request log and timings.
    Dev(commands::dev::DevArgs),
    /// Manage the local KV store: namespaces, keys, bulk writes.
    Kv(commands::kv::KvArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Build(args) => commands::build::run(args),
        Command::Dev(args) => commands::dev::run(args),
        Command::Kv(args) => commands::kv::run(args),
        Command::New(args) => commands::new::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            term::print_error(&error);
            ExitCode::FAILURE
        }
    }
}

/// Node diagnostics (not the request log) go to stderr; `VERGE_LOG` takes
/// `tracing` filter directives, e.g. `VERGE_LOG=debug`.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VERGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(term::stderr_is_terminal())
        .init();
}
