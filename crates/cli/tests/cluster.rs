//! Nodes sharing one PostgreSQL: the same workers and KV on every node,
//! deploys, rollbacks, secrets and deletes through one reaching the others
//! (pushed or read from the change log), a node cut off from the database
//! or killed coming back with what changed, each cron tick run once; and
//! behind a load balancer, any node serves any worker, and when one node
//! dies the balancer's next try lands on another.
//!
//! The balancer is nginx running docs/cluster/nginx.conf wherever nginx is
//! installed, and always in CI (`VERGE_TEST_NGINX=require`, which
//! `.ci/run` sets: a missing nginx then fails the test). Elsewhere the test
//! runs a small round-robin TCP balancer of its own and says so, so the
//! suite needs nothing beyond PostgreSQL; the nginx.conf check is then what
//! did not run, and the test's output names it.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::node::{
    KillOnDrop, Node, PgSchema, TOKEN, Tail, deploy, eventually, fixtures, json_of, key_names,
    rewrite, serve_refused, two_nodes_on_postgres, version_of, worker,
};
use common::{KV_FIXTURE, Reply, agent, succeed};
use serde_json::Value;

/// docs/cluster/nginx.conf with this test's ports: nginx on `listen`, the
/// nodes' data planes as the upstream servers.
fn nginx_config(listen: u16, nodes: &[&str]) -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cluster/nginx.conf"),
    )
    .unwrap();
    let servers: String = nodes
        .iter()
        .map(|url| {
            let address = url.trim_start_matches("http://");
            format!("        server {address} max_fails=1 fail_timeout=5s;\n")
        })
        .collect();
    let mut out = String::new();
    let mut replaced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("server 127.0.0.1:") {
            if !replaced {
                out.push_str(&servers);
                replaced = true;
            }
        } else if line.trim() == "listen 80;" {
            out.push_str(&format!("        listen 127.0.0.1:{listen};\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(replaced, "the example config lost its upstream servers");
    out
}

/// nginx's master process, stopped with SIGTERM (which takes its workers
/// down with it; SIGKILL would orphan them).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A request through the balancer, on a connection of its own (so each
/// one is balanced, whichever balancer runs).
fn through(port: u16, host: &str, path: &str) -> Reply {
    let request = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", host)
        .header("connection", "close")
        .body(())
        .unwrap();
    Reply::from(agent().run(request))
}

/// nginx as the test runs it: found on PATH (or at VERGE_TEST_NGINX), and
/// required when VERGE_TEST_NGINX is `require`.
fn find_nginx() -> Option<PathBuf> {
    let setting = std::env::var("VERGE_TEST_NGINX").unwrap_or_default();
    if !setting.is_empty() && setting != "require" {
        return Some(PathBuf::from(setting));
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() && setting == "require" {
        panic!(
            "VERGE_TEST_NGINX=require but nginx is not installed: \
             apt-get install nginx-light (the check of docs/cluster/nginx.conf needs it)"
        );
    }
    found
}

/// The balancer in front of the nodes: nginx with the documented config,
/// or the test's own.
struct Balancer {
    // Held for their Drop: nginx stops before its prefix directory goes.
    _nginx: Option<(Nginx, tempfile::TempDir)>,
    _own: Option<OwnBalancer>,
}

impl Balancer {
    fn start(upstreams: &[&str]) -> (Balancer, u16) {
        let port = free_port();
        match find_nginx() {
            Some(nginx) => {
                eprintln!(
                    "load balancer: {} with docs/cluster/nginx.conf",
                    nginx.display()
                );
                let prefix = tempfile::tempdir().unwrap();
                std::fs::write(
                    prefix.path().join("nginx.conf"),
                    nginx_config(port, upstreams),
                )
                .unwrap();
                let child = Command::new(&nginx)
                    .arg("-p")
                    .arg(prefix.path())
                    .args(["-e", "stderr", "-c", "nginx.conf", "-g", "daemon off;"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {} ({e})", nginx.display()));
                let balancer = Balancer {
                    _nginx: Some((Nginx(child), prefix)),
                    _own: None,
                };
                (balancer, port)
            }
            None => {
                // Straight to stderr, past the test harness's capture: a
                // check that did not run is said even when the test passes.
                let _ = writeln!(
                    std::io::stderr(),
                    "\nNOTE: docs/cluster/nginx.conf was NOT checked: nginx is not installed \
                     (apt-get install nginx-light; CI installs it and checks it). The cluster \
                     test ran behind its own round-robin balancer instead."
                );
                let own = OwnBalancer::start(upstreams);
                let port = own.port;
                let balancer = Balancer {
                    _nginx: None,
                    _own: Some(own),
                };
                (balancer, port)
            }
        }
    }
}

/// Round robin over the upstreams, one TCP connection at a time: a
/// connection that an upstream refuses goes to the next one, as nginx's
/// `proxy_next_upstream error` does.
struct OwnBalancer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl OwnBalancer {
    fn start(upstreams: &[&str]) -> OwnBalancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstreams: Vec<String> = upstreams
            .iter()
            .map(|u| u.trim_start_matches("http://").to_string())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let first = next.fetch_add(1, Ordering::Relaxed);
                let upstream = (0..upstreams.len())
                    .map(|n| &upstreams[(first + n) % upstreams.len()])
                    .find_map(|address| TcpStream::connect(address).ok());
                match upstream {
                    Some(upstream) => splice(client, upstream),
                    None => {
                        let mut client = client;
                        let _ = client
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
                    }
                }
            }
        });
        OwnBalancer { port, stop }
    }
}

impl Drop for OwnBalancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies bytes both ways between two connections until either closes.
fn splice(a: TcpStream, b: TcpStream) {
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    pump(a.try_clone().unwrap(), b.try_clone().unwrap());
    pump(b, a);
}

#[test]
fn nodes_behind_a_load_balancer_share_the_load_and_survive_one_of_them_dying() {
    let (_schema, a, b) = two_nodes_on_postgres();
    let project = worker("app", &fixtures(), "[vars]\nVERSION = \"one\"\n");
    succeed(a.cli().arg("deploy").arg(project.path()));
    eventually("the deploy reaching b", || {
        b.get("app.localhost", "/env?name=VERSION").text() == "one"
    });

    let (_balancer, port) = Balancer::start(&[&a.data, &b.data]);
    eventually("the load balancer answering", || {
        agent()
            .get(&format!("http://127.0.0.1:{port}/"))
            .call()
            .is_ok()
    });

    for _ in 0..20 {
        let reply = through(port, "app.localhost", "/env?name=VERSION");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), "one");
    }
    // Both nodes took a share.
    let served = |node: &Node| {
        node.stderr()
            .iter()
            .filter(|l| l.contains("GET /env 200"))
            .count()
    };
    eventually("both nodes logging requests", || {
        served(&a) >= 5 && served(&b) >= 5
    });

    // One node dies: every request still gets an answer from the other.
    drop(b);
    for _ in 0..20 {
        let reply = through(port, "app.localhost", "/env?name=VERSION");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[test]
fn a_tail_on_one_node_shows_the_requests_every_node_serves() {
    let (schema, a, b) = two_nodes_on_postgres();
    let project = worker("app", &fixtures(), "");
    succeed(a.cli().arg("deploy").arg(project.path()));
    eventually("the deploy reaching b", || {
        b.get("app.localhost", "/plain").status == 200
    });

    let tail = Tail::start(&a, &["--name", "app", "--path", "/env"]);
    assert!(
        tail.banner.contains("every node sharing its store"),
        "{}",
        tail.banner
    );
    // B learns of the watch through the change log (within a second or
    // so): until then its requests are not relayed, so keep asking.
    eventually("b's requests in a's tail", || {
        b.get("app.localhost", "/env?name=B");
        !tail.events(0).is_empty()
    });
    b.get("app.localhost", "/plain"); // filtered out, wherever it ran
    let from_a = a.get("app.localhost", "/env?name=A").request_id();
    let events = tail.events_through(&from_a);
    assert!(
        events
            .iter()
            .all(|e| e["path"] == "/env" && e["worker"] == "app"),
        "{events:#?}"
    );
    let nodes: std::collections::HashSet<&str> =
        events.iter().map(|e| e["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "requests from both nodes: {events:#?}");

    // With LISTEN off, a node cannot receive relays and says so.
    let c = Node::start(&[
        "--store",
        &schema.url,
        "--store-schema",
        &schema.name,
        "--no-store-listen",
    ]);
    let alone = Tail::start(&c, &["--name", "app"]);
    assert!(
        alone.banner.contains("alone") && alone.banner.contains("store_listen"),
        "{}",
        alone.banner
    );
}

#[test]
fn a_node_whose_database_does_not_exist_stops_and_says_how_to_create_it() {
    let schema = PgSchema::new();
    let url = match schema.url.rfind('/') {
        Some(at) if schema.url.starts_with("postgres") => {
            format!("{}/verge_missing_database", &schema.url[..at])
        }
        _ => format!("{} dbname=verge_missing_database", schema.url),
    };
    let started = std::time::Instant::now();
    let error = serve_refused(&["--store", &url, "--store-schema", &schema.name]);
    // Said once, not retried: the node stops at once.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        error.contains("database `verge_missing_database` does not exist"),
        "{error}"
    );
    assert!(error.contains("CREATE DATABASE"), "{error}");
    assert!(!error.contains("retrying"), "{error}");

    // A node on a database that exists prints no notices at start, the
    // first time or the next.
    let store = ["--store", &schema.url, "--store-schema", &schema.name];
    drop(Node::start(&store));
    let restarted = Node::start(&store);
    let noise: Vec<String> = restarted
        .stderr()
        .into_iter()
        .filter(|l| l.contains("already exists"))
        .collect();
    assert!(noise.is_empty(), "{noise:?}");
}

/// Creates namespace `shared` on `node` and deploys the KV fixture bound to
/// it as worker `store`; the project directory lives as long as the result.
fn deploy_kv_worker(node: &Node) -> tempfile::TempDir {
    succeed(
        node.cli()
            .args(["kv", "--remote", "namespace", "create", "shared"]),
    );
    let project = worker(
        "store",
        std::path::Path::new(KV_FIXTURE),
        "[[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"shared\"\n",
    );
    deploy(node, project.path(), &[]);
    project
}

#[test]
fn nodes_sharing_postgresql_serve_the_same_workers_and_kv() {
    let schema = PgSchema::new();
    let store = ["--store", &schema.url, "--store-schema", &schema.name];
    let a = Node::start(&store);
    let _project = deploy_kv_worker(&a);
    assert_eq!(
        a.get("store.localhost", "/put?key=from-a&bytes=3").status,
        200
    );

    // A second node on the same database serves what was deployed before
    // it started, with the same data.
    let b = Node::start(&store);
    assert_eq!(b.get("store.localhost", "/get?key=from-a").text(), "vvv");
    kv_writes_reach_the_other_nodes_cache(&a, &b);
    let versions = json_of(&b.admin_call("GET", "/v1/workers/store/versions", Some(TOKEN), None));
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
}

/// `reader` caches a key (absent, then a value); `writer` writes it: the
/// reader's cache lets go once the change log says so. A node's own write
/// is visible to its next read at once.
fn kv_writes_reach_the_other_nodes_cache(reader: &Node, writer: &Node) {
    let get = |node: &Node| node.get("store.localhost", "/get?key=shared-key");
    assert_eq!(get(reader).status, 404);
    assert_eq!(get(reader).status, 404, "the second read is the cached one");
    assert_eq!(
        writer
            .get("store.localhost", "/put?key=shared-key&bytes=2")
            .status,
        200
    );
    assert_eq!(get(writer).text(), "vv");
    let took = eventually("the write reaching the other node's cache", || {
        get(reader).text() == "vv"
    });
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert_eq!(
        writer
            .get("store.localhost", "/put?key=shared-key&bytes=3")
            .status,
        200
    );
    eventually("the overwrite reaching the other node's cache", || {
        get(reader).text() == "vvv"
    });
    assert_eq!(
        reader
            .get("store.localhost", "/put?key=shared-key&bytes=1")
            .status,
        200
    );
    assert_eq!(
        get(reader).text(),
        "v",
        "a node reads its own write at once"
    );
    eventually("and the first node's write reaching the second", || {
        get(writer).text() == "v"
    });
    let metrics = reader.admin_call("GET", "/metrics", None, None).text();
    let hits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("verge_kv_cache_hits_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no cache hit count in {metrics}"));
    assert!(hits >= 1, "{metrics}");
}

#[test]
fn without_listen_nodes_follow_the_change_log_by_reading_it() {
    // As behind PgBouncer in transaction mode, where LISTEN does not work.
    let schema = PgSchema::new();
    let store = [
        "--store",
        &schema.url,
        "--store-schema",
        &schema.name,
        "--no-store-listen",
    ];
    let a = Node::start(&store);
    let b = Node::start(&store);
    let _project = deploy_kv_worker(&a);
    eventually("the deploy reaching b", || {
        b.get("store.localhost", "/open").status == 200
    });
    kv_writes_reach_the_other_nodes_cache(&b, &a);
}

/// `verge secret put API_KEY` for worker `app` through `node`, the value on
/// stdin as an operator would pipe it.
fn put_api_key(node: &Node, value: &str) {
    use std::io::Write;
    let mut put = node
        .cli()
        .args(["secret", "put", "API_KEY", "--name", "app"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    put.stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    assert!(put.wait().unwrap().success());
}

#[test]
fn deploys_rollbacks_secrets_and_deletes_through_one_node_reach_the_others() {
    let schema = PgSchema::new();
    let store = ["--store", &schema.url, "--store-schema", &schema.name];
    let a = Node::start(&store);
    let b = Node::start(&store);
    let project = worker("app", &fixtures(), "[vars]\nVERSION = \"one\"\n");
    deploy(&a, project.path(), &[]);
    let took = eventually("the first deploy reaching b", || {
        b.get("app.localhost", "/env?name=VERSION").text() == "one"
    });
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");

    rewrite(
        project.path(),
        "app",
        &fixtures(),
        "[vars]\nVERSION = \"two\"\n",
    );
    deploy(&a, project.path(), &[]);
    eventually("v2 reaching b", || version_of(&b, "app") == "two");

    succeed(a.cli().args(["rollback", "--name", "app"]));
    eventually("the rollback reaching b", || version_of(&b, "app") == "one");

    put_api_key(&b, "from-b");
    eventually("the secret set on b reaching a's guests", || {
        a.get("app.localhost", "/env?name=API_KEY").text() == "from-b"
    });

    let deleted = b.admin_call("DELETE", "/v1/workers/app", Some(TOKEN), None);
    assert_eq!(deleted.status, 204);
    eventually("the delete reaching a", || {
        a.get("app.localhost", "/plain").status == 404
    });
}

/// How often each kind of component load happened on `node`: `hit` (its
/// compile cache), `shared` (code from another node) or `miss` (compiled).
fn loads(node: &Node, result: &str) -> u64 {
    let text = node.admin_call("GET", "/metrics", None, None).text();
    let series = format!("verge_component_loads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[test]
fn nodes_of_one_cluster_secret_run_code_one_of_them_compiled_and_trust_nothing_else() {
    let schema = PgSchema::new();
    let secrets = tempfile::tempdir().unwrap();
    let secret = |name: &str, text: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ours = secret("ours", "0123456789abcdef-ours\n");
    let theirs = secret("theirs", "0123456789abcdef-theirs");
    let node = |secret: &str| {
        Node::start(&[
            "--store",
            &schema.url,
            "--store-schema",
            &schema.name,
            "--cluster-secret-file",
            secret,
        ])
    };
    let (a, b) = (node(&ours), node(&ours));
    let project = worker("app", &fixtures(), "");
    deploy(&a, project.path(), &[]);
    eventually("the deploy reaching b", || {
        b.get("app.localhost", "/plain").status == 200
    });
    assert_eq!((loads(&a, "miss"), loads(&a, "shared")), (1, 0));
    // b ran a's code; a node with another secret does not.
    assert_eq!((loads(&b, "miss"), loads(&b, "shared")), (0, 1));
    assert_eq!(b.get("app.localhost", "/plain").text(), "hello world\n");
    let other = node(&theirs);
    assert_eq!(other.get("app.localhost", "/plain").status, 200);
    assert_eq!((loads(&other, "miss"), loads(&other, "shared")), (1, 0));

    // Code altered in the database is not run: a node starting now
    // compiles, and serves.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let altered = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .execute(
                &format!(
                    "UPDATE {}.artifacts SET sealed = overlay(sealed placing '\\x90'::bytea \
                     from length(sealed) / 2)",
                    schema.name
                ),
                &[],
            )
            .await
            .unwrap()
    });
    assert!(altered >= 1, "no shared code to alter");
    let late = node(&ours);
    assert_eq!(late.get("app.localhost", "/plain").status, 200);
    assert_eq!((loads(&late, "miss"), loads(&late, "shared")), (1, 0));
    assert!(
        late.stderr()
            .iter()
            .any(|l| l.contains("does not carry this node's seal")),
        "{:?}",
        late.stderr()
    );
}

/// A TCP proxy to PostgreSQL that a test can cut: every connection through
/// it closes at once and new ones are refused until it is restored.
struct Cable {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

impl Cable {
    fn to(upstream: &str) -> Cable {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let upstream = upstream.to_string();
        let flag = cut.clone();
        runtime.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let upstream = upstream.clone();
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let watch = async {
                        while !flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = watch => {}
                    }
                });
            }
        });
        Cable {
            port,
            cut,
            _runtime: runtime,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        // The connections notice within 20 ms.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[test]
fn a_node_cut_off_from_postgresql_keeps_serving_refuses_writes_and_recovers() {
    let schema = PgSchema::new();
    let cable = Cable::to("127.0.0.1:5432");
    let url = format!("postgres://root@127.0.0.1:{}/test", cable.port);
    let node = Node::start(&["--store", &url, "--store-schema", &schema.name]);
    let _project = deploy_kv_worker(&node);
    assert_eq!(
        node.get("store.localhost", "/put?key=k&bytes=2").text(),
        "1"
    );
    let health = || json_of(&node.admin_call("GET", "/healthz", None, None));
    assert_eq!(health()["status"], "ok");

    // A read before the cut is cached. The write's own entry in the change
    // log comes back to the node and drops the key from its cache once
    // more; the node applies it within a second even without LISTEN (it
    // reads the log every second), so the read that stays cached is one
    // made after that.
    assert_eq!(node.get("store.localhost", "/get?key=k").text(), "vv");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(node.get("store.localhost", "/get?key=k").text(), "vv");

    cable.cut();
    // The deployed worker still answers and its cached reads still work;
    // other KV calls fail as values the guest sees (the fixture shows
    // them), the node says it is degraded, and changes are refused with a
    // clear error.
    assert_eq!(node.get("store.localhost", "/open").status, 200);
    assert_eq!(node.get("store.localhost", "/get?key=k").text(), "vv");
    let uncached = node.get("store.localhost", "/get?key=never-read");
    assert!(
        uncached.text().contains("Unavailable"),
        "{}",
        uncached.text()
    );
    let write = node.get("store.localhost", "/put?key=k2&bytes=2");
    assert_eq!(write.status, 400, "{}", write.text());
    assert!(write.text().contains("Unavailable"), "{}", write.text());
    let degraded = health();
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    // Neither a guest nor an anonymous /healthz learns the database's error
    // text (addresses, user names); the node's log has it.
    for text in [uncached.text(), write.text(), degraded.to_string()] {
        assert!(
            !text.contains("PostgreSQL") && !text.contains("db error"),
            "{text}"
        );
        assert!(!text.contains("127.0.0.1"), "{text}");
    }
    eventually("the cause in the node's log", || {
        node.stderr().iter().any(|l| l.contains("PostgreSQL"))
    });
    let refused = node
        .cli()
        .args(["secret", "list", "--name", "store"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("store is unavailable"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A node that starts now says why it waits, and keeps trying.
    let mut late = KillOnDrop(
        common::verge()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--store",
                &url,
                "--store-schema",
                &schema.name,
                "--data-dir",
            ])
            .arg(node.dir.path().join("late"))
            .env("VERGE_ADMIN_TOKEN", TOKEN)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let late_err = common::lines_of(late.0.stderr.take().unwrap());
    let late_out = common::lines_of(late.0.stdout.take().unwrap());
    eventually("the late node saying it waits", || {
        late_err
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("cannot reach the PostgreSQL store") && l.contains("retrying"))
    });

    cable.restore();
    eventually("the late node starting once the store is back", || {
        late_out
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("Serving 1 worker(s)"))
    });
    drop(late);
    // No restart: the pool reconnects, writes work, health is ok again,
    // and what was written before the cut is there.
    eventually("writes working again", || {
        node.get("store.localhost", "/put?key=k3&bytes=3").status == 200
    });
    assert_eq!(health()["status"], "ok");
    assert_eq!(node.get("store.localhost", "/get?key=k").text(), "vv");
}

#[test]
fn a_node_killed_during_traffic_comes_back_with_what_changed_meanwhile() {
    let schema = PgSchema::new();
    let store = ["--store", &schema.url, "--store-schema", &schema.name];
    let a = Node::start(&store);
    let b = Node::start(&store);
    let c = Node::start(&store);
    let project = worker("app", &fixtures(), "[vars]\nVERSION = \"one\"\n");
    deploy(&a, project.path(), &[]);
    let _kv = deploy_kv_worker(&a);
    for node in [&b, &c] {
        eventually("the deploys reaching every node", || {
            node.get("app.localhost", "/env?name=VERSION").text() == "one"
                && node.get("store.localhost", "/open").status == 200
        });
    }

    // Traffic to A and C throughout; B is killed in the middle of it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let targets = [a.data.clone(), c.data.clone()];
        std::thread::spawn(move || {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for data in &targets {
                    let request = http::Request::get(format!("{data}/env?name=VERSION"))
                        .header("host", "app.localhost")
                        .body(())
                        .unwrap();
                    let reply = common::Reply::from(common::agent().run(request));
                    assert_eq!(reply.status, 200, "{data}: {}", reply.text());
                    served += 1;
                }
            }
            served
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b_dir = b.stop();

    // While B is down: a new version, a secret and a KV write.
    rewrite(
        project.path(),
        "app",
        &fixtures(),
        "[vars]\nVERSION = \"two\"\n",
    );
    deploy(&a, project.path(), &[]);
    put_api_key(&c, "while-b-was-down");
    assert_eq!(
        a.get("store.localhost", "/put?key=late&bytes=4").status,
        200
    );

    let b = Node::start_in(b_dir, &store);
    assert_eq!(version_of(&b, "app"), "two");
    assert_eq!(
        b.get("app.localhost", "/env?name=API_KEY").text(),
        "while-b-was-down"
    );
    assert_eq!(b.get("store.localhost", "/get?key=late").text(), "vvvv");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let served = traffic.join().expect("A and C answered every request");
    assert!(served > 0);
    // And B follows changes again.
    rewrite(
        project.path(),
        "app",
        &fixtures(),
        "[vars]\nVERSION = \"three\"\n",
    );
    deploy(&c, project.path(), &[]);
    eventually("the next deploy reaching b", || {
        version_of(&b, "app") == "three"
    });
}

#[test]
fn three_nodes_run_each_cron_tick_exactly_once() {
    let schema = PgSchema::new();
    let store = ["--store", &schema.url, "--store-schema", &schema.name];
    let nodes = [
        Node::start(&store),
        Node::start(&store),
        Node::start(&store),
    ];
    succeed(
        nodes[0]
            .cli()
            .args(["kv", "--remote", "namespace", "create", "shared"]),
    );
    let project = worker(
        "store",
        std::path::Path::new(KV_FIXTURE),
        "[[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"shared\"\n\
         [triggers]\ncrons = [\"* * * * * *\"]\n",
    );
    deploy(&nodes[0], project.path(), &[]);
    for node in &nodes {
        eventually("the deploy reaching every node", || {
            node.get("store.localhost", "/open").status == 200
        });
    }
    // Clients cannot fire triggers.
    let outside = nodes[1].get("store.localhost", "/.well-known/verge/scheduled?cron=x");
    assert_eq!(outside.status, 404);
    assert!(outside.text().contains("reserved"), "{}", outside.text());

    // Let a few seconds of ticks go by, with every node competing for each.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let keys = |node: &Node| {
        let page = json_of(&node.admin_call(
            "GET",
            "/v1/kv/namespaces/shared/keys?prefix=tick:",
            Some(TOKEN),
            None,
        ));
        key_names(&page)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let ticks = keys(&nodes[2]);
    assert!(ticks.len() >= 3, "{ticks:?}");
    for key in &ticks {
        let value = nodes[2].admin_call(
            "GET",
            &format!("/v1/kv/namespaces/shared/values/{key}"),
            Some(TOKEN),
            None,
        );
        assert_eq!(value.text(), "1", "{key} ran once across the three nodes");
    }
    // The admin API lists the schedule and one run per tick, each answered
    // 200 by the guest; the node that ran a tick logged its request.
    let listed =
        || json_of(&nodes[1].admin_call("GET", "/v1/workers/store/schedules", Some(TOKEN), None));
    assert_eq!(listed()["schedules"][0]["cron"], "* * * * * *");
    // A run is recorded finished just after its guest answered.
    eventually("every tick's run recorded with the guest's 200", || {
        let listed = listed();
        let runs = listed["runs"].as_array().unwrap();
        ticks.iter().all(|key| {
            let tick: u64 = key.strip_prefix("tick:").unwrap().parse().unwrap();
            let matching: Vec<&Value> = runs.iter().filter(|r| r["tick"] == tick).collect();
            matching.len() == 1 && matching[0]["status"] == 200
        })
    });
    let logged = nodes.iter().any(|n| {
        n.stderr()
            .iter()
            .any(|l| l.contains("POST /.well-known/verge/scheduled 200"))
    });
    assert!(logged, "a scheduled run in some node's request log");

    // Run by hand through the CLI, on the node whose tail is watched: the
    // run is a request in the tail like any other.
    let tail = Tail::start(
        &nodes[2],
        &["--name", "store", "--path", "/.well-known/verge/scheduled"],
    );
    let ran = succeed(nodes[2].cli().args(["cron", "run", "--name", "store"]));
    assert!(ran.contains("Ran store's `* * * * * *`"), "{ran}");
    let events = tail.events(1);
    assert_eq!(events[0]["method"], "POST", "{events:?}");
    assert_eq!(events[0]["status"], 200, "{events:?}");
    let listing = succeed(nodes[0].cli().args(["cron", "list", "--name", "store"]));
    assert!(
        listing.contains("* * * * * *") && listing.contains("200"),
        "{listing}"
    );
    let wrong = nodes[0]
        .cli()
        .args(["cron", "run", "--name", "store", "--cron", "0 0 * * *"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("has no schedule `0 0 * * *`"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

/// The PostgreSQL twin of the SQLite store's SIGKILL test: a node killed
/// while writers are busy loses no write it acknowledged, and one started
/// on the same schema reads them all.
#[test]
fn acknowledged_writes_survive_a_node_killed_mid_write_on_postgresql() {
    let schema = PgSchema::new();
    let store = [
        "--store",
        schema.url.as_str(),
        "--store-schema",
        schema.name.as_str(),
    ];
    let node = Node::start(&store);
    let _project = deploy_kv_worker(&node);
    let data = node.data.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (data, stop) = (data.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("w{writer}-{n}");
                    let request =
                        http::Request::get(format!("{data}/put?key={key}&bytes={}", n % 50 + 1))
                            .header("host", "store.localhost")
                            .body(())
                            .unwrap();
                    match agent().run(request) {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.push((key, n % 50 + 1))
                        }
                        // The node is gone: nothing after this was acknowledged.
                        _ => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    // Every writer well under way (on a slow machine one writer's 20th
    // write did not mean 80 in all).
    eventually("writes under way", || {
        (0..4).all(|w| {
            node.get("store.localhost", &format!("/get?key=w{w}-25"))
                .status
                == 200
        })
    });
    // Kill it mid-write (SIGKILL: no drain, no shutdown).
    let dir = node.stop();
    stop.store(true, Ordering::SeqCst);
    let acknowledged: Vec<(String, usize)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acknowledged.len() > 80,
        "only {} writes before the kill",
        acknowledged.len()
    );

    let node = Node::start_in(dir, &store);
    for (key, bytes) in &acknowledged {
        let value = node.get("store.localhost", &format!("/get?key={key}"));
        assert_eq!(value.status, 200, "acknowledged write {key} lost");
        assert_eq!(value.text().len(), *bytes, "{key}");
    }
}
