//! The operations that change what a node serves: uploads, deploys,
//! rollbacks, deletes and secrets. Each validates in full before anything
//! is stored or swapped in.

use std::collections::HashMap;

use bytes::Bytes;
use verge_deploy::{Canary, Deployment, Version, short_id, version_id};
use verge_runtime::{MAX_COMPONENT_SIZE, component_hash};

use super::{DeployRequest, Deployed, Node, NodeError, invalid, not_deployed, parse_manifest};

impl Node {
    /// Stores an uploaded component under its hash, checking `expected` if
    /// the uploader named one.
    pub async fn put_component(&self, expected: &str, bytes: Bytes) -> Result<String, NodeError> {
        if bytes.len() > MAX_COMPONENT_SIZE {
            return Err(invalid(
                format!(
                    "the component is {} bytes, above the limit of {MAX_COMPONENT_SIZE}",
                    bytes.len()
                ),
                "build in release mode and strip it (`[profile.release] strip = true`)",
            ));
        }
        let hash = component_hash(&bytes);
        if hash != expected {
            return Err(invalid(
                format!("the uploaded bytes hash to {hash}, not {expected}"),
                "upload to /v1/components/{SHA-256 of the bytes}; the upload may have been cut short",
            ));
        }
        self.stores.deploys.put_blob(&hash, bytes).await?;
        Ok(hash)
    }

    /// Validates and deploys a version: see [`DeployRequest`].
    pub async fn deploy(&self, request: DeployRequest) -> Result<Deployed, NodeError> {
        let _changing = self.changing.lock().await;
        let manifest = parse_manifest(&request.manifest)?;
        if manifest.name != request.worker {
            return Err(invalid(
                format!(
                    "the manifest names worker `{}`, but this deploy is for `{}`",
                    manifest.name, request.worker
                ),
                "deploy to the worker the manifest names, or change `name` in verge.toml",
            ));
        }
        if let Some(why) = manifest
            .routes
            .iter()
            .find_map(|route| self.registry.foreign_host(&request.worker, route))
        {
            return Err(invalid(
                why,
                "route a domain of its own instead (e.g. api.example.com/*); the worker already answers at NAME.<domain>",
            ));
        }
        if let Some((route, owner)) = self
            .registry
            .route_conflict(&request.worker, &manifest.routes)
        {
            return Err(NodeError::Conflict(format!(
                "route `{route}` is already served by worker `{owner}`; \
                 remove it from one of the two manifests"
            )));
        }
        let percentage = match request.percentage {
            None | Some(100) => None,
            Some(p @ 1..=99) => Some(p),
            Some(p) => {
                return Err(invalid(
                    format!("percentage {p} is outside 1..=100"),
                    "give the share of requests the new version takes, e.g. 10",
                ));
            }
        };
        let Some(bytes) = self.stores.deploys.blob(&request.component).await? else {
            return Err(invalid(
                format!("no component with hash {} was uploaded", request.component),
                "upload it first: PUT /v1/components/{hash} with the .wasm as the body",
            ));
        };
        let version = Version {
            id: version_id(&request.component, &request.manifest),
            worker: request.worker.clone(),
            component: request.component.clone(),
            manifest: request.manifest.clone(),
            size: bytes.len() as u64,
            created_at: self.now_ms(),
            author: request.author.clone(),
        };
        let current = self.registry.get(&request.worker);
        let deployment = match (&current, percentage) {
            (Some(live), Some(percent)) => {
                if live.deployment.stable == version.id {
                    return Err(invalid(
                        format!(
                            "version {} already takes the traffic the canary does not",
                            short_id(&version.id)
                        ),
                        "deploy a different version as the canary, or without --percentage",
                    ));
                }
                Deployment {
                    worker: request.worker.clone(),
                    stable: live.deployment.stable.clone(),
                    canary: Some(Canary {
                        version: version.id.clone(),
                        percent,
                    }),
                    updated_at: self.now_ms(),
                    author: request.author.clone(),
                }
            }
            (None, Some(_)) => {
                return Err(invalid(
                    format!(
                        "worker `{}` has no version deployed to share traffic with",
                        request.worker
                    ),
                    "deploy the first version without --percentage",
                ));
            }
            (_, None) => Deployment {
                worker: request.worker.clone(),
                stable: version.id.clone(),
                canary: None,
                updated_at: self.now_ms(),
                author: request.author.clone(),
            },
        };
        // Load first: nothing is stored or swapped unless it can serve.
        // Bound namespaces that do not exist yet are created once it can.
        let missing = self.missing_namespaces(&manifest).await?;
        let (loaded, compile) = self
            .load_version_with(&version, &manifest, bytes.to_vec(), &missing)
            .await?;
        let fresh = HashMap::from([(version.id.clone(), (loaded, manifest))]);
        let live = self
            .activate(&deployment, current.as_deref(), fresh)
            .await?;
        for namespace in &missing {
            self.stores.kv.create_namespace(namespace).await?;
        }
        // The version and the traffic pointing at it are stored together:
        // a failure leaves neither.
        let new_version = self.stores.deploys.deploy(&version, &deployment).await?;
        let version = if new_version {
            version
        } else {
            // Keep the first deploy's record (its time and author).
            self.find_version(&request.worker, &version.id).await?
        };
        self.registry.insert(&request.worker, live);
        Ok(Deployed {
            version,
            new_version,
            deployment,
            compile,
            created_namespaces: missing,
        })
    }

    /// Makes `version` (an id or a unique prefix of one) take all of a
    /// worker's traffic, ending any gradual rollout. By default: the stable
    /// version if a rollout is under way, else the version deployed before
    /// the current one.
    pub async fn rollback(
        &self,
        worker: &str,
        version: Option<&str>,
        author: &str,
    ) -> Result<(Deployment, Version), NodeError> {
        let _changing = self.changing.lock().await;
        let current = self
            .registry
            .get(worker)
            .ok_or_else(|| not_deployed(worker))?;
        let versions = self.stores.deploys.versions(worker).await?;
        let target = match version {
            Some(wanted) => resolve(&versions, wanted)?,
            // During a rollout, rolling back ends it: the stable version
            // takes all traffic again.
            None if current.deployment.canary.is_some() => {
                resolve(&versions, &current.deployment.stable)?
            }
            None => {
                let position = versions
                    .iter()
                    .position(|v| v.id == current.deployment.stable)
                    .ok_or_else(|| {
                        NodeError::NotFound("the current version is not recorded".into())
                    })?;
                versions.get(position + 1).cloned().ok_or_else(|| {
                    invalid(
                        format!(
                            "version {} is the oldest of `{worker}`; there is nothing before it",
                            short_id(&current.deployment.stable)
                        ),
                        "name a version to roll to: `verge versions` lists them",
                    )
                })?
            }
        };
        let deployment = Deployment {
            worker: worker.to_string(),
            stable: target.id.clone(),
            canary: None,
            updated_at: self.now_ms(),
            author: author.to_string(),
        };
        let live = self
            .activate(&deployment, Some(&current), HashMap::new())
            .await?;
        self.stores.deploys.set_deployment(&deployment).await?;
        self.registry.insert(worker, live);
        Ok((deployment, target))
    }

    /// Stops serving a worker and forgets its versions and secrets.
    pub async fn delete_worker(&self, worker: &str) -> Result<(), NodeError> {
        let _changing = self.changing.lock().await;
        if !self.stores.deploys.delete_worker(worker).await? {
            return Err(not_deployed(worker));
        }
        self.registry.remove(worker);
        Ok(())
    }

    /// Forgets a worker's versions that take no traffic, and their
    /// components (`verge dev` does so after each rebuild).
    pub async fn prune_versions(&self, worker: &str) -> Result<usize, NodeError> {
        let _changing = self.changing.lock().await;
        let Some(live) = self.registry.get(worker) else {
            return Ok(0);
        };
        let keep: Vec<String> = live
            .deployment
            .shares()
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect();
        Ok(self.stores.deploys.prune_versions(worker, &keep).await?)
    }

    /// A worker's versions, newest first.
    pub async fn versions(&self, worker: &str) -> Result<Vec<Version>, NodeError> {
        let versions = self.stores.deploys.versions(worker).await?;
        if versions.is_empty() {
            return Err(not_deployed(worker));
        }
        Ok(versions)
    }

    /// Sets a secret and restarts the worker's versions with it.
    pub async fn put_secret(&self, worker: &str, name: &str, value: &str) -> Result<(), NodeError> {
        check_secret_name(name)?;
        verge_manifest::check_worker_name(worker).map_err(|why| {
            invalid(
                format!("invalid worker name {worker:?}: {why}"),
                "use lowercase letters, digits and `-`",
            )
        })?;
        let _changing = self.changing.lock().await;
        let mut secrets = self.stores.secrets.secrets(worker).await?;
        secrets.retain(|(n, _)| n != name);
        let sizes = secrets
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain([(name, value)]);
        if let Some((message, help)) = verge_manifest::check_vars_size("secret", sizes) {
            return Err(invalid(message, help));
        }
        self.stores.secrets.put_secret(worker, name, value).await?;
        self.reload_env(worker).await
    }

    /// Deletes a secret and restarts the worker's versions without it.
    pub async fn delete_secret(&self, worker: &str, name: &str) -> Result<(), NodeError> {
        let _changing = self.changing.lock().await;
        if !self.stores.secrets.delete_secret(worker, name).await? {
            return Err(NodeError::NotFound(format!(
                "worker `{worker}` has no secret named `{name}`"
            )));
        }
        self.reload_env(worker).await
    }

    /// Rebuilds a served worker's instances' environment after a secret
    /// changed. The compiled code comes from the cache, so this is quick.
    async fn reload_env(&self, worker: &str) -> Result<(), NodeError> {
        if let Some(current) = self.registry.get(worker) {
            let live = self
                .activate(&current.deployment, None, HashMap::new())
                .await?;
            self.registry.insert(worker, live);
        }
        Ok(())
    }

    pub(super) async fn find_version(&self, worker: &str, id: &str) -> Result<Version, NodeError> {
        let versions = self.stores.deploys.versions(worker).await?;
        resolve(&versions, id)
    }
}

/// The version `wanted` names: a full id or a unique prefix of at least 4.
fn resolve(versions: &[Version], wanted: &str) -> Result<Version, NodeError> {
    let wanted = wanted.to_ascii_lowercase();
    if wanted.len() < 4 {
        return Err(invalid(
            format!("version `{wanted}` is too short to name one"),
            "give at least 4 characters of the id `verge versions` shows",
        ));
    }
    let mut matches = versions.iter().filter(|v| v.id.starts_with(&wanted));
    match (matches.next(), matches.next()) {
        (Some(v), None) => Ok(v.clone()),
        (None, _) => Err(NodeError::NotFound(format!("no version `{wanted}`"))),
        (Some(_), Some(_)) => Err(invalid(
            format!("`{wanted}` names more than one version"),
            "give more characters of the id",
        )),
    }
}

/// How to name a secret, for the errors that refuse a name.
pub const SECRET_NAME_HELP: &str =
    "use letters, digits and `_`, not starting with a digit, e.g. API_TOKEN";

/// Whether `name` can name a secret (it becomes an environment variable):
/// 1 to 128 letters, digits and `_`, not starting with a digit.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

fn check_secret_name(name: &str) -> Result<(), NodeError> {
    if is_secret_name(name) {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid secret name {name:?}"),
            SECRET_NAME_HELP,
        ))
    }
}
