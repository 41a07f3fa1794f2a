//! `verge cron list` and `verge cron run`: a worker's cron triggers on a
//! node, their latest runs, and running one by hand.

use clap::{Args, Subcommand};
use verge_api::{CronRun, RunSchedule, ScheduleRan, Schedules};

use crate::commands::versions::WorkerArgs;
use crate::remote::NodeArgs;
use crate::term::Style;

#[derive(Args, Debug)]
pub(crate) struct CronArgs {
    #[command(subcommand)]
    command: CronCommand,

    #[command(flatten)]
    worker: WorkerArgs,

    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand, Debug)]
enum CronCommand {
    /// The worker's schedules, their next ticks and the latest runs.
    List {
        /// Print the node's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Run the scheduled handler now, as a tick would.
    Run {
        /// Which schedule [default: the worker's only one].
        #[arg(long)]
        cron: Option<String>,
    },
}

/// Unix ms as UTC text.
fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn run_row(run: &CronRun) -> String {
    let status = run.status.map_or("running".to_string(), |s| s.to_string());
    let wall = run.wall_ms.map_or("-".to_string(), |w| format!("{w} ms"));
    let mut row = format!(
        "{:<26}{:<18}{:<10}{:<10}{}",
        time(run.tick),
        run.cron,
        status,
        wall,
        run.node,
    );
    if let Some(error) = &run.error {
        row.push_str(&format!("\n    {error}"));
    }
    row
}

pub(crate) fn run(args: CronArgs) -> anyhow::Result<()> {
    let name = args.worker.name()?;
    let remote = args.node.connect()?;
    let style = Style::stdout();
    match args.command {
        CronCommand::List { json } => {
            let answer: Schedules = remote.get(&format!("/v1/workers/{name}/schedules"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            if answer.schedules.is_empty() {
                println!(
                    "{name} has no schedules: add [triggers] crons = [\"*/5 * * * *\"] to verge.toml"
                );
                return Ok(());
            }
            println!(
                "{}",
                style.bold(&format!("{:<18}{}", "SCHEDULE", "NEXT (UTC)"))
            );
            for s in &answer.schedules {
                println!("{:<18}{}", s.cron, s.next.map_or("-".to_string(), time));
            }
            println!();
            println!(
                "{}",
                style.bold(&format!(
                    "{:<26}{:<18}{:<10}{:<10}{}",
                    "TICK (UTC)", "SCHEDULE", "STATUS", "WALL", "NODE"
                ))
            );
            for r in &answer.runs {
                println!("{}", run_row(r));
            }
        }
        CronCommand::Run { cron } => {
            let ScheduleRan { run } = remote.send_json(
                "POST",
                &format!("/v1/workers/{name}/schedules/run"),
                &RunSchedule { cron },
            )?;
            let ok = run.status.is_some_and(|s| s < 400);
            println!(
                "{} {name}'s `{}` in {} ms: status {}",
                if ok {
                    style.green("Ran")
                } else {
                    style.red("Failed")
                },
                run.cron,
                run.wall_ms.unwrap_or(0),
                run.status.unwrap_or(0),
            );
            if let Some(error) = &run.error {
                println!("    {error}");
            }
            if !ok {
                anyhow::bail!("the scheduled handler failed; `verge tail` shows its log");
            }
        }
    }
    Ok(())
}
