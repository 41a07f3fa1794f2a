//! Talking to a node's admin API: which node and token (flags, environment,
//! or the CLI config file), and requests whose errors read well.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::Value;

/// The flags every command that talks to a node takes.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// The node's admin API, e.g. http://127.0.0.1:8788.
    #[arg(long, env = "VERGE_NODE", global = true)]
    node: Option<String>,

    /// The node's admin token. Prefer VERGE_TOKEN or the config file:
    /// a flag shows in the process list.
    #[arg(long, env = "VERGE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

/// `~/.config/verge/config.toml` (or `$VERGE_CONFIG_HOME/config.toml`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    node: Option<String>,
    token: Option<String>,
}

fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VERGE_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join("config.toml"));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("verge").join("config.toml"))
}

/// A node's admin API, ready to call.
pub struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl NodeArgs {
    /// The node and token from flags, then the environment, then the config
    /// file.
    pub fn connect(&self) -> anyhow::Result<Remote> {
        let path = config_path();
        let file = match &path {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str::<ConfigFile>(&text)
                    .map_err(|e| anyhow!("{}: {}", path.display(), e.message().trim()))
                    .context("the file takes `node = \"http://...\"` and `token = \"...\"`")?
            }
            _ => ConfigFile::default(),
        };
        let shown = path
            .as_ref()
            .map_or("~/.config/verge/config.toml".into(), |p| {
                p.display().to_string()
            });
        let Some(node) = self.node.clone().or(file.node) else {
            bail!(
                "no node to talk to\n  help: pass --node http://HOST:8788, set VERGE_NODE, \
                 or write `node = \"http://HOST:8788\"` in {shown}"
            );
        };
        let Some(token) = self.token.clone().or(file.token) else {
            bail!(
                "no admin token for {node}\n  help: set VERGE_TOKEN, write `token = \"...\"` in \
                 {shown}, or pass --token"
            );
        };
        let base = node.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("the node address {node:?} is not a URL\n  help: write it as http://HOST:PORT");
        }
        Ok(Remote {
            base,
            token,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(300)))
                .build()
                .into(),
        })
    }
}

impl Remote {
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `GET path`, answered with JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .agent
            .get(&self.url(path))
            .header("authorization", &self.auth())
            .call();
        self.read(path, response)
    }

    /// `GET path` as a stream that stays open (the tail): no overall
    /// timeout, the node's errors as for any call.
    pub fn stream(&self, path: &str) -> anyhow::Result<impl std::io::Read + use<>> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        let response = agent
            .get(&self.url(path))
            .header("authorization", &self.auth())
            .header("accept", "text/event-stream")
            .call();
        let response = match response {
            Ok(r) if r.status().is_success() => r,
            other => {
                self.read(path, other)?;
                anyhow::bail!("the node did not open the stream");
            }
        };
        Ok(response.into_body().into_reader())
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .agent
            .delete(&self.url(path))
            .header("authorization", &self.auth())
            .call();
        self.read(path, response)
    }

    /// `method path` with a JSON body.
    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = http::Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("authorization", self.auth())
            .header("content-type", "application/json")
            .body(body.to_string())?;
        let response = self.agent.run(request);
        self.read(path, response)
    }

    /// `PUT path` with `body` as raw bytes and extra headers.
    pub fn put_bytes(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> anyhow::Result<Value> {
        let mut request = self
            .agent
            .put(&self.url(path))
            .header("authorization", &self.auth())
            .header("content-type", "application/octet-stream");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send(body);
        self.read(path, response)
    }

    /// `GET path` answered with raw bytes: its headers and body, or `None`
    /// on a 404.
    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Option<(http::HeaderMap, Vec<u8>)>> {
        let response = self
            .agent
            .get(&self.url(path))
            .header("authorization", &self.auth())
            .call();
        match response {
            Ok(mut r) if r.status().is_success() => {
                let headers = r.headers().clone();
                let body = r
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024 * 1024)
                    .read_to_vec()
                    .with_context(|| format!("reading the node's answer to {path}"))?;
                Ok(Some((headers, body)))
            }
            Ok(r) if r.status() == http::StatusCode::NOT_FOUND => {
                // A missing key is an answer; a missing namespace is an error.
                let error = self.read(path, Ok(r)).unwrap_err();
                if error.to_string().contains("no key") {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
            other => {
                self.read(path, other)?;
                anyhow::bail!("unexpected answer to {path}")
            }
        }
    }

    /// `PUT path` with `length` bytes read from `body`.
    pub fn put_stream(
        &self,
        path: &str,
        length: u64,
        body: &mut dyn std::io::Read,
    ) -> anyhow::Result<Value> {
        let response = self
            .agent
            .put(&self.url(path))
            .header("authorization", &self.auth())
            .header("content-type", "application/wasm")
            .header("content-length", &length.to_string())
            .send(ureq::SendBody::from_reader(body));
        self.read(path, response)
    }

    /// The JSON of a 2xx answer; otherwise the node's error, with its help.
    fn read(
        &self,
        path: &str,
        response: Result<http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut response = response.map_err(|e| {
            anyhow!(
                "cannot reach the node at {}: {e}\n  help: check --node / VERGE_NODE and that \
                 `verge serve` runs there",
                self.base
            )
        })?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the node's answer to {path}"))?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        };
        if status.is_success() {
            return Ok(value);
        }
        let error = &value["error"];
        let message = error["message"]
            .as_str()
            .map_or_else(|| format!("{status}: {text}"), str::to_string);
        match error["help"].as_str() {
            Some(help) => bail!("{message}\n  help: {help}"),
            None => bail!("{message} ({status})"),
        }
    }
}
