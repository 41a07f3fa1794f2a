//! Where `verge kv` acts: the local store of a project (the one `verge dev`
//! serves from) or a node, through its admin API (`--remote`). Both give the
//! same semantics and limits: the node runs the same KV code.

use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use verge_api::{
    BulkPair, BulkWritten, EXPIRATION_HEADER, ErrorCode, GENERATION_HEADER, KeyPage,
    METADATA_HEADER, NamespaceCreated, NamespaceList, NewNamespace, ValueDeleted, ValueWritten,
};
use verge_kv::{BulkWrite, Clock, Entry, Expiration, KvStore, ListOptions, Namespace, PutOptions};

use crate::remote::{Remote, refusal_code};

pub(crate) enum Target {
    Local {
        store: Arc<dyn KvStore>,
        clock: Arc<dyn Clock>,
    },
    Remote(Remote),
}

/// Percent-encodes a path segment.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn value_path(ns: &str, key: &str) -> String {
    format!("/v1/kv/namespaces/{}/values/{}", segment(ns), segment(key))
}

impl Target {
    /// Creates a namespace; `false` if it existed.
    pub(crate) async fn create_namespace(&self, name: &str) -> anyhow::Result<bool> {
        match self {
            Target::Local { store, .. } => Ok(store.create_namespace(name).await?),
            Target::Remote(remote) => {
                let body = NewNamespace {
                    name: name.to_string(),
                };
                let answer: NamespaceCreated =
                    remote.send_json("POST", "/v1/kv/namespaces", &body)?;
                Ok(answer.created)
            }
        }
    }

    pub(crate) async fn namespaces(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Target::Local { store, .. } => Ok(store.namespaces().await?),
            Target::Remote(remote) => {
                let answer: NamespaceList = remote.get("/v1/kv/namespaces")?;
                Ok(answer.namespaces)
            }
        }
    }

    /// Deletes a namespace; `false` if it did not exist.
    pub(crate) async fn delete_namespace(&self, name: &str) -> anyhow::Result<bool> {
        match self {
            Target::Local { store, .. } => Ok(store.delete_namespace(name).await?),
            Target::Remote(remote) => {
                match remote.delete::<()>(&format!("/v1/kv/namespaces/{}", segment(name))) {
                    Ok(()) => Ok(true),
                    Err(e) if refusal_code(&e) == Some(ErrorCode::NamespaceNotFound) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Stores a value; returns its generation.
    pub(crate) async fn put(
        &self,
        ns: &str,
        key: &str,
        value: Bytes,
        expiration: Expiration,
        metadata: Option<String>,
    ) -> anyhow::Result<u64> {
        let remote = match self {
            Target::Local { store, clock } => {
                let namespace = Namespace::new(store.clone(), ns, clock.clone());
                let options = PutOptions {
                    expiration,
                    metadata,
                    ..PutOptions::default()
                };
                return Ok(namespace.put(key.as_bytes(), value, options).await?);
            }
            Target::Remote(remote) => remote,
        };
        let mut path = value_path(ns, key);
        match expiration {
            Expiration::Never => {}
            Expiration::At(at) => path.push_str(&format!("?expiration={at}")),
            Expiration::Ttl(ttl) => path.push_str(&format!("?expiration_ttl={ttl}")),
        }
        let headers: Vec<(&str, String)> = metadata
            .map(|m| vec![(METADATA_HEADER, m)])
            .unwrap_or_default();
        let answer: ValueWritten = remote.put_bytes(&path, &headers, &value)?;
        Ok(answer.generation)
    }

    /// The live entry of `key`, if any.
    pub(crate) async fn get(&self, ns: &str, key: &str) -> anyhow::Result<Option<Entry>> {
        let remote = match self {
            Target::Local { store, clock } => {
                let namespace = Namespace::new(store.clone(), ns, clock.clone());
                return Ok(namespace.get(key.as_bytes()).await?);
            }
            Target::Remote(remote) => remote,
        };
        let Some((headers, value)) = remote.get_bytes(&value_path(ns, key))? else {
            return Ok(None);
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Ok(Some(Entry {
            value: Bytes::from(value),
            metadata: header(METADATA_HEADER),
            expiration: header(EXPIRATION_HEADER).and_then(|e| e.parse().ok()),
            generation: header(GENERATION_HEADER)
                .and_then(|g| g.parse().ok())
                .context("the node sent no generation")?,
        }))
    }

    /// A page of keys, as the admin API answers it.
    pub(crate) async fn list(&self, ns: &str, options: ListOptions) -> anyhow::Result<KeyPage> {
        let remote = match self {
            Target::Local { store, clock } => {
                let namespace = Namespace::new(store.clone(), ns, clock.clone());
                return Ok(verge_node::key_page(namespace.list(&options).await?));
            }
            Target::Remote(remote) => remote,
        };
        let mut query = vec![format!(
            "prefix={}",
            segment(&String::from_utf8_lossy(&options.prefix))
        )];
        if let Some(limit) = options.limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(cursor) = &options.cursor {
            query.push(format!("cursor={}", segment(cursor)));
        }
        remote.get(&format!(
            "/v1/kv/namespaces/{}/keys?{}",
            segment(ns),
            query.join("&")
        ))
    }

    /// Deletes a key; whether a live entry was there.
    pub(crate) async fn delete(&self, ns: &str, key: &str) -> anyhow::Result<bool> {
        let remote = match self {
            Target::Local { store, clock } => {
                let namespace = Namespace::new(store.clone(), ns, clock.clone());
                return Ok(namespace.delete(key.as_bytes()).await?);
            }
            Target::Remote(remote) => remote,
        };
        let answer: ValueDeleted = remote.delete(&value_path(ns, key))?;
        Ok(answer.deleted)
    }

    /// Applies bulk writes, all or nothing.
    pub(crate) async fn bulk(&self, ns: &str, writes: Vec<BulkWrite>) -> anyhow::Result<()> {
        let remote = match self {
            Target::Local { store, clock } => {
                let namespace = Namespace::new(store.clone(), ns, clock.clone());
                let outcomes = namespace.bulk(writes).await?;
                if let Some(e) = outcomes.iter().find_map(|o| o.as_ref().err()) {
                    bail!("a write failed: {e}");
                }
                return Ok(());
            }
            Target::Remote(remote) => remote,
        };
        let base = format!("/v1/kv/namespaces/{}/bulk", segment(ns));
        if writes.iter().all(|w| matches!(w, BulkWrite::Delete { .. })) {
            let keys: Vec<String> = writes
                .into_iter()
                .filter_map(|w| match w {
                    BulkWrite::Delete { key } => Some(String::from_utf8_lossy(&key).into_owned()),
                    BulkWrite::Put { .. } => None,
                })
                .collect();
            let _: BulkWritten = remote.send_json("POST", &format!("{base}/delete"), &keys)?;
            return Ok(());
        }
        let mut pairs = Vec::with_capacity(writes.len());
        for write in writes {
            let BulkWrite::Put {
                key,
                value,
                options,
            } = write
            else {
                bail!("a bulk write mixes puts and deletes");
            };
            let (expiration, expiration_ttl) = match options.expiration {
                Expiration::Never => (None, None),
                Expiration::At(at) => (Some(at), None),
                Expiration::Ttl(ttl) => (None, Some(ttl)),
            };
            pairs.push(BulkPair {
                key: String::from_utf8_lossy(&key).into_owned(),
                value: base64::engine::general_purpose::STANDARD.encode(&value),
                expiration,
                expiration_ttl,
                metadata: options
                    .metadata
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .context("metadata is not JSON")?,
                base64: true,
            });
        }
        let _: BulkWritten = remote.send_json("PUT", &base, &pairs)?;
        Ok(())
    }
}
