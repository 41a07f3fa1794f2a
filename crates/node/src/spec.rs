//! From a manifest to what the runtime needs to run a version: its limits,
//! its environment, its outbound allow-list. `verge dev` and `verge serve`
//! both go through here.

use std::collections::BTreeMap;
use std::time::Duration;

use verge_manifest::{HostPattern, Manifest};
use verge_runtime::{AllowedHosts, KvBindings, Limits, WorkerSpec};

const MIB: u64 = 1024 * 1024;

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
    let defaults = Limits::default();
    let l = &manifest.limits;
    Limits {
        cpu: l.cpu_ms.map_or(defaults.cpu, Duration::from_millis),
        wall: l.wall_ms.map_or(defaults.wall, Duration::from_millis),
        memory: l
            .memory_mib
            .map_or(defaults.memory, |m| m.saturating_mul(MIB)),
        body: l.body_mib.map_or(defaults.body, |m| m.saturating_mul(MIB)),
        subrequests: l.subrequests.unwrap_or(defaults.subrequests),
    }
}

/// The manifest's `[outbound] allow` list as the runtime's check.
pub fn allowed_hosts(manifest: &Manifest) -> AllowedHosts {
    if manifest.outbound.is_empty() {
        return AllowedHosts::none();
    }
    let patterns = manifest.outbound.clone();
    AllowedHosts::new(move |uri| HostPattern::any_allows(&patterns, uri))
}
