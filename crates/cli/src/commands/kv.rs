//! `verge kv`: namespaces and keys of the local KV store of a project (the
//! one `verge dev` serves from, in `.verge/kv.db`), or of a node with
//! `--remote`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use verge_api::BulkPair;
use verge_kv::{BulkWrite, Clock, Expiration, KvStore, ListOptions, SystemClock};
use verge_store_sqlite::SqliteStore;

use crate::commands::kv_target::Target;
use crate::remote::NodeArgs;

#[derive(Args, Debug)]
pub(crate) struct KvArgs {
    /// The project whose local store to use.
    #[arg(long, global = true, default_value = ".")]
    dir: PathBuf,

    /// The data directory holding kv.db [default: DIR/.verge].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,

    /// Act on a node's KV through its admin API instead of the local store
    /// (the node from --node / VERGE_NODE or the config file).
    #[arg(long, global = true)]
    remote: bool,

    #[command(flatten)]
    node: NodeArgs,

    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Create, list and delete namespaces.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// Put, get, list and delete keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Put or delete many keys from a JSON file.
    #[command(subcommand)]
    Bulk(BulkCommand),
}

#[derive(Subcommand, Debug)]
enum NamespaceCommand {
    /// Create a namespace (a deploy also creates the ones its manifest binds).
    Create {
        /// 1 to 64 letters, digits, `-` or `_`.
        name: String,
    },
    /// List the namespaces.
    List,
    /// Delete a namespace and every key in it.
    Delete {
        /// The namespace to delete.
        name: String,
    },
}

#[derive(Args, Debug)]
struct NamespaceArg {
    /// The namespace.
    #[arg(long, short)]
    namespace: String,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Store a value: from VALUE, from --path, or from standard input.
    Put {
        /// The key (at most 512 bytes).
        key: String,
        /// The value, as text.
        value: Option<String>,
        #[command(flatten)]
        ns: NamespaceArg,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        path: Option<PathBuf>,
        /// Expire this many seconds from now (at least 1).
        #[arg(long, conflicts_with = "expiration")]
        ttl: Option<u64>,
        /// Expire at this Unix time, in seconds.
        #[arg(long)]
        expiration: Option<u64>,
        /// JSON metadata (at most 1024 bytes).
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Print a value to standard output.
    Get {
        /// The key to read.
        key: String,
        #[command(flatten)]
        ns: NamespaceArg,
        /// Print the metadata, expiration and generation instead.
        #[arg(long)]
        info: bool,
    },
    /// List keys as JSON, in byte order.
    List {
        #[command(flatten)]
        ns: NamespaceArg,
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Keys per page, 1 to 1000.
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Delete a key (deleting a missing key is not an error).
    Delete {
        /// The key to delete.
        key: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
}

#[derive(Subcommand, Debug)]
enum BulkCommand {
    /// Put up to 10,000 pairs: `[{"key", "value", "expiration"?, "expiration_ttl"?, "metadata"?, "base64"?}]`.
    Put {
        /// The JSON file.
        file: PathBuf,
        #[command(flatten)]
        ns: NamespaceArg,
    },
    /// Delete up to 10,000 keys: `["key", ...]`.
    Delete {
        /// The JSON file.
        file: PathBuf,
        #[command(flatten)]
        ns: NamespaceArg,
    },
}

pub(crate) fn run(args: KvArgs) -> anyhow::Result<()> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let target = if args.remote {
            Target::Remote(args.node.connect()?)
        } else {
            local(&args)?
        };
        match args.command {
            KvCommand::Namespace(command) => namespaces(&target, command).await,
            KvCommand::Key(command) => keys(&target, command).await,
            KvCommand::Bulk(command) => bulk(&target, command).await,
        }
    })
}

/// The project's local store.
fn local(args: &KvArgs) -> anyhow::Result<Target> {
    let path = args
        .data_dir
        .clone()
        .unwrap_or_else(|| args.dir.join(".verge"))
        .join("kv.db");
    let creating = matches!(
        args.command,
        KvCommand::Namespace(NamespaceCommand::Create { .. })
    );
    if !creating && !path.exists() {
        bail!(
            "there is no local KV store at {}; `verge dev` creates it with the namespaces \
             verge.toml binds, or run `verge kv namespace create NAME` (add --remote for a node's)",
            path.display()
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn KvStore> = Arc::new(
        SqliteStore::open(&path, clock.clone())
            .with_context(|| format!("cannot open the KV store {}", path.display()))?,
    );
    Ok(Target::Local { store, clock })
}

async fn namespaces(store: &Target, command: NamespaceCommand) -> anyhow::Result<()> {
    match command {
        NamespaceCommand::Create { name } => {
            if store.create_namespace(&name).await? {
                eprintln!("Created namespace `{name}`");
            } else {
                eprintln!("Namespace `{name}` already exists");
            }
        }
        NamespaceCommand::List => {
            for name in store.namespaces().await? {
                println!("{name}");
            }
        }
        NamespaceCommand::Delete { name } => {
            if !store.delete_namespace(&name).await? {
                bail!(
                    "namespace `{name}` does not exist; `verge kv namespace list` shows those that do"
                );
            }
            eprintln!("Deleted namespace `{name}`");
        }
    }
    Ok(())
}

/// A key for a message: long keys are cut, so errors stay readable.
fn shown(key: &str) -> String {
    match key.char_indices().nth(40) {
        Some((at, _)) => format!("{}… ({} bytes)", &key[..at], key.len()),
        None => key.to_string(),
    }
}

async fn keys(target: &Target, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Put {
            key,
            value,
            ns,
            path,
            ttl,
            expiration,
            metadata,
        } => {
            let value =
                match (value, path) {
                    (Some(v), _) => Bytes::from(v),
                    (None, Some(path)) => Bytes::from(std::fs::read(&path).with_context(|| {
                        format!("cannot read the value from {}", path.display())
                    })?),
                    (None, None) => read_stdin()?,
                };
            let expiration = Expiration::from_ttl_or_at(ttl, expiration);
            let generation = target
                .put(&ns.namespace, &key, value, expiration, metadata)
                .await
                .with_context(|| {
                    format!(
                        "cannot put `{}` in namespace `{}`",
                        shown(&key),
                        ns.namespace
                    )
                })?;
            eprintln!("Stored `{key}` (generation {generation})");
        }
        KeyCommand::Get { key, ns, info } => {
            let entry = target.get(&ns.namespace, &key).await.with_context(|| {
                format!(
                    "cannot get `{}` from namespace `{}`",
                    shown(&key),
                    ns.namespace
                )
            })?;
            let Some(entry) = entry else {
                bail!("no key `{key}` in namespace `{}`", ns.namespace);
            };
            if info {
                let metadata = entry
                    .metadata
                    .as_deref()
                    .map(serde_json::from_str::<serde_json::Value>)
                    .transpose()?;
                let info = serde_json::json!({
                    "metadata": metadata,
                    "expiration": entry.expiration,
                    "generation": entry.generation,
                    "size": entry.value.len(),
                });
                println!("{info}");
            } else {
                std::io::stdout().write_all(&entry.value)?;
            }
        }
        KeyCommand::List {
            ns,
            prefix,
            limit,
            cursor,
        } => {
            let options = ListOptions {
                prefix: prefix.into_bytes(),
                limit,
                cursor,
            };
            let out = target
                .list(&ns.namespace, options)
                .await
                .with_context(|| format!("cannot list namespace `{}`", ns.namespace))?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        KeyCommand::Delete { key, ns } => {
            let existed = target.delete(&ns.namespace, &key).await.with_context(|| {
                format!(
                    "cannot delete `{}` from namespace `{}`",
                    shown(&key),
                    ns.namespace
                )
            })?;
            eprintln!(
                "{}",
                if existed {
                    format!("Deleted `{key}`")
                } else {
                    format!("`{key}` was not there")
                }
            );
        }
    }
    Ok(())
}

async fn bulk(target: &Target, command: BulkCommand) -> anyhow::Result<()> {
    let (file, ns, writes) = match command {
        BulkCommand::Put { file, ns } => {
            let pairs: Vec<BulkPair> = read_json(&file)?;
            let mut writes = Vec::with_capacity(pairs.len());
            for (i, pair) in pairs.into_iter().enumerate() {
                writes.push(
                    verge_node::bulk_write(pair)
                        .map_err(|e| anyhow::anyhow!("{}: entry {i}: {e}", file.display()))?,
                );
            }
            (file, ns, writes)
        }
        BulkCommand::Delete { file, ns } => {
            let keys: Vec<String> = read_json(&file)?;
            let writes = keys
                .into_iter()
                .map(|k| BulkWrite::Delete {
                    key: k.into_bytes(),
                })
                .collect();
            (file, ns, writes)
        }
    };
    let count = writes.len();
    target.bulk(&ns.namespace, writes).await.with_context(|| {
        format!(
            "{}: nothing was written to namespace `{}`",
            file.display(),
            ns.namespace
        )
    })?;
    eprintln!("Applied {count} writes to namespace `{}`", ns.namespace);
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(file: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not the expected JSON", file.display()))
}

fn read_stdin() -> anyhow::Result<Bytes> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("no value given: pass it as an argument, with --path FILE, or on standard input");
    }
    let mut value = Vec::new();
    stdin
        .read_to_end(&mut value)
        .context("cannot read the value from standard input")?;
    Ok(Bytes::from(value))
}
