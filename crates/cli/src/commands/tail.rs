//! `verge tail`: a worker's requests on a node as they finish, with their
//! guest log lines; filtered on the node. Pretty on a terminal, one JSON
//! object per line otherwise.

use std::io::{BufRead, BufReader, Write};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::commands::versions::WorkerArgs;
use crate::remote::NodeArgs;
use crate::term::{Style, stdout_is_terminal};

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Only these status classes, e.g. 5xx or 4xx,5xx.
    #[arg(long)]
    status: Option<String>,

    /// Only these methods, e.g. POST or GET,HEAD.
    #[arg(long)]
    method: Option<String>,

    /// Only paths starting with this prefix.
    #[arg(long)]
    path: Option<String>,

    /// Only requests whose path, log lines or failure mention this text.
    #[arg(long)]
    search: Option<String>,

    /// Print JSON lines even on a terminal.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    worker: WorkerArgs,

    #[command(flatten)]
    node: NodeArgs,
}

pub fn run(args: TailArgs) -> anyhow::Result<()> {
    let name = args.worker.name()?;
    let remote = args.node.connect()?;
    let mut query = Vec::new();
    for (key, value) in [
        ("status", &args.status),
        ("method", &args.method),
        ("path", &args.path),
        ("search", &args.search),
    ] {
        if let Some(value) = value {
            query.push(format!("{key}={}", encode(value)));
        }
    }
    let path = format!("/v1/workers/{name}/tail?{}", query.join("&"));
    let stream = remote.stream(&path)?;

    let pretty = stdout_is_terminal() && !args.json;
    let style = Style::stdout();
    let mut out = std::io::stdout().lock();
    let mut event = String::new();
    let mut all_nodes = false;
    for line in BufReader::new(stream).lines() {
        let line = line.context("the tail stream broke")?;
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_string();
        } else if let Some(raw) = line.strip_prefix("data:") {
            let raw = raw.trim();
            if event == "scope" {
                // What this tail shows goes to stderr, as the banner.
                let scope: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
                all_nodes = scope["nodes"] == "all";
                match scope["nodes"].as_str() {
                    Some("all") => eprintln!(
                        "Tailing {name} on {} and every node sharing its store (Ctrl-C to stop)",
                        remote.base()
                    ),
                    Some("this") => eprintln!(
                        "Tailing {name} on {} alone: {} (Ctrl-C to stop)",
                        remote.base(),
                        scope["why"]
                            .as_str()
                            .unwrap_or("other nodes' requests are not shown")
                    ),
                    _ => eprintln!("Tailing {name} on {} (Ctrl-C to stop)", remote.base()),
                }
                continue;
            }
            let text = if !pretty {
                // The node's JSON as it came, one object per line.
                raw.to_string()
            } else {
                let data: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
                if event == "dropped" {
                    style.yellow(&format!(
                        "… dropped {} requests: this client fell behind",
                        data["dropped"]
                    ))
                } else {
                    pretty_line(&data, style, all_nodes)
                }
            };
            writeln!(out, "{text}")?;
            out.flush()?;
        }
    }
    Ok(())
}

fn pretty_line(e: &Value, style: Style, show_node: bool) -> String {
    let status = e["status"].as_u64().unwrap_or(0);
    let status_text = status.to_string();
    let status_text = match status {
        200..=399 => style.green(&status_text),
        400..=499 => style.yellow(&status_text),
        _ => style.red(&status_text),
    };
    let time = e["time"].as_str().unwrap_or("");
    let time = time.get(11..23).unwrap_or(time);
    let mut line = format!(
        "{} {} {} {status_text} cpu={:.2}ms wall={:.2}ms",
        style.dim(time),
        e["method"].as_str().unwrap_or("?"),
        e["path"].as_str().unwrap_or("?"),
        e["cpu_ms"].as_f64().unwrap_or(0.0),
        e["wall_ms"].as_f64().unwrap_or(0.0),
    );
    if let Some(kv) = e["kv_ops"].as_u64().filter(|n| *n > 0) {
        line.push_str(&format!(" kv={kv}"));
    }
    if show_node && let Some(node) = e["node"].as_str() {
        line.push_str(&style.dim(&format!(" node={node}")));
    }
    if let Some(message) = e["termination"]["message"].as_str() {
        line.push(' ');
        line.push_str(&style.red(message));
    }
    for log in e["logs"].as_array().into_iter().flatten() {
        let stream = if log["stream"] == "stderr" {
            "err"
        } else {
            "out"
        };
        line.push_str(&format!(
            "\n  {} {}",
            style.dim(stream),
            log["text"].as_str().unwrap_or("")
        ));
    }
    line
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
