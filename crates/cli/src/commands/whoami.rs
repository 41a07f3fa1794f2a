//! `verge whoami`: which node the CLI talks to, and as which token.

use clap::Args;

use crate::remote::NodeArgs;

#[derive(Args, Debug)]
pub(crate) struct WhoamiArgs {
    #[command(flatten)]
    node: NodeArgs,
}

pub(crate) fn run(args: WhoamiArgs) -> anyhow::Result<()> {
    let remote = args.node.connect()?;
    let me = remote.whoami()?;
    println!(
        "Node:  {} ({}, Verge {}, {} store, {} worker{})",
        remote.base(),
        me.node,
        me.version,
        me.store,
        me.workers,
        if me.workers == 1 { "" } else { "s" }
    );
    println!(
        "Token: {} ({})",
        me.token,
        if me.read_only {
            "read-only"
        } else {
            "read-write"
        }
    );
    Ok(())
}
