//! `verge versions` and `verge rollback`: a worker's versions on a node, and
//! putting an earlier one back.

use std::path::PathBuf;

use clap::Args;
use verge_api::{Rollback, RolledBack, Version, VersionList};
use verge_manifest::Manifest;

use crate::build::human_size;
use crate::remote::NodeArgs;
use crate::term::Style;

/// Which worker: `--name`, or the one whose verge.toml is in `--dir`.
#[derive(Args, Debug)]
pub(crate) struct WorkerArgs {
    /// The worker's name [default: the name in DIR/verge.toml].
    #[arg(long, global = true)]
    name: Option<String>,

    /// The worker's directory, to read its name from verge.toml.
    #[arg(long, default_value = ".", global = true)]
    dir: PathBuf,
}

impl WorkerArgs {
    pub(crate) fn name(&self) -> anyhow::Result<String> {
        match &self.name {
            Some(name) => {
                check_worker_name(name)?;
                Ok(name.clone())
            }
            None => Ok(Manifest::load(&self.dir)
                .map_err(|e| anyhow::anyhow!("{e}\n  or name the worker with --name"))?
                .name),
        }
    }
}

/// Refuses a worker name a node could not hold, before it goes into a URL.
pub(crate) fn check_worker_name(name: &str) -> anyhow::Result<()> {
    if let Err(problem) = verge_manifest::check_worker_name(name) {
        anyhow::bail!(
            "invalid worker name {name:?}: {problem}\n  help: `verge list` shows the workers on \
             the node"
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct VersionsArgs {
    #[command(flatten)]
    worker: WorkerArgs,

    /// Print the node's JSON instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    node: NodeArgs,
}

pub(crate) fn run(args: VersionsArgs) -> anyhow::Result<()> {
    let name = args.worker.name()?;
    let remote = args.node.connect()?;
    let answer: VersionList = remote.get(&format!("/v1/workers/{name}/versions"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let style = Style::stdout();
    println!(
        "{}",
        style.bold(&format!(
            "{:<14}{:<26}{:<14}{:>10}  {}",
            "VERSION", "CREATED", "AUTHOR", "SIZE", "TRAFFIC"
        ))
    );
    for version in &answer.versions {
        println!("{}", version_row(version));
    }
    Ok(())
}

fn version_row(v: &Version) -> String {
    let percent = v.traffic_percent;
    format!(
        "{:<14}{:<26}{:<14}{:>10}  {}",
        v.short_id,
        v.created_at,
        v.author,
        human_size(v.size),
        if percent > 0 {
            format!("{percent}%")
        } else {
            "-".into()
        }
    )
}

#[derive(Args, Debug)]
pub(crate) struct RollbackArgs {
    /// The version to put back (an id or a prefix of 4+ characters)
    /// [default: during a rollout, the stable version; else the one
    /// deployed before the current].
    #[arg(value_name = "VERSION")]
    target: Option<String>,

    #[command(flatten)]
    worker: WorkerArgs,

    #[command(flatten)]
    node: NodeArgs,
}

pub(crate) fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let name = args.worker.name()?;
    let remote = args.node.connect()?;
    let answer: RolledBack = remote.send_json(
        "POST",
        &format!("/v1/workers/{name}/rollback"),
        &Rollback {
            version: args.target,
        },
    )?;
    let style = Style::stdout();
    println!(
        "{} {name} to version {}: it takes all traffic",
        style.green("Rolled back"),
        style.bold(&answer.version.short_id),
    );
    Ok(())
}
