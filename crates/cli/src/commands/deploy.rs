//! `verge deploy`: build the worker, upload its component to a node and make
//! it the worker's version (or a share of its traffic, with --percentage).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use verge_api::{ComponentStored, Deployed, NewVersion};
use verge_manifest::Manifest;

use crate::build::{build, human_size};
use crate::remote::NodeArgs;
use crate::term::Style;

#[derive(Args, Debug)]
pub(crate) struct DeployArgs {
    /// The worker's directory (where verge.toml is).
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Deploy the last build instead of building first.
    #[arg(long)]
    no_build: bool,

    /// Send this share of requests (1-100) to the new version and keep the
    /// rest on the current one; deploy again with 100 to finish the rollout.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    percentage: Option<u8>,

    #[command(flatten)]
    node: NodeArgs,
}

pub(crate) fn run(args: DeployArgs) -> anyhow::Result<()> {
    let manifest = Manifest::load(&args.dir)?;
    let remote = args.node.connect()?;
    // The token first: a refused one is said before a build and an upload.
    let me = remote.whoami()?;
    if me.read_only {
        anyhow::bail!(
            "token `{}` is read-only: it cannot deploy to {}\n  help: use a token without \
             `read_only = true`",
            me.token,
            remote.base()
        );
    }
    let manifest_path = manifest.dir.join(verge_manifest::FILE_NAME);
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let built = build(&manifest, args.no_build)?;
    let size = built.bytes.len() as u64;
    let hash = verge_runtime::component_hash(&built.bytes);

    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("Uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut reader = bar.wrap_read(&built.bytes[..]);
    let _: ComponentStored = remote
        .put_stream(&format!("/v1/components/{hash}"), size, &mut reader)
        .with_context(|| format!("uploading the component of `{}`", manifest.name))?;
    bar.finish_and_clear();

    let answer: Deployed = remote
        .send_json(
            "POST",
            &format!("/v1/workers/{}/versions", manifest.name),
            &NewVersion {
                component: hash,
                manifest: manifest_text,
                percentage: args.percentage,
            },
        )
        .with_context(|| format!("deploying `{}` to {}", manifest.name, remote.base()))?;

    let style = Style::stdout();
    for namespace in &answer.created_namespaces {
        let binding = manifest
            .kv_namespaces
            .iter()
            .find(|kv| &kv.namespace == namespace)
            .map_or(String::new(), |kv| format!(" (binding {})", kv.binding));
        println!(
            "{} KV namespace `{namespace}`{binding}",
            style.green("Created")
        );
    }
    let version = &answer.version.short_id;
    let percent = answer.version.traffic_percent;
    let traffic = if percent == 100 {
        "all traffic".to_string()
    } else {
        format!("{percent}% of traffic")
    };
    println!(
        "{} {} version {} ({}) to {traffic}",
        style.green("Deployed"),
        manifest.name,
        style.bold(version),
        human_size(size),
    );
    println!("  {}", answer.url);
    Ok(())
}
