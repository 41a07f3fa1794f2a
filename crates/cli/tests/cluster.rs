//! Nodes sharing one PostgreSQL behind a load balancer: any node serves any
//! worker, and when one node dies the balancer's next try lands on another.
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
    Node, PgSchema, Tail, eventually, fixtures, serve_refused, two_nodes_on_postgres, worker,
};
use common::{Reply, agent, succeed};

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
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
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
    a.get("app.localhost", "/env?name=A");
    b.get("app.localhost", "/plain"); // filtered out, wherever it ran
    let events = tail.events(2);
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
