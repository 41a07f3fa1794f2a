//! `verge dev` serving real components: responses, streaming, logs,
//! variables, the compile cache, instance reuse and graceful shutdown.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{Dev, Reply, agent, project, verge};

#[test]
fn hello_answers_with_timing_and_logs_the_guest_output() {
    let dev = Dev::fixtures("", &[]);
    let reply = dev.get("/hello");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from fixtures\n");
    let timing = reply.header("server-timing").expect("Server-Timing header");
    assert!(
        timing.starts_with("cpu;dur=") && timing.contains(", total;dur="),
        "{timing}"
    );
    let entry = dev.log_entry(&format!("id={}", reply.request_id()));
    assert!(entry[0].starts_with("GET /hello 200 cpu="), "{entry:?}");
    assert_eq!(entry[1..], ["  out saying hello", "  err to stderr too"]);
}

#[test]
fn guest_output_that_a_terminal_would_act_on_is_printed_escaped() {
    let dev = Dev::fixtures("", &[]);
    let reply = dev.get("/escapes");
    assert_eq!(reply.status, 200);
    let entry = dev.log_entry(&format!("id={}", reply.request_id()));
    assert_eq!(
        entry[1..],
        [
            "  out \\u{1b}[2J\\u{1b}]0;owned\\u{7} cleared",
            "  err \\r\\u{1b}[1Aoverwritten",
        ],
        "{entry:?}"
    );
}

#[test]
fn a_component_built_with_other_bindings_runs_unmodified() {
    let dev = Dev::start(project(common::WSTD_HELLO, ""), &[]);
    let reply = dev.get("/some/path");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from wstd at /some/path\n");
}

#[test]
fn echo_streams_a_multi_mebibyte_body_both_ways() {
    // Streaming is measured here, not CPU: a debug build copies slowly.
    let dev = Dev::fixtures("[limits]\ncpu_ms = 2000\n", &["--max-cpu-ms", "2000"]);
    let body: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // A reader without a length makes the client send chunked frames.
    let reply = dev.post_streamed("/echo", &body);
    assert_eq!(reply.status, 200);
    let echoed = reply.body.unwrap();
    assert_eq!(echoed.len(), body.len());
    assert!(echoed == body, "echoed bytes differ");
}

#[test]
fn manifest_vars_are_the_guest_environment() {
    let dev = Dev::fixtures("[vars]\nGREETING = \"hello, edge\"\n", &[]);
    assert_eq!(dev.get("/env?name=GREETING").text(), "hello, edge");
    assert_eq!(
        dev.get("/env?name=HOME").text(),
        "<unset>",
        "the host environment leaked"
    );
}

#[test]
fn outbound_http_is_refused_with_an_error_value() {
    let dev = Dev::fixtures("", &[]);
    let reply = dev.get("/fetch");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "fetch failed: ErrorCode::HttpRequestDenied");
    let entry = dev
        .log_entry(&format!("id={}", reply.request_id()))
        .join("\n");
    assert!(
        entry.contains("outbound request to http://example.com/ denied"),
        "{entry}"
    );
}

#[test]
fn a_handler_that_sets_no_response_gets_500() {
    let dev = Dev::fixtures("", &[]);
    let reply = dev.get("/no-response");
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("did not produce a response"));
}

#[test]
fn every_request_gets_a_fresh_instance_unless_reuse_is_on() {
    let fresh = Dev::fixtures("", &[]);
    let counts: Vec<String> = (0..3).map(|_| fresh.get("/count").text()).collect();
    assert_eq!(counts, ["1", "1", "1"]);

    let reused = Dev::fixtures("[limits]\ninstance_reuse = 3\n", &[]);
    let counts: Vec<String> = (0..4).map(|_| reused.get("/count").text()).collect();
    assert_eq!(
        counts,
        ["1", "2", "3", "1"],
        "an instance serves 3 requests, then a new one starts"
    );

    // A trap discards the instance it happened in.
    assert_eq!(reused.get("/count").text(), "2");
    assert_eq!(reused.get("/trap").status, 500);
    assert_eq!(reused.get("/count").text(), "1");
}

#[test]
fn the_compiled_component_is_reused_after_a_restart() {
    let dir = project(common::FIXTURES, "");
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap().to_string();
    let mut first = Dev::start(dir, &["--data-dir", &data_arg]);
    assert!(
        first
            .stderr()
            .iter()
            .any(|l| l.starts_with("Compiled fixtures")),
        "{:?}",
        first.stderr()
    );
    first.terminate();
    assert!(first.wait(Duration::from_secs(10)).success());
    let artifacts: Vec<_> = std::fs::read_dir(data.path().join("compiled"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(artifacts.len(), 1, "one compiled artifact");
    let modified = artifacts[0].metadata().unwrap().modified().unwrap();

    let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().unwrap());
    let second = Dev::start(dir, &["--data-dir", &data_arg]);
    assert!(
        second
            .stderr()
            .iter()
            .any(|l| l.starts_with("Loaded fixtures") && l.ends_with("from the compile cache")),
        "{:?}",
        second.stderr()
    );
    assert_eq!(
        artifacts[0].metadata().unwrap().modified().unwrap(),
        modified,
        "artifact rewritten"
    );
    assert_eq!(second.get("/hello").status, 200);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let mut dev = Dev::fixtures("", &[]);
    let url = dev.url("/sleep?ms=1000");
    let in_flight = std::thread::spawn(move || Reply::from(agent().get(&url).call()));
    common::node::eventually("the request is in flight", || dev.instances_busy() == 1);
    let signalled = Instant::now();
    dev.terminate();
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slept 1000 ms\n");
    let status = dev.wait(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
    // The listener is gone.
    assert!(agent().get(&dev.url("/hello")).call().is_err());
}

#[test]
fn unknown_manifest_keys_fail_with_line_and_suggestion() {
    let dir = project(common::FIXTURES, "[limits]\ncpu = 10\n");
    let stderr = common::dev_error(dir.path());
    assert!(
        stderr.contains("verge.toml:4:1: unknown key `cpu`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `cpu_ms`?"), "{stderr}");
}

#[test]
fn a_limit_above_the_ceiling_is_refused_naming_the_key() {
    let dir = project(common::FIXTURES, "[limits]\ncpu_ms = 500\n");
    let stderr = common::dev_error(dir.path());
    assert!(
        stderr.contains("limit `cpu_ms` is 500 ms, above this node's ceiling of 50 ms"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"not wasm at all").unwrap();
    common::write_manifest(dir.path(), bogus.to_str().unwrap(), "");
    let stderr = common::dev_error(dir.path());
    assert!(stderr.contains("cannot load worker `fixtures`"), "{stderr}");
    assert!(stderr.contains("not valid WebAssembly"), "{stderr}");
}

#[test]
fn version_and_help_work() {
    let output = verge().arg("--help").output().unwrap();
    assert!(output.status.success());
    let mut text = String::new();
    output.stdout.as_slice().read_to_string(&mut text).unwrap();
    for command in ["dev", "deploy", "serve", "kv"] {
        assert!(text.contains(command), "no `{command}` in {text}");
    }

    let output = verge().arg("--version").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text.trim(),
        format!("verge {}", env!("CARGO_PKG_VERSION")),
        "{text}"
    );
}

#[test]
fn the_hello_example_builds_and_serves() {
    // The README's first command, on the example a newcomer starts from. The
    // build goes to the workspace's target directory, not into the example.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/examples");
    // Held to the end: the node writes into it, and it goes with the test.
    let data = tempfile::tempdir().unwrap();
    let mut child = verge()
        .arg("dev")
        .arg(&example)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("CARGO_TARGET_DIR", &target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let url = line
        .trim()
        .split(" at ")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected: {line}"))
        .to_string();
    let reply = Reply::from(agent().get(&format!("{url}/hello?name=Ada")).call());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "Hello from Verge, Ada!\n");
}

#[test]
fn verge_build_builds_checks_and_reports_the_size() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/examples");
    let output = verge()
        .arg("build")
        .arg(&example)
        .arg("--no-check")
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("Ready ") && stdout.contains("hello.wasm (") && stdout.contains("KiB)"),
        "{stdout}"
    );

    // A prebuilt file that is no component fails the check, saying so.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0").unwrap();
    common::write_manifest(dir.path(), bogus.to_str().unwrap(), "");
    let output = verge().arg("build").arg(dir.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bogus.wasm cannot run on Verge"),
        "{stderr}"
    );
}

#[test]
fn the_dev_node_has_an_admin_api_with_a_local_token() {
    let dev = Dev::fixtures("", &[]);
    let (admin, token) = dev.admin();
    // The token is the dev node's own, kept for its owner alone.
    let token_file = dev.dir.path().join(".verge/admin-token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{token_file:?} is {mode:o}");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);

    let cli = |token: &str| {
        let mut command = verge();
        command
            .env("VERGE_CONFIG_HOME", dev.dir.path())
            .env("VERGE_NODE", &admin)
            .env("VERGE_TOKEN", token);
        command
    };
    let output = cli(&token).args(["list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(listed.contains("fixtures"), "{listed}");
    let refused = cli("not-the-token-of-this-node")
        .arg("whoami")
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // A request shows in the metrics of the dev node's admin side.
    assert_eq!(dev.get("/hello").status, 200);
    let metrics = Reply::from(
        agent()
            .get(&format!("{admin}/metrics"))
            .header("authorization", &format!("Bearer {token}"))
            .call(),
    );
    assert!(
        metrics
            .text()
            .contains("verge_requests_total{worker=\"fixtures\""),
        "{}",
        metrics.text()
    );
}

#[test]
fn the_dev_node_runs_without_an_admin_api_when_told() {
    let dev = Dev::fixtures("", &["--admin-listen", "off"]);
    assert_eq!(dev.get("/hello").status, 200);
    assert!(!dev.dir.path().join(".verge/admin-token").exists());
    assert!(
        !dev.stderr().iter().any(|l| l.contains("Admin API")),
        "{:?}",
        dev.stderr()
    );
}
