//! `verge build`: build a worker's component as its manifest says, check that
//! it can run on Verge, and print where it is and its size.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use verge_manifest::Manifest;
use verge_runtime::{Runtime, RuntimeConfig, WorkerSpec};

use crate::build::{build, human_size};
use crate::term::Style;

#[derive(Args, Debug)]
pub(crate) struct BuildArgs {
    /// The worker's directory (where verge.toml is).
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Skip loading the component into the runtime to check its imports.
    #[arg(long)]
    no_check: bool,
}

pub(crate) fn run(args: BuildArgs) -> anyhow::Result<()> {
    let manifest = Manifest::load(&args.dir)?;
    let built = build(&manifest, false)?;
    let size = built.bytes.len() as u64;
    let mut verge_interfaces = None;
    if !args.no_check {
        // Compiling and linking against Verge's interfaces names any import
        // Verge does not provide, before a deploy would.
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(manifest.dir.join(".verge").join("compiled")),
            pooling: false,
            max_instances: 1,
            sink: Arc::new(verge_runtime::TracingSink),
            ..RuntimeConfig::default()
        })?;
        let (worker, _) = runtime
            .load(WorkerSpec::new(manifest.name.clone(), built.bytes))
            .with_context(|| format!("{} cannot run on Verge", built.path.display()))?;
        verge_interfaces = Some(
            worker
                .imports()
                .iter()
                .filter(|name| !name.starts_with("wasi:"))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    let style = Style::stdout();
    println!(
        "{} {} ({})",
        style.green("Ready"),
        built.path.display(),
        human_size(size)
    );
    match verge_interfaces.as_deref() {
        Some([]) => {
            println!("  a plain WASI HTTP component: it also runs on other wasi:http/proxy hosts")
        }
        Some(names) => println!("  uses Verge's {}", names.join(", ")),
        None => {}
    }
    Ok(())
}
