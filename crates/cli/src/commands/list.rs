//! `verge list`: the workers a node serves, with the versions taking their
//! traffic and where they answer.

use clap::Args;

use crate::remote::NodeArgs;
use crate::term::Style;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print the node's JSON instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    node: NodeArgs,
}

pub fn run(args: ListArgs) -> anyhow::Result<()> {
    let remote = args.node.connect()?;
    let answer = remote.get("/v1/workers")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let workers = answer["workers"].as_array().cloned().unwrap_or_default();
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
            let deployment = &worker["deployment"];
            let traffic: Vec<String> = deployment["traffic"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|share| {
                    let version = share["version"].as_str().unwrap_or("?");
                    let short = &version[..version.len().min(8)];
                    format!("{short} {}%", share["percent"].as_u64().unwrap_or(0))
                })
                .collect();
            let mut url = worker["url"].as_str().unwrap_or("?").to_string();
            if let Some(routes) = worker["routes"].as_array()
                && !routes.is_empty()
            {
                let routes: Vec<&str> = routes.iter().filter_map(|r| r.as_str()).collect();
                url.push_str(&format!(" (routes: {})", routes.join(", ")));
            }
            [
                worker["name"].as_str().unwrap_or("?").to_string(),
                traffic.join(", "),
                deployment["updated_at"].as_str().unwrap_or("?").to_string(),
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
