//! `verge secret put|delete|list`: a worker's secrets on a node. A value is
//! read from a prompt that does not echo, or from stdin; never from an
//! argument, which would land in shell history and the process list.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use verge_api::{SecretList, SecretValue, WorkerList};

use crate::commands::versions::WorkerArgs;
use crate::remote::NodeArgs;
use crate::term::Style;

#[derive(Args, Debug)]
pub(crate) struct SecretArgs {
    #[command(subcommand)]
    command: SecretCommand,

    #[command(flatten)]
    worker: WorkerArgs,

    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand, Debug)]
enum SecretCommand {
    /// Set a secret: the value comes from a prompt, or from stdin when piped.
    Put {
        /// The secret's name: letters, digits and `_` (the guest's
        /// environment variable).
        secret: String,
        /// Set it for a worker that is not deployed yet, ahead of its
        /// first deploy.
        #[arg(long)]
        undeployed: bool,
    },
    /// Delete a secret.
    Delete {
        /// The secret's name.
        secret: String,
    },
    /// List the names of the worker's secrets (values are never shown).
    List,
}

pub(crate) fn run(args: SecretArgs) -> anyhow::Result<()> {
    let name = args.worker.name()?;
    let style = Style::stdout();
    match &args.command {
        SecretCommand::Put { secret, undeployed } => {
            check_secret_name(secret)?;
            let remote = args.node.connect()?;
            if !undeployed {
                // A typo in --name would otherwise store a secret no
                // worker reads.
                let workers: WorkerList = remote.get("/v1/workers")?;
                let known = workers.workers.iter().any(|w| w.name == name);
                if !known {
                    bail!(
                        "no worker named `{name}` is deployed on {}\n  help: check the name \
                         (`verge list`), or pass --undeployed to set the secret before its \
                         first deploy",
                        remote.base()
                    );
                }
            }
            let value = read_value(secret)?;
            remote.send_json::<()>(
                "PUT",
                &format!("/v1/workers/{name}/secrets/{secret}"),
                &SecretValue { value },
            )?;
            println!(
                "{} secret {secret} of {name}; its versions restarted with it",
                style.green("Set")
            );
        }
        SecretCommand::Delete { secret } => {
            check_secret_name(secret)?;
            let remote = args.node.connect()?;
            remote.delete::<()>(&format!("/v1/workers/{name}/secrets/{secret}"))?;
            println!("{} secret {secret} of {name}", style.green("Deleted"));
        }
        SecretCommand::List => {
            let remote = args.node.connect()?;
            let answer: SecretList = remote.get(&format!("/v1/workers/{name}/secrets"))?;
            for secret in &answer.secrets {
                println!("{secret}");
            }
        }
    }
    Ok(())
}

/// Refuses a name the node would refuse, before it goes into a URL.
fn check_secret_name(name: &str) -> anyhow::Result<()> {
    if !verge_node::is_secret_name(name) {
        bail!(
            "invalid secret name {name:?}\n  help: {}",
            verge_node::SECRET_NAME_HELP
        );
    }
    Ok(())
}

/// The value from a silent prompt on a terminal, else all of stdin minus
/// one trailing newline (as `echo value |` adds).
fn read_value(secret: &str) -> anyhow::Result<String> {
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Value for {secret}: "))
            .context("cannot read the value from the terminal")?
    } else {
        let mut value = String::new();
        std::io::stdin()
            .read_to_string(&mut value)
            .context("cannot read the value from stdin (it must be UTF-8)")?;
        let trimmed = value
            .strip_suffix('\n')
            .map(|v| v.strip_suffix('\r').unwrap_or(v));
        trimmed.map(str::to_string).unwrap_or(value)
    };
    if value.is_empty() {
        bail!(
            "the value of {secret} is empty\n  help: type it at the prompt or pipe it in: `printf %s \"$VALUE\" | verge secret put {secret}`"
        );
    }
    Ok(value)
}
