//! Building a worker's component as its manifest says, with progress shown.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use verge_manifest::{ComponentSource, Manifest};

use crate::term::Style;

/// A built (or prebuilt) component.
pub(crate) struct Built {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Builds the component (unless it is prebuilt or `skip_build`) and reads it.
pub(crate) fn build(manifest: &Manifest, skip_build: bool) -> anyhow::Result<Built> {
    let path = match &manifest.source {
        ComponentSource::Prebuilt(path) => path.clone(),
        ComponentSource::Build { command, output } if skip_build => match output {
            Some(output) => output.clone(),
            None => locate_cargo_artifact(manifest, command)?,
        },
        ComponentSource::Build { command, output } => {
            run_build(manifest, command, output.as_deref())?
        }
    };
    let never_built =
        skip_build && matches!(manifest.source, ComponentSource::Build { .. }) && !path.exists();
    if never_built {
        bail!(
            "worker `{}` has not been built yet: there is no {}\n  help: run without --no-build \
             (or `verge build {}` first)",
            manifest.name,
            path.display(),
            manifest.dir.display()
        );
    }
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the component {} of worker `{}`\n  help: check `component` or \
             `[build] output` in verge.toml (docs/manifest.md)",
            path.display(),
            manifest.name
        )
    })?;
    Ok(Built { path, bytes })
}

/// Adds the Rust `target` a build asks for when the toolchain that builds
/// in `dir` lacks it and rustup manages it: rustup installs the targets a
/// rust-toolchain.toml lists only with a toolchain it installs, not into
/// one already there, and a first build should not stop at that.
fn ensure_target(dir: &Path, target: &str) {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output();
    let Ok(sysroot) = sysroot else { return };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.as_os_str().is_empty() || sysroot.join("lib/rustlib").join(target).is_dir() {
        return;
    }
    eprintln!("Installing the Rust target {target} (rustup target add {target})");
    let added = Command::new("rustup")
        .args(["target", "add", target])
        .current_dir(dir)
        .status();
    if !added.is_ok_and(|s| s.success()) {
        eprintln!(
            "{} could not add the target; run `rustup target add {target}` yourself",
            Style::stderr().yellow("warning:")
        );
    }
}

fn is_cargo(command: &[String]) -> bool {
    command.first().is_some_and(|c| c == "cargo")
}

fn run_build(
    manifest: &Manifest,
    command: &[String],
    output: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let style = Style::stderr();
    let started = Instant::now();
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(100));
    let shown = command.join(" ");
    progress.set_message(format!("Building {} ({shown})", manifest.name));
    if progress.is_hidden() {
        eprintln!("Building {} ({shown})", manifest.name);
    }

    let cargo = is_cargo(command);
    if cargo {
        let target = command
            .iter()
            .skip_while(|a| *a != "--target")
            .nth(1)
            .map(String::as_str)
            .or_else(|| command.iter().find_map(|a| a.strip_prefix("--target=")));
        if let Some(target) = target {
            progress.suspend(|| ensure_target(&manifest.dir, target));
        }
    }
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).current_dir(&manifest.dir);
    if cargo {
        cmd.arg("--message-format=json-render-diagnostics");
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot run the build command `{shown}` in {}",
            manifest.dir.display()
        )
    })?;

    // Cargo's diagnostics arrive on stderr; keep them for a failure report.
    let mut stderr = child.stderr.take().context("build stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut artifacts = Vec::new();
    let mut compiled = 0usize;
    let stdout = child.stdout.take().context("build stdout")?;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if !cargo {
            continue;
        }
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" {
            compiled += 1;
            let name = message["target"]["name"].as_str().unwrap_or("?");
            progress.set_message(format!(
                "Building {}: {name} ({compiled} crates)",
                manifest.name
            ));
            artifacts.push(message);
        }
    }
    let status = child.wait().context("waiting for the build")?;
    let diagnostics = stderr_reader.join().unwrap_or_default();
    progress.finish_and_clear();
    if !status.success() {
        eprint!("{diagnostics}");
        bail!(
            "the build of worker `{}` failed (`{shown}` exited with {status})",
            manifest.name
        );
    }
    let path = match output {
        Some(output) => output.to_path_buf(),
        None => pick_wasm_artifact(manifest, &artifacts)?,
    };
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{} {} ({}) in {:.1} s",
        style.green("Built"),
        path.display(),
        human_size(size),
        started.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// Finds the `.wasm` file cargo built for the manifest's package.
fn pick_wasm_artifact(
    manifest: &Manifest,
    artifacts: &[serde_json::Value],
) -> anyhow::Result<PathBuf> {
    let own_manifest = manifest.dir.join("Cargo.toml");
    let own_manifest = own_manifest.canonicalize().unwrap_or(own_manifest);
    let wasm_files = |a: &serde_json::Value| -> Vec<PathBuf> {
        a["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .filter(|f| f.ends_with(".wasm"))
            .map(PathBuf::from)
            .collect()
    };
    let own: Vec<PathBuf> = artifacts
        .iter()
        .filter(|a| {
            a["manifest_path"]
                .as_str()
                .map(PathBuf::from)
                .and_then(|p| p.canonicalize().ok())
                == Some(own_manifest.clone())
        })
        .flat_map(wasm_files)
        .collect();
    let candidates = if own.is_empty() {
        artifacts.iter().flat_map(wasm_files).collect()
    } else {
        own
    };
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "the build of worker `{}` produced no .wasm file; build for wasm32-wasip2 \
             (`--target wasm32-wasip2`) or set `output` in [build]",
            manifest.name
        ),
        many => bail!(
            "the build of worker `{}` produced several .wasm files ({}); set `output` in [build] \
             to the one to serve",
            manifest.name,
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// With `--no-build`, asks cargo where the artifact of the last build is.
fn locate_cargo_artifact(manifest: &Manifest, command: &[String]) -> anyhow::Result<PathBuf> {
    if !is_cargo(command) {
        bail!(
            "`--no-build` cannot tell where a `{}` build puts the component\n  help: set \
             `output` in [build] of verge.toml (docs/manifest.md)",
            command.join(" ")
        );
    }
    let output = Command::new("cargo")
        .args(["metadata", "--format-version=1", "--no-deps"])
        .current_dir(&manifest.dir)
        .output()
        .context("cannot run `cargo metadata`")?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let target_dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata: target_directory")?;
    let profile = if command.iter().any(|a| a == "--release" || a == "-r") {
        "release"
    } else {
        "debug"
    };
    let own_manifest = manifest.dir.join("Cargo.toml").canonicalize().ok();
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .map(PathBuf::from)
                .and_then(|m| m.canonicalize().ok())
                == own_manifest
        })
        .context("cannot find the worker's package in `cargo metadata`")?;
    let name = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib" || k == "bin"))
        })
        .and_then(|t| t["name"].as_str())
        .context("the worker's package has no cdylib or bin target")?;
    let path = PathBuf::from(target_dir)
        .join("wasm32-wasip2")
        .join(profile)
        .join(format!("{}.wasm", name.replace('-', "_")));
    let dashed = path.with_file_name(format!("{name}.wasm"));
    Ok(if path.exists() || !dashed.exists() {
        path
    } else {
        dashed
    })
}

pub(crate) fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * 1024 => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
        b if b >= 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}
