//! `verge`: the command line and the node in one binary. This file parses
//! the command line and dispatches; each subcommand lives in `commands/`.

mod build;
mod commands;
mod remote;
mod signal;
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
    /// Make an existing crate (or directory) a worker: writes verge.toml.
    Init(commands::init::InitArgs),
    /// Build a worker's component and check that it can run on Verge.
    Build(commands::build::BuildArgs),
    /// Build a worker and serve it locally, with a request log and timings.
    Dev(commands::dev::DevArgs),
    /// Manage the local KV store: namespaces, keys, bulk writes.
    Kv(commands::kv::KvArgs),
    /// Run a node that hosts many workers, managed through its admin API.
    Serve(commands::serve::ServeArgs),
    /// Check a node's address and admin token and remember them.
    Login(commands::login::LoginArgs),
    /// Show which node the CLI talks to, and as which token.
    Whoami(commands::whoami::WhoamiArgs),
    /// Build a worker and deploy it to a node.
    Deploy(commands::deploy::DeployArgs),
    /// List the workers a node serves.
    List(commands::list::ListArgs),
    /// Delete a worker from a node, with its versions and secrets.
    Delete(commands::delete::DeleteArgs),
    /// List a worker's versions on a node.
    Versions(commands::versions::VersionsArgs),
    /// Put an earlier version of a worker back in service.
    Rollback(commands::versions::RollbackArgs),
    /// Set, delete and list a worker's secrets on a node.
    Secret(commands::secret::SecretArgs),
    /// Watch a worker's requests and logs on a node as they happen.
    Tail(commands::tail::TailArgs),
    /// List a worker's cron triggers and runs on a node, or run one now.
    Cron(commands::cron::CronArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A node logs its requests and deploys; other commands only problems.
    init_tracing(if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    });
    let result = match cli.command {
        Command::Build(args) => commands::build::run(args),
        Command::Dev(args) => commands::dev::run(args),
        Command::Kv(args) => commands::kv::run(args),
        Command::New(args) => commands::new::run(args),
        Command::Init(args) => commands::init::run(args),
        Command::Login(args) => commands::login::run(args),
        Command::Whoami(args) => commands::whoami::run(args),
        Command::List(args) => commands::list::run(args),
        Command::Delete(args) => commands::delete::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Deploy(args) => commands::deploy::run(args),
        Command::Versions(args) => commands::versions::run(args),
        Command::Rollback(args) => commands::versions::rollback(args),
        Command::Secret(args) => commands::secret::run(args),
        Command::Tail(args) => commands::tail::run(args),
        Command::Cron(args) => commands::cron::run(args),
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
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VERGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(term::stderr_is_terminal())
        .init();
}
