//! The node's configuration: one struct, [`NodeConfig`], made from layers
//! (a TOML file, then environment variables and flags over it) and validated
//! once at start. Every error names the key, the flag and the variable that
//! set it, and how to fix it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use verge_runtime::{LimitUnits, Limits};

const MIB: u64 = 1024 * 1024;

/// The KV read cache of a node on a shared store, in MiB (`kv_cache_mib`).
pub const DEFAULT_KV_CACHE_MIB: u64 = 64;

/// Who may use the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Recorded as the author of what the token deploys.
    pub name: String,
    pub token: String,
    /// Read-only tokens may list and tail, not change anything.
    #[serde(default)]
    pub read_only: bool,
}

/// Where the node keeps workers and KV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// SQLite files in the data dir: one node.
    Sqlite,
    /// A PostgreSQL database that nodes can share, with Verge's tables in
    /// `schema`.
    Postgres { url: String, schema: String },
}

impl StoreConfig {
    /// The store named by `store` (`--store`: `sqlite`, the default, or a
    /// PostgreSQL URL) with Verge's tables in `schema`.
    pub fn parse(store: Option<&str>, schema: String) -> Result<StoreConfig, ConfigError> {
        match store {
            None | Some("sqlite") => Ok(StoreConfig::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let valid = !schema.is_empty()
                    && schema
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(error(
                        format!(
                            "`store_schema` (--store-schema, VERGE_STORE_SCHEMA) is {schema:?}"
                        ),
                        "use lowercase letters, digits and `_`, e.g. store_schema = \"verge\"",
                    ));
                }
                Ok(StoreConfig::Postgres {
                    url: url.to_string(),
                    schema,
                })
            }
            Some(other) => Err(error(
                format!("`store` (--store, VERGE_STORE) is {other:?}"),
                "use \"sqlite\" (the default, one node) or a postgres://user@host/db URL",
            )),
        }
    }
}

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The data plane: where workers are reached.
    pub listen: SocketAddr,
    /// The admin API, health and metrics; `None` when the node has none
    /// (`admin_listen = "off"`).
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    /// Workers answer at `NAME.<domain>` besides their routes.
    pub domain: String,
    pub admin_tokens: Vec<AdminToken>,
    /// The secret every node of a cluster shares, which lets a node run
    /// code another node compiled (it seals that code in the store); `None`:
    /// each node compiles what it runs.
    pub cluster_secret: Option<String>,
    /// The highest limits a worker's manifest may ask for.
    pub ceilings: Limits,
    /// Requests running at once, all workers together.
    pub max_instances: u32,
    /// Requests one worker may run at once (all its versions together), so
    /// that no worker takes every instance.
    pub max_instances_per_worker: u32,
    /// Bytes all requests together may hold (guest linear memory and their
    /// host side); a request that would pass it gets a 503.
    pub memory_budget: u64,
    /// How long a request waits for a free instance before a 503.
    pub queue_timeout: Duration,
    /// How long a client may take to send a request's headers (then the
    /// connection is closed).
    pub header_read_timeout: Duration,
    /// How long a client may send nothing of a request body (then 408).
    pub body_read_timeout: Duration,
    /// How long requests in flight may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Use the pooling instance allocator where the machine allows it.
    pub pooling: bool,
    /// Put guest failure details in error responses (for staging and
    /// `verge dev`; production nodes keep them in the log and the tail).
    pub error_detail: bool,
    /// Memory for the KV read cache of a shared store, in bytes (0: none).
    /// A SQLite node reads its own file in microseconds and has no cache.
    pub kv_cache: usize,
    /// LISTEN for change notifications on PostgreSQL. Off where LISTEN does
    /// not work (PgBouncer in transaction mode, some PostgreSQL-compatible
    /// databases): the node then reads the change log every second.
    pub store_listen: bool,
    /// Special-purpose networks (private, loopback, link-local ...) that
    /// workers' outbound requests may reach; public addresses need no entry.
    /// A dev node reaches loopback too.
    pub outbound_allow_networks: Vec<verge_runtime::IpNet>,
    /// A `verge dev` node: its one worker also takes requests for any host,
    /// and its cron triggers can be fired by hand at
    /// [`SCHEDULED_PATH`](crate::registry::SCHEDULED_PATH). A node that
    /// `verge serve` runs never is one.
    pub dev: bool,
}

/// One layer of settings, every one optional: the config file's shape, and
/// what flags and environment variables fill in.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub store_schema: Option<String>,
    pub domain: Option<String>,
    #[serde(default)]
    pub admin_tokens: Vec<AdminToken>,
    pub cluster_secret: Option<String>,
    pub max_instances: Option<u32>,
    pub max_instances_per_worker: Option<u32>,
    pub memory_budget_mib: Option<u64>,
    pub queue_timeout_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    pub drain_timeout_s: Option<u64>,
    pub pooling: Option<bool>,
    pub error_detail: Option<bool>,
    pub kv_cache_mib: Option<u64>,
    pub store_listen: Option<bool>,
    pub outbound_allow_networks: Option<Vec<String>>,
    #[serde(default)]
    pub ceilings: CeilingsLayer,
    /// Set by `verge dev` alone, never by a config file ([`NodeConfig::dev`]).
    #[serde(skip)]
    pub dev: bool,
}

/// The `[ceilings]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeilingsLayer {
    pub cpu_ms: Option<u64>,
    pub wall_ms: Option<u64>,
    pub memory_mib: Option<u64>,
    pub body_mib: Option<u64>,
    pub subrequests: Option<u32>,
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}\n  help: {help}")]
pub struct ConfigError {
    pub message: String,
    pub help: String,
}

fn error(message: impl Into<String>, help: impl Into<String>) -> ConfigError {
    ConfigError {
        message: message.into(),
        help: help.into(),
    }
}

impl ConfigLayer {
    /// Reads a config file; unknown keys are errors with their line.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            error(
                format!("cannot read the node config {}: {e}", path.display()),
                "check the path given to --config or VERGE_CONFIG",
            )
        })?;
        ConfigLayer::parse(&text, path)
    }

    /// Parses the text of a config file read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<ConfigLayer, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .unwrap_or(0);
            let (message, help) = verge_manifest::explain_toml_error(e.message());
            error(
                format!("{}:{line}: {message}", path.display()),
                match help {
                    Some(help) => format!("{help} (docs/serve.md lists a node config's keys)"),
                    None => "see docs/serve.md for the keys a node config takes".into(),
                },
            )
        })
    }

    /// This layer with unset values taken from `lower`; admin tokens of
    /// both.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            listen: self.listen.or(lower.listen),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            data_dir: self.data_dir.or(lower.data_dir),
            store: self.store.or(lower.store),
            store_schema: self.store_schema.or(lower.store_schema),
            domain: self.domain.or(lower.domain),
            // Tokens from every layer are accepted together, so an operator
            // can keep named tokens in the file and add one by environment.
            admin_tokens: self
                .admin_tokens
                .into_iter()
                .chain(lower.admin_tokens)
                .collect(),
            cluster_secret: self.cluster_secret.or(lower.cluster_secret),
            max_instances: self.max_instances.or(lower.max_instances),
            max_instances_per_worker: self
                .max_instances_per_worker
                .or(lower.max_instances_per_worker),
            memory_budget_mib: self.memory_budget_mib.or(lower.memory_budget_mib),
            queue_timeout_ms: self.queue_timeout_ms.or(lower.queue_timeout_ms),
            header_read_timeout_ms: self.header_read_timeout_ms.or(lower.header_read_timeout_ms),
            body_read_timeout_ms: self.body_read_timeout_ms.or(lower.body_read_timeout_ms),
            drain_timeout_s: self.drain_timeout_s.or(lower.drain_timeout_s),
            pooling: self.pooling.or(lower.pooling),
            error_detail: self.error_detail.or(lower.error_detail),
            kv_cache_mib: self.kv_cache_mib.or(lower.kv_cache_mib),
            store_listen: self.store_listen.or(lower.store_listen),
            outbound_allow_networks: self
                .outbound_allow_networks
                .or(lower.outbound_allow_networks),
            ceilings: CeilingsLayer {
                cpu_ms: self.ceilings.cpu_ms.or(lower.ceilings.cpu_ms),
                wall_ms: self.ceilings.wall_ms.or(lower.ceilings.wall_ms),
                memory_mib: self.ceilings.memory_mib.or(lower.ceilings.memory_mib),
                body_mib: self.ceilings.body_mib.or(lower.ceilings.body_mib),
                subrequests: self.ceilings.subrequests.or(lower.ceilings.subrequests),
            },
            dev: self.dev || lower.dev,
        }
    }
}

/// Shortest admin token accepted: guessing one must be hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

impl NodeConfig {
    /// Validates a layer (defaults fill what it leaves unset).
    pub fn from_layer(layer: ConfigLayer) -> Result<NodeConfig, ConfigError> {
        let address = |value: Option<String>, default: &str, key: &str, flag: &str, var: &str| {
            let text = value.unwrap_or_else(|| default.to_string());
            text.parse::<SocketAddr>().map_err(|e| {
                error(
                    format!("`{key}` (--{flag}, {var}) is {text:?}: {e}"),
                    format!("give an IP address and port, e.g. {default:?}"),
                )
            })
        };
        let listen = address(
            layer.listen,
            "0.0.0.0:8080",
            "listen",
            "listen",
            "VERGE_LISTEN",
        )?;
        // "off": no admin API, so nothing to deploy with but what the
        // process itself does (a `verge dev` node without its admin side).
        let admin_listen = match layer.admin_listen.as_deref() {
            Some("off") => None,
            _ => Some(address(
                layer.admin_listen,
                "127.0.0.1:8788",
                "admin_listen",
                "admin-listen",
                "VERGE_ADMIN_LISTEN",
            )?),
        };
        if admin_listen == Some(listen) && listen.port() != 0 {
            return Err(error(
                format!("`listen` and `admin_listen` are both {listen}"),
                "the admin API needs an address of its own, e.g. admin_listen = \"127.0.0.1:8788\"",
            ));
        }

        let schema = layer.store_schema.unwrap_or_else(|| "verge".into());
        let store = StoreConfig::parse(layer.store.as_deref(), schema)?;

        let domain = layer
            .domain
            .unwrap_or_else(|| "localhost".into())
            .to_ascii_lowercase();
        let label_ok =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !domain.split('.').all(label_ok) {
            return Err(error(
                format!("`domain` (--domain, VERGE_DOMAIN) is {domain:?}, not a host name"),
                "give the domain workers answer under, e.g. domain = \"workers.example.com\"",
            ));
        }

        if layer.admin_tokens.is_empty() && admin_listen.is_some() {
            return Err(error(
                "no admin token is set, so nobody could deploy to this node",
                "set one with VERGE_ADMIN_TOKEN=\"$(openssl rand -hex 32)\", \
                 --admin-token-file PATH, or [[admin_tokens]] in the config file",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for token in &layer.admin_tokens {
            if token.token.len() < MIN_TOKEN_LEN {
                return Err(error(
                    format!(
                        "admin token `{}` is {} characters; at least {MIN_TOKEN_LEN} are required",
                        token.name,
                        token.token.len()
                    ),
                    "generate one with `openssl rand -hex 32`",
                ));
            }
            if token.token.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(error(
                    format!(
                        "admin token `{}` contains spaces or non-ASCII characters",
                        token.name
                    ),
                    "a token travels in an HTTP header: use letters, digits and punctuation",
                ));
            }
            if !names.insert(token.name.as_str()) {
                return Err(error(
                    format!("two admin tokens are named `{}`", token.name),
                    "give each [[admin_tokens]] entry its own name",
                ));
            }
        }

        if let Some(secret) = &layer.cluster_secret
            && let odd = secret.bytes().any(|b| !b.is_ascii_graphic())
            && (odd || secret.len() < MIN_TOKEN_LEN)
        {
            return Err(error(
                format!(
                    "`cluster_secret` (--cluster-secret-file, VERGE_CLUSTER_SECRET) is {} \
                     characters{}; at least {MIN_TOKEN_LEN} letters, digits or punctuation \
                     are required",
                    secret.len(),
                    if odd {
                        " with spaces or non-ASCII characters"
                    } else {
                        ""
                    }
                ),
                "generate one with `openssl rand -hex 32` and give every node of the cluster \
                 the same",
            ));
        }

        let c = &layer.ceilings;
        let positive = |value: Option<u64>, key: &str, flag: &str| match value {
            Some(0) => Err(error(
                format!("`ceilings.{key}` (--{flag}) must be at least 1"),
                "leave it out to use the default",
            )),
            other => Ok(other),
        };
        let units = LimitUnits {
            cpu_ms: positive(c.cpu_ms, "cpu_ms", "max-cpu-ms")?,
            wall_ms: positive(c.wall_ms, "wall_ms", "max-wall-ms")?,
            memory_mib: positive(c.memory_mib, "memory_mib", "max-memory-mib")?,
            body_mib: positive(c.body_mib, "body_mib", "max-body-mib")?,
            subrequests: c.subrequests,
        };
        let ceilings = Limits::from_units(&units, Limits::default_ceilings());
        if ceilings.memory > 4096 * MIB {
            return Err(error(
                "`ceilings.memory_mib` (--max-memory-mib) is above 4096",
                "a wasm32 guest cannot address more than 4 GiB",
            ));
        }
        let memory_budget = match layer.memory_budget_mib {
            None => verge_runtime::memory::default_budget(),
            Some(0) => {
                return Err(error(
                    "`memory_budget_mib` (--memory-budget-mib) must be at least 1",
                    "leave it out for three quarters of the machine's memory",
                ));
            }
            Some(mib) => mib.saturating_mul(MIB),
        };
        let floor = verge_runtime::memory::INSTANCE_FLOOR;
        if memory_budget < ceilings.memory + verge_runtime::memory::REQUEST_BASE {
            return Err(error(
                format!(
                    "`memory_budget_mib` (--memory-budget-mib) is {} MiB, too small for one \
                     request at the highest memory limit (`ceilings.memory_mib`, {} MiB)",
                    memory_budget / MIB,
                    ceilings.memory / MIB
                ),
                "raise the budget or lower --max-memory-mib",
            ));
        }
        // 1000 by default, fewer where the budget cannot hold that many.
        let max_instances = layer
            .max_instances
            .unwrap_or_else(|| (memory_budget / floor).clamp(1, 1000) as u32);
        if max_instances == 0 {
            return Err(error(
                "`max_instances` (--max-instances) must be at least 1",
                "it is how many requests may run at once; the default is 1000",
            ));
        }
        if u64::from(max_instances) * floor > memory_budget {
            return Err(error(
                format!(
                    "`max_instances` (--max-instances) is {max_instances}, more than the memory \
                     budget can hold: each instance takes {} KiB at least, and the budget \
                     (`memory_budget_mib`, --memory-budget-mib) is {} MiB",
                    floor / 1024,
                    memory_budget / MIB
                ),
                format!(
                    "lower max_instances to {} or raise the budget",
                    memory_budget / floor
                ),
            ));
        }
        // Half the node by default: a worker flooded with slow requests
        // leaves the other half to everyone else.
        let max_instances_per_worker = layer
            .max_instances_per_worker
            .unwrap_or((max_instances / 2).max(1));
        if max_instances_per_worker == 0 || max_instances_per_worker > max_instances {
            return Err(error(
                format!(
                    "`max_instances_per_worker` (--max-instances-per-worker) is \
                     {max_instances_per_worker}, outside 1..={max_instances} (`max_instances`)"
                ),
                "it is how many requests one worker may run at once; the default is half of \
                 max_instances",
            ));
        }
        let timeout = |value: Option<u64>, key: &str, flag: &str| match value.unwrap_or(10_000) {
            0 => Err(error(
                format!("`{key}` ({flag}) must be at least 1 ms"),
                "the default is 10000 (10 s), as nginx's client_body_timeout is 60 s",
            )),
            ms => Ok(Duration::from_millis(ms)),
        };
        let header_read_timeout = timeout(
            layer.header_read_timeout_ms,
            "header_read_timeout_ms",
            "--header-read-timeout-ms",
        )?;
        let body_read_timeout = timeout(
            layer.body_read_timeout_ms,
            "body_read_timeout_ms",
            "--body-read-timeout-ms",
        )?;
        let kv_cache_mib = layer.kv_cache_mib.unwrap_or(DEFAULT_KV_CACHE_MIB);
        if kv_cache_mib > 1024 * 1024 {
            return Err(error(
                format!("`kv_cache_mib` (--kv-cache-mib, VERGE_KV_CACHE_MIB) is {kv_cache_mib}"),
                "give the cache's size in MiB, e.g. kv_cache_mib = 256; 0 turns it off",
            ));
        }
        let outbound_allow_networks = layer
            .outbound_allow_networks
            .unwrap_or_default()
            .iter()
            .map(|text| parse_network(text))
            .collect::<Result<_, _>>()?;
        Ok(NodeConfig {
            listen,
            admin_listen,
            data_dir: layer
                .data_dir
                .unwrap_or_else(|| PathBuf::from("verge-data")),
            store,
            domain,
            admin_tokens: layer.admin_tokens,
            cluster_secret: layer.cluster_secret,
            ceilings,
            max_instances,
            max_instances_per_worker,
            memory_budget,
            queue_timeout: Duration::from_millis(layer.queue_timeout_ms.unwrap_or(1000)),
            header_read_timeout,
            body_read_timeout,
            drain_timeout: Duration::from_secs(layer.drain_timeout_s.unwrap_or(30)),
            pooling: layer.pooling.unwrap_or(true),
            error_detail: layer.error_detail.unwrap_or(false),
            kv_cache: (kv_cache_mib * MIB) as usize,
            store_listen: layer.store_listen.unwrap_or(true),
            outbound_allow_networks,
            dev: layer.dev,
        })
    }
}

/// A network in CIDR notation (`10.0.0.0/8`), or one address.
fn parse_network(text: &str) -> Result<verge_runtime::IpNet, ConfigError> {
    let text = text.trim();
    text.parse::<verge_runtime::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(verge_runtime::IpNet::from))
        .map_err(|_| {
            error(
                format!(
                    "`outbound_allow_networks` (--outbound-allow-network, \
                     VERGE_OUTBOUND_ALLOW_NETWORKS) has {text:?}, not a network"
                ),
                "give networks in CIDR notation, e.g. [\"10.0.0.0/8\", \"fd00::/8\"], or single addresses",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    mod any_text {
        use super::*;
        use proptest::prelude::*;

        const KEYS: &[&str] = &[
            "listen",
            "admin_listen",
            "data_dir",
            "store",
            "store_schema",
            "domain",
            "cluster_secret",
            "max_instances",
            "max_instances_per_worker",
            "memory_budget_mib",
            "queue_timeout_ms",
            "header_read_timeout_ms",
            "body_read_timeout_ms",
            "drain_timeout_s",
            "pooling",
            "error_detail",
            "kv_cache_mib",
            "store_listen",
            "outbound_allow_networks",
            "cpu_ms",
            "wall_ms",
            "memory_mib",
            "body_mib",
            "subrequests",
            "name",
            "token",
            "read_only",
            "listne",
        ];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                Just(u64::MAX.to_string()),
                Just("0".to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                ".{0,40}".prop_map(|s| format!("{s:?}")),
                prop::collection::vec(".{0,20}", 0..4).prop_map(|v| format!("{v:?}")),
                Just("\"10.0.0.0/8\"".to_string()),
                Just("\"off\"".to_string()),
                Just("\"127.0.0.1:0\"".to_string()),
                Just("\"postgres://u@h/d\"".to_string()),
                ".{0,10}",
            ]
        }

        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
                1 => Just("[ceilings]".to_string()),
                1 => Just("[[admin_tokens]]".to_string()),
                1 => ".{0,30}",
            ]
        }

        proptest! {
            /// Whatever a config file holds, the node gets a config or an
            /// error that says what to fix: never a panic.
            #[test]
            fn any_config_text_is_a_config_or_an_error(lines in prop::collection::vec(line(), 0..16)) {
                let text = lines.join("\n");
                match ConfigLayer::parse(&text, Path::new("node.toml")) {
                    Ok(layer) => {
                        let layer = ConfigLayer {
                            admin_tokens: vec![token("ops")],
                            ..layer
                        }
                        .over(ConfigLayer::default());
                        if let Err(e) = NodeConfig::from_layer(layer) {
                            prop_assert!(!e.message.is_empty() && !e.help.is_empty());
                        }
                    }
                    Err(e) => prop_assert!(e.message.starts_with("node.toml:"), "{e}"),
                }
            }
        }
    }

    fn token(name: &str) -> AdminToken {
        AdminToken {
            name: name.into(),
            token: "0123456789abcdef0123".into(),
            read_only: false,
        }
    }

    fn layer() -> ConfigLayer {
        ConfigLayer {
            admin_tokens: vec![token("ops")],
            ..ConfigLayer::default()
        }
    }

    #[test]
    fn defaults_fill_an_almost_empty_layer() {
        let config = NodeConfig::from_layer(layer()).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.admin_listen, Some("127.0.0.1:8788".parse().unwrap()));
        assert!(!config.dev);
        assert_eq!(config.domain, "localhost");
        assert_eq!(config.ceilings.cpu, Duration::from_millis(50));
        assert_eq!(config.store, StoreConfig::Sqlite);
        let postgres = ConfigLayer {
            store: Some("postgres://root@db/verge".into()),
            ..layer()
        };
        assert_eq!(
            NodeConfig::from_layer(postgres).unwrap().store,
            StoreConfig::Postgres {
                url: "postgres://root@db/verge".into(),
                schema: "verge".into()
            }
        );
    }

    #[test]
    fn outbound_networks_are_cidrs_or_addresses() {
        let config = NodeConfig::from_layer(ConfigLayer {
            outbound_allow_networks: Some(vec!["10.0.0.0/8".into(), "192.168.1.7".into()]),
            ..layer()
        })
        .unwrap();
        let networks: Vec<String> = config
            .outbound_allow_networks
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(networks, ["10.0.0.0/8", "192.168.1.7/32"]);
        let bad = NodeConfig::from_layer(ConfigLayer {
            outbound_allow_networks: Some(vec!["10.0.0.0/33".into()]),
            ..layer()
        })
        .unwrap_err();
        assert!(
            bad.message.contains("\"10.0.0.0/33\", not a network"),
            "{bad}"
        );
        assert!(
            NodeConfig::from_layer(layer())
                .unwrap()
                .outbound_allow_networks
                .is_empty()
        );
    }

    #[test]
    fn a_node_without_an_admin_api_needs_no_token() {
        let config = NodeConfig::from_layer(ConfigLayer {
            admin_listen: Some("off".into()),
            ..ConfigLayer::default()
        })
        .unwrap();
        assert_eq!(config.admin_listen, None);
        assert!(config.admin_tokens.is_empty());
        // `dev` comes from the process, never from a file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "dev = true\n").unwrap();
        let e = ConfigLayer::from_file(&path).unwrap_err();
        assert!(e.message.contains("unknown key `dev`"), "{e}");
    }

    #[test]
    fn upper_layers_win_and_the_file_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ndomain = \"w.example.com\"\n\
             cluster_secret = \"from-the-file-0123456789\"\n\
             [[admin_tokens]]\nname = \"ci\"\ntoken = \"0123456789abcdef\"\nread_only = true\n\
             [ceilings]\ncpu_ms = 200\n",
        )
        .unwrap();
        let file = ConfigLayer::from_file(&path).unwrap();
        let flags = ConfigLayer {
            listen: Some("127.0.0.1:9001".into()),
            ..ConfigLayer::default()
        };
        let config = NodeConfig::from_layer(flags.over(file)).unwrap();
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.domain, "w.example.com");
        assert_eq!(
            config.cluster_secret.as_deref(),
            Some("from-the-file-0123456789")
        );
        assert_eq!(config.ceilings.cpu, Duration::from_millis(200));
        assert_eq!(config.admin_tokens[0].name, "ci");
        assert!(config.admin_tokens[0].read_only);

        let with_env = ConfigLayer {
            admin_tokens: vec![token("env")],
            ..ConfigLayer::default()
        };
        let config =
            NodeConfig::from_layer(with_env.over(ConfigLayer::from_file(&path).unwrap())).unwrap();
        let names: Vec<&str> = config
            .admin_tokens
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["env", "ci"]);
    }

    #[test]
    fn unknown_keys_in_the_file_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n").unwrap();
        let e = ConfigLayer::from_file(&path).unwrap_err();
        assert!(e.message.contains("node.toml:2"), "{e}");
        assert!(e.message.contains("listen_addr"), "{e}");
        assert!(e.help.contains("known keys here: listen,"), "{}", e.help);
        // A near miss gets the key it was meant to be.
        std::fs::write(&path, "max_instance = 10\n").unwrap();
        let e = ConfigLayer::from_file(&path).unwrap_err();
        assert_eq!(
            e.message,
            format!("{}:1: unknown key `max_instance`", path.display())
        );
        assert!(
            e.help.starts_with("did you mean `max_instances`?"),
            "{}",
            e.help
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let cases: Vec<(ConfigLayer, &str)> = vec![
            (ConfigLayer::default(), "VERGE_ADMIN_TOKEN"),
            (
                ConfigLayer {
                    admin_tokens: vec![AdminToken {
                        token: "short".into(),
                        ..token("ops")
                    }],
                    ..ConfigLayer::default()
                },
                "at least 16",
            ),
            (
                ConfigLayer {
                    admin_tokens: vec![token("a"), token("a")],
                    ..ConfigLayer::default()
                },
                "two admin tokens",
            ),
            (
                ConfigLayer {
                    listen: Some("8080".into()),
                    ..layer()
                },
                "VERGE_LISTEN",
            ),
            (
                ConfigLayer {
                    store: Some("mysql://db/verge".into()),
                    ..layer()
                },
                "postgres://user@host/db",
            ),
            (
                ConfigLayer {
                    store: Some("postgres://db/verge".into()),
                    store_schema: Some("Bad-Schema".into()),
                    ..layer()
                },
                "--store-schema",
            ),
            (
                ConfigLayer {
                    domain: Some("bad domain".into()),
                    ..layer()
                },
                "domain",
            ),
            (
                ConfigLayer {
                    ceilings: CeilingsLayer {
                        cpu_ms: Some(0),
                        ..CeilingsLayer::default()
                    },
                    ..layer()
                },
                "--max-cpu-ms",
            ),
            (
                ConfigLayer {
                    listen: Some("127.0.0.1:9000".into()),
                    admin_listen: Some("127.0.0.1:9000".into()),
                    ..layer()
                },
                "address of its own",
            ),
            (
                ConfigLayer {
                    kv_cache_mib: Some(u64::MAX),
                    ..layer()
                },
                "VERGE_KV_CACHE_MIB",
            ),
            (
                ConfigLayer {
                    cluster_secret: Some("too-short".into()),
                    ..layer()
                },
                "`cluster_secret` (--cluster-secret-file, VERGE_CLUSTER_SECRET) is 9 characters",
            ),
            (
                ConfigLayer {
                    cluster_secret: Some("a secret with spaces in it".into()),
                    ..layer()
                },
                "with spaces or non-ASCII characters",
            ),
        ];
        for (layer, expected) in cases {
            let e = NodeConfig::from_layer(layer).unwrap_err().to_string();
            assert!(e.contains(expected), "expected {expected:?} in: {e}");
        }
    }
}
