//! `verge login`: check a node address and admin token, then keep them in
//! the CLI config file so later commands need neither flag.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use clap::Args;

use crate::remote::{ConfigFile, NodeArgs, Remote};
use crate::term::{Style, prompt};

/// The admin address a node listens on by default.
const DEFAULT_NODE: &str = "http://127.0.0.1:8788";

#[derive(Args, Debug)]
pub(crate) struct LoginArgs {
    #[command(flatten)]
    node: NodeArgs,
}

pub(crate) fn run(args: LoginArgs) -> anyhow::Result<()> {
    let saved = ConfigFile::load()?;
    let interactive = std::io::stdin().is_terminal();
    let node = match (args.node.node(), &saved.node) {
        (Some(node), _) => node.to_string(),
        (None, saved) if interactive => {
            let default = saved.as_deref().unwrap_or(DEFAULT_NODE);
            let typed = prompt(&format!("Node admin API [{default}]: "))?;
            if typed.is_empty() {
                default.to_string()
            } else {
                typed
            }
        }
        (None, Some(saved)) => saved.clone(),
        (None, None) => DEFAULT_NODE.to_string(),
    };
    let (token, source) = match args.node.token() {
        Some(token) => (token.to_string(), "VERGE_TOKEN or --token".to_string()),
        None if interactive => (
            rpassword::prompt_password(format!("Admin token for {node}: "))
                .context("cannot read the token from the terminal")?,
            "the prompt".to_string(),
        ),
        None => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .context("cannot read the token from stdin")?;
            (token, "stdin".to_string())
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!(
            "no token given\n  help: type it at the prompt, pipe it in, or set VERGE_TOKEN \
             (the node's `[[admin_tokens]]` or VERGE_ADMIN_TOKEN)"
        );
    }
    let remote = Remote::new(&node, token.clone(), source)?;
    let me = remote.whoami()?;
    let path = ConfigFile {
        node: Some(remote.base().to_string()),
        token: Some(token),
    }
    .save()?;
    println!(
        "{} to {} as token `{}` ({}); saved in {}",
        Style::stdout().green("Logged in"),
        remote.base(),
        me.token,
        if me.read_only {
            "read-only"
        } else {
            "read-write"
        },
        path.display()
    );
    Ok(())
}
