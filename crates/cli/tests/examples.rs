//! The example workers, built with verge-sdk, served by a real `verge dev`
//! and driven over HTTP: the todo API, the shortener and the uptime checker
//! (outbound fetch with its allow-list and subrequest budget).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Dev, Reply, example_component, verge};
use serde_json::{Value, json};

fn body(reply: &Reply) -> Value {
    serde_json::from_slice(reply.body.as_ref().expect("body"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.text()))
}

fn error_code(reply: &Reply) -> String {
    body(reply)["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {}", reply.text()))
        .to_string()
}

fn post_json(dev: &Dev, path: &str, value: &Value) -> Reply {
    dev.send(
        "POST",
        path,
        &[("content-type", "application/json")],
        Some(&value.to_string()),
    )
}

#[test]
fn todo_api_crud_with_etags_and_errors() {
    todo_api_crud(&Dev::example("todo-api", &[]));
}

#[test]
fn todo_api_pages_through_kv_cursors() {
    todo_api_pages(&Dev::example("todo-api", &[]));
}

#[test]
fn shortener_redirects_counts_hits_and_expires_links() {
    shortener(
        &prebuilt("shortener", None, "ADMIN_TOKEN=\"s3cret-token\"\n", &[]),
        true,
    );
}

/// The examples' behaviour on the PostgreSQL store, each in a schema of its
/// own: the same checks as on SQLite.
#[test]
fn the_examples_behave_the_same_on_postgresql() {
    let schema = common::node::PgSchema::new();
    let store = [
        "--store",
        schema.url.as_str(),
        "--store-schema",
        schema.name.as_str(),
    ];
    let todo = Dev::example("todo-api", &store);
    todo_api_crud(&todo);
    drop(todo);
    let second = common::node::PgSchema::new();
    todo_api_pages(&Dev::example(
        "todo-api",
        &["--store", &second.url, "--store-schema", &second.name],
    ));
    shortener(
        &prebuilt("shortener", None, "ADMIN_TOKEN=\"s3cret-token\"\n", &store),
        false,
    );
}

fn todo_api_crud(dev: &Dev) {
    let created = post_json(dev, "/todos", &json!({"title": "  buy milk "}));
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("location"), Some("/todos/1"));
    let etag1 = created.header("etag").expect("etag").to_string();
    let todo = body(&created);
    assert_eq!(todo["id"], "1");
    assert_eq!(todo["title"], "buy milk");
    assert_eq!(todo["done"], false);
    assert_eq!(todo["created_at"], todo["updated_at"]);
    assert!(todo["created_at"].as_str().unwrap().ends_with('Z'));

    let shown = dev.get("/todos/1");
    assert_eq!(shown.status, 200);
    assert_eq!(shown.header("etag"), Some(etag1.as_str()));
    assert_eq!(body(&shown), todo);
    let length = shown.body.as_ref().unwrap().len().to_string();
    assert_eq!(shown.header("content-length"), Some(length.as_str()));
    let head = dev.send("HEAD", "/todos/1", &[], None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("etag"), Some(etag1.as_str()));
    assert_eq!(head.body.as_ref().unwrap().len(), 0);
    let cached = dev.send("GET", "/todos/1", &[("if-none-match", &etag1)], None);
    assert_eq!(cached.status, 304);

    // PUT replaces, but only from the version the client saw.
    let stale = dev.send(
        "PUT",
        "/todos/1",
        &[("if-match", "\"999999\"")],
        Some(r#"{"title": "buy oat milk", "done": true}"#),
    );
    assert_eq!(stale.status, 412, "{}", stale.text());
    assert_eq!(error_code(&stale), "precondition_failed");
    let replaced = dev.send(
        "PUT",
        "/todos/1",
        &[("if-match", &etag1)],
        Some(r#"{"title": "buy oat milk", "done": true}"#),
    );
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    let etag2 = replaced.header("etag").unwrap().to_string();
    assert_ne!(etag1, etag2);
    assert_eq!(body(&replaced)["title"], "buy oat milk");
    assert_eq!(body(&replaced)["done"], true);
    assert_eq!(body(&replaced)["created_at"], todo["created_at"]);
    let incomplete = dev.send("PUT", "/todos/1", &[], Some(r#"{"title": "x"}"#));
    assert_eq!(incomplete.status, 400);
    assert!(
        incomplete.text().contains("missing field `done`"),
        "{}",
        incomplete.text()
    );

    // PATCH merges; the first ETag is stale now.
    let stale = dev.send(
        "PATCH",
        "/todos/1",
        &[("if-match", &etag1)],
        Some(r#"{"done": false}"#),
    );
    assert_eq!(stale.status, 412);
    let patched = dev.send("PATCH", "/todos/1", &[], Some(r#"{"done": false}"#));
    assert_eq!(patched.status, 200);
    assert_eq!(body(&patched)["title"], "buy oat milk");
    assert_eq!(body(&patched)["done"], false);

    // Bad bodies are 400s that say what is wrong.
    let cases = [
        ("not json", "bad_request", "invalid JSON body"),
        ("", "bad_request", "empty"),
        (r#"{"title": ""}"#, "invalid", "must not be empty"),
        (
            r#"{"title": "x", "owner": "me"}"#,
            "bad_request",
            "unknown field `owner`",
        ),
        (r#"{"title": 7}"#, "bad_request", "invalid type"),
    ];
    for (sent, code, says) in cases {
        let reply = dev.send("POST", "/todos", &[], Some(sent));
        assert_eq!(reply.status, 400, "{sent}: {}", reply.text());
        assert_eq!(error_code(&reply), code, "{sent}");
        let message = body(&reply)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(says), "{sent}: {message}");
    }
    let long = "x".repeat(201);
    let reply = post_json(dev, "/todos", &json!({ "title": long }));
    assert_eq!(reply.status, 400);

    // Unknown ids and routes are 404s, a method a route lacks a 405.
    assert_eq!(dev.get("/todos/42").status, 404);
    assert_eq!(error_code(&dev.get("/todos/abc")), "not_found");
    assert_eq!(dev.get("/nothing/here").status, 404);
    let refused = dev.send("DELETE", "/todos", &[], None);
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("allow"), Some("GET, HEAD, POST"));
    assert_eq!(error_code(&refused), "method_not_allowed");

    let deleted = dev.send("DELETE", "/todos/1", &[], None);
    assert_eq!(deleted.status, 204);
    assert_eq!(dev.get("/todos/1").status, 404);
    assert_eq!(dev.send("DELETE", "/todos/1", &[], None).status, 404);

    // The request log shows the KV calls and the guest's own log line.
    dev.wait_line("INFO created todo 1");
    let entry = dev.log_entry("POST /todos 201");
    assert!(
        entry[0].contains("kv=2 ops/"),
        "increment and put: {entry:?}"
    );
    assert!(
        entry.iter().any(|l| l.contains("INFO created todo 1")),
        "{entry:?}"
    );
}

fn todo_api_pages(dev: &Dev) {
    for n in 1..=25 {
        let reply = post_json(dev, "/todos", &json!({ "title": format!("todo {n}") }));
        assert_eq!(reply.status, 201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/todos?limit=10&cursor={c}"),
            None => "/todos?limit=10".to_string(),
        };
        let reply = dev.get(&path);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = body(&reply);
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["title"].as_str().unwrap().to_string());
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (1..=25).map(|n| format!("todo {n}")).collect();
    assert_eq!(seen, expected, "every todo once, in creation order");
    assert_eq!(
        body(&dev.get("/todos"))["items"].as_array().unwrap().len(),
        20
    );

    for bad in [
        "/todos?limit=0",
        "/todos?limit=101",
        "/todos?limit=ten",
        "/todos?cursor=zz",
    ] {
        let reply = dev.get(bad);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
    }
}

/// Overwrites todo 1 with bytes that are not a todo, through the CLI on the
/// same store, so that reading it fails inside the handler.
fn corrupt_todo(dev: &Dev) {
    common::succeed(
        verge()
            .args(["kv", "--dir"])
            .arg(common::examples_dir().join("todo-api"))
            .arg("--data-dir")
            .arg(dev.dir.path())
            .args([
                "key",
                "put",
                "-n",
                "todos",
                "todo:000000000001",
                "{not a todo",
            ]),
    );
}

#[test]
fn a_handler_error_is_a_500_with_the_request_id_and_detail_only_when_opted_in() {
    for opted_in in [true, false] {
        let args: &[&str] = if opted_in {
            &[]
        } else {
            &["--no-error-detail"]
        };
        let dev = Dev::example("todo-api", args);
        assert_eq!(
            post_json(&dev, "/todos", &json!({"title": "x"})).status,
            201
        );
        corrupt_todo(&dev);

        let reply = dev.get("/todos/1");
        assert_eq!(reply.status, 500, "{}", reply.text());
        let error = &body(&reply)["error"];
        assert_eq!(error["code"], "internal");
        assert_eq!(error["message"], "internal error");
        assert_eq!(error["request_id"], reply.request_id());
        if opted_in {
            let detail = error["detail"].as_str().expect("detail in verge dev");
            assert!(detail.contains("cannot be decoded"), "{detail}");
        } else {
            assert!(error.get("detail").is_none(), "{}", reply.text());
            assert!(!reply.text().contains("decoded"), "{}", reply.text());
        }
        // Either way the cause is in the request's log, under the request.
        let line = dev.wait_line("ERROR 500 internal");
        assert!(line.contains("cannot be decoded"), "{line}");
        let entry = dev.log_entry("GET /todos/1 500");
        assert!(entry.contains(&line), "{entry:?}");
    }
}

/// An agent that shows redirects instead of following them.
fn no_redirects() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// Serves example `name`'s built component from a temporary project with
/// `manifest` (the example's own when `None`) and a `.dev.vars` file,
/// `verge dev` taking `args`.
fn prebuilt(name: &str, manifest: Option<&str>, dev_vars: &str, args: &[&str]) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let manifest = match manifest {
        Some(text) => text.to_string(),
        None => {
            std::fs::read_to_string(common::examples_dir().join(name).join("verge.toml")).unwrap()
        }
    };
    let component = example_component(name);
    std::fs::write(
        dir.path().join("verge.toml"),
        format!("component = {:?}\n{manifest}", component.to_str().unwrap()),
    )
    .unwrap();
    std::fs::write(dir.path().join(".dev.vars"), dev_vars).unwrap();
    Dev::start(dir, args)
}

#[test]
fn a_missing_binding_or_secret_names_what_to_add() {
    let dev = prebuilt("todo-api", Some("name = \"todo-api\"\n"), "", &[]);
    let reply = dev.get("/todos");
    assert_eq!(reply.status, 500);
    let detail = body(&reply)["error"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("no KV namespace is bound as `TODOS`")
            && detail.contains("[[kv_namespaces]] binding = \"TODOS\""),
        "{detail}"
    );

    let dev = prebuilt("shortener", None, "# no secrets yet\n", &[]);
    let reply = dev.send(
        "DELETE",
        "/links/abc",
        &[("authorization", "Bearer x")],
        None,
    );
    assert_eq!(reply.status, 500);
    let detail = body(&reply)["error"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("secret `ADMIN_TOKEN` is not set"),
        "{detail}"
    );
    assert!(detail.contains(".dev.vars"), "{detail}");

    // A malformed .dev.vars stops verge dev with the line to fix.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("verge.toml"),
        format!(
            "name = \"x\"\ncomponent = {:?}\n",
            example_component("hello").to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join(".dev.vars"), "A=1\nnot a secret\n").unwrap();
    let stderr = common::dev_error(dir.path());
    assert!(
        stderr.contains(".dev.vars:2: `not a secret` has no `=`"),
        "{stderr}"
    );
}

/// `local`: the store is the SQLite file under the project, which the test
/// also reads with `verge kv` to see the link's expiration.
fn shortener(dev: &Dev, local: bool) {
    let created = post_json(
        dev,
        "/links",
        &json!({"url": "https://example.com/docs?page=2", "ttl": 3600}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let link = body(&created);
    let slug = link["slug"].as_str().unwrap().to_string();
    assert_eq!(slug.len(), 7);
    assert_eq!(link["short_url"], format!("http://127.0.0.1:8787/{slug}"));
    assert_eq!(link["hits"], 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires_at = link["expires_at"].as_u64().unwrap();
    assert!(
        (now + 3590..=now + 3610).contains(&expires_at),
        "{expires_at} vs {now}"
    );

    // Hits from many clients at once are all counted.
    let url = dev.url(&format!("/{slug}"));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let reply = Reply::from(no_redirects().get(&url).call());
                    assert_eq!(reply.status, 302);
                    assert_eq!(
                        reply.header("location"),
                        Some("https://example.com/docs?page=2")
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(body(&dev.get(&format!("/links/{slug}")))["hits"], 40);

    // The link's KV entry carries the expiration, so the store forgets it.
    if local {
        let info = common::succeed(verge().args(["kv", "--dir"]).arg(dev.dir.path()).args([
            "key",
            "get",
            "-n",
            "links",
            &format!("link:{slug}"),
            "--info",
        ]));
        let info: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["expiration"], expires_at);
    }

    let custom = post_json(
        dev,
        "/links",
        &json!({"url": "http://example.org/", "slug": "docs"}),
    );
    assert_eq!(custom.status, 201);
    let taken = post_json(
        dev,
        "/links",
        &json!({"url": "http://example.org/2", "slug": "docs"}),
    );
    assert_eq!(taken.status, 409);
    assert_eq!(error_code(&taken), "conflict");
    for bad in [
        json!({"url": "ftp://example.com/"}),
        json!({"url": "/relative"}),
        json!({"url": "https://example.com/", "ttl": 10}),
        json!({"url": "https://example.com/", "slug": "a b"}),
    ] {
        let reply = post_json(dev, "/links", &bad);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
    }

    // Deleting takes the admin token, a secret from .dev.vars.
    let path = format!("/links/{slug}");
    for wrong in [&[][..], &[("authorization", "Bearer s3cret-tokeN")][..]] {
        let reply = dev.send("DELETE", &path, wrong, None);
        assert_eq!(reply.status, 401);
        assert_eq!(error_code(&reply), "unauthorized");
    }
    assert_eq!(dev.get(&path).status, 200);
    let deleted = dev.send(
        "DELETE",
        &path,
        &[("authorization", "Bearer s3cret-token")],
        None,
    );
    assert_eq!(deleted.status, 204);
    assert_eq!(dev.get(&format!("/{slug}")).status, 404);
    assert_eq!(dev.get("/unknown").status, 404);
}

/// An HTTP server on a free port that answers every request with 200 and
/// counts them. It is hyper, so connections are kept alive and closed the
/// way a real upstream closes them.
fn upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                let service = hyper::service::service_fn(move |_request| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
    });
    (port, served)
}

fn uptime(extra: &str) -> Dev {
    // Fifty fetches cost the guest ~30 ms of CPU on an idle machine; these
    // tests are about the subrequest budget, so CPU gets room to spare.
    let manifest = format!("name = \"uptime\"\n{extra}");
    prebuilt("uptime", Some(&manifest), "", &["--max-cpu-ms", "1000"])
}

/// `count` distinct URLs on the test upstream.
fn upstream_urls(port: u16, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| format!("http://127.0.0.1:{port}/{n}"))
        .collect()
}

fn check(dev: &Dev, urls: &[String]) -> Vec<Value> {
    let reply = post_json(dev, "/check", &json!({ "urls": urls }));
    assert_eq!(reply.status, 200, "{}", reply.text());
    body(&reply)["results"].as_array().unwrap().clone()
}

/// `check` for tests that count what reached the upstream. Under the full
/// suite's load, about one loopback fetch in a few hundred has ended in
/// "connection reset" from the node's HTTP client (cause not found yet, with
/// a hand-written and with a hyper upstream alike; never seen with the test
/// run alone); that one case alone gets the batch sent again, up to twice,
/// with the count started over. Any other failure fails the test.
fn check_counted(dev: &Dev, urls: &[String], served: &AtomicUsize) -> Vec<Value> {
    let before = served.load(Ordering::SeqCst);
    let mut results = check(dev, urls);
    for _ in 0..2 {
        let reset = results.iter().any(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.ends_with("connection reset"))
        });
        if !reset {
            break;
        }
        eprintln!("a fetch was reset; sending the batch again");
        served.store(before, Ordering::SeqCst);
        results = check(dev, urls);
    }
    results
}

#[test]
fn fetch_reaches_allowed_hosts_only_and_the_51st_subrequest_is_refused() {
    let (port, served) = upstream();
    let dev = uptime("[outbound]\nallow = [\"127.0.0.1:*\"]\n[limits]\ncpu_ms = 1000\n");

    let urls = upstream_urls(port, 51);
    let results = check_counted(&dev, &urls, &served);
    assert_eq!(results.len(), 51);
    for result in &results[..50] {
        assert_eq!(result["status"], 200, "{result}");
    }
    let refused = results[50]["error"].as_str().expect("the 51st fails");
    assert!(
        refused.contains("subrequest limit reached: 50"),
        "{refused}"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        50,
        "the 51st never left the node"
    );

    // The budget is per request: the next request has its own.
    let results = check_counted(&dev, &urls[..2], &served);
    assert_eq!(results[1]["status"], 200);

    // A host not on the list is refused before any connection, with a fix.
    let before = served.load(Ordering::SeqCst);
    let results = check(
        &dev,
        &[
            format!("http://localhost:{port}/"),
            "https://example.com/".into(),
        ],
    );
    for result in &results {
        let error = result["error"].as_str().expect("denied");
        assert!(
            error.contains("denied") && error.contains("[outbound]"),
            "{error}"
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), before);
    let line = dev.wait_line(&format!(
        "outbound request to http://localhost:{port}/ denied"
    ));
    assert!(
        line.contains("add it to `allow` under [outbound] in verge.toml"),
        "{line}"
    );
}

#[test]
fn the_subrequest_budget_follows_the_manifest() {
    let (port, served) = upstream();
    let dev = uptime("[outbound]\nallow = [\"127.0.0.1:*\"]\n[limits]\nsubrequests = 3\n");
    let urls = upstream_urls(port, 4);
    let results = check_counted(&dev, &urls, &served);
    assert_eq!(results[2]["status"], 200);
    assert!(
        results[3]["error"]
            .as_str()
            .unwrap()
            .contains("limit reached: 3")
    );
    assert_eq!(served.load(Ordering::SeqCst), 3);

    // No [outbound] at all: nothing may leave.
    let closed = uptime("");
    let results = check(&closed, &urls[..1]);
    assert!(results[0]["error"].as_str().unwrap().contains("denied"));
    assert_eq!(served.load(Ordering::SeqCst), 3);
}

#[test]
fn uptime_checks_its_targets_on_each_tick() {
    let (port, _served) = upstream();
    // A yearly schedule: in this test the tick is fired by hand.
    let dev = uptime(
        "[outbound]\nallow = [\"127.0.0.1:*\"]\n\
         [[kv_namespaces]]\nbinding = \"UPTIME\"\nnamespace = \"uptime\"\n\
         [triggers]\ncrons = [\"0 0 1 1 *\"]\n",
    );
    let none = dev.get("/latest");
    assert_eq!(none.status, 404, "{}", none.text());
    // An empty target list is a tick that checks nothing.
    let fire = || {
        dev.send(
            "POST",
            "/.well-known/verge/scheduled?cron=0+0+1+1+*&time=1800000000000",
            &[],
            None,
        )
    };
    assert_eq!(fire().status, 204);
    assert_eq!(dev.get("/latest").status, 404);

    let urls = upstream_urls(port, 1);
    let set = dev.send(
        "PUT",
        "/targets",
        &[("content-type", "application/json")],
        Some(&json!({ "urls": urls }).to_string()),
    );
    assert_eq!(set.status, 200, "{}", set.text());
    let mut latest = Value::Null;
    // One retry for the rare loopback reset described at `check_counted`.
    for _ in 0..2 {
        let fired = fire();
        assert_eq!(fired.status, 204, "{}", fired.text());
        latest = body(&dev.get("/latest"));
        let reset = latest["results"][0]["error"]
            .as_str()
            .is_some_and(|e| e.ends_with("connection reset"));
        if !reset {
            break;
        }
    }
    assert_eq!(latest["checked_at"], 1_800_000_000_000u64, "{latest}");
    assert_eq!(latest["results"][0]["url"], urls[0].as_str(), "{latest}");
    assert_eq!(latest["results"][0]["status"], 200, "{latest}");
    dev.wait_line("checked 1 URLs at 1800000000000: 0 down");
    // Bad targets are a 400 from the SDK, and the run by hand needs a schedule.
    let bad = dev.send("PUT", "/targets", &[], Some("{\"urls\": 7}"));
    assert_eq!(bad.status, 400);
    let unnamed = dev.send("POST", "/.well-known/verge/scheduled", &[], None);
    assert_eq!(unnamed.status, 400, "{}", unnamed.text());
}

/// `POST /check` on a node's uptime worker.
fn node_check(node: &common::node::Node, urls: &[String]) -> Vec<Value> {
    let request = http::Request::post(format!("{}/check", node.data))
        .header("host", "uptime.localhost")
        .header("content-type", "application/json")
        .body(json!({ "urls": urls }).to_string())
        .unwrap();
    let reply = Reply::from(common::agent().run(request));
    assert_eq!(reply.status, 200, "{}", reply.text());
    body(&reply)["results"].as_array().unwrap().clone()
}

#[test]
fn a_node_keeps_workers_off_loopback_private_and_metadata_addresses_whatever_they_allow() {
    use common::node::{Node, deploy, worker};
    let (port, served) = upstream();
    // The worker allows every name it tries: the node's policy is what
    // stands between it and the node's own network.
    let manifest = "[outbound]\nallow = [\"127.0.0.1:*\", \"localhost:*\", \"169.254.169.254\", \"10.0.0.1\"]\n";
    let targets = vec![
        format!("http://127.0.0.1:{port}/"),
        // A name that passes the allow-list and resolves to loopback: the
        // address is what counts.
        format!("http://localhost:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
    ];
    let node = Node::start(&["--max-cpu-ms", "1000"]);
    let project = worker("uptime", &example_component("uptime"), manifest);
    deploy(&node, project.path(), &[]);
    let results = node_check(&node, &targets);
    for result in &results {
        let error = result["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{result}"));
        assert!(error.contains("not let workers reach"), "{result}");
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "a refused fetch reached the upstream"
    );
    common::node::eventually("the reason in the node's log", || {
        node.stderr()
            .iter()
            .any(|l| l.contains("resolves to 127.0.0.1, a loopback address"))
    });
    drop(node);

    // An operator opens a network on purpose.
    let node = Node::start(&[
        "--max-cpu-ms",
        "1000",
        "--outbound-allow-network",
        "127.0.0.0/8",
    ]);
    let project = worker("uptime", &example_component("uptime"), manifest);
    deploy(&node, project.path(), &[]);
    let results = node_check(&node, &targets[..1]);
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    // TLS to a server that does not speak it is an error for the guest.
    let results = node_check(&node, &[format!("https://127.0.0.1:{port}/")]);
    let error = results[0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{results:?}"));
    assert!(error.starts_with("outbound request failed"), "{error}");
    let results = node_check(&node, &targets[2..3]);
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("not let workers reach"),
        "{results:?}"
    );
    common::node::eventually("the metadata address refused still", || {
        node.stderr()
            .iter()
            .any(|l| l.contains("resolves to 169.254.169.254, a link-local address"))
    });
}
