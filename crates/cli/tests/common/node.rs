//! Starts real `verge serve` processes on port 0 and drives them with the
//! CLI and over HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Reply, agent, lines_of, verge};

/// The admin token every test node accepts.
pub(crate) const TOKEN: &str = "test-token-0123456789";

/// A `verge serve` process with its data in a temporary directory.
pub(crate) struct Node {
    child: Child,
    /// The data plane, `http://127.0.0.1:PORT`.
    pub data: String,
    /// The admin API, `http://127.0.0.1:PORT`.
    pub admin: String,
    pub dir: tempfile::TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts a node with `args` added to `verge serve`.
    pub(crate) fn start(args: &[&str]) -> Node {
        Node::start_in(tempfile::tempdir().unwrap(), args)
    }

    /// Starts a node whose data dir is `dir/data` (kept by a restart).
    pub(crate) fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Node {
        let mut child = verge()
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .env("VERGE_ADMIN_TOKEN", TOKEN)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start verge serve");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let find = |prefix: &str| {
            stdout.lock().unwrap().iter().find_map(|l| {
                l.strip_prefix(prefix)
                    .and_then(|rest| rest.split_whitespace().find(|w| w.starts_with("http://")))
                    .map(String::from)
            })
        };
        let (data, admin) = loop {
            if let (Some(data), Some(admin)) = (find("Serving"), find("Admin API")) {
                break (data, admin);
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "verge serve exited with {status}: {:?}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "verge serve did not start: {:?}",
                stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Node {
            child,
            data,
            admin,
            dir,
            stdout,
            stderr,
        }
    }

    /// Stops the process and hands back its directory, for a restart.
    pub(crate) fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// A `verge` command aimed at this node, with no user config around.
    pub(crate) fn cli(&self) -> Command {
        let mut command = verge();
        command
            .env("VERGE_NODE", &self.admin)
            .env("VERGE_TOKEN", TOKEN)
            .env("VERGE_CONFIG_HOME", self.dir.path())
            .env("NO_COLOR", "1");
        command
    }

    /// A request to the data plane for `host` (the Host header) and `path`.
    pub(crate) fn get(&self, host: &str, path: &str) -> Reply {
        let request = http::Request::get(format!("{}{path}", self.data))
            .header("host", host)
            .body(())
            .unwrap();
        Reply::from(agent().run(request))
    }

    /// An admin API call with `token` (none when `None`).
    pub(crate) fn admin_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Reply {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.admin));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        match body {
            Some(body) => Reply::from(
                agent().run(
                    request
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .unwrap(),
                ),
            ),
            None => Reply::from(agent().run(request.body(()).unwrap())),
        }
    }

    pub(crate) fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub(crate) fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Instances serving a request now (the `verge_instances_busy` gauge).
    #[allow(dead_code)]
    pub(crate) fn instances_busy(&self) -> u64 {
        let metrics = self.admin_call("GET", "/metrics", None, None).text();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("verge_instances_busy "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no verge_instances_busy in {metrics}"))
    }

    /// The node process's resident memory, in KiB (Linux).
    #[allow(dead_code)]
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the node is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker project in a temporary directory: `verge.toml` naming `name`
/// and the prebuilt `component`, plus `extra` TOML.
pub(crate) fn worker(name: &str, component: &Path, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    rewrite(dir.path(), name, component, extra);
    dir
}

/// Rewrites the project's manifest.
pub(crate) fn rewrite(dir: &Path, name: &str, component: &Path, extra: &str) {
    std::fs::write(
        dir.join("verge.toml"),
        format!("name = \"{name}\"\ncomponent = {:?}\n{extra}", component),
    )
    .unwrap();
}

/// The fixtures component's path.
pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(super::FIXTURES)
}

/// A schema of its own on the test PostgreSQL (127.0.0.1:5432, or the URL in
/// VERGE_TEST_POSTGRES), dropped when this goes out of scope.
pub(crate) struct PgSchema {
    pub url: String,
    pub name: String,
}

impl PgSchema {
    pub(crate) fn new() -> PgSchema {
        let url = std::env::var("VERGE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("verge_node_test_{}_{nanos}", std::process::id());
        PgSchema { url, name }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            if let Ok((client, connection)) =
                tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                    .await;
            }
        });
    }
}

/// Runs `verge serve` with `args` on port 0 in a fresh data dir, expecting
/// it to refuse to start; returns what it said on stderr.
pub(crate) fn serve_refused(args: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let output = verge()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .env("VERGE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!output.status.success(), "verge serve {args:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Two nodes sharing a fresh PostgreSQL schema (dropped with the first
/// element).
pub(crate) fn two_nodes_on_postgres() -> (PgSchema, Node, Node) {
    let schema = PgSchema::new();
    let store = ["--store", &schema.url, "--store-schema", &schema.name];
    let a = Node::start(&store);
    let b = Node::start(&store);
    (schema, a, b)
}

/// Waits until `check` holds, up to 10 s; returns how long it took.
pub(crate) fn eventually(what: &str, check: impl Fn() -> bool) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !check() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what} did not happen within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    started.elapsed()
}

/// A child process killed when the test ends, however it ends.
pub(crate) struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `verge tail` process whose JSON lines are collected, and the banner
/// it printed.
pub(crate) struct Tail {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// What it said on stderr when it started: which nodes it shows.
    pub banner: String,
}

impl Tail {
    pub(crate) fn start(node: &Node, args: &[&str]) -> Tail {
        use std::io::{BufRead, BufReader};
        let mut child = node
            .cli()
            .arg("tail")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // It says so on stderr once the node has subscribed it.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        assert!(first.starts_with("Tailing"), "{first}");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Tail {
            child,
            lines,
            banner: first,
        }
    }

    /// The events so far, once at least `count` arrived.
    pub(crate) fn events(&self, count: usize) -> Vec<serde_json::Value> {
        self.events_when(|events| events.len() >= count)
    }

    /// The events so far, once the request with id `id` (the last one sent
    /// of those the tail should show) is among them: the requests before it
    /// finished first, so their events are in too, and a count is exact.
    pub(crate) fn events_through(&self, id: &str) -> Vec<serde_json::Value> {
        self.events_when(|events| events.iter().any(|e| e["id"] == id))
    }

    fn events_when(&self, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let events: Vec<serde_json::Value> = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if done(&events) {
                return events;
            }
            assert!(std::time::Instant::now() < deadline, "{events:#?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON response body.
#[allow(dead_code)]
pub(crate) fn json_of(reply: &super::Reply) -> serde_json::Value {
    serde_json::from_slice(reply.body.as_ref().expect("body"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.text()))
}

/// Deploys the project in `dir` with the CLI; returns what it printed.
#[allow(dead_code)]
pub(crate) fn deploy(node: &Node, dir: &Path, extra_args: &[&str]) -> String {
    super::succeed(node.cli().arg("deploy").arg(dir).args(extra_args))
}

/// The key names of a `verge kv key list` page.
#[allow(dead_code)]
pub(crate) fn key_names(page: &serde_json::Value) -> Vec<&str> {
    let keys = page["keys"].as_array().unwrap();
    keys.iter().map(|k| k["name"].as_str().unwrap()).collect()
}

/// Which `VERSION` var the worker `name` answers with.
#[allow(dead_code)]
pub(crate) fn version_of(node: &Node, name: &str) -> String {
    let reply = node.get(&format!("{name}.localhost"), "/env?name=VERSION");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}
