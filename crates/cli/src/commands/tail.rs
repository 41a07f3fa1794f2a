//! `verge tail`: a worker's requests on a node as they finish, with their
//! guest log lines; filtered on the node. Pretty on a terminal, one JSON
//! object per line otherwise.

use std::io::{BufRead, BufReader, Write};

use anyhow::Context;
use clap::Args;
use verge_api::{LogStream, TailDropped, TailEvent, TailScope};

use crate::commands::versions::WorkerArgs;
use crate::remote::NodeArgs;
use crate::term::{Style, printable, stdout_is_terminal};

#[derive(Args, Debug)]
pub(crate) struct TailArgs {
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

pub(crate) fn run(args: TailArgs) -> anyhow::Result<()> {
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
                let scope: TailScope = decode(&event, raw)?;
                all_nodes = scope == TailScope::All;
                match scope {
                    TailScope::All => eprintln!(
                        "Tailing {name} on {} and every node sharing its store (Ctrl-C to stop)",
                        remote.base()
                    ),
                    TailScope::This { why } => eprintln!(
                        "Tailing {name} on {} alone: {why} (Ctrl-C to stop)",
                        remote.base(),
                    ),
                    TailScope::One => {
                        eprintln!("Tailing {name} on {} (Ctrl-C to stop)", remote.base())
                    }
                }
                continue;
            }
            let text = if !pretty {
                // The node's JSON as it came, one object per line.
                raw.to_string()
            } else if event == "dropped" {
                let TailDropped { dropped } = decode(&event, raw)?;
                style.yellow(&format!(
                    "… dropped {dropped} requests: this client fell behind"
                ))
            } else {
                pretty_line(&decode(&event, raw)?, style, all_nodes)
            };
            writeln!(out, "{text}")?;
            out.flush()?;
        }
    }
    Ok(())
}

/// The data of a server-sent event.
fn decode<T: serde::de::DeserializeOwned>(event: &str, raw: &str) -> anyhow::Result<T> {
    serde_json::from_str(raw).with_context(|| {
        format!(
            "the node sent a `{event}` event this CLI does not understand\n  help: the node may \
             run another Verge version (`verge whoami` shows it)"
        )
    })
}

fn pretty_line(e: &TailEvent, style: Style, show_node: bool) -> String {
    let status_text = e.status.to_string();
    let status_text = match e.status {
        200..=399 => style.green(&status_text),
        400..=499 => style.yellow(&status_text),
        _ => style.red(&status_text),
    };
    let time = e.time.get(11..23).unwrap_or(&e.time);
    let mut line = format!(
        "{} {} {} {status_text} cpu={:.2}ms wall={:.2}ms",
        style.dim(time),
        printable(&e.method),
        printable(&e.path),
        e.cpu_ms,
        e.wall_ms,
    );
    if e.kv_ops > 0 {
        line.push_str(&format!(" kv={}", e.kv_ops));
    }
    if show_node {
        line.push_str(&style.dim(&format!(" node={}", e.node)));
    }
    if let Some(termination) = &e.termination {
        line.push(' ');
        line.push_str(&style.red(&printable(&termination.message)));
    }
    for log in &e.logs {
        let stream = match log.stream {
            LogStream::Stderr => "err",
            LogStream::Stdout => "out",
        };
        line.push_str(&format!(
            "\n  {} {}",
            style.dim(stream),
            printable(&log.text)
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

#[cfg(test)]
mod tests {
    use super::*;
    use verge_api::{TailLog, TailTermination};

    #[test]
    fn guest_text_reaches_the_terminal_escaped() {
        let event = TailEvent {
            time: "2026-12-07T12:00:00.000Z".into(),
            id: "r1".into(),
            node: "n1".into(),
            worker: "app".into(),
            method: "GET".into(),
            path: "/x".into(),
            status: 500,
            cpu_ms: 1.0,
            wall_ms: 2.0,
            kv_ops: 0,
            kv_ms: 0.0,
            logs: vec![TailLog {
                stream: LogStream::Stdout,
                text: "\x1b[2J\x1b]0;owned\x07 cleared".into(),
            }],
            logs_dropped: 0,
            termination: Some(TailTermination {
                reason: "panic".into(),
                message: "guest panicked: \x1b[31mred\r".into(),
            }),
        };
        let line = pretty_line(&event, Style::plain(), false);
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\n'),
            "{line:?}"
        );
        assert!(
            line.contains("\\u{1b}[2J\\u{1b}]0;owned\\u{7} cleared"),
            "{line}"
        );
        assert!(line.contains("guest panicked: \\u{1b}[31mred\\r"), "{line}");
    }
}
