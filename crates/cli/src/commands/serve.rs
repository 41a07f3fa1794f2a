//! `verge serve`: run a node that hosts many workers, deployed to it through
//! its admin API (`verge deploy`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use verge_node::config::CeilingsLayer;
use verge_node::{AdminToken, ConfigLayer, Node, NodeConfig};

use crate::signal;
use crate::term::Style;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// A TOML node config; flags and environment variables override it.
    #[arg(long, env = "VERGE_CONFIG")]
    config: Option<PathBuf>,

    /// Data-plane address, where workers answer [default: 0.0.0.0:8080].
    #[arg(long, env = "VERGE_LISTEN")]
    listen: Option<String>,

    /// Admin API address [default: 127.0.0.1:8788].
    #[arg(long, env = "VERGE_ADMIN_LISTEN")]
    admin_listen: Option<String>,

    /// Where the node keeps its stores and compiled components [default: verge-data].
    #[arg(long, env = "VERGE_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// The store: `sqlite` (files in the data dir, one node) or a
    /// `postgres://user@host/db` URL that nodes share [default: sqlite].
    #[arg(long, env = "VERGE_STORE")]
    store: Option<String>,

    /// The PostgreSQL schema Verge's tables live in [default: verge].
    #[arg(long, env = "VERGE_STORE_SCHEMA")]
    store_schema: Option<String>,

    /// Memory (MiB) for the KV read cache of a PostgreSQL store; 0 turns
    /// it off [default: 64].
    #[arg(long, env = "VERGE_KV_CACHE_MIB")]
    kv_cache_mib: Option<u64>,

    /// A private or other special-purpose network (CIDR) workers' outbound
    /// requests may reach; repeat for more. Public addresses need none.
    #[arg(
        long = "outbound-allow-network",
        value_name = "CIDR",
        env = "VERGE_OUTBOUND_ALLOW_NETWORKS",
        value_delimiter = ','
    )]
    outbound_allow_networks: Vec<String>,

    /// Do not LISTEN for PostgreSQL change notifications; read the change
    /// log every second instead (behind PgBouncer in transaction mode).
    #[arg(long)]
    no_store_listen: bool,

    /// Workers answer at NAME.<domain> [default: localhost].
    #[arg(long, env = "VERGE_DOMAIN")]
    domain: Option<String>,

    /// A file holding the admin token. The token can also come from the
    /// VERGE_ADMIN_TOKEN variable, never from a flag (it would show in ps).
    #[arg(long, env = "VERGE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,

    /// A file holding the cluster secret, the same on every node sharing a
    /// store: with it, nodes run code another node compiled instead of
    /// compiling it. It can also come from the VERGE_CLUSTER_SECRET
    /// variable, never from a flag.
    #[arg(long, env = "VERGE_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,

    /// Requests served at once, all workers together [default: 1000].
    #[arg(long, env = "VERGE_MAX_INSTANCES")]
    max_instances: Option<u32>,

    /// Requests one worker may run at once, all its versions together
    /// [default: half of --max-instances].
    #[arg(long, env = "VERGE_MAX_INSTANCES_PER_WORKER")]
    max_instances_per_worker: Option<u32>,

    /// Memory all requests together may hold, guest memory and host buffers,
    /// in MiB [default: three quarters of the machine's memory].
    #[arg(long, env = "VERGE_MEMORY_BUDGET_MIB")]
    memory_budget_mib: Option<u64>,

    /// How long a request waits for a free instance before a 503 [default: 1000].
    #[arg(long, env = "VERGE_QUEUE_TIMEOUT_MS")]
    queue_timeout_ms: Option<u64>,

    /// How long a client may take to send a request's headers [default: 10000].
    #[arg(long, env = "VERGE_HEADER_READ_TIMEOUT_MS")]
    header_read_timeout_ms: Option<u64>,

    /// How long a client may send nothing of a request body before a 408
    /// [default: 10000].
    #[arg(long, env = "VERGE_BODY_READ_TIMEOUT_MS")]
    body_read_timeout_ms: Option<u64>,

    /// How long requests in flight may take to finish on shutdown [default: 30].
    #[arg(long, env = "VERGE_DRAIN_TIMEOUT_S")]
    drain_timeout_s: Option<u64>,

    /// Allocate instances on demand instead of from a pre-reserved pool.
    #[arg(long)]
    no_pooling: bool,

    /// Put guest failure details in error responses (for staging nodes).
    #[arg(long)]
    error_detail: bool,

    #[command(flatten)]
    ceilings: CeilingArgs,
}

/// The highest limits a manifest may ask for: the node's `[ceilings]`, as
/// `verge serve` and `verge dev` take them.
#[derive(Args, Debug)]
pub(crate) struct CeilingArgs {
    /// Highest CPU limit (ms) a manifest may ask for [default: 50].
    #[arg(long, env = "VERGE_MAX_CPU_MS")]
    max_cpu_ms: Option<u64>,

    /// Highest wall limit (ms) a manifest may ask for [default: 30000].
    #[arg(long, env = "VERGE_MAX_WALL_MS")]
    max_wall_ms: Option<u64>,

    /// Highest memory limit (MiB) a manifest may ask for [default: 128].
    #[arg(long, env = "VERGE_MAX_MEMORY_MIB")]
    max_memory_mib: Option<u64>,

    /// Highest body limit (MiB) a manifest may ask for [default: 100].
    #[arg(long, env = "VERGE_MAX_BODY_MIB")]
    max_body_mib: Option<u64>,

    /// Highest number of outbound requests per request [default: 1000].
    #[arg(long, env = "VERGE_MAX_SUBREQUESTS")]
    max_subrequests: Option<u32>,
}

impl CeilingArgs {
    /// The flags as the `[ceilings]` of a config layer.
    pub(crate) fn layer(&self) -> CeilingsLayer {
        CeilingsLayer {
            cpu_ms: self.max_cpu_ms,
            wall_ms: self.max_wall_ms,
            memory_mib: self.max_memory_mib,
            body_mib: self.max_body_mib,
            subrequests: self.max_subrequests,
        }
    }
}

impl ServeArgs {
    /// Flags and environment variables as the top config layer.
    fn layer(&self) -> anyhow::Result<ConfigLayer> {
        let mut admin_tokens = Vec::new();
        if let Ok(token) = std::env::var("VERGE_ADMIN_TOKEN") {
            admin_tokens.push(AdminToken {
                name: "admin".into(),
                token: token.trim().to_string(),
                read_only: false,
            });
        }
        if let Some(path) = &self.admin_token_file {
            admin_tokens.push(AdminToken {
                name: "admin-file".into(),
                token: read_secret_file(path, "admin token", "--admin-token-file")?,
                read_only: false,
            });
        }
        let cluster_secret = match &self.cluster_secret_file {
            Some(path) => Some(read_secret_file(
                path,
                "cluster secret",
                "--cluster-secret-file",
            )?),
            None => std::env::var("VERGE_CLUSTER_SECRET")
                .ok()
                .map(|s| s.trim().to_string()),
        };
        Ok(ConfigLayer {
            listen: self.listen.clone(),
            admin_listen: self.admin_listen.clone(),
            data_dir: self.data_dir.clone(),
            store: self.store.clone(),
            store_schema: self.store_schema.clone(),
            domain: self.domain.clone(),
            admin_tokens,
            cluster_secret,
            max_instances: self.max_instances,
            max_instances_per_worker: self.max_instances_per_worker,
            memory_budget_mib: self.memory_budget_mib,
            queue_timeout_ms: self.queue_timeout_ms,
            header_read_timeout_ms: self.header_read_timeout_ms,
            body_read_timeout_ms: self.body_read_timeout_ms,
            drain_timeout_s: self.drain_timeout_s,
            pooling: self.no_pooling.then_some(false),
            error_detail: self.error_detail.then_some(true),
            kv_cache_mib: self.kv_cache_mib,
            store_listen: self.no_store_listen.then_some(false),
            outbound_allow_networks: (!self.outbound_allow_networks.is_empty())
                .then(|| self.outbound_allow_networks.clone()),
            ceilings: self.ceilings.layer(),
            dev: false,
        })
    }
}

/// The secret in the file `flag` names, without the line end an editor
/// leaves.
fn read_secret_file(path: &std::path::Path, what: &str, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {} ({flag})", path.display()))?;
    Ok(text.trim().to_string())
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ConfigLayer::from_file(path)?,
        None => ConfigLayer::default(),
    };
    let config = NodeConfig::from_layer(args.layer()?.over(file))?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let stores = verge_node::open_stores(&config).await?;
        let bound = verge_node::bind(&config).await?;
        let sink = Arc::new(verge_runtime::TracingSink);
        let node = Node::start(config, stores, sink).await?;
        let out = Style::stdout();
        let data = bound.data_addr();
        println!(
            "{} {} worker(s) at {} (NAME.{}:{})",
            out.bold("Serving"),
            node.registry.len(),
            out.bold(&format!("http://{data}")),
            node.config.domain,
            data.port()
        );
        match bound.admin_addr() {
            Some(admin) => println!(
                "{} at {}",
                out.bold("Admin API"),
                out.bold(&format!("http://{admin}"))
            ),
            None => println!("{} off (`admin_listen = \"off\"`)", out.bold("Admin API")),
        }
        let drained = verge_node::serve(node, bound, signal::shutdown()).await;
        signal::report_stopped(drained);
        anyhow::Ok(())
    })
}
