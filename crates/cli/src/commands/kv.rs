//! `verge kv`: namespaces and keys of the local KV store of a project (the
//! one `verge dev` serves from, in `.verge/kv.db`).

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde::Deserialize;
use verge_kv::{
    BulkWrite, Clock, Expiration, KvStore, ListOptions, Namespace, PutOptions, SystemClock,
};
use verge_kv_sqlite::SqliteStore;

#[derive(Args, Debug)]
pub struct KvArgs {
    /// The project whose local store to use.
    #[arg(long, global = true, default_value = ".")]
    dir: PathBuf,

    /// The data directory holding kv.db [default: DIR/.verge].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,

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
    Create {
        name: String,
    },
    List,
    /// Delete a namespace and every key in it.
    Delete {
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
        key: String,
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
        #[arg(long, default_value = "")]
        prefix: String,
        /// Keys per page, 1 to 1000.
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    Delete {
        key: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
}

#[derive(Subcommand, Debug)]
enum BulkCommand {
    /// Put up to 10,000 pairs: `[{"key", "value", "expiration"?, "expiration_ttl"?, "metadata"?, "base64"?}]`.
    Put {
        file: PathBuf,
        #[command(flatten)]
        ns: NamespaceArg,
    },
    /// Delete up to 10,000 keys: `["key", ...]`.
    Delete {
        file: PathBuf,
        #[command(flatten)]
        ns: NamespaceArg,
    },
}

/// One pair of a bulk put, in the format Workers KV's bulk API takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkPair {
    key: String,
    value: String,
    expiration: Option<u64>,
    expiration_ttl: Option<u64>,
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    base64: bool,
}

pub fn run(args: KvArgs) -> anyhow::Result<()> {
    let path = args
        .data_dir
        .clone()
        .unwrap_or_else(|| args.dir.join(".verge"))
        .join("kv.db");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let creating = matches!(
            args.command,
            KvCommand::Namespace(NamespaceCommand::Create { .. })
        );
        if !creating && !path.exists() {
            bail!(
                "there is no local KV store at {}; `verge dev` creates it with the namespaces \
                 verge.toml binds, or run `verge kv namespace create NAME`",
                path.display()
            );
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store: Arc<dyn KvStore> = Arc::new(
            SqliteStore::open(&path, clock.clone())
                .with_context(|| format!("cannot open the KV store {}", path.display()))?,
        );
        let namespace = |name: &str| Namespace::new(store.clone(), name, clock.clone());
        match args.command {
            KvCommand::Namespace(command) => namespaces(&*store, command).await,
            KvCommand::Key(command) => keys(command, namespace).await,
            KvCommand::Bulk(command) => bulk(command, namespace).await,
        }
    })
}

async fn namespaces(store: &dyn KvStore, command: NamespaceCommand) -> anyhow::Result<()> {
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

async fn keys(command: KeyCommand, namespace: impl Fn(&str) -> Namespace) -> anyhow::Result<()> {
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
            let expiration = expiration_of(ttl, expiration);
            let options = PutOptions {
                expiration,
                metadata,
                ..Default::default()
            };
            let generation = namespace(&ns.namespace)
                .put(key.as_bytes(), value, options)
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
            let entry = namespace(&ns.namespace)
                .get(key.as_bytes())
                .await
                .with_context(|| {
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
            let page = namespace(&ns.namespace)
                .list(&options)
                .await
                .with_context(|| format!("cannot list namespace `{}`", ns.namespace))?;
            let keys: Vec<_> = page
                .keys
                .iter()
                .map(|k| {
                    let metadata = k
                        .metadata
                        .as_deref()
                        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok());
                    serde_json::json!({
                        "name": String::from_utf8_lossy(&k.name),
                        "expiration": k.expiration,
                        "metadata": metadata,
                    })
                })
                .collect();
            let out = serde_json::json!({ "keys": keys, "cursor": page.cursor, "list_complete": page.list_complete });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        KeyCommand::Delete { key, ns } => {
            let existed = namespace(&ns.namespace)
                .delete(key.as_bytes())
                .await
                .with_context(|| {
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

async fn bulk(command: BulkCommand, namespace: impl Fn(&str) -> Namespace) -> anyhow::Result<()> {
    let (file, ns, writes) = match command {
        BulkCommand::Put { file, ns } => {
            let pairs: Vec<BulkPair> = read_json(&file)?;
            let mut writes = Vec::with_capacity(pairs.len());
            for (i, pair) in pairs.into_iter().enumerate() {
                let value = if pair.base64 {
                    base64::engine::general_purpose::STANDARD
                        .decode(&pair.value)
                        .with_context(|| {
                            format!(
                                "{}: entry {i} (`{}`): value is not base64",
                                file.display(),
                                pair.key
                            )
                        })?
                } else {
                    pair.value.into_bytes()
                };
                let expiration = expiration_of(pair.expiration_ttl, pair.expiration);
                let metadata = pair.metadata.map(|m| m.to_string());
                let options = PutOptions {
                    expiration,
                    metadata,
                    ..Default::default()
                };
                writes.push(BulkWrite::Put {
                    key: pair.key.into_bytes(),
                    value: Bytes::from(value),
                    options,
                });
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
    let outcomes = namespace(&ns.namespace)
        .bulk(writes)
        .await
        .with_context(|| {
            format!(
                "{}: nothing was written to namespace `{}`",
                file.display(),
                ns.namespace
            )
        })?;
    if let Some(e) = outcomes.iter().find_map(|o| o.as_ref().err()) {
        bail!("{}: a write failed: {e}", file.display());
    }
    eprintln!("Applied {count} writes to namespace `{}`", ns.namespace);
    Ok(())
}

/// A TTL wins over an absolute expiration, as in Workers KV.
fn expiration_of(ttl: Option<u64>, at: Option<u64>) -> Expiration {
    match (ttl, at) {
        (Some(ttl), _) => Expiration::Ttl(ttl),
        (None, Some(at)) => Expiration::At(at),
        (None, None) => Expiration::Never,
    }
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
