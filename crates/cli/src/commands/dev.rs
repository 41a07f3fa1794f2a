//! `verge dev`: build the worker in a directory and serve it locally,
//! printing one line per request with its timings. The local node is the
//! one `verge serve` runs: each build is deployed to it, validated the same
//! way, and hot reload is a redeploy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use verge_manifest::{ComponentSource, Manifest};
use verge_node::{AdminToken, ConfigLayer, DeployRequest, Node, NodeConfig, StoreConfig};
use verge_runtime::guest_log::LogStream;
use verge_runtime::{CompileSource, RequestSink, RequestSummary, component_hash, ms};

use crate::build::{Built, build, human_size};
use crate::commands::serve::CeilingArgs;
use crate::commands::watch;
use crate::signal;
use crate::term::{Style, printable};

#[derive(Args, Debug)]
pub(crate) struct DevArgs {
    /// The worker's directory (where verge.toml is).
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Address to serve on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8787", env = "VERGE_DEV_LISTEN")]
    listen: SocketAddr,

    /// Serve the last build instead of building first.
    #[arg(long)]
    no_build: bool,

    /// Where local state (the compiled-component cache) lives [default: DIR/.verge].
    #[arg(long)]
    data_dir: Option<PathBuf>,

    /// The admin API of the local node (`verge tail`, metrics, `verge kv
    /// --remote`), on a free port by default; `off` for none.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_listen: String,

    /// Requests served at once; more wait up to --queue-timeout-ms, then
    /// get 503 [default: 1000, fewer where memory is short].
    #[arg(long)]
    max_instances: Option<u32>,

    /// How long a request waits for a free instance [default: 1000].
    #[arg(long)]
    queue_timeout_ms: Option<u64>,

    /// How long in-flight requests may take to finish on shutdown [default: 30].
    #[arg(long)]
    drain_timeout_s: Option<u64>,

    /// Allocate instances on demand instead of from a pre-reserved pool.
    #[arg(long)]
    no_pooling: bool,

    /// Keep error details (panic messages, handler error causes) out of
    /// responses, as a production node does; they still go to the log.
    #[arg(long)]
    no_error_detail: bool,

    /// A private or other special-purpose network (CIDR) the worker's
    /// outbound requests may reach, as on a node; loopback needs none under
    /// `verge dev`. Repeat for more.
    #[arg(
        long = "outbound-allow-network",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    outbound_allow_networks: Vec<String>,

    /// Do not rebuild and reload the worker when its sources change.
    #[arg(long)]
    no_watch: bool,

    #[command(flatten)]
    ceilings: CeilingArgs,

    /// Keep the worker and its KV in PostgreSQL (`postgres://user@host/db`)
    /// instead of SQLite files under `.verge/` [default: sqlite].
    #[arg(long)]
    store: Option<String>,

    /// The PostgreSQL schema `--store` uses; give the dev worker one of its
    /// own, apart from the nodes' (`verge`).
    #[arg(long, default_value = "verge_dev")]
    store_schema: String,
}

pub(crate) fn run(args: DevArgs) -> anyhow::Result<()> {
    let manifest = Manifest::load(&args.dir)?;
    let built = build(&manifest, args.no_build)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| manifest.dir.join(".verge"));
    // The node `verge serve` runs, validated the same way, with one worker
    // that answers at any host, deployed from the build on every save.
    let admin_tokens = if args.admin_listen == "off" {
        Vec::new()
    } else {
        vec![AdminToken {
            name: "verge dev".into(),
            token: local_admin_token(&data_dir)?,
            read_only: false,
        }]
    };
    let layer = ConfigLayer {
        listen: Some(args.listen.to_string()),
        admin_listen: Some(args.admin_listen.clone()),
        data_dir: Some(data_dir.clone()),
        store: args.store.clone(),
        store_schema: Some(args.store_schema.clone()),
        admin_tokens,
        max_instances: args.max_instances,
        queue_timeout_ms: args.queue_timeout_ms,
        drain_timeout_s: args.drain_timeout_s,
        pooling: args.no_pooling.then_some(false),
        error_detail: Some(!args.no_error_detail),
        outbound_allow_networks: Some(args.outbound_allow_networks.clone()),
        ceilings: args.ceilings.layer(),
        dev: true,
        ..ConfigLayer::default()
    };
    let mut config = NodeConfig::from_layer(layer)?;
    // One worker: its share is the whole node (a manifest's `concurrency`
    // still applies).
    config.max_instances_per_worker = config.max_instances;
    let shared = matches!(config.store, StoreConfig::Postgres { .. });

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let stores = verge_node::open_stores(&config).await?;
        // Workers of earlier sessions under other names would only hold
        // routes and memory; in a database others may use, they are left
        // alone.
        if !shared {
            for old in stores.deploys.deployments().await? {
                if old.worker != manifest.name {
                    stores.deploys.delete_worker(&old.worker).await?;
                }
            }
        }
        let bound = verge_node::bind(&config).await?;
        let log = Arc::new(DevLog {
            style: Style::stdout(),
        });
        let node = Node::start(config, stores, log).await?;
        let size = built.bytes.len() as u64;
        let deployed = deploy_local(&node, &manifest, built).await?;
        let style = Style::stderr();
        match deployed.compile {
            // A dev node shares no code: `Shared` is a cluster's.
            CompileSource::Cache | CompileSource::Shared => eprintln!(
                "{} {} ({}) from the compile cache",
                style.green("Loaded"),
                manifest.name,
                human_size(size)
            ),
            CompileSource::Compiled(took) => eprintln!(
                "{} {} ({}) in {}",
                style.green("Compiled"),
                manifest.name,
                human_size(size),
                ms(took)
            ),
        }

        let address = bound.data_addr();
        let out = Style::stdout();
        println!(
            "{} {} at {}",
            out.bold("Serving"),
            manifest.name,
            out.bold(&format!("http://{address}"))
        );
        if let Some(admin) = bound.admin_addr() {
            eprintln!(
                "Admin API at http://{admin}; e.g. VERGE_NODE=http://{admin} \
                 VERGE_TOKEN=$(cat {}) verge tail",
                data_dir.join(ADMIN_TOKEN_FILE).display()
            );
        }
        for cron in &manifest.crons {
            eprintln!(
                "Cron trigger `{cron}` (UTC); fire it now with: curl -X POST \
                 'http://{address}/.well-known/verge/scheduled?cron={}'",
                cron.as_str().replace(' ', "+")
            );
        }
        let watch_root = manifest
            .dir
            .canonicalize()
            .unwrap_or_else(|_| manifest.dir.clone());
        let watching = matches!(manifest.source, ComponentSource::Build { .. }) && !args.no_watch;
        let _watcher = if watching {
            let reloader = Reloader {
                node: node.clone(),
                dir: watch_root.clone(),
                handle: tokio::runtime::Handle::current(),
            };
            match watch::spawn(watch_root, move |changed| reloader.reload(changed)) {
                Ok(watcher) => Some(watcher),
                Err(e) => {
                    eprintln!(
                        "{} cannot watch {} for changes: {e}",
                        style.yellow("warning:"),
                        manifest.dir.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        let drained = verge_node::serve(node, bound, signal::shutdown()).await;
        signal::report_stopped(drained);
        anyhow::Ok(())
    })
}

/// Deploys a build to the local node as `verge deploy` would to a remote
/// one, after creating the namespaces the manifest binds and setting the
/// secrets in `.dev.vars`; earlier versions are forgotten.
async fn deploy_local(
    node: &Node,
    manifest: &Manifest,
    built: Built,
) -> anyhow::Result<verge_node::Deployed> {
    let path = built.path.display().to_string();
    deploy_built(node, manifest, built.bytes)
        .await
        .with_context(|| format!("cannot load worker `{}` from {path}", manifest.name))
}

async fn deploy_built(
    node: &Node,
    manifest: &Manifest,
    component: Vec<u8>,
) -> anyhow::Result<verge_node::Deployed> {
    let stores = node.stores();
    for kv in &manifest.kv_namespaces {
        if stores.kv.create_namespace(&kv.namespace).await? {
            eprintln!("Created KV namespace `{}`", kv.namespace);
        }
    }
    let secrets = dev_vars(manifest)?;
    let known = stores.secrets.secrets(&manifest.name).await?;
    for (old, _) in &known {
        if !secrets.iter().any(|(name, _)| name == old) {
            node.delete_secret(&manifest.name, old).await?;
        }
    }
    for (name, value) in &secrets {
        if !known.iter().any(|(n, v)| n == name && v == value) {
            node.put_secret(&manifest.name, name, value).await?;
        }
    }
    let path = manifest.dir.join(verge_manifest::FILE_NAME);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let hash = component_hash(&component);
    node.put_component(&hash, component.into()).await?;
    let deployed = node
        .deploy(DeployRequest {
            worker: manifest.name.clone(),
            component: hash,
            manifest: text,
            percentage: None,
            author: "verge dev".into(),
        })
        .await?;
    node.registry.set_fallback(Some(manifest.name.clone()));
    node.prune_versions(&manifest.name).await?;
    Ok(deployed)
}

/// Rebuilds and redeploys the worker when its sources change.
struct Reloader {
    node: Arc<Node>,
    dir: PathBuf,
    handle: tokio::runtime::Handle,
}

impl Reloader {
    fn reload(&self, changed: &std::path::Path) {
        let style = Style::stderr();
        let shown = changed.strip_prefix(&self.dir).unwrap_or(changed);
        eprintln!("{} {} changed", style.bold("Reloading:"), shown.display());
        let started = std::time::Instant::now();
        match self.try_reload() {
            Ok((name, size)) => eprintln!(
                "{} {name} ({}) in {}: new requests use it",
                style.green("Reloaded"),
                human_size(size),
                ms(started.elapsed())
            ),
            Err(e) => {
                crate::term::print_error(&e);
                eprintln!(
                    "{} still serving the last good version; save again to retry",
                    style.yellow("warning:")
                );
            }
        }
    }

    fn try_reload(&self) -> anyhow::Result<(String, u64)> {
        let manifest = Manifest::load(&self.dir)?;
        let built = build(&manifest, false)?;
        let size = built.bytes.len() as u64;
        self.handle
            .block_on(deploy_local(&self.node, &manifest, built))?;
        Ok((manifest.name, size))
    }
}

/// The file of local secrets beside `verge.toml`, as `NAME=value` lines.
const DEV_VARS: &str = ".dev.vars";

/// The local secrets in `.dev.vars` beside the manifest, if there is one.
fn dev_vars(manifest: &Manifest) -> anyhow::Result<Vec<(String, String)>> {
    let path = manifest.dir.join(DEV_VARS);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let secrets = verge_manifest::parse_dev_vars(&text).map_err(|(line, why)| {
        anyhow::anyhow!(
            "{}:{line}: {why}\n  help: write one secret per line as NAME=value; \
             lines starting with # are comments",
            path.display()
        )
    })?;
    // The same bounds as a node's secrets, so what runs here deploys.
    let sizes = secrets.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    if let Some((message, help)) = verge_manifest::check_vars_size("secret", sizes) {
        anyhow::bail!("{}: {message}\n  help: {help}", path.display());
    }
    Ok(secrets)
}

/// The file in the data dir that holds the local node's admin token.
const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The admin token of the local node: the one an earlier `verge dev` left
/// in the data dir (so a `verge tail` keeps working across restarts), or a
/// new random one, written readable by its owner alone.
fn local_admin_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;

    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().len() >= verge_node::config::MIN_TOKEN_LEN => {
            return Ok(token.trim().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the local admin token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    verge_store_sqlite::create_private_dir(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| file.write_all(token.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// The request log of `verge dev`: one line per request on stdout, then the
/// guest's own output, indented.
struct DevLog {
    style: Style,
}

impl RequestSink for DevLog {
    fn record(&self, s: &RequestSummary) {
        let st = self.style;
        let status = s.status.to_string();
        let status = match s.status {
            200..=399 => st.green(&status),
            400..=499 => st.yellow(&status),
            _ => st.red(&status),
        };
        let mut line = format!(
            "{} {} {status} cpu={} wall={} id={}",
            s.method,
            printable(&s.path),
            ms(s.cpu),
            ms(s.wall),
            s.id
        );
        if s.kv_ops > 0 {
            line.push_str(&format!(" kv={} ops/{}", s.kv_ops, ms(s.kv_time)));
        }
        if let Some(t) = &s.termination {
            line.push(' ');
            line.push_str(&st.red(&printable(&format!("{t} worker={}", s.worker))));
        }
        let mut text = line;
        for log in &s.logs {
            let stream = match log.stream {
                LogStream::Stdout => "out",
                LogStream::Stderr => "err",
            };
            text.push_str(&format!("\n  {} {}", st.dim(stream), printable(&log.text)));
        }
        if s.logs_dropped > 0 {
            text.push_str(&format!(
                "\n  {}",
                st.dim(&format!("({} bytes of output dropped)", s.logs_dropped))
            ));
        }
        println!("{text}");
    }
}
