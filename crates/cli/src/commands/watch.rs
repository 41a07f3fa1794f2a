//! Hot reload for `verge dev`: watch the worker's sources, rebuild on save,
//! swap the new version in. A build or load that fails leaves the last good
//! version serving and shows why.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

/// How long to wait after a change for the editor's other writes (an atomic
/// save is several events) before rebuilding.
const SETTLE: Duration = Duration::from_millis(300);

/// Directories never watched: build output, local state, VCS data.
fn skipped_dir(name: &str) -> bool {
    matches!(name, "target" | ".verge" | ".git" | "node_modules")
}

/// Whether a change to `path` (inside `root`) should trigger a rebuild:
/// sources and manifests, not build output or local state.
fn relevant(root: &Path, path: &Path) -> bool {
    let inside = path.strip_prefix(root).unwrap_or(path);
    let skipped = inside
        .components()
        .any(|c| c.as_os_str().to_str().is_some_and(skipped_dir));
    if skipped {
        return false;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == ".dev.vars"
        || matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "toml" | "wit")
        )
}

/// Watches `root` on a thread of its own and calls `reload` with the first
/// changed path after each burst of relevant changes. Returns the watcher,
/// which stops watching when dropped.
pub(crate) fn spawn(
    root: PathBuf,
    mut reload: impl FnMut(&Path) + Send + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let filter_root = root.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) {
            return;
        }
        for path in event.paths {
            if relevant(&filter_root, &path) {
                let _ = tx.send(path);
            }
        }
    })?;
    // The project's own files, then each of its directories but the build
    // output and local state, which can hold thousands of directories
    // (inotify watches each one).
    watcher.watch(&root, RecursiveMode::NonRecursive)?;
    for entry in std::fs::read_dir(&root)?.flatten() {
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !name.to_str().is_some_and(skipped_dir) {
            watcher.watch(&entry.path(), RecursiveMode::Recursive)?;
        }
    }
    std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            std::thread::sleep(SETTLE);
            while rx.try_recv().is_ok() {}
            reload(&first);
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::relevant;
    use std::path::Path;

    #[test]
    fn sources_count_build_output_does_not() {
        let root = Path::new("/w");
        for yes in [
            "/w/src/lib.rs",
            "/w/verge.toml",
            "/w/Cargo.toml",
            "/w/.dev.vars",
            "/w/wit/x.wit",
        ] {
            assert!(relevant(root, Path::new(yes)), "{yes}");
        }
        for no in [
            "/w/target/release/build/x.rs",
            "/w/.verge/kv.db",
            "/w/src/lib.rs.swp",
            "/w/.git/index",
            "/w/README.md",
        ] {
            assert!(!relevant(root, Path::new(no)), "{no}");
        }
    }
}
