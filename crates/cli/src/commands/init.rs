//! `verge init [DIR]`: make a directory a Verge worker. An existing Rust
//! crate gets a `verge.toml` and is told what its Cargo.toml still lacks
//! (nothing of it is rewritten); any other directory gets a new project
//! from a template, as `verge new` writes it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use crate::commands::new::{Template, check_name, create};
use crate::term::Style;

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// The directory to make a worker [default: the current one].
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// The worker's name [default: the crate's package name, or the
    /// directory's name].
    #[arg(long)]
    name: Option<String>,

    /// What to start from, in a directory without a Cargo.toml.
    #[arg(long, value_enum, default_value_t = Template::Hello)]
    template: Template,

    /// Depend on the verge-sdk source at this path (as `verge new`).
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

pub(crate) fn run(args: InitArgs) -> anyhow::Result<()> {
    let manifest = args.dir.join(verge_manifest::FILE_NAME);
    if manifest.exists() {
        bail!(
            "{} exists already: {} is a Verge worker\n  help: `verge dev {}` serves it",
            manifest.display(),
            args.dir.display(),
            args.dir.display()
        );
    }
    let style = Style::stdout();
    let cargo_toml = args.dir.join("Cargo.toml");
    if !cargo_toml.exists() {
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("cannot create {}", args.dir.display()))?;
        let name = match &args.name {
            Some(name) => name.clone(),
            None => worker_name(&directory_name(&args.dir)?),
        };
        check_name(&name)?;
        create(&args.dir, &name, args.template, args.sdk_path.as_deref())?;
        println!(
            "{} {name} in {}\n\nNext:\n  verge dev {}",
            style.green("Created"),
            args.dir.display(),
            args.dir.display()
        );
        return Ok(());
    }

    let text = std::fs::read_to_string(&cargo_toml)
        .with_context(|| format!("cannot read {}", cargo_toml.display()))?;
    let cargo: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", cargo_toml.display(), e.message().trim()))?;
    let package = cargo
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    let Some(package) = package else {
        bail!(
            "{} has no [package] name (a workspace root?)\n  help: run `verge init` in the \
             worker's own crate",
            cargo_toml.display()
        );
    };
    let name = args.name.clone().unwrap_or_else(|| worker_name(package));
    check_name(&name)?;
    std::fs::write(
        &manifest,
        format!(
            "# The worker's manifest: bindings, vars, limits, routes (docs/guide.md).\n\
             name = \"{name}\"\n"
        ),
    )
    .with_context(|| format!("cannot write {}", manifest.display()))?;
    println!(
        "{} {} for worker {name}",
        style.green("Wrote"),
        manifest.display()
    );

    let missing = missing_pieces(&cargo);
    if missing.is_empty() {
        println!("\nNext:\n  verge dev {}", args.dir.display());
    } else {
        println!("\n{} still needs in {}:", package, cargo_toml.display());
        for piece in &missing {
            println!("{piece}");
        }
        println!("\nthen: verge dev {}", args.dir.display());
    }
    Ok(())
}

/// What a crate needs to build as a worker and lacks, as lines to add.
fn missing_pieces(cargo: &toml::Table) -> Vec<String> {
    let mut missing = Vec::new();
    let cdylib = cargo
        .get("lib")
        .and_then(|lib| lib.get("crate-type"))
        .and_then(|t| t.as_array())
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
    if !cdylib {
        missing.push(
            "  [lib]\n  crate-type = [\"cdylib\"]   # a worker is a library built as a component"
                .to_string(),
        );
    }
    let sdk = ["verge-sdk", "wstd", "wasip2", "wit-bindgen"]
        .iter()
        .any(|dep| cargo.get("dependencies").and_then(|d| d.get(dep)).is_some());
    if !sdk {
        missing.push(format!(
            "  [dependencies]\n  verge-sdk = \"{}\"   # #[verge_sdk::handler], Router, KV",
            env!("CARGO_PKG_VERSION")
        ));
    }
    missing
}

/// A worker name from a package or directory name: lowercase, `_` as `-`.
fn worker_name(from: &str) -> String {
    from.to_ascii_lowercase().replace('_', "-")
}

fn directory_name(dir: &Path) -> anyhow::Result<String> {
    let full = dir
        .canonicalize()
        .with_context(|| format!("cannot find {}", dir.display()))?;
    full.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| {
            format!(
                "{} has no name to give the worker; pass --name",
                dir.display()
            )
        })
}
