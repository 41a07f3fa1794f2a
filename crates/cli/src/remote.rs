//! Talking to a node's admin API: which node and token (flags, environment,
//! or the CLI config file), and requests whose errors read well.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use verge_api::{ErrorBody, ErrorCode, WhoAmI};

/// The flags every command that talks to a node takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct NodeArgs {
    /// The node's admin API, e.g. http://127.0.0.1:8788.
    #[arg(long, env = "VERGE_NODE", global = true)]
    node: Option<String>,

    /// The node's admin token. Prefer VERGE_TOKEN or the config file:
    /// a flag shows in the process list.
    #[arg(long, env = "VERGE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

/// `~/.config/verge/config.toml` (or `$VERGE_CONFIG_HOME/config.toml`),
/// which `verge login` writes.
#[derive(Deserialize, serde::Serialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    pub node: Option<String>,
    pub token: Option<String>,
}

/// Where the CLI config file is.
pub(crate) fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VERGE_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join("config.toml"));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("verge").join("config.toml"))
}

/// The config file's path as shown in messages.
pub(crate) fn config_shown() -> String {
    config_path().map_or("~/.config/verge/config.toml".into(), |p| {
        p.display().to_string()
    })
}

impl ConfigFile {
    /// The config file, or an empty one where there is none.
    pub(crate) fn load() -> anyhow::Result<ConfigFile> {
        let Some(path) = config_path().filter(|p| p.exists()) else {
            return Ok(ConfigFile::default());
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str::<ConfigFile>(&text)
            .map_err(|e| anyhow!("{}: {}", path.display(), e.message().trim()))
            .context("the file takes `node = \"http://...\"` and `token = \"...\"`")
    }

    /// Writes the file, readable by its owner alone (it holds a token).
    pub(crate) fn save(&self) -> anyhow::Result<PathBuf> {
        let path = config_path().context(
            "no place for the config file\n  help: set HOME, XDG_CONFIG_HOME or VERGE_CONFIG_HOME",
        )?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = toml::to_string(self).context("cannot write the config as TOML")?;
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// A node's admin API, ready to call.
pub(crate) struct Remote {
    base: String,
    token: String,
    /// Where the token came from, for the error when the node refuses it.
    token_source: String,
    agent: ureq::Agent,
}

impl NodeArgs {
    /// `--node` or VERGE_NODE, if given.
    pub(crate) fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// `--token` or VERGE_TOKEN, if given.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Where `--token`/VERGE_TOKEN came from, for messages.
    fn token_source(&self) -> &'static str {
        if std::env::var_os("VERGE_TOKEN").is_some() {
            "VERGE_TOKEN or --token"
        } else {
            "--token"
        }
    }

    /// The node and token from flags, then the environment, then the config
    /// file.
    pub(crate) fn connect(&self) -> anyhow::Result<Remote> {
        let file = ConfigFile::load()?;
        let shown = config_shown();
        let Some(node) = self.node.clone().or(file.node) else {
            bail!(
                "no node to talk to\n  help: run `verge login`, pass --node http://HOST:8788, set \
                 VERGE_NODE, or write `node = \"http://HOST:8788\"` in {shown}"
            );
        };
        let (token, source) = match (&self.token, file.token) {
            (Some(token), _) => (token.clone(), self.token_source().to_string()),
            (None, Some(token)) => (token, format!("`token` in {shown}")),
            (None, None) => bail!(
                "no admin token for {node}\n  help: run `verge login`, set VERGE_TOKEN, write \
                 `token = \"...\"` in {shown}, or pass --token"
            ),
        };
        Remote::new(&node, token, source)
    }
}

impl Remote {
    /// The admin API at `node`, called with `token` (which came from
    /// `token_source`, named when the node refuses it).
    pub(crate) fn new(node: &str, token: String, token_source: String) -> anyhow::Result<Remote> {
        let base = node.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("the node address {node:?} is not a URL\n  help: write it as http://HOST:PORT");
        }
        Ok(Remote {
            base,
            token,
            token_source,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(300)))
                .build()
                .into(),
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Checks the token with the node: who it is, or the node's refusal.
    pub(crate) fn whoami(&self) -> anyhow::Result<WhoAmI> {
        let path = "/v1/whoami";
        let response = self
            .agent
            .get(&self.url(path))
            .header("authorization", &self.auth())
            .call();
        let text = self.answer(path, response)?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "{} answered {path} with something other than a Verge node's JSON ({e})\n  \
                 help: --node must be the node's admin API (`admin_listen`, port 8788 by default)",
                self.base
            )
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `GET path`, answered with JSON.
    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .get(&self.url(path))
            .header("authorization", &self.auth())
            .call();
        self.read(path, response)
    }

    /// `GET path` as a stream that stays open (the tail): no overall
    /// timeout, the node's errors as for any call.
    pub(crate) fn stream(&self, path: &str) -> anyhow::Result<impl std::io::Read + use<>> {
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
                self.answer(path, other)?;
                anyhow::bail!("the node did not open the stream");
            }
        };
        Ok(response.into_body().into_reader())
    }

    /// `DELETE path`; `T` is `()` where the node answers 204.
    pub(crate) fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .delete(&self.url(path))
            .header("authorization", &self.auth())
            .call();
        self.read(path, response)
    }

    /// `method path` with a JSON body; `T` is `()` where the node answers
    /// 204.
    pub(crate) fn send_json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let request = http::Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("authorization", self.auth())
            .header("content-type", "application/json")
            .body(serde_json::to_string(body)?)?;
        let response = self.agent.run(request);
        self.read(path, response)
    }

    /// `PUT path` with `body` as raw bytes and extra headers.
    pub(crate) fn put_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> anyhow::Result<T> {
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
    /// when the node says the key does not exist (a missing namespace is an
    /// error).
    pub(crate) fn get_bytes(
        &self,
        path: &str,
    ) -> anyhow::Result<Option<(http::HeaderMap, Vec<u8>)>> {
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
            other => match self.answer(path, other) {
                Err(e) if refusal_code(&e) == Some(ErrorCode::KeyNotFound) => Ok(None),
                Err(e) => Err(e),
                Ok(_) => bail!("unexpected answer to {path}"),
            },
        }
    }

    /// `PUT path` with `length` bytes read from `body`.
    pub(crate) fn put_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        length: u64,
        body: &mut dyn std::io::Read,
    ) -> anyhow::Result<T> {
        let response = self
            .agent
            .put(&self.url(path))
            .header("authorization", &self.auth())
            .header("content-type", "application/wasm")
            .header("content-length", &length.to_string())
            .send(ureq::SendBody::from_reader(body));
        self.read(path, response)
    }

    /// The answer to `path` as `T` (an empty answer reads as JSON `null`,
    /// which is `()`); otherwise the node's error, with its help.
    fn read<T: DeserializeOwned>(
        &self,
        path: &str,
        response: Result<http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let text = self.answer(path, response)?;
        let text = if text.trim().is_empty() {
            "null"
        } else {
            &text
        };
        serde_json::from_str(text).map_err(|e| {
            anyhow!(
                "{} answered {path} with JSON this CLI does not understand: {e}\n  help: the \
                 node may run another Verge version (`verge whoami` shows it); use a CLI of the \
                 same version",
                self.base
            )
        })
    }

    /// The body of a 2xx answer; otherwise why the node refused.
    fn answer(
        &self,
        path: &str,
        response: Result<http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<String> {
        let mut response = match response {
            Ok(response) => response,
            Err(e) => return Err(self.transport_error(e)),
        };
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the node's answer to {path}"))?;
        if status.is_success() {
            return Ok(text);
        }
        let Ok(ErrorBody { error }) = serde_json::from_str::<ErrorBody>(&text) else {
            let shown: String = text.trim().chars().take(200).collect();
            if status != http::StatusCode::NOT_FOUND {
                bail!("{path} answered {status} {shown:?}");
            }
            // The admin API answers unknown routes with its JSON error:
            // another server, or the node's data plane, answered.
            bail!(
                "{} is not a Verge admin API: {path} answered {status} {shown:?}\n  help: --node \
                 must be the node's admin address (`admin_listen`, http://127.0.0.1:8788 by \
                 default), not the data-plane address workers answer on",
                self.base
            );
        };
        let message = &error.message;
        let shown = if error.code == ErrorCode::Unauthorized {
            format!(
                "the node at {} refused the admin token from {}: {message}\n  help: use one of \
                 the node's `[[admin_tokens]]` (or its VERGE_ADMIN_TOKEN); `verge login` checks \
                 and stores one",
                self.base, self.token_source
            )
        } else {
            match &error.help {
                Some(help) => format!("{message}\n  help: {help}"),
                None => format!("{message} ({status})"),
            }
        };
        Err(Refusal {
            code: error.code,
            shown,
        }
        .into())
    }

    /// A request that got no HTTP answer. A node refusing the token answers
    /// 401 before it reads an upload and closes the connection, so the
    /// upload fails with a broken pipe and the 401 goes unread: ask again
    /// with no body to tell that apart from a node that is down.
    fn transport_error(&self, e: ureq::Error) -> anyhow::Error {
        let probe = self
            .agent
            .get(&self.url("/v1/whoami"))
            .header("authorization", &self.auth())
            .call();
        match probe {
            Ok(answer) if answer.status() == http::StatusCode::UNAUTHORIZED => {
                match self.answer("/v1/whoami", Ok(answer)) {
                    Err(refused) => refused,
                    Ok(_) => anyhow!("the node closed the connection: {e}"),
                }
            }
            Ok(_) => anyhow!(
                "the node at {} closed the connection: {e}\n  help: the node is up and took \
                 the token; its log says why, or retry",
                self.base
            ),
            Err(_) if self.base.starts_with("https://") && is_tls_mismatch(&e) => anyhow!(
                "cannot speak TLS to {}: {e}\n  help: a Verge node's admin API is plain HTTP; \
                 use http://, or put a TLS proxy in front of it",
                self.base
            ),
            Err(_) => anyhow!(
                "cannot reach the node at {}: {e}\n  help: check --node / VERGE_NODE and that \
                 `verge serve` runs there",
                self.base
            ),
        }
    }
}

/// A node's refusal: its error code, for callers that handle some, and the
/// message shown (with the node's help).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    shown: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::error::Error for Refusal {}

/// The node's error code, when `e` is a node's refusal.
pub(crate) fn refusal_code(e: &anyhow::Error) -> Option<ErrorCode> {
    e.downcast_ref::<Refusal>().map(|r| r.code)
}

/// Whether a TLS handshake failed on something that does not speak TLS.
fn is_tls_mismatch(e: &ureq::Error) -> bool {
    // rustls reads a plain-HTTP answer as a record of an unknown type.
    matches!(e, ureq::Error::Rustls(_)) || e.to_string().contains("InvalidContentType")
}
