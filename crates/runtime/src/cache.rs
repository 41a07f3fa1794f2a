//! The on-disk cache of compiled components, and compiled code shared
//! between the nodes of a cluster.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! seconds; loading the compiled artifact is a memory map. Components loaded
//! already are shared in memory too: workers deployed from the same bytes
//! run the same code, so their instances reuse each other's pool slots and
//! the CPU's caches instead of each bringing a copy. Artifacts are keyed
//! by the SHA-256 of the component and by the engine's compatibility hash
//! (wasmtime version, target, compiler settings), so a restart reuses them and
//! an upgraded node never loads an artifact it cannot run.
//!
//! Nodes that share a store share compiled code through it: the node that
//! compiles a component puts the artifact in the store, sealed with an
//! HMAC-SHA256 under the cluster's secret over the engine key, the
//! component's hash and the code, and the others load it instead of
//! compiling. Loading an artifact runs its machine code, so a node loads one
//! only if the seal verifies under its own secret: write access to the
//! database alone cannot put code on the nodes. An artifact that does not
//! verify, or that wasmtime refuses for this engine, is ignored and the
//! component compiled here.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// Where a loaded component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileSource {
    /// Loaded from the cache: no compilation happened.
    Cache,
    /// Loaded from code another node compiled, shared through the store.
    Shared,
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
    /// The key that seals code shared with other nodes; `None`: nothing is
    /// shared.
    seal_key: Option<Vec<u8>>,
}

/// Bytes of the seal in front of a shared artifact.
const SEAL_LEN: usize = 32;

/// Keeps a loaded component shared while its holder lives.
pub(crate) type CodeToken = Arc<()>;

/// The hex SHA-256 of a component's bytes: its content address.
pub fn component_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl CompileCache {
    /// A cache in `dir`, or no cache at all; code is shared with other
    /// nodes when a `seal_key` is given.
    pub fn new(engine: &Engine, dir: Option<PathBuf>, seal_key: Option<Vec<u8>>) -> CompileCache {
        // DefaultHasher::new() uses fixed keys, so this is stable across runs
        // of one build; a different toolchain may change it, which only costs
        // a recompile.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
            in_use: Mutex::new(HashMap::new()),
            seal_key,
        }
    }

    /// The engine's compatibility key: artifacts of one key run on every
    /// engine with it, and on no other.
    pub fn engine_key(&self) -> &str {
        &self.engine_key
    }

    /// Whether code is shared with other nodes (a seal key is set).
    pub fn shares_code(&self) -> bool {
        self.seal_key.is_some()
    }

    /// Whether the component of `hash` is compiled here already: loaded, or
    /// in the cache directory.
    pub fn has(&self, hash: &str) -> bool {
        let loaded = self
            .in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .is_some_and(|(_, token)| token.strong_count() > 0);
        loaded || self.artifact_path(hash).is_some_and(|p| p.exists())
    }

    fn mac(&self, key: &[u8], hash: &str, code: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in [
            b"verge compiled component",
            self.engine_key.as_bytes(),
            hash.as_bytes(),
        ] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.update(code);
        mac
    }

    /// `component` (of hash `hash`) compiled, sealed for the other nodes:
    /// `None` when nothing is shared.
    pub fn seal(&self, hash: &str, component: &Component) -> Option<anyhow::Result<Vec<u8>>> {
        let key = self.seal_key.as_deref()?;
        Some(
            component
                .serialize()
                .map_err(anyhow::Error::from)
                .map(|code| {
                    let tag = self.mac(key, hash, &code).finalize().into_bytes();
                    let mut sealed = Vec::with_capacity(SEAL_LEN + code.len());
                    sealed.extend_from_slice(&tag);
                    sealed.extend_from_slice(&code);
                    sealed
                }),
        )
    }

    /// The code inside `sealed` if its seal verifies for `hash` under this
    /// node's key.
    fn open<'a>(&self, hash: &str, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let key = self.seal_key.as_deref()?;
        if sealed.len() < SEAL_LEN {
            return None;
        }
        let (tag, code) = sealed.split_at(SEAL_LEN);
        // Constant time: a forger learns nothing from how long it took.
        self.mac(key, hash, code).verify_slice(tag).ok()?;
        Some(code)
    }

    /// The file an artifact of `hash` lives in.
    pub fn artifact_path(&self, hash: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_key)))
    }

    /// Loads the compiled form of `bytes` (whose hash is `hash`): shared with
    /// a worker that has it loaded already, else from disk, else from
    /// `shared` (an artifact another node sealed, see [`CompileCache::seal`]),
    /// else compiled and stored. Hold the token as long as the component is
    /// in use.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
        shared: Option<&[u8]>,
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
        let (component, source) = self.load_from_disk_or_compile(engine, hash, bytes, shared)?;
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
        shared: Option<&[u8]>,
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
        // A node without a secret shares nothing, whatever it is given.
        if let Some(sealed) = shared.filter(|_| self.seal_key.is_some()) {
            match self.open(hash, sealed) {
                None => tracing::warn!(
                    component = hash,
                    "compiled code in the store does not carry this node's seal (another \
                     cluster secret, or altered): compiling the component here"
                ),
                // SAFETY: the seal verified under this node's secret, so the
                // code is the output of `Component::serialize` on a node of
                // this cluster, for an engine with the same compatibility key
                // (both are under the seal). Deserialization still checks
                // the header and the engine's settings.
                Some(code) => match unsafe { Component::deserialize(engine, code) } {
                    Ok(component) => {
                        if let Some(path) = &path
                            && let Err(e) = write_file(code, path)
                        {
                            tracing::warn!(path = %path.display(), "cannot write the compiled component cache: {e:#}");
                        }
                        return Ok((component, CompileSource::Shared));
                    }
                    Err(e) => tracing::warn!(
                        component = hash,
                        "compiled code in the store does not run on this engine, compiling \
                         the component here: {e:#}"
                    ),
                },
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
    write_file(&component.serialize()?, path)
}

fn write_file(bytes: &[u8], path: &Path) -> anyhow::Result<()> {
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
        let cache = CompileCache::new(&engine, Some(PathBuf::from("/c")), None);
        let path = cache.artifact_path("ab12").unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("ab12-") && name.ends_with(".cwasm"),
            "{name}"
        );
        assert_eq!(
            CompileCache::new(&engine, None, None).artifact_path("ab12"),
            None
        );
    }
}
