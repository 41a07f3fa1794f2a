//! Loading versions: compiling (or taking from the cache) and linking a
//! worker's versions with their secrets and KV bindings.

use std::collections::HashMap;
use std::sync::Arc;

use verge_deploy::{Deployment, Version, short_id};
use verge_kv::Namespace;
use verge_manifest::Manifest;
use verge_runtime::{CompileSource, KvBindings, LoadError, Worker};

use super::{Node, NodeError, invalid, parse_manifest};
use crate::registry::Live;
use crate::spec::worker_spec;

impl Node {
    /// Loads every version `deployment` sends traffic to. `current` is the
    /// worker's entry now, whose loaded versions are reused (the caller
    /// passes it only when their environment cannot have changed);
    /// `fresh` holds versions just loaded, with their manifests.
    pub(super) async fn activate(
        &self,
        deployment: &Deployment,
        current: Option<&Live>,
        mut fresh: HashMap<String, (Arc<Worker>, Manifest)>,
    ) -> Result<Live, NodeError> {
        let mut reusable = HashMap::new();
        if let Some(live) = current {
            reusable.insert(live.deployment.stable.clone(), live.stable.clone());
            if let (Some(canary), Some((worker, _))) = (&live.deployment.canary, &live.canary) {
                reusable.insert(canary.version.clone(), worker.clone());
            }
        }
        let mut get = async |id: &str| -> Result<(Arc<Worker>, Manifest), NodeError> {
            if let Some(loaded) = fresh.remove(id) {
                return Ok(loaded);
            }
            let version = self.find_version(&deployment.worker, id).await?;
            let manifest = parse_manifest(&version.manifest)?;
            if let Some(worker) = reusable.remove(id) {
                return Ok((worker, manifest));
            }
            let bytes = self
                .stores
                .deploys
                .blob(&version.component)
                .await?
                .ok_or_else(|| {
                    NodeError::NotFound(format!(
                        "the component of version {} is missing from the store",
                        short_id(id)
                    ))
                })?;
            let (worker, _) = self
                .load_version(&version, &manifest, bytes.to_vec())
                .await?;
            Ok((worker, manifest))
        };
        let (stable, manifest) = get(&deployment.stable).await?;
        let canary = match &deployment.canary {
            Some(c) => Some((get(&c.version).await?.0, c.percent)),
            None => None,
        };
        // Routes follow the stable version's manifest; a canary that changes
        // routes takes them over when it is promoted.
        Ok(Live::new(
            deployment.clone(),
            manifest.routes,
            manifest.crons,
            stable,
            canary,
        ))
    }

    /// Compiles (or takes from the cache) and links one version, with the
    /// worker's secrets and KV bindings.
    async fn load_version(
        &self,
        version: &Version,
        manifest: &Manifest,
        component: Vec<u8>,
    ) -> Result<(Arc<Worker>, CompileSource), NodeError> {
        self.load_version_with(version, manifest, component, &[])
            .await
    }

    /// [`Node::load_version`], with the namespaces in `to_create` bound
    /// though they do not exist yet (a deploy creates them once the
    /// version loads).
    pub(super) async fn load_version_with(
        &self,
        version: &Version,
        manifest: &Manifest,
        component: Vec<u8>,
        to_create: &[String],
    ) -> Result<(Arc<Worker>, CompileSource), NodeError> {
        let kv = self.kv_bindings(manifest, to_create).await?;
        let secrets = self.stores.secrets.secrets(&version.worker).await?;
        let spec = worker_spec(manifest, component, &secrets, kv, self.config.error_detail);
        let shared = self.shared_code(&version.component).await;
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let (worker, source) = runtime.load_shared(spec, shared.as_deref())?;
            // What this node compiled, the others need not.
            let sealed = match source {
                CompileSource::Compiled(_) => runtime.seal(&worker),
                CompileSource::Cache | CompileSource::Shared => None,
            };
            Ok::<_, LoadError>((worker, source, sealed))
        })
        .await
        .map_err(|e| invalid(format!("loading the component failed: {e}"), "retry"))?;
        let (worker, source, sealed) = loaded.map_err(load_error)?;
        self.metrics.record_load(source);
        // Stored before the caller records the version: a node that learns
        // of it finds the code already there. Failing to share costs the
        // others a compile, not this load.
        match sealed {
            Some(Ok(sealed)) => {
                if let Err(e) = self
                    .stores
                    .deploys
                    .put_artifact(&version.component, self.runtime.engine_key(), sealed.into())
                    .await
                {
                    tracing::warn!(component = %version.component, "cannot share the compiled code through the store, other nodes will compile it: {e}");
                }
            }
            Some(Err(e)) => {
                tracing::warn!(component = %version.component, "cannot serialize the compiled code to share it: {e:#}");
            }
            None => {}
        }
        Ok((Arc::new(worker), source))
    }

    /// Code another node compiled for the component of `hash`, if this node
    /// shares code and has none of its own.
    async fn shared_code(&self, hash: &str) -> Option<bytes::Bytes> {
        if !self.runtime.shares_code() || self.runtime.compiled_here(hash) {
            return None;
        }
        match self
            .stores
            .deploys
            .artifact(hash, self.runtime.engine_key())
            .await
        {
            Ok(code) => code,
            Err(e) => {
                tracing::warn!(
                    component = hash,
                    "cannot read shared compiled code, compiling here: {e}"
                );
                None
            }
        }
    }

    /// The namespaces a manifest binds that do not exist, in order, once
    /// each.
    pub(super) async fn missing_namespaces(
        &self,
        manifest: &Manifest,
    ) -> Result<Vec<String>, NodeError> {
        if manifest.kv_namespaces.is_empty() {
            return Ok(Vec::new());
        }
        let existing = self.stores.kv.namespaces().await?;
        let mut missing: Vec<String> = Vec::new();
        for kv in &manifest.kv_namespaces {
            if !existing.contains(&kv.namespace) && !missing.contains(&kv.namespace) {
                missing.push(kv.namespace.clone());
            }
        }
        Ok(missing)
    }

    /// The namespaces a manifest binds, which must exist unless they are
    /// in `to_create`.
    async fn kv_bindings(
        &self,
        manifest: &Manifest,
        to_create: &[String],
    ) -> Result<KvBindings, NodeError> {
        if manifest.kv_namespaces.is_empty() {
            return Ok(KvBindings::default());
        }
        let existing = self.stores.kv.namespaces().await?;
        let mut bindings = HashMap::new();
        for kv in &manifest.kv_namespaces {
            if !existing.contains(&kv.namespace) && !to_create.contains(&kv.namespace) {
                return Err(invalid(
                    format!(
                        "KV namespace `{}` (binding {}) does not exist on this node",
                        kv.namespace, kv.binding
                    ),
                    format!(
                        "create it (`verge kv namespace create {} --remote`) or deploy the \
                         worker again, which creates the namespaces it binds",
                        kv.namespace
                    ),
                ));
            }
            bindings.insert(
                kv.binding.clone(),
                Namespace::new(
                    self.stores.kv.clone(),
                    &kv.namespace,
                    self.stores.clock.clone(),
                ),
            );
        }
        Ok(Arc::new(bindings))
    }
}

fn load_error(e: LoadError) -> NodeError {
    let help = match &e {
        LoadError::Compile(_) => "upload the .wasm that `verge build` produced",
        LoadError::UnknownImport { .. } | LoadError::Link(_) => {
            "build the worker for wasm32-wasip2 against the wasi:http/proxy world"
        }
        LoadError::TooLarge { .. } => "strip the component or trim its dependencies",
        LoadError::Limits(_) => {
            "lower the limit in verge.toml [limits], or ask the operator to raise the ceiling"
        }
    };
    // The message with the chain of its causes (wasmtime's reason a
    // component does not compile is one).
    invalid(format!("{:#}", anyhow::Error::from(e)), help)
}
