//! `verge new NAME [--template hello|rest-api]`: writes a worker project
//! that `verge dev` builds and serves at once.
//!
//! The manifest, Cargo.toml and README come from `templates/`; the sources
//! are those of `examples/`, so what a new project starts from is the code
//! the examples' tests run.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use crate::term::Style;

#[derive(Args, Debug)]
pub(crate) struct NewArgs {
    /// The worker's name (lowercase letters, digits, `-`); also its directory.
    name: String,

    /// What to start from.
    #[arg(long, value_enum, default_value_t = Template::Hello)]
    template: Template,

    /// Where to create the project [default: ./NAME]; it may exist and hold
    /// other files, but none the template writes.
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Depend on the verge-sdk source at this path instead of the one this
    /// `verge` was built from (or the published crate, if that is gone).
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Template {
    /// A greeting with a route, a query parameter, a variable and a log line.
    Hello,
    /// A JSON CRUD API over KV: paging, ETags, conditional writes.
    RestApi,
}

const CARGO_TOML: &str = include_str!("../../../../templates/Cargo.toml.template");
const GITIGNORE: &str = include_str!("../../../../templates/gitignore");

/// The files of a template: (path in the project, contents).
fn files(template: Template) -> Vec<(&'static str, &'static str)> {
    match template {
        Template::Hello => vec![
            (
                "verge.toml",
                include_str!("../../../../templates/hello/verge.toml"),
            ),
            (
                "README.md",
                include_str!("../../../../templates/hello/README.md"),
            ),
            (
                "src/lib.rs",
                include_str!("../../../../examples/hello/src/lib.rs"),
            ),
        ],
        Template::RestApi => vec![
            (
                "verge.toml",
                include_str!("../../../../templates/rest-api/verge.toml"),
            ),
            (
                "README.md",
                include_str!("../../../../templates/rest-api/README.md"),
            ),
            (
                "src/lib.rs",
                include_str!("../../../../examples/todo-api/src/lib.rs"),
            ),
            (
                "src/todo.rs",
                include_str!("../../../../examples/todo-api/src/todo.rs"),
            ),
            (
                "src/time.rs",
                include_str!("../../../../examples/todo-api/src/time.rs"),
            ),
        ],
    }
}

/// The `verge-sdk` dependency line.
fn sdk_dependency(sdk_path: Option<&Path>) -> String {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let path = match sdk_path {
        Some(path) => Some(path.to_path_buf()),
        None => built_from.join("Cargo.toml").exists().then_some(built_from),
    };
    match path.and_then(|p| p.canonicalize().ok()) {
        Some(path) => format!("verge-sdk = {{ path = {:?} }}", path.display().to_string()),
        None => format!("verge-sdk = \"{}\"", env!("CARGO_PKG_VERSION")),
    }
}

pub(crate) fn run(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    create(&dir, &args.name, args.template, args.sdk_path.as_deref())?;
    let style = Style::stdout();
    println!(
        "{} {} from the {} template in {}",
        style.green("Created"),
        args.name,
        args.template.name(),
        dir.display()
    );
    if dir == Path::new(".") {
        println!("\nNext:\n  verge dev");
    } else {
        println!("\nNext:\n  cd {}\n  verge dev", dir.display());
    }
    Ok(())
}

impl Template {
    fn name(self) -> &'static str {
        match self {
            Template::Hello => "hello",
            Template::RestApi => "rest-api",
        }
    }
}

/// Refuses a name `verge.toml` would refuse.
pub(crate) fn check_name(name: &str) -> anyhow::Result<()> {
    if let Err(problem) = verge_manifest::check_worker_name(name) {
        bail!(
            "invalid worker name {name:?}: {problem}\n  help: use lowercase letters, digits and \
             `-`, e.g. `verge new todo-api`"
        );
    }
    Ok(())
}

/// Writes a project from `template` into `dir`, which may hold other
/// files, but none that the template writes: nothing is overwritten.
pub(crate) fn create(
    dir: &Path,
    name: &str,
    template: Template,
    sdk_path: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(path) = sdk_path
        && !path.join("Cargo.toml").exists()
    {
        bail!(
            "--sdk-path {}: no Cargo.toml there\n  help: point it at the verge-sdk crate \
             (crates/sdk in Verge's source)",
            path.display()
        );
    }
    let extra_deps = match template {
        Template::Hello => "",
        Template::RestApi => {
            "serde = { version = \"1\", features = [\"derive\"] }\nserde_json = \"1\"\n"
        }
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{sdk}}", &sdk_dependency(sdk_path))
            .replace("{{extra_deps}}", extra_deps)
    };
    let mut written = vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        (".gitignore", GITIGNORE.to_string()),
    ];
    written.extend(files(template).into_iter().map(|(p, t)| (p, fill(t))));
    let taken: Vec<&str> = written
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| dir.join(path).exists())
        .collect();
    if !taken.is_empty() {
        let crate_hint = if taken.contains(&"Cargo.toml") {
            "; to make an existing crate a worker, run `verge init` in it"
        } else {
            ""
        };
        bail!(
            "{} already has {}\n  help: pick another directory (--dir) or move those files \
             away{crate_hint}",
            dir.display(),
            taken.join(", ")
        );
    }
    for (path, contents) in &written {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
