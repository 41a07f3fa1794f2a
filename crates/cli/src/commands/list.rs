//! `verge list`: the workers a node serves, with the versions taking their
//! traffic and where they answer.

use clap::Args;
use verge_api::WorkerList;

use crate::remote::NodeArgs;
use crate::term::Style;

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    /// Print the node's JSON instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    node: NodeArgs,
}

pub(crate) fn run(args: ListArgs) -> anyhow::Result<()> {
    let remote = args.node.connect()?;
    let answer: WorkerList = remote.get("/v1/workers")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let workers = answer.workers;
    if workers.is_empty() {
        println!(
            "No workers on {}\n  deploy one with `verge deploy [DIR]`",
            remote.base()
        );
        return Ok(());
    }
    let style = Style::stdout();
    let rows: Vec<[String; 4]> = workers
        .iter()
        .map(|worker| {
            let traffic: Vec<String> = worker
                .deployment
                .traffic
                .iter()
                .map(|share| {
                    let short = &share.version[..share.version.len().min(8)];
                    format!("{short} {}%", share.percent)
                })
                .collect();
            let mut url = worker.url.clone();
            if !worker.routes.is_empty() {
                url.push_str(&format!(" (routes: {})", worker.routes.join(", ")));
            }
            [
                worker.name.clone(),
                traffic.join(", "),
                worker.deployment.updated_at.clone(),
                url,
            ]
        })
        .collect();
    let header = ["NAME", "TRAFFIC", "UPDATED", "URL"];
    // Columns as wide as their widest cell (a rollout lists two versions).
    let widths: Vec<usize> = (0..3)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let line = |cells: [&str; 4]| {
        format!(
            "{:<w0$}{:<w1$}{:<w2$}{}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    println!("{}", style.bold(&line(header)));
    for row in &rows {
        println!("{}", line([&row[0], &row[1], &row[2], &row[3]]));
    }
    Ok(())
}
