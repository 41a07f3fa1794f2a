//! `verge delete NAME`: stop serving a worker and forget its versions,
//! secrets and cron runs. KV namespaces it bound are left alone: other
//! workers may use them, and `verge kv namespace delete` removes one.

use std::io::IsTerminal;

use anyhow::bail;
use clap::Args;

use crate::commands::versions::check_worker_name;
use crate::remote::NodeArgs;
use crate::term::{Style, prompt};

#[derive(Args, Debug)]
pub(crate) struct DeleteArgs {
    /// The worker to delete.
    name: String,

    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,

    #[command(flatten)]
    node: NodeArgs,
}

pub(crate) fn run(args: DeleteArgs) -> anyhow::Result<()> {
    check_worker_name(&args.name)?;
    let remote = args.node.connect()?;
    // Named before asking, so a typo is caught without a question.
    let _: verge_api::Worker = remote.get(&format!("/v1/workers/{}", args.name))?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to delete `{}` without confirmation\n  help: pass --yes",
                args.name
            );
        }
        let answer = prompt(&format!(
            "Delete worker `{}` from {}, with its versions and secrets? Type its name to confirm: ",
            args.name,
            remote.base()
        ))?;
        if answer != args.name {
            bail!("not deleted: the name typed was not `{}`", args.name);
        }
    }
    remote.delete::<()>(&format!("/v1/workers/{}", args.name))?;
    println!(
        "{} {} from {} (its KV namespaces are kept)",
        Style::stdout().green("Deleted"),
        args.name,
        remote.base()
    );
    Ok(())
}
