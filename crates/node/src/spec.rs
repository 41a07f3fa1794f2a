//! From a manifest to what the runtime needs to run a version: its limits,
//! its environment, its outbound allow-list. `verge dev` and `verge serve`
//! both go through here.

use std::collections::BTreeMap;

use verge_manifest::{HostPattern, Manifest};
use verge_runtime::{AllowedHosts, KvBindings, LimitUnits, Limits, WorkerSpec};

/// The spec of a version made of `manifest` and `component`. `secrets` are
/// set in the guest's environment over the manifest's `[vars]`.
pub fn worker_spec(
    manifest: &Manifest,
    component: Vec<u8>,
    secrets: &[(String, String)],
    kv: KvBindings,
    expose_errors: bool,
) -> WorkerSpec {
    let mut env: BTreeMap<String, String> = manifest.vars.clone();
    env.extend(secrets.iter().cloned());
    WorkerSpec {
        name: manifest.name.clone(),
        component,
        limits: manifest_limits(manifest),
        vars: env.into_iter().collect(),
        instance_reuse: manifest.limits.instance_reuse.unwrap_or(1),
        expose_errors,
        kv,
        outbound: allowed_hosts(manifest),
        concurrency: manifest.limits.concurrency,
    }
}

/// The manifest's limits over the defaults. Those above the node's ceilings
/// are refused when the version loads, with the key named.
pub fn manifest_limits(manifest: &Manifest) -> Limits {
    let l = &manifest.limits;
    let units = LimitUnits {
        cpu_ms: l.cpu_ms,
        wall_ms: l.wall_ms,
        memory_mib: l.memory_mib,
        body_mib: l.body_mib,
        subrequests: l.subrequests,
    };
    Limits::from_units(&units, Limits::default())
}

/// The manifest's `[outbound] allow` list as the runtime's check.
pub fn allowed_hosts(manifest: &Manifest) -> AllowedHosts {
    if manifest.outbound.is_empty() {
        return AllowedHosts::none();
    }
    let patterns = manifest.outbound.clone();
    AllowedHosts::new(move |uri| HostPattern::any_allows(&patterns, uri))
}
