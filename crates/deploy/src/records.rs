//! The records themselves.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One deployable version of a worker: a component and the manifest it runs
/// with. Its id is derived from both, so deploying the same thing twice
/// yields the same version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Hex SHA-256 over the component's hash and the manifest (see
    /// [`version_id`]).
    pub id: String,
    pub worker: String,
    /// Hex SHA-256 of the component's bytes: the key of its blob.
    pub component: String,
    /// The `verge.toml` text the version was deployed with.
    pub manifest: String,
    /// The component's size in bytes.
    pub size: u64,
    /// When it was first deployed, in milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Who deployed it: the name of the admin token used.
    pub author: String,
}

/// Which versions take a worker's traffic: `stable` gets what the canary
/// does not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub worker: String,
    /// The version that takes all traffic, or all but the canary's share.
    pub stable: String,
    /// A version in gradual rollout and its share of requests.
    pub canary: Option<Canary>,
    /// When this deployment was made, in milliseconds since the Unix epoch.
    pub updated_at: u64,
    /// Who made it: the name of the admin token used.
    pub author: String,
}

/// A version taking `percent` (1..=99) of a worker's requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    pub version: String,
    pub percent: u8,
}

impl Deployment {
    /// Every version taking traffic, with its share in percent.
    pub fn shares(&self) -> Vec<(&str, u8)> {
        match &self.canary {
            None => vec![(self.stable.as_str(), 100)],
            Some(canary) => vec![
                (self.stable.as_str(), 100 - canary.percent),
                (canary.version.as_str(), canary.percent),
            ],
        }
    }
}

/// The id of the version made of the component whose hash is
/// `component_hash` and of `manifest`.
pub fn version_id(component_hash: &str, manifest: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(component_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(manifest.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The short form of a version id that people read and type; any unique
/// prefix of at least 4 characters names a version too.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_id_depends_on_component_and_manifest() {
        let a = version_id("aa", "name = \"x\"\n");
        assert_eq!(a.len(), 64);
        assert_eq!(a, version_id("aa", "name = \"x\"\n"));
        assert_ne!(a, version_id("ab", "name = \"x\"\n"));
        assert_ne!(a, version_id("aa", "name = \"y\"\n"));
        assert_eq!(short_id(&a), &a[..12]);
    }

    #[test]
    fn shares_add_up_to_100() {
        let mut deployment = Deployment {
            worker: "w".into(),
            stable: "v1".into(),
            canary: None,
            updated_at: 0,
            author: "t".into(),
        };
        assert_eq!(deployment.shares(), vec![("v1", 100)]);
        deployment.canary = Some(Canary {
            version: "v2".into(),
            percent: 30,
        });
        assert_eq!(deployment.shares(), vec![("v1", 70), ("v2", 30)]);
    }
}
