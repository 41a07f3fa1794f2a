//! Starts real `verge dev` processes on port 0 and talks to them over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) mod node;

#[allow(unused_imports)]
pub(crate) use verge_test_programs::{FIXTURES, KV_FIXTURE, WSTD_HELLO};

/// A `verge dev` process serving one worker from a temporary directory.
pub(crate) struct Dev {
    pub child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// The repository's `examples/`.
pub(crate) fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Where example and template workers build: shared, so that their common
/// dependencies compile once.
pub(crate) fn examples_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/examples")
}

/// Builds every example once per test process, so that each `verge dev`
/// finds its build done instead of racing the others for cargo's lock.
pub(crate) fn build_examples() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--target", "wasm32-wasip2", "--release"])
            .current_dir(examples_dir())
            .env("CARGO_TARGET_DIR", examples_target())
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .expect("cannot run cargo");
        assert!(
            output.status.success(),
            "building the examples failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// The built component of example `name`.
pub(crate) fn example_component(name: &str) -> PathBuf {
    build_examples();
    examples_target()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// Writes a manifest for `component` with `extra` TOML appended.
pub(crate) fn project(component: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_manifest(dir.path(), component, extra);
    dir
}

pub(crate) fn write_manifest(dir: &Path, component: &str, extra: &str) {
    let manifest = format!("name = \"fixtures\"\ncomponent = {component:?}\n{extra}");
    std::fs::write(dir.join("verge.toml"), manifest).unwrap();
}

pub(crate) fn verge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verge"))
}

/// Runs `verge dev` on the project in `dir`, expects it to fail at start, and
/// returns what it printed on stderr.
pub(crate) fn dev_error(dir: &Path) -> String {
    let output = verge()
        .arg("dev")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "verge dev started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

impl Dev {
    /// Serves the fixtures component with `extra` manifest TOML.
    pub(crate) fn fixtures(extra: &str, args: &[&str]) -> Dev {
        Dev::start(project(FIXTURES, extra), args)
    }

    /// Starts `verge dev` on the project in `dir` and waits until it serves.
    pub(crate) fn start(dir: tempfile::TempDir, args: &[&str]) -> Dev {
        let worker = dir.path().to_path_buf();
        Dev::spawn(&worker, dir, args)
    }

    /// Serves `examples/NAME` (built once per test process into the shared
    /// examples target directory) with its local state in a temporary dir.
    pub(crate) fn example(name: &str, args: &[&str]) -> Dev {
        build_examples();
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_str().unwrap().to_string();
        let mut all = vec!["--data-dir", data_dir.as_str()];
        all.extend_from_slice(args);
        Dev::spawn(&examples_dir().join(name), data, &all)
    }

    /// Starts `verge dev` on the worker in `worker`, keeping `dir` alive as
    /// long as the process.
    pub(crate) fn spawn(worker: &Path, dir: tempfile::TempDir, args: &[&str]) -> Dev {
        let mut child = verge()
            .arg("dev")
            .arg(worker)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("NO_COLOR", "1")
            .env("CARGO_TARGET_DIR", examples_target())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start verge");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            if let Some(url) = stdout.lock().unwrap().iter().find_map(|l| {
                l.split(" at ")
                    .nth(1)
                    .filter(|_| l.starts_with("Serving"))
                    .map(String::from)
            }) {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "verge dev exited with {status}: {:?}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "verge dev did not start: {:?}",
                stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Dev {
            child,
            url,
            dir,
            stdout,
            stderr,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub(crate) fn get(&self, path: &str) -> Reply {
        Reply::from(agent().get(&self.url(path)).call())
    }

    /// Any method, with headers and an optional body.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut request = http::Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match body {
            Some(body) => Reply::from(agent().run(request.body(body.to_string()).unwrap())),
            None => Reply::from(agent().run(request.body(()).unwrap())),
        }
    }

    /// POSTs `body` with a Content-Length.
    pub(crate) fn post(&self, path: &str, body: &[u8]) -> Reply {
        Reply::from(agent().post(&self.url(path)).send(body))
    }

    /// POSTs `body` chunked, without declaring its length.
    pub(crate) fn post_streamed(&self, path: &str, body: &[u8]) -> Reply {
        let mut reader = body;
        Reply::from(
            agent()
                .post(&self.url(path))
                .send(ureq::SendBody::from_reader(&mut reader)),
        )
    }

    /// Lines `verge dev` printed on stdout (the request log) so far.
    pub(crate) fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub(crate) fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for a request-log line containing `needle`, and returns it with
    /// the indented guest lines under it.
    pub(crate) fn log_entry(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.stdout();
            if let Some(at) = lines
                .iter()
                .position(|l| !l.starts_with(' ') && l.contains(needle))
            {
                let mut entry = vec![lines[at].clone()];
                entry.extend(
                    lines[at + 1..]
                        .iter()
                        .take_while(|l| l.starts_with("  "))
                        .cloned(),
                );
                return entry;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} in {lines:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for any stdout line containing `needle` (a guest's line under
    /// its request, say) and returns it.
    pub(crate) fn wait_line(&self, needle: &str) -> String {
        wait_for(&self.stdout, needle, Duration::from_secs(10))
    }

    /// Waits for a stderr line containing `needle` (build and reload
    /// messages go there) and returns it.
    pub(crate) fn wait_line_err(&self, needle: &str) -> String {
        wait_for(&self.stderr, needle, Duration::from_secs(180))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The local node's admin API and its token, as `verge dev` announces
    /// them (`Admin API at URL; e.g. ... VERGE_TOKEN=$(cat PATH) ...`).
    #[allow(dead_code)]
    pub(crate) fn admin(&self) -> (String, String) {
        let line = self.wait_line_err("Admin API at ");
        let url = line
            .split("Admin API at ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("no admin URL in {line:?}"))
            .to_string();
        let path = line
            .split("$(cat ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_else(|| panic!("no token file in {line:?}"));
        let token = std::fs::read_to_string(path).unwrap().trim().to_string();
        (url, token)
    }

    /// Instances of the local node serving a request now (the
    /// `verge_instances_busy` gauge of its admin API).
    #[allow(dead_code)]
    pub(crate) fn instances_busy(&self) -> u64 {
        let (url, token) = self.admin();
        let metrics = agent()
            .get(&format!("{url}/metrics"))
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .expect("the admin API answers")
            .into_body()
            .read_to_string()
            .unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("verge_instances_busy "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no verge_instances_busy in {metrics}"))
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "verge did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time the whole process has used, from the scheduler's per-thread
    /// nanosecond counters.
    pub(crate) fn process_cpu(&self) -> Duration {
        let mut total = 0u64;
        let tasks = PathBuf::from(format!("/proc/{}/task", self.pid()));
        for task in std::fs::read_dir(tasks).unwrap().flatten() {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += stat
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Duration::from_nanos(total)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `timeout` for a line of `lines` containing `needle`.
fn wait_for(lines: &Mutex<Vec<String>>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let now = lines.lock().unwrap().clone();
        if let Some(line) = now.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in {now:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command`, expects success, and returns its stdout.
pub(crate) fn succeed(command: &mut Command) -> String {
    let output = command.output().expect("cannot run the command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn lines_of(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Runs `command` with `stdin` piped in; returns its output.
pub(crate) fn run_with_stdin(command: &mut Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading its stdin may already have
    // closed it: its output says why, not this write.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// An HTTP client that returns every status as a response.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A response read whole, or the transport error.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Result<Vec<u8>, String>,
}

impl Reply {
    pub(crate) fn from(result: Result<http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut response = result.expect("request failed");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map_err(|e| e.to_string());
        Reply {
            status,
            headers,
            body,
        }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_ref().expect("body failed")).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The node's id for the request.
    pub(crate) fn request_id(&self) -> String {
        self.header("verge-request-id")
            .expect("verge-request-id header")
            .to_string()
    }
}
