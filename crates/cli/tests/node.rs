//! `verge serve` (a node) as a real process, driven by the CLI (`verge deploy`,
//! `versions`, `rollback`, `secret`) and over HTTP: deploys, versions,
//! rollback, gradual rollout, validation, tokens, secrets and routing.

mod common;

use std::path::Path;

use common::node::{
    Node, TOKEN, Tail, deploy, fixtures, json_of, key_names, rewrite, version_of, worker,
};
use common::{KV_FIXTURE, succeed};
use serde_json::{Value, json};

/// Deploys and expects a refusal; returns the CLI's stderr.
fn deploy_refused(node: &Node, dir: &Path) -> String {
    let output = node.cli().arg("deploy").arg(dir).output().unwrap();
    assert!(!output.status.success(), "the deploy went through");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn deploy_update_roll_back_and_delete_survive_a_restart() {
    let node = Node::start(&[]);
    let project = worker("app", &fixtures(), "[vars]\nVERSION = \"one\"\n");
    let printed = deploy(&node, project.path(), &[]);
    assert!(printed.contains("Deployed app version"), "{printed}");
    assert!(printed.contains("to all traffic"), "{printed}");
    let port = node.data.rsplit(':').next().unwrap();
    assert!(
        printed.contains(&format!("http://app.localhost:{port}")),
        "{printed}"
    );
    assert_eq!(version_of(&node, "app"), "one");

    // The same content deploys to the same version.
    let again = deploy(&node, project.path(), &[]);
    let id = |text: &str| text.split_whitespace().nth(3).unwrap().to_string();
    assert_eq!(id(&printed), id(&again));

    rewrite(
        project.path(),
        "app",
        &fixtures(),
        "[vars]\nVERSION = \"two\"\n",
    );
    let second = deploy(&node, project.path(), &[]);
    assert_ne!(id(&printed), id(&second));
    assert_eq!(version_of(&node, "app"), "two");

    let versions = succeed(node.cli().args(["versions", "--name", "app"]));
    let rows: Vec<&str> = versions.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{versions}");
    assert!(
        rows[0].starts_with(&id(&second)) && rows[0].ends_with("100%"),
        "{versions}"
    );
    assert!(
        rows[1].starts_with(&id(&printed)) && rows[1].ends_with('-'),
        "{versions}"
    );
    assert!(
        rows[0].contains("admin"),
        "the author is the token's name: {versions}"
    );

    let rolled = succeed(node.cli().args(["rollback", "--name", "app"]));
    assert!(rolled.contains(&id(&printed)), "{rolled}");
    assert_eq!(version_of(&node, "app"), "one");
    succeed(
        node.cli()
            .args(["rollback", "--name", "app", &id(&second)[..6]]),
    );
    assert_eq!(version_of(&node, "app"), "two");

    // A restart serves what was deployed, from the store.
    let dir = node.stop();
    let node = Node::start_in(dir, &[]);
    assert_eq!(version_of(&node, "app"), "two");

    let deleted = node.admin_call("DELETE", "/v1/workers/app", Some(TOKEN), None);
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let gone = node.get("app.localhost", "/env?name=VERSION");
    assert_eq!(gone.status, 404);
    assert!(
        gone.text().contains("no worker named `app`"),
        "{}",
        gone.text()
    );
    let versions = node
        .cli()
        .args(["versions", "--name", "app"])
        .output()
        .unwrap();
    assert!(!versions.status.success());
}

#[test]
fn a_percentage_rollout_splits_traffic_and_a_full_deploy_ends_it() {
    let node = Node::start(&[]);
    let project = worker("split", &fixtures(), "[vars]\nVERSION = \"stable\"\n");
    deploy(&node, project.path(), &[]);
    rewrite(
        project.path(),
        "split",
        &fixtures(),
        "[vars]\nVERSION = \"canary\"\n",
    );
    let printed = deploy(&node, project.path(), &["--percentage", "20"]);
    assert!(printed.contains("to 20% of traffic"), "{printed}");

    let total = 500;
    let canary = (0..total)
        .filter(|_| version_of(&node, "split") == "canary")
        .count();
    let share = canary as f64 / total as f64;
    assert!((0.17..=0.23).contains(&share), "canary share {share}");

    let versions: Value = serde_json::from_str(&succeed(
        node.cli().args(["versions", "--name", "split", "--json"]),
    ))
    .unwrap();
    let percents: Vec<u64> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["traffic_percent"].as_u64().unwrap())
        .collect();
    assert_eq!(percents, [20, 80], "newest first");

    // Rolling back during a rollout ends it.
    succeed(node.cli().args(["rollback", "--name", "split"]));
    assert!((0..50).all(|_| version_of(&node, "split") == "stable"));

    deploy(&node, project.path(), &["--percentage", "30"]);
    deploy(&node, project.path(), &["--percentage", "100"]);
    assert!((0..50).all(|_| version_of(&node, "split") == "canary"));
}

#[test]
fn invalid_deploys_are_refused_and_the_running_version_keeps_serving() {
    let node = Node::start(&["--max-cpu-ms", "100"]);
    let good = worker(
        "app",
        &fixtures(),
        "routes = [\"shop.test/*\"]\n[vars]\nVERSION = \"good\"\n",
    );
    deploy(&node, good.path(), &[]);

    let junk = good.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not a component").unwrap();
    // The KV fixture with its import renamed to one Verge does not provide.
    let foreign = good.path().join("foreign.wasm");
    let bytes = std::fs::read(KV_FIXTURE).unwrap();
    let renamed = replace_all(&bytes, b"verge:kv/store@0.1.0", b"vergo:kv/store@0.1.0");
    std::fs::write(&foreign, renamed).unwrap();

    let fixtures = fixtures();
    let cases: Vec<(&Path, &str, &str)> = vec![
        (&junk, "", "not valid WebAssembly"),
        (
            &foreign,
            "",
            "imports `vergo:kv/store@0.1.0`, which Verge does not provide",
        ),
        (
            &fixtures,
            "[limits]\ncpu_ms = 500\n",
            "limit `cpu_ms` is 500 ms, above this node's ceiling of 100 ms",
        ),
        (
            &fixtures,
            "[triggers]\ncrons = [\"*/5 * * * *\", \"0 0 30 2 *\"]\n",
            "invalid cron schedule \"0 0 30 2 *\": it never fires",
        ),
        (
            // Refused with a namespace to create: none is left behind.
            &fixtures,
            "[limits]\ncpu_ms = 500\n[[kv_namespaces]]\nbinding = \"DATA\"\nnamespace = \"missing\"\n",
            "limit `cpu_ms` is 500 ms",
        ),
    ];
    let project = tempfile::tempdir().unwrap();
    for (component, extra, expected) in cases {
        rewrite(project.path(), "app", component, extra);
        let error = deploy_refused(&node, project.path());
        assert!(
            error.contains(expected),
            "expected {expected:?} in: {error}"
        );
        assert_eq!(version_of(&node, "app"), "good");
    }
    let namespaces = node.admin_call("GET", "/v1/kv/namespaces", Some(TOKEN), None);
    assert!(
        !namespaces.text().contains("missing"),
        "{}",
        namespaces.text()
    );

    // Another worker may not take a route `app` serves.
    let other = worker("other", &fixtures, "routes = [\"shop.test/*\"]\n");
    let error = deploy_refused(&node, other.path());
    assert!(
        error.contains("route `shop.test/*` is already served by worker `app`"),
        "{error}"
    );
    assert_eq!(node.get("other.localhost", "/plain").status, 404);
    assert_eq!(node.get("shop.test", "/env?name=VERSION").text(), "good");

    // Nor the host `app` answers at by name, nor all names under the domain.
    for route in ["app.localhost/*", "*.localhost/*", "localhost/*"] {
        let thief = worker("thief", &fixtures, &format!("routes = [{route:?}]\n"));
        let error = deploy_refused(&node, thief.path());
        assert!(
            error.contains(&format!(
                "route `{route}` reaches hosts under this node's domain"
            )),
            "{error}"
        );
    }
    assert_eq!(
        node.get("app.localhost", "/env?name=VERSION").text(),
        "good"
    );
    // Its own name and names under it are its to route.
    let own = worker("own", &fixtures, "routes = [\"api.own.localhost/*\"]\n");
    deploy(&node, own.path(), &[]);
    assert_eq!(
        node.get("api.own.localhost", "/plain").text(),
        "hello world\n"
    );

    // The manifest's name must be the worker deployed to.
    let versions = node.admin_call("GET", "/v1/workers/app/versions", Some(TOKEN), None);
    assert_eq!(json_of(&versions)["versions"].as_array().unwrap().len(), 1);
    let renamed = node.admin_call(
        "POST",
        "/v1/workers/app/versions",
        Some(TOKEN),
        Some(&json!({ "component": "00", "manifest": "name = \"bob\"\n" })),
    );
    assert_eq!(renamed.status, 400);
    assert!(
        renamed.text().contains("names worker `bob`"),
        "{}",
        renamed.text()
    );
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = haystack.to_vec();
    let mut replaced = 0;
    let mut at = 0;
    while let Some(offset) = out[at..].windows(from.len()).position(|w| w == from) {
        let start = at + offset;
        out[start..start + to.len()].copy_from_slice(to);
        at = start + to.len();
        replaced += 1;
    }
    assert!(replaced > 0, "nothing to replace");
    out
}

#[test]
fn the_admin_api_wants_a_valid_token_and_read_only_tokens_only_read() {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("node.toml");
    std::fs::write(
        &file,
        "[[admin_tokens]]\nname = \"viewer\"\ntoken = \"viewer-token-0123456789\"\nread_only = true\n",
    )
    .unwrap();
    // The file's read-only token joins the one in VERGE_ADMIN_TOKEN.
    let node = Node::start(&["--config", file.to_str().unwrap()]);
    let project = worker("app", &fixtures(), "");

    for token in [
        None,
        Some("wrong-token-0123456789"),
        Some("test-token-012345678"),
    ] {
        let reply = node.admin_call("GET", "/v1/workers", token, None);
        assert_eq!(reply.status, 401, "{token:?}");
        assert_eq!(json_of(&reply)["error"]["code"], "unauthorized");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
    }
    let refused = node
        .cli()
        .env("VERGE_TOKEN", "wrong-token-0123456789")
        .arg("deploy")
        .arg(project.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not one of this node's admin tokens")
    );

    let viewer = Some("viewer-token-0123456789");
    assert_eq!(
        node.admin_call("GET", "/v1/workers", viewer, None).status,
        200
    );
    let forbidden = node.admin_call("DELETE", "/v1/workers/app", viewer, None);
    assert_eq!(forbidden.status, 403);
    assert_eq!(json_of(&forbidden)["error"]["code"], "forbidden");

    // Nothing changed: no worker was deployed.
    let workers = node.admin_call("GET", "/v1/workers", Some(TOKEN), None);
    assert_eq!(json_of(&workers)["workers"], json!([]));
    assert_eq!(node.get("app.localhost", "/plain").status, 404);
    // Health needs no token.
    let health = node.admin_call("GET", "/healthz", None, None);
    assert_eq!(json_of(&health)["status"], "ok");
}

#[test]
fn a_secret_reaches_the_guest_and_no_response_log_line_or_tail_event() {
    let node = Node::start(&[]);
    let project = worker("app", &fixtures(), "[vars]\nAPI_KEY = \"from-vars\"\n");
    deploy(&node, project.path(), &[]);
    let secret = "s3cr3t-value-77a1";

    let mut put = node
        .cli()
        .args(["secret", "put", "API_KEY", "--dir"])
        .arg(project.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    put.stdin
        .take()
        .unwrap()
        .write_all(format!("{secret}\n").as_bytes())
        .unwrap();
    let output = put.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Secrets win over vars, and the running worker sees it at once.
    let tail = Tail::start(&node, &["--name", "app"]);
    let reply = node.get("app.localhost", "/env?name=API_KEY");
    assert_eq!(reply.text(), secret);
    let events = tail.events(1);
    assert!(!format!("{events:?}").contains(secret), "{events:?}");
    let listed = succeed(node.cli().args(["secret", "list", "--name", "app"]));
    assert_eq!(listed.trim(), "API_KEY");

    let mut seen = String::new();
    for path in [
        "/v1/workers",
        "/v1/workers/app",
        "/v1/workers/app/versions",
        "/v1/workers/app/secrets",
    ] {
        seen.push_str(&node.admin_call("GET", path, Some(TOKEN), None).text());
    }
    seen.push_str(&node.stdout().join("\n"));
    seen.push_str(&node.stderr().join("\n"));
    assert!(seen.contains("API_KEY"), "the name is shown");
    assert!(!seen.contains(secret), "the value leaked: {seen}");

    // Deleting it brings the var back.
    succeed(
        node.cli()
            .args(["secret", "delete", "API_KEY", "--name", "app"]),
    );
    assert_eq!(
        node.get("app.localhost", "/env?name=API_KEY").text(),
        "from-vars"
    );
    let missing = node
        .cli()
        .args(["secret", "delete", "API_KEY", "--name", "app"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no secret named `API_KEY`"));
}

#[test]
fn requests_go_to_the_most_specific_route_then_to_name_under_the_domain() {
    let node = Node::start(&["--domain", "edge.test"]);
    let site = worker(
        "site",
        &fixtures(),
        "routes = [\"example.test\", \"*.example.test/*\"]\n[vars]\nVERSION = \"site\"\n",
    );
    let api = worker(
        "api",
        &fixtures(),
        "routes = [\"example.test/api/*\"]\n[vars]\nVERSION = \"api\"\n",
    );
    deploy(&node, site.path(), &[]);
    deploy(&node, api.path(), &[]);

    let answer = |host: &str, path: &str| {
        let reply = node.get(host, path);
        (reply.status, reply.text())
    };
    // Which worker served a request shows in the node's request log.
    let served_by = |host: &str, path: &str| {
        answer(host, path);
        let needle = format!("GET {path} ");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let lines = node.stderr();
            if let Some(line) = lines.iter().find(|l| l.contains(&needle)) {
                let worker = line.split("worker=").nth(1).unwrap_or("");
                return worker.split_whitespace().next().unwrap_or("").to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in {lines:#?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    assert_eq!(served_by("example.test", "/api/one"), "api");
    assert_eq!(served_by("Example.Test:8080", "/home"), "site");
    // `api` routes the exact host only; the wildcard catches subdomains.
    assert_eq!(served_by("www.example.test", "/api/two"), "site");
    assert_eq!(served_by("example.test", "/apix"), "site");

    assert_eq!(
        answer("api.edge.test", "/env?name=VERSION"),
        (200, "api".into())
    );
    assert_eq!(
        answer("site.edge.test", "/env?name=VERSION"),
        (200, "site".into())
    );
    let (status, why) = answer("nothing.test", "/");
    assert_eq!(status, 404);
    assert!(why.contains("no worker serves nothing.test/"), "{why}");
    assert!(why.contains("NAME.edge.test"), "{why}");
}

#[test]
fn a_bad_node_config_stops_the_node_with_the_key_and_the_fix() {
    let output = common::verge()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env_remove("VERGE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("no admin token is set"), "{error}");
    assert!(error.contains("VERGE_ADMIN_TOKEN"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\n[ceilings]\ncpu = 10\n").unwrap();
    let output = common::verge()
        .args(["serve", "--config"])
        .arg(&file)
        .env("VERGE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("node.toml:3"), "{error}");
    assert!(error.contains("unknown key `cpu`"), "{error}");
    assert!(error.contains("did you mean `cpu_ms`?"), "{error}");
}

#[test]
fn tail_streams_requests_after_it_connects_filtered_on_the_node() {
    let node = Node::start(&[]);
    let project = worker("app", &fixtures(), "");
    deploy(&node, project.path(), &[]);
    assert_eq!(
        node.get("app.localhost", "/env").status,
        200,
        "before the tail"
    );

    let filtered = Tail::start(
        &node,
        &["--name", "app", "--status", "2xx", "--path", "/env"],
    );
    let logs = Tail::start(&node, &["--name", "app", "--search", "saying hello"]);
    let ids: Vec<String> = ["/env", "/plain", "/nope", "/hello", "/env", "/hello"]
        .into_iter()
        .map(|path| node.get("app.localhost", path).request_id())
        .collect();

    let events = filtered.events_through(&ids[4]);
    assert_eq!(events.len(), 2, "{events:#?}");
    for event in &events {
        assert_eq!(event["path"], "/env");
        assert_eq!(event["status"], 200);
        assert_eq!(event["method"], "GET");
        assert_eq!(event["worker"], "app");
        assert!(event["cpu_ms"].as_f64().unwrap() > 0.0, "{event}");
        assert!(event["wall_ms"].as_f64().unwrap() >= event["cpu_ms"].as_f64().unwrap());
        assert_eq!(event["id"].as_str().unwrap().len(), 16);
    }

    let events = logs.events_through(&ids[5]);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["path"], "/hello");
    assert_eq!(events[0]["id"], ids[3].as_str());
    assert_eq!(
        events[0]["logs"][0],
        json!({ "stream": "stdout", "text": "saying hello" })
    );
    assert_eq!(events[0]["logs"][1]["stream"], "stderr");

    // A failing request carries its termination.
    let failures = Tail::start(&node, &["--name", "app", "--status", "5xx"]);
    node.get("app.localhost", "/panic");
    let events = failures.events(1);
    assert_eq!(events[0]["termination"]["reason"], "panic");
    // The panic's message, not just its location; no backtrace hint that
    // a guest cannot follow.
    let message = events[0]["termination"]["message"].as_str().unwrap();
    assert!(
        message.contains("panicked at") && message.contains("boom from the fixtures"),
        "{message}"
    );
    assert!(
        !events[0].to_string().contains("RUST_BACKTRACE"),
        "{}",
        events[0]
    );

    let bad = node.admin_call("GET", "/v1/workers/app/tail?status=200", Some(TOKEN), None);
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("status class"), "{}", bad.text());
    let unknown = node.admin_call("GET", "/v1/workers/nope/tail", Some(TOKEN), None);
    assert_eq!(unknown.status, 404);
}

#[test]
fn metrics_count_requests_errors_time_and_compiles() {
    let node = Node::start(&[]);
    let project = worker("app", &fixtures(), "");
    deploy(&node, project.path(), &[]);
    for _ in 0..3 {
        assert_eq!(node.get("app.localhost", "/plain").status, 200);
    }
    assert_eq!(node.get("app.localhost", "/nope").status, 404);
    assert_eq!(node.get("app.localhost", "/panic").status, 500);

    let metrics = node.admin_call("GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        value("verge_requests_total{worker=\"app\",status=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        value("verge_requests_total{worker=\"app\",status=\"4xx\"}"),
        1.0
    );
    assert_eq!(
        value("verge_requests_total{worker=\"app\",status=\"5xx\"}"),
        1.0
    );
    assert_eq!(
        value("verge_request_errors_total{worker=\"app\",reason=\"panic\"}"),
        1.0
    );
    assert_eq!(
        value("verge_request_cpu_seconds_count{worker=\"app\"}"),
        5.0
    );
    assert!(value("verge_request_duration_seconds_sum{worker=\"app\"}") > 0.0);
    assert_eq!(value("verge_component_loads_total{result=\"miss\"}"), 1.0);
    assert_eq!(value("verge_workers"), 1.0);
    assert_eq!(value("verge_instances_busy"), 0.0);
}

#[test]
fn every_documented_operation_is_served_and_nothing_else() {
    let node = Node::start(&[]);
    let doc = json_of(&node.admin_call("GET", "/openapi.json", None, None));
    let mut operations = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{hash}", &"0".repeat(64))
            .replace("{name}", "app")
            .replace("{secret}", "TOKEN");
        for (method, operation) in methods.as_object().unwrap() {
            operations += 1;
            let open = operation["security"] == json!([]);
            let reply = node.admin_call(&method.to_uppercase(), &concrete, None, None);
            if open {
                assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
            } else {
                // The token check runs on matched routes only: 401 means the
                // route exists for this method.
                assert_eq!(reply.status, 401, "{method} {path}: {}", reply.text());
            }
        }
    }
    assert!(operations >= 14, "{operations}");
    // A route the document does not have is not served.
    let unknown = node.admin_call("GET", "/v1/nothing", Some(TOKEN), None);
    assert_eq!(unknown.status, 404);
    assert_eq!(json_of(&unknown)["error"]["code"], "not_found");
    let wrong_method = node.admin_call("PATCH", "/v1/workers", Some(TOKEN), None);
    assert_eq!(wrong_method.status, 405);
}

#[test]
fn verge_kv_remote_reaches_the_same_store_the_guests_use() {
    let node = Node::start(&[]);
    let kv = |args: &[&str]| {
        let mut command = node.cli();
        command.args(["kv", "--remote"]).args(args);
        command
    };
    // Deploying a worker bound to a namespace that does not exist creates
    // it, and says so; the next deploy finds it there.
    let project = worker(
        "store",
        std::path::Path::new(KV_FIXTURE),
        "[[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"shared\"\n",
    );
    let first = deploy(&node, project.path(), &[]);
    assert!(
        first.contains("Created KV namespace `shared` (binding KV)"),
        "{first}"
    );
    assert_eq!(succeed(&mut kv(&["namespace", "list"])).trim(), "shared");
    rewrite(
        project.path(),
        "store",
        std::path::Path::new(KV_FIXTURE),
        "[vars]\nV = \"2\"\n[[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"shared\"\n",
    );
    let second = deploy(&node, project.path(), &[]);
    assert!(!second.contains("Created"), "{second}");

    // The CLI writes, the guest reads; the guest writes, the CLI reads.
    succeed(&mut kv(&[
        "key",
        "put",
        "dir/greeting",
        "hello there",
        "-n",
        "shared",
        "--metadata",
        "{\"v\":1}",
        "--ttl",
        "3600",
    ]));
    let reply = node.get("store.localhost", "/get?key=dir/greeting");
    assert_eq!(reply.text(), "hello there");
    assert_eq!(reply.headers["x-metadata"], "{\"v\":1}");
    assert_eq!(
        node.get("store.localhost", "/put?key=from-guest&bytes=3")
            .status,
        200
    );
    assert_eq!(
        succeed(&mut kv(&["key", "get", "from-guest", "-n", "shared"])),
        "vvv"
    );
    let info: Value = serde_json::from_str(&succeed(&mut kv(&[
        "key",
        "get",
        "dir/greeting",
        "-n",
        "shared",
        "--info",
    ])))
    .unwrap();
    assert_eq!(info["metadata"], json!({ "v": 1 }));
    assert!(info["expiration"].as_u64().unwrap() > 0);

    let bulk = tempfile::tempdir().unwrap();
    let pairs = bulk.path().join("pairs.json");
    std::fs::write(
        &pairs,
        json!([
            { "key": "b1", "value": "one" },
            { "key": "b2", "value": "AAEC", "base64": true },
        ])
        .to_string(),
    )
    .unwrap();
    succeed(kv(&["bulk", "put"]).arg(&pairs).args(["-n", "shared"]));
    assert_eq!(node.get("store.localhost", "/get?key=b1").text(), "one");
    assert_eq!(
        node.get("store.localhost", "/get?key=b2").body.unwrap(),
        [0u8, 1, 2]
    );

    let listed: Value = serde_json::from_str(&succeed(&mut kv(&[
        "key", "list", "-n", "shared", "--limit", "2",
    ])))
    .unwrap();
    assert_eq!(key_names(&listed), ["b1", "b2"]);
    assert_eq!(listed["list_complete"], false);
    let rest: Value = serde_json::from_str(&succeed(&mut kv(&[
        "key",
        "list",
        "-n",
        "shared",
        "--cursor",
        listed["cursor"].as_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(key_names(&rest), ["dir/greeting", "from-guest"]);

    succeed(&mut kv(&["key", "delete", "dir/greeting", "-n", "shared"]));
    assert_eq!(
        node.get("store.localhost", "/get?key=dir/greeting").status,
        404
    );
    let missing = kv(&["key", "get", "dir/greeting", "-n", "shared"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no key `dir/greeting`"));
    // Limits are the guests' limits.
    let long = "k".repeat(600);
    let refused = kv(&["key", "put", &long, "v", "-n", "shared"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("above the limit of 512"));
    let unknown = kv(&["key", "get", "x", "-n", "nope"]).output().unwrap();
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("namespace `nope` does not exist"));
    // The node's `namespace_not_found` code is what the CLI goes by.
    let gone = kv(&["namespace", "delete", "nope"]).output().unwrap();
    assert!(!gone.status.success());
    let gone = String::from_utf8_lossy(&gone.stderr);
    assert!(
        gone.contains("`verge kv namespace list` shows those that do"),
        "{gone}"
    );
}

#[test]
fn the_cli_finds_the_node_in_flags_environment_or_its_config_file() {
    let node = Node::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut command = common::verge();
        command
            .args(args)
            .env_remove("VERGE_NODE")
            .env_remove("VERGE_TOKEN")
            .env("VERGE_CONFIG_HOME", home.path());
        command.output().unwrap()
    };
    let none = cli(&["versions", "--name", "app"]);
    assert!(!none.status.success());
    let error = String::from_utf8_lossy(&none.stderr);
    assert!(error.contains("no node to talk to"), "{error}");
    assert!(error.contains("VERGE_NODE"), "{error}");

    let no_token = cli(&["versions", "--name", "app", "--node", &node.admin]);
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("no admin token"));

    std::fs::write(
        home.path().join("config.toml"),
        format!("node = \"{}\"\ntoken = \"{TOKEN}\"\n", node.admin),
    )
    .unwrap();
    let from_file = cli(&["secret", "list", "--name", "app"]);
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    // A flag wins over the file.
    let flag = cli(&[
        "secret",
        "list",
        "--name",
        "app",
        "--token",
        "wrong-token-0123456789",
    ]);
    assert!(String::from_utf8_lossy(&flag.stderr).contains("not one of this node's admin tokens"));
}

/// Sends `head` (request line and headers, without the blank line) as it is
/// written, for paths an HTTP client would tidy; returns the whole reply.
fn raw(node: &Node, head: &str) -> String {
    use std::io::{Read, Write};
    let address = node.data.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{head}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

/// [`raw`]'s status.
fn raw_status(node: &Node, head: &str) -> u16 {
    let reply = raw(node, head);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"))
}

#[test]
fn clients_cannot_fire_a_cron_trigger_however_they_write_the_path() {
    let node = Node::start(&[]);
    let project = worker(
        "uptime",
        &common::example_component("uptime"),
        "[outbound]\nallow = [\"example.com\"]\n\
         [[kv_namespaces]]\nbinding = \"UPTIME\"\nnamespace = \"uptime\"\n\
         [triggers]\ncrons = [\"0 0 1 1 *\"]\n",
    );
    deploy(&node, project.path(), &[]);
    let targets = http::Request::put(format!("{}/targets", node.data))
        .header("host", "uptime.localhost")
        .body(r#"{"urls": ["http://refused.invalid/"]}"#)
        .unwrap();
    let set = common::Reply::from(common::agent().run(targets));
    assert_eq!(set.status, 200, "{}", set.text());

    let query = "?cron=0+0+1+1+*&time=1800000000000";
    for path in [
        "/.well-known/verge/scheduled",
        "//.well-known/verge/scheduled",
        "/./.well-known/verge/scheduled",
        "/%2ewell-known/verge/scheduled",
        "/.WELL-KNOWN/verge/scheduled",
    ] {
        for header in ["", "\r\nverge-scheduled: 1"] {
            let head = format!("POST {path}{query} HTTP/1.1\r\nhost: uptime.localhost{header}");
            assert_eq!(raw_status(&node, &head), 404, "{head}");
        }
    }
    let latest = node.get("uptime.localhost", "/latest");
    assert_eq!(
        latest.status,
        404,
        "a forged run stored results: {}",
        latest.text()
    );

    // The node's own run still reaches the handler.
    succeed(node.cli().args(["cron", "run", "--name", "uptime"]));
    let latest = node.get("uptime.localhost", "/latest");
    assert_eq!(latest.status, 200, "{}", latest.text());
    assert!(
        latest.text().contains("refused.invalid"),
        "{}",
        latest.text()
    );
}

#[test]
fn the_scheduled_header_never_reaches_a_guest_from_a_client() {
    let node = Node::start(&[]);
    let project = worker("probe", &fixtures(), "");
    deploy(&node, project.path(), &[]);
    let reply = raw(
        &node,
        "GET /headers HTTP/1.1\r\nhost: probe.localhost\r\nx-probe: kept\r\nverge-scheduled: 1",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-probe: kept"), "{reply}");
    assert!(!reply.contains("verge-scheduled"), "{reply}");
}

#[test]
fn guest_output_reaches_the_node_s_log_escaped() {
    let node = Node::start(&[]);
    let project = worker("noisy", &fixtures(), "");
    deploy(&node, project.path(), &[]);
    let reply = node.get("noisy.localhost", "/escapes");
    assert_eq!(reply.status, 200);
    let id = reply.request_id();
    common::node::eventually("the guest's lines in the log", || {
        node.stderr()
            .iter()
            .filter(|l| l.contains(&id))
            .any(|l| l.contains("owned"))
    });
    for line in node.stderr().iter().filter(|l| l.contains(&id)) {
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
    }
}

#[test]
fn a_guest_s_own_request_id_is_kept_beside_the_node_s() {
    let node = Node::start(&[]);
    let project = worker("proxy", &fixtures(), "");
    deploy(&node, project.path(), &[]);
    let tail = Tail::start(&node, &["--name", "proxy"]);
    let own = node.get("proxy.localhost", "/own-request-id");
    assert_eq!(own.status, 200);
    assert_eq!(own.header("x-request-id"), Some("upstream-42"));
    let id = own.request_id();
    assert_ne!(id, "upstream-42");
    // The node's id is what its log and tail know the request by.
    assert_eq!(tail.events_through(&id).len(), 1);
    // A guest that sets none gets the node's in both.
    let plain = node.get("proxy.localhost", "/plain");
    assert_eq!(
        plain.header("x-request-id"),
        Some(plain.request_id().as_str())
    );
    // The guest sees the node's id, not one a client sent.
    let request = http::Request::get(format!("{}/headers", node.data))
        .header("host", "proxy.localhost")
        .header("x-request-id", "forged")
        .header("verge-request-id", "forged")
        .body(())
        .unwrap();
    let seen = common::Reply::from(common::agent().run(request));
    let id = seen.request_id();
    assert!(
        seen.text().contains(&format!("verge-request-id: {id}")),
        "{}",
        seen.text()
    );
    assert!(
        seen.text().contains(&format!("x-request-id: {id}")),
        "{}",
        seen.text()
    );
    assert!(!seen.text().contains("forged"), "{}", seen.text());
}

#[test]
fn the_data_dir_and_its_stores_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::start(&[]);
    let data = node.dir.path().join("data");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for file in ["kv.db", "control.db"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    // A store file an older version left readable is made owner-only.
    let dir = node.stop();
    let kv = dir.path().join("data/kv.db");
    std::fs::set_permissions(&kv, std::fs::Permissions::from_mode(0o644)).unwrap();
    let node = Node::start_in(dir, &[]);
    assert_eq!(mode(&node.dir.path().join("data/kv.db")), 0o600);
}
