//! The on-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! seconds; loading the compiled artifact is a memory map. Components loaded
//! already are shared in memory too: workers deployed from the same bytes
//! run the same code, so their instances reuse each other's pool slots and
//! the CPU's caches instead of each bringing a copy. Artifacts are keyed
//! by the SHA-256 of the component and by the engine's compatibility hash
//! (wasmtime version, target, compiler settings), so a restart reuses them and
//! an upgraded node never loads an artifact it cannot run.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// Where a loaded component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileSource {
    /// Loaded from the cache: no compilation happened.
    Cache,
    /// Compiled now, taking this long (and stored, if the cache is enabled).
    Compiled(Duration),
}

/// Compiled components on disk, and those in use in memory.
pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
    /// Components in use, by hash, with a token every user holds: an entry
    /// whose token has no holder left is dropped.
    in_use: Mutex<HashMap<String, (Component, Weak<()>)>>,
}

/// Keeps a loaded component shared while its holder lives.
pub(crate) type CodeToken = Arc<()>;

/// The hex SHA-256 of a component's bytes: its content address.
pub fn component_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl CompileCache {
    /// A cache in `dir`, or no cache at all.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> CompileCache {
        // DefaultHasher::new() uses fixed keys, so this is stable across runs
        // of one build; a different toolchain may change it, which only costs
        // a recompile.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
            in_use: Mutex::new(HashMap::new()),
        }
    }

    /// The file an artifact of `hash` lives in.
    pub fn artifact_path(&self, hash: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_key)))
    }

    /// Loads the compiled form of `bytes` (whose hash is `hash`): shared with
    /// a worker that has it loaded already, else from disk, else compiled and
    /// stored. Hold the token as long as the component is in use.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
    ) -> Result<(Component, CompileSource, CodeToken), LoadError> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        in_use.retain(|_, (_, token)| token.strong_count() > 0);
        if let Some((component, token)) = in_use.get(hash)
            && let Some(token) = token.upgrade()
        {
            return Ok((component.clone(), CompileSource::Cache, token));
        }
        // Loading holds the lock: two loads of one new component compile it
        // once, and loads are rare next to requests.
        let (component, source) = self.load_from_disk_or_compile(engine, hash, bytes)?;
        let token = Arc::new(());
        in_use.insert(
            hash.to_string(),
            (component.clone(), Arc::downgrade(&token)),
        );
        Ok((component, source, token))
    }

    #[allow(unsafe_code)] // Component::deserialize, see SAFETY below
    fn load_from_disk_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
    ) -> Result<(Component, CompileSource), LoadError> {
        let path = self.artifact_path(hash);
        if let Some(path) = path.as_deref().filter(|p| p.exists()) {
            // Read into memory rather than map the file: a mapped artifact
            // that someone truncates or rewrites in place would crash the
            // node with SIGBUS the next time its code runs.
            let loaded = std::fs::read(path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| {
                    // SAFETY: the file was written by `store` below from the output
                    // of `Component::serialize` for an engine with the same
                    // compatibility hash; the cache directory belongs to this node.
                    // Deserialization still checks the header and engine settings.
                    unsafe { Component::deserialize(engine, &bytes) }.map_err(anyhow::Error::from)
                });
            match loaded {
                Ok(component) => return Ok((component, CompileSource::Cache)),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "compiled component in the cache is unusable, compiling again: {e:#}"
                ),
            }
        }
        let started = Instant::now();
        let component = Component::from_binary(engine, bytes).map_err(LoadError::Compile)?;
        let took = started.elapsed();
        if let Some(path) = path
            && let Err(e) = store(&component, &path)
        {
            tracing::warn!(path = %path.display(), "cannot write the compiled component cache: {e:#}");
        }
        Ok((component, CompileSource::Compiled(took)))
    }
}

/// Writes the artifact next to its final name and renames it into place, so a
/// crash or a concurrent node never leaves a torn file under the real name.
fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            component_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn artifact_names_carry_the_engine_key() {
        let engine = Engine::default();
        let cache = CompileCache::new(&engine, Some(PathBuf::from("/c")));
        let path = cache.artifact_path("ab12").unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("ab12-") && name.ends_with(".cwasm"),
            "{name}"
        );
        assert_eq!(CompileCache::new(&engine, None).artifact_path("ab12"), None);
    }
}
